"""The learning-rate range test behind `--learning_rate=auto`.

The range test (Smith 2017, "Cyclical Learning Rates"; fastai's and
Lightning's `lr_find`) trains the real model with the real plan (optimizer,
global batch, accumulation, precision, clipping, weight decay, trainable
layers) and the real training data for `num_steps` updates while the rate
grows exponentially from `min_learning_rate` to `max_learning_rate`, records
each update's training loss, smooths it and reads a rate off the curve.

Probe. After each update the loss of `probe_batches` fixed batches (the
training batches that follow the sweep's in the epoch-0 order) is measured
in inference mode, no dropout, the way davidtvs/pytorch-lr-finder's
`val_loader` does. The training loss of each update is the loss of a new
batch: on MiniLM-L6 and Rotten Tomatoes its batch-to-batch noise (about
0.02-0.04) is as large as the whole fall of a 32-update sweep (0.05-0.1),
so where the curve reads lowest followed the seed (`docs/benchmarks.md`,
"LR range test: a reading that does not follow the seed"). The probe's
batches do not change, so its curve moves only with the model.

Reading. `lr_curve.choose_learning_rate` reads the rate off the curve:
by default a tenth of the rate at which the probe loss first climbs 25%
above its lowest value so far (the "edge/10" rule; `lr_curve` says why and
lists the others).

Bounds. The sweep starts at a tenth of the optimizer's recipe range and
ends 100x above it (`optimization.DEFAULTS`; for AdamW 1e-6 to 1e-2, so
that the edge of stability falls inside it), and the choice is clamped
into the recipe range itself (AdamW: [1e-5, 1e-4], which holds the rates
BERT fine-tuning uses, 2e-5 to 5e-5 in Devlin et al. 2019). The reason says
when the clamp acted. Head-only training (`--trainable_layers=0`) is a
linear probe on frozen features: no pretrained weight moves, so the
caution of the fine-tuning range does not apply, and both the sweep and the
clamp move up 10x at the low end and 100x at the high end (AdamW: sweep
1e-5 to 1e-1, clamp [1e-4, 1e-2]). Measured on MiniLM-L6 and Rotten
Tomatoes, the fine-tuning clamp left the head at 3e-5 and 61% test accuracy
after 3 epochs.

Cost and placement. Up to `num_steps` updates (32 by default: 1,024
examples at a global batch of 32; the sweep ends at the edge) on a fresh
copy of the model, each followed by the probe's forward passes (64
examples), plus its load and the traces. It runs on one device, whatever
the plan's strategy, accumulating
`num_replicas x accumulation_steps` micro-batches per update: the engine's
update is exact, so this is the update every replica would make together,
and each worker of a multi-worker job can run it alone and reach the same
rate without talking to the others.

Determinism. The model's head and dropout are seeded with the plan's seed
and the batches are the first of the plan's epoch-0 order, so the same seed,
data and hardware give the same curve and the same rate.
"""

import dataclasses
import math
import os

import keras
import numpy as np
from absl import logging

from painless_tf import distribution
from painless_tf import lr_curve
from painless_tf import optimization
from painless_tf import pipeline
from painless_tf import precision
from painless_tf import trainers


