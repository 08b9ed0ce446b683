"""One benchmark configuration, measured alone in its own process.

`bench/run.py` starts this module once per configuration,

    python -m bench.workloads SPEC.json RESULT.json

so that the peak resident memory (see `peak_rss_mib`) and the traced
functions of one configuration never leak into the next. SPEC names a `kind` (one of
`KINDS`) and its settings; RESULT receives one JSON object.

What is measured, the same way for every kind:

- An *update* is one optimizer update on one global batch (the project's
  "step", see `painless_tf/engine.py`). With Keras' built-in accumulation
  one update is `gradient_accumulation_steps` calls of the train function.
- The first `warmup` updates are not timed (tracing, first allocations);
  the next `updates` are. Times are read after the update's logs are
  fetched, which waits for the device.
- `time_to_first_step_s`: from the start of the configuration (imports
  excluded; reading the data, building the model and tracing included) to
  the end of the first update.
- Examples and tokens are counted on the real rows of the timed updates
  only: zero-weight filler rows and padding positions are not.
- `model_flops_per_sec`: `painless_tf.flops.training_flops_per_token` on
  the real lengths of the timed examples x real tokens/sec; `run.py`
  divides it by the measured matmul peak to give MFU.
- Time to accuracy (optional): validation accuracy every `eval_every`
  updates; the clock stops while evaluating, so the reported seconds are
  training seconds (startup included) until the first evaluation at or
  above `target`.
"""

import dataclasses
import json
import math
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from painless_tf import distribution  # noqa: E402
from painless_tf import flops  # noqa: E402
from painless_tf import models  # noqa: E402
from painless_tf import optimization  # noqa: E402
from painless_tf import pipeline  # noqa: E402
from painless_tf import precision as precision_lib  # noqa: E402
from painless_tf import run  # noqa: E402

# Bytes per KiB: Linux reports `ru_maxrss` and VmRSS in KiB.
_KIB = 1024
_MIB = 2**20


class StepClock(keras.callbacks.Callback):
    """Records when each optimizer update ends, minus evaluation pauses.

    Args:
        steps_per_update: int. Train-function calls per optimizer update (the
            built-in accumulation's `gradient_accumulation_steps`, else 1).
        stop_after: int or None. Updates after which training stops.
        evaluate: callable or None. `evaluate() -> accuracy`, run every
            `eval_every` updates with the clock stopped, until `target`.
        eval_every: int. Updates between evaluations.
        target: float or None. Stop once an evaluation reaches it, but not
            before `min_updates`.
        min_updates: int. Updates that always run (the timed window).
        give_up_at: float or None. `perf_counter()` value (evaluation pauses
            excluded) from which the first evaluation still below `target`
            stops training: the target was not reached by then.

    Examples:
    >>> clock = StepClock(steps_per_update=1, stop_after=2)
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> _ = model.fit(np.ones((8, 2)), np.ones((8,)), batch_size=2,
    ...               verbose=0, callbacks=[clock])
    >>> len(clock.update_ends)
    2
    """

    def __init__(
        self,
        *,
        steps_per_update=1,
        stop_after=None,
        evaluate=None,
        eval_every=0,
        target=None,
        min_updates=0,
        give_up_at=None,
    ):
        super().__init__()
        self.steps_per_update = int(steps_per_update)
        self.stop_after = stop_after
        self.evaluate = evaluate
        self.eval_every = int(eval_every)
        self.target = target
        self.min_updates = int(min_updates)
        self.update_ends = []  # perf_counter() - evaluation seconds
        self.evaluations = []  # (update, training seconds, accuracy)
        self.eval_seconds = 0.0
        self.reached_at = None  # index into update_ends
        self.give_up_at = give_up_at
        self.gave_up_at = None  # index into update_ends
        self._calls = 0

    def on_train_batch_end(self, batch, logs=None):
        self._calls += 1
        if self._calls % self.steps_per_update:
            return
        # Reading a value waits for the update to finish on any device.
        for value in (logs or {}).values():
            float(np.asarray(value))
            break
        self.update_ends.append(time.perf_counter() - self.eval_seconds)
        done = len(self.update_ends)
        if (
            self.evaluate is not None
            and self.reached_at is None
            and self.eval_every
            and done % self.eval_every == 0
        ):
            start = time.perf_counter()
            accuracy = float(self.evaluate())
            self.eval_seconds += time.perf_counter() - start
            self.evaluations.append((done, self.update_ends[-1], accuracy))
            if self.target is not None and accuracy >= self.target:
                self.reached_at = done - 1
            elif (self.give_up_at is not None
                  and self.update_ends[-1] >= self.give_up_at
                  and done >= self.min_updates):
                self.gave_up_at = done - 1
                self.model.stop_training = True
        if (self.stop_after is not None and done >= self.stop_after) or (
            self.reached_at is not None and done >= self.min_updates
        ):
            self.model.stop_training = True


