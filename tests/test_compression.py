"""apps/compress.py: distilled students, their exports and the choice.

The slow tests fine-tune a tiny teacher with `apps.finetune`, then run
`python -m apps.compress` on it as a user would: uninterrupted, killed and
resumed, re-run after success, and on folders it must refuse.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDENT = "student-every_other"


def _env(kill_at=None):
    env = dict(os.environ, TF_DETERMINISTIC_OPS="1", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONUNBUFFERED="1")
    env.pop("PAINLESS_TF_KILL_AT", None)
    if kill_at:
        env["PAINLESS_TF_KILL_AT"] = kill_at
    return env


def _app(name, args, kill_at=None):
    return subprocess.run(
        [sys.executable, "-m", f"apps.{name}", *args], cwd=ROOT,
        env=_env(kill_at), capture_output=True, text=True, timeout=600)


def compress(teacher, model_dir, *extra, kill_at=None):
    return _app("compress", [
        f"--teacher_dir={teacher}", f"--model_dir={model_dir}",
        "--formats=tflite_float32,tflite_dynamic_int8", "--latency_calls=3",
        "--checkpoint_every_updates=2", *extra], kill_at)


def tree_digest(folder):
    """sha256 of every file's path and bytes under `folder`."""
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    preset = tiny.write_preset(root / "preset", dropout=0.1)
    train = tiny.write_csv(root / "train.csv", tiny.sentiment_rows(80, seed=5))
    teacher_dir = str(root / "teacher")
    result = _app("finetune", [
        f"--model={preset}", f"--train_data={train}", "--epochs=2",
        "--global_batch_size=8", "--micro_batch_size=4",
        "--learning_rate=0.01", "--precision=float32", "--xla=false",
        "--max_sequence_length=16", f"--model_dir={teacher_dir}"])
    assert result.returncode == 0, result.stderr[-2000:]
    before = tree_digest(teacher_dir)
    reference = str(root / "reference")
    result = compress(teacher_dir, reference)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, teacher_dir, reference, before, result.stdout


def _report(model_dir):
    with open(os.path.join(model_dir, "compression.json")) as f:
        return json.load(f)


def _student_weights(model_dir):
    from painless_tf import models

    classifier = models.load_classifier(
        os.path.join(model_dir, STUDENT, "model"), num_classes=2)
    return classifier.backbone.num_layers, [
        v.numpy() for v in classifier.weights]


def _scores(report):
    """What must not depend on timing: every artifact's metrics."""
    return {name: (row["validation"], row["test"])
            for name, row in report["artifacts"].items()}


def _assert_same_sizes(got, want):
    # A .tflite file holds its folder's path in the graph's asset names,
    # so it differs by a few bytes between folders.
    for name, row in want["artifacts"].items():
        assert abs(got["artifacts"][name]["size_bytes"]
                   - row["size_bytes"]) <= 256, name


