"""The learning-rate range test behind `--learning_rate=auto`.

The range test (Smith 2017, "Cyclical Learning Rates"; fastai's and
Lightning's `lr_find`) trains the real model with the real plan (optimizer,
global batch, accumulation, precision, clipping, weight decay, trainable
layers) and the real training data for `num_steps` updates while the rate
grows exponentially from `min_learning_rate` to `max_learning_rate`, records
each update's training loss, smooths it and reads a rate off the curve.

Rule. The default, "min/10", takes a tenth of the rate at which the smoothed
loss is lowest: the lowest point is where larger steps stop paying, so a
tenth of it is an order of magnitude inside the stable region (fastai's
`lr_min` suggestion). "steepest" takes the rate at which the smoothed loss
falls fastest per unit of log rate (Lightning's suggestion). min/10 is the
default because it reads a level, not a slope: on a sweep of a few dozen
noisy updates, the slope is a difference of two noisy values and jumps from
one bump to the next, while the minimum of the smoothed curve moves little.

Smoothing. A centered moving average of `smoothing_window` updates. The
exponential average of fastai lags by beta / (1 - beta) updates, which on a
24-update sweep (the rate grows 1.35x per update) moves the minimum by a
factor of ~15 at beta 0.9; a centered window has no lag.

No signal. When the smoothed loss never falls `min_drop` (2%) below its
start, the curve says nothing about the rate (a head that cannot learn the
task in a few updates, or noise larger than the trend), and the recipe's
batch-scaled rate is kept instead.

Bounds. The sweep covers ten times the optimizer's recipe range each way
(`optimization.DEFAULTS`; for AdamW 1e-6 to 1e-3), and the choice is clamped
into the recipe range itself (AdamW: [1e-5, 1e-4], which holds the rates
BERT fine-tuning uses, 2e-5 to 5e-5 in Devlin et al. 2019). The reason says
when the clamp acted. Head-only training (`--trainable_layers=0`) is a
linear probe on frozen features: no pretrained weight moves, so the
caution of the fine-tuning range does not apply, and both the sweep and the
clamp move up 10x at the low end and 100x at the high end (AdamW: sweep
1e-5 to 1e-1, clamp [1e-4, 1e-2]). Measured on MiniLM-L6 and Rotten
Tomatoes, the fine-tuning clamp left the head at 3e-5 and 61% test accuracy
after 3 epochs.

Cost and placement. `num_steps` updates (24 by default: 768 examples at a
global batch of 32) on a fresh copy of the model, plus its load and one
trace. It runs on one device, whatever the plan's strategy, accumulating
`num_replicas x accumulation_steps` micro-batches per update: the engine's
update is exact, so this is the update every replica would make together,
and each worker of a multi-worker job can run it alone and reach the same
rate without talking to the others.

Determinism. The model's head and dropout are seeded with the plan's seed
and the batches are the first of the plan's epoch-0 order, so the same seed,
data and hardware give the same curve and the same rate.
"""

import dataclasses
import io
import math
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from matplotlib.figure import Figure

from painless_tf import distribution
from painless_tf import optimization
from painless_tf import pipeline
from painless_tf import precision
from painless_tf import trainers

