"""`Plan`: the record of every decision, with its checks and its JSON form.

A `Plan` checks that its fields agree (the global batch is replicas x
accumulation steps x micro-batch, the updates are steps per epoch x epochs,
...), reads and writes `plan.json`, and prints one line per decision with
its reason. `make_plan` (`painless_tf.plan.planner`) makes one.
"""

import dataclasses
import json
import math
import types
from collections.abc import Mapping

import tensorflow as tf

from painless_tf import atomic
from painless_tf import freezing
from painless_tf.optimization import OPTIMIZERS
from painless_tf.plan.checks import PlanError
from painless_tf.plan.checks import _check_boundaries
from painless_tf.plan.checks import _check_choice
from painless_tf.plan.checks import _format_value
from painless_tf.plan.optimizer_choice import WEIGHT_AVERAGING
from painless_tf.plan.optimizer_choice import _MOMENTUM_OPTIMIZERS
from painless_tf.plan.optimizer_choice import _check_momentum
from painless_tf.plan.precision_choice import PRECISIONS
from painless_tf.plan.strategy_choice import STRATEGIES
from painless_tf.truncation import KINDS as TRUNCATIONS

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
    "truncation",
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
    "layer_decay",
    "weight_averaging",
    "clip_norm",
    "trainable_layers",
    "unfreeze",
    "seed",
    "class_weights",
    "selection_metric",
    "eval_every_updates",
    "early_stopping_patience",
    "task",
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every decision of a training run, each with the reason it was made.

    A step is one optimizer update on one global batch (see the
    `painless_tf.plan` docstring); `steps_per_epoch`, `total_updates` and
    `warmup_steps` count updates.

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
        truncation: str. How a longer text is cut: "head+tail" (one text
            column), "round_robin" (sentence pairs, keras-hub's packer) or
            "head"; see `painless_tf.truncation`.
        truncation_head: int. With "head+tail", the text tokens a cut text
            keeps from its start; 0 otherwise.
        truncation_tail: int. With "head+tail", the text tokens it keeps
            from its end; 0 otherwise.
        bucket_boundaries: tuple[int, ...]. Sequence-length bucket upper
            bounds for batching; empty pads every batch to
            `max_sequence_length`.
        seed: int. Seed of all random number generators.
        trainable_layers: int | str. "all", or the top encoder layers
            trained with the head (0: the head only); see `freezing`.
        unfreeze: str. "none", or "gradual": one more layer per epoch.
        layer_decay: float in (0, 1]. Each encoder layer's learning rate
            is this times the rate of the layer above (the head's is the
            schedule's); 1: one rate for every layer (`layer_decay`).
        weight_averaging: str. "none" (the best checkpoint), "soup" (a
            greedy soup of the best checkpoints where it validates better,
            `painless_tf.soup`) or "ema" (the moving average of the
            weights where it validates better, `painless_tf.ema`).
        fused_update: bool. Whether the optimizer update is one
            XLA-compiled function (one device only; `engine.Trainer`).
        class_weights: tuple[float, ...] | None. The training loss weight
            of each class (mean 1 over the training examples), or None:
            every example weighs 1 (`selection_choice`).
        selection_metric: str. The validation metric (its name in the
            logs without `val_`, e.g. "macro_f1") whose best value decides
            the weights kept (`painless_tf.selection`).
        eval_every_updates: int. Also validate every N updates within
            epochs; 0: at epoch ends only.
        early_stopping_patience: int. Validations without improvement of
            `selection_metric` before training stops; 0: never.
        task: str. "classification", "multi_label" or "regression"
            (`data.tasks.detect_task`): the head's loss and metrics.
        lr_range_test: Mapping. The LR range test behind an automatic
            learning rate (`lr_curve.RangeTestResult.to_dict()`); empty
            when the rate was not searched.
        reasons: Mapping[str, str]. One line of why per decision, keyed by
            field name.

    Examples:
    >>> from painless_tf.hardware import Environment
    >>> from painless_tf.plan import make_plan
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
    # A plan written before these fields kept the last weights.
    class_weights: tuple[float, ...] | None = None
    selection_metric: str = "accuracy"
    eval_every_updates: int = 0
    early_stopping_patience: int = 0
    # A plan written before these fields cut texts as keras-hub's packer
    # does one text: its head.
    truncation: str = "head"
    # A plan written before this field gave every layer one rate.
    layer_decay: float = 1.0
    # A plan written before this field kept the best checkpoint alone.
    weight_averaging: str = "none"
    truncation_head: int = 0
    truncation_tail: int = 0
    # A plan written before this field is a classifier's.
    task: str = "classification"
    lr_range_test: Mapping = dataclasses.field(default_factory=dict)
    reasons: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(
            self, "bucket_boundaries", tuple(int(b) for b in self.bucket_boundaries)
        )
        object.__setattr__(self, "reasons", types.MappingProxyType(dict(self.reasons)))
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights",
                               tuple(float(w) for w in self.class_weights))
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_momentum(self.optimizer, self.momentum, self.nesterov,
                        lambda name, value: f"{name}={value!r}")
        _check_choice("schedule", self.schedule, ("linear",))
        _check_choice("task", self.task,
                      ("classification", "multi_label", "regression"))
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
        if (isinstance(self.layer_decay, bool)
                or not isinstance(self.layer_decay, (int, float))
                or not 0 < self.layer_decay <= 1):
            raise PlanError(
                "`layer_decay` must be in (0, 1]. Received: "
                f"layer_decay={self.layer_decay!r}")
        if self.weight_decay < 0 or self.clip_norm <= 0:
            raise PlanError(
                "`weight_decay` must be >= 0 and `clip_norm` > 0. Received: "
                f"weight_decay={self.weight_decay!r}, clip_norm={self.clip_norm!r}"
            )
        _check_choice("weight_averaging", self.weight_averaging,
                      WEIGHT_AVERAGING)
        _check_boundaries(self.bucket_boundaries, self.max_sequence_length)
        _check_truncation(self)
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
        >>> from painless_tf.plan import make_plan
        >>> make_plan(environment=Environment(), num_train_examples=64,
        ...           precision="float32").to_dict()["strategy"]
        'default'
        """
        result = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        result["bucket_boundaries"] = list(self.bucket_boundaries)
        result["reasons"] = dict(self.reasons)
        result["lr_range_test"] = dict(self.lr_range_test)
        if self.class_weights is not None:
            result["class_weights"] = list(self.class_weights)
        return result

    @classmethod
    def from_dict(cls, values: Mapping, *, source: str = "plan") -> "Plan":
        """Builds a plan from `to_dict()` output, checking every key.

        Args:
            values: Mapping. Field name -> value.
            source: str. Where the values came from, for error messages.

        Examples:
        >>> from painless_tf.hardware import Environment
        >>> from painless_tf.plan import make_plan
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
        >>> from painless_tf.plan import make_plan
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
        >>> from painless_tf.plan import make_plan
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
        >>> from painless_tf.plan import make_plan
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


def _check_truncation(plan):
    _check_choice("truncation", plan.truncation, TRUNCATIONS)
    head, tail = plan.truncation_head, plan.truncation_tail
    for name, value in (("truncation_head", head), ("truncation_tail", tail)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PlanError(
                f"`{name}` must be an integer >= 0. Received: {name}={value!r}")
    if plan.truncation != "head+tail" and (head or tail):
        raise PlanError(
            f"`truncation_head` and `truncation_tail` count the tokens of a "
            f"head+tail cut; truncation={plan.truncation!r} has none. "
            f"Received: {head} and {tail}; pass 0 and 0.")
    if head + tail >= plan.max_sequence_length:
        raise PlanError(
            f"truncation_head + truncation_tail ({head} + {tail}) leave no "
            f"room for the special tokens in max_sequence_length="
            f"{plan.max_sequence_length}.")
