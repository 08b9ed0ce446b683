"""Classification metrics on a test split, in plain numpy.

`classification_report` returns a JSON-ready dict that `painless_tf.report`
renders (confusion matrix plot and per-class table) and that apps write next
to the model as `evaluation.json`.
"""

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
