"""Starts N workers of a painless_tf app on this machine as one multi-worker
job: free loopback ports, one TF_CONFIG per worker, their output streamed
with a `[worker i]` prefix, and every worker stopped when one fails.

`apps/launch_local.py` wires its flags to `launch`; its docstring has the
commands.
"""

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

MODULE_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

# Flags of the apps that describe the cluster themselves; TF_CONFIG from the
# launcher would contradict them.
_CLUSTER_FLAGS = ("--worker_hosts", "--task_index")
# How often the launcher looks at its workers, in seconds: a failure is
# noticed within this time.
_POLL_SECONDS = 0.05
# The folder above painless_tf/ and apps/, so that `python -m apps.<name>`
# imports from any working directory (and from Bazel's runfiles tree).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LaunchError(Exception):
    """A launch that cannot go on; the message is one line with the fix."""


class WorkerFailedError(LaunchError):
    """A worker exited non-zero (or was killed), and the others were stopped.

    Args:
        index: int. Task index of the worker that failed first.
        returncode: int. Its exit status; negative for a signal (`-9`).
        stopped: tuple[int, ...]. Indices of the workers the launcher stopped.
        module: str. The module the workers ran.

    Examples:

    >>> error = WorkerFailedError(index=1, returncode=-9, stopped=(0,),
    ...                           module="apps.finetune")
    >>> str(error).split(". ")[0]
    'worker 1 (python -m apps.finetune) was killed by SIGKILL; stopped worker 0'
    """

    def __init__(self, *, index, returncode, stopped, module):
        self.index = index
        self.returncode = returncode
        self.stopped = tuple(stopped)
        self.module = module
        if returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-returncode).name}"
            except ValueError:
                how = f"was killed by signal {-returncode}"
        else:
            how = f"exited with code {returncode}"
        if self.stopped:
            names = ", ".join(str(i) for i in self.stopped)
            plural = "s" if len(self.stopped) > 1 else ""
            stopped_text = f"; stopped worker{plural} {names}"
        else:
            stopped_text = ""
        super().__init__(
            f"worker {index} (python -m {module}) {how}{stopped_text}. "
            f"Its output is above, prefixed [worker {index}]."
        )


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """How to start the workers of one local multi-worker job.

    Args:
        num_workers: int. Worker processes; worker 0 is the chief.
        module: str. Module each worker runs with `python -m`.
        host: str. Address every worker listens on, one free port each.
        grace_seconds: float. After a failure, seconds the other workers get
            to exit on SIGTERM before SIGKILL.

    Examples:

    >>> LaunchOptions(num_workers=2, module="apps.finetune").host
    '127.0.0.1'
    """

    num_workers: int = 2
    module: str = "apps.finetune"
    host: str = "127.0.0.1"
    grace_seconds: float = 10.0

    def __post_init__(self):
        if not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise ValueError(
                f"`num_workers` must be a positive integer. Received: "
                f"num_workers={self.num_workers!r}. Pass --num_workers=2."
            )
        if not MODULE_PATTERN.fullmatch(self.module):
            raise ValueError(
                f"`module` must be a dotted Python module name. Received: "
                f"module={self.module!r}. Pass e.g. --module=apps.finetune."
            )
        if self.grace_seconds < 0:
            raise ValueError(
                f"`grace_seconds` must be >= 0. Received: "
                f"grace_seconds={self.grace_seconds!r}."
            )


