"""Checkpointing: exact resume, preemption, NaN rollback, atomic writes.

A checkpoint holds everything that decides the rest of a run: the model's
variables (weights and dropout seed-generator states), the optimizer's
(iterations, slots, loss scale), the learning-rate multiplier that NaN
rollbacks lower, and in its manifest the data position (epoch, next batch),
the batches skipped by rollbacks and the run's signature. Gradient
accumulators need no saving: one step accumulates and applies a whole update,
so they are zero between steps.

Layout of `<model_dir>/checkpoints/`::

    update-000000240/            one complete checkpoint
        manifest.json            position, signature, sha256 of every file
        state.index, state.data-00000-of-00001   (tf.train.Checkpoint)
    .partial-.../                a write in progress or killed (ignored,
                                 removed at the next start)

A checkpoint is written into a `.partial-` folder, every file fsync'ed and
listed with its sha256 in the manifest, and only then renamed into place: a
kill at any moment leaves the previous checkpoints intact. At restore, a
checkpoint whose files do not match their manifest is reported in one line
and the one before it is used. Only TensorFlow's checkpoint format is read:
nothing is unpickled.
"""

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import tempfile
import time

import keras
import tensorflow as tf
from absl import logging

from painless_tf import faults

_NAME = re.compile(r"^update-(\d{9})$")
_PREFIX = "state"


