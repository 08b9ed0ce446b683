"""The weights a run keeps: the best validation, and early stopping.

A run validates at every epoch end and, with `plan.eval_every_updates`,
every N planned updates within epochs. Each validation reads one metric of
the validation logs (`Criterion.monitor`, e.g. "val_macro_f1",
"val_accuracy", "val_loss"; any metric compiled into the trainer works)
and compares it with the best so far in its direction ("max" or "min",
`direction`). An improvement writes the weights to the best checkpoint
(`<model_dir>/checkpoints/best/`, a `checkpointing.CheckpointManager`); at
the end of training they are restored before the final evaluation and
save. After `patience` validations in a row without improvement, training
stops.

The selection state (`Record`: the best value, where it was, validations
since) travels in every checkpoint's position (`checkpointing.Position.
selection`), and validations happen at planned batch indices, so a run
killed and resumed validates at the same points, keeps the same weights
and stops at the same update as an uninterrupted one.
"""

import dataclasses
import math
import os

import keras

from painless_tf import checkpointing
from painless_tf import ema as ema_lib
from painless_tf import faults
from painless_tf import soup as soup_lib

# Metric names (without "val_") and their better direction. A name not
# listed is "min" when one of its words is in `_SMALLER_IS_BETTER`.
DIRECTIONS = {"accuracy": "max", "macro_f1": "max", "loss": "min"}
_SMALLER_IS_BETTER = frozenset({"loss", "error", "mse", "rmse", "mae"})
BEST = "best"  # the best checkpoint's folder inside `checkpoints/`


def direction(metric):
    """"max" or "min": which way `metric` (with or without "val_") improves.

    Examples:
    >>> direction("val_macro_f1"), direction("val_loss"), direction("rmse")
    ('max', 'min', 'min')
    """
    name = metric[len("val_"):] if metric.startswith("val_") else metric
    if name in DIRECTIONS:
        return DIRECTIONS[name]
    return "min" if _SMALLER_IS_BETTER & set(name.split("_")) else "max"


@dataclasses.dataclass(frozen=True)
class Criterion:
    """What a validation is judged by.

    Args:
        monitor: str. The key in the validation logs, e.g. "val_macro_f1".
        mode: str. "max" or "min".
        patience: int. Validations without improvement before stopping;
            0: never stop early.
    """

    monitor: str
    mode: str = "max"
    patience: int = 0

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(
                f"`mode` must be \"max\" or \"min\". Received: {self.mode!r}")

    @classmethod
    def for_plan(cls, plan):
        monitor = f"val_{plan.selection_metric}"
        return cls(monitor, direction(monitor), plan.early_stopping_patience)

    def better(self, value, best):
        """Whether `value` improves on `best` (None: nothing yet)."""
        if value is None or not math.isfinite(value):
            return False
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best


@dataclasses.dataclass(frozen=True)
class Record:
    """The selection state after some validations (JSON-ready fields).

    `step` numbers planned batches over the whole run from 1 (epoch x
    steps per epoch + batch + 1): each validation point has its own.
    """

    best_value: float | None = None
    best_epoch: int | None = None  # 1-based epoch of the best validation
    best_update: int | None = None  # optimizer updates at it
    best_step: int | None = None
    validations: int = 0
    since_best: int = 0
    last_step: int | None = None
    last_epoch: int | None = None
    stopped: bool = False

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value):
        return cls(**value) if value else cls()


def observe(criterion, record, value, *, step, epoch, update):
    """The record after one validation; returns (record, improved).

    A validation at a `step` already observed (the epoch-end validation
    Keras runs after a mid-epoch stop) or after the stop changes nothing.

    Examples:
    >>> c = Criterion("val_accuracy", "max", patience=2)
    >>> r = Record()
    >>> for step, value in enumerate([0.5, 0.7, 0.6, 0.65], start=1):
    ...     r, _ = observe(c, r, value, step=step, epoch=step, update=step)
    >>> r.best_value, r.best_epoch, r.since_best, r.stopped
    (0.7, 2, 2, True)
    """
    if record.stopped or record.last_step == step:
        return record, False
    improved = criterion.better(value, record.best_value)
    since = 0 if improved else record.since_best + 1
    best = dict(best_value=float(value), best_epoch=int(epoch),
                best_update=int(update), best_step=int(step)) if improved \
        else {}
    record = dataclasses.replace(
        record, **best, validations=record.validations + 1,
        since_best=since, last_step=int(step), last_epoch=int(epoch),
        stopped=bool(criterion.patience and since >= criterion.patience),
    )
    return record, improved


def stopped(position):
    """Whether the run at `position` (a `checkpointing.Position`) stopped
    early."""
    return Record.from_dict(position.selection).stopped


