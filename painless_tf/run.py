"""One fine-tuning run: config -> data -> plan -> model -> fit -> outputs.

`apps/finetune.py` wires these functions in order; each can be used alone.
Everything that can be wrong with the input (files, columns, labels, model
path, flags) is found by `prepare`, before anything is written to the model
dir and before the first training step.
"""

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from painless_tf import assets
from painless_tf import atomic
from painless_tf import checkpointing
from painless_tf.config import RunConfig  # noqa: F401  (run.RunConfig)
from painless_tf import data
from painless_tf import distillation
from painless_tf import distribution
from painless_tf import evaluation as evaluation_lib
from painless_tf import faults
from painless_tf import flops
from painless_tf import freezing
from painless_tf import hardware
from painless_tf import heads
from painless_tf import imbalance
from painless_tf import lr_curve
from painless_tf import lr_finder
from painless_tf import memory
from painless_tf import model_dir as model_dir_lib
from painless_tf import models
from painless_tf import monitoring as monitoring_lib
from painless_tf import optimization
from painless_tf import packing
from painless_tf import pipeline
from painless_tf import plan as plan_lib
from painless_tf import precision
from painless_tf import probes
from painless_tf import report
from painless_tf import selection
from painless_tf import trainers
from painless_tf import truncation as truncation_lib