@dataclasses.dataclass(frozen=True)
class Window:
    """What the model saw in the timed updates.

    Args:
        examples: int. Real rows (filler rows excluded).
        tokens: int. Real tokens of those rows.
        positions: int. Every position the model computed, padding and
            filler rows included.
        lengths: np.ndarray. Real length of every timed example.

    Examples:
    >>> w = Window(examples=2, tokens=30, positions=64,
    ...            lengths=np.array([10, 20]))
    >>> round(1 - w.tokens / w.positions, 3)  # padding fraction
    0.531
    """

    examples: int
    tokens: int
    positions: int
    lengths: np.ndarray  # real length of every timed example


def peak_rss_mib():
    """Peak resident memory of this process so far, MiB.

    Linux's `ru_maxrss` also counts the parent's pages this process held
    between `fork` and `exec` (the kernel carries the old memory map's high
    mark over at `exec`), so a child of a large parent reports at least the
    parent's size. `VmHWM` is the high mark of this program's own memory
    map; `ru_maxrss` is the fallback where /proc is missing.
    """
    peak = _proc_status_mib("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _KIB / _MIB


def current_rss_mib():
    """Resident memory of this process now, MiB (Linux /proc)."""
    return _proc_status_mib("VmRSS")


def _proc_status_mib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * _KIB / _MIB
    except OSError:
        pass
    return None


def summarize(spec, clock, window_fn, model, precision, started):
    """The common result fields from a finished `StepClock`.

    Args:
        spec: dict. The configuration (`warmup`, `updates`).
        clock: StepClock. After `fit`.
        window_fn: callable. `window_fn(first, stop) -> Window` for updates
            `[first, stop)`.
        model: keras.Model. For the FLOPs per token.
        precision: str. The dtype policy the updates ran under.
        started: float. `perf_counter()` at the configuration's start.
    """
    warmup, updates = spec["warmup"], spec["updates"]
    ends = clock.update_ends
    if len(ends) < warmup + updates:
        raise RuntimeError(
            f"only {len(ends)} updates ran; the benchmark needs warmup + "
            f"updates = {warmup + updates}. Use more data or fewer --updates."
        )
    if warmup < 1:
        raise ValueError(
            f"`warmup` must be >= 1: the first update traces the step. "
            f"Received: warmup={warmup}"
        )
    window = window_fn(warmup, warmup + updates)
    # The timed window starts where the last warm-up update ends.
    start = ends[warmup - 1]
    seconds = ends[warmup + updates - 1] - start
    steps = np.diff([start] + ends[warmup:warmup + updates])
    per_token = flops.training_flops_per_token(model, window.lengths)
    tokens_per_sec = window.tokens / seconds
    result = {
        "precision": precision,
        "timed_updates": updates,
        "timed_seconds": seconds,
        "examples_per_sec": window.examples / seconds,
        "real_tokens_per_sec": tokens_per_sec,
        "padding_fraction": 1.0 - window.tokens / window.positions,
        "update_seconds_median": float(statistics.median(steps)),
        "update_seconds_mean": float(np.mean(steps)),
        "flops_per_real_token": per_token,
        "model_flops_per_sec": per_token * tokens_per_sec,
        "time_to_first_step_s": ends[0] - started,
    }
    if clock.evaluate is not None:
        reached = clock.reached_at
        result["time_to_accuracy"] = {
            "target": clock.target,
            "reached": reached is not None,
            "seconds": ends[reached] - started if reached is not None else None,
            "updates": reached + 1 if reached is not None else None,
            "evaluations": [
                {"update": u, "seconds": t - started, "accuracy": a}
                for u, t, a in clock.evaluations
            ],
            "updates_run": len(ends),
            # Not reached by an evaluation this many training seconds in:
            # the time to the target is longer than that.
            "gave_up_after_seconds": (
                ends[clock.gave_up_at] - started
                if clock.gave_up_at is not None else None
            ),
        }
    return result


# === Data ===


def load_splits(spec):
    """The train/validation split every configuration shares."""
    config = run.RunConfig(
        model=spec["model_path"], train_data=spec.get("train_data")
    )
    return run.load_data(config)


def _single_column(examples):
    if examples.num_text_columns != 1:
        raise ValueError(
            f"{examples.source}: the benchmark feeds one text column to "
            "keras-hub's preprocessor; sentence pairs are not benchmarked. "
            "Pass single-text data."
        )
    return np.array(examples.texts[0], dtype=object)


def _shuffled(examples, seed):
    texts = _single_column(examples)
    order = np.random.default_rng(seed).permutation(len(texts))
    return texts[order], examples.labels[order]


def _fixed_length_window(tokenizer, texts, sequence_length, batch):
    """Window function for batches of `batch` texts padded to one length."""

    def window(first, stop):
        chosen = list(texts[first * batch:stop * batch])
        lengths = pipeline.tokenize(
            chosen, tokenizer, max_sequence_length=sequence_length
        ).lengths
        return Window(
            examples=len(chosen),
            tokens=int(lengths.sum()),
            positions=len(chosen) * sequence_length,
            lengths=lengths,
        )

    return window


def _plan_window(tokenized, plan):
    """Window function for the painless pipeline's epoch-0 global batches."""
    batch_plan = pipeline.plan_batches(
        tokenized.lengths,
        global_batch_size=plan.global_batch_size,
        buckets=plan.bucket_boundaries,
        training=True,
        seed=plan.seed,
        epoch=0,
    )

    def window(first, stop):
        if stop > batch_plan.num_batches:
            raise RuntimeError(
                f"the timed window ends at update {stop}, past the "
                f"{batch_plan.num_batches} batches of one epoch. Use fewer "
                "--updates."
            )
        rows = batch_plan.rows[first:stop]
        real = rows[rows >= 0]
        lengths = tokenized.lengths[real]
        positions = int(
            np.sum(batch_plan.batch_lengths[first:stop]) * rows.shape[1]
        )
        return Window(
            examples=int(real.size),
            tokens=int(lengths.sum()),
            positions=positions,
            lengths=lengths,
        )

    return window


def train_dataset(prepared):
    """The training batches as `run.fit_and_save` feeds them (one worker),
    every epoch of the plan chained."""
    plan = prepared.plan
    return pipeline.make_dataset(
        prepared.tokenized["train"],
        global_batch_size=plan.global_batch_size,
        buckets=plan.bucket_boundaries,
        training=True,
        seed=plan.seed,
        epochs=plan.epochs,
    )


def _tta_clock(spec, tta, started, *, updates, evaluate, steps_per_update=1):
    """The `StepClock` of a config that may also run to a target accuracy
    (and, with `full_epochs`, on through all `updates` after reaching it)."""
    seconds = (tta or {}).get("give_up_after_seconds")
    window = spec["warmup"] + spec["updates"]
    return StepClock(
        steps_per_update=steps_per_update,
        stop_after=updates,
        evaluate=evaluate,
        eval_every=tta["eval_every"] if tta else 0,
        target=tta["target"] if tta else None,
        min_updates=max(window, updates) if (tta or {}).get("full_epochs")
        else window,
        give_up_at=None if seconds is None else started + seconds,
    )


def _tta(spec):
    tta = spec.get("time_to_accuracy")
    if not tta:
        return None, None
    return tta, tta["max_updates"]


# === Kinds ===


def keras_hub_fit(spec, started):
    """keras-hub as documented: `from_preset`, `compile`, `fit` on strings.

    Spec keys: `sequence_length` (None keeps the preset's), `precision`,
    `accumulation_steps` (>1: Keras' built-in `gradient_accumulation_steps`
    on the compile-default optimizer, fed `global / k` rows per call).
    """
    splits = load_splits(spec)
    precision = spec["precision"]
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(spec["seed"])
    classifier = keras_hub.models.BertTextClassifier.from_preset(
        spec["model_path"], num_classes=len(splits.vocab)
    )
    wanted = spec.get("sequence_length")
    if wanted:
        longest = classifier.backbone.max_sequence_length
        if wanted > longest:
            raise ValueError(
                f"--hand_picked_length={wanted} exceeds the model's "
                f"max_sequence_length ({longest}). Pass "
                f"--hand_picked_length={longest} or less."
            )
        classifier.preprocessor.sequence_length = wanted
    k = spec.get("accumulation_steps", 1)
    if k > 1:
        # compile()'s own default optimizer, plus the built-in accumulation.
        classifier.compile(
            optimizer=keras.optimizers.Adam(5e-5, gradient_accumulation_steps=k)
        )
    else:
        classifier.compile()
    batch = spec["global_batch_size"]
    texts, labels = _shuffled(splits.train, spec["seed"])
    tta, max_updates = _tta(spec)
    evaluate = None
    if tta:
        val_texts = list(_single_column(splits.validation))
        val_labels = splits.validation.labels

        def evaluate():
            logs = classifier.evaluate(
                val_texts, val_labels, batch_size=batch, verbose=0,
                return_dict=True,
            )
            return next(v for n, v in logs.items() if "accuracy" in n)

        updates = max(max_updates, spec["warmup"] + spec["updates"])
        epochs = math.ceil(updates * batch / len(texts))
    else:
        updates = spec["warmup"] + spec["updates"]
        texts, labels = texts[:updates * batch], labels[:updates * batch]
        epochs = 1
    clock = _tta_clock(spec, tta, started, updates=updates,
                       evaluate=evaluate, steps_per_update=k)
    rss_before = current_rss_mib()
    classifier.fit(
        x=list(texts), y=labels, batch_size=batch // k, epochs=epochs,
        verbose=0, callbacks=[clock],
    )
    sequence_length = int(classifier.preprocessor.sequence_length)
    result = summarize(
        spec, clock,
        _fixed_length_window(
            classifier.preprocessor.tokenizer, texts, sequence_length, batch
        ),
        classifier, precision, started,
    )
    result.update(
        sequence_length=sequence_length,
        global_batch_size=batch,
        micro_batch_size=batch // k,
        accumulation_steps=k,
        xla=bool(classifier.jit_compile),
        rss_before_fit_mib=rss_before,
    )
    return result


def painless_fit(spec, started):
    """painless_tf as `apps/finetune.py` runs it: prepare, build, datasets.

    With `time_to_accuracy` and its `full_epochs`, training runs every
    update of the plan's epochs (past the target) and the result adds the
    test split's accuracy.
    """
    config = run.RunConfig(
        model=spec["model_path"],
        train_data=spec.get("train_data"),
        global_batch_size=spec["global_batch_size"],
        seed=spec["seed"],
        trainable_layers=spec.get("trainable_layers", "all"),
        lr_range_test_steps=spec.get(
            "lr_range_test_steps", run.RunConfig.lr_range_test_steps),
    )
    # As apps/finetune.py: with --learning_rate=auto the plan runs the LR
    # range test, and its time counts (time to first step, to accuracy).
    prepared = run.prepare(config)
    plan = prepared.plan
    strategy = distribution.make_strategy(plan.strategy)
    trainer = run.build_trainer(prepared, strategy)
    train = train_dataset(prepared)
    evaluation = run.datasets(prepared)
    validation = evaluation["validation"]
    tta, max_updates = _tta(spec)
    evaluate = None
    updates = spec["warmup"] + spec["updates"]
    full_epochs = bool(tta and tta.get("full_epochs"))
    if tta:

        def evaluate():
            logs = trainer.evaluate(
                validation, verbose=0, return_dict=True
            )
            return logs["accuracy"]

        updates = plan.total_updates if full_epochs else min(
            max(max_updates, updates), plan.total_updates)
    clock = _tta_clock(spec, tta, started, updates=updates,
                       evaluate=evaluate)
    rss_before = current_rss_mib()
    trainer.fit(
        train, epochs=1, steps_per_epoch=updates, verbose=0, callbacks=[clock]
    )
    result = summarize(
        spec, clock, _plan_window(prepared.tokenized["train"], plan),
        trainer, plan.precision, started,
    )
    result.update(_plan_fields(plan), rss_before_fit_mib=rss_before)
    if full_epochs:
        result["epochs"] = plan.epochs
        result["test_accuracy"] = trainer.evaluate(
            evaluation["test"], verbose=0, return_dict=True)["accuracy"]
    if plan.trainable_layers != "all":
        # Frozen layers skip most of their backward pass; the full-training
        # FLOPs per token would overstate MFU, so none is given.
        result["model_flops_per_sec"] = None
    return result


def _plan_fields(plan):
    return {
        "sequence_length": plan.max_sequence_length,
        "buckets": list(plan.bucket_boundaries),
        "global_batch_size": plan.global_batch_size,
        "micro_batch_size": plan.micro_batch_size,
        "accumulation_steps": plan.accumulation_steps,
        "xla": plan.xla,
        "trainable_layers": plan.trainable_layers,
        "optimizer": plan.optimizer,
        "learning_rate": plan.learning_rate,
        "warmup_steps": plan.warmup_steps,
        "total_updates": plan.total_updates,
        "plan_reasons": {
            name: plan.reasons.get(name, "")
            for name in ("precision", "micro_batch_size", "xla",
                         "bucket_boundaries")
        },
    }


def engine_fit(spec, started):
    """The same bucketed global batches through one training engine.

    Spec keys: `precision` ("float32", or "auto" for the plan's),
    `engine` ("painless": `painless_tf.Trainer`; "keras": Keras' built-in
    `gradient_accumulation_steps`), `accumulation_steps`, `feed_batch`
    (rows per train-function call: the global batch, or a micro-batch cut
    from it). Every timed unit is one global batch of the same examples.
    """
    # The recipe's rate, no LR range test: speed does not depend on it.
    config = run.RunConfig(
        model=spec["model_path"],
        train_data=spec.get("train_data"),
        global_batch_size=spec["global_batch_size"],
        precision=spec["precision"],
        seed=spec["seed"],
        lr_range_test_steps=0,
    )
    prepared = run.prepare(config)
    plan = prepared.plan
    k, feed = spec["accumulation_steps"], spec["feed_batch"]
    train = train_dataset(prepared)
    if feed != plan.global_batch_size:
        # Consecutive rows of one global batch share its bucket length, so
        # the micro-batches cut here are exactly the global batch's.
        train = train.unbatch().batch(feed, drop_remainder=True)
    calls_per_unit = plan.global_batch_size // feed
    units = spec["warmup"] + spec["updates"]
    if spec["engine"] == "painless":
        engine_plan = dataclasses.replace(
            plan, global_batch_size=feed, micro_batch_size=feed // k,
            accumulation_steps=k,
        )
        model = run.build_trainer(
            dataclasses.replace(prepared, plan=engine_plan),
            distribution.make_strategy(plan.strategy),
        )
    else:
        if plan.optimizer != "adamw":
            raise ValueError(
                f"the Keras built-in engine config mirrors AdamW; the plan "
                f"chose {plan.optimizer!r}. Run the engine suite with the "
                "default optimizer."
            )
        precision_lib.set_policy(plan.precision)
        keras.utils.set_random_seed(plan.seed)
        model = models.load_classifier(
            prepared.model_path, num_classes=len(prepared.splits.vocab),
            sequence_length=plan.max_sequence_length,
        )
        model.preprocessor = None  # fed token ids, as the Trainer is
        schedule = optimization.WarmupLinearDecay(
            plan.learning_rate, plan.warmup_steps, plan.total_updates
        )
        # The same AdamW as `optimization.make_optimizer`, accumulating.
        optimizer = keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=plan.weight_decay,
            global_clipnorm=plan.clip_norm, epsilon=1e-6,
            gradient_accumulation_steps=k if k > 1 else None,
        )
        optimizer.exclude_from_weight_decay(
            var_names=list(optimization.NO_DECAY_NAMES)
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[
                keras.metrics.SparseCategoricalAccuracy(name="accuracy")
            ],
            jit_compile=plan.xla,
        )
    clock = StepClock(steps_per_update=calls_per_unit, stop_after=units)
    rss_before = current_rss_mib()
    model.fit(
        train, epochs=1, steps_per_epoch=units * calls_per_unit, verbose=0,
        callbacks=[clock],
    )
    result = summarize(
        spec, clock, _plan_window(prepared.tokenized["train"], plan),
        model, plan.precision, started,
    )
    result.update(
        _plan_fields(plan),
        engine=spec["engine"],
        feed_batch=feed,
        # Keras' built-in accumulation sums k calls of `feed` rows each.
        micro_batch_size=feed if spec["engine"] == "keras" else feed // k,
        accumulation_steps=k,
        rss_before_fit_mib=rss_before,
    )
    return result


