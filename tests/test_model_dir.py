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
import time

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
    assert {k: v for k, v in after.items() if "trash" not in k} == before


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
