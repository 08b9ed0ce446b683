"""Keras callbacks that show how fast training goes, and what it does.

What a step is: one `fit` step, which with `painless_tf.Trainer` is one
optimizer update on one global batch (see `painless_tf.engine`). Every
callback here counts those steps, from `initial_step` (0, or the steps done
before a resumed run) on, across every `fit` it is passed to: a loop that
calls `fit` once per epoch keeps one history. Every record is keyed by that
count, "step".

Monitors measure, each usable alone with any Keras model:

- `Throughput`: examples/s and real tokens/s (padding excluded), and the
  padding share, from per-step `StepStats` (see `step_stats`);
- `MFU`: model FLOPs utilization, `flops_per_token x tokens/s / peak`;
- `LearningRateMonitor`: `optimizer.learning_rate`, which Keras evaluates at
  `optimizer.iterations` (schedules included, through a
  `LossScaleOptimizer` too);
- `LossScaleMonitor`: the dynamic loss scale and the skipped updates (steps
  after which `optimizer.iterations` did not advance).

Each monitor keeps `records` (one dict per interval, with the "step" it
closed at), `epoch_records`, and `summary()` over every fit so far, and
adds its epoch values to Keras' epoch logs (so `History` has them too).

Sinks record what the monitors measured, plus the loss and the compiled
metrics: `ProgressLogger` (a progress bar with ETA on a terminal, one line
per interval otherwise), `HistoryWriter` (`history.json`) and
`TensorBoardLogger` (scalars). A sink reads the monitors it is given; list
the monitors before it in `fit(callbacks=...)`, as `default_callbacks` does.

Typical use (what `apps/finetune.py` does):

    stats = step_stats([pipeline.plan_batches(tokenized.lengths, ...,
                                              training=True, epoch=e)
                        for e in range(plan.epochs)], tokenized.lengths)
    callbacks = default_callbacks(
        model_dir=model_dir, plan=plan, step_stats=stats,
        flops_per_token=flops.training_flops_per_token(classifier,
                                                       tokenized.lengths),
        peak_flops=flops.peak_flops(environment, plan.precision))
    trainer.fit(train, ..., callbacks=callbacks, verbose=0)
    metrics.update(summarize(callbacks))

A loop that calls `fit` once per epoch (or per part of one, when resuming)
passes the same callbacks to every `fit`, and before each one hands the
monitors the statistics of the batches it feeds:
`set_step_stats(callbacks, step_stats(plan_of_epoch, lengths,
batches=...))`.

Overhead. Per step, a callback only counts, in `on_train_batch_begin`,
which Keras calls on the main thread without converting any tensor. Every
`log_every_steps` steps (and at the end of each epoch's training) it closes
an interval: it reads `optimizer.iterations` once, which waits for the steps
before it (the one device sync per interval), then reads the clock and the
values it reports. No callback here overrides `on_train_batch_end`, so
Keras keeps dispatching the batch-end callbacks of others asynchronously.

Timing. The first step of a `fit` traces and compiles (or, in later fits,
starts the input pipeline); it is left out of every rate, and the first
fit's is reported as `first_step_seconds`. So is the last step
of each epoch (when the steps per epoch are known), whose end no callback
sees before Keras sets up validation, and so is validation itself.

TensorBoard. `TensorBoardLogger` writes with `tf.summary` file writers
directly rather than through `keras.callbacks.TensorBoard`: it writes at the
interval closes above on the update axis, without the Keras callback's
per-batch log conversion, graph tracing or profiler hooks; it can write
the monitors' values, which never reach Keras' batch logs; and it needs no
`tensorboard` package to write (only to view: `pip install tensorboard`).
"""

import dataclasses
import datetime
import json
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from painless_tf import atomic

# Interval records per epoch that `default_callbacks` aims for when it picks
# `log_every_steps` itself: enough points for a curve, few enough syncs.
_RECORDS_PER_EPOCH = 20
# Steps per interval when neither a plan nor `log_every_steps` says.
_DEFAULT_LOG_EVERY_STEPS = 10
# Seconds between rewrites of history.json between epochs (crash insurance).
_HISTORY_WRITE_SECONDS = 30.0
# Seconds between redraws of the terminal progress bar.
_REDRAW_SECONDS = 0.2
_HISTORY_FORMAT = 1
# Record keys that are bookkeeping, not curves.
_NOT_SCALARS = frozenset(
    {"step", "epoch", "fractional_epoch", "wall_seconds", "iterations",
     "examples", "tokens", "padded_tokens"}
)
_SHORT_NAMES = {
    "sparse_categorical_accuracy": "acc",
    "categorical_accuracy": "acc",
    "binary_accuracy": "acc",
    "accuracy": "acc",
}
# How the progress lines show the monitors' values; None hides a value that
# another one already says.
_DISPLAY = {
    "steps_per_sec": None,
    "model_flops_per_sec": None,
    "examples_per_sec": "{} ex/s",
    "tokens_per_sec": "{} tok/s",
    "padding_fraction": "pad {}",
    "mfu": "MFU {}",
    "learning_rate": "lr {}",
    "loss_scale": "scale {}",
    "skipped_updates": "skipped {}",
}


# === Step statistics ===


@dataclasses.dataclass(frozen=True, eq=False)
class StepStats:
    """What each training step feeds the model, counted on the host.

    Step `i` is the `i`-th step since the current `fit` began; a fit longer
    than the arrays wraps around (one epoch's statistics then stand for
    every epoch). Between fits, `set_step_stats` swaps them.

    Args:
        examples: np.ndarray. int64 [steps], real (non-filler) examples.
        tokens: np.ndarray. int64 [steps], real tokens, special tokens
            included, padding excluded.
        padded_tokens: np.ndarray. int64 [steps], positions the model
            computes on: rows x padded length, filler rows included.

    Examples:
    >>> stats = StepStats(examples=np.array([2, 1]), tokens=np.array([9, 4]),
    ...                   padded_tokens=np.array([16, 16]))
    >>> stats.num_steps, stats.window(0, 3)
    (2, (5, 22, 48))
    """

    examples: np.ndarray
    tokens: np.ndarray
    padded_tokens: np.ndarray

    def __post_init__(self):
        arrays = {}
        for name in ("examples", "tokens", "padded_tokens"):
            array = np.asarray(getattr(self, name), dtype=np.int64).reshape(-1)
            arrays[name] = array
            object.__setattr__(self, name, array)
        sizes = {a.size for a in arrays.values()}
        if len(sizes) != 1 or not sizes.pop():
            raise ValueError(
                "`examples`, `tokens` and `padded_tokens` must be non-empty "
                "and have one entry per step. Received sizes: "
                f"{[a.size for a in arrays.values()]}."
            )
        if np.any(self.examples < 0) or np.any(self.tokens > self.padded_tokens):
            raise ValueError(
                "Step statistics must have examples >= 0 and tokens <= "
                "padded_tokens on every step. Build them with step_stats()."
            )
        for name in ("examples", "tokens", "padded_tokens"):
            cumulative = np.concatenate([[0], np.cumsum(arrays[name])])
            object.__setattr__(self, f"_cumulative_{name}", cumulative)

    @property
    def num_steps(self) -> int:
        return int(self.examples.size)

    def window(self, start: int, stop: int) -> tuple[int, int, int]:
        """(examples, tokens, padded tokens) summed over steps [start, stop)."""
        return tuple(
            _wrapped_sum(getattr(self, f"_cumulative_{name}"), start, stop)
            for name in ("examples", "tokens", "padded_tokens")
        )


