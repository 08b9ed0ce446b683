"""Partial-layer training: which layers train, and that frozen ones cost
no update and no optimizer state."""

import numpy as np
import pytest

import tiny
from painless_tf import engine
from painless_tf import freezing
from painless_tf import optimization

EMBEDDINGS = ["embeddings_layer_norm", "position_embedding",
              "segment_embedding", "token_embedding"]
HEAD = ["logits", "pooled_dense"]


def trained_layers(model):
    """Top-level names of the layers whose variables train."""
    return sorted({v.path.split("/")[0] for v in model.trainable_variables})


def test_static_and_gradual_stages_per_epoch():
    static = freezing.FreezeOptions(trainable_layers=2)
    assert static.stages(num_layers=6, epochs=3) == (2, 2, 2)
    assert freezing.FreezeOptions().stages(num_layers=6, epochs=2) == (
        "all", "all")
    gradual = freezing.FreezeOptions(unfreeze="gradual")
    # From the head alone, one more layer per epoch; past the last encoder
    # layer the embeddings unfreeze too ("all").
    assert gradual.stages(num_layers=2, epochs=5) == (0, 1, 2, "all", "all")
    assert gradual.first_stage == 0
    from_two = freezing.FreezeOptions(trainable_layers="2", unfreeze="gradual")
    assert from_two.stages(num_layers=6, epochs=3) == (2, 3, 4)
    # The optimizer is built on the widest set of the run.
    assert freezing.widest(from_two.stages(num_layers=6, epochs=3)) == 4
    assert freezing.widest(gradual.stages(num_layers=2, epochs=4)) == "all"


def test_options_name_the_flag_and_the_fix():
    with pytest.raises(ValueError, match=r"--trainable_layers='-1'.*'all'"):
        freezing.FreezeOptions(trainable_layers="-1")
    with pytest.raises(ValueError, match="--unfreeze='slow'"):
        freezing.FreezeOptions(unfreeze="slow")
    with pytest.raises(
        ValueError,
        match=r"--trainable_layers=7 exceeds the 6 encoder layers of mini\. "
              r"Pass --trainable_layers between 0 and 6",
    ):
        freezing.FreezeOptions(trainable_layers=7).check(6, model="mini")
    assert not freezing.FreezeOptions().partial
    assert freezing.FreezeOptions(trainable_layers=0).partial


def test_layer_groups_of_a_bert_classifier():
    groups = freezing.layer_groups(tiny.tiny_classifier(2))
    assert sorted(layer.name for layer in groups.embeddings) == sorted(
        EMBEDDINGS + ["embeddings_add", "embeddings_dropout"])
    assert [layer.name for layer in groups.encoder] == [
        "transformer_layer_0", "transformer_layer_1"]
    assert [layer.name for layer in groups.head] == [
        "pooled_dense", "classifier_dropout", "logits"]


@pytest.mark.parametrize(
    "trainable_layers, expected",
    [
        (0, HEAD),
        (1, HEAD + ["transformer_layer_1"]),
        (2, HEAD + ["transformer_layer_0", "transformer_layer_1"]),
        ("all", sorted(EMBEDDINGS + HEAD + ["transformer_layer_0",
                                            "transformer_layer_1"])),
    ],
)
def test_set_trainable_keeps_the_top_layers_and_the_head(
    trainable_layers, expected
):
    model = tiny.tiny_classifier(2)
    line = freezing.set_trainable(model, trainable_layers)
    assert trained_layers(model) == sorted(expected)
    if trainable_layers == 1:
        assert line.startswith("top 1 of 2 encoder layers and the head; "
                               "embeddings and 1 encoder layer frozen (")
    if trainable_layers == 0:
        assert line.startswith("the head only; embeddings and 2 encoder "
                               "layers frozen (")


def test_gradual_stages_set_the_trainable_layers_of_each_epoch():
    model = tiny.tiny_classifier(2)
    options = freezing.FreezeOptions(unfreeze="gradual")
    per_epoch = []
    for stage in options.stages(num_layers=2, epochs=4):
        freezing.set_trainable(model, stage)
        per_epoch.append(trained_layers(model))
    assert per_epoch == [
        HEAD,
        sorted(HEAD + ["transformer_layer_1"]),
        sorted(HEAD + ["transformer_layer_0", "transformer_layer_1"]),
        sorted(EMBEDDINGS + HEAD + ["transformer_layer_0",
                                    "transformer_layer_1"]),
    ]


def slot_owners(optimizer, model):
    """Model variable paths that own an optimizer slot (by slot name)."""
    names = {v.path.replace("/", "_"): v.path for v in model.variables}
    owners = set()
    for slot in optimizer.variables:
        for name, path in names.items():
            if slot.name.startswith(name + "_"):
                owners.add(path)
    return owners


def test_frozen_layers_get_no_update_and_no_optimizer_slots():
    model = tiny.tiny_classifier(2)
    freezing.set_trainable(model, 1)
    frozen = [v for v in model.weights
              if not any(v is t for t in model.trainable_variables)]
    assert {v.path.split("/")[0] for v in frozen} >= {
        "token_embedding", "transformer_layer_0"}
    before = {v.path: np.array(v.numpy()) for v in model.weights}
    trainer = engine.Trainer(model, accumulation_steps=2)
    trainer.compile(optimizer=optimization.make_optimizer(
        "adamw", learning_rate=1e-2))
    # As run.fit_and_save does: the optimizer is built on the trainable set.
    trainer.optimizer.build(trainer.trainable_variables)
    x, y, w = tiny.token_batch(16, num_classes=2)
    trainer.fit(tiny.dataset(x, y, w, 8), epochs=1, verbose=0)
    assert int(trainer.optimizer.iterations.numpy()) == 2

    for variable in frozen:
        np.testing.assert_array_equal(before[variable.path], variable.numpy())
    moved = [v for v in model.trainable_variables
             if not np.array_equal(before[v.path], v.numpy())]
    assert {v.path.split("/")[0] for v in moved} == {
        "transformer_layer_1", "pooled_dense", "logits"}
    # Adam keeps two slots (first and second moment) per trained variable,
    # and none for a frozen one.
    owners = slot_owners(trainer.optimizer, model)
    assert owners == {v.path for v in model.trainable_variables}
    slots = [v for v in trainer.optimizer.variables
             if v.name.endswith(("_momentum", "_velocity"))]
    assert len(slots) == 2 * len(model.trainable_variables)


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(freezing).failed == 0
