"""Tests of apps/launch_local.py with a stand-in worker module.

The workers here are a few lines of plain Python (no TensorFlow), written to
a temporary folder on PYTHONPATH: they print their TF_CONFIG, then exit, fail
or sleep as their flags say. Each test takes well under a few seconds.
"""

import doctest
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from apps import launch_local  # noqa: F401  (the app must import)
from painless_tf import launcher
from painless_tf.launcher import LaunchError, LaunchOptions, WorkerFailedError

_LAUNCHER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "apps",
    "launch_local.py",
)
# Seconds the workers that do not fail sleep: far longer than any machine
# takes to start them, so a launch that returns sooner stopped them (no
# other time limit: how fast the workers start depends on the load).
_SLEEP = 600

# Flags: --fail=I (worker I fails once the others are ready), --how=code|kill,
# --sleep=S (the others sleep S seconds), --ignore_sigterm, --ready_dir=D
# (each sleeping worker writes D/<index> holding its pid).
_WORKER = textwrap.dedent(
    """
    import json, os, signal, sys, time

    config = json.loads(os.environ["TF_CONFIG"])
    index = config["task"]["index"]
    args = dict(a[2:].partition("=")[::2] for a in sys.argv[1:])
    print("TF_CONFIG " + os.environ["TF_CONFIG"])
    print("ARGS " + json.dumps(sys.argv[1:]))
    print("to stderr", file=sys.stderr)
    print("CWD " + os.getcwd())
    ready_dir = args.get("ready_dir")
    if str(index) == args.get("fail"):
        others = len(config["cluster"]["worker"]) - 1
        while ready_dir and len(os.listdir(ready_dir)) < others:
            time.sleep(0.01)
        if args.get("how") == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.exit(3)
    if "ignore_sigterm" in args:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if ready_dir:
        with open(os.path.join(ready_dir, f"{index}.tmp"), "w") as f:
            f.write(str(os.getpid()))
        os.rename(os.path.join(ready_dir, f"{index}.tmp"),
                  os.path.join(ready_dir, str(index)))
    time.sleep(float(args.get("sleep", "0")))
    """
)


