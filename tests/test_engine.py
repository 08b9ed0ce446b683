"""Equivalence tests of the accumulating engine.

Claims, each against a reference run (one device, float32, one big batch per
update, no XLA) on the same examples:
- k micro-batches == one big batch;
- 2 replicas == 1 device;
- XLA on == XLA off;
- the fused (XLA-compiled) optimizer update == the unfused one;
- mixed_float16 / mixed_bfloat16 ~= float32 within a stated tolerance.
"""

import gc
import itertools
import weakref

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import func_graph

import tiny
from painless_tf.engine import Trainer

GLOBAL_BATCH = 8
EXAMPLES = 24  # three updates per epoch
EPOCHS = 2

# Measured differences after 6 updates are ~1e-8 in float32. Mixed precision
# computes activations in 16 bits: float16 keeps 11 significant bits (about
# 5e-4 relative), bfloat16 8 bits (about 4e-3 relative); the weights
# (float32) drift from the float32 run by at most these amounts here.
TOLERANCE = {"float32": 1e-6, "mixed_float16": 2e-4, "mixed_bfloat16": 2e-3}


def train(
    *,
    strategy=None,
    k=1,
    precision="float32",
    xla=False,
    optimizer="sgd",
    data=None,
    batch=GLOBAL_BATCH,
    fused_update="auto",
):
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(7)
    strategy = strategy or tf.distribute.get_strategy()
    x, y, w = data or tiny.token_batch(EXAMPLES)
    with strategy.scope():
        trainer = Trainer(tiny.tiny_classifier(), accumulation_steps=k,
                          xla=xla, fused_update=fused_update)
        opt = tiny.optimizer(optimizer)
        if precision == "mixed_float16":
            # A start scale that does not overflow on the first update, so
            # both runs make the same number of updates (skips are tested
            # on their own below).
            opt = keras.optimizers.LossScaleOptimizer(opt, initial_scale=2**10)
        trainer.compile(
            optimizer=opt,
            weighted_metrics=["sparse_categorical_accuracy"],
        )
    history = trainer.fit(
        tiny.dataset(x, y, w, batch), epochs=EPOCHS, verbose=0
    )
    return trainer, tiny.weights_of(trainer.model), history.history["loss"]


@pytest.fixture(scope="module")
def reference():
    cache = {}

    def get(optimizer="sgd"):
        if optimizer not in cache:
            keras.backend.clear_session()
            cache[optimizer] = train(optimizer=optimizer)[1:]
        return cache[optimizer]

    return get


MATRIX = list(
    itertools.product(
        ["none", "mirrored"],
        ["float32", "mixed_float16", "mixed_bfloat16"],
        [False, True],
        [1, 4],
    )
)


@pytest.mark.parametrize("strategy,precision,xla,k", MATRIX)
def test_matrix_matches_one_big_batch_float32(
    reference, strategy, precision, xla, k
):
    ref_weights, ref_loss = reference()
    if strategy == "mirrored" and k == 4:
        k = 2  # 8 rows per update over 2 replicas: 4 rows, 2 micro-batches
    trainer, weights, loss = train(
        strategy=tiny.mirrored() if strategy == "mirrored" else None,
        k=k,
        precision=precision,
        xla=xla,
    )
    assert int(trainer.optimizer.iterations.numpy()) == EPOCHS * 3
    diff = tiny.max_abs_diff(ref_weights, weights)
    assert diff <= TOLERANCE[precision], diff
    # The loss curve tracks float32.
    np.testing.assert_allclose(loss, ref_loss, rtol=10 * TOLERANCE[precision])


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("strategy,k", [("none", 4), ("mirrored", 1), ("mirrored", 2)])
def test_optimizers_accumulated_and_replicated_equal_big_batch(
    reference, optimizer, strategy, k
):
    ref_weights, _ = reference(optimizer)
    _, weights, _ = train(
        strategy=tiny.mirrored() if strategy == "mirrored" else None,
        k=k,
        optimizer=optimizer,
    )
    assert tiny.max_abs_diff(ref_weights, weights) <= 1e-6


