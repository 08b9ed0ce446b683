"""Knowledge distillation: a smaller student from a fine-tuned teacher.

The student is the teacher's own keras-hub task with fewer encoder layers,
initialized from a subset of the teacher's (DistilBERT, Sanh et al. 2019:
every other layer): its embeddings, the chosen encoder layers in order and
its head are copies of the teacher's (`student_from_teacher`).

It trains on the run's training texts with the teacher's soft labels plus
the true ones (Hinton et al. 2015): per example,

    alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T))
        + (1 - alpha) * cross_entropy(label, student)

(`distillation_loss`). The teacher's logits are computed once per training
text and travel with its label as one float row `[label, logit_1, ...,
logit_K]` (`soft_targets`), so the exact accumulating engine, its
replicas, precisions and resume work unchanged: the loss is per example.

    student, copied = distillation.student_from_teacher(teacher, "every_other")
    trainer.compile(loss=distillation.distillation_loss(temperature=2.0))
"""

import keras
import numpy as np
from keras import ops

from painless_tf import freezing

EVERY_OTHER = "every_other"


def teacher_layers(num_layers: int, layers="every_other") -> tuple:
    """The teacher's encoder layers the student starts from, bottom up.

    Args:
        num_layers: int. The teacher's encoder layers.
        layers: "every_other" (layers 1, 3, 5, ... counted from 0: the top
            layer is always kept), an int N (N layers spread evenly, the
            top one included), or a sequence of layer indices.

    Examples:
    >>> teacher_layers(6), teacher_layers(6, 2), teacher_layers(4, [0, 3])
    ((1, 3, 5), (2, 5), (0, 3))
    """
    if layers == EVERY_OTHER:
        chosen = tuple(range(num_layers - 1, -1, -2))[::-1]
    elif isinstance(layers, int) and not isinstance(layers, bool):
        if not 1 <= layers <= num_layers:
            raise ValueError(
                f"`student_layers` must be between 1 and the teacher's "
                f"{num_layers} layers. Received: student_layers={layers!r}")
        step = num_layers / layers
        chosen = tuple(round(step * (i + 1)) - 1 for i in range(layers))
    else:
        chosen = tuple(int(i) for i in layers)
        if (not chosen or sorted(set(chosen)) != list(chosen)
                or chosen[0] < 0 or chosen[-1] >= num_layers):
            raise ValueError(
                "`student_layers` must be increasing layer indices in "
                f"[0, {num_layers}). Received: student_layers={layers!r}")
    return chosen


def student_from_teacher(teacher, layers="every_other"):
    """A copy of `teacher` with only some of its encoder layers.

    Args:
        teacher: keras.Model. A keras-hub text classifier with a backbone
            of stacked encoder layers (`freezing.layer_groups`).
        layers: which of the teacher's layers to keep (`teacher_layers`).

    Returns:
        `(student, chosen)`: the student (same class, preprocessor and
        head, `len(chosen)` layers) and the teacher layer indices its
        layers copy, bottom up.

    Raises:
        ValueError: for a model without a stack of encoder layers, or a
            bad `layers`.

    Examples:
    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=10,
    ...     num_layers=4, num_heads=1, hidden_dim=2, intermediate_dim=4)
    >>> teacher = keras_hub.models.BertTextClassifier(backbone,
    ...     num_classes=2, preprocessor=None)
    >>> student, chosen = student_from_teacher(teacher)
    >>> student.backbone.num_layers, chosen
    (2, (1, 3))
    """
    groups = freezing.layer_groups(teacher)
    chosen = teacher_layers(len(groups.encoder), layers)
    config = teacher.get_config()
    config["backbone"]["config"]["num_layers"] = len(chosen)
    # The teacher's preprocessor itself: a tokenizer rebuilt from its
    # config alone has no vocabulary (keras-hub keeps it in the assets).
    config["preprocessor"] = None
    student = type(teacher).from_config(config)
    student.preprocessor = teacher.preprocessor
    student_groups = freezing.layer_groups(student)
    pairs = list(zip(groups.embeddings, student_groups.embeddings))
    pairs += [(groups.encoder[t], student_groups.encoder[s])
              for s, t in enumerate(chosen)]
    pairs += list(zip(groups.head, student_groups.head))
    for source, target in pairs:
        if source.name != target.name and not (
                source in groups.encoder and target in student_groups.encoder):
            raise ValueError(
                f"The student's layer {target.name} does not match the "
                f"teacher's {source.name}.")
        weights = source.get_weights()
        if [w.shape for w in weights] != [
                tuple(w.shape) for w in target.weights]:
            raise ValueError(
                f"The student's layer {target.name} has other shapes than "
                f"the teacher's {source.name}.")
        target.set_weights(weights)
    return student, chosen


