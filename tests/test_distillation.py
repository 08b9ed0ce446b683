"""Distillation (`painless_tf/distillation.py`): the student starts as an
exact copy of the chosen teacher layers, the loss equals a hand-computed
value, and the exact engine trains it as it trains any per-example loss
(k micro-batches == one big batch)."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import families
import tiny
from painless_tf import distillation
from painless_tf.engine import Trainer

_NAMES = {"bert": "Bert", "distil_bert": "DistilBert",
          "roformer_v2": "RoformerV2", "f_net": "FNet",
          "deberta_v3": "DebertaV3", "xlm_roberta": "XLMRoberta",
          "roberta": "Roberta"}


def test_teacher_layers_keep_the_top_one_and_refuse_bad_choices():
    assert distillation.teacher_layers(12) == (1, 3, 5, 7, 9, 11)
    assert distillation.teacher_layers(5) == (0, 2, 4)
    assert distillation.teacher_layers(6, 3) == (1, 3, 5)
    assert distillation.teacher_layers(6, 1) == (5,)
    for bad in (0, 7, [2, 1], [0, 6], []):
        with pytest.raises(ValueError, match="student_layers"):
            distillation.teacher_layers(6, bad)


def _teacher(num_layers=4):
    keras.utils.set_random_seed(5)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(tiny.VOCAB), num_layers=num_layers, num_heads=2,
        hidden_dim=8, intermediate_dim=16, max_sequence_length=16,
        dropout=0.0)
    # No dropout: k micro-batches draw other masks than one big batch.
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=3, preprocessor=None, dropout=0.0)


def _assert_copied(teacher, student, chosen):
    by_path = {v.path: v.numpy() for v in teacher.weights}
    mapping = {f"_layer_{s}/": f"_layer_{t}/" for s, t in enumerate(chosen)}
    checked = 0
    for variable in student.weights:
        path = variable.path
        for old, new in mapping.items():
            if old in path and "embedding" not in path.split("/")[0]:
                path = path.replace(old, new, 1)
                break
        if path not in by_path:
            continue  # e.g. a seed generator's state, not a weight
        np.testing.assert_array_equal(variable.numpy(), by_path[path],
                                      err_msg=variable.path)
        checked += 1
    assert checked == len(student.trainable_variables)


def test_the_student_copies_every_other_teacher_layer_exactly():
    teacher = _teacher(4)
    student, chosen = distillation.student_from_teacher(teacher)
    assert chosen == (1, 3) and student.backbone.num_layers == 2
    assert type(student) is type(teacher)
    _assert_copied(teacher, student, chosen)
    # A two-layer student is a different function from the four-layer
    # teacher, and keeps all of its head.
    x, _, _ = tiny.token_batch(4)
    assert not np.allclose(teacher(x), student(x))


@pytest.mark.parametrize("family", sorted(_NAMES))
def test_every_stacked_family_gets_a_copied_student(family):
    teacher = getattr(keras_hub.models, f"{_NAMES[family]}TextClassifier")(
        backbone=families._backbone(family, 100), num_classes=2,
        preprocessor=None)
    student, chosen = distillation.student_from_teacher(teacher, 1)
    assert chosen == (1,)
    _assert_copied(teacher, student, chosen)


def test_the_loss_equals_the_hand_computed_value():
    rng = np.random.default_rng(0)
    labels = np.array([0, 2, 1, 2])
    teacher = rng.normal(size=(4, 3)) * 2
    student = rng.normal(size=(4, 3)) * 2
    temperature, alpha = 2.0, 0.3

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    p_teacher = np.exp(log_softmax(teacher / temperature))
    kl = (p_teacher * (log_softmax(teacher / temperature)
                       - log_softmax(student / temperature))).sum(axis=1)
    hard = -log_softmax(student)[np.arange(4), labels]
    expected = alpha * temperature ** 2 * kl + (1 - alpha) * hard

    loss = distillation.distillation_loss(temperature, alpha)
    got = np.asarray(loss(distillation.soft_targets(labels, teacher),
                          student.astype("float32")))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # alpha = 0 is the plain cross-entropy; a student equal to the teacher
    # has no soft-label loss.
    plain = distillation.distillation_loss(temperature, 0.0)
    np.testing.assert_allclose(
        np.asarray(plain(distillation.soft_targets(labels, teacher),
                         student.astype("float32"))), hard, rtol=1e-5)
    soft = distillation.distillation_loss(temperature, 1.0)
    np.testing.assert_allclose(
        np.asarray(soft(distillation.soft_targets(labels, teacher),
                        teacher.astype("float32"))), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        distillation.distillation_loss(0.0)


@pytest.mark.slow
def test_accumulated_distillation_equals_one_big_batch():
    teacher = _teacher(4)
    x, y, w = tiny.token_batch(24)
    targets = distillation.soft_targets(
        y, distillation.teacher_logits(teacher, [x]))

    def train(k):
        keras.utils.set_random_seed(7)
        student, _ = distillation.student_from_teacher(teacher)
        trainer = Trainer(student, accumulation_steps=k)
        trainer.compile(optimizer=keras.optimizers.SGD(0.1),
                        loss=distillation.distillation_loss(2.0, 0.5))
        trainer.fit(tf.data.Dataset.from_tensor_slices((x, targets, w))
                    .batch(8), epochs=2, verbose=0)
        return tiny.weights_of(trainer.model)

    start = tiny.weights_of(distillation.student_from_teacher(teacher)[0])
    big, accumulated = train(1), train(4)
    assert tiny.max_abs_diff(big, accumulated) <= 1e-6
    assert tiny.max_abs_diff(big, start) > 1e-4  # it trained


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(distillation).failed == 0