@dataclasses.dataclass(frozen=True)
class RangeTestOptions:
    """How the range test sweeps and chooses.

    Args:
        num_steps: int. Optimizer updates in the sweep, each on one global
            batch.
        min_learning_rate: float | None. First rate; None: a tenth of the
            optimizer's lowest recipe rate (1e-6 for AdamW).
        max_learning_rate: float | None. Last rate; None: ten times the
            optimizer's highest recipe rate (1e-3 for AdamW).
        rule: str. "edge/10", "min/10" or "steepest" (see the module
            docstring).
        smoothing_window: int. Updates in the centered moving average (odd)
            of the training loss; the probe curve is read unsmoothed.
        divergence_factor: float. The sweep stops once the loss is not
            finite, or the trailing median of `smoothing_window` losses
            exceeds this multiple of its lowest value so far (`diverged`).
        min_drop: float. Relative fall of the smoothed loss below which the
            curve is read as no signal (min/10 and steepest).
        probe_batches: int. Fixed batches whose loss is measured after each
            update; 0: the curve is the training loss.
        edge_rise: float. The relative climb of the probe loss above its
            lowest value so far that marks the edge; the sweep ends there.

    Examples:
    >>> RangeTestOptions(num_steps=16).rule
    'edge/10'
    """

    num_steps: int = 32  # updates; 1,024 examples at a global batch of 32
    min_learning_rate: float | None = None  # None: from the optimizer
    max_learning_rate: float | None = None  # None: from the optimizer
    rule: str = "edge/10"
    smoothing_window: int = 5  # updates
    divergence_factor: float = 4.0  # x the lowest trailing median so far
    min_drop: float = 0.02  # of the smoothed loss at the sweep's start
    probe_batches: int = 2  # 64 examples at a global batch of 32
    edge_rise: float = 0.25  # above the probe loss's lowest value so far

    def __post_init__(self):
        if isinstance(self.num_steps, bool) or not (
            isinstance(self.num_steps, int) and self.num_steps >= 3
        ):
            raise ValueError(
                f"`num_steps` must be an integer >= 3. Received: "
                f"num_steps={self.num_steps!r}. Pass e.g. num_steps=24."
            )
        low, high = self.min_learning_rate, self.max_learning_rate
        for name, value in (("min_learning_rate", low),
                            ("max_learning_rate", high)):
            if value is not None and not (
                math.isfinite(value) and value > 0
            ):
                raise ValueError(
                    f"`{name}` must be a positive number or None. Received: "
                    f"{name}={value!r}"
                )
        if low is not None and high is not None and not low < high:
            raise ValueError(
                "`min_learning_rate` must be below `max_learning_rate`. "
                f"Received: {low!r} and {high!r}"
            )
        lr_curve.check_reading(self.rule, self.smoothing_window,
                               self.edge_rise)
        if not self.divergence_factor > 1:
            raise ValueError(
                "`divergence_factor` must be > 1. Received: "
                f"divergence_factor={self.divergence_factor!r}"
            )
        if not 0 <= self.min_drop < 1:
            raise ValueError(
                "`min_drop` must be in [0, 1). Received: "
                f"min_drop={self.min_drop!r}"
            )
        if isinstance(self.probe_batches, bool) or not (
            isinstance(self.probe_batches, int) and self.probe_batches >= 0
        ):
            raise ValueError(
                "`probe_batches` must be an integer >= 0. Received: "
                f"probe_batches={self.probe_batches!r}"
            )
        if self.rule == "edge/10" and not self.probe_batches:
            raise ValueError(
                "The edge/10 rule reads the probe's loss: pass "
                "probe_batches >= 1, or rule='min/10'."
            )


def recipe_bounds(plan) -> tuple[float, float]:
    """The range the chosen rate is clamped into, for `plan`.

    The optimizer's recipe range (`optimization.DEFAULTS`), or for a head
    trained alone on a frozen encoder the linear-probe range above it (see
    the module docstring).

    Examples:
    >>> import types
    >>> recipe_bounds(types.SimpleNamespace(optimizer="adamw",
    ...                                     trainable_layers="all"))
    (1e-05, 0.0001)
    >>> recipe_bounds(types.SimpleNamespace(optimizer="adamw",
    ...                                     trainable_layers=0))
    (0.0001, 0.01)
    """
    defaults = optimization.DEFAULTS[plan.optimizer]
    low, high = defaults.min_learning_rate, defaults.max_learning_rate
    if getattr(plan, "trainable_layers", "all") == 0:
        return (low * 10, high * 100)
    return (low, high)


class ExponentialRamp(keras.optimizers.schedules.LearningRateSchedule):
    """The sweep's schedule: `min * (max / min) ** (step / (num_steps - 1))`.

    Args:
        min_learning_rate: float. Rate of update 0.
        max_learning_rate: float. Rate of update `num_steps - 1`.
        num_steps: int. Updates in the sweep.

    Examples:
    >>> ramp = ExponentialRamp(1e-6, 1e-3, 4)
    >>> f"{float(ramp(2)):.0e}"
    '1e-04'
    """

    def __init__(self, min_learning_rate, max_learning_rate, num_steps):
        self.min_learning_rate = float(min_learning_rate)
        self.max_learning_rate = float(max_learning_rate)
        self.num_steps = int(num_steps)

    def __call__(self, step):
        fraction = keras.ops.cast(step, "float32") / max(self.num_steps - 1, 1)
        ratio = self.max_learning_rate / self.min_learning_rate
        return self.min_learning_rate * keras.ops.power(ratio, fraction)

    def get_config(self):
        return {
            "min_learning_rate": self.min_learning_rate,
            "max_learning_rate": self.max_learning_rate,
            "num_steps": self.num_steps,
        }


