"""The monitors: Keras callbacks that measure, each usable alone with any
Keras model.

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

`summarize` reads the monitors among a list of callbacks for
`metrics.json`; `set_step_stats` hands `Throughput` and `MFU` the next
fit's step statistics.
"""

import math

import keras
import numpy as np
from absl import logging

from painless_tf.monitoring.callback import _IntervalCallback
from painless_tf.monitoring.interval import _DEFAULT_LOG_EVERY_STEPS
from painless_tf.monitoring.records import _json_ready
from painless_tf.monitoring.records import _to_numpy
from painless_tf.monitoring.stats import StepStats
from painless_tf.monitoring.stats import _Counts
from painless_tf.monitoring.stats import _rate
from painless_tf.monitoring.stats import _window


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