AUTO = plan_lib.AUTO
# The splits of a run, in the order their rows are tokenized.
_SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Everything validated and decided before training starts."""

    config: RunConfig
    splits: data.Splits
    tokenized: dict  # split name -> pipeline.TokenizedExamples
    plan: plan_lib.Plan
    environment: hardware.Environment
    model_path: str


def load_data(config):
    """Reads and validates the labelled data named by `config`."""
    read = dict(
        text_columns=config.text_columns,
        label_column=config.label_column,
        file_format=config.file_format,
        encoding=config.encoding,
        skip_bad_rows=config.skip_bad_rows,
    )
    if config.tfds:
        tables = {
            name: data.tfds_table(
                config.tfds,
                data_dir=config.tfds_data_dir,
                split=name,
                text_columns=config.text_columns
                if config.text_columns != ("text",)
                else None,
                label_column=config.label_column,
                skip_bad_rows=config.skip_bad_rows,
            )
            for name in ("train",)
        }
        train = tables["train"]
    elif config.train_data:
        train = config.train_data
    else:
        train = data.rotten_tomatoes_table(assets.default_data_file())
    splits = data.load_splits(
        train=train,
        validation=config.validation_data,
        test=config.test_data,
        split=config.split,
        seed=config.seed,
        task=config.task,
        label_delimiter=config.label_delimiter,
        **{k: v for k, v in read.items()},
    )
    for warning in splits.warnings:
        logging.warning("%s", warning)
    return splits


def prepare(config, *, environment=None, recorded=None):
    """Validates the input, tokenizes it once and decides the plan.

    The plan is made once (`plan.make_plan`), with its probes: the CPU
    precision probe, the GPU micro-batch probe and, for
    `learning_rate="auto"`, the LR range test. `recorded` is the plan a
    resumed run started with (`model_dir.ModelDir.recorded_plan`): its
    measured decisions are kept. The returned plan is final: nothing
    changes it afterwards.

    Writes nothing. Raises `data.DataError`, `models.ModelError`,
    `plan.PlanError` or `ValueError` with a one-line message.
    """
    environment = environment or hardware.detect_environment(tpu=config.tpu)
    splits = load_data(config)
    model_path = (
        assets.default_model_dir() if config.model == "default" else config.model
    )
    tokenizer = models.load_tokenizer(model_path)
    info = models.describe(model_path)
    tokenized, length = _tokenize_splits(config, splits, tokenizer, info)
    longest = max(
        int(np.max(tokenized[name].lengths, initial=0))
        for name in ("validation", "test")
    )
    num_classes = len(splits.vocab)

    probe = fits = None
    if (environment.platform == "cpu" and config.precision == AUTO
            and plan_lib.worth_probing(environment)):
        probe = probes.precision_probe(
            model_path, num_classes, tokenized["train"],
            functools.partial(probes.probe_trainer(config),
                              task=splits.task.kind))
    if environment.platform == "gpu" and config.micro_batch_size == AUTO:
        # One real update per candidate size, catching out-of-memory.
        fits = memory.MicroBatchProbe(
            model_path, make_trainer=probes.probe_trainer(config))
    rate_probe = None
    if config.learning_rate == AUTO and config.lr_range_test_steps:
        rate_probe = functools.partial(
            _range_test, config=config, model_path=model_path,
            num_classes=num_classes, train=tokenized["train"],
        )
    plan = plan_lib.make_plan(
        environment=environment,
        num_train_examples=len(splits.train),
        epochs=config.epochs,
        min_updates=config.min_updates,
        global_batch_size=config.global_batch_size,
        learning_rate=config.learning_rate,
        precision=config.precision,
        xla=config.xla,
        fused_update=config.fused_update,
        micro_batch_size=config.micro_batch_size,
        strategy=config.strategy,
        optimizer=config.optimizer,
        momentum=config.momentum,
        nesterov=config.nesterov,
        max_sequence_length=config.max_sequence_length,
        model_max_sequence_length=info.max_sequence_length,
        model_params=info.num_params,
        model_dims=probes.dims(info),
        seed=config.seed,
        warmup_fraction=config.warmup_fraction,
        weight_decay=config.weight_decay,
        layer_decay=config.layer_decay,
        weight_averaging=config.weight_averaging,
        trainable_layers=config.trainable_layers,
        unfreeze=config.unfreeze,
        num_layers=info.num_layers,
        precision_probe=probe,
        fits_probe=fits,
        probe_key=probes.probe_key(model_path, length.max_sequence_length),
        train_lengths=tokenized["train"].lengths,
        longest_text=longest,
        learning_rate_probe=rate_probe,
        learning_rate_probe_updates=config.lr_range_test_steps,
        recorded=recorded,
        fixed_length=info.fixed_length,
        class_counts=_class_counts(splits, tokenized["train"]),
        class_weights=config.class_weights,
        selection_metric=config.selection_metric,
        eval_every_updates=config.eval_every_updates,
        early_stopping_patience=config.early_stopping_patience,
        length_choice=length,
        task=splits.task.kind,
        task_reason=splits.task.reason,
    )
    return Prepared(
        config=config,
        splits=splits,
        tokenized=tokenized,
        plan=plan,
        environment=environment,
        model_path=model_path,
    )


def _class_counts(splits, train):
    """Training examples per class id; None for tasks without exclusive
    classes."""
    if splits.task.kind != "classification":
        return None
    return np.bincount(train.labels, minlength=len(splits.vocab))


def _tokenize_splits(config, splits, tokenizer, info):
    """Tokenizes every split once, chooses the length from the training
    texts' untruncated lengths (`plan.choose_length`) and packs every split
    at it: (split name -> `TokenizedExamples`, `plan.LengthChoice`).

    The splits go through the tokenizer and the packer together, as one set
    of rows cut apart afterwards: each pass traces its TensorFlow functions
    once, not once per split."""
    requested = config.max_sequence_length
    requested = requested if requested == AUTO else int(requested)
    # A length the model cannot take fails here, before any tokenizing.
    keep = plan_lib.choose_length(
        requested, None, model_limit=info.max_sequence_length
    ).max_sequence_length if requested != AUTO else (
        info.max_sequence_length or plan_lib.NO_LIMIT_LENGTH)
    columns, labels, bounds = packing.rows_end_to_end(splits, _SPLITS)
    texts = packing.tokenize_texts(columns, tokenizer, keep=keep,
                                   labels=labels)
    train = texts.rows(*bounds["train"])
    length = plan_lib.choose_length(
        requested, train.full_lengths, model_limit=info.max_sequence_length,
        truncation=config.truncation, num_text_columns=train.num_columns,
        num_special_tokens=train.num_special_tokens,
        hidden_dim=info.hidden_dim)
    cut = truncation_lib.Truncation(length.truncation, length.truncation_head)
    packed = pipeline.from_text_tokens(
        texts, tokenizer, max_sequence_length=length.max_sequence_length,
        truncation=cut)
    return {name: packed.rows(*rows) for name, rows in bounds.items()}, length


def _range_test(plan, *, config, model_path, num_classes, train):
    """The LR range test on the real model, as the run will train it."""
    return lr_finder.find_learning_rate(
        plan,
        make_classifier=lambda: _load_classifier(
            model_path, num_classes, plan, dropout=config.dropout,
            first_epoch_only=True, student_layers=config.student_layers)[0],
        train=train,
        options=lr_finder.RangeTestOptions(
            num_steps=config.lr_range_test_steps),
    )


def _classifier(prepared, *, first_epoch_only=False):
    """Loads the classifier as planned; returns it and the trainable layers
    of each epoch (None when every layer trains; see `freezing`).

    Its trainable layers are the first epoch's with `first_epoch_only`, else
    the widest set of the run, which the optimizer is built on.
    """
    return _load_classifier(
        prepared.model_path, len(prepared.splits.vocab), prepared.plan,
        dropout=prepared.config.dropout, first_epoch_only=first_epoch_only,
        student_layers=prepared.config.student_layers,
    )


def _load_classifier(model_path, num_classes, plan, *, dropout,
                     first_epoch_only=False, student_layers=None):
    classifier = models.load_classifier(
        model_path,
        num_classes=num_classes,
        sequence_length=plan.max_sequence_length,
        dropout=dropout,
    )
    if student_layers is not None:
        # A student: the fine-tuned `model_path` is its teacher.
        classifier, chosen = distillation.student_from_teacher(
            classifier, distillation.parse_layers(student_layers))
        logging.info("student: the teacher's encoder layers %s", chosen)
    freeze = freezing.FreezeOptions(plan.trainable_layers, plan.unfreeze)
    if not freeze.partial:
        return classifier, None
    stages = freezing.schedule(classifier, freeze, epochs=plan.epochs)
    stage = stages[0] if first_epoch_only else freezing.widest(stages)
    logging.info("trainable: %s", freezing.set_trainable(classifier, stage))
    return classifier, stages


def build_trainer(prepared, strategy):
    """Builds the classifier and its compiled `Trainer` under `strategy`."""
    plan = prepared.plan
    precision.set_policy(plan.precision)
    keras.utils.set_random_seed(plan.seed)
    with strategy.scope():
        classifier, stages = _classifier(prepared)
        schedule = optimization.WarmupLinearDecay(
            plan.learning_rate, plan.warmup_steps, plan.total_updates
        )
        metrics = heads.metrics_for(
            plan.task, std=prepared.splits.task.std) + (
                [imbalance.MacroF1(len(prepared.splits.vocab))]
                if plan.task == "classification" else [])
        loss = None
        if prepared.config.student_layers is not None:
            # Training rows carry the teacher's logits (`soft_targets`).
            loss = distillation.distillation_loss(
                prepared.config.distill_temperature,
                prepared.config.distill_alpha)
            metrics = [distillation.HardLabels(m) for m in metrics]
        trainer = trainers.for_plan(
            classifier, plan, learning_rate=schedule, metrics=metrics,
            loss=loss,
        )
        trainer.trainable_stages = stages
        trainer.learning_rate_schedule = schedule
    return trainer


def datasets(prepared, strategy=None):
    """The validation and test datasets, fed per replica under `strategy`."""
    plan = prepared.plan
    strategy = strategy or tf.distribute.get_strategy()
    return {
        name: distribution.distribute_batches(
            strategy,
            lambda n, i, name=name: pipeline.make_dataset(
                prepared.tokenized[name],
                global_batch_size=plan.global_batch_size,
                buckets=plan.bucket_boundaries,
                training=False,
                num_workers=n,
                worker_index=i,
            ),
        )
        for name in ("validation", "test")
    }


def predict_ids(trainer, prepared, split):
    """Scores for a split, in the input order: class probabilities, label
    probabilities or standardized values (`heads.scores`).

    Runs on this process alone (no collectives), so every worker of a
    multi-worker run can call it.
    """
    plan = prepared.plan
    logits = pipeline.predict_logits(
        trainer, prepared.tokenized[split],
        global_batch_size=plan.global_batch_size,
        buckets=plan.bucket_boundaries)
    return heads.scores(plan.task, logits)


def run_record(config):
    """The run's config as JSON-ready dict (`run.json`): what later tools
    (evaluate, export) read instead of asking for the data again."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(config).items()}