def range_test(
    model: keras.Model,
    batches,
    *,
    options: RangeTestOptions = RangeTestOptions(),
    optimizer: str = "adamw",
    weight_decay: float | None = None,
    clip_norm: float | None = 1.0,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulation_steps: int = 1,
    xla: bool = False,
    fused_update: bool | str = "auto",
    task: str = "classification",
    layer_decay: float = 1.0,
    probe=(),
) -> tuple:
    """Trains `model` with an exponentially growing rate, then undoes it.

    Every variable of `model` (weights and dropout seed states) is restored
    afterwards, so the model can go on to be trained as if untouched.

    Args:
        model: keras.Model. The classifier, with its trainable layers set.
        batches: Iterable of `(x, y, sample_weight)` global batches, e.g. a
            `pipeline.make_dataset` dataset; `options.num_steps` are used.
        options: RangeTestOptions. `min_learning_rate` and
            `max_learning_rate` must be set.
        optimizer: str. One of `optimization.OPTIMIZERS`.
        weight_decay: float | None. As in `optimization.make_optimizer`.
        clip_norm: float | None. Global gradient-norm clipping.
        momentum: float | None. For sgd and rmsprop.
        nesterov: bool. For sgd.
        accumulation_steps: int. Micro-batches per update.
        xla: bool. XLA-compile the micro-step.
        fused_update: bool or "auto". As in `engine.Trainer`.
        task: str. The run's task: its loss (`heads.loss_for`).
        layer_decay: float. The run's layer-wise rate decay: the swept
            rate is the head's, and lower layers take their share of it,
            as in training (`layer_decay.multipliers`).
        probe: Sequence of `(x, y, sample_weight)` batches whose weighted
            mean loss is measured in inference mode after each update; the
            sweep then ends where it climbs `options.edge_rise` above its
            lowest value so far.

    Returns:
        `(learning_rates, losses, probe_losses)`: lists with one entry per
        update made (fewer than `num_steps` when the loss diverged or the
        edge was found); `probe_losses` is empty without a probe.

    Examples:
    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> x = np.ones((4, 2), "float32"); y = np.zeros((4,), "int32")
    >>> data = [(x, y, np.ones((4,), "float32"))] * 3
    >>> rates, losses, probed = range_test(model, data, optimizer="sgd",
    ...     options=RangeTestOptions(num_steps=3, min_learning_rate=0.1,
    ...                              max_learning_rate=1.0), probe=data[:1])
    >>> len(losses), len(probed)
    (3, 3)
    """
    if options.min_learning_rate is None or options.max_learning_rate is None:
        raise ValueError(
            "`range_test` needs `options.min_learning_rate` and "
            "`options.max_learning_rate`; `find_learning_rate` fills them in "
            "from the optimizer."
        )
    saved = [np.array(v.numpy()) for v in model.variables]
    schedule = ExponentialRamp(
        options.min_learning_rate, options.max_learning_rate, options.num_steps
    )
    extra = {}
    if optimizer in ("sgd", "rmsprop"):
        extra["momentum"] = momentum
    if optimizer == "sgd":
        extra["nesterov"] = nesterov
    # Built as the run builds its trainer: the range test times and steps
    # the update the run will make.
    trainer = trainers.make_trainer(
        model, learning_rate=schedule, optimizer=optimizer,
        weight_decay=weight_decay, clip_norm=clip_norm,
        accumulation_steps=accumulation_steps, xla=xla,
        fused_update=fused_update, task=task, layer_decay=layer_decay,
        **extra,
    )
    rates, losses, probed = [], [], []
    try:
        for step, (x, y, w) in enumerate(batches):
            if step == options.num_steps:
                break
            # Read before the update: a loss-scaled float16 update that is
            # skipped does not advance the rate.
            rates.append(float(schedule(trainer.optimizer.iterations)))
            trainer.train_on_batch(x, y, sample_weight=w)
            losses.append(_tracked_loss(trainer))
            if probe:
                probed.append(_probe_loss(trainer, probe))
                if lr_curve.past_the_edge(probed, edge_rise=options.edge_rise):
                    break
            if lr_curve.diverged(losses, factor=options.divergence_factor,
                        window=options.smoothing_window):
                break
    finally:
        for variable, value in zip(model.variables, saved):
            variable.assign(value)
    return rates, losses, probed


def _tracked_loss(trainer):
    """The loss the trainer's last call tracked; inf when not finite.

    The engine leaves a non-finite loss out of its mean: a mean of nothing
    then reads 0, so a zero count is the divergence."""
    tracker = distribution.loss_tracker(trainer)
    loss = float(tracker.result().numpy())
    if not float(tracker.count.numpy()) or not math.isfinite(loss):
        return math.inf
    return loss


def _probe_loss(trainer, probe):
    """The probe batches' loss, weighted by their examples' weights."""
    total = weight = 0.0
    for x, y, w in probe:
        trainer.test_on_batch(x, y, sample_weight=w)
        loss = _tracked_loss(trainer)
        if not math.isfinite(loss):
            return math.inf
        share = float(distribution.loss_tracker(trainer).count.numpy())
        total += loss * share
        weight += share
    return total / weight if weight else math.inf


