"""Kill, preempt, corrupt and poison the finetune app; it must lose nothing.

Each test drives `python -m apps.finetune` as a subprocess on a tiny model
(float32, deterministic ops, dropout on) and compares the final weights
with one uninterrupted run of the same command.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    preset = tiny.write_preset(root / "preset", dropout=0.1)
    rows = tiny.sentiment_rows(60, seed=5)
    train = tiny.write_csv(root / "train.csv", rows)
    reference = str(root / "reference")
    result = finetune(setup_args(preset, train), reference)
    assert result.returncode == 0, result.stderr[-2000:]
    return root, preset, train, reference


def setup_args(preset, train):
    return [
        f"--model={preset}", f"--train_data={train}", "--split=0.8,0.1,0.1",
        f"--epochs={EPOCHS}", "--global_batch_size=8", "--micro_batch_size=4",
        "--learning_rate=0.01", "--precision=float32", "--xla=false",
        "--max_sequence_length=16", "--checkpoint_every_updates=2",
    ]


def finetune(args, model_dir, *, env=None, **kwargs):
    environment = dict(os.environ, TF_DETERMINISTIC_OPS="1",
                       TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    environment.pop("PAINLESS_TF_KILL_AT", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "apps.finetune", *args,
         f"--model_dir={model_dir}"],
        cwd=ROOT, env=environment, capture_output=True, text=True,
        timeout=300, **kwargs,
    )


def weights(model_dir):
    from painless_tf import models

    classifier = models.load_classifier(
        os.path.join(model_dir, "model"), num_classes=2
    )
    return [v.numpy() for v in classifier.weights]


def metrics(model_dir):
    with open(os.path.join(model_dir, "metrics.json")) as f:
        return json.load(f)


def planned_updates(model_dir):
    with open(os.path.join(model_dir, "plan.json")) as f:
        return json.load(f)["total_updates"]


def assert_same_run(model_dir, reference):
    diff = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(weights(model_dir), weights(reference))
    )
    assert diff <= 1e-6, diff
    got, want = metrics(model_dir), metrics(reference)
    assert got["optimizer_updates"] == want["optimizer_updates"]
    assert got["optimizer_updates"] == planned_updates(reference)
    assert got["test_accuracy"] == want["test_accuracy"]
    assert got["validation_accuracy"] == want["validation_accuracy"]
    return diff


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_at",
    [
        "batch_begin:4",  # an update's micro-batches not yet run
        "batch_end:3",  # update done, its checkpoint not yet due/written
        "checkpoint_write:3",  # files written, not yet renamed into place
        "validation:1",  # in the first epoch-end evaluation
        "batch_begin:8",  # second epoch, mid-way
    ],
)
def test_kill_and_resume_equals_uninterrupted(setup, tmp_path, kill_at):
    _, preset, train, reference = setup
    model_dir = str(tmp_path / "run")
    killed = finetune(setup_args(preset, train), model_dir,
                      env={"PAINLESS_TF_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = finetune(setup_args(preset, train), model_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from update" in resumed.stdout
    assert_same_run(model_dir, reference)
    assert not [n for n in os.listdir(os.path.join(model_dir, "checkpoints"))
                if n.startswith(".")]


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_zero(setup, tmp_path):
    _, preset, train, reference = setup
    model_dir = str(tmp_path / "run")
    environment = dict(os.environ, TF_DETERMINISTIC_OPS="1",
                       TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.finetune", *setup_args(preset, train),
         f"--model_dir={model_dir}"],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    output = []
    for line in process.stdout:
        output.append(line)
        if "checkpoint: update 2 " in line:
            break
    process.send_signal(signal.SIGTERM)
    # No time limit: a run that ignored the signal would train to the end
    # and exit without the preemption line below.
    rest, _ = process.communicate()
    output.append(rest)
    assert process.returncode == 0, "".join(output)[-2000:]
    assert "preempted: checkpoint at update" in rest
    resumed = finetune(setup_args(preset, train), model_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(model_dir, reference)


@pytest.mark.slow
def test_truncated_checkpoint_falls_back_to_the_previous(setup, tmp_path):
    _, preset, train, reference = setup
    model_dir = str(tmp_path / "run")
    killed = finetune(setup_args(preset, train), model_dir,
                      env={"PAINLESS_TF_KILL_AT": "batch_begin:6"})
    assert killed.returncode == -signal.SIGKILL
    checkpoints = os.path.join(model_dir, "checkpoints")
    newest = sorted(n for n in os.listdir(checkpoints)
                    if n.startswith("update-"))[-1]
    data = [n for n in os.listdir(os.path.join(checkpoints, newest))
            if n.startswith("state.data")][0]
    path = os.path.join(checkpoints, newest, data)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    resumed = finetune(setup_args(preset, train), model_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"checkpoint {os.path.join(checkpoints, newest)} is damaged" in (
        resumed.stderr
    )
    assert_same_run(model_dir, reference)


@pytest.mark.slow
def test_changed_flags_are_refused_with_the_differences(setup, tmp_path):
    _, preset, train, _ = setup
    model_dir = str(tmp_path / "run")
    killed = finetune(setup_args(preset, train), model_dir,
                      env={"PAINLESS_TF_KILL_AT": "batch_begin:3"})
    assert killed.returncode == -signal.SIGKILL
    args = setup_args(preset, train)
    args[args.index("--global_batch_size=8")] = "--global_batch_size=4"
    refused = finetune(args, model_dir)
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[-1]
    assert "global_batch_size: 8 -> 4" in line and "--overwrite" in line
    restarted = finetune(args + ["--overwrite"], model_dir)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert "resumed from" not in restarted.stdout


@pytest.mark.slow
def test_nan_rolls_back_skips_the_batch_and_finishes(setup, tmp_path):
    _, preset, train, _ = setup
    model_dir = str(tmp_path / "run")
    run = finetune(setup_args(preset, train), model_dir,
                   env={"PAINLESS_TF_INJECT_NAN": "0:3"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rollback 1 of 3: non-finite update at epoch 1, batch 3" in (
        run.stderr
    )
    result = metrics(model_dir)
    assert np.isfinite(result["final_train_loss"])
    # The poisoned batch is skipped: one update fewer than planned.
    assert result["optimizer_updates"] == planned_updates(model_dir) - 1
