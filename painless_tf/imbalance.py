"""Skewed classes: the macro-F1 metric and class-weighted training batches.

`MacroF1` counts true positives, false positives and false negatives per
class in summed variables, so it is exact under any `tf.distribute`
strategy (each replica counts its rows; reading sums them). Its macro-F1 is
that of `evaluation.classification_report`: the mean over every class of
2 TP / (2 TP + FP + FN), 0 for a class with none of them.

`weighted_by_class` multiplies each training row's sample weight by its
class's weight (`plan.Plan.class_weights`); filler rows keep weight 0, and
the engine sums weighted per-example losses and divides by the summed
weight, so an accumulated update still equals one big batch.
"""

import keras
import tensorflow as tf
from keras import ops


class MacroF1(keras.metrics.Metric):
    """Macro-averaged F1 of sparse integer labels against logits or
    probabilities.

    A sample weight only masks rows (weight 0: a filler row); class weights
    do not change what it counts.

    Args:
        num_classes: int. Number of classes.
        name: str. The metric's name in the logs (`val_` + it on validation).

    Examples:
    >>> import numpy as np
    >>> metric = MacroF1(3)
    >>> metric.update_state(np.array([0, 1, 2, 2]),
    ...                     np.eye(3)[[0, 2, 2, 2]])
    >>> round(float(metric.result()), 4)
    0.6
    """

    def __init__(self, num_classes, name="macro_f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.counts = [
            self.add_variable(shape=(self.num_classes,), initializer="zeros",
                              dtype="float32", aggregation="sum", name=name)
            for name in ("true_positives", "false_positives",
                         "false_negatives")
        ]

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        predicted = ops.reshape(predicted, (-1,))
        mask = ops.ones_like(y_true, "float32")
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            mask = ops.cast(weight > 0, "float32")
        truth = ops.one_hot(y_true, self.num_classes) * mask[:, None]
        guess = ops.one_hot(predicted, self.num_classes) * mask[:, None]
        hits = ops.sum(truth * guess, axis=0)
        for variable, value in zip(self.counts, (
                hits, ops.sum(guess, axis=0) - hits,
                ops.sum(truth, axis=0) - hits)):
            variable.assign_add(value)

    def result(self):
        tp, fp, fn = (ops.convert_to_tensor(v) for v in self.counts)
        per_class = tf.math.divide_no_nan(2 * tp, 2 * tp + fp + fn)
        return ops.mean(per_class)

    def reset_state(self):
        for variable in self.counts:
            variable.assign(ops.zeros_like(variable))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def weighted_by_class(dataset, class_weights):
    """`(x, y, w)` batches with `w` multiplied by `class_weights[y]`.

    Args:
        dataset: tf.data.Dataset of `(x, y, sample_weight)`, `y` int class
            ids [B] (the training pipeline's batches), or a student's
            `[label, logits...]` rows [B, 1 + K].
        class_weights: sequence of float, one per class, or None (returns
            `dataset` unchanged).
    """
    if class_weights is None:
        return dataset
    table = tf.constant(list(class_weights), tf.float32)

    def weigh(x, y, w):
        # A student's rows `[label, teacher logits...]` carry the class id
        # first (`distillation.soft_targets`).
        ids = y[:, 0] if y.shape.rank == 2 else y
        return x, y, w * tf.gather(table, tf.cast(ids, tf.int32))

    return dataset.map(weigh, num_parallel_calls=tf.data.AUTOTUNE)