def step_stats(batch_plans, lengths, *, batches=None) -> StepStats:
    """Per-step example and token counts of the batches a pipeline feeds.

    Args:
        batch_plans: `painless_tf.pipeline.BatchPlan` or a sequence of them.
            One plan per epoch, in order (as `make_dataset` chains them:
            `plan_batches(..., training=True, seed=seed, epoch=e)`), or one
            plan that stands for every epoch.
        lengths: array-like of int. Tokens per example
            (`TokenizedExamples.lengths`).
        batches: sequence of int or None. The batches (indices into the
            plans' batches, end to end) a `fit` feeds, in order: e.g.
            `range(start_batch, steps_per_epoch)` when resuming mid-epoch.
            None takes them all.

    Returns:
        A `StepStats` with one entry per batch.

    Examples:
    >>> from painless_tf import pipeline
    >>> plan = pipeline.plan_batches([3, 5, 9], global_batch_size=2,
    ...                              buckets=(8, 16), training=False)
    >>> stats = step_stats(plan, [3, 5, 9])
    >>> stats.tokens.tolist(), stats.padded_tokens.tolist()
    ([8, 9], [16, 32])
    """
    plans = (
        list(batch_plans)
        if isinstance(batch_plans, (list, tuple))
        else [batch_plans]
    )
    if not plans:
        raise ValueError("`batch_plans` is empty. Pass one BatchPlan per epoch.")
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    rows = np.concatenate([np.asarray(p.rows) for p in plans])
    batch_lengths = np.concatenate([np.asarray(p.batch_lengths) for p in plans])
    if batches is not None:
        batches = np.asarray(list(batches), dtype=np.int64).reshape(-1)
        bad = batches[(batches < 0) | (batches >= len(rows))]
        if not batches.size or bad.size:
            raise ValueError(
                f"`batches` must be non-empty indices in [0, {len(rows)}), "
                f"the plans' batches. Received: {batches[:10].tolist()}..."
            )
        rows, batch_lengths = rows[batches], batch_lengths[batches]
    if rows.size and int(rows.max()) >= lengths.size:
        raise ValueError(
            f"The batch plans refer to example {int(rows.max())}, but "
            f"`lengths` has {lengths.size} entries. Pass the lengths the "
            "plans were made from."
        )
    real = rows >= 0
    tokens = np.where(real, lengths[np.where(real, rows, 0)], 0)
    return StepStats(
        examples=real.sum(axis=1),
        tokens=tokens.sum(axis=1),
        padded_tokens=rows.shape[1] * batch_lengths.astype(np.int64),
    )