def pipeline_fit(spec, started):
    """keras-hub's classifier and `compile()` defaults, fed our pipeline.

    Everything but the input pipeline is keras-hub's default path (its
    model, float32, its default optimizer), so the difference to the
    `keras_hub` kind with default settings is the pipeline alone.
    """
    # keras-hub's optimizer trains here: no LR range test for a rate unused.
    config = run.RunConfig(
        model=spec["model_path"],
        train_data=spec.get("train_data"),
        global_batch_size=spec["global_batch_size"],
        precision="float32",
        seed=spec["seed"],
        lr_range_test_steps=0,
    )
    prepared = run.prepare(config)
    plan = prepared.plan
    keras.utils.set_random_seed(plan.seed)
    classifier = keras_hub.models.BertTextClassifier.from_preset(
        prepared.model_path, num_classes=len(prepared.splits.vocab)
    )
    classifier.preprocessor = None  # the pipeline tokenized already
    classifier.compile()
    train = train_dataset(prepared)
    units = spec["warmup"] + spec["updates"]
    clock = StepClock(stop_after=units)
    rss_before = current_rss_mib()
    classifier.fit(
        train, epochs=1, steps_per_epoch=units, verbose=0, callbacks=[clock]
    )
    result = summarize(
        spec, clock, _plan_window(prepared.tokenized["train"], plan),
        classifier, "float32", started,
    )
    result.update(
        _plan_fields(plan), xla=bool(classifier.jit_compile),
        rss_before_fit_mib=rss_before,
    )
    return result


