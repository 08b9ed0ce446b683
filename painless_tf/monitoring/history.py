"""`HistoryWriter`: the sink that writes `history.json`.

Interval and epoch records and the monitors' summary, replaced atomically
through `painless_tf.atomic`; a resumed run keeps the records up to the
step it resumes at.
"""

import datetime
import json
import os
import time

import tensorflow as tf
from absl import logging

from painless_tf import atomic
from painless_tf.monitoring.interval import _DEFAULT_LOG_EVERY_STEPS
from painless_tf.monitoring.monitors import summarize
from painless_tf.monitoring.records import _json_ready
from painless_tf.monitoring.sinks import _Sink

# Seconds between rewrites of history.json between epochs (crash insurance).
_HISTORY_WRITE_SECONDS = 30.0
_HISTORY_FORMAT = 1


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
    >>> import keras
    >>> import numpy as np
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