def find_learning_rate(
    plan,
    *,
    make_classifier,
    train: pipeline.TokenizedExamples,
    options: RangeTestOptions = RangeTestOptions(),
    output_dir: str | None = None,
) -> lr_curve.RangeTestResult:
    """Runs the range test for `plan` and chooses its peak learning rate.

    Sets the plan's dtype policy and seed (restoring the previous policy),
    builds a fresh classifier, sweeps on the first training batches of the
    plan's epoch-0 order with the `options.probe_batches` after them as the
    probe, and writes `lr_range_test.png` into `output_dir`.

    Args:
        plan: plan.Plan. The run's plan; its `learning_rate` (the recipe's)
            is kept when the curve shows no signal.
        make_classifier: callable `() -> keras.Model`. Builds the classifier
            as the run will train it (trainable layers set).
        train: pipeline.TokenizedExamples. The tokenized training split.
        options: RangeTestOptions. Sweep and rule.
        output_dir: str | None. Where the plot goes; None: no plot.

    Returns:
        A `RangeTestResult`; `to_dict()` goes into `plan.json`.

    Examples:
    >>> import tempfile, keras_hub, numpy as np
    >>> from painless_tf import hardware, plan as plan_lib
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    >>> tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab)
    >>> def make_classifier():
    ...     backbone = keras_hub.models.BertBackbone(vocabulary_size=7,
    ...         num_layers=1, num_heads=1, hidden_dim=4, intermediate_dim=8,
    ...         max_sequence_length=8)
    ...     return keras_hub.models.BertTextClassifier(backbone,
    ...         num_classes=2, preprocessor=None)
    >>> train = pipeline.tokenize(["good"] * 8 + ["bad"] * 8, tokenizer,
    ...     labels=[1] * 8 + [0] * 8, max_sequence_length=8)
    >>> plan = plan_lib.make_plan(environment=hardware.Environment(),
    ...     num_train_examples=16, global_batch_size=8, precision="float32",
    ...     xla=False, max_sequence_length=8)
    >>> result = find_learning_rate(plan, make_classifier=make_classifier,
    ...     train=train, options=RangeTestOptions(num_steps=4))
    >>> 1e-5 <= result.learning_rate <= 1e-4
    True
    """
    bounds = recipe_bounds(plan)
    options = dataclasses.replace(
        options,
        min_learning_rate=options.min_learning_rate or bounds[0] / 10,
        max_learning_rate=options.max_learning_rate or bounds[1] * 100,
    )
    previous_policy = keras.mixed_precision.global_policy()
    precision.set_policy(plan.precision)
    try:
        keras.utils.set_random_seed(plan.seed)
        classifier = make_classifier()
        batches = pipeline.make_dataset(
            train,
            global_batch_size=plan.global_batch_size,
            # A plan without buckets pads every batch to its longest.
            buckets=plan.bucket_boundaries or (plan.max_sequence_length,),
            training=True,
            seed=plan.seed,
            epochs=math.ceil((options.num_steps + options.probe_batches)
                             / plan.steps_per_epoch),
        )
        # The probe: the batches that follow the sweep's (on a set of fewer
        # batches, repeats of the sweep's own).
        batches = list(batches.take(options.num_steps + options.probe_batches))
        probe = batches[options.num_steps:]
        rates, losses, probed = range_test(
            classifier,
            batches[:options.num_steps],
            options=options,
            optimizer=plan.optimizer,
            weight_decay=plan.weight_decay,
            clip_norm=plan.clip_norm,
            momentum=getattr(plan, "momentum", None),
            nesterov=getattr(plan, "nesterov", False),
            # One device makes the whole global batch's update (see the
            # module docstring).
            accumulation_steps=plan.accumulation_steps * plan.num_replicas,
            xla=plan.xla,
            fused_update=plan.fused_update,
            task=getattr(plan, "task", "classification"),
            layer_decay=getattr(plan, "layer_decay", 1.0),
            probe=probe,
        )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    result = lr_curve.choose_learning_rate(
        rates, losses, probe_losses=probed if probe else None,
        rule=options.rule, bounds=bounds,
        smoothing_window=options.smoothing_window,
        fallback=plan.learning_rate, min_drop=options.min_drop,
        edge_rise=options.edge_rise,
    )
    logging.info("learning rate %s: %s", _rate(result.learning_rate),
                 result.reason)
    if output_dir:
        lr_curve.plot(result, os.path.join(output_dir, lr_curve.PLOT_FILE))
    return result


def _rate(rate):
    return f"{rate:.1e}"
