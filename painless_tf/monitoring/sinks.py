"""`_Sink`: the base of the callbacks that record what the monitors measured.

Sinks record what the monitors measured, plus the loss and the compiled
metrics: `ProgressLogger` (a progress bar with ETA on a terminal, one line
per interval otherwise), `HistoryWriter` (`history.json`) and
`TensorBoardLogger` (scalars). A sink reads the monitors it is given; list
the monitors before it in `fit(callbacks=...)`, as `default_callbacks` does.

A sink's interval record holds the mean loss and mean metrics over the
interval's steps, read from the model's metric variables
(`_metric_state`), and the values its monitors measured at the same close;
its epoch record holds Keras' epoch logs and the epoch's times.
"""

import time

import keras

from painless_tf.monitoring.callback import _IntervalCallback
from painless_tf.monitoring.interval import _DEFAULT_LOG_EVERY_STEPS
from painless_tf.monitoring.interval import _check_step
from painless_tf.monitoring.monitors import _Monitor
from painless_tf.monitoring.records import _number
from painless_tf.monitoring.records import _to_numpy


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
