"""Weight averaging: an exponential moving average (EMA) of the weights.

With `--weight_averaging=ema` the optimizer keeps, beside each trainable
weight, its moving average over the optimizer updates (Keras' `use_ema`):

    a_1 = w_1,    a_t = m * a_(t-1) + (1 - m) * w_t

where w_t is the weight after update t. One update is one optimizer update,
however many micro-batches and replicas it sums (`engine`), and an update
skipped as non-finite leaves the average as it is. The averages are
optimizer variables, so every checkpoint holds them: a resumed run's
average is an uninterrupted run's.

The momentum follows the run's length (`momentum_for`): the average's
horizon, 1 / (1 - m) updates, is a tenth of the run. At the end of
training, `keep_better` validates the average against the best checkpoint
and keeps the better one; metrics.json says which and why (Polyak
averaging; the EMA of timm, Lightning and Composer).

    trainer.compile(optimizer=make_optimizer(..., ema_momentum=m), ...)
    ...
    summary = ema.keep_better(trainer, criterion, best_value, evaluate)
"""

import numpy as np

from painless_tf import faults

# The horizon, 1 / (1 - m) updates, is this share of the run's updates,
# within the momentum bounds below (Keras' default momentum is 0.99).
HORIZON_SHARE = 0.1
MIN_MOMENTUM = 0.9
MAX_MOMENTUM = 0.9999


def momentum_for(total_updates):
    """The EMA momentum of a run of `total_updates` optimizer updates.

    Examples:
    >>> momentum_for(800)
    0.9875
    >>> momentum_for(20), momentum_for(10**7)
    (0.9, 0.9999)
    """
    horizon = HORIZON_SHARE * max(int(total_updates), 1)
    momentum = 1.0 - 1.0 / max(horizon, 1.0)
    return round(float(np.clip(momentum, MIN_MOMENTUM, MAX_MOMENTUM)), 6)


def averages(optimizer):
    """The optimizer's moving averages, in the order of the variables it
    was built with (a `LossScaleOptimizer`'s are its inner optimizer's)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not getattr(inner, "use_ema", False):
        raise ValueError(
            "the optimizer keeps no moving average of the weights: create "
            "it with `make_optimizer(..., ema_momentum=0.99)` "
            "(--weight_averaging=ema).")
    # Keras 3.15.1 keeps them in this attribute and offers no accessor.
    return list(inner._model_variables_moving_average)


def keep_better(trainer, criterion, best_value, evaluate):
    """Validates the moving average against the best checkpoint's value and
    leaves `trainer` holding the better weights; returns the metrics.json
    entries.

    Args:
        trainer: the compiled `engine.Trainer`, holding the best
            checkpoint's weights; its optimizer holds the averages of the
            run's last update.
        criterion: selection.Criterion (`monitor`, `better`).
        best_value: float. The best checkpoint's validation value.
        evaluate: `() -> float`, the validation metric of the trainer's
            current weights.

    Returns:
        dict: `ema_momentum`, `ema_value`, `ema_kept` (True when the
        average beat the best checkpoint) and `ema_reason`.
    """
    optimizer = trainer.optimizer
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    variables = list(trainer.trainable_variables)
    kept_values = [v.numpy() for v in variables]
    with trainer.distribute_strategy.scope():
        optimizer.finalize_variable_values(variables)
    faults.maybe_kill("ema")
    value = float(evaluate())
    kept = criterion.better(value, best_value)
    name = criterion.monitor
    if kept:
        reason = (f"the moving average (momentum {inner.ema_momentum:g}) "
                  f"has {name} {value:.4f}, better than the best "
                  f"checkpoint's {best_value:.4f}")
    else:
        for variable, saved in zip(variables, kept_values):
            variable.assign(saved)
        reason = (f"the moving average (momentum {inner.ema_momentum:g}) "
                  f"has {name} {value:.4f}, not better than the best "
                  f"checkpoint's {best_value:.4f}: the best one is kept")
    return {"ema_momentum": float(inner.ema_momentum), "ema_value": value,
            "ema_kept": bool(kept), "ema_reason": reason}
