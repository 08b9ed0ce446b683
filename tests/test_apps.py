"""End-to-end tests of the apps on a tiny model and a tiny file."""

import json
import os

import pytest
from absl import flags
from absl.testing import flagsaver

import tiny
from apps import finetune
from painless_tf import models
from painless_tf import plan as plan_lib

FLAGS = flags.FLAGS
FLAGS.mark_as_parsed()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Fine-tunes the tiny model once; the tests below read its outputs."""
    root = tmp_path_factory.mktemp("run")
    os.environ["PAINLESS_TF_CACHE"] = str(root / "cache")
    preset = tiny.write_preset(root / "preset")
    train = tiny.write_csv(root / "train.csv", tiny.sentiment_rows(400))
    model_dir = str(root / "model_dir")
    with flagsaver.as_parsed(
        model=preset,
        train_data=train,
        model_dir=model_dir,
        epochs="3",
        learning_rate="0.05",
        global_batch_size="16",
        micro_batch_size="8",
        fused_update="false",  # the default, fused, runs in other tests
    ):
        finetune.main([])
    return root, model_dir


def test_finetune_writes_a_complete_model_dir(tiny_run):
    _, model_dir = tiny_run
    assert sorted(os.listdir(model_dir)) == [
        ".painless_tf", "checkpoints", "evaluation.json", "history.json",
        "labels.json", "metrics.json", "model", "plan.json", "report.html",
        "run.json", "tensorboard",
    ]
    # The manifest lists every entry the run wrote (and nothing else).
    with open(os.path.join(model_dir, ".painless_tf", "manifest.json")) as f:
        listed = set(json.load(f)["paths"])
    assert set(os.listdir(model_dir)) - {".painless_tf"} == listed
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    for key in ("test_accuracy", "validation_accuracy",
                "train_examples_per_sec", "wall_seconds", "epochs",
                "global_batch_size"):
        assert key in metrics
    assert metrics["epochs"] == 3 and metrics["global_batch_size"] == 16
    # Sentiment words decide the label: a working run learns it.
    assert metrics["test_accuracy"] >= 0.9, metrics
    assert metrics["train_examples_per_sec"] > 0


def test_plan_json_records_the_settings_used(tiny_run):
    _, model_dir = tiny_run
    plan = plan_lib.Plan.from_json(os.path.join(model_dir, "plan.json"))
    assert plan.global_batch_size == 16
    assert plan.micro_batch_size == 8 and plan.accumulation_steps == 2
    assert plan.learning_rate == 0.05
    assert plan.max_sequence_length == 16  # the tiny model's limit
    assert plan.strategy == "default" and plan.num_replicas == 1
    assert plan.total_updates == plan.steps_per_epoch * 3
    assert plan.precision in plan_lib.PRECISIONS
    assert set(plan.reasons) >= {"precision", "micro_batch_size", "xla"}
    assert (plan.fused_update, plan.reasons["fused_update"]) == (
        False, "set by user")
    # No XLA on a CPU: boundaries at any multiple of 4 tokens, not 5 at most.
    assert "multiples of 4 tokens" in plan.reasons["bucket_boundaries"]
    assert all(b % 4 == 0 or b == plan.max_sequence_length
               for b in plan.bucket_boundaries)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        assert json.load(f)["optimizer_updates"] == plan.total_updates


def test_saved_model_loads_again_as_model(tiny_run):
    _, model_dir = tiny_run
    with open(os.path.join(model_dir, "labels.json")) as f:
        assert "neg" in json.dumps(json.load(f))
    classifier = models.load_classifier(
        os.path.join(model_dir, "model"), num_classes=2
    )
    probabilities = classifier.predict(
        ["good great fun", "bad awful dull"], verbose=0
    )
    assert probabilities.shape == (2, 2)
    assert probabilities[0].argmax() != probabilities[1].argmax()


@pytest.mark.parametrize(
    "rows,expected",
    [
        ([("good", "pos")] * 0, "no data rows"),
        ([("good fun", "")] * 30, "line 2"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path, capsys, rows, expected
):
    preset = tiny.write_preset(tmp_path / "preset")
    train = tiny.write_csv(tmp_path / "bad.csv", rows)
    model_dir = tmp_path / "model_dir"
    with flagsaver.as_parsed(
        model=preset, train_data=train, model_dir=str(model_dir),
        precision="float32",
    ):
        with pytest.raises(SystemExit) as exit_info:
            finetune.run_main([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "bad.csv" in err[0] and expected in err[0], err
    assert not model_dir.exists()


def _app(module, *args):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=root,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True, text=True, timeout=300,
    )


def test_predict_app_on_the_finetune_output(tiny_run):
    root, model_dir = tiny_run
    texts = root / "texts.txt"
    texts.write_text("good great fun\nbad awful dull\n\nthe best movie\n")
    result = _app("apps.predict", f"--model_dir={model_dir}",
                  f"--input={texts}")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == [
        "good great fun", "bad awful dull", "the best movie"]
    assert [r["label"] for r in rows] == ["pos", "neg", "pos"]
    for row in rows:
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4


def test_evaluate_app_on_the_finetune_output(tiny_run):
    root, model_dir = tiny_run
    held_out = tiny.write_csv(root / "held_out.csv",
                              tiny.sentiment_rows(50, seed=9))
    result = _app("apps.evaluate", f"--model_dir={model_dir}",
                  f"--data={held_out}", f"--report={root / 'eval.html'}")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(model_dir, "evaluation.json")) as f:
        evaluation = json.load(f)
    assert evaluation["num_examples"] == 50
    assert evaluation["accuracy"] >= 0.9
    assert sum(map(sum, evaluation["confusion_matrix"])) == 50
    assert "precision" in result.stdout and "confusion matrix" in result.stdout
    assert (root / "eval.html").exists()


def test_predict_cuts_a_long_text_as_the_run_trained(tiny_run):
    """The run's plan records head+tail; the predictor of evaluate and
    predict cuts a long text the same way: its probabilities are the
    model's on the pipeline's head+tail ids."""
    import numpy as np
    import tensorflow as tf

    from painless_tf import export
    from painless_tf import pipeline
    from painless_tf import truncation

    _, model_dir = tiny_run
    plan = plan_lib.Plan.from_json(os.path.join(model_dir, "plan.json"))
    assert (plan.truncation, plan.truncation_head, plan.truncation_tail) == (
        "head+tail", 4, 10)
    # Head-only keeps 4 neutral words and 10 negative ones; head+tail keeps
    # the 4 neutral words and the last 10, all positive.
    text = " ".join(["the movie the plot"] + ["awful"] * 10 + ["great"] * 10)
    ids = [tiny.VOCAB.index(w) for w in text.split()]
    cut = truncation.Truncation.of_plan(plan)
    tokenized = pipeline.tokenize([text], tiny.tiny_tokenizer(),
                                  max_sequence_length=16, truncation=cut)
    assert tokenized.token_ids.tolist() == [2, *ids[:4], *ids[-10:], 3]
    classifier, _ = export.reading._load_model_dir(model_dir)

    def probabilities(token_ids):
        x = {"token_ids": np.asarray([token_ids], np.int32),
             "segment_ids": np.zeros((1, 16), np.int32),
             "padding_mask": np.ones((1, 16), np.int32)}
        return tf.nn.softmax(classifier(x, training=False)).numpy()

    expected = probabilities(tokenized.token_ids)
    predicted, names = export.load_predictor(model_dir)([text])
    np.testing.assert_allclose(predicted, expected, atol=1e-6)
    assert names[int(predicted.argmax())] == "pos"
    head_only = probabilities([2, *ids[:14], 3])
    assert names[int(head_only.argmax())] == "neg"
