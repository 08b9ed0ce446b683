"""Kill, preempt, corrupt and poison the finetune app; it must lose nothing.

The slow tests drive `python -m apps.finetune` as a subprocess on a tiny
model (float32, deterministic ops, dropout on) and compare the final weights
with one uninterrupted run of the same command; the fast ones check the
restore and the run signature on the library directly.
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


def weights(model_dir, num_classes=2):
    from painless_tf import models

    classifier = models.load_classifier(
        os.path.join(model_dir, "model"), num_classes=num_classes
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
def test_changed_math_or_damaged_checkpoints_never_resume_wrongly(
        setup, tmp_path):
    # Items 1-3 of issue 22 on the app: the trainable layers, warm-up,
    # weight decay and dropout are in the signature; every checkpoint
    # damaged stops the run instead of restarting it from update 0.
    _, preset, train, _ = setup
    model_dir = str(tmp_path / "run")
    killed = finetune(setup_args(preset, train), model_dir,
                      env={"PAINLESS_TF_KILL_AT": "batch_begin:3"})
    assert killed.returncode == -signal.SIGKILL
    checkpoints = os.path.join(model_dir, "checkpoints")
    before = {name: os.path.getmtime(os.path.join(checkpoints, name))
              for name in os.listdir(checkpoints)}
    changed = setup_args(preset, train) + [
        "--trainable_layers=1", "--warmup_fraction=0.2",
        "--weight_decay=0.05", "--dropout=0.2"]
    refused = finetune(changed, model_dir)
    assert refused.returncode == 2, refused.stderr[-2000:]
    line = refused.stderr.strip().splitlines()[-1]
    for difference in ("trainable_layers: 'all' -> 1",
                       "warmup_fraction: 0.1 -> 0.2", "-> 0.05",
                       "dropout: None -> 0.2", "--overwrite"):
        assert difference in line, (difference, line)
    assert "resumed from" not in refused.stdout
    assert {name: os.path.getmtime(os.path.join(checkpoints, name))
            for name in os.listdir(checkpoints)} == before
    for name in before:
        folder = os.path.join(checkpoints, name)
        data = [n for n in os.listdir(folder) if n.startswith("state.data")]
        with open(os.path.join(folder, data[0]), "r+b") as f:
            f.truncate(1)
    stopped = finetune(setup_args(preset, train), model_dir)
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {checkpoints} holds {len(before)} "
                           "checkpoint(s) and none can be resumed"), line
    assert "--overwrite" in line
    assert "epoch 1/" not in stopped.stdout  # nothing trained
    assert sorted(os.listdir(checkpoints)) == sorted(before)


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


def best_weights_args(preset, train):
    # Validations every 3 updates, patience 1.
    return setup_args(preset, train) + ["--eval_every_updates=3",
                                        "--early_stopping_patience=1"]


@pytest.fixture(scope="module")
def best_weights_reference(setup):
    # One uninterrupted run for both kill points below.
    root, preset, train, _ = setup
    reference = str(root / "best_weights_reference")
    result = finetune(best_weights_args(preset, train), reference)
    assert result.returncode == 0, result.stderr[-2000:]
    return reference


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [
    "validation:2",  # in the second validation
    "batch_begin:4",  # after the validation at update 3, before its
                      # checkpoint (at 4): the resumed run validates again
])
def test_a_killed_run_keeps_the_same_best_weights_and_stops_alike(
        setup, best_weights_reference, tmp_path, kill_at):
    # The weights kept, where they were, and the update training stopped
    # at equal an uninterrupted run's.
    _, preset, train, _ = setup
    args = best_weights_args(preset, train)
    reference = best_weights_reference
    model_dir = str(tmp_path / "run")
    killed = finetune(args, model_dir, env={"PAINLESS_TF_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = finetune(args, model_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got, want = metrics(model_dir), metrics(reference)
    for key in ("best_value", "best_epoch", "best_update", "validations",
                "stopped_early", "stopped_epoch", "optimizer_updates",
                "validation_accuracy", "test_accuracy"):
        assert got[key] == want[key], key
    assert want["validations"] >= 2
    diff = max(float(np.max(np.abs(a - b)))
               for a, b in zip(weights(model_dir), weights(reference)))
    assert diff <= 1e-6, diff


@pytest.mark.slow
@pytest.mark.parametrize("task,outputs,kill_at", [
    ("multi_label", 3, "batch_begin:5"),
    ("regression", 1, "validation:1"),
])
def test_a_killed_multi_label_or_regression_run_resumes_exactly(
        setup, tmp_path, task, outputs, kill_at):
    # The other losses, their standardized targets and tuned thresholds
    # through a kill and a resume, with everything else automatic as above.
    root, preset, _, _ = setup
    rows = (tiny.multi_label_rows if task == "multi_label"
            else tiny.regression_rows)(60, seed=5)
    train = tiny.write_csv(tmp_path / "train.csv", rows)
    args = setup_args(preset, train)
    reference = str(tmp_path / "reference")
    result = finetune(args, reference)
    assert result.returncode == 0, result.stderr[-2000:]
    model_dir = str(tmp_path / "run")
    killed = finetune(args, model_dir, env={"PAINLESS_TF_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = finetune(args, model_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from update" in resumed.stdout
    got, want = metrics(model_dir), metrics(reference)
    assert want["optimizer_updates"] == planned_updates(reference)
    compared = [k for k in want if k.startswith(("test_", "validation_",
                                                 "best_"))]
    assert len(compared) >= 4, compared
    for key in compared + ["optimizer_updates", "validations"]:
        assert got[key] == want[key], key
    with open(os.path.join(model_dir, "task.json")) as f:
        spec = json.load(f)
    with open(os.path.join(reference, "task.json")) as f:
        assert spec == json.load(f)
    assert spec["kind"] == task
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(
        weights(model_dir, outputs), weights(reference, outputs)))
    assert diff <= 1e-6, diff


@pytest.mark.slow
def test_a_run_killed_while_its_soup_cooks_makes_the_same_soup(setup,
                                                               tmp_path):
    # --weight_averaging=soup: the end phase averages the best checkpoints.
    # Killed in its first validation, the re-run makes the same soup (or
    # keeps the same best checkpoint) from the same files.
    _, preset, train, _ = setup
    args = setup_args(preset, train) + [
        "--eval_every_updates=2", "--early_stopping_patience=0",
        "--selection_metric=loss", "--weight_averaging=soup"]
    reference = str(tmp_path / "reference")
    result = finetune(args, reference)
    assert result.returncode == 0, result.stderr[-2000:]
    want = metrics(reference)
    assert "weight averaging: " in result.stdout
    model_dir = str(tmp_path / "run")
    killed = finetune(args, model_dir, env={"PAINLESS_TF_KILL_AT": "soup:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not os.path.exists(os.path.join(model_dir, "model"))
    resumed = finetune(args, model_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = metrics(model_dir)
    for key in ("soup_ingredients", "soup_value", "soup_kept", "best_update",
                "best_value", "validation_accuracy", "test_accuracy",
                "optimizer_updates"):
        assert got[key] == want[key], key
    diff = max(float(np.max(np.abs(a - b)))
               for a, b in zip(weights(model_dir), weights(reference)))
    assert diff <= 1e-6, diff


@pytest.mark.slow
def test_a_killed_run_with_a_moving_average_ends_like_an_uninterrupted_one(
        setup, tmp_path):
    # --weight_averaging=ema: killed after its third update, then again
    # with the average put in the weights but not yet validated; the
    # re-runs end with the same average, choice and weights.
    _, preset, train, _ = setup
    args = setup_args(preset, train) + ["--weight_averaging=ema"]
    reference = str(tmp_path / "reference")
    result = finetune(args, reference)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "weight averaging: the moving average" in result.stdout
    want = metrics(reference)
    model_dir = str(tmp_path / "run")
    for kill in ("batch_end:3", "ema:1"):
        killed = finetune(args, model_dir, env={"PAINLESS_TF_KILL_AT": kill})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert not os.path.exists(os.path.join(model_dir, "model"))
    resumed = finetune(args, model_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = metrics(model_dir)
    for key in ("ema_momentum", "ema_value", "ema_kept", "best_update",
                "best_value", "validation_accuracy", "test_accuracy",
                "optimizer_updates"):
        assert got[key] == want[key], key
    diff = max(float(np.max(np.abs(a - b)))
               for a, b in zip(weights(model_dir), weights(reference)))
    assert diff <= 1e-6, diff


# Library-level checks of the restore and the signature (no subprocess).


def _tiny_state(*, head_only=False, seed=0):
    """A tiny classifier and an AdamW built on all of it or on its head."""
    import keras

    from painless_tf import checkpointing

    keras.utils.set_random_seed(seed)
    model = tiny.tiny_classifier(2, dropout=0.1)
    model(tiny.token_batch(2, num_classes=2)[0])
    variables = model.trainable_variables
    if head_only:
        variables = [v for v in variables if "logits" in v.path]
    optimizer = keras.optimizers.AdamW(1e-3)
    optimizer.build(variables)
    return model, optimizer, {
        "model": model, "optimizer": optimizer,
        "random_states": checkpointing.random_states(model),
    }


def _values(model, optimizer):
    return [v.numpy().copy() for v in [*model.variables, *optimizer.variables]]


def test_a_checkpoint_of_another_structure_assigns_nothing(tmp_path):
    # Item 1 of issue 22: the optimizer of a run with other trainable
    # layers has other slots; restoring must refuse before assigning any.
    from painless_tf import checkpointing

    directory = str(tmp_path / "checkpoints")
    model, optimizer, state = _tiny_state()
    optimizer.iterations.assign(22)
    checkpointing.CheckpointManager(directory, state).save(
        checkpointing.Position(updates=22), signature={})
    other_model, other_optimizer, other_state = _tiny_state(head_only=True,
                                                            seed=1)
    before = _values(other_model, other_optimizer)
    manager = checkpointing.CheckpointManager(directory, other_state)
    with pytest.raises(checkpointing.ResumeError) as error:
        manager.restore_latest()
    message = str(error.value)
    assert "\n" not in message
    assert directory in message and "update-000000022" in message
    assert "value(s) this model does not have" in message
    assert "--overwrite" in message
    after = _values(other_model, other_optimizer)
    assert int(other_optimizer.iterations.numpy()) == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    # No scratch write is left behind.
    assert os.listdir(directory) == ["update-000000022"]


def test_a_mismatching_checkpoint_falls_back_to_the_previous_that_fits(
        tmp_path):
    import tensorflow as tf

    from painless_tf import checkpointing

    directory = str(tmp_path / "checkpoints")
    v = tf.Variable([1.0, 2.0])
    checkpointing.CheckpointManager(directory, {"v": v}).save(
        checkpointing.Position(updates=1), signature={})
    wide = tf.Variable([1.0, 2.0, 3.0])
    checkpointing.CheckpointManager(directory, {"v": wide}).save(
        checkpointing.Position(updates=2), signature={})
    v.assign([0.0, 0.0])
    position = checkpointing.CheckpointManager(
        directory, {"v": v}).restore_latest()
    assert position.updates == 1
    assert v.numpy().tolist() == [1.0, 2.0]


def test_every_checkpoint_damaged_is_refused_not_restarted(tmp_path):
    # Item 3 of issue 22: no silent restart from update 0.
    import tensorflow as tf

    from painless_tf import checkpointing

    directory = str(tmp_path / "checkpoints")
    v = tf.Variable(1.0)
    manager = checkpointing.CheckpointManager(directory, {"v": v})
    for updates in (1, 2, 3):
        v.assign(float(updates))
        manager.save(checkpointing.Position(updates=updates), signature={})
    for folder in manager.complete():
        data = [n for n in os.listdir(folder) if n.startswith("state.data")]
        with open(os.path.join(folder, data[0]), "r+b") as f:
            f.truncate(1)
    v.assign(7.0)
    for read in (manager.latest_manifest, manager.restore_latest):
        with pytest.raises(checkpointing.ResumeError) as error:
            read()
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith(f"{directory} holds 3 checkpoint(s) and "
                                  "none can be resumed")
        assert "does not match its sha256" in message
        assert "--overwrite" in message
    assert float(v.numpy()) == 7.0


def test_keep_checkpoints_must_be_at_least_one(tmp_path):
    # Item 4 of issue 22 (the flag's lower bound: test_apps-style run below).
    from painless_tf import checkpointing
    from painless_tf import run

    with pytest.raises(ValueError, match=r"--keep_checkpoints must be >= 1"):
        run.CheckpointOptions(keep=0)
    with pytest.raises(ValueError, match=r"Received: --keep_checkpoints=0"):
        checkpointing.CheckpointManager(str(tmp_path), {}, keep=0)


def test_keep_checkpoints_zero_is_refused_before_anything_runs(tmp_path):
    model_dir = tmp_path / "run"
    result = finetune(["--keep_checkpoints=0"], str(model_dir))
    assert result.returncode != 0
    assert "--keep_checkpoints=0" in result.stderr
    assert not model_dir.exists()


def test_random_states_follow_the_model_not_the_names():
    # Keras numbers unnamed seed generators per process: a model built
    # after another one (the LR range test's) has other numbers, and name
    # order paired saved dropout states with other generators.
    import re

    from painless_tf import checkpointing

    def structure(model):
        return [re.sub(r"_\d+(?=/|$)", "", v.path)
                for v in checkpointing.random_states(model)]

    first = tiny.tiny_classifier(2, dropout=0.1)
    for _ in range(3):
        later = tiny.tiny_classifier(2, dropout=0.1)
    assert [v.path for v in checkpointing.random_states(first)] != [
        v.path for v in checkpointing.random_states(later)]
    assert structure(first) == structure(later)
    assert len(structure(first)) >= 2


def _config_and_plan():
    from painless_tf import hardware
    from painless_tf import plan as plan_lib
    from painless_tf import run

    config = run.RunConfig(train_data="train.csv", precision="float32")
    plan = plan_lib.make_plan(
        environment=hardware.Environment(memory_bytes=8 * 2**30),
        num_train_examples=1000, precision="float32", xla=False)
    return config, plan


def test_the_signature_holds_every_field_but_the_listed_ones():
    import dataclasses

    from painless_tf import checkpointing
    from painless_tf import run

    config, plan = _config_and_plan()
    signature = checkpointing.run_signature(config, plan, "f00d")
    fields = {f.name for f in dataclasses.fields(config)} | {
        f.name for f in dataclasses.fields(plan)}
    excluded = set(checkpointing.SIGNATURE_EXCLUDED)
    assert excluded <= fields
    assert set(signature) == (fields - excluded) | {"data", "format"}
    for name in ("warmup_fraction", "weight_decay", "dropout",
                 "trainable_layers", "warmup_steps", "bucket_boundaries",
                 "precision", "clip_norm", "split", "lr_range_test_steps"):
        assert name in signature, name
    # A field added later is in the signature unless it is excluded.
    Extended = dataclasses.make_dataclass(
        "Extended", [("label_smoothing", float, 0.1)],
        bases=(run.RunConfig,), frozen=True)
    extended = checkpointing.run_signature(
        Extended(**dataclasses.asdict(config)), plan, "f00d")
    assert extended["label_smoothing"] == 0.1
    # The plan's decision stands for the config's request.
    assert signature["weight_decay"] == plan.weight_decay != config.weight_decay


def test_signature_differences_name_each_changed_field():
    import dataclasses

    from painless_tf import checkpointing

    config, plan = _config_and_plan()
    saved = checkpointing.run_signature(config, plan, "f00d")
    same = checkpointing.run_signature(
        dataclasses.replace(config, model_dir="elsewhere", xla=True),
        dataclasses.replace(plan, micro_batch_size=plan.micro_batch_size // 2,
                            accumulation_steps=2, reasons={"x": "y"}),
        "f00d")
    assert checkpointing.signature_differences(saved, same) == []
    changed = checkpointing.run_signature(
        dataclasses.replace(config, warmup_fraction=0.2, dropout=0.3),
        dataclasses.replace(plan, weight_decay=0.05), "beef")
    assert checkpointing.signature_differences(saved, changed) == [
        "data: 'f00d' -> 'beef'",
        "dropout: None -> 0.3",
        "warmup_fraction: 0.1 -> 0.2",
        f"weight_decay: {plan.weight_decay!r} -> 0.05",
    ]
    # A manifest of the first format is compared on the fields it has.
    legacy = {key: saved[key] for key in (
        "model", "data", "text_columns", "label_column", "global_batch_size",
        "epochs", "seed", "max_sequence_length", "optimizer", "momentum",
        "nesterov", "learning_rate")}
    assert checkpointing.signature_differences(legacy, saved) == []
    assert checkpointing.signature_differences(legacy, changed) == [
        "data: 'f00d' -> 'beef'"]


def test_a_checkpoint_of_the_first_format_restores_its_dropout_states(
        tmp_path):
    # The first format listed the dropout states by name and wrote no
    # "format" into its manifest; such a checkpoint still resumes exactly.
    from painless_tf import checkpointing

    directory = str(tmp_path / "checkpoints")
    model = tiny.tiny_classifier(2, dropout=0.1)
    states = checkpointing.random_states(model)
    by_name = sorted(states, key=lambda v: v.path)
    # Else this test would prove nothing.
    assert [v.path for v in by_name] != [v.path for v in states]
    for i, v in enumerate(states):
        v.assign([i, 100 + i])
    saved = {v.path: v.numpy().tolist() for v in states}
    manager = checkpointing.CheckpointManager(
        directory, {"random_states": by_name})
    folder = manager.save(checkpointing.Position(updates=5), signature={})
    path = os.path.join(folder, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    del manifest["format"]
    with open(path, "w") as f:
        json.dump(manifest, f)
    for v in states:
        v.assign([0, 0])
    restored = checkpointing.CheckpointManager(
        directory, {"random_states": states}).restore_latest()
    assert restored.updates == 5
    assert {v.path: v.numpy().tolist() for v in states} == saved