def write_json(path, payload):
    """Writes JSON atomically (see `atomic.write_text`)."""
    atomic.write_json(path, payload, indent=2, sort_keys=True)


class Clock:
    """Wall time since the run started."""

    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self):
        return time.perf_counter() - self.start


@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
    """How often to checkpoint, and how to react to non-finite updates."""

    every_seconds: float = 300.0  # seconds between timed checkpoints
    every_updates: int = 0  # also every N steps; 0 = only by time
    keep: int = 3  # complete checkpoints kept
    overwrite: bool = False  # start over in a model dir holding a run
    max_rollbacks: int = 3  # NaN rollbacks before giving up
    rollback_learning_rate_factor: float = 0.5

    def __post_init__(self):
        if self.keep < 1:
            raise ValueError(
                "--keep_checkpoints must be >= 1 (a kill would leave nothing "
                f"to resume from). Received: --keep_checkpoints={self.keep}"
            )


def data_fingerprint(tokenized):
    """sha256 of the training token ids, lengths and labels."""
    digest = hashlib.sha256()
    for array in (tokenized.token_ids, tokenized.lengths, tokenized.labels):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _outputs(plan, student=False):
    """The model dir entries a run with `plan` writes (a student's also
    holds its teacher's logits)."""
    names = [n for n in model_dir_lib.LAYOUT if n != model_dir_lib.EXPORT]
    if not plan.lr_range_test:
        names.remove(model_dir_lib.LR_PLOT)
    if plan.task == "classification":
        names.remove(model_dir_lib.TASK)
    if not student:
        names.remove(model_dir_lib.TEACHER_LOGITS)
    return names


