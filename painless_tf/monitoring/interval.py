"""The interval clock every monitoring callback shares.

Steps. A step is one `fit` step: with `painless_tf.Trainer`, one optimizer
update on one global batch (see `painless_tf.monitoring`). The callbacks
count steps from `initial_step` across every `fit` they are passed to and
close an interval every `log_every_steps` steps.

`_Interval` is what one close hands the monitors and sinks; `_clock` reads
the device and the clock once per Keras event, for every callback that
closes at it; `_check_step` validates step counts. Nothing here imports
Keras: `_clock` only calls the callback's `_sync`.
"""

import dataclasses
import time

import numpy as np

# Steps per interval when neither a plan nor `log_every_steps` says.
_DEFAULT_LOG_EVERY_STEPS = 10


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
