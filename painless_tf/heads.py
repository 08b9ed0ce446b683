"""What each task trains and reports: its per-example loss, its Keras
metrics and how logits become scores.

The head itself is the keras-hub classifier's dense layer with one output
per label (`len(vocab)`): K class logits (classification, softmax), K label
logits (multi-label, one sigmoid each) or one value (regression, linear, on
standardized targets). The losses give one value per example, which
`engine.Trainer` weights and sums exactly:

* classification: sparse categorical cross-entropy, labels int32 [B];
* multi_label: binary cross-entropy of each label, averaged over the K
  labels, labels float32 multi-hot [B, K];
* regression: squared error of the standardized target, labels float32 [B].

    trainer.compile(loss=heads.loss_for("multi_label"), ...)
"""

import keras
import numpy as np
from keras import ops

from painless_tf.data.tasks import TASKS

# The name of each task's progress-line metric (`val_<name>` on validation).
METRIC_NAMES = {"classification": "accuracy", "multi_label": "binary_accuracy",
                "regression": "mae"}


def _check(task):
    if task not in TASKS:
        raise ValueError(
            f"`task` must be one of {TASKS}. Received: task={task!r}")


def binary_cross_entropy(y_true, logits):
    """Per-example binary cross-entropy from logits, mean over labels: [B]."""
    y_true = ops.cast(y_true, "float32")
    logits = ops.cast(logits, "float32")
    # max(z, 0) - z * y + log(1 + exp(-|z|)): stable for any logit.
    per_label = (ops.maximum(logits, 0.0) - logits * y_true
                 + ops.log1p(ops.exp(-ops.abs(logits))))
    return ops.mean(per_label, axis=-1)


def squared_error(y_true, outputs):
    """Per-example squared error of one output: [B]."""
    outputs = ops.cast(outputs, "float32")
    return ops.square(ops.reshape(outputs, (-1,))
                      - ops.reshape(ops.cast(y_true, "float32"), (-1,)))


def loss_for(task):
    """The per-example loss of `task` (see the module docstring).

    Examples:

    >>> import numpy as np
    >>> loss = loss_for("multi_label")
    >>> values = loss(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]))
    >>> round(float(values[0]), 4)  # log 2
    0.6931
    """
    _check(task)
    if task == "multi_label":
        return binary_cross_entropy
    if task == "regression":
        return squared_error
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def metrics_for(task, *, std=1.0):
    """The Keras metrics of the progress line, named `METRIC_NAMES[task]`.

    Args:
        task: str. One of `TASKS`.
        std: float. Regression: the targets' standard deviation, so that
            "mae" is in the target's units.
    """
    _check(task)
    if task == "multi_label":
        return [keras.metrics.BinaryAccuracy(
            name="binary_accuracy", threshold=0.0)]  # on logits: p > 0.5
    if task == "regression":
        scale = float(std)

        def mae(y_true, outputs):
            outputs = ops.reshape(ops.cast(outputs, "float32"), (-1,))
            return ops.abs(outputs - ops.cast(y_true, "float32")) * scale

        return [keras.metrics.MeanMetricWrapper(mae, name="mae")]
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def scores(task, logits):
    """Model outputs as scores: class probabilities (softmax), label
    probabilities (sigmoid) or the standardized value [n].

    Examples:

    >>> scores("multi_label", np.zeros((1, 2))).tolist()
    [[0.5, 0.5]]
    """
    _check(task)
    logits = np.asarray(logits, np.float64)
    if task == "multi_label":
        return 1.0 / (1.0 + np.exp(-logits))
    if task == "regression":
        return logits.reshape(-1)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