@pytest.fixture
def worker_module(tmp_path, monkeypatch):
    """Makes `python -m fake_worker` importable by the launched workers."""
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "fake_worker.py").write_text(_WORKER)
    paths = [str(folder), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    # Set by `bazel run`; the workers would start there instead of here.
    monkeypatch.delenv("BUILD_WORKING_DIRECTORY", raising=False)
    return "fake_worker"


@pytest.fixture
def ready_dir(tmp_path):
    folder = tmp_path / "ready"
    folder.mkdir()
    return folder


def _lines_by_worker(text):
    lines = {}
    for line in text.splitlines():
        prefix, _, rest = line.partition("] ")
        assert prefix.startswith("[worker "), line
        lines.setdefault(int(prefix[len("[worker "):]), []).append(rest)
    return lines


def _worker_pids(ready_dir):
    return [int((ready_dir / name).read_text()) for name in os.listdir(ready_dir)]


def _is_running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_free_ports_are_distinct_and_bindable():
    ports = launcher.free_ports(8)
    assert len(set(ports)) == 8
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_tf_config_is_a_worker_only_cluster():
    workers = ["127.0.0.1:2222", "127.0.0.1:2223", "127.0.0.1:2224"]
    assert launcher.tf_config(workers, 2) == {
        "cluster": {"worker": workers},
        "task": {"type": "worker", "index": 2},
    }
    with pytest.raises(ValueError, match=r"\[0, 3\).*index=3"):
        launcher.tf_config(workers, 3)


def test_each_worker_gets_its_own_tf_config_and_prefixed_output(worker_module):
    output = io.StringIO()
    options = LaunchOptions(num_workers=3, module=worker_module)
    launcher.launch(["--sleep=0", "--model_dir=runs/x"], options, output=output)

    lines = _lines_by_worker(output.getvalue())
    assert sorted(lines) == [0, 1, 2]
    configs = {}
    for index, worker_lines in lines.items():
        # stdout and stderr both arrive, each line prefixed once.
        assert worker_lines[2:] == ["to stderr", "CWD " + os.path.realpath(os.getcwd())]
        assert json.loads(worker_lines[1][len("ARGS "):]) == [
            "--sleep=0",
            "--model_dir=runs/x",
        ]
        configs[index] = json.loads(worker_lines[0][len("TF_CONFIG "):])
    for index, config in configs.items():
        assert config["task"] == {"type": "worker", "index": index}
        assert config["cluster"] == configs[0]["cluster"]
    workers = configs[0]["cluster"]["worker"]
    assert len(workers) == 3
    assert {w.split(":")[0] for w in workers} == {"127.0.0.1"}
    assert len({w.split(":")[1] for w in workers}) == 3


def test_workers_start_where_bazel_run_was_called(worker_module, tmp_path,
                                                  monkeypatch):
    monkeypatch.setenv("BUILD_WORKING_DIRECTORY", str(tmp_path))
    output = io.StringIO()
    launcher.launch([], LaunchOptions(num_workers=1, module=worker_module),
                        output=output)
    assert f"[worker 0] CWD {os.path.realpath(tmp_path)}" in (
        output.getvalue().splitlines()
    )


@pytest.mark.parametrize(
    "how, returncode, words",
    [("code", 3, "exited with code 3"), ("kill", -9, "was killed by SIGKILL")],
)
def test_failing_worker_stops_the_others_quickly(worker_module, ready_dir, how,
                                                 returncode, words):
    options = LaunchOptions(num_workers=3, module=worker_module)
    args = [f"--how={how}", "--fail=1", f"--sleep={_SLEEP}",
            f"--ready_dir={ready_dir}"]
    start = time.monotonic()
    with pytest.raises(WorkerFailedError) as caught:
        launcher.launch(args, options, output=io.StringIO())
    elapsed = time.monotonic() - start

    error = caught.value
    assert (error.index, error.returncode, error.stopped) == (1, returncode, (0, 2))
    assert str(error).startswith(
        f"worker 1 (python -m fake_worker) {words}; stopped workers 0, 2."
    )
    # The others would have slept _SLEEP s: returning sooner means SIGTERM
    # ended them.
    assert elapsed < _SLEEP
    pids = _worker_pids(ready_dir)
    assert len(pids) == 2
    assert not any(_is_running(pid) for pid in pids)


def test_worker_ignoring_sigterm_is_killed_after_the_grace_period(worker_module,
                                                                 ready_dir):
    options = LaunchOptions(num_workers=2, module=worker_module, grace_seconds=0.5)
    args = ["--fail=1", f"--sleep={_SLEEP}", "--ignore_sigterm",
            f"--ready_dir={ready_dir}"]
    start = time.monotonic()
    with pytest.raises(WorkerFailedError, match="stopped worker 0"):
        launcher.launch(args, options, output=io.StringIO())
    elapsed = time.monotonic() - start

    # At least the grace period, and less than the sleep: SIGKILL ended it.
    assert 0.5 <= elapsed < _SLEEP
    (pid,) = _worker_pids(ready_dir)
    assert not _is_running(pid)


def test_cluster_flags_after_the_separator_are_refused(worker_module, ready_dir):
    options = LaunchOptions(num_workers=2, module=worker_module)
    with pytest.raises(LaunchError, match=r"--task_index=1 contradicts .* Drop it"):
        launcher.launch(
            ["--task_index=1", f"--ready_dir={ready_dir}"], options,
            output=io.StringIO(),
        )
    # Refused before any worker started.
    assert os.listdir(ready_dir) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_workers": 0}, r"num_workers=0\. Pass --num_workers=2"),
        ({"module": "apps/finetune.py"}, r"module='apps/finetune.py'\. Pass"),
        ({"grace_seconds": -1.0}, r"grace_seconds=-1\.0"),
    ],
)
def test_options_name_the_bad_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LaunchOptions(**kwargs)


def test_command_line_exits_non_zero_and_names_the_failed_worker(worker_module,
                                                                 ready_dir):
    result = subprocess.run(
        [sys.executable, _LAUNCHER, "--num_workers=2", f"--module={worker_module}",
         "--", "--fail=1", f"--sleep={_SLEEP}", f"--ready_dir={ready_dir}"],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "launch_local: worker 1 (python -m fake_worker) exited with code 3; "
        "stopped worker 0. Its output is above, prefixed [worker 1]."
    )
    assert sorted(_lines_by_worker(result.stdout)) == [0, 1]


def test_sigterm_to_the_launcher_stops_every_worker(worker_module, ready_dir):
    launcher = subprocess.Popen(
        [sys.executable, _LAUNCHER, "--num_workers=2", f"--module={worker_module}",
         "--", f"--sleep={_SLEEP}", f"--ready_dir={ready_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        # However long the workers take to start: until both are ready or
        # the launcher has ended.
        while len(os.listdir(ready_dir)) < 2 and launcher.poll() is None:
            time.sleep(0.02)
        pids = _worker_pids(ready_dir)
        assert len(pids) == 2
        launcher.send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate()
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 128 + signal.SIGTERM
    assert "stopped every worker" in stderr
    assert not any(_is_running(pid) for pid in pids)


def test_docstring_examples_run():
    results = doctest.testmod(launcher)
    assert results.attempted >= 6
    assert results.failed == 0
