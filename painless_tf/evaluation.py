"""Metrics of each task on a test split, in plain numpy.

`classification_report`, `multilabel_report` and `regression_report` return
JSON-ready dicts that `painless_tf.report` renders and that apps write next
to the model as `evaluation.json`; `tune_thresholds` picks the multi-label
thresholds on the validation split.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np


def classification_report(y_true, y_pred_ids, label_names: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix.

    A class that is never predicted has precision 0, and a class that never
    occurs has recall 0 (scikit-learn's `zero_division=0`); macro F1 is the
    unweighted mean of the per-class F1 over all `label_names`, so a class
    missing from the test split pulls it down.

    Args:
        y_true: array-like of int. True class ids, [n].
        y_pred_ids: array-like of int. Predicted class ids, [n].
        label_names: sequence of str. Name of each class id, in id order.

    Returns:
        dict with keys "num_examples" (int), "accuracy" (float),
        "macro_f1" (float), "weighted_f1" (float), "labels" (list of str),
        "per_class" (list of {"label", "precision", "recall", "f1",
        "support"}, in id order) and "confusion_matrix" (list of lists of
        int; row = true class, column = predicted class).

    Examples:
    >>> report = classification_report([0, 0, 1, 1], [0, 1, 1, 1],
    ...                                ["rotten", "fresh"])
    >>> report["accuracy"], report["confusion_matrix"]
    (0.75, [[1, 1], [0, 2]])
    >>> round(report["per_class"][1]["precision"], 4)
    0.6667
    """
    names = [str(name) for name in label_names]
    if not names:
        raise ValueError(
            "`label_names` is empty. Pass the name of every class, e.g. "
            "LabelVocab.names."
        )
    y_true = _class_ids(y_true, "y_true", len(names))
    y_pred = _class_ids(y_pred_ids, "y_pred_ids", len(names))
    if y_true.shape != y_pred.shape:
        raise ValueError(
            "`y_true` and `y_pred_ids` must have one entry per example. "
            f"Received: {y_true.size} and {y_pred.size} entries."
        )
    if y_true.size == 0:
        raise ValueError(
            "No examples to evaluate: `y_true` is empty. Check the test split."
        )
    k = len(names)
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    correct = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = np.divide(
        correct, predicted, out=np.zeros(k), where=predicted > 0
    )
    recall = np.divide(correct, support, out=np.zeros(k), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(k),
        where=denominator > 0,
    )
    return {
        "num_examples": int(y_true.size),
        "accuracy": float(correct.sum() / y_true.size),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float(np.sum(f1 * support) / y_true.size),
        "labels": names,
        "per_class": [
            {
                "label": names[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(k)
        ],
        "confusion_matrix": confusion.astype(int).tolist(),
    }


def _class_ids(values, name, num_classes):
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D array of class ids. Received: shape "
            f"{array.shape}. Take the argmax of the logits first."
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"`{name}` must hold integer class ids. Received: dtype "
            f"{array.dtype}. Map label names to ids with LabelVocab.encode."
        )
    array = array.astype(np.int64)
    bad = np.flatnonzero((array < 0) | (array >= num_classes))
    if bad.size:
        raise ValueError(
            f"`{name}` entry {int(bad[0])} is class id {int(array[bad[0]])}, "
            f"outside [0, {num_classes}) for {num_classes} label names. Pass "
            "the label names the model was trained with (labels.json)."
        )
    return array


def tune_thresholds(y_true, probabilities, *, default=0.5):
    """Per-label thresholds that maximize each label's F1 on `y_true`.

    The candidates are the midpoints between neighbouring distinct
    probabilities of the label (and `default`); a label with no positive
    row keeps `default`. A row is predicted positive where its probability
    is above the threshold.

    Args:
        y_true: array-like. Multi-hot labels [n, K].
        probabilities: array-like. Label probabilities [n, K].
        default: float. The threshold where nothing is learned from `y_true`.

    Returns:
        tuple of K floats.

    Examples:
    >>> tune_thresholds([[1], [1], [0]], [[0.3], [0.4], [0.1]])
    (0.2,)
    """
    y_true = np.asarray(y_true, np.float64) > 0.5
    probabilities = np.asarray(probabilities, np.float64)
    if y_true.shape != probabilities.shape or y_true.ndim != 2:
        raise ValueError(
            "`y_true` and `probabilities` must both be [n, K]. Received: "
            f"{y_true.shape} and {probabilities.shape}.")
    thresholds = []
    for k in range(y_true.shape[1]):
        truth, scores = y_true[:, k], probabilities[:, k]
        if not truth.any():
            thresholds.append(float(default))
            continue
        distinct = np.unique(scores)
        candidates = np.concatenate([
            [default], (distinct[:-1] + distinct[1:]) / 2, [distinct[0] / 2]])
        best = max(candidates, key=lambda t: (_f1(truth, scores > t),
                                              -abs(t - default)))
        thresholds.append(round(float(best), 6))
    return tuple(thresholds)


def _f1(truth, predicted):
    tp = float(np.sum(truth & predicted))
    denominator = float(np.sum(truth) + np.sum(predicted))
    return 2 * tp / denominator if denominator else 0.0


def multilabel_report(y_true, probabilities, label_names, thresholds) -> dict:
    """Micro-F1, macro-F1, subset accuracy and per-label precision/recall.

    Args:
        y_true: array-like. Multi-hot labels [n, K].
        probabilities: array-like. Label probabilities [n, K].
        label_names: sequence of str. The K label names.
        thresholds: sequence of K floats. Positive above the threshold.

    Returns:
        dict with "task" ("multi_label"), "num_examples", "micro_f1",
        "macro_f1", "subset_accuracy", "labels", "thresholds" and
        "per_class" (list of {"label", "precision", "recall", "f1",
        "support", "threshold"}).

    Examples:
    >>> report = multilabel_report([[1, 0], [1, 1]], [[0.9, 0.2], [0.8, 0.1]],
    ...                            ["a", "b"], [0.5, 0.5])
    >>> report["subset_accuracy"], round(report["micro_f1"], 4)
    (0.5, 0.8)
    """
    truth = np.asarray(y_true, np.float64) > 0.5
    probabilities = np.asarray(probabilities, np.float64)
    names = [str(n) for n in label_names]
    thresholds = np.asarray(thresholds, np.float64)
    if (truth.ndim != 2 or truth.shape != probabilities.shape
            or truth.shape[1] != len(names) or thresholds.shape != (len(names),)):
        raise ValueError(
            "`y_true` and `probabilities` must be [n, K] with K = "
            f"{len(names)} label names and thresholds. Received: "
            f"{truth.shape}, {probabilities.shape}, {thresholds.shape}.")
    if not truth.shape[0]:
        raise ValueError(
            "No examples to evaluate: `y_true` is empty. Check the test split.")
    predicted = probabilities > thresholds[None, :]
    tp = np.sum(truth & predicted, axis=0).astype(np.float64)
    support = truth.sum(axis=0)
    count = predicted.sum(axis=0)
    precision = np.divide(tp, count, out=np.zeros(len(names)), where=count > 0)
    recall = np.divide(tp, support, out=np.zeros(len(names)), where=support > 0)
    f1 = np.divide(2 * tp, support + count, out=np.zeros(len(names)),
                   where=(support + count) > 0)
    micro = 2 * tp.sum() / max(float(support.sum() + count.sum()), 1.0)
    return {
        "task": "multi_label",
        "num_examples": int(truth.shape[0]),
        "micro_f1": float(micro),
        "macro_f1": float(f1.mean()),
        "subset_accuracy": float(np.mean(np.all(truth == predicted, axis=1))),
        "labels": names,
        "thresholds": [float(t) for t in thresholds],
        "per_class": [
            {"label": names[i], "precision": float(precision[i]),
             "recall": float(recall[i]), "f1": float(f1[i]),
             "support": int(support[i]), "threshold": float(thresholds[i])}
            for i in range(len(names))
        ],
    }


def regression_report(y_true, y_pred) -> dict:
    """RMSE, MAE, Pearson and Spearman correlation, in the target's units.

    Spearman is Pearson on average ranks (ties share their mean rank). A
    correlation with a constant side is NaN-free: 0.

    Examples:
    >>> report = regression_report([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    >>> round(report["mae"], 4), report["spearman"]
    (0.6667, 1.0)
    """
    y_true = np.asarray(y_true, np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            "`y_true` and `y_pred` must have one entry per example. "
            f"Received: {y_true.size} and {y_pred.size} entries.")
    if not y_true.size:
        raise ValueError(
            "No examples to evaluate: `y_true` is empty. Check the test split.")
    error = y_pred - y_true
    return {
        "task": "regression",
        "num_examples": int(y_true.size),
        "rmse": float(np.sqrt(np.mean(error ** 2))),
        "mae": float(np.mean(np.abs(error))),
        "pearson": _pearson(y_true, y_pred),
        "spearman": _pearson(_ranks(y_true), _ranks(y_pred)),
        "target_mean": float(np.mean(y_true)),
        "target_std": float(np.std(y_true)),
    }


# The summary numbers of each task's report, in the order tables show them.
HEADLINE_KEYS = {
    "classification": ("accuracy", "macro_f1"),
    "multi_label": ("micro_f1", "macro_f1", "subset_accuracy"),
    "regression": ("rmse", "mae", "pearson", "spearman"),
}


def headline(report) -> dict:
    """The report's summary numbers, by name (without per-class rows)."""
    keys = HEADLINE_KEYS.get(report.get("task"),
                             HEADLINE_KEYS["classification"])
    return {key: report[key] for key in keys}


def summary_line(metrics, task) -> str:
    """The test numbers of a run's metrics as one line.

    >>> summary_line({"test_rmse": 0.51, "test_mae": 0.4, "test_pearson": 0.9,
    ...               "test_spearman": 0.88}, "regression")
    'test rmse 0.5100, mae 0.4000, pearson 0.9000, spearman 0.8800'
    """
    numbers = [f"{key.replace('_', ' ')} {metrics[f'test_{key}']:.4f}"
               for key in HEADLINE_KEYS[task] if f"test_{key}" in metrics]
    return "test " + ", ".join(numbers)


def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / denominator) if denominator > 0 else 0.0