def evaluate_keeping_metrics(model, data):
    """`model.evaluate(data)` in the middle of an epoch: the training
    metrics accumulated so far are put back afterwards (evaluate resets
    the metrics it shares with training). Returns the logs, `val_` keys."""
    faults.maybe_kill("validation")
    variables = [v for m in model.metrics for v in m.variables]
    values = [v.numpy() for v in variables]
    logs = model.evaluate(data, verbose=0, return_dict=True)
    for variable, value in zip(variables, values):
        variable.assign(value)
    return {f"val_{k}": float(v) for k, v in logs.items()}


class SelectionCallback(keras.callbacks.Callback):
    """Validates, keeps the best weights and stops early, in `fit`.

    List it after the `checkpointing.NanGuard` and before the
    `checkpointing.CheckpointCallback` it updates, so that every checkpoint
    carries the selection state of the validations before it.

    Args:
        criterion: Criterion.
        validation_data: the validation dataset (for mid-epoch validations;
            the epoch ends read `fit`'s validation logs).
        steps_per_epoch: int. Planned batches per epoch.
        eval_every_updates: int. Also validate every N planned batches
            within epochs; 0: at epoch ends only.
        best: checkpointing.CheckpointManager or None. Where improvements
            are written.
        saver: checkpointing.CheckpointCallback or None.
        nan_guard: checkpointing.NanGuard or None. No validation of a step
            the guard rejected.
        signature: dict. The run signature, for the best checkpoint.
        soup: bool. At the end, a greedy soup of the best checkpoints
            replaces the best one where it validates better (`soup`).
        ema: bool. At the end, the optimizer's moving average of the
            weights replaces the best checkpoint where it validates better
            (`ema`).
    """

    def __init__(self, criterion, *, validation_data, steps_per_epoch,
                 eval_every_updates=0, best=None, saver=None, nan_guard=None,
                 signature=None, soup=False, ema=False):
        super().__init__()
        self.soup = bool(soup)
        self.ema = bool(ema)
        self.criterion = criterion
        self.validation_data = validation_data
        self.steps_per_epoch = int(steps_per_epoch)
        self.every = int(eval_every_updates)
        self.best = best
        self.saver = saver
        self.nan_guard = nan_guard
        self.signature = signature or {}
        self.record = Record()
        self.epoch = 0
        self.batches = []
        self._done = 0

    def start_segment(self, position, epoch, batches):
        """Called by the driver before each `fit` call."""
        self.record = Record.from_dict(position.selection)
        self.epoch = epoch
        self.batches = list(batches)
        self._done = 0

    def catch_up(self, model, position):
        """Runs the epoch-end validation that a kill interrupted.

        The checkpoint at an epoch's last update is written at that batch's
        end, before the validation Keras runs after it; a run killed in that
        validation resumes from the checkpoint without it. Call on resume,
        before training (the weights are the checkpoint's). Returns the
        position with that validation observed; unchanged when none is
        missing.
        """
        record = Record.from_dict(position.selection)
        due = position.epoch * self.steps_per_epoch
        if (position.epoch == 0 or position.batch != 0 or record.stopped
                or (record.last_step or 0) >= due):
            return position
        self.set_model(model)
        self.record, self.epoch = record, position.epoch - 1
        logs = evaluate_keeping_metrics(model, self.validation_data)
        self._observe(logs, due, batch=0, epoch=position.epoch)
        return dataclasses.replace(position, selection=self.record.to_dict())

    def _rejected(self):
        return self.nan_guard is not None and self.nan_guard.tripped

    def on_train_batch_end(self, step, logs=None):
        self._done = step + 1
        if self._rejected():
            return
        batch = self.batches[step]
        at = self.epoch * self.steps_per_epoch + batch + 1
        if (self.every and at % self.every == 0
                and batch + 1 < self.steps_per_epoch):
            logs = evaluate_keeping_metrics(self.model, self.validation_data)
            self._observe(logs, at, batch=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        # Only at the real end of the epoch, not where a preemption or a
        # stop cut the segment short.
        if self._rejected() or self._done < len(self.batches):
            return
        self._observe(logs or {}, (epoch + 1) * self.steps_per_epoch,
                      batch=0, epoch=epoch + 1)

    def _observe(self, logs, at, *, batch, epoch=None):
        monitor = self.criterion.monitor
        if monitor not in logs:
            names = sorted(k for k in logs if k.startswith("val_"))
            raise ValueError(
                f"--selection_metric: the validation logs have no {monitor} "
                f"(they have {', '.join(names) or 'none'}). Pass "
                "--selection_metric=loss, or one of those names without "
                "val_."
            )
        updates = int(self.model.optimizer.iterations.numpy())
        epoch = self.epoch if epoch is None else epoch
        record, improved = observe(
            self.criterion, self.record, float(logs[monitor]), step=at,
            epoch=self.epoch + 1, update=updates)
        if improved and self.best is not None:
            # With the record of this validation: its value is what the
            # soup (`soup.greedy_soup`) ranks the best checkpoints by.
            self.best.save(
                checkpointing.Position(epoch=epoch, batch=batch,
                                       updates=updates,
                                       selection=record.to_dict()),
                signature=self.signature)
        self.record = record
        if self.saver is not None:
            self.saver.position = dataclasses.replace(
                self.saver.position, selection=record.to_dict())
        if record.stopped:
            self.model.stop_training = True

    def restore_best(self, position, trainer=None):
        """Restores the best weights `position`'s record names (before the
        final evaluation and save) and returns the metrics.json entries.

        With the soup or the moving average on, `trainer` (the run's
        `engine.Trainer`; a run resumed after its last update never set
        this callback's model) validates the averages."""
        record = restore_best(self.best, position)
        kept = summary(self.criterion, record)
        line = kept_line(kept)
        if line:
            print(line, flush=True)
        if self.soup and record.best_update is not None:
            monitor = self.criterion.monitor
            # The weights are the classifier's (what `best` restores); the
            # validation runs through the trainer around it.
            trainer = trainer or self.model
            cooked = soup_lib.greedy_soup(
                trainer.model, self.best, self.criterion,
                lambda: evaluate_keeping_metrics(
                    trainer, self.validation_data)[monitor])
            if cooked:
                print(f"weight averaging: {cooked['soup_reason']}",
                      flush=True)
            kept.update(cooked)
        if self.ema and record.best_update is not None:
            monitor = self.criterion.monitor
            trainer = trainer or self.model
            averaged = ema_lib.keep_better(
                trainer, self.criterion, record.best_value,
                lambda: evaluate_keeping_metrics(
                    trainer, self.validation_data)[monitor])
            print(f"weight averaging: {averaged['ema_reason']}", flush=True)
            kept.update(averaged)
        return kept


def keeper(trainer, plan, checkpoint_dir, *, saver, validation):
    """The `SelectionCallback` of a run planned by `plan`, writing its best
    checkpoint into `<checkpoint_dir>/best/` (on the chief) and updating
    `saver`'s positions."""
    best = checkpointing.CheckpointManager(
        os.path.join(checkpoint_dir, BEST), {"model": trainer.model},
        keep=3, is_chief=saver.manager.is_chief)
    best.clean_partial()
    return SelectionCallback(
        Criterion.for_plan(plan), validation_data=validation,
        steps_per_epoch=plan.steps_per_epoch,
        eval_every_updates=plan.eval_every_updates, best=best, saver=saver,
        nan_guard=saver.nan_guard, signature=saver.signature,
        soup=getattr(plan, "weight_averaging", "none") == "soup",
        ema=getattr(plan, "weight_averaging", "none") == "ema")


def restore_best(manager, position):
    """Restores the best weights that `position`'s record names; returns
    the `Record` (its best is None when nothing was validated)."""
    record = Record.from_dict(position.selection)
    if record.best_update is None:
        return record
    if manager.restore_latest(updates=record.best_update) is None:
        raise checkpointing.ResumeError(
            f"{manager.directory} lacks the best checkpoint (update "
            f"{record.best_update}), which this run's record names. Pass "
            "--overwrite to train again."
        )
    return record


def summary(criterion, record):
    """The selection's entries of metrics.json."""
    return {
        "selection_metric": criterion.monitor,
        "best_value": record.best_value,
        "best_epoch": record.best_epoch,
        "best_update": record.best_update,
        "validations": record.validations,
        "stopped_early": record.stopped,
        "stopped_epoch": record.last_epoch if record.stopped else None,
    }


def kept_line(metrics):
    """One sentence on the weights kept, from metrics.json; None without.

    Examples:
    >>> kept_line({"selection_metric": "val_macro_f1", "best_value": 0.8,
    ...            "best_epoch": 2, "best_update": 12, "validations": 3,
    ...            "stopped_early": False})
    'kept the weights of epoch 2 (update 12): val_macro_f1 0.8000, the best of 3 validations'
    """
    if not metrics or metrics.get("best_value") is None:
        return None
    line = (
        f"kept the weights of epoch {metrics['best_epoch']} (update "
        f"{metrics['best_update']}): {metrics['selection_metric']} "
        f"{metrics['best_value']:.4f}, the best of "
        f"{metrics['validations']} validations"
    )
    if metrics.get("stopped_early"):
        line += f"; stopped early in epoch {metrics['stopped_epoch']}"
    return line
