"""`make_plan`: the one pass that decides every field of a `Plan`.

It calls the decision modules in turn (strategy, precision, XLA,
micro-batch, optimizer, learning rate, freezing), decides the sequence
length, the length buckets and the step counts itself, keeps a resumed
run's measured decisions, and ends with the LR range test where the
learning rate is automatic.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from painless_tf import batching
from painless_tf import freezing
from painless_tf.hardware import Environment
from painless_tf.plan.checks import AUTO
from painless_tf.plan.checks import PlanError
from painless_tf.plan.checks import _check_boundaries
from painless_tf.plan.checks import _positive_float
from painless_tf.plan.checks import _positive_int
from painless_tf.plan.length_choice import LengthChoice
from painless_tf.plan.length_choice import choose_length
from painless_tf.plan.micro_batch_choice import FitsProbe
from painless_tf.plan.micro_batch_choice import ModelDims
from painless_tf.plan.micro_batch_choice import _decide_micro_batch
from painless_tf.plan.micro_batch_choice import _largest_divisor_at_most
from painless_tf.plan.optimizer_choice import _decide_freezing
from painless_tf.plan.optimizer_choice import _decide_momentum
from painless_tf.plan.optimizer_choice import _decide_optimizer
from painless_tf.plan.optimizer_choice import _decide_layer_decay
from painless_tf.plan.optimizer_choice import _decide_weight_averaging
from painless_tf.plan.optimizer_choice import _decide_weight_decay
from painless_tf.plan.optimizer_choice import _default_learning_rate
from painless_tf.plan.precision_choice import PrecisionProbe
from painless_tf.plan.precision_choice import _decide_precision
from painless_tf.plan.probe_cache import _ProbeCache
from painless_tf.plan.probe_cache import default_cache_dir
from painless_tf.plan.record import Plan
from painless_tf.plan.selection_choice import _decide_class_weights
from painless_tf.plan.selection_choice import _decide_eval_every
from painless_tf.plan.selection_choice import _decide_patience
from painless_tf.plan.selection_choice import _decide_selection_metric
from painless_tf.plan.strategy_choice import _decide_fused_update
from painless_tf.plan.strategy_choice import _decide_global_batch
from painless_tf.plan.strategy_choice import _decide_strategy
from painless_tf.plan.strategy_choice import _decide_xla



class LearningRateProbe(Protocol):
    """Measures the peak learning rate of a plan (the LR range test).

    Called once, with the plan decided but for the rate; returns an object
    with `learning_rate`, `reason` and `to_dict()`
    (`lr_curve.RangeTestResult`).

    Examples:
    >>> import types
    >>> probe = lambda plan: types.SimpleNamespace(learning_rate=5e-5,
    ...     reason="range test", to_dict=lambda: {"learning_rate": 5e-5})
    >>> probe(None).learning_rate
    5e-05
    """

    def __call__(self, plan: "Plan"): ...


def make_plan(
    *,
    environment: Environment,
    num_train_examples: int,
    epochs: int = 3,
    min_updates: int = 0,
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
    layer_decay: float | str = AUTO,
    weight_averaging: str = AUTO,
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
    learning_rate_probe_updates: int | None = None,
    recorded: "Plan | None" = None,
    fixed_length: bool = False,
    class_counts: Sequence[int] | None = None,
    class_weights: str = AUTO,
    selection_metric: str = AUTO,
    eval_every_updates: int | str = AUTO,
    early_stopping_patience: int | str = AUTO,
    length_choice: LengthChoice | None = None,
    task: str = "classification",
    task_reason: str | None = None,
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
        min_updates: int. The small-data recipe: epochs are raised (up to
            `SMALL_DATA_MAX_EPOCHS`) until the run makes at least this many
            updates; 0 keeps `epochs`.
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
        max_sequence_length: int | "auto". Tokens per sequence; see
            `length_choice`.
        bucket_boundaries: Sequence[int] | None. Length buckets from the
            data pipeline; None means no bucketing.
        model_params: int | None. Parameter count, for the CPU memory
            estimate and the fused update (off under `FUSE_MIN_PARAMS`).
        model_dims: ModelDims | None. (hidden, layers, intermediate, heads),
            for the activation-memory estimate.
        warmup_fraction: float. Share of the updates spent warming up.
        weight_decay: float | "auto". Decoupled weight decay; "auto" is
            the optimizer's default (0.01 for AdamW).
        layer_decay: float | "auto". Layer-wise learning-rate decay in
            (0, 1]; "auto" is 1 (one rate for every layer, see
            `optimizer_choice._decide_layer_decay`).
        weight_averaging: str. "auto" ("none"), "none", "soup" or "ema":
            what the end of training keeps (`painless_tf.soup`,
            `painless_tf.ema`).
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
        learning_rate_probe_updates: int | None. The updates the probe
            makes: a run of fewer than `RANGE_TEST_SHARE` times as many
            keeps the recipe's rate, since the test would cost more than
            a large part of the training it tunes. None: no such rule.
        recorded: Plan | None. The plan this run recorded when it started
            (a resumed run): its measured decisions (precision, micro-batch,
            learning rate) are kept instead of measured again, so a resumed
            run trains with the plan it started with.
        length_choice: LengthChoice | None. The sequence length and the cut
            of longer texts, decided from the training texts' untruncated
            lengths (`choose_length`); it replaces `max_sequence_length`.
            None decides them without data: "auto" is 128, or the model
            limit if shorter.
        fixed_length: bool. The model's outputs change with the padding
            (`models.describe(...).fixed_length`: F-Net, RoFormer-v2): one
            bucket, the sequence length, so it trains as it predicts.
        class_counts: Sequence[int] | None. Training examples per class
            id: skewed classes get class weights and macro-F1 selection.
        class_weights: str. "auto" (balanced weights when the classes are
            skewed), "none" or "balanced".
        selection_metric: str. "auto" (macro_f1 on skewed classes, else
            accuracy), "accuracy", "macro_f1" or "loss".
        eval_every_updates: int | "auto". Also validate every N updates
            within epochs (0: at epoch ends only); "auto" does so on epochs
            longer than 1,000 updates, 4 times each.
        early_stopping_patience: int | "auto". Validations without
            improvement before training stops (0: never); "auto" is 2.
        task: str. "classification", "multi_label" or "regression", as
            `data.tasks.detect_task` decided it from the labels.
        task_reason: str | None. Why (`TaskSpec.reason`).

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

    if length_choice is None:
        # No training lengths to plan from: the rule's defaults.
        length_choice = choose_length(
            max_sequence_length, None, model_limit=model_max_sequence_length)
    max_sequence_length = length_choice.max_sequence_length
    reasons.update(length_choice.reasons)

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
        fused_update, strategy, model_params
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
    epochs, reasons["epochs"] = _decide_epochs(
        epochs, steps_per_epoch, min_updates)
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
    layer_decay, reasons["layer_decay"] = _decide_layer_decay(layer_decay)
    weight_averaging, reasons["weight_averaging"] = _decide_weight_averaging(
        weight_averaging, total_updates)
    if not clip_norm > 0:
        raise PlanError(
            f"`clip_norm` must be > 0. Received: clip_norm={clip_norm!r}. "
            "Pass clip_norm=1.0."
        )
    reasons["clip_norm"] = (
        "global-norm clipping, BERT recipe" if clip_norm == 1.0 else "set by user"
    )
    reasons["seed"] = "default" if seed == 0 else "set by user"
    reasons["task"] = task_reason or "default"
    (reasons["trainable_layers"], reasons["unfreeze"]) = _decide_freezing(
        trainable_layers, unfreeze, num_layers, epochs
    )

    class_weights, reasons["class_weights"] = _decide_class_weights(
        class_weights, class_counts, task)
    selection_metric, reasons["selection_metric"] = _decide_selection_metric(
        selection_metric, class_counts, task)
    eval_every_updates, reasons["eval_every_updates"] = _decide_eval_every(
        eval_every_updates, steps_per_epoch)
    early_stopping_patience, reasons["early_stopping_patience"] = (
        _decide_patience(early_stopping_patience))

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
        layer_decay=layer_decay,
        weight_averaging=weight_averaging,
        clip_norm=float(clip_norm),
        max_sequence_length=max_sequence_length,
        truncation=length_choice.truncation,
        truncation_head=length_choice.truncation_head,
        truncation_tail=length_choice.truncation_tail,
        bucket_boundaries=bucket_boundaries,
        seed=int(seed),
        trainable_layers=trainable_layers,
        unfreeze=unfreeze,
        class_weights=class_weights,
        selection_metric=selection_metric,
        eval_every_updates=eval_every_updates,
        early_stopping_patience=early_stopping_patience,
        task=task,
        reasons=reasons,
    )
    if not rate_is_auto:
        return plan
    measured = None
    if recorded is not None and recorded.lr_range_test:
        measured = dict(recorded.lr_range_test)
        reason = _kept(recorded, "learning_rate")
        rate = recorded.learning_rate
    elif learning_rate_probe is not None and _too_short_for_probe(
            plan, learning_rate_probe_updates):
        return dataclasses.replace(plan, reasons={
            **plan.reasons, "learning_rate": (
                f"{plan.reasons['learning_rate']}; no LR range test: its "
                f"{learning_rate_probe_updates} updates would be more than "
                f"1/{RANGE_TEST_SHARE} of this run's {plan.total_updates} "
                "(it runs for runs of "
                f"{RANGE_TEST_SHARE * learning_rate_probe_updates} updates or "
                "more)")})
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


# The LR range test runs only when its updates are at most 1/RANGE_TEST_SHARE
# of the run's: on a small set (189 speeches of 512 tokens: 15 updates) its
# 24 updates (32 since the probe) took longer than the whole training.
RANGE_TEST_SHARE = 2


def _too_short_for_probe(plan, probe_updates):
    return bool(probe_updates) and (
        RANGE_TEST_SHARE * probe_updates > plan.total_updates)


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


# The small-data recipe's ceiling: Mosbach et al. 2021 fine-tune sets of a
# few thousand examples for 20 epochs (and find 3 too few there).
SMALL_DATA_MAX_EPOCHS = 20


def _decide_epochs(epochs, steps_per_epoch, min_updates):
    """(epochs, reason): the epochs asked for, or more on a small set.

    Examples:
    >>> _decide_epochs(3, 5, 0)
    (3, "default: the BERT fine-tuning recipe's 3")
    >>> _decide_epochs(3, 5, 300)[0], _decide_epochs(3, 50, 300)[0]
    (20, 6)
    >>> _decide_epochs(3, 500, 300)[0]
    3
    """
    reason = ("default: the BERT fine-tuning recipe's 3" if epochs == 3
              else "set by user")
    if isinstance(min_updates, bool) or not isinstance(min_updates, int) or (
            min_updates < 0):
        raise PlanError(
            f"--min_updates={min_updates!r} must be an integer >= 0. Pass "
            "--min_updates=0 to keep --epochs.")
    needed = math.ceil(min_updates / steps_per_epoch) if min_updates else 0
    if needed <= epochs:
        return epochs, reason
    raised = min(needed, SMALL_DATA_MAX_EPOCHS)
    return raised, (
        f"raised from {epochs} by --min_updates={min_updates} (small-data "
        f"recipe): {steps_per_epoch} steps per epoch"
        + (f", capped at {SMALL_DATA_MAX_EPOCHS} epochs"
           if raised < needed else "")
        + "; the best validation's weights are kept")
