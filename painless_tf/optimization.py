"""Optimization: the optimizer, its learning-rate schedule and weight decay.

The default is the BERT fine-tuning recipe: AdamW, linear warmup then linear
decay to zero, weight decay 0.01 on weight matrices only (not on biases,
LayerNorm scales and offsets), and global-norm clipping at 1.0. Every count
is in optimizer updates (see `engine.py` for what a step is).

Every optimizer of `OPTIMIZERS` gets the same schedule, the same
weight-decay exclusions and the same global-norm clipping (Keras 3.15 takes
`weight_decay` and `global_clipnorm` on all of them), and works unchanged
with the accumulating `engine.Trainer`, a `LossScaleOptimizer` and every
strategy: the engine hands it one already all-reduced gradient per update.
`DEFAULTS` holds each one's fine-tuning defaults and where they come from;
`plan.make_plan` records them in plan.json.
"""

import dataclasses
import re
import types

import keras
import tensorflow as tf
from keras import ops

# Variables whose names match these are not decayed: biases and LayerNorm's
# gamma/beta (the embeddings' LayerNorm included). Decaying them only pulls
# normalization towards zero, which the original BERT recipe avoids.
NO_DECAY_NAMES = ("bias", "gamma", "beta")

OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop", "adagrad", "adafactor", "lamb")


@dataclasses.dataclass(frozen=True)
class Defaults:
    """One optimizer's fine-tuning defaults, with where each comes from.

    The peak learning rate is `learning_rate * (global_batch_size / 32) **
    batch_power`, kept within [`min_learning_rate`, `max_learning_rate`].

    Args:
        learning_rate: float. Peak rate at the recipe's global batch of 32.
        batch_power: float. 0.5 (square-root scaling) or 1.0 (linear).
        min_learning_rate: float. Lowest peak rate the scaling may give.
        max_learning_rate: float. Highest peak rate the scaling may give.
        learning_rate_source: str. Why these numbers, one clause.
        weight_decay: float. Decoupled decay per unit of learning rate (Keras
            subtracts `learning_rate * weight_decay * w` per update).
        weight_decay_source: str. Why this number, one line.
        momentum: float. For `sgd` and `rmsprop`; 0 elsewhere.

    Examples:
    >>> DEFAULTS["sgd"].momentum
    0.9
    """

    learning_rate: float
    batch_power: float
    min_learning_rate: float
    max_learning_rate: float
    learning_rate_source: str
    weight_decay: float
    weight_decay_source: str
    momentum: float = 0.0


_ADAMW_RATE = dict(
    learning_rate=3e-5,
    batch_power=0.5,
    min_learning_rate=1e-5,
    max_learning_rate=1e-4,
)

