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
  interleaved, and the medians decide (see `_probe_precision`).
- `FitsProbe` (GPU/TPU only): `fits(micro_batch_size, *, precision, xla,
  max_sequence_length) -> bool`; raising `tf.errors.ResourceExhaustedError`
  counts as "does not fit".

Their results are cached in `probes.json` under `default_cache_dir()`, keyed
by the hardware and the caller's `probe_key`, so a second run does not
measure again.
"""

import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import time
import types
import weakref
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np
import tensorflow as tf
from absl import logging

from painless_tf import atomic
from painless_tf import batching
from painless_tf import cache
from painless_tf import freezing
from painless_tf.hardware import Environment
from painless_tf.optimization import DEFAULTS as OPTIMIZER_DEFAULTS
from painless_tf.optimization import OPTIMIZERS

AUTO = "auto"
STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

# Examples per optimizer update in the BERT fine-tuning recipe.
DEFAULT_GLOBAL_BATCH_SIZE = 32
# Tokens; short enough for fast steps, and bucketing removes padding below it.
DEFAULT_MAX_SEQUENCE_LENGTH = 128
# TPU devices assumed where neither TPU_ACCELERATOR_TYPE nor the device nodes
# tell (a remote TPU node: a v2-8 / v3-8, 8 cores). A TPU VM's own chips are
# counted (Colab's v5e-1: 1).
DEFAULT_TPU_CORES = 8
# HBM of one TPU device (a core for v2/v3, a megacore for v4/v5p, a chip for
# v5e/v6e), in GiB, from Cloud TPU's system architecture pages.
_TPU_DEVICE_MEMORY_GIB = {
    "v2": 8, "v3": 16, "v4": 32, "v5e": 16, "v5p": 95, "v6e": 32,
}
# Examples per update from which LAMB is suggested: You et al. 2019 report
# AdamW failing to reach BERT's accuracy beyond ~16k examples per update,
# while LAMB reaches it at 32k-64k; 8k warns before that edge.
LAMB_SUGGESTION_BATCH = 8192
# Share of the available memory an estimate may plan to use: estimates miss
# the runtime's own buffers and fragmentation.
_MEMORY_SAFETY = 0.5
# Bytes per parameter during training: float32 weights, gradients, two Adam
# slots and the gradient accumulator (5 x 4 bytes). Mixed precision keeps
# float32 variables, so this does not shrink under it.
_BYTES_PER_PARAMETER = 5 * 4
_PROBE_CACHE_FILE = "probes.json"
_GIB = 2**30
_MIB = 2**20

# Plan fields in the order a person reads them; `table()` follows it.
_DECISIONS = (
    "strategy",
    "num_workers",
    "num_replicas",
    "precision",
    "xla",
    "fused_update",
    "global_batch_size",
    "micro_batch_size",
    "accumulation_steps",
    "max_sequence_length",
    "bucket_boundaries",
    "optimizer",
    "momentum",
    "nesterov",
    "learning_rate",
    "schedule",
    "warmup_steps",
    "epochs",
    "steps_per_epoch",
    "total_updates",
    "weight_decay",
    "clip_norm",
    "trainable_layers",
    "unfreeze",
    "seed",
)


class PlanError(ValueError):
    """A plan argument, or a pair of them, that cannot work.

    The message is one line naming the flag(s), the bad value and the fix.

    Examples:
    >>> issubclass(PlanError, ValueError)
    True
    """


class ModelDims(NamedTuple):
    """The transformer sizes the memory estimate needs.

    Args:
        hidden_dim: int. Width of the hidden states.
        num_layers: int. Transformer layers.
        intermediate_dim: int. Width of the feed-forward layer.
        num_heads: int. Attention heads.

    Examples:
    >>> ModelDims(hidden_dim=384, num_layers=6, intermediate_dim=1536,
    ...           num_heads=12).num_layers
    6
    """

    hidden_dim: int
    num_layers: int
    intermediate_dim: int
    num_heads: int


class PrecisionProbe(Protocol):
    """Measures the training speed of one dtype policy (CPU only).

    An implementation sets the global Keras dtype policy to `policy`, builds
    the model, runs one step to compile it, times a few more real training
    steps, restores the previous policy and returns the mean seconds per step;
    it returns `float("nan")` when the loss is not finite, so that policy is
    never chosen. The plan calls it several times per policy, alternating
    policies (float32, mixed_bfloat16, float32, ...), and compares the
    medians; an implementation may keep each policy's model between calls,
    so that later calls only time more steps.

    Examples:
    >>> probe = lambda policy: {"float32": 1.3}.get(policy, 1.0)
    >>> probe("mixed_bfloat16")
    1.0
    """

    def __call__(self, policy: str) -> float: ...


class FitsProbe(Protocol):
    """Says whether one replica can train on `micro_batch_size` examples.

    An implementation builds the model under `precision` (compiled with XLA
    when `xla`), runs one training step on a batch of `micro_batch_size`
    sequences of `max_sequence_length` tokens on one device, frees the
    model, and returns True; it may return False or let
    `tf.errors.ResourceExhaustedError` escape when memory runs out.

    Examples:
    >>> fits = lambda micro_batch_size, **kwargs: micro_batch_size <= 16
    >>> fits(8, precision="mixed_bfloat16", xla=True, max_sequence_length=128)
    True
    """

    def __call__(
        self,
        micro_batch_size: int,
        *,
        precision: str,
        xla: bool,
        max_sequence_length: int,
    ) -> bool: ...


class LearningRateProbe(Protocol):
    """Measures the peak learning rate of a plan (the LR range test).

    Called once, with the plan decided but for the rate; returns an object
    with `learning_rate`, `reason` and `to_dict()`
    (`lr_finder.RangeTestResult`).

    Examples:
    >>> import types
    >>> probe = lambda plan: types.SimpleNamespace(learning_rate=5e-5,
    ...     reason="range test", to_dict=lambda: {"learning_rate": 5e-5})
    >>> probe(None).learning_rate
    5e-05
    """

    def __call__(self, plan: "Plan"): ...


def default_cache_dir() -> str:
    """The painless_tf cache directory: `$PAINLESS_TF_CACHE` or
    `~/.cache/painless_tf`.

    Examples:
    >>> isinstance(default_cache_dir(), str)
    True
    """
    return cache.directory()


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every decision of a training run, each with the reason it was made.

    A step is one optimizer update on one global batch (see the module
    docstring); `steps_per_epoch`, `total_updates` and `warmup_steps` count
    updates.

    Args:
        strategy: str. "default", "mirrored", "multi_worker_mirrored" or
            "tpu".
        num_replicas: int. Model replicas training in sync, all workers.
        num_workers: int. Machines in the job.
        precision: str. Keras dtype policy: "float32", "mixed_float16" or
            "mixed_bfloat16".
        xla: bool. Whether the train step is compiled with XLA.
        micro_batch_size: int. Examples per replica per forward/backward pass.
        accumulation_steps: int. Micro-batches accumulated per update.
        global_batch_size: int. Examples per update, all replicas together.
        optimizer: str. One of `optimization.OPTIMIZERS`.
        momentum: float. SGD / RMSprop momentum; 0 for the others.
        nesterov: bool. Nesterov momentum (SGD only).
        learning_rate: float. Peak learning rate, reached after warm-up.
        schedule: str. "linear": linear warm-up, then linear decay to 0.
        warmup_steps: int. Updates of linear warm-up.
        total_updates: int. Updates in the whole run.
        steps_per_epoch: int. Updates per epoch.
        epochs: int. Passes over the training data.
        weight_decay: float. Decoupled weight decay (per unit of learning
            rate); the optimizer exempts LayerNorm, biases and embedding
            norms.
        clip_norm: float. Global gradient-norm clipping threshold.
        max_sequence_length: int. Tokens per sequence, at most.
        bucket_boundaries: tuple[int, ...]. Sequence-length bucket upper
            bounds for batching; empty pads every batch to
            `max_sequence_length`.
        seed: int. Seed of all random number generators.
        trainable_layers: int | str. "all", or the top encoder layers
            trained with the head (0: the head only); see `freezing`.
        unfreeze: str. "none", or "gradual": one more layer per epoch.
        fused_update: bool. Whether the optimizer update is one
            XLA-compiled function (one device only; `engine.Trainer`).
        lr_range_test: Mapping. The LR range test behind an automatic
            learning rate (`lr_finder.RangeTestResult.to_dict()`); empty
            when the rate was not searched.
        reasons: Mapping[str, str]. One line of why per decision, keyed by
            field name.

    Examples:
    >>> from painless_tf.hardware import Environment
    >>> plan = make_plan(environment=Environment(memory_bytes=8 * 2**30),
    ...                  num_train_examples=1000, precision="float32")
    >>> plan.global_batch_size, plan.micro_batch_size, plan.total_updates
    (32, 32, 96)
    """

    strategy: str
    num_replicas: int
    num_workers: int
    precision: str
    xla: bool
    micro_batch_size: int
    accumulation_steps: int
    global_batch_size: int
    optimizer: str
    momentum: float
    nesterov: bool
    learning_rate: float
    schedule: str
    warmup_steps: int
    total_updates: int
    steps_per_epoch: int
    epochs: int
    weight_decay: float
    clip_norm: float
    max_sequence_length: int
    bucket_boundaries: tuple[int, ...]
    seed: int
    trainable_layers: int | str = freezing.ALL
    unfreeze: str = "none"
    # A plan written before this field runs unfused, as every strategy can.
    fused_update: bool = False
    lr_range_test: Mapping = dataclasses.field(default_factory=dict)
    reasons: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(
            self, "bucket_boundaries", tuple(int(b) for b in self.bucket_boundaries)
        )
        object.__setattr__(self, "reasons", types.MappingProxyType(dict(self.reasons)))
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_momentum(self.optimizer, self.momentum, self.nesterov,
                        lambda name, value: f"{name}={value!r}")
        _check_choice("schedule", self.schedule, ("linear",))
        for name in (
            "num_replicas",
            "num_workers",
            "micro_batch_size",
            "accumulation_steps",
            "global_batch_size",
            "total_updates",
            "steps_per_epoch",
            "epochs",
            "max_sequence_length",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PlanError(
                    f"`{name}` must be a positive integer. Received: {name}={value!r}"
                )
        product = self.num_replicas * self.accumulation_steps * self.micro_batch_size
        if self.global_batch_size != product:
            per_update = self.num_replicas * self.accumulation_steps
            fix = f"Pass global_batch_size={product}"
            if self.global_batch_size % per_update == 0:
                fix += f" or micro_batch_size={self.global_batch_size // per_update}"
            raise PlanError(
                f"`global_batch_size` ({self.global_batch_size}) must equal "
                "num_replicas x accumulation_steps x micro_batch_size "
                f"({self.num_replicas} x {self.accumulation_steps} x "
                f"{self.micro_batch_size} = {product}). {fix}."
            )
        if self.total_updates != self.steps_per_epoch * self.epochs:
            raise PlanError(
                f"`total_updates` ({self.total_updates}) must equal "
                f"steps_per_epoch x epochs ({self.steps_per_epoch} x "
                f"{self.epochs}). Pass total_updates="
                f"{self.steps_per_epoch * self.epochs}."
            )
        if not 0 <= self.warmup_steps <= self.total_updates:
            raise PlanError(
                f"`warmup_steps` ({self.warmup_steps}) must be in [0, "
                f"total_updates={self.total_updates}]. Pass a smaller warm-up."
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise PlanError(
                "`learning_rate` must be a positive number. "
                f"Received: learning_rate={self.learning_rate!r}"
            )
        if not isinstance(self.xla, bool):
            raise PlanError(f"`xla` must be true or false. Received: xla={self.xla!r}")
        if not isinstance(self.fused_update, bool):
            raise PlanError(
                "`fused_update` must be true or false. Received: "
                f"fused_update={self.fused_update!r}"
            )
        if self.weight_decay < 0 or self.clip_norm <= 0:
            raise PlanError(
                "`weight_decay` must be >= 0 and `clip_norm` > 0. Received: "
                f"weight_decay={self.weight_decay!r}, clip_norm={self.clip_norm!r}"
            )
        _check_boundaries(self.bucket_boundaries, self.max_sequence_length)
        try:
            freeze = freezing.FreezeOptions(self.trainable_layers, self.unfreeze)
        except ValueError as e:
            raise PlanError(str(e)) from None
        object.__setattr__(self, "trainable_layers", freeze.trainable_layers)
        object.__setattr__(
            self, "lr_range_test", types.MappingProxyType(dict(self.lr_range_test))
        )

    def to_dict(self) -> dict:
        """The plan as a JSON-ready dict (field name -> value).

        Examples:
        >>> from painless_tf.hardware import Environment
        >>> make_plan(environment=Environment(), num_train_examples=64,
        ...           precision="float32").to_dict()["strategy"]
        'default'
        """
        result = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        result["bucket_boundaries"] = list(self.bucket_boundaries)
        result["reasons"] = dict(self.reasons)
        result["lr_range_test"] = dict(self.lr_range_test)
        return result

    @classmethod
    def from_dict(cls, values: Mapping, *, source: str = "plan") -> "Plan":
        """Builds a plan from `to_dict()` output, checking every key.

        Args:
            values: Mapping. Field name -> value.
            source: str. Where the values came from, for error messages.

        Examples:
        >>> from painless_tf.hardware import Environment
        >>> plan = make_plan(environment=Environment(), num_train_examples=64,
        ...                  precision="float32")
        >>> Plan.from_dict(plan.to_dict()) == plan
        True
        """
        fields = dataclasses.fields(cls)
        names = [f.name for f in fields]
        # Fields with defaults came later; older plans may lack them.
        required = [
            f.name for f in fields
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        unknown = sorted(set(values) - set(names))
        missing = sorted(set(required) - set(values))
        if unknown or missing:
            raise PlanError(
                f"{source}: unknown keys {unknown} and missing keys {missing}. "
                "Write the plan again with Plan.to_json()."
            )
        return cls(**values)

    def to_json(self, path: str) -> None:
        """Writes the plan as JSON, atomically (a reader never sees half).

        Args:
            path: str. Destination; any `tf.io.gfile` path (local or gs://).

        Examples:
        >>> import tempfile, os
        >>> from painless_tf.hardware import Environment
        >>> plan = make_plan(environment=Environment(), num_train_examples=64,
        ...                  precision="float32")
        >>> path = os.path.join(tempfile.mkdtemp(), "plan.json")
        >>> plan.to_json(path); Plan.from_json(path) == plan
        True
        """
        atomic.write_json(path, self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, path: str) -> "Plan":
        """Reads a plan written by `to_json`.

        Args:
            path: str. A `tf.io.gfile` path.

        Examples:
        >>> import tempfile, os
        >>> from painless_tf.hardware import Environment
        >>> path = os.path.join(tempfile.mkdtemp(), "plan.json")
        >>> make_plan(environment=Environment(), num_train_examples=64,
        ...           precision="float32").to_json(path)
        >>> Plan.from_json(path).micro_batch_size
        32
        """
        with tf.io.gfile.GFile(path, "r") as f:
            text = f.read()
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanError(
                f"{path} line {e.lineno} column {e.colno}: not valid JSON "
                f"({e.msg}). Delete it and plan again."
            ) from None
        if not isinstance(values, dict):
            raise PlanError(
                f"{path}: not a plan (a JSON object). Delete it and plan again."
            )
        return cls.from_dict(values, source=path)

    def table(self) -> str:
        """One printable line per decision: name, value, reason.

        Examples:
        >>> from painless_tf.hardware import Environment
        >>> plan = make_plan(environment=Environment(), num_train_examples=64,
        ...                  precision="float32")
        >>> plan.table().splitlines()[0].split()[:2]
        ['strategy', 'default']
        """
        # Momentum lines only where the optimizer has momentum; freezing
        # lines only where a layer is frozen.
        frozen = self.trainable_layers != freezing.ALL or self.unfreeze != "none"
        names = [
            name
            for name in _DECISIONS
            if (name != "momentum" or self.optimizer in _MOMENTUM_OPTIMIZERS)
            and (name != "nesterov" or self.optimizer == "sgd")
            and (name not in ("trainable_layers", "unfreeze") or frozen)
        ]
        width = max(len(name) for name in names)
        values = [_format_value(getattr(self, name)) for name in names]
        value_width = max(len(value) for value in values)
        lines = []
        for name, value in zip(names, values):
            reason = self.reasons.get(name, "")
            lines.append(f"{name:<{width}}  {value:<{value_width}}  {reason}".rstrip())
        return "\n".join(lines)


def make_plan(
    *,
    environment: Environment,
    num_train_examples: int,
    epochs: int = 3,
    global_batch_size: int | str = AUTO,
    learning_rate: float | str = AUTO,
    precision: str = AUTO,
    xla: bool | str = AUTO,
    fused_update: bool | str = AUTO,
    micro_batch_size: int | str = AUTO,
    strategy: str = AUTO,
    max_sequence_length: int | str = AUTO,
    bucket_boundaries: Sequence[int] | None = None,
    model_params: int | None = None,
    model_dims: ModelDims | Sequence[int] | None = None,
    warmup_fraction: float = 0.1,
    weight_decay: float | str = AUTO,
    clip_norm: float = 1.0,
    optimizer: str = "adamw",
    momentum: float | str = AUTO,
    nesterov: bool = False,
    seed: int = 0,
    precision_probe: PrecisionProbe | None = None,
    steps_per_epoch: int | None = None,
    fits_probe: FitsProbe | None = None,
    probe_key: str | None = None,
    cache_dir: str | None = None,
    model_max_sequence_length: int | None = None,
    trainable_layers: int | str = freezing.ALL,
    unfreeze: str = "none",
    num_layers: int | None = None,
    train_lengths: Sequence[int] | None = None,
    longest_text: int | None = None,
    learning_rate_probe: "LearningRateProbe | None" = None,
    recorded: "Plan | None" = None,
    fixed_length: bool = False,
) -> Plan:
    """Decides everything about a fine-tuning run for `environment`.

    Every argument that defaults to "auto" accepts an explicit value that
    wins (its reason becomes "set by user"); arguments are named after the
    command-line flags. With several workers, plan on the chief and share
    its plan.json, so that no measured decision differs between workers.

    Args:
        environment: Environment. The machine, from `detect_environment`.
        num_train_examples: int. Training examples per epoch.
        epochs: int. Passes over the training data.
        global_batch_size: int | "auto". Examples per update; "auto" is 32
            (rounded up to a multiple of the replicas). Never changed.
        learning_rate: float | "auto". Peak rate; "auto" scales the
            optimizer's rate at a batch of 32 with the global batch
            (`optimization.DEFAULTS`); for AdamW, 3e-5 x
            sqrt(global_batch_size / 32) within [1e-5, 1e-4].
        precision: str. "auto" or one of `PRECISIONS`.
        xla: bool | "auto". Compile the train step with XLA.
        fused_update: bool | "auto". Compile the optimizer update with XLA
            as one function (`engine.Trainer`); "auto": on one device.
        micro_batch_size: int | "auto". Examples per replica per pass; must
            divide global_batch_size / num_replicas.
        strategy: str. "auto" or one of `STRATEGIES`.
        max_sequence_length: int | "auto". Tokens per sequence; "auto" is 128.
        bucket_boundaries: Sequence[int] | None. Length buckets from the
            data pipeline; None means no bucketing.
        model_params: int | None. Parameter count, for the CPU memory
            estimate.
        model_dims: ModelDims | None. (hidden, layers, intermediate, heads),
            for the activation-memory estimate.
        warmup_fraction: float. Share of the updates spent warming up.
        weight_decay: float | "auto". Decoupled weight decay; "auto" is
            the optimizer's default (0.01 for AdamW).
        clip_norm: float. Global gradient-norm clipping threshold.
        optimizer: str. "auto" (AdamW) or one of `optimization.OPTIMIZERS`.
            From a global batch of 8192 on, AdamW's reason suggests LAMB.
        momentum: float | "auto". For sgd (auto: 0.9) and rmsprop (auto: 0).
        nesterov: bool. Nesterov momentum, for sgd only.
        seed: int. Random seed.
        precision_probe: PrecisionProbe | None. Measures policies on CPU.
        steps_per_epoch: int | None. Updates per epoch; None derives it.
        fits_probe: FitsProbe | None. Tries micro-batches on GPU/TPU.
        probe_key: str | None. Names the model (and anything else that
            changes the probes' answers) in the probe cache; None turns the
            cache off.
        cache_dir: str | None. Directory of the probe cache; None means
            `default_cache_dir()`.
        model_max_sequence_length: int | None. The model's position-table
            size; an automatic `max_sequence_length` never exceeds it.
        trainable_layers: int | str. "all", or the top encoder layers
            trained with the head (0: the head only).
        unfreeze: str. "none", or "gradual": one more layer per epoch.
        num_layers: int | None. The model's encoder layers, to check
            `trainable_layers` against.
        train_lengths: Sequence[int] | None. Token lengths of the training
            texts: with them the plan chooses the length buckets
            (`batching.bucket_rule`) and counts the steps per epoch.
        longest_text: int | None. Tokens of the longest validation or test
            text: the last bucket covers it.
        learning_rate_probe: LearningRateProbe | None. With
            `learning_rate="auto"`, measures the peak rate on the plan
            decided so far (the LR range test); None keeps the recipe's.
        recorded: Plan | None. The plan this run recorded when it started
            (a resumed run): its measured decisions (precision, micro-batch,
            learning rate) are kept instead of measured again, so a resumed
            run trains with the plan it started with.
        fixed_length: bool. The model's outputs change with the padding
            (`models.describe(...).fixed_length`: F-Net, RoFormer-v2): one
            bucket, the sequence length, so it trains as it predicts.

    Returns:
        The `Plan`.

    Raises:
        PlanError: for a bad value or incompatible overrides.

    Examples:
    >>> from painless_tf.hardware import Environment, Gpu
    >>> env = Environment(platform="gpu", gpus=(Gpu("A100", (8, 0)),) * 2)
    >>> plan = make_plan(environment=env, num_train_examples=3200)
    >>> plan.strategy, plan.num_replicas, plan.precision, plan.xla
    ('mirrored', 2, 'mixed_bfloat16', True)
    """
    env = environment
    reasons = {}
    num_train_examples = _positive_int(num_train_examples, "num_train_examples")
    epochs = _positive_int(epochs, "epochs")

    strategy, num_replicas, reasons["strategy"], reasons["num_replicas"] = (
        _decide_strategy(strategy, env)
    )
    reasons["num_workers"] = (
        "from TF_CONFIG"
        if env.num_workers > 1
        else "one machine (no TF_CONFIG workers)"
    )
    global_batch_size, reasons["global_batch_size"] = _decide_global_batch(
        global_batch_size, num_replicas, strategy
    )

    if max_sequence_length == AUTO and (
        model_max_sequence_length
        and model_max_sequence_length < DEFAULT_MAX_SEQUENCE_LENGTH
    ):
        max_sequence_length = int(model_max_sequence_length)
        reasons["max_sequence_length"] = "the model's position table is shorter"
    elif max_sequence_length == AUTO:
        max_sequence_length = DEFAULT_MAX_SEQUENCE_LENGTH
        reasons["max_sequence_length"] = (
            "covers the data; bucketing removes the padding cost"
        )
    else:
        max_sequence_length = _positive_int(max_sequence_length, "max_sequence_length")
        reasons["max_sequence_length"] = "set by user"

    cache = _ProbeCache(cache_dir or default_cache_dir()) if probe_key else None
    if precision == AUTO and recorded is not None:
        precision, reasons["precision"] = recorded.precision, _kept(
            recorded, "precision")
    else:
        precision, reasons["precision"] = _decide_precision(
            precision, env, precision_probe, cache, probe_key
        )
    xla, reasons["xla"] = _decide_xla(xla, env)
    fused_update, reasons["fused_update"] = _decide_fused_update(
        fused_update, strategy
    )

    fixed_reason = None
    if fixed_length and not bucket_boundaries:
        bucket_boundaries = (max_sequence_length,)
        fixed_reason = ("one, the sequence length: padding changes this "
                        "model's outputs, so it trains as it predicts")
    bucket_boundaries, reasons["bucket_boundaries"] = _decide_buckets(
        bucket_boundaries, train_lengths, longest_text, xla=xla,
        platform=env.platform, max_sequence_length=max_sequence_length,
        global_batch_size=global_batch_size,
    )
    reasons["bucket_boundaries"] = fixed_reason or reasons["bucket_boundaries"]
    if train_lengths is not None and steps_per_epoch is None:
        steps_per_epoch = batching.steps_per_epoch(
            np.asarray(train_lengths), global_batch_size=global_batch_size,
            buckets=bucket_boundaries or (max_sequence_length,),
        )

    per_replica = global_batch_size // num_replicas
    if (micro_batch_size == AUTO and recorded is not None
            and recorded.global_batch_size == global_batch_size
            and recorded.num_replicas == num_replicas):
        micro_batch_size, reasons["micro_batch_size"] = (
            recorded.micro_batch_size, _kept(recorded, "micro_batch_size"))
    elif micro_batch_size == AUTO:
        micro_batch_size, reasons["micro_batch_size"] = _decide_micro_batch(
            env=env,
            per_replica=per_replica,
            local_replicas=max(1, num_replicas // env.num_workers),
            precision=precision,
            xla=xla,
            max_sequence_length=max_sequence_length,
            model_params=model_params,
            model_dims=model_dims,
            fits_probe=fits_probe,
            cache=cache,
            probe_key=probe_key,
        )
    else:
        micro_batch_size = _positive_int(micro_batch_size, "micro_batch_size")
        if per_replica % micro_batch_size:
            raise PlanError(
                f"--micro_batch_size={micro_batch_size} does not divide "
                f"--global_batch_size={global_batch_size} / {num_replicas} "
                f"replica(s) = {per_replica}. Pass --micro_batch_size="
                f"{_largest_divisor_at_most(per_replica, micro_batch_size)} "
                "or a --global_batch_size that is a multiple of "
                f"{num_replicas * micro_batch_size}."
            )
        reasons["micro_batch_size"] = "set by user"
    accumulation_steps = per_replica // micro_batch_size
    reasons["accumulation_steps"] = (
        f"{per_replica} per replica / micro-batch {micro_batch_size}"
    )

    optimizer, reasons["optimizer"] = _decide_optimizer(
        optimizer, global_batch_size
    )
    momentum, nesterov, reasons["momentum"], reasons["nesterov"] = (
        _decide_momentum(optimizer, momentum, nesterov)
    )
    rate_is_auto = learning_rate == AUTO
    if rate_is_auto:
        learning_rate, reasons["learning_rate"] = _default_learning_rate(
            optimizer, global_batch_size,
            hidden_dim=ModelDims(*model_dims).hidden_dim if model_dims else None,
        )
    else:
        learning_rate = _positive_float(learning_rate, "learning_rate", "3e-5")
        reasons["learning_rate"] = "set by user"

    if steps_per_epoch is None:
        steps_per_epoch = math.ceil(num_train_examples / global_batch_size)
        reasons["steps_per_epoch"] = (
            f"ceil({num_train_examples} examples / {global_batch_size})"
        )
    else:
        steps_per_epoch = _positive_int(steps_per_epoch, "steps_per_epoch")
        reasons["steps_per_epoch"] = (
            "from the data pipeline: fixed-size batches per length bucket"
        )
    reasons["epochs"] = (
        "default: the BERT fine-tuning recipe's 3" if epochs == 3 else "set by user"
    )
    total_updates = steps_per_epoch * epochs
    reasons["total_updates"] = f"{steps_per_epoch} steps per epoch x {epochs} epochs"
    if not 0 <= warmup_fraction < 1:
        raise PlanError(
            f"--warmup_fraction={warmup_fraction!r} must be in [0, 1). "
            "Pass e.g. --warmup_fraction=0.1."
        )
    warmup_steps = math.ceil(warmup_fraction * total_updates)
    reasons["warmup_steps"] = f"ceil({warmup_fraction:g} x {total_updates} updates)"
    reasons["schedule"] = "linear warm-up to the peak, then linear decay to 0"
    weight_decay, reasons["weight_decay"] = _decide_weight_decay(
        optimizer, weight_decay
    )
    if not clip_norm > 0:
        raise PlanError(
            f"`clip_norm` must be > 0. Received: clip_norm={clip_norm!r}. "
            "Pass clip_norm=1.0."
        )
    reasons["clip_norm"] = (
        "global-norm clipping, BERT recipe" if clip_norm == 1.0 else "set by user"
    )
    reasons["seed"] = "default" if seed == 0 else "set by user"
    (reasons["trainable_layers"], reasons["unfreeze"]) = _decide_freezing(
        trainable_layers, unfreeze, num_layers, epochs
    )

    plan = Plan(
        strategy=strategy,
        num_replicas=num_replicas,
        num_workers=env.num_workers,
        precision=precision,
        xla=xla,
        fused_update=fused_update,
        micro_batch_size=micro_batch_size,
        accumulation_steps=accumulation_steps,
        global_batch_size=global_batch_size,
        optimizer=optimizer,
        momentum=momentum,
        nesterov=nesterov,
        learning_rate=learning_rate,
        schedule="linear",
        warmup_steps=warmup_steps,
        total_updates=total_updates,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        weight_decay=float(weight_decay),
        clip_norm=float(clip_norm),
        max_sequence_length=max_sequence_length,
        bucket_boundaries=bucket_boundaries,
        seed=int(seed),
        trainable_layers=trainable_layers,
        unfreeze=unfreeze,
        reasons=reasons,
    )
    if not rate_is_auto:
        return plan
    measured = None
    if recorded is not None and recorded.lr_range_test:
        measured = dict(recorded.lr_range_test)
        reason = _kept(recorded, "learning_rate")
        rate = recorded.learning_rate
    elif learning_rate_probe is not None:
        result = learning_rate_probe(plan)
        measured, rate, reason = (
            result.to_dict(), result.learning_rate, result.reason)
    if measured is None:
        return plan
    return dataclasses.replace(
        plan, learning_rate=rate, lr_range_test=measured,
        reasons={**plan.reasons, "learning_rate": reason},
    )


def _kept(recorded, name):
    """The reason of a measured decision a resumed run keeps."""
    why = recorded.reasons.get(name, "")
    return f"{why} (measured when this run started; kept on resume)".lstrip()


def _decide_buckets(boundaries, train_lengths, longest_text, *, xla, platform,
                    max_sequence_length, global_batch_size):
    """Returns (bucket boundaries, reason)."""
    if boundaries:
        boundaries = tuple(boundaries)
        try:
            _check_boundaries(boundaries, max_sequence_length)
        except PlanError as e:
            raise PlanError(f"bucket_boundaries: {e}") from None
        why = "given"
        multiple = 1
    elif train_lengths is not None and len(train_lengths):
        multiple, max_buckets, rule = batching.bucket_rule(
            xla=xla, platform=platform,
            max_sequence_length=max_sequence_length,
        )
        boundaries = batching.choose_buckets(
            np.asarray(train_lengths), max_sequence_length=max_sequence_length,
            max_buckets=max_buckets, multiple_of=multiple,
            global_batch_size=global_batch_size,
        )
        why = f"from the training lengths: {rule}"
    else:
        return (), "none: every batch is padded to max_sequence_length"
    if longest_text:
        covered = batching.cover_every_split(
            boundaries, longest_text, max_sequence_length=max_sequence_length,
            multiple_of=max(multiple, 1),
        )
        if covered != boundaries:
            why += (f"; {covered[-1]} added for a validation/test text of "
                    f"{longest_text} tokens")
            boundaries = covered
    return boundaries, why


# === Decisions ===

# Optimizers that take `momentum`.
_MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")


def _decide_optimizer(optimizer, global_batch_size):
    if optimizer not in (AUTO, "adamw"):
        _check_flag_choice("optimizer", optimizer, OPTIMIZERS)
        return optimizer, "set by user"
    reason = "AdamW, the BERT fine-tuning recipe"
    if global_batch_size >= LAMB_SUGGESTION_BATCH:
        # A suggestion only: switching silently would change a run that
        # the user has tuned.
        reason += (
            f"; global batch {global_batch_size} >= {LAMB_SUGGESTION_BATCH}: "
            "consider --optimizer=lamb (You et al. 2019)"
        )
        logging.warning(
            "Global batch %d >= %d with AdamW: consider --optimizer=lamb "
            "(You et al. 2019 keep BERT's accuracy up to 32k-64k with it).",
            global_batch_size, LAMB_SUGGESTION_BATCH,
        )
    return "adamw", reason


def _decide_momentum(optimizer, momentum, nesterov):
    """Returns (momentum, nesterov, momentum reason, nesterov reason)."""
    if isinstance(nesterov, str) and nesterov.lower() in ("true", "false"):
        nesterov = nesterov.lower() == "true"
    if momentum == AUTO:
        value = OPTIMIZER_DEFAULTS[optimizer].momentum
        if optimizer == "sgd":
            reason = "heavy-ball momentum 0.9, the usual SGD setting"
        elif optimizer == "rmsprop":
            reason = "Keras' RMSprop default: no momentum"
        else:
            reason = f"not used by {optimizer}"
    else:
        value = _parse_float(momentum) if isinstance(momentum, str) else momentum
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PlanError(
                f"--momentum={momentum!r} must be a number in [0, 1) or "
                "'auto'. Pass e.g. --momentum=0.9."
            )
        value, reason = float(value), "set by user"
    _check_momentum(optimizer, value, nesterov,
                    lambda name, v: f"--{name}={_format_flag(v)}")
    if optimizer == "sgd":
        why_nesterov = "set by user" if nesterov else "plain heavy-ball momentum"
    else:
        why_nesterov = f"not used by {optimizer}"
    return value, nesterov, reason, why_nesterov


def _check_momentum(optimizer, momentum, nesterov, show):
    """Raises PlanError for a momentum setting `optimizer` cannot use.

    `show(name, value)` writes a setting as the message should name it
    (a flag in `make_plan`, a field in `Plan`).
    """
    if not (isinstance(momentum, float) and 0 <= momentum < 1):
        raise PlanError(
            f"{show('momentum', momentum)} must be a number in [0, 1). "
            "Pass e.g. --momentum=0.9."
        )
    if momentum and optimizer not in _MOMENTUM_OPTIMIZERS:
        raise PlanError(
            f"{show('momentum', momentum)} is used only by --optimizer=sgd "
            f"or rmsprop, not {optimizer}. Drop --momentum or pass "
            "--optimizer=sgd."
        )
    if not isinstance(nesterov, bool):
        raise PlanError(
            f"{show('nesterov', nesterov)} must be true or false. Pass "
            "--nesterov or --nonesterov."
        )
    if nesterov and (optimizer != "sgd" or not momentum):
        raise PlanError(
            f"{show('nesterov', nesterov)} needs --optimizer=sgd with "
            f"--momentum > 0 (got --optimizer={optimizer}, --momentum="
            f"{momentum:g}). Drop --nesterov or pass --optimizer=sgd."
        )


# Width of BERT-base, for which the per-optimizer rates were tuned.
_REFERENCE_HIDDEN_DIM = 768
# Optimizers that normalize each entry of the update (Adam-like): their good
# rate shrinks as the model widens (muP: Yang et al. 2022, Adam rate ~ 1/width).
_WIDTH_SCALED = ("adamw", "adam", "lamb", "rmsprop")


def _default_learning_rate(optimizer, global_batch_size, *, hidden_dim=None):
    """The optimizer's peak rate at a batch of 32, scaled to this batch and,
    for Adam-like optimizers, to the model's width."""
    defaults = OPTIMIZER_DEFAULTS[optimizer]
    width = 1.0
    if hidden_dim and optimizer in _WIDTH_SCALED:
        width = _REFERENCE_HIDDEN_DIM / hidden_dim
    scaled = defaults.learning_rate * width * (
        global_batch_size / 32
    ) ** defaults.batch_power
    rate = min(max(scaled, defaults.min_learning_rate),
               defaults.max_learning_rate)
    bounds = (
        f"[{_short(defaults.min_learning_rate)}, "
        f"{_short(defaults.max_learning_rate)}]"
    )
    bounds = f" clamped to {bounds}" if rate != scaled else f" within {bounds}"
    if defaults.batch_power == 0.5:
        formula, scaling = f"sqrt({global_batch_size}/32)", "square-root"
    else:
        formula, scaling = f"{global_batch_size}/32", "linear"
    if width != 1.0:
        formula += f" x {_REFERENCE_HIDDEN_DIM}/{hidden_dim}"
        scaling += " batch and 1/width (muP)"
    return rate, (
        f"{_short(defaults.learning_rate)} x {formula}{bounds}: {scaling} "
        f"scaling; {defaults.learning_rate_source}"
    )


def _decide_freezing(trainable_layers, unfreeze, num_layers, epochs):
    """Returns (trainable_layers reason, unfreeze reason)."""
    try:
        freeze = freezing.FreezeOptions(trainable_layers, unfreeze)
        if num_layers:
            freeze.check(num_layers)
    except ValueError as e:
        raise PlanError(str(e)) from None
    if freeze.trainable_layers == freezing.ALL and freeze.unfreeze == "gradual":
        why_layers = "default, with gradual unfreezing: from the head alone"
    elif freeze.trainable_layers == freezing.ALL:
        why_layers = "default: every layer trains"
    elif freeze.trainable_layers == 0:
        why_layers = "set by user: the head only"
    else:
        why_layers = (
            f"set by user: the top {freeze.trainable_layers}"
            + (f" of {num_layers}" if num_layers else "")
            + " encoder layers and the head"
        )
    if freeze.unfreeze == "none":
        return why_layers, "the same layers every epoch"
    stages = (
        freeze.stages(num_layers=num_layers, epochs=epochs)
        if num_layers else None
    )
    return why_layers, (
        "set by user: one more layer per epoch from the top"
        + (f" (layers by epoch: {', '.join(map(str, stages))})"
           if stages else "")
    )


def _decide_weight_decay(optimizer, weight_decay):
    exempt = "; LayerNorm, biases and embedding norms are exempt"
    if weight_decay == AUTO:
        defaults = OPTIMIZER_DEFAULTS[optimizer]
        value, reason = defaults.weight_decay, defaults.weight_decay_source
    else:
        value = (
            _parse_float(weight_decay)
            if isinstance(weight_decay, str)
            else weight_decay
        )
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value >= 0)
        ):
            default = OPTIMIZER_DEFAULTS[optimizer].weight_decay
            raise PlanError(
                f"--weight_decay={weight_decay!r} must be a number >= 0. "
                f"Pass --weight_decay={default:g} (the {optimizer} default)."
            )
        reason = "set by user"
    return float(value), reason + (exempt if value else "")


def _decide_strategy(strategy, env):
    """Returns (strategy, num_replicas, strategy reason, replicas reason)."""
    if strategy != AUTO:
        _check_flag_choice("strategy", strategy, STRATEGIES)
    tpu = f"--tpu={env.tpu}"
    local_devices = len(env.gpus) or env.cpu_devices
    device_word = "GPU(s)" if env.gpus else "CPU device(s)"

    if env.platform == "tpu":
        if strategy not in (AUTO, "tpu"):
            raise PlanError(
                f"--strategy={strategy} with {tpu}: a TPU trains only under "
                "TPUStrategy. Drop --strategy or drop --tpu."
            )
        if env.tpu_cores:
            replicas = env.tpu_cores
            why = f"{env.tpu_cores} TPU device(s)" + (
                f" ({env.tpu_type})" if env.tpu_type else ""
            )
        else:
            replicas = DEFAULT_TPU_CORES
            why = (
                f"{DEFAULT_TPU_CORES} TPU cores: assumed a v2-8/v3-8 (set "
                "TPU_ACCELERATOR_TYPE, e.g. v5litepod-1, for another slice)"
            )
        reason = f"TPU {env.tpu} reachable" if strategy == AUTO else "set by user"
        return "tpu", replicas, reason, why

    if strategy == "tpu":
        raise PlanError(
            "--strategy=tpu but no TPU was found (no --tpu, COLAB_TPU_ADDR, "
            "TPU_NAME or TPU device). Pass --tpu=NAME or drop --strategy."
        )
    if env.num_workers > 1 and strategy not in (AUTO, "multi_worker_mirrored"):
        raise PlanError(
            f"--strategy={strategy} with TF_CONFIG of {env.num_workers} "
            "workers: that strategy trains on one machine, so every worker "
            "would train alone. Drop --strategy or unset TF_CONFIG."
        )
    if strategy == "mirrored" and local_devices < 2:
        raise PlanError(
            "--strategy=mirrored needs at least 2 devices, but this machine "
            f"has one ({'1 GPU' if env.gpus else 'CPU only'}). Drop "
            "--strategy: one device trains with the default strategy."
        )

    if strategy == "multi_worker_mirrored" or (
        strategy == AUTO and env.num_workers > 1
    ):
        per_worker = len(env.gpus) or 1
        replicas = env.num_workers * per_worker
        reason = (
            f"TF_CONFIG lists {env.num_workers} workers"
            if strategy == AUTO
            else "set by user"
        )
        kind = "GPU(s)" if env.gpus else "CPU replica"
        why = f"{env.num_workers} worker(s) x {per_worker} {kind}"
        return "multi_worker_mirrored", replicas, reason, why
    if strategy == "mirrored" or (strategy == AUTO and len(env.gpus) > 1):
        reason = "set by user"
        if strategy == AUTO:
            reason = f"{len(env.gpus)} GPUs on one machine"
        return "mirrored", local_devices, reason, f"{local_devices} {device_word}"
    if strategy == AUTO:
        what = f"one GPU ({env.gpus[0].name})" if env.gpus else "CPU only"
        return "default", 1, f"{what}: nothing to distribute", "one device"
    extra = f"; only 1 of {len(env.gpus)} GPUs is used" if len(env.gpus) > 1 else ""
    return "default", 1, f"set by user{extra}", "one device"


def _decide_global_batch(value, num_replicas, strategy):
    if value == AUTO:
        size = math.ceil(DEFAULT_GLOBAL_BATCH_SIZE / num_replicas) * num_replicas
        if size == DEFAULT_GLOBAL_BATCH_SIZE:
            return size, "BERT fine-tuning recipe: 32 examples per update"
        return size, (
            f"BERT recipe's 32, rounded up to a multiple of the {num_replicas} replicas"
        )
    size = _positive_int(value, "global_batch_size")
    if size % num_replicas:
        lower = size // num_replicas * num_replicas
        options = " or ".join(
            str(s) for s in (lower, lower + num_replicas) if s > 0
        )
        raise PlanError(
            f"--global_batch_size={size} is not a multiple of the "
            f"{num_replicas} replicas of --strategy={strategy}. Pass "
            f"--global_batch_size={options}."
        )
    return size, "set by user"


def _decide_precision(precision, env, probe, cache, probe_key):
    if precision != AUTO:
        _check_flag_choice("precision", precision, PRECISIONS)
        if env.platform == "tpu" and precision == "mixed_float16":
            raise PlanError(
                f"--precision=mixed_float16 with --tpu={env.tpu}: TPUs do not "
                "support float16; use --precision=mixed_bfloat16 or drop --tpu."
            )
        if env.gpus and precision == "mixed_bfloat16":
            capability = min(gpu.compute_capability for gpu in env.gpus)
            if capability < (8, 0):
                return precision, (
                    "set by user (GPU compute capability "
                    f"{capability[0]}.{capability[1]} has no bfloat16 tensor "
                    "cores: expect it to be slow)"
                )
        return precision, "set by user"

    if env.platform == "tpu":
        return "mixed_bfloat16", "TPUs compute in bfloat16 natively"
    if env.gpus:
        capability = min(gpu.compute_capability for gpu in env.gpus)
        cc = f"{capability[0]}.{capability[1]}"
        if capability >= (8, 0):
            return "mixed_bfloat16", (
                f"GPU compute capability {cc} has bfloat16 tensor cores; "
                "bfloat16 needs no loss scaling"
            )
        if capability >= (7, 0):
            return "mixed_float16", (
                f"GPU compute capability {cc} has float16 tensor cores but "
                "no bfloat16; loss scaling keeps float16 gradients finite"
            )
        return "float32", (
            f"GPU compute capability {cc} has no tensor cores; low precision "
            "would not be faster"
        )
    if probe is None:
        policy, why = _cpu_feature_rule(env)
        return policy, f"no probe: {why}"
    return _probe_precision(env, probe, cache, probe_key)


def _probe_precision(env, probe, cache, probe_key):
    """Times the candidate policies interleaved and decides with a margin.

    The probe is called `_PRECISION_ROUNDS` times per policy in turn
    (float32, mixed_bfloat16, float32, ...), so load that comes and goes
    slows every policy alike; each policy's median counts. The measurement
    overrides the CPU-feature rule only when its winner is clearly faster
    than the rule's choice: medians at least `_PRECISION_MARGIN` apart and
    no timing of the two overlapping. The load average at the start and end
    goes into the reason and the cache; a result taken while the machine was
    busy (see `_busy`) is not cached, so a later run measures again.
    """
    candidates = ["float32", "mixed_bfloat16"]
    if env.cpu_flags & {"avx512_fp16", "amx_fp16"}:
        candidates.append("mixed_float16")
    flags = hashlib.sha256(" ".join(sorted(env.cpu_flags)).encode()).hexdigest()[:12]
    key = f"cpu={env.cpu_model};flags={flags};model={probe_key}"
    measurement = _cached_precision(
        cache.get("precision", key) if cache else {}, candidates
    )
    cached = measurement is not None
    if not cached:
        measurement = _unkept_measurements(probe).get(key)
    if measurement is None:
        measurement = _measure_precision(probe, candidates, env.cpu_count)
        if measurement["busy"]:
            logging.warning(
                "precision probe: the machine was busy (%s); the result is "
                "not cached and the next run measures again.",
                _load_words(measurement),
            )
            _unkept_measurements(probe)[key] = measurement
        elif cache:
            cache.put("precision", key, measurement)
    return _choose_precision(measurement, candidates, env, cached)


# Timings per policy, interleaved with the other policies' (see
# `_probe_precision`); the median of 5 ignores two outliers.
_PRECISION_ROUNDS = 5
# Relative gap between two policies' median seconds per update below which
# the measurement does not decide: repeated runs on a shared 2-core machine
# moved the bfloat16/float32 ratio by more than 10% (1.08x and 1.24x).
_PRECISION_MARGIN = 0.10


def _cpu_feature_rule(env):
    """(policy, why) from the CPU flags alone: bfloat16 where it has the
    instructions (avx512_bf16, amx_bf16), else float32."""
    bf16 = sorted(env.cpu_flags & {"avx512_bf16", "amx_bf16"})
    if bf16:
        return "mixed_bfloat16", f"CPU-feature rule (CPU has {', '.join(bf16)})"
    return "float32", "CPU-feature rule (no avx512_bf16/amx_bf16)"


def _measure_precision(probe, candidates, cores):
    """Interleaved timings; a policy whose loss was not finite is dropped."""
    start = _load_average()
    timings = {policy: [] for policy in candidates}
    for _ in range(_PRECISION_ROUNDS):
        for policy in candidates:
            if None in timings[policy]:
                continue
            seconds = float(probe(policy))
            ok = math.isfinite(seconds) and seconds > 0
            timings[policy].append(seconds if ok else None)
    end = _load_average()
    own = _own_load()
    return {
        "timings": timings,
        "load_average": [start, end],
        "own_load": own,
        "cores": cores,
        "busy": _busy([start, end], own, cores),
        "measured": _now(),
    }


def _cached_precision(entry, candidates):
    """A cached measurement in the current format for `candidates`, or None.

    Entries written before the load was recorded (policy -> seconds) are
    measured again: nothing says what the machine was doing then.
    """
    timings = entry.get("timings")
    load = entry.get("load_average")
    if not (
        isinstance(timings, dict)
        and set(candidates) <= set(timings)
        and all(isinstance(timings[p], list) and timings[p] for p in candidates)
        and isinstance(load, list)
        and len(load) == 2
        and not entry.get("busy")
    ):
        return None
    return entry


def _choose_precision(measurement, candidates, env, cached):
    timings = measurement["timings"]
    valid = {
        p: sorted(timings[p])
        for p in candidates
        if timings[p] and all(isinstance(t, (int, float)) for t in timings[p])
    }
    rejected = [p for p in candidates if p not in valid]
    rounds = max(len(timings[p]) for p in candidates)
    note = f"; {', '.join(rejected)} rejected: loss not finite" if rejected else ""
    note += f"; median of {rounds} interleaved timings, {_load_words(measurement)}"
    if cached:
        note += f" (cached probe of {measurement.get('measured', 'an earlier run')})"
    elif measurement["busy"]:
        note += " (busy: not cached)"
    if not valid:
        logging.warning(
            "No dtype policy gave a finite loss in the precision probe; "
            "check the data and the model."
        )
        return "float32", "probe: no policy gave a finite loss; float32 kept" + note
    median = {p: _median(t) for p, t in valid.items()}
    rule, rule_why = _cpu_feature_rule(env)
    if rule not in valid:
        rule, rule_why = "float32", "float32 kept"
    if rule not in valid:
        rule, rule_why = min(median, key=median.get), "the only finite one"
    def clearly_faster(fast, slow):
        return median[slow] / median[fast] >= 1 + _PRECISION_MARGIN and (
            max(valid[fast]) < min(valid[slow])
        )

    # Ties go to the rule.
    best = min(median, key=lambda p: (median[p], p != rule))
    if best == rule:
        others = ", ".join(
            f"{p} {median[p] / median[best]:.2f}x slower" for p in median if p != best
        )
        if others and not all(clearly_faster(best, p) for p in median if p != best):
            return best, (
                f"{rule_why}, and the probe agrees within the noise ({others})"
                + note
            )
        detail = f" ({others})" if others else ""
        return best, f"measured fastest on this CPU{detail}" + note
    ratio = median[rule] / median[best]
    if clearly_faster(best, rule):
        return best, f"measured {ratio:.2f}x faster than {rule} on this CPU" + note
    return rule, (
        f"{rule_why}: the probe's {best} was {ratio:.2f}x faster than {rule}, "
        f"within the noise (a {100 * _PRECISION_MARGIN:.0f}% margin and "
        "non-overlapping timings are needed)" + note
    )


def _median(values):
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2


def _load_average():
    """The 1-minute load average, or None where the OS has none."""
    try:
        return round(float(os.getloadavg()[0]), 2)
    except OSError:
        return None


# This process's clock and CPU time when this module was imported (early in
# every run), to tell its own share of the load average from other work's.
_IMPORTED = (time.monotonic(), time.process_time())


def _own_load():
    """This process's estimated share of the 1-minute load average.

    Its CPU time since import over the wall time, as the kernel's 1-minute
    moving average would weigh a steady rate over that time.
    """
    wall = time.monotonic() - _IMPORTED[0]
    if wall <= 0:
        return 0.0
    rate = (time.process_time() - _IMPORTED[1]) / wall
    return round(rate * (1 - math.exp(-wall / 60)), 2)


def _busy(loads, own, cores):
    """Whether other work kept more than half the cores busy.

    Other work is the 1-minute load average (at the start or the end of a
    measurement, whichever is higher) less this process's own share: a run
    alone on the machine does not call itself busy, while one other job
    using a core of two does slow a measurement.
    """
    known = [load for load in loads if load is not None]
    return bool(known) and max(known) - own > cores / 2


def _load_words(measurement):
    start, end = measurement["load_average"]
    cores = measurement["cores"]
    return (
        f"load average {_number(start)} -> {_number(end)} on {cores} "
        + ("core" if cores == 1 else "cores")
    )


def _number(value):
    return "?" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


# Busy measurements, not cached, that a probe made in this process: a plan
# decided twice with the same probe (as `run.prepare` does) reads them
# instead of measuring again.
_UNKEPT = weakref.WeakKeyDictionary()


def _unkept_measurements(probe):
    try:
        return _UNKEPT.setdefault(probe, {})
    except TypeError:  # Not weakly referable: no memory for it.
        return {}


def _bool_or_auto(value, flag):
    """A boolean flag's value: True, False or AUTO, from bools or strings."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value == AUTO or isinstance(value, bool):
        return value
    raise PlanError(
        f"--{flag}={value!r} must be true, false or auto. Pass --{flag}=auto."
    )


def _decide_xla(xla, env):
    xla = _bool_or_auto(xla, "xla")
    if xla == AUTO:
        if env.platform == "tpu":
            return True, "TPUs always compile with XLA"
        if env.platform == "gpu":
            return True, "XLA fuses kernels on GPU"
        # Not measured on the user's machine: a number from the development
        # machine, said as such, with the file that holds it.
        return False, (
            "off on CPU: XLA ran MiniLM-L6's forward and backward 0.60x as "
            "fast as plain TensorFlow on a 2-core AMD EPYC (2026-11-28, "
            "docs/benchmarks.md, cpu suite); not measured on this machine; "
            "pass --xla=true to force"
        )
    if env.platform == "tpu" and not xla:
        raise PlanError(
            f"--xla=false with --tpu={env.tpu}: TPUs always compile with XLA. "
            "Drop --xla=false or drop --tpu."
        )
    return xla, "set by user"


def _decide_fused_update(fused_update, strategy):
    fused_update = _bool_or_auto(fused_update, "fused_update")
    # The plan's name for what `distribution.fusable_update` tells from a
    # strategy object: only the one-device strategy can fuse its update.
    one_device = strategy == "default"
    if fused_update == AUTO:
        if one_device:
            return True, (
                "one device: the optimizer update is one XLA function "
                "(MiniLM-L6 updates 1.11x faster on a 2-core AMD EPYC, "
                "2026-11-28, docs/benchmarks.md, cpu suite; not measured on "
                "this machine)"
            )
        return False, (
            f"{strategy}: Keras updates each replica's copy of a weight "
            "separately, which one XLA function cannot hold"
        )
    if fused_update and not one_device:
        raise PlanError(
            f"--fused_update=true with strategy {strategy}: only a one-device "
            "update can be fused. Pass --fused_update=auto."
        )
    return fused_update, "set by user"


def _decide_micro_batch(
    *,
    env,
    per_replica,
    local_replicas,
    precision,
    xla,
    max_sequence_length,
    model_params,
    model_dims,
    fits_probe,
    cache,
    probe_key,
):
    """Returns (micro_batch_size, reason): the largest fitting divisor."""
    powers = {2**k for k in range(per_replica.bit_length()) if 2**k < per_replica}
    candidates = sorted(powers | {per_replica})
    if env.platform != "cpu" and fits_probe is not None:
        device = _device_name(env)
        fitting = _search_fitting(
            candidates,
            fits_probe,
            cache,
            f"device={device};precision={precision};xla={xla};"
            f"seq={max_sequence_length};model={probe_key}",
            dict(precision=precision, xla=xla, max_sequence_length=max_sequence_length),
        )
        if fitting is None:
            raise PlanError(
                f"--micro_batch_size: the model does not fit on {device} even "
                f"with 1 example of {max_sequence_length} tokens in {precision}. "
                "Pass a smaller --max_sequence_length or use a larger device."
            )
        how = f"largest that fits on {device} (probed)"
    else:
        memory = _device_memory(env)
        missing = []
        if env.platform != "cpu":
            missing.append("no fits probe")
        if memory is None:
            missing.append("no memory figure")
        if model_params is None and model_dims is None:
            missing.append("no model size")
        if memory is None or (model_params is None and model_dims is None):
            return per_replica, (
                f"{', '.join(missing)}: no memory check, the whole "
                "per-replica batch in one pass"
            )
        static = (model_params or 0) * _BYTES_PER_PARAMETER
        per_example = _activation_bytes_per_example(
            model_dims, max_sequence_length, 4 if precision == "float32" else 2
        )
        # CPU replicas share the host's memory; each GPU has its own.
        sharing = local_replicas if env.platform == "cpu" else 1
        budget = memory * _MEMORY_SAFETY / sharing - static
        fits = [c for c in candidates if c * per_example <= budget]
        estimate = (
            f"estimate {static / _GIB:.2f} GiB weights/grads/Adam/accumulator + "
            f"{per_example / _MIB:.1f} MiB activations per example vs half of "
            f"{memory / _GIB:.1f} GiB"
        )
        if not fits:
            logging.warning(
                "Even one example may not fit in memory (%s); expect swapping "
                "or an out-of-memory kill.", estimate,
            )
            return 1, f"{estimate}: even 1 may not fit; lower --max_sequence_length"
        fitting = fits[-1]
        how = ("no fits probe; " if env.platform != "cpu" else "") + estimate
    micro = _largest_divisor_at_most(per_replica, fitting)
    if micro != fitting:
        return micro, (
            f"{how}: {fitting} fits but does not divide {per_replica} per "
            f"replica; {micro} is the largest that does"
        )
    return micro, how


def _search_fitting(candidates, fits_probe, cache, key, kwargs):
    """Largest candidate that fits, trying the largest first, then bisecting.

    Assumes that if a micro-batch fits, every smaller one fits too.
    """
    known = cache.get("fits", key) if cache else {}
    answers = {}

    def fits(size):
        if str(size) in known:
            return bool(known[str(size)])
        try:
            answer = bool(fits_probe(size, **kwargs))
        except tf.errors.ResourceExhaustedError:
            answer = False
        answers[str(size)] = answer
        return answer

    if fits(candidates[-1]):
        result = candidates[-1]
    else:
        low, high = -1, len(candidates) - 1  # Index that fits / does not fit.
        while high - low > 1:
            middle = (low + high) // 2
            if fits(candidates[middle]):
                low = middle
            else:
                high = middle
        result = candidates[low] if low >= 0 else None
    if cache and answers:
        cache.put("fits", key, {**known, **answers})
    return result


def _activation_bytes_per_example(dims, sequence_length, bytes_per_value):
    """Activation memory one example keeps alive for the backward pass.

    Counting values kept per token in one transformer layer, with hidden
    size h, intermediate size i and a heads:
      attention: the Q/K/V projections' input (h), Q, K and V (3h) and the
        context before the output projection (h)                    5h
      attention probabilities and their dropout mask, per head      2as
      output projection's dropout mask and LayerNorm input          2h
      feed-forward: its input (h), pre-activation and GELU output
        (2i), dropout mask (h) and LayerNorm input (h)              3h + 2i
    which totals 10h + 2i + 2as. With i = 4h that is 18h + 2as, the
    per-layer count of Korthikanti et al., "Reducing Activation
    Recomputation in Large Transformer Models" (2022): 34sh + 5as^2 bytes at
    2 bytes per value, dropout masks counted as full values here to err on
    the safe side. The embeddings add 3h per token (sum, LayerNorm,
    dropout). Per example:

      bytes = bytes_per_value * s * (layers * (10h + 2i + 2as) + 3h).
    """
    if dims is None:
        return 0
    h, layers, i, a = ModelDims(*dims)
    s = sequence_length
    return bytes_per_value * s * (layers * (10 * h + 2 * i + 2 * a * s) + 3 * h)


# === Probe cache ===


class _ProbeCache:
    """Probe results in one JSON file, `{kind: {key: {answer...}}}`."""

    def __init__(self, directory):
        self._path = os.path.join(directory, _PROBE_CACHE_FILE)

    def _load(self):
        try:
            with open(self._path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as e:
            logging.warning(
                "Ignoring the unreadable probe cache %s (%s).", self._path, e
            )
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, kind, key):
        entry = self._load().get(kind, {}).get(key, {})
        return entry if isinstance(entry, dict) else {}

    def put(self, kind, key, value):
        data = self._load()
        data.setdefault(kind, {})[key] = value
        try:
            atomic.write_json(self._path, data, indent=2, sort_keys=True)
        except OSError as e:
            # A read-only cache only costs a probe next time.
            logging.warning(
                "probe cache %s not written (%s); set PAINLESS_TF_CACHE to "
                "a writable folder to keep probe results", self._path, e,
            )


# === Helpers ===


def _device_name(env):
    if env.platform == "tpu":
        kind = f"{env.tpu_type}, " if env.tpu_type else ""
        return f"TPU ({kind}{env.tpu_cores or DEFAULT_TPU_CORES} cores)"
    gpu = min(env.gpus, key=lambda g: g.memory_bytes or 0)
    return gpu.name


def _device_memory(env):
    """Memory one replica's device has, or None where unknown."""
    if env.platform == "cpu":
        return env.memory_bytes
    if env.platform == "gpu" and all(g.memory_bytes for g in env.gpus):
        return min(g.memory_bytes for g in env.gpus)
    if env.platform == "tpu":
        gib = _TPU_DEVICE_MEMORY_GIB.get(_tpu_generation(env.tpu_type))
        return gib * _GIB if gib else None
    return None


def _tpu_generation(accelerator_type):
    """"v5litepod-1" -> "v5e", "v3-8" -> "v3"; None where unknown."""
    match = re.fullmatch(r"(v\d+[a-z]*)-\d+", accelerator_type or "")
    if not match:
        return None
    # Cloud TPU names v5e slices "v5litepod".
    return {"v5litepod": "v5e", "v5lite": "v5e"}.get(match.group(1), match.group(1))


def _largest_divisor_at_most(number, limit):
    return max(d for d in range(1, min(number, limit) + 1) if number % d == 0)


def _positive_int(value, flag):
    # String flags that also take "auto" deliver numbers as text.
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(
            f"--{flag}={value!r} must be a positive integer. Pass --{flag}=1 or more."
        )
    return value


def _positive_float(value, flag, example):
    number = None
    if isinstance(value, str):
        # String flags that also take "auto" deliver numbers as text.
        number = _parse_float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    if number is None or not (math.isfinite(number) and number > 0):
        raise PlanError(
            f"--{flag}={value!r} must be a positive number or 'auto'. "
            f"Pass e.g. --{flag}={example}."
        )
    return number


def _parse_float(text):
    try:
        return float(text)
    except ValueError:
        return None


def _check_flag_choice(flag, value, choices):
    if value not in choices:
        raise PlanError(
            f"--{flag}={value!r} is not one of auto, {', '.join(choices)}. "
            "Pass one of those."
        )


def _check_choice(name, value, choices):
    if value not in choices:
        raise PlanError(
            f"`{name}` must be one of {choices}. Received: {name}={value!r}"
        )


def _check_boundaries(boundaries, max_sequence_length):
    previous = 0
    for boundary in boundaries:
        if isinstance(boundary, bool) or not isinstance(boundary, int) or not (
            previous < boundary <= max_sequence_length
        ):
            raise PlanError(
                f"bucket boundaries {list(boundaries)} must be increasing "
                f"integers in [1, max_sequence_length={max_sequence_length}]. "
                "Fix the boundaries or raise --max_sequence_length."
            )
        previous = boundary


def _short(rate):
    """A rate as people write it: 3e-5, 1.2e-4."""
    mantissa, exponent = f"{rate:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _format_flag(value):
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _format_value(value):
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)
