"""`_IntervalCallback`: the Keras callback every monitor and sink is built on.

It counts steps (see `painless_tf.monitoring.interval`), closes an
interval every `log_every_steps` steps and at the end of each epoch's
training, and hands each close to its subclass's hooks (`_on_interval`,
`_on_epoch_end`, ...). State carries over from one `fit` to the next.

Overhead. Per step, a callback only counts, in `on_train_batch_begin`,
which Keras calls on the main thread without converting any tensor. Every
`log_every_steps` steps (and at the end of each epoch's training) it closes
an interval: it reads `optimizer.iterations` once, which waits for the steps
before it (the one device sync per interval), then reads the clock and the
values it reports. No callback of this package overrides
`on_train_batch_end`, so Keras keeps dispatching the batch-end callbacks of
others asynchronously.

Timing. The first step of a `fit` traces and compiles (or, in later fits,
starts the input pipeline); it is left out of every rate, and the first
fit's is reported as `first_step_seconds`. So is the last step
of each epoch (when the steps per epoch are known), whose end no callback
sees before Keras sets up validation, and so is validation itself.
"""

import keras

from painless_tf.monitoring.interval import _DEFAULT_LOG_EVERY_STEPS
from painless_tf.monitoring.interval import _Interval
from painless_tf.monitoring.interval import _check_step
from painless_tf.monitoring.interval import _clock
from painless_tf.monitoring.records import _to_numpy


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
