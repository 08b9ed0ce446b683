"""Weight averaging by a moving average (`painless_tf/ema.py`): the average
the optimizer keeps is the hand-computed EMA of the weights after each
optimizer update (one per update however many micro-batches and replicas
it sums, none for a skipped update), it resumes exactly from a
checkpoint, and the end keeps it only where it validates better."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tiny
from painless_tf import checkpointing
from painless_tf import ema
from painless_tf import selection
from painless_tf import trainers

MOMENTUM = 0.6  # far from 0 and 1, so a wrong average is visible
EXAMPLES = 24
BATCH = 8  # three updates per epoch


def _rate():
    # 0.05 down to 0.01 over the 6 updates of 2 epochs.
    return keras.optimizers.schedules.PolynomialDecay(0.05, 6, 0.01)


def _trainer(strategy=None, *, k=1, precision="float32"):
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(3)
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        trainer = trainers.make_trainer(
            tiny.tiny_classifier(), learning_rate=_rate(), optimizer="sgd",
            accumulation_steps=k, ema_momentum=MOMENTUM)
    return trainer


class _AfterEachUpdate(keras.callbacks.Callback):
    """The weights after each applied update (a step a loss scale skipped
    applied none)."""

    def __init__(self):
        super().__init__()
        self.weights, self.steps = [], 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if int(self.model.optimizer.iterations.numpy()) > len(self.weights):
            self.weights.append(tiny.weights_of(self.model))


def _hand_ema(weight_lists, momentum):
    average = [w.copy() for w in weight_lists[0]]
    for weights in weight_lists[1:]:
        average = [momentum * a + (1 - momentum) * w
                   for a, w in zip(average, weights)]
    return average


def _averages(trainer):
    return [np.array(a.numpy(), "float64")
            for a in ema.averages(trainer.optimizer)]


@pytest.mark.parametrize("strategy,k,precision", [
    ("none", 1, "float32"), ("none", 4, "float32"), ("mirrored", 2, "float32"),
    ("none", 2, "mixed_float16"), ("none", 2, "mixed_bfloat16")])
def test_the_average_is_the_hand_computed_ema_of_each_update(strategy, k,
                                                             precision):
    trainer = _trainer(tiny.mirrored() if strategy == "mirrored" else None,
                       k=k, precision=precision)
    if precision == "mixed_float16":
        assert isinstance(trainer.optimizer,
                          keras.optimizers.LossScaleOptimizer)
    seen = _AfterEachUpdate()
    trainer.fit(tiny.dataset(*tiny.token_batch(EXAMPLES), BATCH), epochs=2,
                verbose=0, callbacks=[seen])
    assert seen.steps == 6
    # mixed_float16's first scale (2**15) overflows, and that step is
    # skipped: then the average starts at the next update.
    assert int(trainer.optimizer.iterations.numpy()) == len(seen.weights) >= 5
    # The weights moved, so the average differs from the last weights.
    assert tiny.max_abs_diff(seen.weights[-1], seen.weights[0]) > 1e-3
    want = _hand_ema(seen.weights, MOMENTUM)
    got = _averages(trainer)
    assert tiny.max_abs_diff(got, want) <= 1e-6
    assert tiny.max_abs_diff(got, seen.weights[-1]) > 1e-4


def test_a_skipped_update_leaves_the_average_alone():
    trainer = _trainer(precision="mixed_float16")
    trainer.optimizer.build(trainer.trainable_variables)
    trainer.optimizer.dynamic_scale.assign(2.0**10)  # no overflow at first
    trainer.fit(tiny.dataset(*tiny.token_batch(8, seed=1), 8), epochs=1,
                verbose=0)
    assert int(trainer.optimizer.iterations.numpy()) == 1
    before = _averages(trainer)
    x, y, w = tiny.token_batch(8)
    w[5] = np.inf
    trainer.fit(tiny.dataset(x, y, w, 8), epochs=1, verbose=0)
    assert int(trainer.optimizer.iterations.numpy()) == 1
    assert tiny.max_abs_diff(_averages(trainer), before) == 0.0


def test_a_resumed_average_equals_the_uninterrupted_one(tmp_path):
    data = tiny.dataset(*tiny.token_batch(EXAMPLES), BATCH)
    straight = _trainer(k=2)
    straight.fit(data, epochs=2, verbose=0)

    first = _trainer(k=2)
    first.fit(data, epochs=1, verbose=0)
    manager = checkpointing.CheckpointManager(
        str(tmp_path), {"model": first.model, "optimizer": first.optimizer})
    manager.save(checkpointing.Position(epoch=1, updates=3), signature={})

    resumed = _trainer(k=2)
    resumed.optimizer.build(resumed.trainable_variables)
    checkpointing.CheckpointManager(
        str(tmp_path), {"model": resumed.model,
                        "optimizer": resumed.optimizer}).restore_latest()
    assert tiny.max_abs_diff(_averages(resumed), _averages(first)) == 0.0
    resumed.fit(data, initial_epoch=1, epochs=2, verbose=0)
    assert tiny.max_abs_diff(_averages(resumed), _averages(straight)) <= 1e-7
    assert tiny.max_abs_diff(tiny.weights_of(resumed.model),
                             tiny.weights_of(straight.model)) <= 1e-7


@pytest.mark.parametrize("better", [True, False])
def test_the_average_is_kept_only_where_it_validates_better(better):
    trainer = _trainer()
    trainer.fit(tiny.dataset(*tiny.token_batch(EXAMPLES), BATCH), epochs=1,
                verbose=0)
    best = tiny.weights_of(trainer.model)
    average = _averages(trainer)
    assert tiny.max_abs_diff(best, average) > 1e-4
    criterion = selection.Criterion("val_accuracy", "max")
    seen = []

    def evaluate():
        seen.append(tiny.weights_of(trainer.model))
        return 0.9 if better else 0.5

    result = ema.keep_better(trainer, criterion, 0.7, evaluate)
    # The average was validated, then kept or replaced by the best weights.
    assert tiny.max_abs_diff(seen[0], average) <= 1e-7
    assert result["ema_kept"] is better
    assert result["ema_value"] == (0.9 if better else 0.5)
    assert result["ema_momentum"] == pytest.approx(MOMENTUM)
    kept = tiny.weights_of(trainer.model)
    assert tiny.max_abs_diff(kept, average if better else best) <= 1e-7
    assert ("not better than the best" in result["ema_reason"]) is not better


def test_an_optimizer_without_an_average_says_how_to_get_one():
    trainer = trainers.make_trainer(tiny.tiny_classifier(), learning_rate=0.1)
    with pytest.raises(ValueError, match="--weight_averaging=ema"):
        ema.averages(trainer.optimizer)


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(ema).failed == 0
