"""The automatic plan: every training decision, made for the machine found.

The user names a model, the data and, optionally, a global batch size;
`make_plan` decides the rest (distribution strategy, precision, XLA,
micro-batch and gradient accumulation, learning-rate schedule, sequence
length) for the `Environment` that `painless_tf.hardware` found, and records
one line of why for each decision. Every "auto" argument takes an explicit
value instead, which wins; overrides that cannot work together raise
`PlanError` naming both flags.

What a "step" is, once for the whole project: one step is one optimizer
update on one global batch of `global_batch_size` examples. Each replica
feeds it `accumulation_steps` micro-batches of `micro_batch_size` examples,
so

    global_batch_size == num_replicas * accumulation_steps * micro_batch_size.

`steps_per_epoch`, `total_updates` and `warmup_steps` all count updates.

Probes. Some decisions are measured, not guessed; the caller, who can build
the model, passes the measuring functions:

- `PrecisionProbe` (CPU only): `probe(policy) -> seconds per step`, or NaN
  where the loss was not finite; called several times per policy,
  interleaved, and the medians decide (see
  `precision_choice._probe_precision`).
- `FitsProbe` (GPU/TPU only): `fits(micro_batch_size, *, precision, xla,
  max_sequence_length) -> bool`; raising `tf.errors.ResourceExhaustedError`
  counts as "does not fit".

Their results are cached in `probes.json` under `default_cache_dir()`, keyed
by the hardware and the caller's `probe_key`, so a second run does not
measure again.

Modules, each importing only from those listed above it:

- `checks`: `AUTO`, `PlanError`, and the value checks and flag-text parsing
  that the others share.
- `probe_cache`: `default_cache_dir` and the `probes.json` file of probe
  results.
- `machine_load`: the load average and the "machine was busy" rule, shared
  with `painless_tf.flops`.
- `strategy_choice`: the strategy and replicas, the global batch, XLA, the
  fused optimizer update.
- `precision_choice`: the dtype policy; on a CPU, the reading of the
  `PrecisionProbe`'s interleaved timings (medians, noise margin, load).
  The probe itself is `painless_tf.precision`.
- `micro_batch_choice`: the micro-batch, by the `FitsProbe` on GPU/TPU or
  by a memory estimate (`ModelDims`). The probe itself is
  `painless_tf.memory`.
- `optimizer_choice`: the optimizer, momentum, peak learning rate, weight
  decay, trainable layers and unfreezing.
- `record`: `Plan`, its consistency checks, `plan.json` and the table.
- `planner`: `make_plan`, the one pass that calls the decisions above in
  turn, and the sequence length, length buckets and step counts.

The names below are the package's public surface (`plan.make_plan`, ...);
private helpers are imported from the submodule that holds them.
"""

from painless_tf.plan.checks import AUTO
from painless_tf.plan.checks import PlanError
from painless_tf.plan.length_choice import NO_LIMIT_LENGTH
from painless_tf.plan.length_choice import LengthChoice
from painless_tf.plan.length_choice import choose_length
from painless_tf.plan.micro_batch_choice import FitsProbe
from painless_tf.plan.micro_batch_choice import ModelDims
from painless_tf.plan.optimizer_choice import LAMB_SUGGESTION_BATCH
from painless_tf.plan.length_choice import DEFAULT_MAX_SEQUENCE_LENGTH
from painless_tf.plan.planner import LearningRateProbe
from painless_tf.plan.planner import make_plan
from painless_tf.plan.precision_choice import PRECISIONS
from painless_tf.plan.precision_choice import PrecisionProbe
from painless_tf.plan.precision_choice import worth_probing
from painless_tf.plan.probe_cache import default_cache_dir
from painless_tf.plan.record import Plan
from painless_tf.plan.strategy_choice import DEFAULT_GLOBAL_BATCH_SIZE
from painless_tf.plan.strategy_choice import DEFAULT_TPU_CORES
from painless_tf.plan.strategy_choice import STRATEGIES

__all__ = [
    "AUTO",
    "DEFAULT_GLOBAL_BATCH_SIZE",
    "DEFAULT_MAX_SEQUENCE_LENGTH",
    "DEFAULT_TPU_CORES",
    "FitsProbe",
    "LAMB_SUGGESTION_BATCH",
    "LearningRateProbe",
    "LengthChoice",
    "ModelDims",
    "NO_LIMIT_LENGTH",
    "PRECISIONS",
    "Plan",
    "PlanError",
    "PrecisionProbe",
    "STRATEGIES",
    "choose_length",
    "default_cache_dir",
    "make_plan",
    "worth_probing",
]