@pytest.mark.slow
def test_compress_trains_exports_and_chooses_within_budget(teacher):
    _, teacher_dir, reference, before, stdout = teacher
    assert tree_digest(teacher_dir) == before  # the user's run only read
    report = _report(reference)
    rows = report["artifacts"]
    assert set(rows) == {
        f"{c}/{f}" for c in ("teacher", STUDENT)
        for f in ("keras", "tflite_float32", "tflite_dynamic_int8")}
    for row in rows.values():
        for split in ("validation", "test"):
            assert 0 <= row[split]["accuracy"] <= 1
        one = row["latency_ms_per_example"]["batch_1"]
        assert 0 < one["median"] <= one["p95"]
    # The choice is an exported artifact within the budget, the smallest.
    chosen = report["chosen"]
    assert chosen is not None and not chosen.endswith("/keras")
    floor = report["teacher_validation"] - report["accuracy_budget"]
    within = [n for n, r in rows.items() if not n.endswith("/keras")
              and r["validation"]["accuracy"] >= floor]
    assert rows[chosen]["size_bytes"] == min(
        rows[n]["size_bytes"] for n in within)
    assert report["teacher_validation"] == rows["teacher/keras"][
        "validation"]["accuracy"]
    # The student keeps the top one of the teacher's 2 layers.
    num_layers, _ = _student_weights(reference)
    assert num_layers == 1
    assert report["students"] == {STUDENT: "every_other"}
    assert f"*{chosen}" in stdout
    page = open(os.path.join(reference, "compression.html")).read()
    assert chosen in page and "Chosen" in page
    # The student's soft labels are the teacher's logits on its rows.
    logits = np.load(os.path.join(reference, STUDENT, "teacher_logits.npy"),
                     allow_pickle=False)
    assert logits.shape[1] == 2 and np.all(np.isfinite(logits))
    assert np.std(logits) > 0
    with open(os.path.join(reference, STUDENT, "run.json")) as f:
        run_json = json.load(f)
    assert run_json["student_layers"] == "every_other"
    assert run_json["model"] == os.path.join(reference, "teacher", "model")
    with open(os.path.join(reference, STUDENT, "plan.json")) as f:
        plan = json.load(f)
    with open(os.path.join(teacher_dir, "plan.json")) as f:
        teacher_plan = json.load(f)
    assert plan["learning_rate"] == teacher_plan["learning_rate"]


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["teacher_logits:1", "batch_begin:6"])
def test_a_killed_compression_resumes_exactly(teacher, tmp_path, kill_at):
    _, teacher_dir, reference, _, _ = teacher
    target = str(tmp_path / "compressed")
    killed = compress(teacher_dir, target, kill_at=kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    result = compress(teacher_dir, target)
    assert result.returncode == 0, result.stderr[-3000:]
    got_layers, got = _student_weights(target)
    want_layers, want = _student_weights(reference)
    assert got_layers == want_layers
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(got, want)) <= 1e-6
    np.testing.assert_array_equal(
        np.load(os.path.join(target, STUDENT, "teacher_logits.npy")),
        np.load(os.path.join(reference, STUDENT, "teacher_logits.npy")))
    assert _scores(_report(target)) == _scores(_report(reference))
    _assert_same_sizes(_report(target), _report(reference))
    with open(os.path.join(target, STUDENT, "metrics.json")) as f:
        got_metrics = json.load(f)
    with open(os.path.join(reference, STUDENT, "metrics.json")) as f:
        want_metrics = json.load(f)
    for key in ("optimizer_updates", "validation_accuracy", "test_accuracy",
                "best_epoch", "best_update", "best_value"):
        assert key in want_metrics, key
        assert got_metrics[key] == want_metrics[key], key


@pytest.mark.slow
def test_a_rerun_after_success_trains_nothing_and_keeps_the_choice(teacher):
    _, teacher_dir, reference, before, _ = teacher
    with open(os.path.join(reference, STUDENT, "metrics.json")) as f:
        updates = json.load(f)["optimizer_updates"]
    first = _report(reference)
    result = compress(teacher_dir, reference)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout
    with open(os.path.join(reference, STUDENT, "metrics.json")) as f:
        assert json.load(f)["optimizer_updates"] == updates
    assert _scores(_report(reference)) == _scores(first)
    assert tree_digest(teacher_dir) == before


@pytest.mark.slow
def test_bad_folders_are_refused_in_one_line(teacher, tmp_path):
    root, teacher_dir, _, before, _ = teacher
    # Inside the teacher's own folder.
    inside = compress(teacher_dir, os.path.join(teacher_dir, "small"))
    assert inside.returncode == 2
    assert "inside one another" in inside.stderr.strip().splitlines()[-1]
    # A folder of the user's.
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    result = compress(teacher_dir, str(users))
    assert result.returncode == 2
    assert "no painless_tf run wrote" in result.stderr.strip().splitlines()[-1]
    assert (users / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(users)) == ["notes.txt"]
    # Not a finished run.
    missing = compress(str(root / "preset"), str(tmp_path / "out"))
    assert missing.returncode == 2
    assert "--teacher_dir=" in missing.stderr.strip().splitlines()[-1]
    assert not os.path.exists(tmp_path / "out")
    assert tree_digest(teacher_dir) == before