def test_uneven_micro_batches_are_exact(reference):
    # 24 examples in batches of 10: updates of 10, 10 and 4 rows. With k=4
    # the micro-batches are 3, 3, 3, 1 rows (then 1, 1, 1, 1): uneven.
    _, ref_weights, _ = train(batch=10)
    _, weights, _ = train(batch=10, k=4)
    assert tiny.max_abs_diff(ref_weights, weights) <= 1e-6


def test_zero_weight_filler_rows_change_nothing():
    x, y, w = tiny.token_batch(EXAMPLES)
    # Reference: 4 updates of 6 real rows each.
    _, ref_weights, _ = train(data=(x, y, w), batch=6)
    # The same updates as the pipeline makes them: each batch of 8 holds the
    # same 6 rows plus 2 zero-weight fillers (copies of real rows), k=2.
    index = np.concatenate(
        [np.r_[i:i + 6, i:i + 2] for i in range(0, EXAMPLES, 6)]
    )
    filler = np.tile(np.r_[np.ones(6), np.zeros(2)], 4).astype("float32")
    data = ({key: v[index] for key, v in x.items()}, y[index],
            w[index] * filler)
    _, weights, _ = train(data=data, batch=8, k=2)
    assert tiny.max_abs_diff(ref_weights, weights) <= 1e-6


def token_level_model():
    inputs = keras.Input((6, 4))
    hidden = keras.layers.Dense(5, activation="tanh")(inputs)
    outputs = keras.layers.Dense(3)(hidden)
    return keras.Model(inputs, outputs)


def test_token_level_loss_has_no_mean_of_means():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 6, 4)).astype("float32")
    y = rng.integers(0, 3, (16, 6)).astype("int32")
    # Very uneven numbers of real tokens per example.
    lengths = np.array([1, 6, 2, 6, 1, 1, 6, 3, 2, 5, 1, 6, 4, 1, 2, 6])
    mask = (np.arange(6)[None, :] < lengths[:, None]).astype("float32")

    def run(k):
        keras.utils.set_random_seed(1)
        trainer = Trainer(token_level_model(), accumulation_steps=k)
        trainer.compile(optimizer=keras.optimizers.SGD(0.5))
        trainer.fit(tiny.dataset(x, y, mask, 16), epochs=3, verbose=0)
        return tiny.weights_of(trainer.model)

    big, accumulated = run(1), run(4)
    assert tiny.max_abs_diff(big, accumulated) <= 1e-6

    # A mean of per-micro-batch means would differ: check the test can fail.
    keras.utils.set_random_seed(1)
    model = token_level_model()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        per_token = loss_fn.call(y, model(x))
        means = [
            tf.reduce_sum(per_token[i:i + 4] * mask[i:i + 4])
            / mask[i:i + 4].sum()
            for i in range(0, 16, 4)
        ]
        mean_of_means = tf.add_n(means) / 4
        exact = tf.reduce_sum(per_token * mask) / mask.sum()
    g1, g2 = tape.gradient([mean_of_means], model.trainable_variables), None
    with tf.GradientTape() as tape:
        per_token = loss_fn.call(y, model(x))
        exact = tf.reduce_sum(per_token * mask) / mask.sum()
    g2 = tape.gradient(exact, model.trainable_variables)
    assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(g1, g2)) > 1e-3


@pytest.mark.parametrize("strategy,k", [("none", 1), ("none", 2),
                                        ("mirrored", 2)])
def test_non_finite_micro_batch_skips_whole_update(strategy, k):
    keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tiny.mirrored() if strategy == "mirrored" else tf.distribute.get_strategy()
    x, y, w = tiny.token_batch(8)
    w[5] = np.inf  # one micro-batch on one replica overflows
    with strategy.scope():
        trainer = Trainer(tiny.tiny_classifier(), accumulation_steps=k)
        trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    trainer.fit(tiny.dataset(*tiny.token_batch(8, seed=1), 8), epochs=1, verbose=0)
    before = tiny.weights_of(trainer.model)
    scale_before = float(trainer.optimizer.dynamic_scale.numpy())
    iterations = int(trainer.optimizer.iterations.numpy())

    trainer.fit(tiny.dataset(x, y, w, 8), epochs=1, verbose=0)

    assert tiny.max_abs_diff(before, tiny.weights_of(trainer.model)) == 0.0
    assert float(trainer.optimizer.dynamic_scale.numpy()) == scale_before / 2
    assert int(trainer.optimizer.iterations.numpy()) == iterations
    for accumulator in trainer._accumulators:
        assert not np.any(accumulator.numpy())