def _wrapped_sum(cumulative, start, stop):
    n = cumulative.size - 1
    total = cumulative[-1]

    def upto(i):  # sum over the first i steps of the endless repetition
        return (i // n) * total + cumulative[i % n]

    return int(upto(stop) - upto(start))


# === The interval clock every callback shares ===


@dataclasses.dataclass(frozen=True)
class _Interval:
    epoch: int
    start: int  # first step of the interval (see "Steps" above)
    stop: int  # steps done when it closed
    timed_start: int  # timed part: steps [timed_start, timed_stop)
    timed_stop: int
    seconds: float  # wall seconds of the timed part
    wall_seconds: float  # since the first fit began
    iterations: int | None  # optimizer.iterations at the close
    fit_start: int  # the step this fit began at; StepStats count from it


# The clock of the Keras event being dispatched: (logs, seconds,
# optimizer.iterations). Keras hands every callback of one event the same
# `logs` dict, so callbacks that close the same interval share one device
# sync and one clock reading, and their rates agree exactly (MFU is then
# exactly flops x tokens/s / peak of the Throughput record beside it).
_event_clock = [None]


def _clock(callback, logs):
    last = _event_clock[0]
    if logs is not None and last is not None and last[0] is logs:
        return last[1], last[2]
    iterations = callback._sync()
    now = time.perf_counter()
    _event_clock[0] = (logs, now, iterations) if logs is not None else None
    return now, iterations


def _check_step(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
        value < minimum
    ):
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


class _IntervalCallback(keras.callbacks.Callback):
    """Counts steps; closes an interval every `log_every_steps` steps.

    State carries over from one `fit` to the next on the same instance.
    """

    def __init__(
        self,
        *,
        log_every_steps=_DEFAULT_LOG_EVERY_STEPS,
        initial_step=0,
    ):
        super().__init__()
        self.log_every_steps = _check_step("log_every_steps", log_every_steps, 1)
        self.initial_step = _check_step("initial_step", initial_step, 0)
        self._started = False
        self._training = False
        self._epoch = None

    # --- Keras hooks ---

    def on_train_begin(self, logs=None):
        now, iterations = _clock(self, logs)
        if not self._started:
            self._started = True
            self._first_fit_start = now
            self._step = self.initial_step
            self._first_step_seconds = None
            self._timed_steps = 0
            self._timed_seconds = 0.0
            self._on_first_train_begin()
        self._training = True
        self._fit_start = self._step
        self._fit_start_time = now
        self._fit_first_step_pending = True
        self._last_iterations = iterations
        self._epoch = None
        self._wall_seconds = None
        self._validation_start = None
        self._on_train_begin()

    def on_epoch_begin(self, epoch, logs=None):
        if not self._training:
            return
        now, _ = _clock(self, logs)
        self._epoch = epoch
        self._epoch_start_step = self._step
        self._epoch_start_time = now
        self._epoch_train_seconds = None
        self._epoch_validation_seconds = 0.0
        self._epoch_timed_steps = 0
        self._epoch_timed_seconds = 0.0
        self._last_batch = None
        self._open(self._step, now, timed=not self._fit_first_step_pending)
        self._on_epoch_begin(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if not self._training or self._epoch is None:
            return
        self._last_batch = batch
        self._step = self._epoch_start_step + batch
        if self._fit_first_step_pending and self._step > self._fit_start:
            now, _ = _clock(self, logs)
            self._end_first_step(now)
            self._timed_from = (self._step, now)
        if (
            self._step > self._interval_start
            and self._step % self.log_every_steps == 0
        ):
            self._close(logs)
        steps = self._steps_per_epoch()
        if steps and batch + self._steps_per_call() >= steps:
            # The epoch's last step begins. After it, Keras reads the epoch
            # metrics and sets up validation (a symbolic build, an iterator)
            # before any callback runs again; ending the timed part here
            # keeps that out of the rates, at the price of one untimed step
            # per epoch.
            self._timed_until = (self._step, _clock(self, logs)[0])

    def on_test_begin(self, logs=None):
        if not self._training or self._epoch is None:
            return
        if self._epoch_train_seconds is None:
            self._end_epoch_training(logs)
        self._validation_start = _clock(self, logs)[0]

    def on_test_end(self, logs=None):
        if self._training and self._validation_start is not None:
            self._epoch_validation_seconds += (
                _clock(self, logs)[0] - self._validation_start
            )
            self._validation_start = None

    def on_epoch_end(self, epoch, logs=None):
        if not self._training or self._epoch is None:
            return
        if self._epoch_train_seconds is None:
            self._end_epoch_training(logs)
        self._on_epoch_end(epoch, logs if logs is not None else {})

    def on_train_end(self, logs=None):
        if not self._training:
            return
        self._training = False
        self._wall_seconds = _clock(self, logs)[0] - self._first_fit_start
        self._on_train_end(logs or {})

    # --- Hooks for subclasses ---

    def _on_first_train_begin(self):
        """Once per instance: set up what accumulates over fits."""

    def _on_train_begin(self):
        """At the start of every fit."""

    def _on_epoch_begin(self, epoch):
        pass

    def _on_interval(self, interval):
        pass

    def _on_epoch_end(self, epoch, logs):
        pass

    def _on_train_end(self, logs):
        pass

    # --- Clock ---

    def _open(self, step, when, timed):
        self._interval_start = step
        self._timed_from = (step, when) if timed else None
        self._timed_until = None

    def _end_first_step(self, now):
        # A fit's first step pays for tracing (the first fit) or for the
        # input pipeline's start-up; rates leave it out.
        self._fit_first_step_pending = False
        if self._first_step_seconds is None:
            self._first_step_seconds = now - self._fit_start_time

    def _steps_per_call(self):
        per_call = getattr(self.model, "steps_per_execution", 1)
        return per_call if isinstance(per_call, int) and per_call > 0 else 1

    def _sync(self):
        """Waits for the steps so far; returns optimizer.iterations."""
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        return int(_to_numpy(optimizer.iterations))

    def _end_epoch_training(self, logs):
        if self._last_batch is not None:
            done = self._last_batch + self._steps_per_call()
            steps = self._steps_per_epoch()
            if steps:
                done = min(done, steps)
            self._step = self._epoch_start_step + done
        if self._step > self._interval_start:
            self._close(logs)
        now, _ = _clock(self, logs)
        self._epoch_train_seconds = now - self._epoch_start_time

    def _close(self, logs):
        now, iterations = _clock(self, logs)
        stop = self._step
        if self._fit_first_step_pending:
            # The fit's first epoch had a single step.
            self._end_first_step(now)
        timed_start, timed_stop, seconds = stop, stop, 0.0
        if self._timed_from is not None:
            timed_start, started = self._timed_from
            timed_stop, ended = self._timed_until or (stop, now)
            if timed_stop > timed_start:
                seconds = ended - started
            else:
                timed_start = timed_stop = stop
        interval = _Interval(
            epoch=self._epoch,
            start=self._interval_start,
            stop=stop,
            timed_start=timed_start,
            timed_stop=timed_stop,
            seconds=seconds,
            wall_seconds=now - self._first_fit_start,
            iterations=iterations,
            fit_start=self._fit_start,
        )
        timed_steps = timed_stop - timed_start
        self._timed_steps += timed_steps
        self._timed_seconds += seconds
        self._epoch_timed_steps += timed_steps
        self._epoch_timed_seconds += seconds
        self._on_interval(interval)
        self._last_iterations = iterations
        self._open(stop, now, timed=not self._fit_first_step_pending)

    def _steps_per_epoch(self):
        return (self.params or {}).get("steps")


class _Counts:
    """Examples and tokens of steps, from StepStats or fixed per-step sizes."""

    def __init__(self, step_stats, examples_per_step, tokens_per_step):
        if step_stats is not None and not isinstance(step_stats, StepStats):
            raise ValueError(
                "`step_stats` must be a StepStats (see step_stats()). "
                f"Received: {type(step_stats).__name__}."
            )
        for name, value in (
            ("examples_per_step", examples_per_step),
            ("tokens_per_step", tokens_per_step),
        ):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < 1
            ):
                raise ValueError(
                    f"`{name}` must be a positive int or None. Received: "
                    f"{name}={value!r}"
                )
        self.stats = step_stats
        self.examples_per_step = examples_per_step
        self.tokens_per_step = tokens_per_step

    def window(self, start, stop):
        """(examples, tokens, padded tokens) of steps [start, stop) of the
        fit; None for what is unknown."""
        if self.stats is not None:
            return self.stats.window(start, stop)
        steps = stop - start
        examples = None if self.examples_per_step is None else (
            steps * int(self.examples_per_step)
        )
        tokens = None if self.tokens_per_step is None else (
            steps * int(self.tokens_per_step)
        )
        return examples, tokens, None


# === Monitors ===


class _Monitor(_IntervalCallback):
    """A callback that measures; sinks read `latest` at the same close."""

    def __init__(self, *, log_every_steps=_DEFAULT_LOG_EVERY_STEPS,
                 initial_step=0):
        super().__init__(
            log_every_steps=log_every_steps, initial_step=initial_step
        )
        self.records = []
        self.epoch_records = []
        self.latest = {}

    def _on_interval(self, interval):
        self.latest = {"step": interval.stop, **self._measure(interval)}
        self.records.append(self.latest)

    def _on_epoch_end(self, epoch, logs):
        values = self._measure_epoch()
        self.epoch_records.append({"epoch": epoch, **values})
        # Like keras.callbacks.LearningRateScheduler: epoch values go into
        # the epoch logs, so History, CSVLogger and later callbacks see them.
        logs.update({k: v for k, v in values.items() if v is not None})

    def _measure(self, interval):
        raise NotImplementedError

    def _measure_epoch(self):
        raise NotImplementedError

    def summary(self) -> dict:
        """Measurements over the whole `fit`, JSON-ready."""
        return {}


def _window(counts, interval, start, stop):
    # StepStats count the steps of the current fit.
    return counts.window(start - interval.fit_start, stop - interval.fit_start)


def _rate(amount, seconds):
    if amount is None or not seconds or seconds <= 0:
        return None
    return float(amount) / seconds


class Throughput(_Monitor):
    """Examples and real tokens per second, and the padding share.

    Token counts need `step_stats` (the padding the model sees depends on
    each batch's bucket); without them, give `examples_per_step` for
    examples/s, or neither for steps/s alone. Rates leave out the first
    step of the `fit` (tracing and compilation) and validation.

    Each interval record holds `examples`, `tokens` and `padded_tokens`
    (counts over all of its steps) and `steps_per_sec`,
    `examples_per_sec`, `tokens_per_sec` (real tokens) and
    `padding_fraction` (over its timed steps). The epoch logs gain the
    epoch's rates.

    Args:
        step_stats: StepStats or None. Per-step counts (see `step_stats`).
        examples_per_step: int or None. Examples per step when there are no
            `step_stats`, e.g. the global batch size.
        log_every_steps: int. Steps per interval.

    Examples:
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> throughput = Throughput(examples_per_step=4, log_every_steps=2)
    >>> _ = model.fit(np.ones((16, 2)), np.ones((16,)), batch_size=4,
    ...               epochs=1, verbose=0, callbacks=[throughput])
    >>> [record["step"] for record in throughput.records]
    [2, 4]
    >>> throughput.summary()["examples_per_sec"] > 0
    True
    """

    def __init__(
        self,
        *,
        step_stats: StepStats | None = None,
        examples_per_step: int | None = None,
        log_every_steps: int = _DEFAULT_LOG_EVERY_STEPS,
        initial_step: int = 0,
    ):
        super().__init__(
            log_every_steps=log_every_steps, initial_step=initial_step
        )
        self._counts = _Counts(step_stats, examples_per_step, None)

    @property
    def step_stats(self) -> StepStats | None:
        """Per-step counts of the current fit; settable between fits."""
        return self._counts.stats

    @step_stats.setter
    def step_stats(self, stats):
        self._counts = _Counts(stats, self._counts.examples_per_step, None)

    def _on_first_train_begin(self):
        # Rows: all steps, timed steps, timed steps of this epoch, all
        # steps of this epoch. Columns: examples, tokens, padded tokens.
        self._totals = np.zeros((4, 3), np.float64)

    def _on_epoch_begin(self, epoch):
        self._totals[2:] = 0

    def _measure(self, interval):
        counts = _window(self._counts, interval, interval.start, interval.stop)
        timed = _window(
            self._counts, interval, interval.timed_start, interval.timed_stop
        )
        counts_or_zero = [c or 0 for c in counts]
        timed_or_zero = [c or 0 for c in timed]
        self._totals += [counts_or_zero, timed_or_zero, timed_or_zero,
                         counts_or_zero]
        values = {
            "examples": counts[0],
            "tokens": counts[1],
            "padded_tokens": counts[2],
        }
        values.update(
            self._rates(
                interval.timed_stop - interval.timed_start, interval.seconds,
                timed, counts,
            )
        )
        return values

    def _measure_epoch(self):
        return self._rates(
            self._epoch_timed_steps,
            self._epoch_timed_seconds,
            self._known_only(self._totals[2]),
            self._known_only(self._totals[3]),
        )

    def _known_only(self, totals):
        known = [c is not None for c in self._counts.window(0, 1)]
        return [t if k else None for t, k in zip(totals, known)]

    @staticmethod
    def _rates(steps, seconds, timed, counts):
        """Rates over the timed counts; padding over all counts."""
        examples, tokens, _ = timed
        all_tokens, all_padded = counts[1], counts[2]
        return {
            "steps_per_sec": _rate(steps if steps else None, seconds),
            "examples_per_sec": _rate(examples if steps else None, seconds),
            "tokens_per_sec": _rate(tokens if steps else None, seconds),
            "padding_fraction": (
                1.0 - float(all_tokens) / float(all_padded)
                if all_padded else None
            ),
        }

    def summary(self) -> dict:
        """Rates over every timed step of the `fit`; padding over all steps.

        Returns:
            dict with "examples_per_sec", "tokens_per_sec",
            "padding_fraction", "steps_per_sec", "train_seconds" and
            "timed_steps" (the steps the rates cover, and their seconds)
            and "first_step_seconds"; None where unknown.
        """
        if not hasattr(self, "_totals"):
            return {}
        rates = self._rates(
            self._timed_steps,
            self._timed_seconds,
            self._known_only(self._totals[1]),
            self._known_only(self._totals[0]),
        )
        rates["train_seconds"] = self._timed_seconds
        rates["timed_steps"] = self._timed_steps
        rates["first_step_seconds"] = self._first_step_seconds
        return rates


class MFU(_Monitor):
    """Model FLOPs utilization: useful model FLOP/s over the peak.

    `mfu = flops_per_token x real tokens/s / peak_flops`, per interval, per
    epoch and over the `fit` (first step and validation left out). Get
    `flops_per_token` from `painless_tf.flops.training_flops_per_token` and
    `peak_flops` from `painless_tf.flops.peak_flops`.

    Args:
        flops_per_token: float. Training FLOPs per real token.
        peak_flops: float. Peak FLOP/s of all devices that train; NaN or
            None leaves `mfu` unreported (None in the records, "MFU n/a" in
            the progress line), as `flops.peak_flops` does for a CPU peak
            measured only under load.
        step_stats: StepStats or None. Per-step real token counts.
        tokens_per_step: int or None. Tokens per step without `step_stats`
            (fixed-shape batches; padding then counts as real). With
            neither, `mfu` stays None until `set_step_stats` gives counts.
        log_every_steps: int. Steps per interval.

    Examples:
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> mfu = MFU(flops_per_token=12.0, peak_flops=1e9, tokens_per_step=4,
    ...           log_every_steps=2)
    >>> _ = model.fit(np.ones((16, 2)), np.ones((16,)), batch_size=4,
    ...               epochs=1, verbose=0, callbacks=[mfu])
    >>> 0 < mfu.summary()["mfu"] < 1
    True
    """

    def __init__(
        self,
        *,
        flops_per_token: float,
        peak_flops: float | None,
        step_stats: StepStats | None = None,
        tokens_per_step: int | None = None,
        log_every_steps: int = _DEFAULT_LOG_EVERY_STEPS,
        initial_step: int = 0,
    ):
        super().__init__(
            log_every_steps=log_every_steps, initial_step=initial_step
        )
        if not (isinstance(flops_per_token, (int, float)) and flops_per_token > 0):
            raise ValueError(
                "`flops_per_token` must be a positive number. Received: "
                f"flops_per_token={flops_per_token!r}. Use "
                "painless_tf.flops.training_flops_per_token(model, lengths)."
            )
        self.flops_per_token = float(flops_per_token)
        self.peak_flops = (
            float(peak_flops)
            if peak_flops is not None and math.isfinite(peak_flops) and peak_flops > 0
            else None
        )
        self._counts = _Counts(step_stats, None, tokens_per_step)

    @property
    def step_stats(self) -> StepStats | None:
        """Per-step real token counts of the current fit; settable."""
        return self._counts.stats

    @step_stats.setter
    def step_stats(self, stats):
        self._counts = _Counts(stats, None, self._counts.tokens_per_step)

    def _on_first_train_begin(self):
        self._tokens = 0
        self._epoch_tokens = 0

    def _on_train_begin(self):
        if self._counts.window(0, 1)[1] is None:
            logging.warning(
                "MFU: no token counts for this fit; pass step_stats (see "
                "set_step_stats) or tokens_per_step. MFU is not reported."
            )

    def _on_epoch_begin(self, epoch):
        self._epoch_tokens = 0

    def _measure(self, interval):
        tokens = _window(
            self._counts, interval, interval.timed_start, interval.timed_stop
        )[1]
        self._tokens += tokens or 0
        self._epoch_tokens += tokens or 0
        return self._values(tokens, interval.seconds)

    def _measure_epoch(self):
        return self._values(self._epoch_tokens, self._epoch_timed_seconds)

    def _values(self, tokens, seconds):
        flops_per_sec = _rate(
            self.flops_per_token * tokens if tokens else None, seconds
        )
        mfu = None
        if flops_per_sec is not None and self.peak_flops:
            mfu = flops_per_sec / self.peak_flops
        return {"model_flops_per_sec": flops_per_sec, "mfu": mfu}

    def summary(self) -> dict:
        """MFU over every timed step of the `fit`.

        Returns:
            dict with "mfu", "model_flops_per_sec", "flops_per_token" and
            "peak_flops"; None where unknown.
        """
        if not hasattr(self, "_tokens"):
            return {}
        values = self._values(self._tokens, self._timed_seconds)
        values["flops_per_token"] = self.flops_per_token
        values["peak_flops"] = self.peak_flops
        return values


class LearningRateMonitor(_Monitor):
    """Logs `optimizer.learning_rate` and `optimizer.iterations`.

    Keras evaluates a schedule at `optimizer.iterations`, so the logged
    `learning_rate` is the rate of the next update, `schedule(iterations)`;
    through a `LossScaleOptimizer` both come from the inner optimizer. The
    epoch logs gain `learning_rate` at the epoch's end.

    Args:
        log_every_steps: int. Steps per interval.

    Examples:
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(
    ...     keras.optimizers.schedules.PolynomialDecay(0.1, 4, 0.0)), loss="mse")
    >>> monitor = LearningRateMonitor(log_every_steps=2)
    >>> _ = model.fit(np.ones((16, 2)), np.ones((16,)), batch_size=4,
    ...               epochs=1, verbose=0, callbacks=[monitor])
    >>> [round(r["learning_rate"], 4) for r in monitor.records]
    [0.05, 0.0]
    """

    def _measure(self, interval):
        return {
            "learning_rate": self._learning_rate(),
            "iterations": interval.iterations,
        }

    def _measure_epoch(self):
        return {"learning_rate": self._learning_rate()}

    def _learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        return float(_to_numpy(optimizer.learning_rate))


class LossScaleMonitor(_Monitor):
    """Logs the dynamic loss scale and the updates it skipped.

    A step whose gradients were not finite leaves `optimizer.iterations`
    where it was (and halves the scale), so `skipped_updates` in an
    interval is its steps minus the advance of `optimizer.iterations`. This
    assumes one update per step, as with `painless_tf.Trainer`. Without a
    `LossScaleOptimizer`, `loss_scale` is None and nothing is skipped. The
    epoch logs gain `loss_scale` and the epoch's `skipped_updates`.

    Args:
        log_every_steps: int. Steps per interval.

    Examples:
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.LossScaleOptimizer(
    ...     keras.optimizers.SGD(0.01), initial_scale=8.0), loss="mse")
    >>> monitor = LossScaleMonitor(log_every_steps=2)
    >>> _ = model.fit(np.ones((16, 2)), np.ones((16,)), batch_size=4,
    ...               epochs=1, verbose=0, callbacks=[monitor])
    >>> monitor.records[-1]["loss_scale"], monitor.summary()["skipped_updates"]
    (8.0, 0)
    """

    def _on_first_train_begin(self):
        self._skipped = 0
        self._epoch_skipped = 0

    def _on_epoch_begin(self, epoch):
        self._epoch_skipped = 0

    def _measure(self, interval):
        skipped = 0
        if interval.iterations is not None and self._last_iterations is not None:
            skipped = (interval.stop - interval.start) - (
                interval.iterations - self._last_iterations
            )
        self._skipped += skipped
        self._epoch_skipped += skipped
        return {"loss_scale": self._loss_scale(), "skipped_updates": skipped}

    def _measure_epoch(self):
        return {
            "loss_scale": self._loss_scale(),
            "skipped_updates": self._epoch_skipped,
        }

    def _loss_scale(self):
        optimizer = getattr(self.model, "optimizer", None)
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return None
        return float(_to_numpy(optimizer.dynamic_scale))

    def summary(self) -> dict:
        """Skipped updates over the `fit`, and the final loss scale.

        Returns:
            dict with "skipped_updates" (int) and "loss_scale" (float or
            None without loss scaling).
        """
        if not hasattr(self, "_skipped"):
            return {}
        return {"skipped_updates": self._skipped, "loss_scale": self._loss_scale()}


# === Sinks ===


class _Sink(_IntervalCallback):
    """A callback that records the loss, metrics and its monitors' values."""

    def __init__(
        self,
        *,
        monitors=(),
        log_every_steps=_DEFAULT_LOG_EVERY_STEPS,
        initial_step=0,
        total_epochs=None,
    ):
        super().__init__(
            log_every_steps=log_every_steps, initial_step=initial_step
        )
        if total_epochs is not None:
            total_epochs = _check_step("total_epochs", total_epochs, 1)
        self.total_epochs = total_epochs
        self.monitors = tuple(monitors)
        for monitor in self.monitors:
            if not isinstance(monitor, _Monitor):
                raise ValueError(
                    "`monitors` must hold painless_tf monitors (Throughput, "
                    "MFU, LearningRateMonitor, LossScaleMonitor). Received: "
                    f"{type(monitor).__name__}."
                )
            if monitor.log_every_steps != self.log_every_steps:
                raise ValueError(
                    f"A monitor logs every {monitor.log_every_steps} steps "
                    f"but this {type(self).__name__} every "
                    f"{self.log_every_steps}. Pass the same log_every_steps "
                    "to both."
                )
            if monitor.initial_step != self.initial_step:
                raise ValueError(
                    f"A monitor starts at step {monitor.initial_step} but "
                    f"this {type(self).__name__} at {self.initial_step}. "
                    "Pass the same initial_step to both."
                )

    def _epochs(self):
        """Epochs of the whole run: `total_epochs`, else fit's `epochs`."""
        return self.total_epochs or (self.params or {}).get("epochs")

    def _on_epoch_begin(self, epoch):
        # Keras reset the metrics just before this: the baseline is zero,
        # and reading it costs nothing.
        self._metric_base = _metric_state(self.model)

    def _interval_record(self, interval):
        state = _metric_state(self.model)
        record = {
            "step": interval.stop,
            "epoch": interval.epoch,
            "fractional_epoch": self._fractional_epoch(interval),
            "wall_seconds": interval.wall_seconds,
        }
        record.update(_interval_means(self._metric_base, state))
        self._metric_base = state
        for monitor in self.monitors:
            latest = monitor.latest
            if latest.get("step") == interval.stop:
                record.update(
                    {k: v for k, v in latest.items() if k != "step"}
                )
        return record

    def _fractional_epoch(self, interval):
        steps = self._steps_per_epoch()
        if not steps:
            return None
        return interval.epoch + (interval.stop - self._epoch_start_step) / steps

    def _epoch_record(self, epoch, logs):
        record = {
            "epoch": epoch,
            "step": self._step,
            "wall_seconds": time.perf_counter() - self._first_fit_start,
            "train_seconds": self._epoch_train_seconds,
            "validation_seconds": self._epoch_validation_seconds,
        }
        for key, value in logs.items():
            number = _number(value)
            if number is not None or value is None:
                record[key] = number
        return record


def _metric_state(model):
    """{name: (total, count)} of Mean metrics, {name: value} of the rest."""
    state = {}
    for metric in _flat_metrics(model):
        if isinstance(metric, keras.metrics.Mean):
            state[metric.name] = (
                float(_to_numpy(metric.total)),
                float(_to_numpy(metric.count)),
            )
        else:
            result = metric.result()
            if isinstance(result, dict):
                for name, value in result.items():
                    state[name] = _number(value)
            else:
                state[metric.name] = _number(result)
    return state


def _flat_metrics(model):
    metrics = []
    for metric in getattr(model, "metrics", []):
        # Keras' CompileMetrics (and other containers) hold the real ones.
        inner = getattr(metric, "metrics", None)
        if isinstance(inner, (list, tuple)) and inner:
            metrics.extend(inner)
        else:
            metrics.append(metric)
    return metrics


def _interval_means(base, state):
    """Mean metrics over the interval only; others as Keras reports them."""
    means = {}
    for name, value in state.items():
        if isinstance(value, tuple):
            total, count = value
            total0, count0 = base.get(name, (0.0, 0.0)) if isinstance(
                base.get(name), tuple
            ) else (0.0, 0.0)
            means[name] = (
                (total - total0) / (count - count0) if count > count0 else None
            )
        else:
            means[name] = value
    return means


def _to_numpy(value):
    # Keras variables and TF tensors convert themselves; np.asarray on a
    # Keras variable warns under NumPy 2 (no `copy` argument).
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _number(value):
    try:
        number = float(_to_numpy(value))
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class ProgressLogger(_Sink, keras.callbacks.ProgbarLogger):
    """A progress bar with ETA on a terminal; one line per interval in logs.

    On a terminal the bar is redrawn as steps begin (no device reads) and
    its numbers refresh at each interval; elsewhere (CI logs, files) it
    writes one line per interval. Every epoch ends with one line of train
    and validation metrics and times. The ETA is the remaining steps at the
    measured seconds per step, plus the mean validation time of the epochs
    so far for each validation still to come.

    It is a `keras.callbacks.ProgbarLogger`, so `fit` adds no progress bar
    of its own beside it, whatever `verbose` says.

    Args:
        monitors: sequence of monitors (listed before this callback in
            `fit`) whose values to show.
        log_every_steps: int. Steps per interval.
        stream: file-like or None. Where to write; None is `sys.stdout`.
        is_terminal: bool or None. Draw a bar (True) or write lines
            (False); None asks `stream.isatty()`.

    Examples:
    >>> import io
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> out = io.StringIO()
    >>> _ = model.fit(np.ones((16, 2)), np.ones((16,)), batch_size=4,
    ...               epochs=1, callbacks=[ProgressLogger(log_every_steps=2,
    ...                                                   stream=out)])
    >>> out.getvalue().splitlines()[1].startswith("epoch 1/1 step 2/4")
    True
    """

    # Keras' ProgbarLogger converts every batch's logs; these stay the
    # no-op defaults so Keras keeps its asynchronous batch-end dispatch.
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end
    on_test_batch_end = keras.callbacks.Callback.on_test_batch_end
    on_predict_batch_end = keras.callbacks.Callback.on_predict_batch_end
    on_predict_begin = keras.callbacks.Callback.on_predict_begin
    on_predict_end = keras.callbacks.Callback.on_predict_end

    def __init__(
        self,
        *,
        monitors=(),
        log_every_steps: int = _DEFAULT_LOG_EVERY_STEPS,
        initial_step: int = 0,
        total_epochs: int | None = None,
        stream=None,
        is_terminal: bool | None = None,
    ):
        super().__init__(
            monitors=monitors, log_every_steps=log_every_steps,
            initial_step=initial_step, total_epochs=total_epochs,
        )
        self._stream = stream
        self._is_terminal = is_terminal

    def set_params(self, params):
        keras.callbacks.Callback.set_params(self, params)

    # --- Keras hooks (beyond the interval clock) ---

    def on_train_batch_begin(self, batch, logs=None):
        super().on_train_batch_begin(batch, logs)
        if self._training and self._terminal():
            now = time.perf_counter()
            if now - self._last_draw >= _REDRAW_SECONDS:
                self._draw(now)

    # --- Sink hooks ---

    def _on_first_train_begin(self):
        self._last_values = {}
        self._last_draw = 0.0
        self._validation_seconds_seen = []
        epochs = self._epochs()
        steps = self._steps_per_epoch()
        accumulation = getattr(self.model, "accumulation_steps", None)
        parts = [
            f"training: {epochs} epoch{'s' * (epochs != 1)}" if epochs
            else "training"
        ]
        if steps:
            parts[0] += f" x {steps} steps"
        note = "one step = one optimizer update"
        if accumulation and accumulation > 1:
            note += f" of {accumulation} micro-batches per replica"
        self._write(f"{parts[0]} ({note})")

    def _on_interval(self, interval):
        record = self._interval_record(interval)
        self._last_values = record
        if self._terminal():
            self._draw(time.perf_counter())
        else:
            self._write(self._line(record))

    def _on_epoch_end(self, epoch, logs):
        self._validation_seconds_seen.append(self._epoch_validation_seconds)
        record = self._epoch_record(epoch, logs)
        epochs = self._epochs()
        head = f"epoch {epoch + 1}/{epochs}" if epochs else f"epoch {epoch + 1}"
        times = f"done in {_duration(record['train_seconds'])}"
        if record["validation_seconds"]:
            times += f" (+ validation {_duration(record['validation_seconds'])})"
        body = _format_values(
            record, skip=_NOT_SCALARS | {"train_seconds", "validation_seconds"}
        )
        if self._terminal():
            self._stream_or_stdout().write("\n")
        self._write(f"{head} {times}: {body}")

    def _on_train_end(self, logs):
        epochs = self._epochs()
        if self._epoch is None or not epochs or self._epoch + 1 >= epochs:
            self._write(f"training: done in {_duration(self._wall_seconds)}")

    # --- Output ---

    def _line(self, record):
        return f"{self._position()}  {_format_values(record)}  ETA {self._eta()}"

    def _draw(self, now):
        self._last_draw = now
        steps = self._steps_per_epoch()
        done = self._step - self._epoch_start_step
        bar = ""
        if steps:
            width = 24
            filled = min(width, int(width * done / steps))
            bar = "[" + "=" * filled + ">" * (filled < width) + "." * (
                width - filled - 1
            ) + "] "
        text = (
            f"\r{self._epoch_label()} {bar}{done}/{steps or '?'}  "
            f"ETA {self._eta()}  {_format_values(self._last_values)}"
        )
        stream = self._stream_or_stdout()
        stream.write(text + "\x1b[K")
        stream.flush()

    def _epoch_label(self):
        epochs = self._epochs()
        return f"epoch {self._epoch + 1}/{epochs}" if epochs else (
            f"epoch {self._epoch + 1}"
        )

    def _position(self):
        steps = self._steps_per_epoch()
        done = self._step - self._epoch_start_step
        return f"{self._epoch_label()} step {done}/{steps or '?'}"

    def _eta(self):
        steps = self._steps_per_epoch()
        epochs = self._epochs()
        if not steps or not epochs or not self._timed_steps:
            return "?"
        remaining = (steps - (self._step - self._epoch_start_step)) + (
            epochs - self._epoch - 1
        ) * steps
        seconds = remaining * self._timed_seconds / self._timed_steps
        if self._validation_seconds_seen:
            mean = sum(self._validation_seconds_seen) / len(
                self._validation_seconds_seen
            )
            seconds += mean * (epochs - self._epoch)
        return _duration(seconds)

    def _terminal(self):
        if self._is_terminal is not None:
            return self._is_terminal
        isatty = getattr(self._stream_or_stdout(), "isatty", None)
        return bool(isatty and isatty())

    def _stream_or_stdout(self):
        return self._stream if self._stream is not None else sys.stdout

    def _write(self, line):
        stream = self._stream_or_stdout()
        stream.write(line + "\n")
        stream.flush()


def _format_values(record, skip=_NOT_SCALARS):
    parts = []
    for key, value in record.items():
        if key == "mfu" and value is None and key not in skip:
            # The MFU monitor runs but has no peak to divide by, or no
            # token counts: say so rather than drop it (see `flops`).
            parts.append("MFU n/a")
            continue
        if key in skip or value is None or isinstance(value, str):
            continue
        if key == "skipped_updates" and not value:
            continue
        if key in _DISPLAY:
            if _DISPLAY[key] is not None:
                parts.append(_DISPLAY[key].format(_format_number(key, value)))
            continue
        name = key
        for long, short in _SHORT_NAMES.items():
            if name == long or name == f"val_{long}":
                name = name.replace(long, short)
        parts.append(f"{name} {_format_number(key, value)}")
    return "  ".join(parts)


def _format_number(key, value):
    if key in ("mfu", "padding_fraction"):
        return f"{100 * value:.1f}%"
    if key.endswith("_per_sec"):
        return _si(value)
    if key == "learning_rate":
        return f"{value:.3g}"
    if key in ("loss_scale", "skipped_updates"):
        return f"{value:g}"
    return f"{value:.4f}"


def _si(value):
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _duration(seconds):
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes}:{seconds:02d}"


