"""`default_callbacks`: the monitors and sinks every painless_tf `fit` gets.

It builds them in working order (monitors before the sinks that read
them), with one `log_every_steps` and `initial_step` for all, from the
run's plan and model dir.
"""

import os

from absl import logging

from painless_tf.monitoring.history import HistoryWriter
from painless_tf.monitoring.interval import _DEFAULT_LOG_EVERY_STEPS
from painless_tf.monitoring.monitors import MFU
from painless_tf.monitoring.monitors import LearningRateMonitor
from painless_tf.monitoring.monitors import LossScaleMonitor
from painless_tf.monitoring.monitors import Throughput
from painless_tf.monitoring.progress import ProgressLogger
from painless_tf.monitoring.stats import StepStats
from painless_tf.monitoring.tensorboard import TensorBoardLogger

# Interval records per epoch that `default_callbacks` aims for when it picks
# `log_every_steps` itself: enough points for a curve, few enough syncs.
_RECORDS_PER_EPOCH = 20


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