class ResumeError(ValueError):
    """The model dir holds a run that this command must not continue."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses)."""


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a run stands: the next batch to train on.

    `epoch` and `batch` count from 0; `batch` is the index within the epoch's
    planned order (skipped batches keep their index). `updates` is the
    optimizer's iteration count, `steps` the batches consumed (they differ by
    the updates skipped for non-finite gradients).
    """

    epoch: int = 0
    batch: int = 0
    updates: int = 0
    steps: int = 0
    skipped: tuple[tuple[int, int], ...] = ()
    rollbacks: int = 0
    learning_rate_multiplier: float = 1.0

    def describe(self):
        return (
            f"update {self.updates:,} (epoch {self.epoch + 1}, "
            f"batch {self.batch})"
        )


def random_states(model):
    """The model's seed-generator states (dropout), ordered by path.

    Keras keeps them in `model.variables` but not in `model.weights`, and a
    `SeedGenerator` is not itself tracked by `tf.train.Checkpoint`; without
    them a resumed run would draw other dropout masks.
    """
    weights = {id(v) for v in model.weights}
    states = [v for v in model.variables if id(v) not in weights]
    return sorted(states, key=lambda v: v.path)


def run_signature(config, plan, data_fingerprint):
    """What must not change between a run and its resumption."""
    return {
        "model": config.model,
        "data": data_fingerprint,
        "text_columns": list(config.text_columns),
        "label_column": config.label_column,
        "global_batch_size": plan.global_batch_size,
        "epochs": plan.epochs,
        "seed": plan.seed,
        "max_sequence_length": plan.max_sequence_length,
        "optimizer": plan.optimizer,
        "momentum": plan.momentum,
        "nesterov": plan.nesterov,
        "learning_rate": plan.learning_rate,
    }


def signature_differences(saved, current):
    """One readable line per field that differs."""
    return [
        f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]


class CheckpointManager:
    """Writes, lists, verifies and restores checkpoints of one run.

    Args:
        directory: str. `<model_dir>/checkpoints`.
        state: dict. Trackables to save (e.g. `{"model": m, "optimizer": o}`).
        keep: int. Complete checkpoints kept (oldest removed first).
        is_chief: bool. Only the chief writes into `directory`; other
            workers write the same state to a local scratch folder (saving
            may read variables collectively, so every worker must take
            part) and delete it.

    Examples:
    >>> import tempfile
    >>> v = tf.Variable(1.0)
    >>> manager = CheckpointManager(tempfile.mkdtemp(), {"v": v})
    >>> _ = manager.save(Position(updates=1), signature={})
    >>> _ = v.assign(5.0)
    >>> manager.restore_latest().updates, float(v.numpy())
    (1, 1.0)
    """

    def __init__(self, directory, state, *, keep=3, is_chief=True):
        self.directory = directory
        self.checkpoint = tf.train.Checkpoint(**state)
        self.keep = keep
        self.is_chief = is_chief

    def save(self, position, *, signature):
        """Writes a checkpoint atomically; returns its folder."""
        name = f"update-{position.updates:09d}"
        if not self.is_chief:
            scratch = tempfile.mkdtemp(prefix=f"painless-worker-{name}-")
            try:
                self.checkpoint.write(os.path.join(scratch, _PREFIX))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return None
        os.makedirs(self.directory, exist_ok=True)
        partial = os.path.join(
            self.directory, f".partial-{name}-{os.getpid()}-{time.time_ns()}"
        )
        self.checkpoint.write(os.path.join(partial, _PREFIX))
        files = {}
        for file in sorted(os.listdir(partial)):
            path = os.path.join(partial, file)
            files[file] = _sha256(path)
            _fsync_file(path)
        manifest = {
            "position": dataclasses.asdict(position),
            "signature": signature,
            "files": files,
            "written": time.time(),
        }
        with open(os.path.join(partial, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(partial)
        faults.maybe_kill("checkpoint_write")
        final = os.path.join(self.directory, name)
        if os.path.exists(final):  # the same update saved again
            shutil.rmtree(final)
        os.replace(partial, final)
        _fsync_dir(self.directory)
        self._prune()
        return final

    def complete(self):
        """Complete checkpoint folders, newest first."""
        if not os.path.isdir(self.directory):
            return []
        names = [n for n in os.listdir(self.directory) if _NAME.match(n)]
        return [
            os.path.join(self.directory, n)
            for n in sorted(names, reverse=True)
        ]

    def latest_manifest(self):
        """The manifest of the newest checkpoint that verifies, or None."""
        for folder in self.complete():
            manifest = _verified_manifest(folder)
            if manifest is not None:
                return manifest
        return None

    def restore_latest(self):
        """Restores the newest checkpoint that verifies; its `Position`.

        Returns None when there is none. Corrupt ones are reported in one
        line each and skipped.
        """
        for folder in self.complete():
            manifest = _verified_manifest(folder)
            if manifest is None:
                continue
            try:
                self.checkpoint.read(
                    os.path.join(folder, _PREFIX)
                ).assert_existing_objects_matched()
            except (tf.errors.OpError, AssertionError, ValueError) as e:
                logging.warning(
                    "checkpoint %s cannot be read (%s); using the one "
                    "before it", folder, " ".join(str(e).split())[:200],
                )
                continue
            return Position(
                **{
                    **manifest["position"],
                    "skipped": tuple(
                        tuple(s) for s in manifest["position"]["skipped"]
                    ),
                }
            )
        return None

    def clean_partial(self):
        """Removes writes that a kill interrupted."""
        if not self.is_chief or not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            if name.startswith((".partial-", ".worker-")):
                shutil.rmtree(
                    os.path.join(self.directory, name), ignore_errors=True
                )

    def _prune(self):
        for folder in self.complete()[self.keep:]:
            shutil.rmtree(folder, ignore_errors=True)


def _verified_manifest(folder):
    path = os.path.join(folder, "manifest.json")
    try:
        with open(path) as f:
            manifest = json.load(f)
        for file, digest in manifest["files"].items():
            if _sha256(os.path.join(folder, file)) != digest:
                raise ValueError(f"{file} does not match its sha256")
        return manifest
    except (OSError, ValueError, KeyError, TypeError) as e:
        logging.warning(
            "checkpoint %s is damaged (%s); using the one before it",
            folder, " ".join(str(e).split())[:200],
        )
        return None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Preemption:
    """Turns SIGTERM/SIGINT into "checkpoint after this step, then stop".

    The handler only sets a flag: a step in flight finishes, then
    `CheckpointCallback` writes a checkpoint and stops `fit`. The exit
    therefore comes within one step plus one checkpoint write.
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.requested = None
        self._signals = signals
        self._previous = {}

    def __enter__(self):
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        del frame
        if self.requested is not None:
            # A second signal: the user insists. Stop at once.
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        logging.warning(
            "%s received: checkpointing after the current step, then "
            "exiting", self.requested,
        )


