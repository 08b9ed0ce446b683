"""MultiWorkerMirroredStrategy: 2 processes on 127.0.0.1 == 1 process."""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "multiworker_worker.py")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def finetune_args(tmp_path, *, rows, epochs):
    """`apps.finetune` on the tiny model and `rows` sentiment rows."""
    import tiny

    preset = tiny.write_preset(tmp_path / "preset")
    train = tiny.write_csv(tmp_path / "train.csv", tiny.sentiment_rows(rows))
    return [
        sys.executable, "-m", "apps.finetune", f"--model={preset}",
        f"--train_data={train}", f"--epochs={epochs}",
        "--global_batch_size=8", "--micro_batch_size=4",
        "--learning_rate=0.01", "--precision=float32", "--xla=false",
    ]


def start_workers(args, env):
    """Two processes of `args` on 127.0.0.1, each with its TF_CONFIG."""
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    processes = [
        subprocess.Popen(
            args, cwd=os.path.dirname(HERE),
            env=dict(env, TF_CONFIG=json.dumps({
                "cluster": {"worker": workers},
                "task": {"type": "worker", "index": index},
            })),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for index in range(2)
    ]
    return workers, processes


def load(path):
    with np.load(path) as f:
        weights = [f[f"arr_{i}"] for i in range(len(f.files) - 2)]
        return weights, f["loss"], int(f["iterations"])


@pytest.mark.slow
def test_two_workers_equal_one_process(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }), CUDA_VISIBLE_DEVICES="")
        processes.append(subprocess.Popen(
            [sys.executable, WORKER, str(tmp_path / f"w{index}.npz")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        ))
    single = subprocess.run(
        [sys.executable, WORKER, str(tmp_path / "single.npz"), "single"],
        capture_output=True, text=True, timeout=300,
    )
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-2000:]
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]

    w0, loss0, it0 = load(tmp_path / "w0.npz")
    w1, loss1, it1 = load(tmp_path / "w1.npz")
    ws, losss, its = load(tmp_path / "single.npz")
    assert it0 == it1 == its == 8
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(w0, w1)) == 0.0
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(w0, ws))
    assert diff <= 1e-6, diff
    np.testing.assert_allclose(loss0, losss, rtol=1e-5)


@pytest.mark.slow
def test_finetune_app_on_two_workers_equals_one_process(tmp_path):
    from painless_tf import models

    args = finetune_args(tmp_path, rows=60, epochs=2)
    root = os.path.dirname(HERE)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    single = subprocess.run(
        args + [f"--model_dir={tmp_path / 'single'}"], cwd=root, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]

    _, processes = start_workers(
        args + [f"--model_dir={tmp_path / 'multi'}"], env
    )
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n\n".join(
        f"worker {i}:\n{output[-3000:]}" for i, output in enumerate(outputs)
    )
    # The plan table's line (its columns are as wide as the longest name).
    assert re.search(r"^num_replicas +2 ", outputs[0], re.MULTILINE)

    def weights(name):
        classifier = models.load_classifier(
            str(tmp_path / name / "model"), num_classes=2
        )
        return [v.numpy() for v in classifier.weights]

    diff = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(weights("single"), weights("multi"))
    )
    assert diff <= 1e-6, diff
    with open(tmp_path / "multi" / "metrics.json") as f:
        multi = json.load(f)
    with open(tmp_path / "single" / "metrics.json") as f:
        assert multi["optimizer_updates"] == json.load(f)["optimizer_updates"]


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
def test_killed_worker_stops_the_other_naming_it(tmp_path, victim):
    # Workers started by hand (no launcher): only TensorFlow's coordination
    # service and the collective timeout stand between them and a hang.
    import threading
    import time

    args = finetune_args(tmp_path, rows=400, epochs=50) + [
        f"--model_dir={tmp_path / 'multi'}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    workers, processes = start_workers(args, env)
    outputs = [[], []]
    training = threading.Event()

    def read(index):
        for line in processes[index].stdout:
            outputs[index].append(line)
            if line.startswith("training:"):
                training.set()

    readers = [threading.Thread(target=read, args=(i,), daemon=True)
               for i in range(2)]
    for reader in readers:
        reader.start()
    try:
        # However long start-up takes on this machine: until training
        # begins or a worker ends.
        while not training.wait(1):
            assert all(p.poll() is None for p in processes), (
                "".join(outputs[0][-30:]))
        time.sleep(2)  # into the collectives of the first epoch
        processes[victim].kill()
        killed = time.monotonic()
        survivor = processes[1 - victim]
        # No time limit of the test's own: the collective timeout of
        # `make_strategy` (60 s) bounds the wait, and how long detection
        # takes depends on the load.
        returncode = survivor.wait()
        seconds = time.monotonic() - killed
    finally:
        for process in processes:
            process.kill()
    readers[1 - victim].join(10)
    output = "".join(outputs[1 - victim])
    print(f"worker {1 - victim} exited {returncode} {seconds:.1f} s after "
          f"worker {victim} was killed")
    assert returncode != 0, output[-3000:]
    message = [line for line in output.splitlines()
               if line.startswith("error: ")]
    assert message and f"lost worker {victim} at {workers[victim]}" in (
        message[-1]), output[-3000:]
    assert "Traceback" not in output