def starvation(spec, started):
    """Step time fed by the real pipeline vs the same batches in memory.

    One painless `Trainer` (the automatic plan) trains alternately on the
    real dataset and on its first `warmup + updates` batches materialized
    with `cache()`, `rounds` times each (A B A B ...), so that a change in
    the machine's load falls on both. Each `fit` times its last `updates`
    updates.
    """
    # The recipe's rate, no LR range test: speed does not depend on it.
    config = run.RunConfig(
        model=spec["model_path"],
        train_data=spec.get("train_data"),
        global_batch_size=spec["global_batch_size"],
        seed=spec["seed"],
        lr_range_test_steps=0,
    )
    prepared = run.prepare(config)
    plan = prepared.plan
    trainer = run.build_trainer(
        prepared, distribution.make_strategy(plan.strategy)
    )
    train = train_dataset(prepared)
    warmup, updates = spec["warmup"], spec["updates"]
    units = warmup + updates
    in_memory = train.take(units).cache()
    for _ in in_memory:  # fill the cache before any timing
        pass
    times = {"pipeline": [], "in_memory": []}
    for _ in range(spec.get("rounds", 2)):
        for name, dataset in (("pipeline", train), ("in_memory", in_memory)):
            clock = StepClock(stop_after=units)
            trainer.fit(
                dataset, epochs=1, steps_per_epoch=units, verbose=0,
                callbacks=[clock],
            )
            times[name].extend(np.diff(clock.update_ends[warmup - 1:]))
    median = {n: float(statistics.median(t)) for n, t in times.items()}
    mean = {n: float(np.mean(t)) for n, t in times.items()}
    return {
        "precision": plan.precision,
        "update_seconds_median": median,
        "update_seconds_mean": mean,
        "pipeline_over_in_memory_median": median["pipeline"]
        / median["in_memory"],
        "pipeline_over_in_memory_mean": mean["pipeline"] / mean["in_memory"],
        "timed_updates_per_feed": len(times["pipeline"]),
        **_plan_fields(plan),
    }


