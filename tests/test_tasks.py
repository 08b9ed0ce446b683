"""Task types: detection from the labels, the engine's exactness with the
multi-label and regression losses, and whole runs with evaluate and predict.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tiny
from painless_tf import data
from painless_tf import evaluation
from painless_tf import export
from painless_tf import hardware
from painless_tf import heads
from painless_tf import pipeline
from painless_tf import run
from painless_tf.engine import Trainer


def _table(labels, source="train.csv"):
    return data.RawTable(
        source=source, text_columns=("text",), label_column="label",
        texts=(tuple(f"text {i}" for i in range(len(labels))),),
        labels=tuple(labels), lines=range(2, 2 + len(labels)))


# === Detection ===

@pytest.mark.parametrize("labels,options,task,reason", [
    (['["sports", "politics"]', '["sports"]'], {}, "multi_label", "lists"),
    (["sports,politics", "sports"], {"label_delimiter": ","}, "multi_label",
     "--label_delimiter"),
    (["0.5", "1", "2.25"], {}, "regression", "non-integer"),
    ([str(i) for i in range(30)], {}, "regression", "30 distinct"),
    (["1", "2", "3", "1"], {}, "classification", "one class per row"),
    (["0.5", "1.5"], {"task": "classification"}, "classification",
     "set by user"),
    (["1", "2"], {"task": "regression"}, "regression", "set by user"),
])
def test_detects_the_task_and_says_why(labels, options, task, reason):
    spec = data.detect_task(_table(labels), **options)
    assert spec.kind == task and reason in spec.reason, spec


@pytest.mark.parametrize("labels,options,expected", [
    (["1.5", "good"], {"task": "regression"},
     ["train.csv line 3", "--task=regression", "--task=classification"]),
    (["a", "b"], {"task": "regression", "label_delimiter": ","},
     ["--label_delimiter", "--task=multi_label"]),
    (['["a", "b"]', '["a", {"x": 1}]'], {},
     ["train.csv line 3", "JSON list"]),
])
def test_a_contradiction_is_one_line_with_the_fix(labels, options, expected):
    with pytest.raises(data.DataError) as error:
        data.detect_task(_table(labels), **options)
    message = str(error.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, message


def test_jsonl_arrays_and_numbers_are_labels(tmp_path):
    path = tmp_path / "t.jsonl"
    rows = [{"text": f"t {i}", "label": ["a", "b"][: 1 + i % 2]}
            for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = data.load_splits(train=str(path), split=(1.0, 0.0, 0.0))
    assert splits.task.kind == "multi_label"
    assert splits.vocab.names == ("a", "b")
    assert splits.train.labels.dtype == np.float32
    assert splits.train.labels.tolist() == [
        [1, 0], [1, 1], [1, 0], [1, 1], [1, 0], [1, 1]]
    path.write_text("".join(json.dumps({"text": f"t {i}", "label": i / 4})
                            + "\n" for i in range(8)))
    splits = data.load_splits(train=str(path), split=(1.0, 0.0, 0.0))
    assert splits.task.kind == "regression"
    # Standardized by the training targets' mean and std.
    targets = np.arange(8) / 4
    assert splits.task.mean == pytest.approx(targets.mean())
    assert splits.task.std == pytest.approx(targets.std())
    assert np.mean(splits.train.labels) == pytest.approx(0.0, abs=1e-6)
    assert np.std(splits.train.labels) == pytest.approx(1.0, abs=1e-6)


def test_unseen_validation_label_names_its_line(tmp_path):
    train = tiny.write_csv(tmp_path / "train.csv",
                           [("good", '["a", "b"]'), ("bad", '["b"]')])
    held = tiny.write_csv(tmp_path / "dev.csv", [("fun", '["a"]'),
                                                  ("dull", '["c"]')])
    with pytest.raises(data.DataError, match=r"dev.csv line 3: label 'c'"):
        data.load_splits(train=train, validation=held, test=held)


# === Pipeline and engine ===

def _tokenized(labels):
    n = len(labels)
    lengths = np.full(n, 3, np.int32)
    return pipeline.TokenizedExamples(
        token_ids=np.tile(np.array([2, 6, 3], np.int32), n),
        segment_ids=np.zeros(3 * n, np.int8), lengths=lengths,
        labels=np.asarray(labels, np.float32), cls_token_id=2,
        sep_token_id=3, pad_token_id=0, max_sequence_length=8)


@pytest.mark.parametrize("labels", [
    [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]], [0.5, -1.25, 2.0]])
def test_batches_carry_float_labels_and_filler_rows_weigh_nothing(labels):
    dataset = pipeline.make_dataset(_tokenized(labels), global_batch_size=4,
                                    buckets=(8,), training=False)
    _, y, w = next(iter(dataset))
    assert y.dtype.name == "float32"
    np.testing.assert_array_equal(y.numpy()[:3], np.asarray(labels))
    np.testing.assert_array_equal(y.numpy()[3], np.zeros_like(y.numpy()[3]))
    assert w.numpy().tolist() == [1.0, 1.0, 1.0, 0.0]


def _train(task, y, k, batch, *, strategy=None, precision="float32",
           xla=False):
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(7)
    strategy = strategy or tf.distribute.get_strategy()
    x, _, w = tiny.token_batch(24)
    outputs = 1 if task == "regression" else y.shape[1]
    with strategy.scope():
        trainer = Trainer(tiny.tiny_classifier(outputs), accumulation_steps=k,
                          xla=xla)
        optimizer = tiny.optimizer("sgd")
        if precision == "mixed_float16":
            # A start scale that does not overflow on the first update (as
            # in tests/test_engine.py): both runs make the same updates.
            optimizer = keras.optimizers.LossScaleOptimizer(
                optimizer, initial_scale=2**10)
        trainer.compile(optimizer=optimizer, loss=heads.loss_for(task),
                        weighted_metrics=heads.metrics_for(task))
    trainer.fit(tiny.dataset(x, y, w, batch), epochs=2, verbose=0)
    return tiny.weights_of(trainer.model)


def _targets(task):
    rng = np.random.default_rng(3)
    if task == "multi_label":
        return (rng.random((24, 3)) < 0.4).astype("float32")
    return rng.normal(size=24).astype("float32")


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_accumulated_micro_batches_equal_one_big_batch(task):
    y = _targets(task)
    big = _train(task, y, k=1, batch=8)
    accumulated = _train(task, y, k=4, batch=8)
    moved = tiny.max_abs_diff(big, _train(task, y, k=1, batch=24))
    assert tiny.max_abs_diff(big, accumulated) <= 1e-6
    assert moved > 1e-4  # the comparison can tell batches apart


# The engine's matrix (tests/test_engine.py) for the two other losses: 2
# replicas, XLA and mixed precision against one device, float32, one big
# batch per update. Tolerances as there: float16 keeps 11 significant bits,
# bfloat16 8.
TASK_MATRIX = [
    ("mirrored", "float32", False, 2),
    ("mirrored", "mixed_bfloat16", True, 2),
    ("none", "mixed_float16", True, 4),
]
TOLERANCE = {"float32": 1e-6, "mixed_float16": 2e-4, "mixed_bfloat16": 2e-3}


@pytest.mark.parametrize("task", ["multi_label", "regression"])
@pytest.mark.parametrize("strategy,precision,xla,k", TASK_MATRIX)
def test_replicas_xla_and_mixed_precision_match_one_big_batch(
        task, strategy, precision, xla, k):
    y = _targets(task)
    big = _train(task, y, k=1, batch=8)
    got = _train(task, y, k=k, batch=8, precision=precision, xla=xla,
                 strategy=tiny.mirrored() if strategy == "mirrored" else None)
    assert tiny.max_abs_diff(big, got) <= TOLERANCE[precision]


def test_losses_match_their_definitions():
    logits = np.array([[2.0, -1.0], [0.5, 3.0]], "float32")
    y = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    p = 1 / (1 + np.exp(-logits.astype("float64")))
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p), axis=-1)
    np.testing.assert_allclose(
        heads.loss_for("multi_label")(y, logits), expected, rtol=1e-5)
    np.testing.assert_allclose(
        heads.loss_for("regression")(np.array([1.0, 2.0]),
                                     np.array([[1.5], [0.0]])), [0.25, 4.0])


def test_thresholds_and_reports():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], "float32")
    p = np.array([[0.3, 0.9], [0.35, 0.8], [0.1, 0.7], [0.2, 0.95]])
    thresholds = evaluation.tune_thresholds(y, p)
    # Label 0: 0.3 and 0.35 are positives, 0.1 and 0.2 not.
    assert 0.2 < thresholds[0] < 0.3
    report = evaluation.multilabel_report(y, p, ["a", "b"], thresholds)
    assert report["per_class"][0]["f1"] == 1.0
    regression = evaluation.regression_report([1, 2, 3, 4], [2, 1, 4, 3])
    assert regression["mae"] == 1.0 and regression["rmse"] == 1.0
    assert regression["spearman"] == pytest.approx(0.6)


# === Whole runs ===

@pytest.fixture(scope="module", params=["multi_label", "regression"])
def finished(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    os.environ["PAINLESS_TF_CACHE"] = str(root / "cache")
    rows = (tiny.multi_label_rows if request.param == "multi_label"
            else tiny.regression_rows)
    config = run.RunConfig(
        model=tiny.write_preset(root / "preset"),
        train_data=tiny.write_csv(root / "train.csv", rows(240)),
        # The 2-layer, 8-wide model needs ~5 epochs to find the label words
        # of three labels at once; one value (regression) comes sooner.
        epochs=10 if request.param == "multi_label" else 6,
        global_batch_size=16, precision="float32",
        learning_rate="0.01" if request.param == "multi_label" else "0.005",
        lr_range_test_steps=0, fused_update="false",
        model_dir=str(root / "run"),
    )
    prepared = run.prepare(config, environment=hardware.Environment())
    metrics = run.fit_and_save(prepared)
    return request.param, root, config.model_dir, metrics


def test_the_run_records_the_task_and_learns_it(finished):
    task, _, model_dir, metrics = finished
    with open(os.path.join(model_dir, "plan.json")) as f:
        plan = json.load(f)
    assert plan["task"] == task
    assert "set by user" not in plan["reasons"]["task"]
    with open(os.path.join(model_dir, "task.json")) as f:
        spec = json.load(f)
    with open(os.path.join(model_dir, "evaluation.json")) as f:
        result = json.load(f)
    assert result["task"] == task
    if task == "multi_label":
        assert len(spec["thresholds"]) == 3
        assert metrics["test_micro_f1"] == result["micro_f1"]
        assert result["thresholds"] == spec["thresholds"]
        assert sum(c["support"] for c in result["per_class"]) > 0
        assert "validation_binary_accuracy" in metrics
        # Learned past the label frequencies: below the loss of predicting
        # each label's training frequency for every text.
        with open(os.path.join(model_dir, "labels.json")) as f:
            names = json.load(f)
        names = names["names"] if isinstance(names, dict) else names
        hot = np.array([[n in json.loads(label) for n in names]
                        for _, label in tiny.multi_label_rows(240)], float)
        freq = np.clip(hot.mean(axis=0), 1e-6, 1 - 1e-6)
        prior = float(np.mean(-freq * np.log(freq)
                              - (1 - freq) * np.log(1 - freq)))
        assert metrics["final_train_loss"] < prior - 0.05, (
            metrics["final_train_loss"], prior)
    else:
        assert spec["std"] > 0 and 1.0 < spec["mean"] < 8.5
        assert metrics["test_pearson"] > 0.8, metrics
        assert metrics["test_rmse"] < 2.5 * 0.8, metrics
        assert "validation_mae" in metrics
    with open(os.path.join(model_dir, "report.html")) as f:
        assert "Test split" in f.read()


def _app(module, *args):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=root,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_evaluate_and_predict_on_the_model_dir(finished):
    task, root, model_dir, metrics = finished
    rows = (tiny.multi_label_rows if task == "multi_label"
            else tiny.regression_rows)(40, seed=5)
    held_out = tiny.write_csv(root / "held_out.csv", rows)
    _app("apps.evaluate", f"--model_dir={model_dir}", f"--data={held_out}",
         f"--output={root / 'eval.json'}")
    with open(root / "eval.json") as f:
        result = json.load(f)
    assert result["num_examples"] == 40
    texts = root / "texts.txt"
    texts.write_text("good great fun\nthe plot\ngood good good film\n")
    out = [json.loads(line) for line in _app(
        "apps.predict", f"--model_dir={model_dir}",
        f"--input={texts}").splitlines()]
    assert [r["text"] for r in out] == [
        "good great fun", "the plot", "good good good film"]
    if task == "multi_label":
        assert result["labels"] == ["fun", "neg", "pos"]
        with open(os.path.join(model_dir, "task.json")) as f:
            thresholds = json.load(f)["thresholds"]
        for row in out:
            # The labels above their tuned thresholds, and only those (the
            # printed probabilities are rounded to 6 digits).
            for name, t in zip(result["labels"], thresholds):
                p = row["probabilities"][name]
                if abs(p - t) > 1e-5:
                    assert (name in row["labels"]) == (p > t), row
    else:
        assert result["pearson"] > 0.8, result
        # In the target's units (std 2.7): three "good" score well above
        # none, by more than a standardized output would differ.
        assert out[2]["value"] > out[1]["value"] + 2.0, out


# The float32 .tflite file against Keras: its kernels differ from
# TensorFlow's by float round-off, the SavedModel by less.
_EXPORT_TOLERANCE = {"saved_model": 1e-5, "tflite_float32": 1e-4}


def test_export_matches_the_model_dir(finished):
    """apps.export on a multi-label or regression model dir: the artifacts
    give the Keras predictor's probabilities and label sets, or its values
    in the target's units, and the report has the task's metrics."""
    import tensorflow as tf

    task, root, model_dir, _ = finished
    rows = (tiny.multi_label_rows if task == "multi_label"
            else tiny.regression_rows)(24, seed=7)
    held_out = tiny.write_csv(root / "export_test.csv", rows)
    _app("apps.export", f"--model_dir={model_dir}",
         f"--test_data={held_out}", f"--representative_data={held_out}",
         "--formats=saved_model,tflite_float32", "--latency_calls=1",
         "--latency_batch_size=8")
    folder = os.path.join(model_dir, export.EXPORT_DIR)
    with open(os.path.join(folder, export.REPORT_FILE)) as f:
        report = json.load(f)
    with open(os.path.join(folder, export.METADATA_FILE)) as f:
        metadata = json.load(f)
    with open(os.path.join(model_dir, "task.json")) as f:
        spec = json.load(f)
    assert report["skipped"] == {}, report["skipped"]
    assert list(report["artifacts"]) == [
        "keras", "saved_model", "tflite_float32"]
    assert report["task"]["kind"] == metadata["task"]["kind"] == task
    assert list(metadata["outputs"]) == [export.SCORE_OUTPUTS[task]]
    with open(os.path.join(folder, "README.md")) as f:
        assert f'["{export.SCORE_OUTPUTS[task]}"]' in f.read()

    texts = [text for text, _ in rows] + ["", "good " * 40]
    keras_predictor = export.load_predictor(model_dir)
    reference, names = keras_predictor(texts)
    artifacts = {name: os.path.join(folder, file)
                 for name, file in metadata["artifacts"].items()}
    # The SavedModel's own signature, as a server without painless_tf
    # calls it: the task's output by name.
    serve = tf.saved_model.load(artifacts["saved_model"]).signatures[
        "serving_default"]
    served = serve(text=tf.constant(texts))
    truth = [label for _, label in rows]
    if task == "multi_label":
        assert set(served) == {"probabilities"}
        assert metadata["task"]["thresholds"] == spec["thresholds"]
        thresholds = np.array(spec["thresholds"])
        # Sigmoids, one per label: rows need not sum to 1.
        assert not np.allclose(reference.sum(axis=1), 1.0)
        expected_sets = keras_predictor.label_sets(reference)
        assert expected_sets == [
            tuple(n for n, p, t in zip(names, row, thresholds) if p > t)
            for row in reference]
        assert len(set(expected_sets)) > 2, expected_sets
        hot = np.array([[n in json.loads(label) for n in names]
                        for label in truth], float)
    else:
        assert set(served) == {"value"}
        assert metadata["task"]["mean"] == spec["mean"]
        # The target's units (std 2.7, as in the predict test above): a
        # spread a standardized output would not reach.
        assert reference.shape == (len(texts), 1)
        assert np.ptp(reference) > 2.0, reference
        targets = np.array([float(label) for label in truth])
    np.testing.assert_allclose(
        np.asarray(served[export.SCORE_OUTPUTS[task]]).reshape(
            reference.shape), reference, atol=1e-5, rtol=1e-6)

    for name, path in artifacts.items():
        # At the report's batch size: its rows are padded alike.
        predictor = export.load_predictor(path, batch_size=8)
        assert predictor.task.kind == task and predictor.label_names == names
        scores, _ = predictor(texts)
        tolerance = _EXPORT_TOLERANCE[name]
        row = report["artifacts"][name]
        if task == "multi_label":
            np.testing.assert_allclose(scores, reference, atol=tolerance,
                                       rtol=0, err_msg=name)
            # The label sets equal Keras's wherever round-off cannot move a
            # probability across its threshold (nearly everywhere).
            decisive = np.abs(reference - thresholds) > tolerance
            assert decisive.mean() > 0.9, decisive
            got = np.array([[n in s for n in names]
                            for s in predictor.label_sets(scores)])
            want = np.array([[n in s for n in names] for s in expected_sets])
            np.testing.assert_array_equal(got[decisive], want[decisive],
                                          err_msg=name)
            expected = evaluation.multilabel_report(
                hot, scores[:len(rows)], names, thresholds)
            assert row["label_set_agreement"] >= 0.9, row
            assert row["max_abs_prob_diff"] <= tolerance, row
        else:
            np.testing.assert_allclose(scores, reference, atol=tolerance,
                                       rtol=1e-5, err_msg=name)
            expected = evaluation.regression_report(targets,
                                                    scores[:len(rows)])
            assert row["max_abs_value_diff"] <= 10 * tolerance, row
        # The report's numbers: this artifact's own metrics on the raw
        # held-out labels (standardized by the app, as the run did).
        for key, value in evaluation.headline(expected).items():
            assert row[key] == pytest.approx(value, abs=1e-5), (name, key)
    keras_row = report["artifacts"]["keras"]
    if task == "multi_label":
        assert keras_row["micro_f1"] > 0.5, keras_row
    else:
        assert keras_row["pearson"] > 0.8, keras_row
    table = export.format_report(report)
    header = table.splitlines()[0]
    for key in evaluation.HEADLINE_KEYS[task]:
        assert f" {key} |" in header, header
    assert "accuracy |" not in header.replace("subset_accuracy", "")
