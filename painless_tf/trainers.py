"""The one way a compiled `engine.Trainer` is built.

The run and every probe that times or tries an update (the CPU precision
probe, the micro-batch memory probe, the LR range test) build their trainer
here, so that a probe measures the update the run will make: the same
optimizer with its slots, decay, clipping, accumulation, XLA and fused
update.

    trainer = trainers.make_trainer(classifier, learning_rate=2e-5)
    trainer = trainers.for_plan(classifier, plan, learning_rate=schedule)
"""

from painless_tf import ema
from painless_tf import engine
from painless_tf import heads
from painless_tf import layer_decay as layer_decay_lib
from painless_tf import optimization


def make_trainer(
    model,
    *,
    learning_rate,
    optimizer="adamw",
    weight_decay=None,
    clip_norm=1.0,
    momentum=None,
    nesterov=False,
    accumulation_steps=1,
    xla=False,
    fused_update="auto",
    metrics=None,
    task="classification",
    layer_decay=1.0,
    loss=None,
    ema_momentum=None,
):
    """A compiled `engine.Trainer` around `model`.

    Call it under the strategy's scope, as the trainer's slots are created
    there.

    Args:
        model: keras.Model. The classifier.
        learning_rate: float or LearningRateSchedule. As in
            `optimization.make_optimizer`.
        optimizer: str. One of `optimization.OPTIMIZERS`.
        weight_decay: float or None. None takes the optimizer's default.
        clip_norm: float or None. Global-norm clipping of the update.
        momentum: float or None. For sgd and rmsprop; None takes the
            optimizer's default.
        nesterov: bool. For sgd.
        accumulation_steps: int. Micro-batches per replica per update.
        xla: bool. XLA-compile the micro-step.
        fused_update: bool or "auto". As in `engine.Trainer`.
        metrics: list of keras.metrics.Metric or None. Weighted metrics.
        task: str. "classification", "multi_label" or "regression": the
            per-example loss (`heads.loss_for`).
        layer_decay: float or None. Layer-wise learning-rate decay
            (`layer_decay.multipliers`); 1 or None: one rate for all.
        loss: per-example loss or None. None takes the task's; a student
            passes `distillation.distillation_loss(...)`.
        ema_momentum: float or None. A moving average of the weights
            (`painless_tf.ema`); None keeps none.

    Returns:
        The compiled `engine.Trainer`.

    Examples:
    >>> import keras, numpy as np
    >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> trainer = make_trainer(inner, learning_rate=1e-3,
    ...                        accumulation_steps=2)
    >>> type(trainer.optimizer).__name__, trainer.accumulation_steps
    ('AdamW', 2)
    """
    trainer = engine.Trainer(
        model,
        accumulation_steps=accumulation_steps,
        xla=xla,
        fused_update=fused_update,
    )
    trainer.compile(
        optimizer=optimization.make_optimizer(
            optimizer,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            clip_norm=clip_norm,
            momentum=momentum,
            nesterov=nesterov,
            rate_multipliers=(
                layer_decay_lib.multipliers(model, layer_decay)
                if layer_decay not in (None, 1, 1.0) else None),
            ema_momentum=ema_momentum,
        ),
        loss=loss or heads.loss_for(task),
        weighted_metrics=list(metrics) if metrics else None,
    )
    return trainer


def for_plan(model, plan, *, learning_rate, accumulation_steps=None,
             metrics=None, loss=None):
    """`make_trainer` with the plan's update: its task's loss, optimizer,
    decay, layer-wise rates, clipping, momentum, accumulation, XLA, fused
    update and moving average of the weights.

    Args:
        model: keras.Model. The classifier.
        plan: plan.Plan. The run's plan.
        learning_rate: float or LearningRateSchedule.
        accumulation_steps: int or None. None takes the plan's; the LR range
            test on one device passes the whole global batch's.
        metrics: list of keras.metrics.Metric or None.
        loss: per-example loss or None (the task's).
    """
    return make_trainer(
        model,
        learning_rate=learning_rate,
        optimizer=plan.optimizer,
        weight_decay=plan.weight_decay,
        clip_norm=plan.clip_norm,
        momentum=plan.momentum,
        nesterov=plan.nesterov,
        accumulation_steps=(plan.accumulation_steps
                            if accumulation_steps is None
                            else accumulation_steps),
        xla=plan.xla,
        fused_update=plan.fused_update,
        metrics=metrics,
        task=plan.task,
        layer_decay=plan.layer_decay,
        loss=loss,
        ema_momentum=(ema.momentum_for(plan.total_updates)
                      if getattr(plan, "weight_averaging", "none") == "ema"
                      else None),
    )