def _epoch_dataset(prepared, strategy, epoch, start_batch, skipped):
    """The rest of one epoch, without the batches rollbacks skipped."""
    plan = prepared.plan
    batches = [
        b for b in range(start_batch, plan.steps_per_epoch)
        if (epoch, b) not in skipped
    ]

    def make_slice(num_slices, index):
        dataset = pipeline.make_dataset(
            prepared.tokenized["train"],
            global_batch_size=plan.global_batch_size,
            buckets=plan.bucket_boundaries,
            training=True,
            seed=plan.seed,
            epoch=epoch,
            start_batch=start_batch,
            num_workers=num_slices,
            worker_index=index,
        )
        dataset = _without_skipped(dataset, plan, epoch, start_batch, skipped,
                                   batches)
        return imbalance.weighted_by_class(dataset, plan.class_weights)

    return distribution.distribute_batches(strategy, make_slice), batches


def _without_skipped(dataset, plan, epoch, start_batch, skipped, batches):
    inject = faults.nan_batch()
    if len(batches) < plan.steps_per_epoch - start_batch or inject:
        keep = tf.constant(
            [(epoch, b) not in skipped
             for b in range(start_batch, plan.steps_per_epoch)]
        )
        bad = -1
        if inject and inject[0] == epoch and (epoch, inject[1]) not in skipped:
            bad = inject[1] - start_batch

        def poison(index, element):
            x, y, w = element
            w = tf.where(index == bad, w * float("nan"), w)
            return x, y, w

        dataset = (
            dataset.enumerate()
            .filter(lambda index, element: keep[index])
            .map(poison)
        )
    return dataset


def open_model_dir(config, environment):
    """Takes `config.model_dir` for this run (the chief only): checks that it
    is a folder the run may write, locks it; None on other workers, which
    write nothing there. Raises `model_dir.ModelDirError` in one line.

    Call it before `prepare`, so a bad folder costs no data preparation.
    """
    if not distribution.is_chief(environment):
        return None
    return model_dir_lib.ModelDir(config.model_dir)