def free_ports(count, host="127.0.0.1"):
    """Returns `count` distinct TCP ports that are free on `host` right now.

    All sockets stay bound until every port is chosen, so the ports differ
    from each other. Another process may still take one before a worker binds
    it; a worker then fails with "address in use" and the launch can be rerun.

    Args:
        count: int. Number of ports.
        host: str. Address to bind.

    Returns:
        list[int]. The ports.

    Examples:

    >>> len(set(free_ports(3)))
    3
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(workers, index):
    """Returns the TF_CONFIG of one worker of a worker-only cluster.

    Without a "chief" job, MultiWorkerMirroredStrategy makes worker 0 the
    chief, which is the worker that writes checkpoints and reports.

    Args:
        workers: Sequence[str]. "host:port" of every worker, in index order.
        index: int. This worker's task index.

    Returns:
        dict. To pass as `json.dumps(...)` in the TF_CONFIG variable.

    Examples:

    >>> tf_config(["127.0.0.1:2222", "127.0.0.1:2223"], 1)["task"]
    {'type': 'worker', 'index': 1}
    """
    if not 0 <= index < len(workers):
        raise ValueError(
            f"`index` must be in [0, {len(workers)}). Received: index={index}."
        )
    return {
        "cluster": {"worker": list(workers)},
        "task": {"type": "worker", "index": index},
    }


def launch(worker_args, options, *, output=None):
    """Starts the workers, streams their output, and waits for all of them.

    Returns when every worker exited with 0. If one exits non-zero or is
    killed, the others get SIGTERM, then SIGKILL after
    `options.grace_seconds`, and `WorkerFailedError` names the first failed
    worker. SIGTERM or Ctrl-C to the launcher also stops every worker.

    Args:
        worker_args: Sequence[str]. Flags passed unchanged to every worker.
        options: LaunchOptions. How many workers, which module, where.
        output: TextIO. Where the prefixed lines go; `sys.stdout` if None.

    Raises:
        LaunchError: `worker_args` sets the cluster itself.
        WorkerFailedError: a worker failed.

    Examples:

    >>> import io
    >>> out = io.StringIO()
    >>> launch([], LaunchOptions(num_workers=2, module="platform"), output=out)
    >>> sorted(line.split("]")[0] + "]" for line in out.getvalue().splitlines())
    ['[worker 0]', '[worker 1]']
    """
    output = sys.stdout if output is None else output
    for arg in worker_args:
        if arg.split("=")[0] in _CLUSTER_FLAGS:
            raise LaunchError(
                f"worker flag {arg} contradicts the TF_CONFIG that launch_local "
                f"sets for each worker. Drop it from the flags after `--`."
            )
    ports = free_ports(options.num_workers, options.host)
    workers = [f"{options.host}:{port}" for port in ports]
    command = [sys.executable, "-m", options.module, *worker_args]
    lock = threading.Lock()
    processes, readers = [], []
    previous_handler = _raise_on_sigterm()
    try:
        for index in range(options.num_workers):
            process = subprocess.Popen(
                command,
                env=_worker_env(tf_config(workers, index)),
                # Under `bazel run`, the caller's directory, so that relative
                # paths in the worker flags mean what they meant to the caller.
                cwd=os.environ.get("BUILD_WORKING_DIRECTORY") or None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            processes.append(process)
            reader = threading.Thread(
                target=_stream, args=(process.stdout, index, output, lock),
                daemon=True,
            )
            reader.start()
            readers.append(reader)
        failed = _wait_for_first_failure(processes)
        if failed is not None:
            stopped = [i for i, p in enumerate(processes) if p.poll() is None]
            raise WorkerFailedError(
                index=failed,
                returncode=processes[failed].returncode,
                stopped=stopped,
                module=options.module,
            )
    finally:
        _stop(processes, options.grace_seconds)
        for reader in readers:
            # A worker's own child may hold the pipe open after it exited.
            reader.join(timeout=1.0)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _worker_env(config):
    env = dict(os.environ)
    env["TF_CONFIG"] = json.dumps(config)
    # Lines reach the launcher as they are printed, not when a buffer fills.
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_ROOT, env.get("PYTHONPATH", "")) if p
    )
    return env


def _stream(pipe, index, output, lock):
    prefix = f"[worker {index}] "
    with pipe:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with lock:
                output.write(prefix + line + "\n")
                output.flush()


def _wait_for_first_failure(processes):
    """Returns the index of the first worker that failed, or None if none did."""
    while True:
        codes = [p.poll() for p in processes]
        for index, code in enumerate(codes):
            if code not in (None, 0):
                return index
        if all(code == 0 for code in codes):
            return None
        time.sleep(_POLL_SECONDS)


def _stop(processes, grace_seconds):
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + grace_seconds
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Terminated(BaseException):
    """SIGTERM to the launcher, raised so that `launch` stops its workers."""


def _raise_on_sigterm():
    """Makes SIGTERM raise `Terminated`; returns the previous handler.

    Python's default SIGTERM action ends the launcher at once and would leave
    the workers running. Handlers can only be set from the main thread; from
    any other thread, nothing changes and None is returned.
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        del frame
        raise Terminated(signum)

    return signal.signal(signal.SIGTERM, handler)