def _row(size, accuracy, latency):
    return {"size_bytes": size, "validation": {"accuracy": accuracy},
            "latency_ms_per_example": {"batch_1": {"median": latency}}}


def test_the_choice_obeys_the_budget():
    from painless_tf import compression

    rows = {
        "teacher/tflite_float32": _row(90, 0.85, 9.0),
        "teacher/tflite_dynamic_int8": _row(25, 0.847, 5.0),
        "student/tflite_float32": _row(60, 0.842, 4.0),
        "student/tflite_dynamic_int8": _row(16, 0.838, 2.0),
        "tiny/tflite_dynamic_int8": _row(9, 0.80, 1.0),
    }
    pick = compression.choose
    # One point: the student's int8 (0.838 >= 0.84 - 0.01); the smaller
    # tiny one is 4 points down.
    name, reason = pick(rows, metric="accuracy", reference=0.848, budget=0.01)
    assert name == "student/tflite_dynamic_int8"
    assert "within 1 points" in reason and "4 of 5" in reason
    # Half a point: the student's int8 is out, the teacher's int8 in.
    name, _ = pick(rows, metric="accuracy", reference=0.848, budget=0.005)
    assert name == "teacher/tflite_dynamic_int8"
    # A budget of 5 points takes the smallest of all.
    assert pick(rows, metric="accuracy", reference=0.848,
                budget=0.05)[0] == "tiny/tflite_dynamic_int8"
    # Nothing within budget: no choice, and the reason names the best.
    name, reason = pick(rows, metric="accuracy", reference=0.95, budget=0.01)
    assert name is None and "teacher/tflite_float32" in reason
    # Equal sizes: the faster at batch 1.
    tie = {"a": _row(10, 0.9, 3.0), "b": _row(10, 0.9, 2.0)}
    assert pick(tie, metric="accuracy", reference=0.9, budget=0.0)[0] == "b"


def test_options_refuse_bad_values_naming_the_flag():
    from painless_tf import compression

    for kwargs, flag in (({"students": ("two",)}, "--student_layers"),
                         ({"students": ()}, "--student_layers"),
                         ({"accuracy_budget": 1.5}, "--accuracy_budget"),
                         ({"formats": ("onnx",)}, "--formats")):
        with pytest.raises(ValueError, match=flag):
            compression.CompressOptions(**kwargs)


def test_a_student_validates_on_class_ids_and_trains_on_soft_rows():
    import keras

    from painless_tf import distillation

    loss = distillation.distillation_loss(temperature=2.0, alpha=0.3)
    logits = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]], "float32")
    labels = np.array([2, 0], "int32")
    expected = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None)(labels, logits)
    np.testing.assert_allclose(loss(labels, logits), expected, rtol=1e-6)
    metric = distillation.HardLabels(
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"))
    rows = distillation.soft_targets(labels, np.zeros((2, 3)))
    metric.update_state(rows, logits)
    metric.update_state(labels, logits)
    assert metric.name == "accuracy" and float(metric.result()) == 1.0
    assert distillation.layers_name("1,3") == "student-1_3"
    with pytest.raises(ValueError, match="--student_layers"):
        distillation.parse_layers("1;3")


def test_an_export_loads_the_model_in_float32_after_mixed_training(tmp_path):
    # apps.compress trains students under the plan's mixed_bfloat16 policy,
    # then exports in the same process: TFLite has no kernels for the casts.
    import keras

    from painless_tf import data
    from painless_tf.export import reading

    folder = tmp_path / "run"
    tiny.write_preset(folder / "model")
    data.LabelVocab(["neg", "pos"]).to_json(str(folder / "labels.json"))
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        classifier, _ = reading._load_model_dir(str(folder))
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.config.set_dtype_policy("float32")
    policies = {layer.dtype_policy.name
                for layer in classifier._flatten_layers()}
    assert not any("16" in name for name in policies), policies