class HistoryWriter(_Sink):
    """Writes `history.json`: interval and epoch records, and a summary.

    The file is replaced atomically (a reader never sees half of it) at
    every epoch end, at the end of `fit`, and every 30 s of intervals. Its
    content (`format` 1):

        {"format": 1, "log_every_steps": int, "epochs_planned": int,
         "steps_per_epoch": int | null, "accumulation_steps": int | null,
         "started": ISO time, "wall_seconds": float | null,
         "first_step_seconds": float | null, "metadata": {...},
         "train": [{"step", "epoch", "fractional_epoch", "wall_seconds",
                    "loss", <metric>..., <monitor value>...}, ...],
         "epochs": [{"epoch", "step", "wall_seconds", "train_seconds",
                     "validation_seconds", "loss", "val_loss", ...}, ...],
         "summary": {"mfu", "tokens_per_sec", "padding_fraction", ...}}

    Train records hold the mean loss and mean metrics over the interval's
    steps (Keras' running epoch means for metrics that are not means), and
    the monitors' values at the interval's close. Non-finite numbers are
    written as null.

    Args:
        path: str. The file to write, e.g. `<model_dir>/history.json`.
        monitors: sequence of monitors (listed before this callback in
            `fit`) whose values to record.
        log_every_steps: int. Steps per interval.
        initial_step: int. The step this run starts at (a resumed run's
            steps done so far).
        total_epochs: int or None. Epochs of the whole run, when each `fit`
            runs only some of them.
        append: bool. Keep the records of an existing file up to
            `initial_step` (resuming) instead of starting a new file.
        metadata: dict or None. JSON-ready values stored as "metadata".

    Examples:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.json")
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> _ = model.fit(np.ones((16, 2)), np.ones((16,)), batch_size=4,
    ...               epochs=2, verbose=0,
    ...               callbacks=[HistoryWriter(path, log_every_steps=2)])
    >>> history = json.load(open(path))
    >>> len(history["train"]), len(history["epochs"])
    (4, 2)
    """

    def __init__(
        self,
        path: str,
        *,
        monitors=(),
        log_every_steps: int = _DEFAULT_LOG_EVERY_STEPS,
        initial_step: int = 0,
        total_epochs: int | None = None,
        append: bool = False,
        metadata: dict | None = None,
    ):
        super().__init__(
            monitors=monitors, log_every_steps=log_every_steps,
            initial_step=initial_step, total_epochs=total_epochs,
        )
        self.path = os.fspath(path)
        self.append = bool(append)
        self.metadata = dict(metadata or {})

    def _on_first_train_begin(self):
        self._train, self._epoch_records = [], []
        self._started_at = datetime.datetime.now(
            datetime.timezone.utc
        ).isoformat(timespec="seconds")
        if self.append and tf.io.gfile.exists(self.path):
            self._keep_earlier_records()
        self._last_write = time.perf_counter()

    def _keep_earlier_records(self):
        try:
            with tf.io.gfile.GFile(self.path, "r") as f:
                earlier = json.loads(f.read())
        except (ValueError, OSError) as error:
            logging.warning(
                "history: cannot read %s (%s); starting a new history.",
                self.path, error,
            )
            return
        if not isinstance(earlier, dict) or earlier.get("format") != _HISTORY_FORMAT:
            logging.warning(
                "history: %s is not a format-%d history; starting a new one.",
                self.path, _HISTORY_FORMAT,
            )
            return
        # Records past the resumed step belong to work that is redone.
        self._train = [
            r for r in earlier.get("train", [])
            if (r.get("step") or 0) <= self.initial_step
        ]
        self._epoch_records = [
            r for r in earlier.get("epochs", [])
            if (r.get("step") or 0) <= self.initial_step
        ]
        self._started_at = earlier.get("started", self._started_at)

    def _on_interval(self, interval):
        self._train.append(self._interval_record(interval))
        if time.perf_counter() - self._last_write >= _HISTORY_WRITE_SECONDS:
            self._write()

    def _on_epoch_end(self, epoch, logs):
        self._epoch_records.append(self._epoch_record(epoch, logs))
        self._write()

    def _on_train_end(self, logs):
        self._write()

    def history(self) -> dict:
        """The content of `history.json` as it stands now."""
        return _json_ready(
            {
                "format": _HISTORY_FORMAT,
                "log_every_steps": self.log_every_steps,
                "epochs_planned": self._epochs(),
                "steps_per_epoch": self._steps_per_epoch(),
                "accumulation_steps": getattr(
                    self.model, "accumulation_steps", None
                ),
                "started": self._started_at,
                "initial_step": self.initial_step,
                "wall_seconds": (
                    self._wall_seconds if self._wall_seconds is not None
                    else time.perf_counter() - self._first_fit_start
                ),
                "first_step_seconds": self._first_step_seconds,
                "metadata": self.metadata,
                "train": self._train,
                "epochs": self._epoch_records,
                "summary": summarize(self.monitors),
            }
        )

    def _write(self):
        self._last_write = time.perf_counter()
        _write_json_atomically(self.path, self.history())