def recorded_plan(config, *, overwrite=False):
    """The plan this same run recorded in its model dir when it started, or
    None: a resumed run keeps its measured decisions (`prepare(recorded=)`).

    "This same run": its run.json equals `config`'s. Any worker may read it.
    """
    if overwrite:
        return None
    path = config.model_dir
    try:
        with open(os.path.join(path, model_dir_lib.RUN), encoding="utf-8") as f:
            recorded = json.load(f)
        if recorded != json.loads(json.dumps(run_record(config))):
            return None
        return plan_lib.Plan.from_json(os.path.join(path, model_dir_lib.PLAN))
    except (OSError, ValueError):
        return None


def fit_and_save(
    prepared, *, strategy=None, clock=None, callbacks=(), verbose="auto",
    checkpoints=CheckpointOptions(), owner=None,
):
    """Trains as planned (resuming if the model dir holds the same run),
    evaluates, and writes the model dir.

    `owner` is the chief's `open_model_dir(...)`; without it the chief
    opens (and locks) the model dir here.

    Returns the metrics written to `metrics.json`, or None when a
    preemption signal stopped the run after its checkpoint.

    Raises:
        distribution.WorkerLostError: another worker of a multi-worker job
            died; the message names it.
        model_dir.ModelDirError: the model dir is not the run's to write.
    """
    opened = owner is None and distribution.is_chief(prepared.environment)
    if opened:
        owner = open_model_dir(prepared.config, prepared.environment)
    try:
        return _fit_and_save(prepared, strategy=strategy, clock=clock,
                             callbacks=callbacks, verbose=verbose,
                             checkpoints=checkpoints, owner=owner)
    except tf.errors.OpError as error:
        lost = distribution.worker_lost(
            error, prepared.environment,
            checkpoint_dir=os.path.join(prepared.config.model_dir,
                                        "checkpoints"),
        )
        if lost is None:
            raise
        raise lost from error
    finally:
        if opened:
            owner.release()


