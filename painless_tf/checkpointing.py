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
    best/update-000000120/       the best validation's weights
                                 (`selection.py`), written the same way

A checkpoint is written into a `.partial-` folder, every file fsync'ed and
listed with its sha256 in the manifest, and only then renamed into place: a
kill at any moment leaves the previous checkpoints intact. At restore, a
checkpoint whose files do not match their manifest is reported in one line
and the one before it is used; so is one whose values (keys, shapes, dtypes)
do not fit the current model and optimizer, found before any variable is
assigned. When checkpoints exist and none is usable, `ResumeError` says so:
a run never starts over from update 0 without a word. Only TensorFlow's
checkpoint format is read: nothing is unpickled.
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
    the updates skipped for non-finite gradients). `selection` is the
    state of the best-model selection (`selection.Record.to_dict()`), None
    before the first validation.
    """

    epoch: int = 0
    batch: int = 0
    updates: int = 0
    steps: int = 0
    skipped: tuple[tuple[int, int], ...] = ()
    rollbacks: int = 0
    learning_rate_multiplier: float = 1.0
    selection: dict | None = None

    def describe(self):
        return (
            f"update {self.updates:,} (epoch {self.epoch + 1}, "
            f"batch {self.batch})"
        )


def random_states(model):
    """The model's seed-generator states (dropout), in the model's order.

    Keras keeps them in `model.variables` but not in `model.weights`, and a
    `SeedGenerator` is not itself tracked by `tf.train.Checkpoint`; without
    them a resumed run would draw other dropout masks. The order is the
    model's structure, not the variables' names: Keras numbers unnamed
    seed generators per process (`seed_generator_7` in a run whose LR range
    test built another model first, `seed_generator_15` after a resume that
    skipped it), so a name order can pair a saved state with another
    generator.
    """
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


# The signature's layout; a manifest without it was written by the first
# one, a hand-written list of fields (`_LEGACY_SIGNATURE`).
SIGNATURE_FORMAT = 2
_LEGACY_SIGNATURE = (
    "model", "data", "text_columns", "label_column", "global_batch_size",
    "epochs", "seed", "max_sequence_length", "optimizer", "momentum",
    "nesterov", "learning_rate",
)
# Fields of `run.RunConfig` and `plan.Plan` that a resumed run may change,
# and why. Every other field is in the run signature.
SIGNATURE_EXCLUDED = {
    "model_dir": "where the run is, not what it computes",
    "reasons": "words about the decisions, not decisions",
    "lr_range_test": "a record of the curve; its outcome, learning_rate, "
                     "is in the signature",
    "strategy": "exact by design: N replicas update as one device does",
    "num_replicas": "exact by design: N replicas update as one device does",
    "num_workers": "exact by design: N workers update as one process does",
    "tpu": "the address of the hardware, not the math",
    "micro_batch_size": "exact by design: accumulated micro-batches update "
                        "as one global batch does",
    "accumulation_steps": "exact by design: accumulated micro-batches "
                          "update as one global batch does",
    "xla": "the same math, compiled or not",
    "fused_update": "the same update, fused into one function or not",
}


# Fields added to the signature after its format was first written, with the
# value under which a run computes what a run from before them computed.
SIGNATURE_ADDED = {"layer_decay": 1.0, "min_updates": 0,
                   "weight_averaging": "none", "student_layers": None,
                   "distill_temperature": 2.0, "distill_alpha": 0.5}


def run_signature(config, plan, data_fingerprint):
    """What must not change between a run and its resumption.

    Every field of `config` (a `run.RunConfig`) and of `plan` (a
    `plan.Plan`) except `SIGNATURE_EXCLUDED`; where both have a field, the
    plan's value (the decision) stands for the config's (the request, e.g.
    "auto"). `data_fingerprint` stands for the training data's content.

    Examples:
    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Config:
    ...     model_dir: str = "runs/a"
    ...     dropout: float = 0.1
    >>> @dataclasses.dataclass(frozen=True)
    ... class Plan:
    ...     epochs: int = 3
    ...     xla: bool = True
    >>> signature = run_signature(Config(), Plan(), "ab12")
    >>> signature["dropout"], signature["epochs"], "xla" in signature
    (0.1, 3, False)
    """
    signature = {}
    for source in (config, plan):  # the plan's value wins
        for field in dataclasses.fields(source):
            if field.name not in SIGNATURE_EXCLUDED:
                signature[field.name] = getattr(source, field.name)
    signature["data"] = data_fingerprint
    signature["format"] = SIGNATURE_FORMAT
    # As the manifest stores it, so that saved and current compare equal.
    return json.loads(json.dumps(signature, sort_keys=True, default=repr))


def signature_differences(saved, current):
    """One readable line per field that differs.

    A signature of the first format (no "format") is compared on the
    fields it recorded; one written before a field of `SIGNATURE_ADDED`
    existed, as if it held that field's value there.
    """
    keys = set(saved) | set(current)
    if "format" not in saved:
        keys = set(saved) & set(_LEGACY_SIGNATURE)
    else:
        saved = {**SIGNATURE_ADDED, **saved}
    return [
        f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(keys)
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
        if keep < 1:
            # With none kept, a kill would leave nothing to resume from.
            raise ValueError(
                "--keep_checkpoints must be >= 1. Received: "
                f"--keep_checkpoints={keep}"
            )
        self.directory = directory
        self.state = dict(state)
        self.checkpoint = tf.train.Checkpoint(**state)
        self.keep = keep
        self.is_chief = is_chief
        self._expected = None

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
            "format": SIGNATURE_FORMAT,
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
        """The manifest of the newest checkpoint that verifies, or None.

        None only when there is no complete checkpoint; when there are
        some and none verifies, raises `ResumeError` (a run must not start
        over from update 0 without a word).
        """
        problems = []
        for folder in self.complete():
            manifest, problem = _verified_manifest(folder)
            if manifest is not None:
                return manifest
            problems.append(f"{os.path.basename(folder)}: {problem}")
        if problems:
            raise self._none_usable(problems)
        return None

    def restore_latest(self, *, updates=None):
        """Restores the newest usable checkpoint; returns its `Position`.

        With `updates`, only the checkpoint of that update count is tried.

        All or nothing: a checkpoint is compared with what this state would
        write (every key, shape and dtype) before any variable is assigned.
        A damaged or mismatching checkpoint is reported in one line and the
        one before it is used. Returns None when there is no complete
        checkpoint; raises `ResumeError` when there are some and none is
        usable.
        """
        problems = []
        folders = [f for f in self.complete() if updates is None
                   or os.path.basename(f) == f"update-{updates:09d}"]
        for folder in folders:
            manifest, problem = _verified_manifest(folder)
            if manifest is None:
                problems.append(f"{os.path.basename(folder)}: {problem}")
                continue
            prefix = os.path.join(folder, _PREFIX)
            try:
                problem = _mismatch(_values(prefix), self._expected_values())
            except (tf.errors.OpError, ValueError) as e:
                problem = f"cannot be read ({_short(e)})"
            if problem:
                _report(folder, f"checkpoint {folder} does not fit this "
                        f"model ({problem}); using the one before it")
                problems.append(f"{os.path.basename(folder)}: {problem}")
                continue
            checkpoint = (
                self.checkpoint if manifest.get("format")
                else self._legacy_checkpoint()
            )
            checkpoint.read(prefix).assert_existing_objects_matched()
            return Position(
                **{
                    **manifest["position"],
                    "skipped": tuple(
                        tuple(s) for s in manifest["position"]["skipped"]
                    ),
                }
            )
        if problems:
            raise self._none_usable(problems)
        return None

    def _none_usable(self, problems):
        return ResumeError(
            f"{self.directory} holds {len(problems)} checkpoint(s) and none "
            f"can be resumed ({'; '.join(problems)}). Pass --overwrite to "
            "start over, or choose another --model_dir."
        )

    def _expected_values(self):
        """{checkpoint key: (shape, dtype)} of what this state writes.

        Found by writing the state once (TensorFlow has no public way to
        list a checkpoint's keys without writing it). The chief writes next
        to its checkpoints, under a `.partial-` name that the next start
        removes if a kill interrupts; every worker writes (saving may read
        variables collectively, see `save`).
        """
        if self._expected is None:
            if self.is_chief and os.path.isdir(self.directory):
                scratch = os.path.join(
                    self.directory,
                    f".partial-verify-{os.getpid()}-{time.time_ns()}",
                )
            else:
                scratch = tempfile.mkdtemp(prefix="painless-verify-")
            try:
                self._expected = _values(
                    self.checkpoint.write(os.path.join(scratch, _PREFIX))
                )
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return self._expected

    def _legacy_checkpoint(self):
        # Checkpoints of the first format listed the dropout states by
        # name; a run that built no other model first (the only kind such
        # a checkpoint resumed exactly) names them as its resumption does.
        state = dict(self.state)
        if isinstance(state.get("random_states"), list):
            state["random_states"] = sorted(
                state["random_states"], key=lambda v: v.path
            )
        return tf.train.Checkpoint(**state)

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


# (folder, line) already logged: the manifests are read twice per start.
_reported = set()


def _report(folder, line):
    if (folder, line) not in _reported:
        _reported.add((folder, line))
        logging.warning("%s", line)


def _short(error):
    return " ".join(str(error).split())[:200]


def _verified_manifest(folder):
    """(manifest, None) if every file matches it, else (None, why)."""
    path = os.path.join(folder, "manifest.json")
    try:
        with open(path) as f:
            manifest = json.load(f)
        for file, digest in manifest["files"].items():
            if _sha256(os.path.join(folder, file)) != digest:
                raise ValueError(f"{file} does not match its sha256")
        return manifest, None
    except (OSError, ValueError, KeyError, TypeError) as e:
        problem = f"damaged: {_short(e)}"
        _report(folder, f"checkpoint {folder} is damaged ({_short(e)}); "
                "using the one before it")
        return None, problem


def _values(prefix):
    """{key: (shape, dtype)} of the values a checkpoint holds."""
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    return {
        key: (tuple(shape), dtypes[key].name)
        for key, shape in shapes.items()
        if key != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def _mismatch(saved, expected):
    """What differs between two `_values`, in a few words, or ""."""
    extra = sorted(set(saved) - set(expected))
    missing = sorted(set(expected) - set(saved))
    changed = sorted(
        key for key in set(saved) & set(expected)
        if saved[key] != expected[key]
    )
    problems = []
    if extra:
        problems.append(
            f"{len(extra)} value(s) this model does not have, e.g. {extra[0]}"
        )
    if missing:
        problems.append(
            f"{len(missing)} value(s) of this model missing, e.g. "
            f"{missing[0]}"
        )
    if changed:
        key = changed[0]
        problems.append(
            f"{len(changed)} value(s) of another shape or dtype, e.g. {key} "
            f"{saved[key]} vs {expected[key]}"
        )
    return ", ".join(problems)


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