def _write_json_atomically(path, value):
    """Writes `value` as JSON to `path` so that readers never see half."""
    atomic.write_json(path, value, indent=1, sort_keys=False, allow_nan=False)


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return str(value)


class TensorBoardLogger(_Sink):
    """Writes TensorBoard scalars for the loss, metrics and monitors.

    Under `log_dir/train`: every interval's mean loss and metrics and the
    monitors' values (tags as in `history.json`), and each epoch's
    training metrics as `epoch_<name>`. Under `log_dir/validation`: each
    epoch's validation metrics as `epoch_<name>`, so train and validation
    curves overlay. Every scalar's step is the number of steps (updates)
    done since `fit` began.

    Args:
        log_dir: str. E.g. `<model_dir>/tensorboard`.
        monitors: sequence of monitors (listed before this callback in
            `fit`) whose values to write.
        log_every_steps: int. Steps per interval.

    Examples:
    >>> import os, tempfile
    >>> log_dir = tempfile.mkdtemp()
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> _ = model.fit(np.ones((16, 2)), np.ones((16,)), batch_size=4,
    ...               epochs=1, verbose=0,
    ...               callbacks=[TensorBoardLogger(log_dir, log_every_steps=2)])
    >>> sorted(os.listdir(log_dir))
    ['train']
    """

    def __init__(
        self,
        log_dir: str,
        *,
        monitors=(),
        log_every_steps: int = _DEFAULT_LOG_EVERY_STEPS,
        initial_step: int = 0,
    ):
        super().__init__(
            monitors=monitors, log_every_steps=log_every_steps,
            initial_step=initial_step,
        )
        self.log_dir = os.fspath(log_dir)
        self._writers = {}

    def _writer(self, name):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(
                os.path.join(self.log_dir, name)
            )
        return self._writers[name]

    def _scalars(self, run, values, step, prefix=""):
        metadata = _scalar_metadata()
        with self._writer(run).as_default():
            for key, value in values.items():
                if key in _NOT_SCALARS:
                    continue
                number = _number(value) if value is not None else None
                if number is not None:
                    tf.summary.write(
                        prefix + key,
                        tf.constant(number, tf.float32),
                        step=step,
                        metadata=metadata,
                    )

    def _on_interval(self, interval):
        self._scalars("train", self._interval_record(interval), interval.stop)

    def _on_epoch_end(self, epoch, logs):
        record = self._epoch_record(epoch, logs)
        train = {k: v for k, v in record.items() if not k.startswith("val_")}
        validation = {
            k[len("val_"):]: v for k, v in record.items() if k.startswith("val_")
        }
        self._scalars("train", train, self._step, prefix="epoch_")
        if validation:
            self._scalars("validation", validation, self._step, prefix="epoch_")
        for writer in self._writers.values():
            writer.flush()

    def _on_train_end(self, logs):
        # Flushed, not closed: the next fit of a run writes on.
        for writer in self._writers.values():
            writer.flush()