def _fit_and_save(prepared, *, strategy, clock, callbacks, verbose,
                  checkpoints, owner):
    clock = clock or Clock()
    config = prepared.config
    model_dir = config.model_dir
    checkpoint_dir = os.path.join(model_dir, model_dir_lib.CHECKPOINTS)
    chief = owner is not None
    if checkpoints.overwrite and chief:
        owner.remove_listed()
    saved = checkpointing.CheckpointManager(checkpoint_dir, {}).latest_manifest()
    plan = prepared.plan
    signature = checkpointing.run_signature(
        config, plan, data_fingerprint(prepared.tokenized["train"])
    )
    if saved is not None:
        differences = checkpointing.signature_differences(
            saved["signature"], signature
        )
        if differences:
            raise checkpointing.ResumeError(
                f"--model_dir={model_dir} holds a run with other settings "
                f"({'; '.join(differences)}). Pass --overwrite to start "
                "over, or choose another --model_dir."
            )

    print(plan.table(), flush=True)
    if chief:
        # Says what it will write before it writes.
        outputs = _outputs(plan, config.student_layers is not None)
        owner.claim_all(outputs)
        print(f"model dir {owner.path}: this run writes only "
              f"{', '.join(outputs)} (listed in {model_dir_lib.MANIFEST})",
              flush=True)
        write_json(owner.claim(model_dir_lib.RUN), run_record(config))
        plan.to_json(owner.claim(model_dir_lib.PLAN))
        prepared.splits.vocab.to_json(owner.claim(model_dir_lib.LABELS))
        if plan.lr_range_test:
            lr_curve.plot(
                lr_curve.RangeTestResult.from_dict(plan.lr_range_test),
                owner.claim(model_dir_lib.LR_PLOT),
            )

    strategy = strategy or distribution.make_strategy(
        plan.strategy, tpu=config.tpu
    )
    trainer = build_trainer(prepared, strategy)
    with strategy.scope():
        trainer.optimizer.build(trainer.trainable_variables)
    schedule = trainer.learning_rate_schedule
    manager = checkpointing.CheckpointManager(
        checkpoint_dir,
        {"model": trainer.model, "optimizer": trainer.optimizer,
         "learning_rate_multiplier": schedule.multiplier,
         "random_states": checkpointing.random_states(trainer.model)},
        keep=checkpoints.keep,
        is_chief=chief,
    )
    manager.clean_partial()
    position = manager.restore_latest()
    if position is None:
        position = checkpointing.Position()
        manager.save(position, signature=signature)  # rollback target
    else:
        print(f"resumed from {position.describe()}", flush=True)

    lengths = prepared.tokenized["train"].lengths
    initial_step = position.epoch * plan.steps_per_epoch + position.batch
    # Every worker runs the same monitors: they read metrics, which is a
    # collective all-reduce under MultiWorkerMirroredStrategy, so all must
    # read at the same steps. Only the chief's write into the model dir.
    monitoring = monitoring_lib.default_callbacks(
        model_dir=model_dir if chief else tempfile.mkdtemp(prefix="worker-"),
        plan=plan,
        flops_per_token=flops.training_flops_per_token(trainer, lengths),
        peak_flops=flops.peak_flops(prepared.environment, plan.precision),
        initial_step=initial_step,
        resume=initial_step > 0,
        verbose=True,  # the same metric reads on every worker (see above)
    )
    nan_guard = checkpointing.NanGuard(
        float16=plan.precision == "mixed_float16"
    )
    evaluation = datasets(prepared, strategy)
    # What earlier processes of this run trained, so a resumed or re-run
    # end phase reports the whole run.
    progress = owner.read_progress() if chief and position.updates else {}
    fit_seconds = float(progress.get("fit_seconds", 0.0))
    history = {k: list(v) for k, v in progress.get("history", {}).items()}
    summary = progress.get("summary", {})
    with checkpointing.Preemption() as preemption:
        saver = checkpointing.CheckpointCallback(
            manager,
            signature=signature,
            every_seconds=checkpoints.every_seconds,
            every_updates=checkpoints.every_updates,
            preemption=preemption,
            nan_guard=nan_guard,
        )
        keeper = selection.keeper(trainer, plan, checkpoint_dir, saver=saver,
                                  validation=evaluation["validation"])
        position = keeper.catch_up(trainer, position)
        while position.epoch < plan.epochs and not selection.stopped(position):
            epoch = position.epoch
            if trainer.trainable_stages:
                logging.info("epoch %d trains %s", epoch + 1,
                             freezing.set_trainable(
                                 trainer.model, trainer.trainable_stages[epoch]))
            skipped = set(position.skipped)
            dataset, batches = _epoch_dataset(
                prepared, strategy, epoch, position.batch, skipped
            )
            saver.start_segment(position, epoch, batches)
            keeper.start_segment(position, epoch, batches)
            epoch_plan = pipeline.plan_batches(
                lengths, global_batch_size=plan.global_batch_size,
                buckets=plan.bucket_boundaries, training=True,
                seed=plan.seed, epoch=epoch,
            )
            monitoring_lib.set_step_stats(
                monitoring,
                monitoring_lib.step_stats(epoch_plan, lengths, batches=batches),
            )
            start = time.perf_counter()
            result = trainer.fit(
                dataset,
                validation_data=evaluation["validation"],
                initial_epoch=epoch,
                epochs=epoch + 1,
                steps_per_epoch=len(batches),
                callbacks=[nan_guard, keeper, saver, *monitoring, *callbacks],
                verbose=0,
            )
            fit_seconds += time.perf_counter() - start
            if nan_guard.tripped:
                position = _roll_back(
                    manager, position, (epoch, batches[nan_guard.bad_step]),
                    schedule, checkpoints,
                )
                continue
            if saver.preempted:
                print(f"preempted: checkpoint at {saver.position.describe()}; "
                      "run the same command to resume", flush=True)
                return None
            for key, values in result.history.items():
                history.setdefault(key, []).extend(values)
            position = saver.position
            summary = {**summary, **_trained(monitoring_lib.summarize(monitoring))}
            if chief:
                owner.write_progress({"fit_seconds": fit_seconds,
                                      "history": history, "summary": summary})

    # Evaluated and saved, not the last.
    kept = keeper.restore_best(position, trainer)
    return _finish(prepared, trainer, evaluation, history, fit_seconds,
                   clock, owner=owner, summary={**summary, **kept})