DEFAULTS = types.MappingProxyType({
    "adamw": Defaults(
        **_ADAMW_RATE,
        learning_rate_source="3e-5 is the BERT recipe's (Devlin et al. 2019)",
        weight_decay=0.01,
        weight_decay_source="BERT recipe",
    ),
    "adam": Defaults(
        **_ADAMW_RATE,
        learning_rate_source="3e-5 is the BERT recipe's (Devlin et al. 2019)",
        weight_decay=0.0,
        weight_decay_source=(
            "plain Adam decays nothing; --optimizer=adamw adds decoupled decay"
        ),
    ),
    # RMSprop divides each gradient entry by its running RMS, as Adam does
    # (Adam is RMSprop plus momentum and bias correction, Kingma & Ba 2015),
    # so its steps have Adam's size and it takes AdamW's rate and decay.
    "rmsprop": Defaults(
        **_ADAMW_RATE,
        learning_rate_source=(
            "AdamW's rule, as RMSprop normalizes each entry by its RMS like "
            "Adam (Kingma & Ba 2015)"
        ),
        weight_decay=0.01,
        weight_decay_source="AdamW's, as the rate is AdamW's",
        momentum=0.0,
    ),
    # LAMB's per-layer trust ratio makes the rate a step relative to each
    # layer's weight norm. You et al. 2019 train BERT at 5/(2^3 x 10^3) =
    # 6.25e-4 for a batch of 512, about 4x Adam's 1e-4 at 256 scaled by
    # sqrt(2), and scale it with the square root of the batch up to 5e-3
    # at 32k.
    "lamb": Defaults(
        learning_rate=1.2e-4,
        batch_power=0.5,
        min_learning_rate=4e-5,
        max_learning_rate=5e-3,
        learning_rate_source=(
            "4x AdamW's, as LAMB trains BERT at ~4x Adam's rate, and 5e-3 "
            "at 32k (You et al. 2019)"
        ),
        weight_decay=0.01,
        weight_decay_source="LAMB's BERT setting (You et al. 2019)",
    ),
    # No BERT recipe uses SGD. Keras' default rate 1e-2 with momentum 0.9
    # moves a weight 10 x 1e-2 x |g| per update; with the gradient's global
    # norm clipped to 1 over ~2e7 weights, |g| ~ 2e-4, so ~2e-5: AdamW's
    # step size at 3e-5. SGD's rate scales linearly with the batch (Goyal et
    # al. 2017), and its decay is the usual 1e-4 of SGD recipes (ibid.):
    # Keras multiplies decay by the rate, so 0.01 would shrink weights 300x
    # faster than under AdamW.
    "sgd": Defaults(
        learning_rate=1e-2,
        batch_power=1.0,
        min_learning_rate=1e-3,
        max_learning_rate=1e-1,
        learning_rate_source=(
            "1e-2 is Keras' SGD rate: with momentum 0.9 and clip norm 1 it "
            "steps like AdamW at 3e-5 (scaling: Goyal et al. 2017)"
        ),
        weight_decay=1e-4,
        weight_decay_source="the usual SGD decay (Goyal et al. 2017)",
        momentum=0.9,
    ),
    # Keras' Adagrad starts its accumulator at 0.1: while the summed squared
    # gradients stay below that (they do in fine-tuning), it steps like SGD
    # at rate / sqrt(0.1). 5e-2, TF Estimator's Adagrad default, then steps
    # like SGD at 0.16, close to SGD with momentum above (10 x 1e-2).
    "adagrad": Defaults(
        learning_rate=5e-2,
        batch_power=0.5,
        min_learning_rate=2e-2,
        max_learning_rate=2e-1,
        learning_rate_source=(
            "5e-2 is TF Estimator's Adagrad rate: with Keras' initial "
            "accumulator 0.1 it steps like SGD with momentum at 1e-2"
        ),
        weight_decay=1e-4,
        weight_decay_source="SGD's, as Adagrad steps like SGD here",
    ),
    # Keras' Adafactor multiplies the rate by each weight's RMS (~0.04 in
    # BERT), so 1e-3, T5's fine-tuning rate (Raffel et al. 2020), steps
    # ~4e-5 per update like AdamW at 3e-5.
    "adafactor": Defaults(
        learning_rate=1e-3,
        batch_power=0.5,
        min_learning_rate=3e-4,
        max_learning_rate=3e-3,
        learning_rate_source=(
            "1e-3 is T5's fine-tuning rate (Raffel et al. 2020), which "
            "Adafactor scales by each weight's RMS"
        ),
        weight_decay=0.0,
        weight_decay_source="T5 fine-tunes with Adafactor without decay",
    ),
})


