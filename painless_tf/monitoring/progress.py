"""`ProgressLogger`: the console sink, and how it formats values.

A progress bar with ETA on a terminal, one line per interval otherwise,
and one line per epoch; `_format_values` turns a record into the line's
text.
"""

import math
import sys
import time

import keras

from painless_tf.monitoring.interval import _DEFAULT_LOG_EVERY_STEPS
from painless_tf.monitoring.records import _NOT_SCALARS
from painless_tf.monitoring.sinks import _Sink

# Seconds between redraws of the terminal progress bar.
_REDRAW_SECONDS = 0.2
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
    >>> import numpy as np
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
