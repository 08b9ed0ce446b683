"""Optimization: the optimizer, its learning-rate schedule and weight decay.

The default is the BERT fine-tuning recipe: AdamW, linear warmup then linear
decay to zero, weight decay 0.01 on weight matrices only (not on biases,
LayerNorm scales and offsets), and global-norm clipping at 1.0. Every count
is in optimizer updates (see `engine.py` for what a step is).
"""

import keras
import tensorflow as tf

# Variables whose names match these are not decayed: biases and LayerNorm's
# gamma/beta (the embeddings' LayerNorm included). Decaying them only pulls
# normalization towards zero, which the original BERT recipe avoids.
NO_DECAY_NAMES = ("bias", "gamma", "beta")

OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop", "adagrad", "adafactor", "lamb")


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


def make_optimizer(
    name="adamw",
    *,
    learning_rate,
    warmup_steps=0,
    total_steps=1,
    weight_decay=0.01,
    clip_norm=1.0,
    momentum=0.9,
    nesterov=False,
):
    """Creates a Keras optimizer with the schedule, decay and clipping.

    Create it under the strategy's scope: its slots are then mirrored like
    the weights.

    Args:
        name: str. One of `OPTIMIZERS`.
        learning_rate: float or LearningRateSchedule. Peak learning rate of
            a `WarmupLinearDecay`, or a schedule to use as it is.
        warmup_steps: int. Updates of linear warmup.
        total_steps: int. Updates in the whole run (decay ends at zero).
        weight_decay: float. Decoupled weight decay (AdamW, SGD, Lamb,
            Adafactor, RMSprop, Adagrad all take it in Keras 3), not applied
            to biases or LayerNorm parameters.
        clip_norm: float or None. Global-norm clipping of the accumulated
            gradient.
        momentum: float. For `sgd` and `rmsprop`.
        nesterov: bool. For `sgd`.

    Returns:
        A `keras.optimizers.Optimizer`.

    Examples:
    >>> optimizer = make_optimizer("adamw", learning_rate=3e-5,
    ...                            warmup_steps=10, total_steps=100)
    >>> type(optimizer).__name__
    'AdamW'
    """
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        schedule = learning_rate
    else:
        schedule = WarmupLinearDecay(learning_rate, warmup_steps, total_steps)
    common = dict(
        learning_rate=schedule,
        weight_decay=weight_decay or None,
        global_clipnorm=clip_norm or None,
    )
    if name == "adamw":
        optimizer = keras.optimizers.AdamW(
            **{**common, "weight_decay": weight_decay}, epsilon=1e-6
        )
    elif name == "adam":
        optimizer = keras.optimizers.Adam(**common, epsilon=1e-6)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(
            **common, momentum=momentum, nesterov=nesterov
        )
    elif name == "rmsprop":
        optimizer = keras.optimizers.RMSprop(**common, momentum=momentum)
    elif name == "adagrad":
        optimizer = keras.optimizers.Adagrad(**common)
    elif name == "adafactor":
        optimizer = keras.optimizers.Adafactor(**common)
    elif name == "lamb":
        optimizer = keras.optimizers.Lamb(**common, epsilon=1e-6)
    else:
        raise ValueError(
            f"`optimizer` must be one of {', '.join(OPTIMIZERS)}. "
            f"Received: optimizer={name!r}"
        )
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return optimizer