RULES = ("min/10", "steepest")
PLOT_FILE = "lr_range_test.png"


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
        rule: str. "min/10" or "steepest" (see the module docstring).
        smoothing_window: int. Updates in the centered moving average (odd).
        divergence_factor: float. The sweep stops once the loss is not
            finite, or the trailing median of `smoothing_window` losses
            exceeds this multiple of its lowest value so far (`diverged`).
        min_drop: float. Relative fall of the smoothed loss below which the
            curve is read as no signal.

    Examples:
    >>> RangeTestOptions(num_steps=16).rule
    'min/10'
    """

    num_steps: int = 24  # updates; 768 examples at a global batch of 32
    min_learning_rate: float | None = None  # None: from the optimizer
    max_learning_rate: float | None = None  # None: from the optimizer
    rule: str = "min/10"
    smoothing_window: int = 5  # updates
    divergence_factor: float = 4.0  # x the lowest trailing median so far
    min_drop: float = 0.02  # of the smoothed loss at the sweep's start

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
        if self.rule not in RULES:
            raise ValueError(
                f"`rule` must be one of {', '.join(RULES)}. Received: "
                f"rule={self.rule!r}"
            )
        window = self.smoothing_window
        if isinstance(window, bool) or not (
            isinstance(window, int) and window >= 1 and window % 2 == 1
        ):
            raise ValueError(
                "`smoothing_window` must be an odd integer >= 1 (a centered "
                f"window). Received: smoothing_window={window!r}"
            )
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


@dataclasses.dataclass(frozen=True)
class RangeTestResult:
    """The chosen rate, why, and the curve it was read from.

    Args:
        learning_rate: float. The chosen peak learning rate.
        reason: str. One line: rule, where the curve turned, any clamp.
        rule: str. "min/10" or "steepest".
        learning_rates: tuple[float, ...]. The rate of each update.
        losses: tuple[float, ...]. Each update's training loss (inf where
            it was not finite).
        smoothed_losses: tuple[float, ...]. The smoothed finite prefix.
        bounds: tuple[float, float]. The clamp of the choice.

    Examples:
    >>> rates = sweep_rates(1e-6, 1e-3, 10)
    >>> losses = [0.7 - 0.01 * i for i in range(10)]
    >>> result = choose_learning_rate(rates, losses, bounds=(1e-5, 1e-4))
    >>> RangeTestResult.from_dict(result.to_dict()) == result
    True
    """

    learning_rate: float
    reason: str
    rule: str
    learning_rates: tuple
    losses: tuple
    smoothed_losses: tuple
    bounds: tuple

    def to_dict(self) -> dict:
        """JSON-ready (non-finite losses become None), for `plan.json`."""
        return {
            "learning_rate": self.learning_rate,
            "reason": self.reason,
            "rule": self.rule,
            "learning_rates": list(self.learning_rates),
            "losses": [x if math.isfinite(x) else None for x in self.losses],
            "smoothed_losses": list(self.smoothed_losses),
            "bounds": list(self.bounds),
        }

    @classmethod
    def from_dict(cls, values) -> "RangeTestResult":
        """Reads `to_dict()` output back."""
        return cls(
            learning_rate=float(values["learning_rate"]),
            reason=str(values["reason"]),
            rule=str(values["rule"]),
            learning_rates=tuple(float(x) for x in values["learning_rates"]),
            losses=tuple(
                math.inf if x is None else float(x) for x in values["losses"]
            ),
            smoothed_losses=tuple(float(x) for x in values["smoothed_losses"]),
            bounds=tuple(float(x) for x in values["bounds"]),
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


def sweep_rates(min_learning_rate, max_learning_rate, num_steps) -> np.ndarray:
    """`num_steps` rates growing geometrically from the first to the last.

    Examples:
    >>> [float(f"{r:.0e}") for r in sweep_rates(1e-6, 1e-3, 4)]
    [1e-06, 1e-05, 0.0001, 0.001]
    """
    return np.geomspace(min_learning_rate, max_learning_rate, num_steps)


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


def smooth(losses, window: int) -> np.ndarray:
    """Centered moving average; the window shrinks at both ends.

    Examples:
    >>> smooth([1.0, 2.0, 3.0, 10.0], 3).tolist()
    [1.5, 2.0, 5.0, 6.5]
    """
    values = np.asarray(losses, dtype=np.float64)
    half = window // 2
    return np.array([
        values[max(0, i - half):i + half + 1].mean()
        for i in range(len(values))
    ])


def diverged(losses, *, factor: float, window: int) -> bool:
    """Whether a sweep's losses so far have diverged.

    The last loss is not finite, or the median of the last `window` losses
    (the lower middle value of an even count) exceeds `factor` times the
    lowest such median before it. One batch far above the rest, as a
    heavy-tailed regression target gives, does not end the sweep; a loss
    that keeps climbing ends it within `window // 2 + 1` updates.

    Examples:
    >>> diverged([1.0, 0.9, 12.0], factor=4.0, window=5)  # one noisy batch
    False
    >>> diverged([1.0, 0.9, 4.0, 12.0, 40.0], factor=4.0, window=5)
    True
    >>> diverged([1.0, float("nan")], factor=4.0, window=5)
    True
    """
    if not math.isfinite(losses[-1]):
        return True
    medians = []
    for end in range(1, len(losses) + 1):
        recent = sorted(losses[max(0, end - window):end])
        medians.append(recent[(len(recent) - 1) // 2])
    return len(medians) > 1 and medians[-1] > factor * min(medians[:-1])


def choose_learning_rate(
    learning_rates,
    losses,
    *,
    rule: str = "min/10",
    bounds: tuple = (1e-5, 1e-4),
    smoothing_window: int = 5,
    fallback: float | None = None,
    min_drop: float = 0.02,
) -> RangeTestResult:
    """Reads a learning rate off a range-test curve (a pure function).

    Args:
        learning_rates: Sequence[float]. The rate of each update, growing.
        losses: Sequence[float]. Each update's training loss; the curve ends
            at the first non-finite one.
        rule: str. "min/10" or "steepest" (see the module docstring).
        bounds: tuple[float, float]. The choice is clamped into them.
        smoothing_window: int. Updates in the centered moving average.
        fallback: float | None. The rate to keep when the smoothed loss
            never falls `min_drop` below its start (no signal); None reads
            the curve anyway.
        min_drop: float. The relative fall that counts as a signal.

    Returns:
        A `RangeTestResult`.

    Examples:
    >>> rates = sweep_rates(1e-6, 1e-3, 7)
    >>> losses = [0.70, 0.69, 0.60, 0.40, 0.35, 0.30, float("inf")]
    >>> result = choose_learning_rate(rates, losses, smoothing_window=1)
    >>> f"{result.learning_rate:.1e}"
    '3.2e-05'
    """
    RangeTestOptions(rule=rule, smoothing_window=smoothing_window)
    rates = np.asarray(learning_rates, dtype=np.float64)
    values = np.asarray(losses, dtype=np.float64)
    if rates.shape != values.shape or rates.ndim != 1:
        raise ValueError(
            "`learning_rates` and `losses` must be 1-D and of one length. "
            f"Received: {rates.shape} and {values.shape}"
        )
    low, high = float(bounds[0]), float(bounds[1])
    finite = np.isfinite(values)
    n = int(np.argmin(finite)) if not finite.all() else len(values)
    sweep = (
        f"over {n} updates from {_rate(rates[0])} to "
        f"{_rate(rates[max(n - 1, 0)])}" if n else "before the first update"
    )
    if n < 3:
        smoothed = smooth(values[:n], smoothing_window)
        return RangeTestResult(
            learning_rate=low,
            reason=(
                f"LR range test: the loss diverged {sweep}; the recipe's "
                f"lowest rate {_rate(low)}"
            ),
            rule=rule,
            learning_rates=tuple(float(r) for r in rates),
            losses=tuple(float(x) for x in values),
            smoothed_losses=tuple(float(x) for x in smoothed),
            bounds=(low, high),
        )
    smoothed = smooth(values[:n], min(smoothing_window, _odd_at_most(n)))
    if rule == "min/10":
        index = int(np.argmin(smoothed))
        candidate = rates[index] / 10
        found = (
            f"smoothed loss lowest ({smoothed[index]:.3f}) at "
            f"{_rate(rates[index])} {sweep}; / 10 = {_rate(candidate)}"
        )
    else:
        slopes = np.gradient(smoothed, np.log(rates[:n]))
        index = int(np.argmin(slopes))
        candidate = rates[index]
        found = (
            f"smoothed loss falls fastest ({slopes[index]:.3f} per e-fold) "
            f"at {_rate(candidate)} {sweep}"
        )
        if slopes[index] >= 0:
            candidate = 0.0
            found = f"smoothed loss never falls {sweep}"
    drop = (smoothed[0] - smoothed.min()) / max(abs(smoothed[0]), 1e-12)
    if fallback is not None and drop < min_drop:
        candidate = fallback
        found = (
            f"smoothed loss fell {100 * drop:.1f}% {sweep}, under "
            f"{100 * min_drop:g}%: no signal, the recipe's {_rate(fallback)}"
        )
    elif index == n - 1 and n == len(values):
        found += "; still falling at the sweep's end"
    elif n < len(values):
        found += f"; diverged at {_rate(rates[n])}"
    chosen = min(max(candidate, low), high)
    if candidate < low:
        found += f"; raised to the recipe's lowest {_rate(low)}"
    elif candidate > high:
        found += f"; lowered to the recipe's highest {_rate(high)}"
    return RangeTestResult(
        learning_rate=float(chosen),
        reason=f"LR range test, {rule} rule: {found}",
        rule=rule,
        learning_rates=tuple(float(r) for r in rates),
        losses=tuple(float(x) if np.isfinite(x) else math.inf for x in values),
        smoothed_losses=tuple(float(x) for x in smoothed),
        bounds=(low, high),
    )


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

    Returns:
        `(learning_rates, losses)`: lists with one entry per update made
        (fewer than `num_steps` when the loss diverged).

    Examples:
    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> x = np.ones((4, 2), "float32"); y = np.zeros((4,), "int32")
    >>> data = [(x, y, np.ones((4,), "float32"))] * 3
    >>> rates, losses = range_test(model, data, optimizer="sgd",
    ...     options=RangeTestOptions(num_steps=3, min_learning_rate=0.1,
    ...                              max_learning_rate=1.0))
    >>> len(losses)
    3
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
    rates, losses = [], []
    try:
        for step, (x, y, w) in enumerate(batches):
            if step == options.num_steps:
                break
            # Read before the update: a loss-scaled float16 update that is
            # skipped does not advance the rate.
            rates.append(float(schedule(trainer.optimizer.iterations)))
            logs = trainer.train_on_batch(x, y, sample_weight=w,
                                          return_dict=True)
            loss = float(logs["loss"])
            # The engine leaves a non-finite loss out of its mean: a mean of
            # nothing then reads 0, so a zero count is the divergence.
            if not float(distribution.loss_tracker(trainer).count.numpy()):
                loss = math.inf
            losses.append(loss if math.isfinite(loss) else math.inf)
            if diverged(losses, factor=options.divergence_factor,
                        window=options.smoothing_window):
                break
    finally:
        for variable, value in zip(model.variables, saved):
            variable.assign(value)
    return rates, losses


def find_learning_rate(
    plan,
    *,
    make_classifier,
    train: pipeline.TokenizedExamples,
    options: RangeTestOptions = RangeTestOptions(),
    output_dir: str | None = None,
) -> RangeTestResult:
    """Runs the range test for `plan` and chooses its peak learning rate.

    Sets the plan's dtype policy and seed (restoring the previous policy),
    builds a fresh classifier, sweeps on the first training batches of the
    plan's epoch-0 order, and writes `lr_range_test.png` into `output_dir`.

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
        max_learning_rate=options.max_learning_rate or bounds[1] * 10,
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
            epochs=math.ceil(options.num_steps / plan.steps_per_epoch),
        )
        rates, losses = range_test(
            classifier,
            batches,
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
        )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    result = choose_learning_rate(
        rates, losses, rule=options.rule, bounds=bounds,
        smoothing_window=options.smoothing_window,
        fallback=plan.learning_rate, min_drop=options.min_drop,
    )
    logging.info("learning rate %s: %s", _rate(result.learning_rate),
                 result.reason)
    if output_dir:
        plot(result, os.path.join(output_dir, PLOT_FILE))
    return result