def _ranks(values):
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, np.float64)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    distinct, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def report_for(task, y_true, scores, label_names) -> dict:
    """The test report of `task` (a `data.TaskSpec`) from model scores.

    Args:
        task: `data.TaskSpec`. Its kind, thresholds (multi-label) and mean
            and std (regression: `y_true` and `scores` are standardized).
        y_true: array-like. The split's labels as trained on.
        scores: array-like. `heads.scores` of the model's outputs.
        label_names: sequence of str. `LabelVocab.names`.

    Examples:
    >>> from painless_tf.data import TaskSpec
    >>> spec = TaskSpec("regression", mean=10.0, std=2.0)
    >>> report_for(spec, [0.0, 1.0], [0.0, 0.5], ["score"])["mae"]
    0.5
    """
    if task.kind == "multi_label":
        return multilabel_report(y_true, scores, label_names,
                                 task.threshold_array(len(label_names)))
    if task.kind == "regression":
        return regression_report(task.destandardize(y_true),
                                 task.destandardize(scores))
    return classification_report(y_true, np.argmax(scores, axis=-1),
                                 label_names)


def evaluate_splits(splits, predict):
    """The end of a run: thresholds tuned on validation, the test report
    and its numbers for `metrics.json`.

    Args:
        splits: `data.Splits`. Its `task`, vocabulary, validation and test.
        predict: callable. `split name -> scores` (`heads.scores`).

    Returns:
        `(task, report, metrics)`: the `data.TaskSpec` with multi-label
        thresholds tuned on validation (0.5 each without a validation
        split), `report_for` of the test split, and its headline numbers as
        `test_<name>` (classification: `test_accuracy`).
    """
    task = splits.task
    if task.kind == "multi_label" and len(splits.validation):
        task = dataclasses.replace(task, thresholds=tune_thresholds(
            splits.validation.labels, predict("validation")))
    report = report_for(task, splits.test.labels, predict("test"),
                        splits.vocab.names)
    numbers = headline(report)
    if task.kind == "classification":
        numbers = {"accuracy": numbers["accuracy"]}
    return task, report, {f"test_{k}": v for k, v in numbers.items()}
