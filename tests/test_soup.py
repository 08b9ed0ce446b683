"""Weight averaging (`painless_tf/soup.py`): the soup's weights are the
hand-computed average of the checkpoints it took, the greedy rule keeps
an ingredient only when the average validates better, and the best
checkpoint alone is kept when no average beats it."""

import dataclasses

import numpy as np
import pytest

import tiny
from painless_tf import checkpointing
from painless_tf import selection
from painless_tf import soup


def test_average_is_the_mean_of_float_weights_only():
    a = [np.array([[1.0, 2.0]], "float32"), np.array([7], "int64")]
    b = [np.array([[3.0, 6.0]], "float32"), np.array([9], "int64")]
    c = [np.array([[5.0, 1.0]], "float32"), np.array([1], "int64")]
    mean = soup.average([a, b, c])
    np.testing.assert_allclose(mean[0], [[3.0, 3.0]])
    assert mean[0].dtype == np.float32
    assert mean[1].tolist() == [7]


def _checkpoints(tmp_path, model, values, scale):
    """Saves 3 checkpoints of `model`: the head's kernel filled with
    `scale[i]`, and a selection record with best value `values[i]`."""
    manager = checkpointing.CheckpointManager(
        str(tmp_path), {"model": model}, keep=3)
    kernel = next(v for v in model.weights if v.path == "logits/kernel")
    start = [w.copy() for w in model.get_weights()]
    for index, (value, fill) in enumerate(zip(values, scale)):
        model.set_weights(start)
        kernel.assign(np.full(kernel.shape, fill, "float32"))
        record = selection.Record(best_value=value, best_update=index + 1)
        manager.save(checkpointing.Position(
            updates=index + 1, selection=record.to_dict()), signature={})
    return manager, kernel, start


@pytest.mark.parametrize("target,ingredients,kept", [
    # Validation peaks where the kernel is 2.0: the best checkpoint (3.0)
    # averaged with the next best (1.0) gives 2.0; adding 5.0 is worse.
    (2.0, [3, 2], True),
    # Peaks at 3.0: every average is worse than the best alone.
    (3.0, [3], False),
])
def test_the_greedy_soup_keeps_an_ingredient_only_if_it_helps(
        tmp_path, target, ingredients, kept):
    model = tiny.tiny_classifier(2)
    # Updates 1, 2, 3 validated 0.5, 0.7, 0.9: 3 is the best, then 2, 1.
    manager, kernel, start = _checkpoints(tmp_path, model, [0.5, 0.7, 0.9],
                                          [5.0, 1.0, 3.0])
    criterion = selection.Criterion("val_accuracy", "max")
    evaluated = []

    def evaluate():
        value = -abs(float(np.mean(kernel.numpy())) - target)
        evaluated.append(value)
        return value

    result = soup.greedy_soup(model, manager, criterion, evaluate)
    assert result["soup_ingredients"] == ingredients
    assert result["soup_kept"] is kept
    # The best alone, then one average per other checkpoint.
    assert len(evaluated) == 3
    fills = {1: 5.0, 2: 1.0, 3: 3.0}
    expected = np.mean([fills[u] for u in ingredients])
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=1e-6)
    # Every other weight is the (equal) checkpoints' value.
    for weight, original in zip(model.get_weights(), start):
        if weight.shape != tuple(kernel.shape):
            np.testing.assert_array_equal(weight, original)
    assert ("better than the best" in result["soup_reason"]) is kept


def test_a_minimized_metric_sorts_the_other_way(tmp_path):
    model = tiny.tiny_classifier(2)
    manager, kernel, _ = _checkpoints(tmp_path, model, [0.9, 0.7, 0.5],
                                      [3.0, 1.0, 5.0])
    criterion = selection.Criterion("val_loss", "min")
    order = []

    def evaluate():
        order.append(float(np.mean(kernel.numpy())))
        return 0.0  # no average is better (not smaller)

    result = soup.greedy_soup(model, manager, criterion, evaluate)
    # Lowest loss first: update 3 (5.0), then 2 (1.0), then 1 (3.0).
    assert result["soup_ingredients"] == [3]
    assert order == pytest.approx([5.0, 3.0, 4.0])


def test_no_checkpoint_makes_no_soup(tmp_path):
    model = tiny.tiny_classifier(2)
    manager = checkpointing.CheckpointManager(str(tmp_path), {"model": model})
    assert soup.greedy_soup(
        model, manager, selection.Criterion("val_accuracy"), lambda: 0.0) == {}
    assert dataclasses.asdict(selection.Record())["best_value"] is None


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(soup).failed == 0