def plan_only(spec, started):
    """The automatic plan for the model and data, nothing trained (nor
    the LR range test run: the runner reads the precision)."""
    del started
    config = run.RunConfig(
        model=spec["model_path"],
        train_data=spec.get("train_data"),
        global_batch_size=spec["global_batch_size"],
        seed=spec["seed"],
        lr_range_test_steps=0,
    )
    return {"plan": run.prepare(config).plan.to_dict()}


KINDS = {
    "plan": plan_only,
    "keras_hub": keras_hub_fit,
    "painless": painless_fit,
    "engine": engine_fit,
    "pipeline": pipeline_fit,
    "starvation": starvation,
}


def main(argv):
    started = time.perf_counter()
    started_wall = time.time()
    if len(argv) != 3:
        print("usage: python -m bench.workloads SPEC.json RESULT.json",
              file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        spec = json.load(f)
    load_start = os.getloadavg()
    rss_start = current_rss_mib()
    result = KINDS[spec["kind"]](spec, started)
    result.update(
        peak_rss_mib=peak_rss_mib(),
        ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        * _KIB / _MIB,
        rss_after_imports_mib=rss_start,
        load_average={"start": list(load_start), "end": list(os.getloadavg())},
        wall_seconds=time.perf_counter() - started,
    )
    if "time_to_first_step_s" in result:
        # For the runner's time from launch (imports included).
        result["first_step_unix_time"] = (
            started_wall + result["time_to_first_step_s"])
    with open(argv[2], "w") as f:
        json.dump(result, f, indent=2, sort_keys=True, default=_json_default)
    return 0


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