def _scalar_metadata():
    """What `tf.summary.scalar` attaches, built without TensorBoard.

    `tf.summary.scalar` lives in the `tensorboard` package, which TensorFlow
    does not install; `tf.summary.write` with the scalars plugin's metadata
    writes the same event, and TensorBoard shows it as a scalar.
    """
    return tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(
            plugin_name="scalars"
        ),
        data_class=1,  # DATA_CLASS_SCALAR in tensorflow/core summary.proto
    )


# === Together ===


def summarize(callbacks) -> dict:
    """The monitors' measurements over a `fit`, for `metrics.json`.

    Args:
        callbacks: sequence of callbacks; the painless_tf monitors among
            them are read, the others ignored.

    Returns:
        dict with at least "mfu", "tokens_per_sec" and "padding_fraction"
        (None where not measured), plus "examples_per_sec",
        "steps_per_sec", "train_seconds", "first_step_seconds",
        "flops_per_token", "peak_flops", "model_flops_per_sec",
        "skipped_updates" and "loss_scale" where their monitors ran.

    Examples:
    >>> summarize([])
    {'mfu': None, 'tokens_per_sec': None, 'padding_fraction': None}
    """
    summary = {"mfu": None, "tokens_per_sec": None, "padding_fraction": None}
    for callback in callbacks:
        if isinstance(callback, _Monitor):
            for key, value in callback.summary().items():
                if value is not None or key not in summary:
                    summary[key] = value
    return _json_ready(summary)