def soft_targets(labels, teacher_logits):
    """float32 rows `[label, logit_1, ..., logit_K]`: the training labels
    with the teacher's logits (what `distillation_loss` reads).

    Examples:
    >>> soft_targets([1, 0], [[0.5, 2.0], [1.0, -1.0]]).tolist()
    [[1.0, 0.5, 2.0], [0.0, 1.0, -1.0]]
    """
    labels = np.asarray(labels).reshape(-1, 1).astype("float32")
    logits = np.asarray(teacher_logits, dtype="float32")
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(
            "`teacher_logits` must be [n, K] with one row per label. "
            f"Received: shape {logits.shape} for {len(labels)} labels.")
    return np.concatenate([labels, logits], axis=1)


def distillation_loss(temperature=2.0, alpha=0.5):
    """The per-example distillation loss on `soft_targets` rows: [B].

    Args:
        temperature: float > 0. Softens both distributions; the KL term is
            scaled by `temperature**2` so that its gradients keep their
            size as it changes (Hinton et al. 2015).
        alpha: float in [0, 1]. The share of the soft-label term; the rest
            is the cross-entropy with the true label.

    Examples:
    >>> loss = distillation_loss(temperature=1.0, alpha=1.0)
    >>> rows = soft_targets([0], [[0.0, 0.0]])
    >>> float(loss(rows, np.array([[0.0, 0.0]]))[0])  # same distributions
    0.0
    """
    if not temperature > 0 or not 0 <= alpha <= 1:
        raise ValueError(
            "`temperature` must be > 0 and `alpha` in [0, 1]. Received: "
            f"temperature={temperature!r}, alpha={alpha!r}")
    temperature, alpha = float(temperature), float(alpha)

    def loss(y_true, student_logits):
        student_logits = ops.cast(student_logits, "float32")
        if len(y_true.shape) == 1:
            # Class ids alone (validation, test): the true-label term, the
            # student's own cross-entropy.
            return _cross_entropy(ops.cast(y_true, "int32"), student_logits)
        y_true = ops.cast(y_true, "float32")
        labels = ops.cast(y_true[:, 0], "int32")
        teacher = y_true[:, 1:]
        soft_teacher = ops.softmax(teacher / temperature, axis=-1)
        log_soft_teacher = ops.log_softmax(teacher / temperature, axis=-1)
        log_soft_student = ops.log_softmax(
            student_logits / temperature, axis=-1)
        kl = ops.sum(soft_teacher * (log_soft_teacher - log_soft_student),
                     axis=-1)
        hard = _cross_entropy(labels, student_logits)
        return alpha * temperature ** 2 * kl + (1.0 - alpha) * hard

    return loss


def _cross_entropy(labels, logits):
    log_probabilities = ops.log_softmax(logits, axis=-1)
    return -ops.sum(
        ops.one_hot(labels, ops.shape(logits)[-1]) * log_probabilities,
        axis=-1)


class HardLabels(keras.metrics.Metric):
    """A class-id metric that reads `soft_targets` rows by their label.

    The student's training batches carry `[label, logits...]` rows, its
    validation batches class ids; the wrapped metric sees class ids in
    both.

    Examples:
    >>> metric = HardLabels(keras.metrics.SparseCategoricalAccuracy())
    >>> metric.update_state(soft_targets([1], [[0.0, 1.0]]),
    ...                     np.array([[0.0, 3.0]]))
    >>> float(metric.result()), metric.name
    (1.0, 'sparse_categorical_accuracy')
    """

    def __init__(self, metric, **kwargs):
        super().__init__(name=metric.name, dtype=metric.dtype, **kwargs)
        self.metric = metric

    def update_state(self, y_true, y_pred, sample_weight=None):
        if len(y_true.shape) == 2:
            y_true = ops.cast(y_true[:, 0], "int32")
        self.metric.update_state(y_true, y_pred, sample_weight=sample_weight)

    def result(self):
        return self.metric.result()

    def reset_state(self):
        self.metric.reset_state()


def parse_layers(value):
    """A `--student_layers` value as `teacher_layers` takes it.

    Examples:
    >>> parse_layers("every_other"), parse_layers("3"), parse_layers("0,2,5")
    ('every_other', 3, (0, 2, 5))
    """
    text = str(value).strip()
    try:
        if text == EVERY_OTHER:
            return EVERY_OTHER
        if "," not in text:
            return int(text)
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"--student_layers={value!r} is not a layer choice. Pass "
            "every_other, a count like 3, or layer indices like 0,2,5."
        ) from None


def layers_name(value):
    """A folder name for a `--student_layers` value.

    Examples:
    >>> layers_name("every_other"), layers_name("3"), layers_name("0,2,5")
    ('student-every_other', 'student-3', 'student-0_2_5')
    """
    parsed = parse_layers(value)
    if isinstance(parsed, tuple):
        return "student-" + "_".join(str(i) for i in parsed)
    return f"student-{parsed}"


def teacher_logits(teacher, batches):
    """The teacher's logits on `batches` of model inputs (no dropout)."""
    return np.concatenate([
        keras.ops.convert_to_numpy(teacher(x, training=False))
        for x in batches
    ]).astype("float32")