@keras.saving.register_keras_serializable(package="painless_tf")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak_learning_rate`, then linear decay to zero.

    The optimizer evaluates the schedule at `iterations` before the update,
    so update `i` (counting from 0) uses `peak * (i + 1) / warmup_steps`
    during warmup (the first update is not wasted at zero) and
    `peak * (total_steps - i) / (total_steps - warmup_steps)` after it.

    Args:
        peak_learning_rate: float. The learning rate at the end of warmup.
        warmup_steps: int. Updates of linear warmup (may be 0).
        total_steps: int. Updates in the whole run.

    Examples:
    >>> schedule = WarmupLinearDecay(1.0, warmup_steps=2, total_steps=6)
    >>> [round(float(schedule(i)), 3) for i in range(6)]
    [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    """

    def __init__(self, peak_learning_rate, warmup_steps, total_steps):
        if not 0 <= warmup_steps <= total_steps or total_steps < 1:
            raise ValueError(
                "`warmup_steps` must be in [0, total_steps] and `total_steps` "
                f">= 1. Received: warmup_steps={warmup_steps}, "
                f"total_steps={total_steps}"
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        # Lowered by NaN rollbacks (checkpointing.py) and checkpointed.
        self.multiplier = tf.Variable(
            1.0, trainable=False, name="learning_rate_multiplier"
        )

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = self.peak_learning_rate * (step + 1.0) / max(
            self.warmup_steps, 1
        )
        decay = self.peak_learning_rate * keras.ops.maximum(
            0.0, (self.total_steps - step)
        ) / max(self.total_steps - self.warmup_steps, 1)
        rate = keras.ops.where(step < self.warmup_steps, warmup, decay)
        return rate * keras.ops.cast(self.multiplier, "float32")

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
        }


@keras.saving.register_keras_serializable(package="painless_tf")
class Lamb(keras.optimizers.Optimizer):
    """LAMB with biases and LayerNorm parameters excluded from the trust ratio.

    The layer-wise step of You et al. 2019: Adam's update `r`, scaled per
    variable by the trust ratio `||w|| / ||r||`. As in their BERT code, the
    variables named by `exclude_from_layer_adaptation` take Adam's update
    without the ratio. Keras' own `Lamb` (3.15) applies the ratio to every
    variable, so a bias that starts at zero (the classifier head's) gets
    steps of `learning_rate * ||b||` and can never grow.

    Args:
        learning_rate: float or LearningRateSchedule. The rate.
        beta_1: float. Decay of the first-moment estimate.
        beta_2: float. Decay of the second-moment estimate.
        epsilon: float. Added to the root of the second moment.
        exclude_from_layer_adaptation: tuple[str, ...]. Regular expressions;
            variables whose name matches one take no trust ratio.
        **kwargs: `keras.optimizers.Optimizer` arguments (`weight_decay`,
            `global_clipnorm`, `name`, ...).

    Examples:
    >>> w = keras.Variable([[1.0, 2.0]], name="kernel")
    >>> b = keras.Variable([0.0, 0.0], name="bias")
    >>> optimizer = Lamb(learning_rate=0.1)
    >>> optimizer.apply([ops.ones((1, 2)), ops.ones((2,))], [w, b])
    >>> [round(float(x), 3) for x in b.numpy()]
    [-0.1, -0.1]
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        exclude_from_layer_adaptation=NO_DECAY_NAMES,
        **kwargs,
    ):
        kwargs.setdefault("name", "lamb")
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.exclude_from_layer_adaptation = tuple(
            exclude_from_layer_adaptation or ()
        )
        self._no_adaptation = (
            re.compile("|".join(self.exclude_from_layer_adaptation))
            if self.exclude_from_layer_adaptation
            else None
        )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype),
                                 local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype),
                                 local_step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, (gradient - m) * (1 - self.beta_1))
        self.assign_add(v, (ops.square(gradient) - v) * (1 - self.beta_2))
        update = (m / (1.0 - beta_1_power)) / (
            ops.sqrt(v / (1.0 - beta_2_power)) + self.epsilon
        )
        if self._no_adaptation is not None and self._no_adaptation.search(
            variable.name
        ):
            self.assign_sub(variable, lr * update)
            return
        w_norm = ops.sqrt(ops.sum(ops.square(variable)))
        r_norm = ops.sqrt(ops.sum(ops.square(update)))
        # A zero weight (or update) has no scale to trust: ratio 1.
        ratio = ops.where(
            ops.logical_and(w_norm > 0, r_norm > 0),
            w_norm / ops.maximum(r_norm, 1e-30),
            1.0,
        )
        self.assign_sub(variable, ratio * lr * update)

    def get_config(self):
        config = super().get_config()
        config.update(
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            exclude_from_layer_adaptation=list(
                self.exclude_from_layer_adaptation
            ),
        )
        return config


class _RateMultipliers:
    """Scales each variable's step and weight decay by its own factor.

    Mixed in before a Keras optimizer class (`make_optimizer` does it); the
    factors are `{variable path: float}` (`layer_decay.multipliers`), and a
    variable not named keeps the factor 1. The factor multiplies the
    learning rate the optimizer hands `update_step` and the rate of its
    decoupled weight decay, as separate parameter groups with their own
    rates do in PyTorch. It is a Python constant of the traced update.
    """

    def __init__(self, *args, rate_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rate_multipliers = dict(rate_multipliers or {})
        self._factor_by_key = {}

    def build(self, var_list):
        super().build(var_list)
        self._factor_by_key.update({
            self._var_key(variable): float(
                self.rate_multipliers.get(variable.path, 1.0))
            for variable in var_list
        })

    def _factor(self, variable):
        return self._factor_by_key.get(self._var_key(variable), 1.0)

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factor(variable)
        if factor != 1.0:
            learning_rate = ops.cast(learning_rate, variable.dtype) * factor
        return super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        # TensorFlow's `TFOptimizer._apply_weight_decay` with the factor.
        if self.weight_decay is None:
            return

        def apply(distribution, variables):
            for variable in variables:
                factor = self._factor(variable)

                def decay(target, factor=factor):
                    if self._use_weight_decay(target):
                        rate = tf.cast(self.learning_rate, target.dtype)
                        target.assign_sub(
                            target * tf.cast(self.weight_decay, target.dtype)
                            * rate * factor)

                if isinstance(variable, keras.Variable):
                    variable = variable.value
                distribution.extended.update(variable, decay, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            apply, self._distribution_strategy, variables)

    def get_config(self):
        return {**super().get_config(),
                "rate_multipliers": dict(self.rate_multipliers)}


_WITH_MULTIPLIERS = {}


def _with_multipliers(cls):
    """`cls` with `_RateMultipliers` mixed in (one class per optimizer)."""
    if cls not in _WITH_MULTIPLIERS:
        _WITH_MULTIPLIERS[cls] = type(
            cls.__name__, (_RateMultipliers, cls),
            {"__doc__": f"{cls.__name__} with per-variable rate factors."})
    return _WITH_MULTIPLIERS[cls]


def make_optimizer(
    name="adamw",
    *,
    learning_rate,
    warmup_steps=0,
    total_steps=1,
    weight_decay=None,
    clip_norm=1.0,
    momentum=None,
    nesterov=False,
    rate_multipliers=None,
    ema_momentum=None,
):
    """Creates a Keras optimizer with the schedule, decay and clipping.

    Create it under the strategy's scope: its slots are then mirrored like
    the weights. Hyperparameters other than those below keep the values
    the BERT recipe and the papers use (Adam-family epsilon 1e-6) or Keras'
    defaults (Adagrad's initial accumulator 0.1, Adafactor's relative step
    and update clipping).

    Args:
        name: str or keras.optimizers.Optimizer. One of `OPTIMIZERS`; an
            optimizer instance is returned as it is (its own schedule, decay
            and clipping win).
        learning_rate: float or LearningRateSchedule. Peak learning rate of
            a `WarmupLinearDecay`, or a schedule to use as it is.
        warmup_steps: int. Updates of linear warmup.
        total_steps: int. Updates in the whole run (decay ends at zero).
        weight_decay: float or None. Decoupled weight decay (Keras
            subtracts `learning_rate * weight_decay * w` per update), not
            applied to biases or LayerNorm parameters; None takes
            `DEFAULTS[name].weight_decay`.
        clip_norm: float or None. Global-norm clipping of the accumulated
            gradient.
        momentum: float or None. For `sgd` and `rmsprop` (other optimizers
            accept only 0); None takes `DEFAULTS[name].momentum` (0.9 for
            SGD, 0 for RMSprop).
        nesterov: bool. Nesterov momentum, for `sgd` only.
        rate_multipliers: dict or None. `{variable path: factor}` of the
            learning rate and weight decay per variable
            (`layer_decay.multipliers`); None or {} leaves every rate as
            it is.
        ema_momentum: float or None. Keep an exponential moving average of
            the weights with this momentum (Keras' `use_ema`, see
            `painless_tf.ema`); None keeps none.

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        ValueError: for an unknown name, or `momentum`/`nesterov` given to
            an optimizer that does not use them.

    Examples:
    >>> optimizer = make_optimizer("adamw", learning_rate=3e-5,
    ...                            warmup_steps=10, total_steps=100)
    >>> type(optimizer).__name__
    'AdamW'
    >>> sgd = make_optimizer("sgd", learning_rate=1e-2, nesterov=True)
    >>> sgd.momentum, sgd.nesterov, sgd.weight_decay
    (0.9, True, 0.0001)
    """
    if isinstance(name, keras.optimizers.Optimizer):
        return name
    if name not in OPTIMIZERS:
        raise ValueError(
            f"`optimizer` must be one of {', '.join(OPTIMIZERS)} or a "
            f"keras.optimizers.Optimizer. Received: optimizer={name!r}"
        )
    defaults = DEFAULTS[name]
    # 0 is accepted everywhere, so a plan's momentum can always be passed.
    if momentum and name not in ("sgd", "rmsprop"):
        raise ValueError(
            f"`momentum` is used only by sgd and rmsprop, not {name}. "
            f"Received: momentum={momentum!r}. Drop it or pass "
            "optimizer='sgd'."
        )
    momentum = defaults.momentum if momentum is None else float(momentum)
    if not 0 <= momentum < 1:
        raise ValueError(
            f"`momentum` must be in [0, 1). Received: momentum={momentum!r}"
        )
    if nesterov and (name != "sgd" or momentum == 0):
        raise ValueError(
            "`nesterov` needs optimizer='sgd' with momentum > 0. Received: "
            f"optimizer={name!r}, momentum={momentum!r}"
        )
    if weight_decay is None:
        weight_decay = defaults.weight_decay
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        schedule = learning_rate
    else:
        schedule = WarmupLinearDecay(learning_rate, warmup_steps, total_steps)
    common = dict(
        learning_rate=schedule,
        # None, not 0: Keras then skips the decay pass altogether.
        weight_decay=weight_decay or None,
        global_clipnorm=clip_norm or None,
    )
    if ema_momentum is not None:
        common.update(use_ema=True, ema_momentum=float(ema_momentum))
    classes = {
        "adamw": keras.optimizers.AdamW, "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
        "adafactor": keras.optimizers.Adafactor, "lamb": Lamb,
    }
    specific = {
        # AdamW refuses weight_decay=None.
        "adamw": {"weight_decay": float(weight_decay), "epsilon": 1e-6},
        "adam": {"epsilon": 1e-6},
        "sgd": {"momentum": momentum, "nesterov": bool(nesterov)},
        "rmsprop": {"momentum": momentum},
        "lamb": {"epsilon": 1e-6},
    }.get(name, {})
    cls = classes[name]
    if rate_multipliers:
        cls = _with_multipliers(cls)
        specific = {**specific, "rate_multipliers": rate_multipliers}
    optimizer = cls(**{**common, **specific})
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return optimizer
