"""The model dir's owner: whose folder it is, the lock, --overwrite, staging.

Library tests of `painless_tf.model_dir` (no TensorFlow needed), then the
finetune app as a subprocess on a folder of the user's, on a folder another
run holds, and re-run on its own finished folder.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

import tiny
from painless_tf import atomic
from painless_tf import model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def tree(path):
    """Every path below `path`, relative, with file contents."""
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), path)] = None
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, path)] = f.read()
    return found


# === Whose folder ===


def test_new_and_empty_folders_are_taken(tmp_path):
    for path in (tmp_path / "new" / "run", tmp_path / "empty"):
        os.makedirs(tmp_path / "empty", exist_ok=True)
        with model_dir.ModelDir(path) as owner:
            owner.claim(model_dir.PLAN)
            assert owner.listed() == [model_dir.PLAN]


def test_users_files_are_refused_and_untouched(tmp_path):
    write(tmp_path / "mine" / "model" / "model.safetensors", "weights")
    write(tmp_path / "mine" / "config.json", "{}")
    before = tree(tmp_path / "mine")
    with pytest.raises(model_dir.ModelDirError, match="no painless_tf run wrote"):
        model_dir.ModelDir(tmp_path / "mine")
    assert tree(tmp_path / "mine") == before  # not even a lock file


def test_a_file_is_refused(tmp_path):
    write(tmp_path / "file")
    with pytest.raises(model_dir.ModelDirError, match="is a file, not a folder"):
        model_dir.ModelDir(tmp_path / "file")


def test_an_unwritable_folder_is_refused(tmp_path, monkeypatch):
    # Root may write anywhere, so the permission answer is injected.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(model_dir.ModelDirError, match="is not writable"):
        model_dir.ModelDir(tmp_path / "run")


def test_a_run_of_an_earlier_version_is_adopted(tmp_path):
    run = tmp_path / "old"
    write(run / "plan.json", "{}")
    write(run / "checkpoints" / "update-000000004" / "manifest.json", "{}")
    write(run / "notes.txt", "the user's")
    with model_dir.ModelDir(run) as owner:
        assert owner.listed() == ["checkpoints", "plan.json"]
        owner.remove_listed()
    assert sorted(os.listdir(run)) == [".painless_tf", "notes.txt"]


def test_nothing_claimed_leaves_no_trace(tmp_path):
    with model_dir.ModelDir(tmp_path / "run"):
        pass  # e.g. bad input found after the folder was taken
    assert not os.path.exists(tmp_path / "run")
    os.makedirs(tmp_path / "empty")
    with model_dir.ModelDir(tmp_path / "empty"):
        pass
    assert os.listdir(tmp_path / "empty") == []


# === --overwrite ===


def test_overwrite_removes_only_what_the_run_listed(tmp_path):
    run = tmp_path / "run"
    outside = tmp_path / "logs"
    write(outside / "events", "kept")
    with model_dir.ModelDir(run) as owner:
        for name in (model_dir.PLAN, model_dir.METRICS):
            write(owner.claim(name))
        write(owner.claim(model_dir.MODEL) + "/config.json")
        os.symlink(outside, owner.claim(model_dir.TENSORBOARD))
    write(run / "deploy.sh", "the user's")
    write(run / "export" / "notes.md", "the user's")  # never listed
    with model_dir.ModelDir(run) as owner:
        owner.remove_listed()
        assert owner.listed() == []
    assert sorted(os.listdir(run)) == [".painless_tf", "deploy.sh", "export"]
    assert tree(outside) == {"events": b"kept"}  # the link, not its target


def test_overwrite_removes_all_or_nothing(tmp_path, monkeypatch):
    run = tmp_path / "run"
    with model_dir.ModelDir(run) as owner:
        for name in (model_dir.METRICS, model_dir.PLAN, model_dir.RUN):
            write(owner.claim(name))
    before = tree(run)
    real_rename, calls = os.rename, []

    def failing_rename(source, target):
        calls.append(source)
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied", source)
        return real_rename(source, target)

    with model_dir.ModelDir(run) as owner:
        monkeypatch.setattr(os, "rename", failing_rename)
        with pytest.raises(model_dir.ModelDirError, match="nothing was removed"):
            owner.remove_listed()
        monkeypatch.setattr(os, "rename", real_rename)
    after = tree(run)

    def kept(files):  # the lock's text names each holder: not compared
        return {k: v for k, v in files.items()
                if "trash" not in k and k != model_dir.LOCK}

    assert kept(after) == kept(before)


# === The lock ===


def test_a_second_owner_is_refused_with_the_holder(tmp_path):
    with model_dir.ModelDir(tmp_path / "run"):
        with pytest.raises(model_dir.ModelDirError,
                           match=rf"in use by another run \(host .*PID {os.getpid()}"):
            model_dir.ModelDir(tmp_path / "run")
    with model_dir.ModelDir(tmp_path / "run"):
        pass  # released


def test_the_kernel_releases_the_lock_of_a_killed_process(tmp_path):
    code = (
        "import sys, time; from painless_tf import model_dir; "
        f"o = model_dir.ModelDir({str(tmp_path / 'run')!r}); "
        "o.claim('plan.json'); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(model_dir.ModelDirError, match=f"PID {holder.pid}"):
            model_dir.ModelDir(tmp_path / "run")
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with model_dir.ModelDir(tmp_path / "run") as owner:
            assert owner.listed() == ["plan.json"]
    finally:
        holder.kill()
        holder.wait()


# === Staging, space, permissions ===


def test_staging_of_killed_writes_is_cleaned(tmp_path):
    run = tmp_path / "run"
    with model_dir.ModelDir(run) as owner:
        write(owner.claim(model_dir.PLAN))
    staged = [".model.tmp-abc12/config.json", ".model.old-x1/model/a",
              ".export.tmp-q/model.tflite", ".plan.json.k3j2.tmp"]
    for name in staged:
        write(run / name)
    write(run / ".painless_tf" / "trash-123" / "metrics.json")
    with model_dir.ModelDir(run):
        pass
    assert sorted(os.listdir(run)) == [".painless_tf", "plan.json"]
    assert sorted(os.listdir(run / ".painless_tf")) == ["lock", "manifest.json"]


def test_too_little_space_is_one_line_with_the_numbers(tmp_path, monkeypatch):
    with model_dir.ModelDir(tmp_path / "run") as owner:
        usage = type("Usage", (), {"free": 200 * 2**20})
        monkeypatch.setattr(model_dir.shutil, "disk_usage", lambda path: usage)
        owner.check_space(100 * 2**20, "saving the model")  # 164 <= 200 MiB
        with pytest.raises(model_dir.ModelDirError) as error:
            owner.check_space(150 * 2**20, "saving the model")
    message = str(error.value)
    assert "\n" not in message
    assert "saving the model needs about 214 MiB free, and 200 MiB are" in message


def test_outputs_get_the_umask_mode(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic.write_text(tmp_path / "a.json", "{}")
        with atomic.building_dir(tmp_path / "folder") as staging:
            atomic.write_text(os.path.join(staging, "b.txt"), "b")
        assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o640
        assert os.stat(tmp_path / "folder").st_mode & 0o777 == 0o750
        assert os.stat(tmp_path / "folder" / "b.txt").st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)


# === The finetune app on real folders ===


def finetune(args, model_dir_path, *, env_extra=None, **kwargs):
    environment = dict(os.environ, TF_DETERMINISTIC_OPS="1",
                       TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
                       **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "apps.finetune", *args,
         f"--model_dir={model_dir_path}"],
        cwd=ROOT, env=environment, capture_output=True, text=True,
        timeout=600, **kwargs,
    )


def error_lines(result):
    return [line for line in result.stderr.splitlines()
            if line.startswith("error:")]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("owner")
    preset = tiny.write_preset(root / "preset", dropout=0.1)
    train = tiny.write_csv(root / "train.csv", tiny.sentiment_rows(40, seed=3))
    # Longer than every training text (at most 7 words): its bucket must
    # come from the plan, not crash the end of the run.
    long_text = " ".join(["good film"] * 6)
    validation = tiny.write_csv(
        root / "validation.csv", tiny.sentiment_rows(6, seed=4)
        + [(long_text, "pos")])
    args = [
        f"--model={preset}", f"--train_data={train}",
        f"--validation_data={validation}", f"--test_data={validation}",
        "--epochs=1", "--global_batch_size=8", "--precision=float32",
        "--max_sequence_length=16", "--lr_range_test_steps=0",
        "--learning_rate=0.01",
    ]
    return root, args


def test_finetune_refuses_a_users_folder_before_reading_data(small, tmp_path):
    root, args = small
    write(tmp_path / "mine" / "notes.txt", "the user's")
    before = tree(tmp_path / "mine")
    bad_data = [a for a in args if not a.startswith("--train_data")]
    result = finetune([*bad_data, "--train_data=/nonexistent.csv",
                       "--overwrite"], tmp_path / "mine")
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result)
    assert "holds files that no painless_tf run wrote (notes.txt)" in line
    assert tree(tmp_path / "mine") == before


def test_finetune_refuses_a_folder_another_run_holds(small, tmp_path):
    root, args = small
    with model_dir.ModelDir(tmp_path / "busy") as owner:
        owner.claim(model_dir.PLAN)
        result = finetune(args, tmp_path / "busy")
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result)
    assert "is in use by another run (host" in line
    assert f"PID {os.getpid()}" in line


def test_bad_input_leaves_no_folder_behind(small, tmp_path):
    root, args = small
    result = finetune([*args, "--text_columns=review"], tmp_path / "run")
    assert result.returncode == 2
    assert len(error_lines(result)) == 1
    assert not os.path.exists(tmp_path / "run")


def test_rerun_after_success_keeps_every_metric(small):
    root, args = small
    run = root / "run"
    first = finetune(args, run)
    assert first.returncode == 0, first.stderr[-3000:]
    with open(run / "metrics.json") as f:
        before = json.load(f)
    with open(run / "plan.json") as f:
        plan = json.load(f)
    # The validation text of 12 tokens got a bucket of its own.
    assert plan["bucket_boundaries"][-1] >= 12
    second = finetune(args, run)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout
    with open(run / "metrics.json") as f:
        after = json.load(f)
    measured = ["examples_per_sec", "train_seconds", "fit_seconds",
                "train_examples_per_sec", "final_train_loss", "padding_fraction"]
    for key in measured:
        assert before[key] is not None, key
        assert after[key] == before[key], key
    for key in ("validation_accuracy", "test_accuracy", "optimizer_updates"):
        assert after[key] == before[key], key
    listed = json.load(open(run / ".painless_tf" / "manifest.json"))["paths"]
    assert set(os.listdir(run)) - {".painless_tf"} <= set(listed)


def test_a_kill_during_the_final_save_is_finished_by_the_next_run(small):
    root, args = small
    run = root / "killed"
    killed = finetune(args, run, env_extra={"PAINLESS_TF_KILL_AT": "model_save:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert any(name.startswith(".model.tmp-") for name in os.listdir(run))
    with open(run / "metrics.json") as f:
        persisted = json.load(f)  # written before the model
    again = finetune(args, run)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not [n for n in os.listdir(run) if n.startswith(".model.")]
    with open(run / "metrics.json") as f:
        final = json.load(f)
    for key in ("examples_per_sec", "train_seconds", "final_train_loss",
                "test_accuracy"):
        assert final[key] is not None and final[key] == persisted[key], key
    assert os.path.isfile(run / "model" / "task.weights.h5")


@pytest.fixture
def small_disk(tmp_path, request):
    """A small tmpfs (`request.param` of mount's size=): 8m has room for the
    tiny run's checkpoints, not for the space check before the final save;
    120k fills up while the run checkpoints."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    os.makedirs(mount)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request.param}",
                    "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("small_disk", ["120k"], indirect=True)
def test_a_full_disk_while_checkpointing_is_one_line(small, small_disk):
    root, args = small
    result = finetune([*args, "--checkpoint_every_updates=2"],
                      small_disk / "run")
    assert result.returncode == 2, result.stderr[-3000:]
    [line] = error_lines(result)
    assert "No space left on device" in line and "{{" not in line
    assert "run the same command again" in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("small_disk", ["8m"], indirect=True)
def test_too_little_space_for_the_model_is_one_line(small, small_disk):
    root, args = small
    result = finetune(args, small_disk / "run")
    assert result.returncode == 2, result.stderr[-3000:]
    [line] = error_lines(result)
    assert "saving the model needs about" in line and "MiB free" in line
    assert "Traceback" not in result.stderr
    # Everything but the model is there, and the next run (with space)
    # would resume at the end phase.
    assert os.path.isfile(small_disk / "run" / "metrics.json")
    assert not os.path.exists(small_disk / "run" / "model")


def test_an_unlisted_path_is_never_written_over(tmp_path):
    folder = tmp_path / "assembled"
    write(folder / "model" / "config.json", "{}")
    write(folder / "labels.json", "[]")
    with model_dir.ModelDir(folder, shared=True) as owner:
        owner.claim(model_dir.EXPORT)  # new: fine
        with pytest.raises(model_dir.ModelDirError, match="already holds model"):
            owner.claim_all([model_dir.METRICS, model_dir.MODEL])
        assert owner.listed() == [model_dir.EXPORT]
