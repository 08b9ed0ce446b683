"""The plan's optimizer decisions: what updates the weights, and which ones.

The optimizer (AdamW, with a LAMB suggestion at very large batches), its
momentum and Nesterov setting, the recipe's peak learning rate scaled to the
batch and the model's width, the weight decay, and the trainable layers and
unfreezing (`painless_tf.freezing`). `painless_tf.optimization` holds each
optimizer's defaults and builds the optimizer chosen here.
"""

import math

from absl import logging

from painless_tf import ema
from painless_tf import freezing
from painless_tf.optimization import DEFAULTS as OPTIMIZER_DEFAULTS
from painless_tf.optimization import OPTIMIZERS
from painless_tf.plan.checks import AUTO
from painless_tf.plan.checks import PlanError
from painless_tf.plan.checks import _check_flag_choice
from painless_tf.plan.checks import _format_flag
from painless_tf.plan.checks import _parse_float
from painless_tf.plan.checks import _short

# Examples per update from which LAMB is suggested: You et al. 2019 report
# AdamW failing to reach BERT's accuracy beyond ~16k examples per update,
# while LAMB reaches it at 32k-64k; 8k warns before that edge.
LAMB_SUGGESTION_BATCH = 8192
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


def _decide_layer_decay(layer_decay):
    """(decay, reason). "auto" is 1: one rate for every layer.

    Layer-wise decay stays off by default: in the accuracy suite
    (`bench/accuracy.py`, docs/benchmarks.md) 0.9, AutoGluon's default, lost
    to one rate on Rotten Tomatoes.
    """
    if layer_decay == AUTO:
        return 1.0, ("one rate for every layer: layer-wise decay 0.9 lost "
                     "0.84 points of test accuracy on Rotten Tomatoes (3 "
                     "seeds on a 2-core AMD EPYC with avx512_bf16, "
                     "2026-12-03, docs/benchmarks.md; not measured on this "
                     "machine or data); "
                     "--layer_decay=0.9 turns it on")
    value = (_parse_float(layer_decay) if isinstance(layer_decay, str)
             else layer_decay)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not (math.isfinite(value) and 0 < value <= 1)):
        raise PlanError(
            f"--layer_decay={layer_decay!r} must be a number in (0, 1]. "
            "Pass --layer_decay=0.9, or 1 for one rate for every layer.")
    value = float(value)
    if value == 1.0:
        return value, "set by user: one rate for every layer"
    return value, (f"set by user: each encoder layer's rate is {value:g}x "
                   "the rate of the layer above; the head's is the "
                   "schedule's")


# What the end of training keeps: the best checkpoint, a greedy soup of
# the best checkpoints where it validates better (`painless_tf.soup`), or
# the moving average of the weights where it validates better
# (`painless_tf.ema`).
WEIGHT_AVERAGING = ("none", "soup", "ema")


def _decide_weight_averaging(weight_averaging, total_updates=None):
    """(choice, reason). "auto" keeps the best checkpoint alone: in the
    accuracy suite (`bench/accuracy.py`) no soup beat it, and the moving
    average raised the mean by 0.11 points (kept in 1 of 3 seeds)."""
    if weight_averaging == AUTO:
        return "none", ("the best checkpoint alone: no soup of the best "
                        "checkpoints beat it, and the moving average of the "
                        "weights only once, on Rotten Tomatoes (3 seeds on "
                        "a 2-core AMD EPYC with avx512_bf16, 2026-12-03, "
                        "docs/benchmarks.md; not measured on this machine or "
                        "data); "
                        "--weight_averaging=soup or ema turns one on")
    _check_flag_choice("weight_averaging", weight_averaging,
                       WEIGHT_AVERAGING)
    if weight_averaging == "soup":
        return "soup", ("set by user: a greedy soup of the 3 best "
                        "checkpoints, kept where it validates better")
    if weight_averaging == "ema":
        momentum = ema.momentum_for(total_updates or 1)
        return "ema", ("set by user: a moving average of the weights, "
                       f"momentum {momentum:g} (a horizon of "
                       f"{ema.HORIZON_SHARE:g} of the {total_updates} "
                       "updates), kept where it validates better than the "
                       "best checkpoint")
    return "none", "set by user: the best checkpoint alone"
