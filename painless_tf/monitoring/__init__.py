"""Keras callbacks that show how fast training goes, and what it does.

What a step is: one `fit` step, which with `painless_tf.Trainer` is one
optimizer update on one global batch (see `painless_tf.engine`). Every
callback here counts those steps, from `initial_step` (0, or the steps done
before a resumed run) on, across every `fit` it is passed to: a loop that
calls `fit` once per epoch keeps one history. Every record is keyed by that
count, "step".

Monitors measure, each usable alone with any Keras model: `Throughput`
(examples/s, real tokens/s, the padding share), `MFU` (model FLOPs
utilization), `LearningRateMonitor` and `LossScaleMonitor`. Sinks record
what the monitors measured, plus the loss and the compiled metrics:
`ProgressLogger` (console), `HistoryWriter` (`history.json`) and
`TensorBoardLogger` (scalars). A sink reads the monitors it is given; list
the monitors before it in `fit(callbacks=...)`, as `default_callbacks`
does.

As in Lightning (`fabric/utilities/throughput.py` beside
`pytorch/callbacks/throughput_monitor.py`), what measures without a
framework is apart from the Keras callbacks. The submodules, lowest first
(each imports only those above it):

- `stats`: step statistics, no Keras: `StepStats`, `step_stats`, and the
  counts and rates over a window of steps;
- `interval`: the interval clock, no Keras: what a step and an interval
  are, and the one device sync and clock reading per Keras event;
- `records`: the values of records, no Keras: numbers read from tensors,
  JSON-ready values, the keys that are bookkeeping;
- `callback`: `_IntervalCallback`, the Keras callback that counts steps
  and closes intervals, which every monitor and sink is; its overhead and
  what its rates leave out;
- `monitors`: the monitors, and `summarize` and `set_step_stats` over them;
- `sinks`: `_Sink`, the base of the sinks: interval means of the loss and
  metrics, beside the monitors' values;
- `progress`: the console sink, `ProgressLogger`, and its formatting;
- `history`: the `history.json` sink, `HistoryWriter`;
- `tensorboard`: the TensorBoard sink, `TensorBoardLogger`;
- `wiring`: `default_callbacks`, the monitors and sinks of every
  painless_tf `fit`.

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
"""

from painless_tf.monitoring.history import HistoryWriter
from painless_tf.monitoring.monitors import MFU
from painless_tf.monitoring.monitors import LearningRateMonitor
from painless_tf.monitoring.monitors import LossScaleMonitor
from painless_tf.monitoring.monitors import Throughput
from painless_tf.monitoring.monitors import set_step_stats
from painless_tf.monitoring.monitors import summarize
from painless_tf.monitoring.progress import ProgressLogger
from painless_tf.monitoring.stats import StepStats
from painless_tf.monitoring.stats import step_stats
from painless_tf.monitoring.tensorboard import TensorBoardLogger
from painless_tf.monitoring.wiring import default_callbacks

__all__ = [
    "HistoryWriter",
    "LearningRateMonitor",
    "LossScaleMonitor",
    "MFU",
    "ProgressLogger",
    "StepStats",
    "TensorBoardLogger",
    "Throughput",
    "default_callbacks",
    "set_step_stats",
    "step_stats",
    "summarize",
]