def _trained(summary):
    """The measured values of a monitors' summary (None: not measured)."""
    return {k: v for k, v in summary.items() if v is not None}


def _roll_back(manager, position, bad, schedule, checkpoints):
    rollbacks = position.rollbacks + 1
    if rollbacks > checkpoints.max_rollbacks:
        raise checkpointing.TrainingError(
            f"the loss stayed non-finite after {checkpoints.max_rollbacks} "
            f"rollbacks (last at epoch {bad[0] + 1}, batch {bad[1]}). Lower "
            "--learning_rate, check the data for extreme values, or use "
            "--precision=float32."
        )
    restored = manager.restore_latest()
    multiplier = float(schedule.multiplier.numpy()) * (
        checkpoints.rollback_learning_rate_factor
    )
    schedule.multiplier.assign(multiplier)
    position = dataclasses.replace(
        restored,
        skipped=tuple(sorted(set(restored.skipped) | {bad})),
        rollbacks=rollbacks,
        learning_rate_multiplier=multiplier,
    )
    logging.warning(
        "rollback %d of %d: non-finite update at epoch %d, batch %d; "
        "restored %s, learning rate x%g, batch skipped",
        rollbacks, checkpoints.max_rollbacks, bad[0] + 1, bad[1],
        restored.describe(), multiplier,
    )
    return position


def _finish(prepared, trainer, evaluation, history, fit_seconds, clock, *,
            owner=None, summary=None):
    """The end phase: evaluate, then write metrics, the model and the report.

    Idempotent: a re-run after success, or after a kill anywhere in here,
    writes the same files (training measurements come from `summary`, kept
    across processes in the model dir's progress file). The metrics are
    written before the model, and free space is checked before the model.
    """
    config, plan = prepared.config, prepared.plan
    metrics = {
        "text_columns": list(config.text_columns),
        "label_column": config.label_column,
        "epochs": plan.epochs,
        "global_batch_size": plan.global_batch_size,
        "train_examples": len(prepared.splits.train),
        "train_examples_per_sec": (
            len(prepared.splits.train) * plan.epochs / fit_seconds
            if history and fit_seconds else None
        ),
        "fit_seconds": fit_seconds,
        "optimizer_updates": int(trainer.optimizer.iterations.numpy()),
        "nonfinite_updates": int(trainer.nonfinite_updates.numpy())
        if hasattr(trainer, "nonfinite_updates") else 0,
        "final_train_loss": float(history["loss"][-1]) if history else None,
    }
    validation = trainer.evaluate(
        evaluation["validation"], verbose=0, return_dict=True
    )
    name = heads.METRIC_NAMES[plan.task]
    metrics[f"validation_{name}"] = float(validation[name])
    task, result, test_metrics = evaluation_lib.evaluate_splits(
        prepared.splits, functools.partial(predict_ids, trainer, prepared))
    metrics.update(test_metrics)
    metrics.update(monitoring_lib.summarize(()))
    metrics.update(summary or {})
    metrics["peak_flops_source"] = flops.peak_flops_source(
        prepared.environment, plan.precision
    )
    metrics["wall_seconds"] = clock.seconds()
    if owner is not None:
        if plan.task != "classification":
            task.to_json(owner.claim(model_dir_lib.TASK))
        write_json(owner.claim(model_dir_lib.EVALUATION), result)
        write_json(owner.claim(model_dir_lib.METRICS), metrics)
        model_path = owner.claim(model_dir_lib.MODEL)
        owner.check_space(_saved_bytes(trainer.model), "saving the model")
        models.save_classifier(trainer.model, model_path)
        metrics["wall_seconds"] = clock.seconds()
        write_json(owner.claim(model_dir_lib.METRICS), metrics)
        owner.claim(model_dir_lib.REPORT)
        report.write_report(config.model_dir, evaluation=result)
    return metrics


def _saved_bytes(model):
    """About what `models.save_classifier` adds to the disk: the float32
    weights and the tokenizer assets, in a new folder beside the old one."""
    weights = sum(int(np.prod(v.shape)) for v in model.weights) * 4
    return weights + 16 * 2**20
