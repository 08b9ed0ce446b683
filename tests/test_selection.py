"""Skewed classes and the weights kept: class weights, macro-F1, the best
validation, early stopping, and all of it exact under interruption."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tiny
from painless_tf import checkpointing
from painless_tf import evaluation
from painless_tf import hardware
from painless_tf import imbalance
from painless_tf import models
from painless_tf import plan as plan_lib
from painless_tf import run
from painless_tf import selection
from painless_tf.engine import Trainer
from painless_tf.plan import selection_choice

# === The selection and patience rules, on injected metric sequences ===


def feed(criterion, values):
    record = selection.Record()
    for step, value in enumerate(values, start=1):
        record, _ = selection.observe(criterion, record, value, step=step,
                                      epoch=step, update=10 * step)
    return record


def test_the_best_of_a_rising_then_falling_curve_is_kept():
    record = feed(selection.Criterion("val_macro_f1", "max"),
                  [0.2, 0.6, 0.9, 0.5, 0.4])
    assert (record.best_value, record.best_step, record.best_update) == (
        0.9, 3, 30)
    assert record.validations == 5 and record.since_best == 2
    assert not record.stopped  # patience 0: never


def test_a_minimized_metric_keeps_the_lowest_and_ties_keep_the_first():
    record = feed(selection.Criterion("val_loss", "min"),
                  [0.9, 0.4, 0.4, 0.7])
    assert (record.best_value, record.best_step) == (0.4, 2)


def test_patience_stops_after_that_many_validations_without_improvement():
    criterion = selection.Criterion("val_accuracy", "max", patience=2)
    assert not feed(criterion, [0.5, 0.6, 0.55]).stopped
    stopped = feed(criterion, [0.5, 0.6, 0.55, 0.58, 0.99])
    # Stopped at the 4th validation; the 5th is not looked at.
    assert stopped.stopped and stopped.last_step == 4
    assert stopped.best_value == 0.6 and stopped.validations == 4
    # An improvement resets the count.
    assert not feed(criterion, [0.5, 0.4, 0.6, 0.5]).stopped


def test_a_non_finite_value_never_improves_and_a_step_counts_once():
    criterion = selection.Criterion("val_loss", "min", patience=3)
    record = feed(criterion, [float("nan"), 0.5, float("inf")])
    assert record.best_value == 0.5 and record.since_best == 1
    again, improved = selection.observe(criterion, record, 0.1, step=3,
                                        epoch=3, update=30)
    assert not improved and again == record


def test_directions_are_generic_over_metric_names():
    assert selection.direction("val_accuracy") == "max"
    assert selection.direction("val_subset_accuracy") == "max"
    assert selection.direction("val_loss") == "min"
    assert selection.direction("val_rmse") == "min"
    assert selection.direction("val_pearson") == "max"
    plan = make_plan([50, 50], selection_metric="loss",
                     early_stopping_patience="0")
    assert selection.Criterion.for_plan(plan) == selection.Criterion(
        "val_loss", "min", 0)


def test_the_record_round_trips_through_a_checkpoint_manifest(tmp_path):
    record = feed(selection.Criterion("val_accuracy"), [0.3, 0.7, 0.1])
    v = tf.Variable(1.0)
    manager = checkpointing.CheckpointManager(str(tmp_path), {"v": v})
    manager.save(checkpointing.Position(updates=3,
                                        selection=record.to_dict()),
                 signature={})
    restored = manager.restore_latest()
    assert selection.Record.from_dict(restored.selection) == record
    assert manager.restore_latest(updates=2) is None


# === The plan's decisions ===


def make_plan(class_counts, **kwargs):
    return plan_lib.make_plan(
        environment=hardware.Environment(), precision="float32",
        num_train_examples=int(sum(class_counts)), class_counts=class_counts,
        **kwargs)


def test_skewed_classes_get_balanced_weights_and_macro_f1():
    counts = [900, 60, 40]
    plan = make_plan(counts)
    weights = np.array(plan.class_weights)
    # n / (K x count), normalized to a mean of 1 over the training examples.
    np.testing.assert_allclose(weights, 1000 / (3 * np.array(counts)))
    assert np.dot(weights, counts) / sum(counts) == pytest.approx(1.0)
    assert plan.selection_metric == "macro_f1"
    assert "22 > 3" in plan.reasons["class_weights"]
    assert "macro-F1" in plan.reasons["selection_metric"]
    assert "class_weights" in plan.table() and "selection_metric" in (
        plan.table())
    again = plan_lib.Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan


def test_balanced_classes_keep_unit_weights_and_accuracy():
    plan = make_plan([50, 40, 30])
    assert plan.class_weights is None and plan.selection_metric == "accuracy"
    assert "<= 3" in plan.reasons["class_weights"]
    assert plan.early_stopping_patience == 2 and plan.eval_every_updates == 0


def test_the_flags_override_the_imbalance_rules():
    plan = make_plan([900, 100], class_weights="none",
                     selection_metric="loss")
    assert plan.class_weights is None and plan.selection_metric == "loss"
    plan = make_plan([50, 40], class_weights="balanced")
    assert plan.class_weights is not None
    assert plan.reasons["class_weights"].startswith("set by user")


def test_long_epochs_are_validated_within_themselves():
    every, why = selection_choice._decide_eval_every("auto", 4000)
    assert every == 1000 and "4 times" in why
    assert selection_choice._decide_eval_every("auto", 1000)[0] == 0
    assert selection_choice._decide_eval_every("7", 1000)[0] == 7


@pytest.mark.parametrize("flag,value", [
    ("early_stopping_patience", "-1"), ("eval_every_updates", "often")])
def test_bad_counts_fail_in_one_line_naming_the_flag(flag, value):
    with pytest.raises(plan_lib.PlanError, match=f"--{flag}="):
        make_plan([10, 10], **{flag: value})


# === The macro-F1 metric and class-weighted batches ===


def test_macro_f1_under_two_replicas_equals_the_evaluation_report():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(37, 4)).astype("float32")
    y = rng.integers(0, 3, 37).astype("int32")
    w = np.ones(37, "float32")
    w[-5:] = 0.0  # filler rows: not counted
    strategy = tiny.mirrored()
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        trainer = Trainer(model)
        trainer.compile(optimizer="sgd",
                        weighted_metrics=[imbalance.MacroF1(3)])
    logs = trainer.evaluate(tiny.dataset(x, y, w, 8), verbose=0,
                            return_dict=True)
    predicted = model.predict(x, verbose=0).argmax(-1)
    want = evaluation.classification_report(
        y[:-5], predicted[:-5], ["a", "b", "c"])["macro_f1"]
    assert logs["macro_f1"] == pytest.approx(want, abs=1e-6)


def test_a_mid_epoch_validation_leaves_the_training_logs_alone():
    # Under 2 replicas: the epoch's training loss and metrics are those of a
    # run without the validation in the middle.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.integers(0, 3, 32).astype("int32")
    w = np.ones(32, "float32")
    seen = []

    class Validate(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            if step == 1:
                seen.append(selection.evaluate_keeping_metrics(
                    self.model, tiny.dataset(x[:8], y[:8], w[:8], 8)))

    def fit(callbacks):
        keras.utils.set_random_seed(3)
        with tiny.mirrored().scope():
            model = keras.Sequential([keras.Input((4,)),
                                      keras.layers.Dense(3)])
            trainer = Trainer(model)
            trainer.compile(optimizer="sgd",
                            weighted_metrics=[imbalance.MacroF1(3)])
        return trainer.fit(tiny.dataset(x, y, w, 8), epochs=1, verbose=0,
                           callbacks=callbacks).history

    plain, validated = fit([]), fit([Validate()])
    assert set(seen[0]) == {"val_loss", "val_macro_f1"}
    for key in ("loss", "macro_f1"):
        assert validated[key][0] == pytest.approx(plain[key][0], abs=1e-6)


def test_class_weighted_accumulated_updates_equal_one_big_batch():
    # Class weights on top of filler rows (weight 0), 2 replicas x 2
    # micro-batches against one device and one batch.
    x, y, _ = tiny.token_batch(24, num_classes=3, seed=2)
    real = np.ones(24, "float32")
    real[[5, 13, 22]] = 0.0
    class_weights = [0.4, 1.0, 2.6]

    def train(strategy, k):
        keras.utils.set_random_seed(7)
        data = imbalance.weighted_by_class(
            tiny.dataset(x, y, real, 8), class_weights)
        with strategy.scope():
            trainer = Trainer(tiny.tiny_classifier(), accumulation_steps=k)
            trainer.compile(optimizer=tiny.optimizer("sgd"))
        trainer.fit(data, epochs=1, verbose=0)
        return tiny.weights_of(trainer.model)

    reference = train(tf.distribute.get_strategy(), 1)
    assert tiny.max_abs_diff(train(tiny.mirrored(), 2), reference) <= 1e-6
    weighted = list(imbalance.weighted_by_class(
        tiny.dataset(x, y, real, 24), class_weights))[0][2].numpy()
    np.testing.assert_allclose(weighted, real * np.take(class_weights, y))


# === Tiny runs: the best model kept, early stopping, interruption ===

# Injected validation values, one per validation: the best is the 2nd,
# and patience 2 stops at the 4th.
SEQUENCE = [0.2, 0.9, 0.5, 0.4, 0.95, 0.99]


@pytest.fixture
def injected(monkeypatch):
    real = selection.observe

    def observe(criterion, record, value, **kwargs):
        return real(criterion, record, SEQUENCE[record.validations],
                    **kwargs)

    monkeypatch.setattr(selection, "observe", observe)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    preset = tiny.write_preset(root / "preset", dropout=0.1)
    rows = tiny.sentiment_rows(40, seed=5)
    train = tiny.write_csv(root / "train.csv", rows[:24])
    held = tiny.write_csv(root / "held.csv", rows[24:])
    return root, str(preset), train, held


def config(files, name):
    root, preset, train, held = files
    return run.RunConfig(
        model=preset, train_data=train, validation_data=held,
        test_data=held, epochs=4, global_batch_size=8,
        precision="float32", xla="false", max_sequence_length=16,
        learning_rate=0.01, lr_range_test_steps=0, eval_every_updates="2",
        early_stopping_patience="2", model_dir=str(root / name))


def finetune(cfg, **kwargs):
    prepared = run.prepare(cfg, environment=hardware.Environment())
    return prepared, run.fit_and_save(prepared, **kwargs)


def saved_weights(model_dir):
    model = models.load_classifier(os.path.join(model_dir, "model"),
                                   num_classes=2)
    return [v.numpy() for v in model.weights]


def checkpoint_weights(model_dir, folder):
    model = models.load_classifier(os.path.join(model_dir, "model"),
                                   num_classes=2)
    manager = checkpointing.CheckpointManager(
        os.path.join(model_dir, "checkpoints", folder), {"model": model})
    return manager.restore_latest(), [v.numpy() for v in model.weights]


@pytest.fixture(scope="module")
def uninterrupted(files):
    with pytest.MonkeyPatch.context() as patch:
        real = selection.observe
        patch.setattr(selection, "observe", lambda c, r, v, **k: real(
            c, r, SEQUENCE[r.validations], **k))
        prepared, metrics = finetune(config(files, "uninterrupted"))
    return prepared, metrics


@pytest.mark.slow
def test_the_best_validation_is_restored_and_saved(uninterrupted):
    prepared, metrics = uninterrupted
    plan = prepared.plan
    model_dir = prepared.config.model_dir
    assert metrics["selection_metric"] == "val_accuracy"
    assert metrics["best_value"] == SEQUENCE[1]
    assert metrics["validations"] == 4 and metrics["stopped_early"]
    # Stopped before the planned end: fewer updates than planned.
    assert metrics["optimizer_updates"] < plan.total_updates
    assert metrics["best_update"] < metrics["optimizer_updates"]
    with open(os.path.join(model_dir, "metrics.json")) as f:
        assert json.load(f)["best_update"] == metrics["best_update"]
    position, best = checkpoint_weights(model_dir, selection.BEST)
    assert position.updates == metrics["best_update"]
    saved = saved_weights(model_dir)
    assert tiny.max_abs_diff(saved, best) == 0.0
    # ... and not the last weights, which the newest checkpoint holds.
    newest = checkpointing.CheckpointManager(
        os.path.join(model_dir, "checkpoints"), {}).complete()[0]
    assert newest.endswith(f"update-{metrics['optimizer_updates']:09d}")
    model = models.load_classifier(os.path.join(model_dir, "model"),
                                   num_classes=2)
    tf.train.Checkpoint(model=model).read(
        os.path.join(newest, "state")).expect_partial()
    assert tiny.max_abs_diff(saved, [v.numpy() for v in model.weights]) > 1e-4
    with open(os.path.join(model_dir, "report.html")) as f:
        assert (f"Kept the weights of epoch {metrics['best_epoch']} "
                f"(update {metrics['best_update']})") in f.read()


class Interrupt(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Stops the process's run like a crash, at one epoch's batch."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at = (epoch, step)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, step, logs=None):
        if (self.epoch, step) == self.at:
            raise Interrupt


@pytest.mark.slow
def test_an_interrupted_run_keeps_the_same_best_and_stops_at_the_same_update(
        files, uninterrupted, injected):
    reference, want = uninterrupted
    cfg = config(files, "interrupted")
    with pytest.raises(Interrupt):
        # In the second epoch, after the first epoch's checkpoint.
        finetune(cfg, callbacks=[InterruptAt(1, 1)])
    prepared, got = finetune(cfg)
    for key in ("best_value", "best_epoch", "best_update", "validations",
                "stopped_epoch", "optimizer_updates", "validation_accuracy",
                "test_accuracy"):
        assert got[key] == want[key], key
    assert tiny.max_abs_diff(
        saved_weights(cfg.model_dir),
        saved_weights(reference.config.model_dir)) <= 1e-6
