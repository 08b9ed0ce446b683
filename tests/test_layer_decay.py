"""Layer-wise learning-rate decay (`painless_tf/layer_decay.py`).

Claims: each variable gets `decay ** depth` of the rate (the head 1, the
embeddings the lowest); one update with the factors moves each variable by
exactly its factor times the move of the same update without them, weight
decay included, for every optimizer whose first step is linear in the rate;
and the exactness of the engine holds with the factors on: k micro-batches
and 2 replicas equal one big batch, and a run restored from a checkpoint
equals the uninterrupted one.
"""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import families
import tiny
from painless_tf import checkpointing
from painless_tf import layer_decay
from painless_tf import optimization
from painless_tf import trainers

DECAY = 0.8


def test_each_layer_gets_decay_to_the_power_of_its_depth():
    classifier = tiny.tiny_classifier(2)
    factors = layer_decay.multipliers(classifier, DECAY)
    assert set(factors) == {v.path for v in classifier.trainable_variables}
    for path, factor in factors.items():
        top = path.split("/")[0]
        if top in ("logits", "pooled_dense"):
            expected = 1.0
        elif top == "transformer_layer_1":
            expected = DECAY
        elif top == "transformer_layer_0":
            expected = DECAY ** 2
        else:
            assert top.endswith(("embedding", "embeddings_layer_norm")), path
            expected = DECAY ** 3
        assert factor == pytest.approx(expected, rel=1e-12), path


@pytest.mark.parametrize("family", [f for f in families.FAMILIES
                                    if f != "albert"])
def test_every_stacked_family_has_its_layers_found(family):
    task = _classifier(family)
    factors = layer_decay.multipliers(task, 0.5)
    assert set(factors) == {v.path for v in task.trainable_variables}
    # Two encoder layers: 0.5 and 0.25; below them the embeddings, 0.125.
    assert set(factors.values()) <= {1.0, 0.5, 0.25, 0.125}
    assert {0.5, 0.25, 0.125} <= set(factors.values())


def _classifier(family):
    names = {"bert": "Bert", "distil_bert": "DistilBert",
             "roformer_v2": "RoformerV2", "albert": "Albert",
             "f_net": "FNet", "deberta_v3": "DebertaV3",
             "xlm_roberta": "XLMRoberta", "roberta": "Roberta"}
    assert set(names) == set(families.FAMILIES)
    return getattr(keras_hub.models, f"{names[family]}TextClassifier")(
        backbone=families._backbone(family, 100), num_classes=2,
        preprocessor=None)


def test_a_shared_block_and_a_bad_decay_are_refused():
    task = _classifier("albert")
    with pytest.raises(ValueError, match="ALBERT shares one block"):
        layer_decay.multipliers(task, 0.9)
    for bad in (0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="must be in \\(0, 1\\]"):
            layer_decay.multipliers(tiny.tiny_classifier(2), bad)


def _one_update(name, factors, weight_decay):
    """Weights before and after one update of a fresh tiny classifier."""
    keras.utils.set_random_seed(11)
    classifier = tiny.tiny_classifier(2)
    x, y, _ = tiny.token_batch(8, num_classes=2, seed=3)
    optimizer = optimization.make_optimizer(
        name, learning_rate=0.05, warmup_steps=0, total_steps=100,
        weight_decay=weight_decay, clip_norm=None,
        momentum=0.0, rate_multipliers=factors)
    variables = classifier.trainable_variables
    before = [v.numpy().copy() for v in variables]
    with tf.GradientTape() as tape:
        logits = classifier(x, training=False)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            y, logits)
    optimizer.apply(tape.gradient(loss, variables), variables)
    return [v.path for v in variables], before, [v.numpy() for v in variables]


# SGD without momentum moves by -lr g, Adam's first step by -lr g/|g| (up to
# epsilon), AdamW adds -lr wd w, and LAMB's trust ratio does not depend on
# the rate: each first step is linear in the rate.
@pytest.mark.parametrize("name,weight_decay", [
    ("sgd", 0.0), ("adam", 0.0), ("adamw", 0.01), ("lamb", 0.0)])
def test_one_update_moves_each_variable_by_its_factor(name, weight_decay):
    factors = layer_decay.multipliers(tiny.tiny_classifier(2), DECAY)
    paths, before, after_plain = _one_update(name, None, weight_decay)
    _, _, after_scaled = _one_update(name, factors, weight_decay)
    moved = 0
    for path, start, one, factored in zip(paths, before, after_plain,
                                          after_scaled):
        step, scaled_step = one - start, factored - start
        if np.abs(step).max() < 1e-7:
            continue  # nothing moved, e.g. an unused position embedding
        moved += 1
        # Both steps are differences of float32 weights: exact to the
        # weights' rounding (2 ulps of the largest), and relatively 1e-3.
        ulp = np.finfo(np.float32).eps * np.abs(start).max()
        np.testing.assert_allclose(scaled_step, factors[path] * step,
                                   rtol=1e-3, atol=2 * ulp, err_msg=path)
    assert moved > 20