class CheckpointCallback(keras.callbacks.Callback):
    """Saves on a timer, at epoch ends and on preemption; tracks position.

    `fit` runs one epoch (or the rest of one) per call (see `run.py`); the
    callback maps Keras' step index to the planned batch index with
    `batches`, the list of batch indices this call trains on.

    Args:
        manager: CheckpointManager.
        signature: dict. `run_signature(...)`.
        every_seconds: float. Save at least this often (0 disables).
        every_updates: int. Save every this many steps too (0 disables).
        preemption: Preemption or None.
        nan_guard: NanGuard or None. No checkpoint is written while the
            guard has seen a bad step (it would save the bad state's
            position).
    """

    def __init__(
        self,
        manager,
        *,
        signature,
        every_seconds=300.0,
        every_updates=0,
        preemption=None,
        nan_guard=None,
    ):
        super().__init__()
        self.manager = manager
        self.signature = signature
        self.every_seconds = every_seconds
        self.every_updates = every_updates
        self.preemption = preemption
        self.nan_guard = nan_guard
        self.position = Position()
        self.batches = []
        self.epoch = 0
        self._last_save = time.monotonic()
        self.preempted = False

    def start_segment(self, position, epoch, batches):
        """Called by the driver before each `fit` call."""
        self.position = position
        self.epoch = epoch
        self.batches = list(batches)

    def on_train_batch_begin(self, step, logs=None):
        faults.maybe_kill("batch_begin")

    def on_test_begin(self, logs=None):
        faults.maybe_kill("validation")

    def on_train_batch_end(self, step, logs=None):
        faults.maybe_kill("batch_end")
        batch = self.batches[step]
        next_batch = (
            self.batches[step + 1] if step + 1 < len(self.batches) else None
        )
        self.position = dataclasses.replace(
            self.position,
            epoch=self.epoch if next_batch is not None else self.epoch + 1,
            batch=next_batch if next_batch is not None else 0,
            updates=int(self.model.optimizer.iterations.numpy()),
            steps=self.position.steps + 1,
        )
        del batch
        if self.nan_guard is not None and self.nan_guard.tripped:
            return
        due = (
            self.every_updates
            and self.position.steps % self.every_updates == 0
        ) or (
            self.every_seconds
            and time.monotonic() - self._last_save >= self.every_seconds
        )
        if self.preemption is not None and self.preemption.requested:
            self.save()
            self.preempted = True
            self.model.stop_training = True
        elif due:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if not self.preempted and not (
            self.nan_guard is not None and self.nan_guard.tripped
        ):
            self.save()

    def save(self):
        folder = self.manager.save(self.position, signature=self.signature)
        self._last_save = time.monotonic()
        if folder:
            logging.info("checkpoint: %s", self.position.describe())


class NanGuard(keras.callbacks.Callback):
    """Stops `fit` for a rollback when updates are not finite.

    The engine skips a non-finite update and counts it. Under
    `mixed_float16` the loss scale absorbs overflow, so only
    `float16_patience` skipped updates in a row trip the guard; otherwise
    the first one does.

    Args:
        float16: bool. Whether a `LossScaleOptimizer` handles overflow.
        float16_patience: int. Consecutive skipped float16 updates allowed.
    """

    def __init__(self, *, float16=False, float16_patience=20):
        super().__init__()
        self.patience = float16_patience if float16 else 1
        self.tripped = False
        self.bad_step = None
        self._last = 0
        self._streak = 0

    def on_train_begin(self, logs=None):
        self.tripped = False
        self.bad_step = None
        self._last = int(self.model.nonfinite_updates.numpy())
        self._streak = 0

    def on_train_batch_end(self, step, logs=None):
        count = int(self.model.nonfinite_updates.numpy())
        if count > self._last:
            self._streak += 1
            if self._streak >= self.patience:
                self.tripped = True
                self.bad_step = step
                self.model.stop_training = True
        else:
            self._streak = 0
        self._last = count


def loss_is_finite(value):
    return value is not None and math.isfinite(float(value))
