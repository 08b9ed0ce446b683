r"""Kills the finetune app at random moments and checks the resume is exact.

For each seed, one uninterrupted run of a tiny model with the automatic
learning rate (LR range test), then the same command interrupted by a seeded
schedule of kills and re-run until it exits 0 with the final model written:
SIGKILL or SIGTERM during the LR range test, during training (after a
random checkpoint line), at an event of `painless_tf/faults.py`
(`PAINLESS_TF_KILL_AT`: before or after an update, in a checkpoint write,
in validation) and in the end phase (evaluation, saving). Prints one JSON
line per seed and then the largest weight difference from the
uninterrupted run (float32, `TF_DETERMINISTIC_OPS=1`: expected 0.0).

    python -m bench.kill_resume --seeds=10
    python -m bench.kill_resume --seeds=1 --rows=80 --work_dir=/tmp/kr
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np
from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SEEDS = _ROWS = _EPOCHS = _WORK_DIR = None


def define_flags():
    """The script's flags, defined only when it runs as a program: the
    test suite imports this module beside the apps, whose flags share
    names with these (--epochs)."""
    global _SEEDS, _ROWS, _EPOCHS, _WORK_DIR
    _SEEDS = flags.DEFINE_integer("seeds", 10, "Kill schedules to run (0..N-1).")
    _ROWS = flags.DEFINE_integer("rows", 120, "Labelled rows of the tiny data.")
    _EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs per run.")
    _WORK_DIR = flags.DEFINE_string(
        "work_dir", None, "Where the runs go (default: a temporary folder, "
        "removed afterwards).")

# Where an outside kill is armed: the first output line containing the
# marker, then a random delay (seconds) drawn up to the bound.
PHASES = {
    # The range test loads the model first (float32 runs no precision probe).
    "range_test": ("-> BertTextClassifier", 2.0),
    "training": ("checkpoint: update", 1.0),
    "end": ("training: done", 0.5),
}
KILL_AT_EVENTS = ("batch_begin", "batch_end", "checkpoint_write", "validation")


def finetune_args(preset, train, epochs):
    """The command of every run: automatic learning rate, dropout on."""
    return [
        f"--model={preset}", f"--train_data={train}", "--split=0.8,0.1,0.1",
        f"--epochs={epochs}", "--global_batch_size=8", "--precision=float32",
        "--xla=false", "--max_sequence_length=16", "--lr_range_test_steps=6",
        "--checkpoint_every_updates=3",
    ]


def schedule(seed):
    """The interruptions of one seed, in run order.

    Each is `(phase, signal)` for an outside kill, or `("kill_at",
    "EVENT:N")` for a SIGKILL from inside at a `faults` event.
    """
    rng = random.Random(seed)
    signals = (signal.SIGKILL, signal.SIGTERM)
    plan = [("range_test", rng.choice(signals))]
    middle = [("training", rng.choice(signals)),
              ("kill_at", f"{rng.choice(KILL_AT_EVENTS)}:{rng.randint(1, 4)}")]
    rng.shuffle(middle)
    plan += middle
    plan.append(("end", rng.choice(signals)))
    return plan, rng


def run_once(args, model_dir, *, interruption=None, rng=None, log=None):
    """One run of the app; returns its exit status.

    `interruption` is one entry of `schedule`; None runs undisturbed.
    """
    env = dict(os.environ, TF_DETERMINISTIC_OPS="1", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONUNBUFFERED="1")
    env.pop("PAINLESS_TF_KILL_AT", None)
    marker = delay = sig = None
    if interruption is not None:
        phase, value = interruption
        if phase == "kill_at":
            env["PAINLESS_TF_KILL_AT"] = value
        else:
            marker, bound = PHASES[phase]
            delay, sig = rng.uniform(0.0, bound), value
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.finetune", *args,
         f"--model_dir={model_dir}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    timer = None
    for line in process.stdout:
        if log is not None:
            log.write(line)
        if marker is not None and timer is None and marker in line:
            timer = threading.Timer(delay, _signal, (process, sig))
            timer.start()
    returncode = process.wait(timeout=600)
    if timer is not None:
        timer.cancel()
    return returncode


def _signal(process, sig):
    if process.poll() is None:
        process.send_signal(sig)


def finished(model_dir):
    return os.path.exists(os.path.join(model_dir, "metrics.json"))


def interrupted_run(args, model_dir, seed, *, log=None):
    """Runs `seed`'s schedule, then re-runs until done; the exit statuses."""
    interruptions, rng = schedule(seed)
    statuses = []
    for interruption in interruptions + [None] * 3:
        returncode = run_once(args, model_dir, interruption=interruption,
                              rng=rng, log=log)
        statuses.append(returncode)
        if returncode not in (0, -signal.SIGKILL, -signal.SIGTERM):
            raise RuntimeError(f"run exited {returncode}; see the log")
        if returncode == 0 and finished(model_dir):
            # Done, even if a kill meant for a later moment never landed.
            return statuses
    raise RuntimeError(f"not finished after {len(statuses)} runs")


def weights(model_dir):
    """The saved model's weights by path."""
    from painless_tf import models

    classifier = models.load_classifier(
        os.path.join(model_dir, "model"), num_classes=2
    )
    return {v.path: v.numpy() for v in classifier.weights}


def max_difference(model_dir, reference):
    got, want = weights(model_dir), weights(reference)
    assert got.keys() == want.keys()
    return max(float(np.max(np.abs(got[k] - want[k]))) for k in want)


def prepare(work_dir, rows):
    """The tiny preset (dropout on) and data; returns their paths."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import tiny

    preset = os.path.join(work_dir, "preset")
    if not os.path.isdir(preset):
        tiny.write_preset(preset, dropout=0.1)
    train = tiny.write_csv(os.path.join(work_dir, "train.csv"),
                           tiny.sentiment_rows(rows, seed=5))
    return preset, train


def main(argv):
    del argv
    work_dir = _WORK_DIR.value or tempfile.mkdtemp(prefix="kill-resume-")
    os.makedirs(work_dir, exist_ok=True)
    try:
        preset, train = prepare(work_dir, _ROWS.value)
        args = finetune_args(preset, train, _EPOCHS.value)
        reference = os.path.join(work_dir, "reference")
        shutil.rmtree(reference, ignore_errors=True)
        with open(os.path.join(work_dir, "reference.log"), "w") as log:
            if run_once(args, reference, log=log) != 0:
                raise RuntimeError(f"the reference run failed: {log.name}")
        largest = 0.0
        for seed in range(_SEEDS.value):
            model_dir = os.path.join(work_dir, f"seed-{seed}")
            shutil.rmtree(model_dir, ignore_errors=True)
            with open(os.path.join(work_dir, f"seed-{seed}.log"), "w") as log:
                statuses = interrupted_run(args, model_dir, seed, log=log)
            difference = max_difference(model_dir, reference)
            largest = max(largest, difference)
            print(json.dumps({
                "seed": seed,
                "schedule": [(p, v if isinstance(v, str) else v.name)
                             for p, v in schedule(seed)[0]],
                "exit_statuses": statuses,
                "max_weight_difference": difference,
            }), flush=True)
        print(json.dumps({"seeds": _SEEDS.value,
                          "max_weight_difference": largest}), flush=True)
    finally:
        if not _WORK_DIR.value:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