def test_weight_decay_takes_the_factor_too():
    # No gradient reaches a variable through weight decay alone: with a
    # zero gradient the whole AdamW step is -lr * factor * wd * w.
    keras.utils.set_random_seed(2)
    classifier = tiny.tiny_classifier(2)
    factors = layer_decay.multipliers(classifier, DECAY)
    optimizer = optimization.make_optimizer(
        "adamw", learning_rate=0.1, warmup_steps=0, total_steps=100,
        weight_decay=0.5, clip_norm=None, rate_multipliers=factors)
    variables = classifier.trainable_variables
    before = [v.numpy().copy() for v in variables]
    optimizer.build(variables)
    lr = float(optimizer.learning_rate)  # the rate of update 0
    optimizer.apply([tf.zeros_like(v) for v in variables], variables)
    checked = 0
    for v, start in zip(variables, before):
        if any(n in v.path for n in optimization.NO_DECAY_NAMES):
            np.testing.assert_array_equal(v.numpy(), start)
            continue
        np.testing.assert_allclose(
            v.numpy(), start * (1 - lr * factors[v.path] * 0.5), rtol=1e-6,
            err_msg=v.path)
        checked += 1
    assert checked >= 8


def _train(*, strategy=None, k=1, data=None, epochs=2, fused_update="auto",
           xla=False, precision="float32"):
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(7)
    strategy = strategy or tf.distribute.get_strategy()
    x, y, w = data or tiny.token_batch(24)
    with strategy.scope():
        classifier = tiny.tiny_classifier()
        trainer = trainers.make_trainer(
            classifier, learning_rate=0.01, optimizer="adamw",
            accumulation_steps=k, layer_decay=DECAY,
            fused_update=fused_update, xla=xla)
    trainer.fit(tiny.dataset(x, y, w, 8), epochs=epochs, verbose=0)
    assert trainer.optimizer.rate_multipliers
    return trainer


@pytest.mark.slow
def test_accumulated_replicated_and_fused_equal_one_big_batch_with_factors():
    reference = tiny.weights_of(_train().model)
    for kwargs, tolerance in (
            ({"k": 4}, 1e-6),
            ({"strategy": tiny.mirrored()}, 1e-6),
            ({"strategy": tiny.mirrored(), "k": 2}, 1e-6),
            # The fused (XLA-compiled) update, and XLA with bfloat16.
            ({"fused_update": True}, 1e-6),
            ({"xla": True, "precision": "mixed_bfloat16", "k": 2}, 2e-3)):
        weights = tiny.weights_of(_train(**kwargs).model)
        diff = tiny.max_abs_diff(reference, weights)
        assert diff <= tolerance, (kwargs, diff)


@pytest.mark.slow
def test_a_restored_run_with_the_factors_equals_the_uninterrupted(tmp_path):
    x, y, w = tiny.token_batch(16, seed=4)
    halves = [tiny.dataset(*(tf.nest.map_structure(lambda t: t[s], (x, y, w))),
                           4) for s in (slice(0, 8), slice(8, 16))]

    def trainer():
        keras.utils.set_random_seed(3)
        return trainers.make_trainer(
            tiny.tiny_classifier(), learning_rate=0.01, accumulation_steps=2,
            layer_decay=DECAY)

    def manager(t):
        return checkpointing.CheckpointManager(
            str(tmp_path), {"model": t.model, "optimizer": t.optimizer})

    uninterrupted = trainer()
    uninterrupted.fit(halves[0], verbose=0)
    manager(uninterrupted).save(checkpointing.Position(updates=2),
                                signature={})
    uninterrupted.fit(halves[1], verbose=0)
    resumed = trainer()
    resumed.optimizer.build(resumed.trainable_variables)
    assert manager(resumed).restore_latest().updates == 2
    resumed.fit(halves[1], verbose=0)
    assert tiny.max_abs_diff(tiny.weights_of(uninterrupted.model),
                             tiny.weights_of(resumed.model)) <= 1e-6
    # The factors changed the run: it differs from one rate for all.
    keras.utils.set_random_seed(3)
    flat = trainers.make_trainer(tiny.tiny_classifier(), learning_rate=0.01,
                                 accumulation_steps=2)
    flat.fit(halves[0], verbose=0)
    flat.fit(halves[1], verbose=0)
    assert tiny.max_abs_diff(tiny.weights_of(flat.model),
                             tiny.weights_of(resumed.model)) > 1e-4


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(layer_decay).failed == 0