def test_a_step_is_one_optimizer_update():
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(
                (batch, int(self.model.optimizer.iterations.numpy()),
                 float(self.model.optimizer.learning_rate.numpy()))
            )

    schedule = keras.optimizers.schedules.PolynomialDecay(0.1, 6, 0.0)
    trainer = Trainer(tiny.tiny_classifier(), accumulation_steps=4)
    trainer.compile(optimizer=keras.optimizers.SGD(schedule))
    trainer.fit(
        tiny.dataset(*tiny.token_batch(EXAMPLES), GLOBAL_BATCH),
        epochs=2,
        verbose=0,
        callbacks=[Record()],
    )
    # 3 updates per epoch (not 12 micro-batches); the schedule counts updates.
    assert [s[0] for s in seen] == [0, 1, 2, 0, 1, 2]
    assert [s[1] for s in seen] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(
        [s[2] for s in seen], [0.1 * (1 - i / 6) for i in range(1, 7)],
        rtol=1e-6,
    )


def test_evaluate_weights_rows_like_training():
    x, y, w = tiny.token_batch(EXAMPLES)
    results = []
    for strategy in (tf.distribute.get_strategy(), tiny.mirrored()):
        keras.utils.set_random_seed(3)
        with strategy.scope():
            trainer = Trainer(tiny.tiny_classifier())
            trainer.compile(optimizer="sgd",
                            weighted_metrics=["sparse_categorical_accuracy"])
        results.append(
            trainer.evaluate(tiny.dataset(x, y, w, 8), verbose=0,
                             return_dict=True)
        )
    model = trainer.model
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    per_example = loss_fn.call(y, model(x)).numpy()
    expected = float((per_example * w).sum() / w.sum())
    for result in results:
        np.testing.assert_allclose(result["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(
        results[0]["sparse_categorical_accuracy"],
        results[1]["sparse_categorical_accuracy"],
        rtol=1e-6,
    )


@pytest.mark.parametrize("k", [1, 4])
def test_fused_update_matches_unfused(k):
    # One device fuses the update by default, and with k = 1 feeds it the
    # gradient directly; the unfused update is what several replicas run.
    trainer, fused, fused_loss = train(k=k, optimizer="adamw",
                                       fused_update=True)
    # k = 1 takes the direct path: no accumulators exist.
    assert (not trainer._accumulators) == (k == 1)
    _, unfused, unfused_loss = train(k=k, optimizer="adamw",
                                     fused_update=False)
    assert tiny.max_abs_diff(fused, unfused) <= TOLERANCE["float32"]
    np.testing.assert_allclose(fused_loss, unfused_loss, rtol=1e-6)


@pytest.mark.parametrize("fused_update", [True, False])
def test_non_finite_update_is_skipped_and_counted_float32(fused_update):
    x, y, w = tiny.token_batch(8)
    w[3] = np.inf
    trainer = Trainer(tiny.tiny_classifier(), fused_update=fused_update)
    trainer.compile(optimizer=keras.optimizers.AdamW(1e-3))
    trainer.fit(tiny.dataset(*tiny.token_batch(8, seed=1), 8), epochs=1,
                verbose=0)
    before = tiny.weights_of(trainer.model)

    trainer.fit(tiny.dataset(x, y, w, 8), epochs=1, verbose=0)

    assert tiny.max_abs_diff(before, tiny.weights_of(trainer.model)) == 0.0
    assert int(trainer.optimizer.iterations.numpy()) == 1
    assert int(trainer.nonfinite_updates.numpy()) == 1


def test_rejects_bad_fused_update():
    with pytest.raises(ValueError, match="fused_update"):
        Trainer(tiny.tiny_classifier(), fused_update="yes")


def test_rejects_whole_model_jit():
    trainer = Trainer(tiny.tiny_classifier())
    with pytest.raises(ValueError, match="xla=True"):
        trainer.compile(optimizer="sgd", jit_compile=True)


def test_a_layer_unfrozen_between_fits_trains_from_then_on():
    # Gradual unfreezing (freezing.py): the optimizer is built once on the
    # widest trainable set and layers unfreeze between epochs; the step's
    # accumulators must follow the trainable set.
    inner = keras.Sequential([
        keras.Input((3,)), keras.layers.Dense(4, name="low"),
        keras.layers.Dense(2, name="high"),
    ])
    trainer = Trainer(inner, accumulation_steps=2)
    trainer.compile(
        optimizer=keras.optimizers.Adam(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    trainer.optimizer.build(trainer.trainable_variables)
    low = inner.get_layer("low")
    low.trainable = False
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.array([0, 1] * 4, "int32")
    before = np.array(low.kernel.numpy())
    trainer.fit(x, y, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_array_equal(before, low.kernel.numpy())
    low.trainable = True
    trainer.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert not np.allclose(before, low.kernel.numpy())
    assert int(trainer.optimizer.iterations.numpy()) == 4


def _live_graphs():
    gc.collect()
    return sum(isinstance(o, func_graph.FuncGraph) for o in gc.get_objects())


@pytest.mark.parametrize("k,fused_update", [(1, True), (2, False)])
def test_a_deleted_trainer_frees_its_variables(k, fused_update):
    # A traced graph that outlives its trainer holds the captured handles of
    # every weight and slot, so their memory stays (the LR range test's
    # trainer stayed through the whole run: distribution.py,
    # `_no_one_replica_all_reduce`). One update on the default strategy,
    # then nothing of it may stay alive.
    def train_and_delete():
        trainer = Trainer(tiny.tiny_classifier(), accumulation_steps=k,
                          fused_update=fused_update)
        trainer.compile(optimizer=keras.optimizers.AdamW(1e-3))
        trainer.fit(tiny.dataset(*tiny.token_batch(4), 4), verbose=0)
        return weakref.ref(trainer.trainable_variables[0].value)

    train_and_delete()  # Keras' and TensorFlow's own one-time graphs
    before = _live_graphs()
    variable = train_and_delete()
    assert _live_graphs() == before
    assert variable() is None


@pytest.mark.parametrize("with_preprocessor", [True, False])
def test_the_model_is_traced_symbolically_once_not_per_call(
        monkeypatch, with_preprocessor):
    # A keras-hub preprocessor and its tokenizer are never "built": Keras
    # 3.15.1 alone traced the whole model symbolically again in every
    # train_on_batch and test_on_batch call (the range test's updates and
    # probe batches).
    from keras.src import backend
    from painless_tf import trainers

    model = tiny.tiny_classifier(num_classes=2)
    if with_preprocessor:
        model.preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer=tiny.tiny_tokenizer(), sequence_length=16)
    trainer = trainers.make_trainer(model, learning_rate=1e-3)
    traced = []
    real = backend.compute_output_spec
    monkeypatch.setattr(backend, "compute_output_spec",
                        lambda *a, **k: traced.append(1) or real(*a, **k))
    x, y, w = tiny.token_batch(4, num_classes=2)
    trainer.train_on_batch(x, y, sample_weight=w)
    first = len(traced)
    assert first >= 1
    for _ in range(2):
        trainer.train_on_batch(x, y, sample_weight=w)
        trainer.test_on_batch(x, y, sample_weight=w)
    assert len(traced) == first


def test_batches_of_several_lengths_trace_the_update_once(monkeypatch):
    # train_on_batch / test_on_batch on batches of new lengths (the LR range
    # test's) reuse one trace for any length, as `fit` on buckets does.
    from painless_tf import trainers

    traced = []
    real = Trainer._replica_train_step
    monkeypatch.setattr(
        Trainer, "_replica_train_step",
        lambda self, data: traced.append(1) or real(self, data))
    trainer = trainers.make_trainer(tiny.tiny_classifier(num_classes=2),
                                    learning_rate=1e-3)
    for seq in (16, 8, 12, 16):
        x, y, w = tiny.token_batch(4, seq=seq, num_classes=2)
        trainer.train_on_batch(x, y, sample_weight=w)
        trainer.test_on_batch(x, y, sample_weight=w)
    assert len(traced) == 1