def set_step_stats(callbacks, stats: StepStats) -> None:
    """Gives the `Throughput` and `MFU` monitors the next fit's statistics.

    For loops that call `fit` once per epoch or part of one (resuming,
    skipping batches): before each `fit`, pass the statistics of exactly
    the batches it will feed, in order.

    Args:
        callbacks: sequence of callbacks; the other ones are left alone.
        stats: StepStats. One entry per step of the next `fit`.

    Examples:
    >>> throughput = Throughput(examples_per_step=4)
    >>> set_step_stats([throughput], StepStats(examples=[3], tokens=[20],
    ...                                        padded_tokens=[32]))
    >>> throughput.step_stats.num_steps
    1
    """
    if not isinstance(stats, StepStats):
        raise ValueError(
            "`stats` must be a StepStats (see step_stats()). Received: "
            f"{type(stats).__name__}."
        )
    for callback in callbacks:
        if isinstance(callback, (Throughput, MFU)):
            callback.step_stats = stats


def default_callbacks(
    *,
    model_dir: str,
    plan=None,
    step_stats: StepStats | None = None,
    flops_per_token: float | None = None,
    peak_flops: float | None = None,
    log_every_steps: int | None = None,
    initial_step: int = 0,
    resume: bool = False,
    verbose: bool = True,
) -> list:
    """The callbacks every painless_tf `fit` gets, in working order.

    Monitors first (`Throughput`, `MFU` when FLOPs per token and a peak are
    given, `LearningRateMonitor`, `LossScaleMonitor`), then
    the sinks that read them: `TensorBoardLogger` (`model_dir/tensorboard`),
    `HistoryWriter` (`model_dir/history.json`) and, when `verbose`,
    `ProgressLogger`. Pass `summarize(callbacks)` into `metrics.json` after
    `fit`.

    Args:
        model_dir: str. The run's output folder.
        plan: painless_tf.plan.Plan or None. Gives the global batch size
            (examples per step without `step_stats`) and the steps per
            epoch (for `log_every_steps`).
        step_stats: StepStats or None. Per-step counts of the training
            batches (see `step_stats`); needed for tokens/s, padding and MFU.
            A loop of fits passes None here and `set_step_stats` before
            each fit.
        flops_per_token: float or None. From
            `flops.training_flops_per_token`.
        peak_flops: float or None. From `flops.peak_flops`.
        log_every_steps: int or None. Steps per interval; None picks about
            20 intervals per epoch from the plan (10 steps without one).
        initial_step: int. Steps already done (resuming a run).
        resume: bool. Keep history.json's records up to `initial_step`.
        verbose: bool. Include the `ProgressLogger`.

    Returns:
        list of keras.callbacks.Callback.

    Examples:
    >>> import tempfile
    >>> for c in default_callbacks(model_dir=tempfile.mkdtemp(),
    ...                            verbose=False):
    ...     print(type(c).__name__)
    Throughput
    LearningRateMonitor
    LossScaleMonitor
    TensorBoardLogger
    HistoryWriter
    """
    if log_every_steps is None:
        log_every_steps = _DEFAULT_LOG_EVERY_STEPS
        if plan is not None:
            log_every_steps = max(1, plan.steps_per_epoch // _RECORDS_PER_EPOCH)
    examples_per_step = (
        plan.global_batch_size if plan is not None and step_stats is None else None
    )
    every = {"log_every_steps": log_every_steps, "initial_step": initial_step}
    total_epochs = plan.epochs if plan is not None else None
    monitors = [
        Throughput(
            step_stats=step_stats, examples_per_step=examples_per_step, **every
        )
    ]
    if flops_per_token and peak_flops:
        monitors.append(
            MFU(flops_per_token=flops_per_token, peak_flops=peak_flops,
                step_stats=step_stats, **every)
        )
    elif flops_per_token or peak_flops:
        logging.info(
            "callbacks: MFU needs both flops_per_token and peak_flops; it is "
            "not measured this run."
        )
    monitors += [LearningRateMonitor(**every), LossScaleMonitor(**every)]
    sinks = [
        TensorBoardLogger(
            os.path.join(model_dir, "tensorboard"), monitors=monitors, **every
        ),
        HistoryWriter(
            os.path.join(model_dir, "history.json"), monitors=monitors,
            total_epochs=total_epochs, append=resume, **every
        ),
    ]
    if verbose:
        sinks.append(
            ProgressLogger(monitors=monitors, total_epochs=total_epochs, **every)
        )
    return monitors + sinks