def plot(result: RangeTestResult, path: str) -> None:
    """Draws the curve, its smoothing, the recipe range and the choice.

    Args:
        result: RangeTestResult. What to draw.
        path: str. The PNG to write (any `tf.io.gfile` path).

    Examples:
    >>> import os, tempfile
    >>> rates = sweep_rates(1e-6, 1e-3, 8)
    >>> result = choose_learning_rate(rates, [0.7, 0.7, 0.6, 0.5, 0.4, 0.3,
    ...     0.5, 3.0], smoothing_window=3)
    >>> path = os.path.join(tempfile.mkdtemp(), "lr.png")
    >>> plot(result, path); open(path, "rb").read(4) == b"\\x89PNG"
    True
    """
    figure = Figure(figsize=(7.5, 3.6), dpi=100)
    axes = figure.subplots()
    axes.grid(True, alpha=0.3)
    rates = np.asarray(result.learning_rates)
    losses = np.asarray(result.losses)
    finite = np.isfinite(losses)
    low, high = result.bounds
    axes.axvspan(low, high, color="#2ca02c", alpha=0.08,
                 label="recipe range (the clamp)")
    axes.plot(rates[finite], losses[finite], ".", color="#1f77b4", alpha=0.5,
              label="loss of each update")
    axes.plot(rates[:len(result.smoothed_losses)], result.smoothed_losses,
              "-", color="#1f77b4", label="smoothed")
    axes.axvline(result.learning_rate, color="#d62728", linestyle="--",
                 label=f"chosen {_rate(result.learning_rate)} "
                       f"({result.rule})")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss")
    axes.set_title("Learning-rate range test")
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    # A bare Figure renders with the Agg canvas: no pyplot, no global state.
    figure.savefig(buffer, format="png")
    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def _odd_at_most(n):
    return n if n % 2 else n - 1


def _rate(rate):
    return f"{rate:.1e}"
