"""Class weights, the selection metric, validation frequency and patience.

- Class weights: when the training classes are skewed (the largest class
  has more than `IMBALANCE_RATIO` times the examples of the smallest), each
  class k gets n / (K x count_k), normalized so the mean weight over the
  training examples is 1; the loss of every training example is weighted
  by its class's weight.
- The selection metric: the validation metric that decides which weights
  are kept (macro-F1 on skewed classes, else accuracy).
- Validation every N updates: only on long epochs (more than
  `LONG_EPOCH_UPDATES` updates), `VALIDATIONS_PER_LONG_EPOCH` times each.
- Early stopping: after `DEFAULT_PATIENCE` validations without improvement.
"""

import math

from painless_tf.plan.checks import AUTO
from painless_tf.plan.checks import PlanError
from painless_tf.plan.checks import _non_negative_int

# Largest / smallest class count above which the classes count as skewed.
IMBALANCE_RATIO = 3.0
CLASS_WEIGHTS = (AUTO, "none", "balanced")
SELECTION_METRICS = (AUTO, "accuracy", "macro_f1", "loss")
# The validation metrics each task logs (`heads.metrics_for`), besides loss.
TASK_SELECTION_METRICS = {
    "classification": SELECTION_METRICS,
    "multi_label": (AUTO, "binary_accuracy", "loss"),
    "regression": (AUTO, "mae", "loss"),
}
# An epoch longer than this many updates is also validated within itself.
LONG_EPOCH_UPDATES = 1000
VALIDATIONS_PER_LONG_EPOCH = 4
DEFAULT_PATIENCE = 2


def class_ratio(class_counts):
    """Largest / smallest count among the classes present, or None."""
    present = [int(c) for c in (() if class_counts is None else class_counts)
               if int(c) > 0]
    if len(present) < 2:
        return None
    return max(present) / min(present)


def _decide_class_weights(requested, class_counts, task="classification"):
    """Returns (class weights as a tuple of floats, or None; reason).

    Only single-label classification has classes to weigh.

    Examples:
    >>> weights, why = _decide_class_weights("auto", [90, 10])
    >>> [round(w, 3) for w in weights]
    [0.556, 5.0]
    >>> _decide_class_weights("auto", [50, 40])[0] is None
    True
    """
    if requested not in CLASS_WEIGHTS:
        raise PlanError(
            f"--class_weights={requested!r} is not one of "
            f"{', '.join(CLASS_WEIGHTS)}. Pass --class_weights=auto."
        )
    if task != "classification":
        if requested == "balanced":
            raise PlanError(
                f"--class_weights=balanced needs single-label classes; this "
                f"is a {task} task. Pass --class_weights=auto."
            )
        return None, f"{task}: no exclusive classes to weigh"
    ratio = class_ratio(class_counts)
    if requested == "none":
        return None, "set by user: every example weighs 1"
    if ratio is None:
        return None, "fewer than two classes with training examples"
    if requested == AUTO and ratio <= IMBALANCE_RATIO:
        return None, (
            f"classes balanced enough: largest/smallest class {ratio:.2g} "
            f"<= {IMBALANCE_RATIO:g}"
        )
    counts = [int(c) for c in class_counts]
    n, k = sum(counts), len(counts)
    # A class without training examples weighs nothing in training anyway.
    raw = [n / (k * c) if c else 1.0 for c in counts]
    mean = sum(w * c for w, c in zip(raw, counts)) / n
    weights = tuple(float(w / mean) for w in raw)
    why = (
        "set by user" if requested == "balanced"
        else f"largest/smallest class {ratio:.2g} > {IMBALANCE_RATIO:g}"
    )
    return weights, (
        f"{why}: n / (K x count) per class, mean 1 over the training examples"
    )


def _decide_selection_metric(requested, class_counts, task="classification"):
    """Returns (metric name as in the validation logs without `val_`,
    reason).

    Examples:
    >>> _decide_selection_metric("auto", None, "regression")[0]
    'loss'
    """
    allowed = TASK_SELECTION_METRICS[task]
    if requested not in allowed:
        raise PlanError(
            f"--selection_metric={requested!r} is not one of "
            f"{', '.join(allowed)} for a {task} task. Pass "
            "--selection_metric=auto."
        )
    if requested != AUTO:
        return requested, "set by user"
    if task == "multi_label":
        return "loss", (
            "multi_label: the validation loss, which needs no threshold "
            "(the thresholds are tuned after training)"
        )
    if task == "regression":
        return "loss", (
            "regression: the validation squared error on standardized targets"
        )
    ratio = class_ratio(class_counts)
    if ratio is not None and ratio > IMBALANCE_RATIO:
        return "macro_f1", (
            f"skewed classes (largest/smallest {ratio:.2g} > "
            f"{IMBALANCE_RATIO:g}): macro-F1 sees the small classes"
        )
    return "accuracy", "balanced classes: validation accuracy"


def _decide_patience(requested):
    """Returns (validations without improvement before stopping, 0 = never;
    reason)."""
    if requested == AUTO:
        return DEFAULT_PATIENCE, (
            f"auto: stop after {DEFAULT_PATIENCE} validations without "
            "improvement"
        )
    patience = _non_negative_int(requested, "early_stopping_patience")
    return patience, "set by user" + ("; no early stopping" if not patience
                                      else "")


def _decide_eval_every(requested, steps_per_epoch):
    """Returns (validate every N updates within epochs, 0 = at epoch ends
    only; reason)."""
    if requested == AUTO:
        if steps_per_epoch > LONG_EPOCH_UPDATES:
            every = math.ceil(steps_per_epoch / VALIDATIONS_PER_LONG_EPOCH)
            return every, (
                f"epochs of more than {LONG_EPOCH_UPDATES:,} updates are "
                f"validated {VALIDATIONS_PER_LONG_EPOCH} times each"
            )
        return 0, (
            f"at each epoch end (epochs of {LONG_EPOCH_UPDATES:,} updates "
            "or fewer)"
        )
    every = _non_negative_int(requested, "eval_every_updates")
    return every, "set by user" + ("; at epoch ends only" if not every
                                   else "")
