"""Hyperparameter search: every trial is a whole painless run.

Each trial goes through `run.prepare` and `run.fit_and_save` (the same
automatic plan, checkpoints and outputs) into `<tune_dir>/trial_<n>`, and
is scored by its validation accuracy (the test split only reports: choosing
on it would overstate the winner). The search is Optuna's TPE sampler,
starting from the recipe's settings as trial 0, with Optuna's median pruner
as early stopping. The search state is Optuna's append-only journal on
disk, so the same call resumes it after a kill. `apps/tune.py` wires the
flags to `search`; its docstring has the commands and the `--search`
syntax.
"""

import dataclasses
import datetime
import math
import os
import shutil

import keras
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from painless_tf import atomic
from painless_tf import checkpointing
from painless_tf import optimization
from painless_tf import run

STUDY_FILE = "study.journal"
RESULTS_FILE = "results.md"
BEST_FLAGS_FILE = "best.flags"
_STUDY_NAME = "painless_tf"
# Trials sampled at random before TPE models the results.
_STARTUP_TRIALS = 5
# Trials finished before pruning compares against their median.
_PRUNER_STARTUP_TRIALS = 2
# Checkpoint flags change how a trial is saved, not what it learns.
NOT_SETTINGS = frozenset({
    "checkpoint_every_seconds", "checkpoint_every_updates",
    "keep_checkpoints", "overwrite", "max_rollbacks",
})


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter; `name` is a flag of apps/finetune.py.

    Args:
        name: str. The flag (and `run.RunConfig` field).
        kind: str. "log" (log-uniform float), "float", "int" or "choice".
        low: float | None. Lower end of a range.
        high: float | None. Upper end of a range.
        step: float | None. Grid of a "float" range; None: continuous.
        choices: tuple. The values of a "choice".

    Examples:
    >>> parse_search(["epochs=1:2"])[0]
    Dimension(name='epochs', kind='int', low=1, high=2, step=None, choices=())
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple = ()

    def spec(self) -> str:
        """The `--search` item that gives this dimension."""
        if self.kind == "choice":
            return f"{self.name}={'|'.join(_flag_value(c) for c in self.choices)}"
        return f"{self.name}={self.low:g}:{self.high:g}"

    def suggest(self, trial):
        """Draws a value from `trial` (an `optuna.Trial`)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        if self.kind == "log":
            return trial.suggest_float(self.name, self.low, self.high, log=True)
        return trial.suggest_float(self.name, self.low, self.high,
                                   step=self.step)

    def contains(self, value) -> bool:
        """Whether `value` is in the range or among the choices."""
        if self.kind == "choice":
            return value in self.choices
        return isinstance(value, (int, float)) and self.low <= value <= self.high


def _defaults(optimizer):
    """The default range or choices of each searchable hyperparameter."""
    rates = optimization.DEFAULTS[optimizer]
    return {
        # The recipe's range: where BERT fine-tuning rates live.
        "learning_rate": Dimension("learning_rate", "log",
                                   rates.min_learning_rate,
                                   rates.max_learning_rate),
        # Devlin et al. 2019 fine-tune for 2, 3 or 4 epochs.
        "epochs": Dimension("epochs", "int", 2, 4),
        "warmup_fraction": Dimension("warmup_fraction", "float", 0.0, 0.2),
        "weight_decay": Dimension("weight_decay", "choice",
                                  choices=(0.0, 0.01, 0.1)),
        "dropout": Dimension("dropout", "float", 0.0, 0.3, step=0.05),
        "trainable_layers": Dimension("trainable_layers", "choice",
                                      choices=("0", "2", "4", "all")),
    }


def parse_search(items, *, optimizer="adamw"):
    """Reads `--search` items into `Dimension`s.

    Args:
        items: list[str]. Each NAME, NAME=LOW:HIGH or NAME=A|B|C.
        optimizer: str. Whose recipe range `learning_rate` defaults to.

    Raises:
        ValueError: naming the bad item and the fix.

    Examples:
    >>> [d.spec() for d in parse_search(["learning_rate", "dropout=0:0.2"])]
    ['learning_rate=1e-05:0.0001', 'dropout=0:0.2']
    """
    defaults = _defaults(optimizer)
    dimensions = []
    for item in items:
        name, _, values = item.partition("=")
        name = name.strip()
        if name not in defaults:
            raise ValueError(
                f"--search item {item!r}: unknown hyperparameter {name!r}. "
                f"Search among {', '.join(defaults)}."
            )
        if any(d.name == name for d in dimensions):
            raise ValueError(
                f"--search names {name!r} twice. Name it once."
            )
        default = defaults[name]
        if not values:
            dimensions.append(default)
        elif "|" in values or default.kind == "choice":
            dimensions.append(_choices(item, default, values.split("|")))
        else:
            dimensions.append(_range(item, default, values))
    if not dimensions:
        raise ValueError(
            "--search is empty. Name at least one hyperparameter, e.g. "
            "--search=learning_rate."
        )
    return dimensions


def _choices(item, default, texts):
    choices = []
    for text in texts:
        text = text.strip()
        if default.name == "trainable_layers":
            if text != "all" and not text.isdigit():
                raise ValueError(
                    f"--search item {item!r}: {text!r} is not a layer count. "
                    "Use integers >= 0 or 'all', e.g. trainable_layers=0|2|all."
                )
            choices.append(text)
            continue
        number = _number(item, text)
        choices.append(int(number) if default.kind == "int" else number)
    return Dimension(default.name, "choice", choices=tuple(choices))


def _range(item, default, text):
    low_text, colon, high_text = text.partition(":")
    if not colon:
        raise ValueError(
            f"--search item {item!r}: give a range LOW:HIGH or choices "
            f"A|B|C, e.g. {default.spec()}."
        )
    low, high = _number(item, low_text), _number(item, high_text)
    if not low < high or (default.kind == "log" and low <= 0):
        raise ValueError(
            f"--search item {item!r}: LOW must be below HIGH"
            + (" and above 0" if default.kind == "log" else "")
            + f", e.g. {default.spec()}."
        )
    if default.kind == "int":
        if low != int(low) or high != int(high):
            raise ValueError(
                f"--search item {item!r}: {default.name} takes integers, "
                f"e.g. {default.spec()}."
            )
        low, high = int(low), int(high)
    return dataclasses.replace(default, low=low, high=high)


def _number(item, text):
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"--search item {item!r}: {text!r} is not a number."
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"--search item {item!r}: {text!r} is not finite.")
    return value


def starting_point(config, dimensions):
    """Trial 0: the recipe's value of every searched hyperparameter that
    lies in its range (`"auto"` read as the optimizer's recipe value).

    Examples:
    >>> config = run.RunConfig(epochs=3)
    >>> starting_point(config, parse_search(["epochs", "learning_rate"]))
    {'epochs': 3, 'learning_rate': 3e-05}
    """
    defaults = optimization.DEFAULTS[config.optimizer]
    recipe = {
        "learning_rate": defaults.learning_rate,
        "epochs": config.epochs,
        "warmup_fraction": getattr(config, "warmup_fraction", 0.1),
        "weight_decay": defaults.weight_decay,
        "dropout": 0.1,  # keras-hub's BertTextClassifier default
        "trainable_layers": "all",
    }
    point = {}
    for dimension in dimensions:
        value = getattr(config, dimension.name, run.AUTO)
        if value in (run.AUTO, None):
            value = recipe[dimension.name]
        elif dimension.name != "trainable_layers":
            value = _maybe_number(value)
        if dimension.name == "trainable_layers":
            value = str(value)
        if dimension.contains(value):
            point[dimension.name] = value
    return point


def _maybe_number(value):
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


class PruneCallback(keras.callbacks.Callback):
    """Reports each epoch's validation accuracy to an Optuna trial, and
    stops the trial when the pruner says so (never after its last epoch,
    which completes it anyway).

    Args:
        trial: optuna.Trial. The running trial.
        epochs: int. Epochs of the trial.

    Examples:
    >>> study = optuna.create_study(direction="maximize")
    >>> callback = PruneCallback(study.ask(), epochs=2)
    >>> callback.on_epoch_end(0, {"val_accuracy": 0.5})
    """

    def __init__(self, trial, *, epochs):
        super().__init__()
        self.trial = trial
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_accuracy")
        if value is None:
            return
        self.trial.report(float(value), step=epoch)
        if epoch + 1 < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"validation accuracy {float(value):.4f} after epoch "
                f"{epoch + 1} is below the median of the earlier trials"
            )


def open_study(tune_dir, *, seed, prune, settings):
    """Creates or reopens the search in `tune_dir`; returns the study.

    A reopened search must have the same `settings` (searched dimensions and
    fixed flags). Trials a kill left running are marked failed and queued
    again with their settings and model dir, so they resume from their
    checkpoints.
    """
    os.makedirs(tune_dir, exist_ok=True)
    storage = JournalStorage(
        JournalFileBackend(os.path.join(tune_dir, STUDY_FILE))
    )
    study = optuna.create_study(
        study_name=_STUDY_NAME, storage=storage, direction="maximize",
        load_if_exists=True,
    )
    saved = study.user_attrs.get("settings")
    if saved is None:
        study.set_user_attr("settings", settings)
    elif saved != settings:
        differences = [
            f"{key}: {saved.get(key)} -> {settings.get(key)}"
            for key in sorted(set(saved) | set(settings))
            if saved.get(key) != settings.get(key)
        ]
        raise ValueError(
            f"--tune_dir={tune_dir} holds a search with other settings "
            f"({'; '.join(differences)}). Pass the same flags to resume it, "
            "or choose another --tune_dir."
        )
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.set_user_attr(f"interrupted_{trial.number}", True)
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(
            trial.params,
            user_attrs={"model_dir": trial.user_attrs.get("model_dir"),
                        "resumes": trial.number},
        )
        print(f"trial {trial.number} was interrupted: it continues from its "
              "last checkpoint", flush=True)
    # Reseeded with the trial count, a resumed search draws new settings
    # instead of repeating the first ones, and still deterministically.
    sampler = optuna.samplers.TPESampler(
        seed=seed + len(study.trials), n_startup_trials=_STARTUP_TRIALS
    )
    pruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=_PRUNER_STARTUP_TRIALS, n_warmup_steps=1
        )
        if prune else optuna.pruners.NopPruner()
    )
    return optuna.load_study(
        study_name=_STUDY_NAME, storage=storage, sampler=sampler,
        pruner=pruner,
    )


def finished_trials(study):
    """Trials that ended (completed, pruned or failed), without the ones a
    kill interrupted (they continue as another trial)."""
    interrupted = {
        int(key.split("_")[1])
        for key in study.user_attrs if key.startswith("interrupted_")
    }
    return [
        t for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.number not in interrupted
    ]


def budget_spent(study, *, max_trials, time_budget_minutes):
    """Why no further trial should start (the budget is spent), or None.

    Examples:
    >>> study = optuna.create_study(direction="maximize")
    >>> budget_spent(study, max_trials=1, time_budget_minutes=0) is None
    True
    """
    finished = finished_trials(study)
    if len(finished) >= max_trials:
        return f"{len(finished)} trials finished (--max_trials={max_trials})"
    spent = sum(_seconds(t) for t in finished) / 60
    if time_budget_minutes and spent >= time_budget_minutes:
        return (f"finished trials took {spent:.1f} min "
                f"(--time_budget_minutes={time_budget_minutes:g})")
    return None


def run_trial(study, base, dimensions, *, environment, checkpoints, tune_dir):
    """Asks for settings, trains them as one painless run, tells the score.

    Returns False when a preemption signal stopped the run (the trial stays
    running and resumes next time), True otherwise.
    """
    trial = study.ask()
    params = {d.name: d.suggest(trial) for d in dimensions}
    model_dir = trial.user_attrs.get("model_dir") or os.path.join(
        tune_dir, f"trial_{trial.number}"
    )
    trial.set_user_attr("model_dir", model_dir)
    config = dataclasses.replace(base, model_dir=model_dir, **_fields(params))
    print(f"trial {trial.number}: {_describe(params)} -> {model_dir}",
          flush=True)
    try:
        prepared = run.prepare(config, environment=environment)
        if prepared.plan.task != "classification":
            raise ValueError(
                f"--train_data={config.train_data} holds a "
                f"{prepared.plan.task} task ({prepared.plan.reasons['task']})"
                "; the search ranks trials by validation accuracy, so it "
                "tunes classifiers only: train this set with apps.finetune.")
        metrics = run.fit_and_save(
            prepared, checkpoints=checkpoints, verbose=2,
            callbacks=[PruneCallback(trial, epochs=prepared.plan.epochs)],
        )
    except optuna.TrialPruned as pruned:
        trial.set_user_attr("note", str(pruned))
        study.tell(trial, state=TrialState.PRUNED)
        print(f"trial {trial.number} pruned: {pruned}", flush=True)
        _drop_checkpoints(model_dir)
        return True
    except checkpointing.TrainingError as error:
        # These settings cannot train (the loss stayed non-finite): a result
        # of the search, not a reason to stop it.
        trial.set_user_attr("note", " ".join(str(error).split()))
        study.tell(trial, state=TrialState.FAIL)
        print(f"trial {trial.number} failed: {error}", flush=True)
        _drop_checkpoints(model_dir)
        return True
    except BaseException as error:
        if not isinstance(error, (KeyboardInterrupt, SystemExit)):
            # A user mistake or a bug: recorded, so that it is not retried.
            trial.set_user_attr("note", " ".join(str(error).split()))
            study.tell(trial, state=TrialState.FAIL)
        raise
    if metrics is None:
        return False
    for key in ("validation_accuracy", "test_accuracy", "wall_seconds",
                "train_examples_per_sec"):
        trial.set_user_attr(key, metrics.get(key))
    study.tell(trial, metrics["validation_accuracy"])
    print(f"trial {trial.number}: validation accuracy "
          f"{metrics['validation_accuracy']:.4f}, test accuracy "
          f"{metrics['test_accuracy']:.4f}", flush=True)
    _drop_checkpoints(model_dir)
    return True


def results_table(study, dimensions) -> str:
    """The trials as a Markdown table; the best one is marked with *.

    Examples:
    >>> study = optuna.create_study(direction="maximize")
    >>> results_table(study, parse_search(["epochs"])).splitlines()[0]
    '| trial | state | epochs | validation | test | minutes | model dir |'
    """
    best = _best(study)
    names = [d.name for d in dimensions]
    lines = [
        "| trial | state | " + " | ".join(names)
        + " | validation | test | minutes | model dir |",
        "|---" * (len(names) + 6) + "|",
    ]
    for trial in finished_trials(study) + study.get_trials(
        deepcopy=False, states=(TrialState.RUNNING,)
    ):
        attrs = trial.user_attrs
        mark = "*" if best is not None and trial.number == best.number else ""
        state = trial.state.name.lower()
        if "resumes" in attrs:
            state += f" (resumed {attrs['resumes']})"
        cells = [f"{trial.number}{mark}", state]
        cells += [_format(trial.params.get(name)) for name in names]
        cells += [
            _format(attrs.get("validation_accuracy")),
            _format(attrs.get("test_accuracy")),
            f"{_seconds(trial) / 60:.1f}" if trial.datetime_complete else "",
            attrs.get("model_dir", ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_flags(study, fixed) -> str | None:
    """The best trial's settings as an apps/finetune.py flagfile, or None
    before any trial completed.

    Args:
        study: optuna.Study. The search.
        fixed: dict[str, str]. Flag name -> serialized flag, for the flags
            every trial shared (`fixed_flags()`).
    """
    best = _best(study)
    if best is None:
        return None
    test = best.user_attrs.get("test_accuracy", float("nan"))
    lines = [
        f"# Best of {len(finished_trials(study))} trials by validation "
        f"accuracy: {best.value:.4f} (test {test:.4f}), trial "
        f"{best.number}, {best.user_attrs.get('model_dir')}.",
        "# python -m apps.finetune --flagfile=THIS_FILE --model_dir=runs/best",
    ]
    lines += [flag for name, flag in sorted(fixed.items())
              if name not in best.params]
    lines += [f"--{name}={_flag_value(value)}"
              for name, value in sorted(best.params.items())]
    return "\n".join(lines) + "\n"


def search(base, dimensions, *, tune_dir, environment, checkpoints, fixed,
           max_trials, time_budget_minutes=0.0, prune=True, overwrite=False):
    """Runs (or resumes) the search in `tune_dir`.

    Returns (why it stopped, the study); why is None when a preemption
    signal stopped the running trial (run the same call to resume).

    Args:
        base: run.RunConfig. The settings every trial starts from.
        dimensions: list of Dimension. What is searched (`parse_search`).
        tune_dir: str. The search state, trials and results.
        environment: hardware.Environment. One machine.
        checkpoints: run.CheckpointOptions. For every trial.
        fixed: dict. Flag name -> serialized flag shared by every trial
            (written into best.flags).
        max_trials: int. Trials to finish, resumed runs included.
        time_budget_minutes: float. No trial starts past it (0: no limit).
        prune: bool. Median pruning from the second epoch.
        overwrite: bool. Remove the earlier search's trials and files first.
    """
    for dimension in dimensions:
        if not hasattr(base, dimension.name):
            raise ValueError(
                f"--search={dimension.name}: apps/finetune.py has no "
                f"--{dimension.name} flag in this version. Drop it from "
                "--search."
            )
    if environment.num_workers > 1:
        raise ValueError(
            "apps.tune runs its trials on one machine; TF_CONFIG names "
            f"{environment.num_workers} workers. Unset TF_CONFIG."
        )
    checkpoints = dataclasses.replace(checkpoints, overwrite=False)
    if overwrite:
        _start_over(tune_dir)
    study = open_study(
        tune_dir, seed=base.seed, prune=prune,
        settings={"search": [d.spec() for d in dimensions],
                  "fixed": sorted(fixed.values())},
    )
    if not study.trials:
        study.enqueue_trial(starting_point(base, dimensions),
                            user_attrs={"recipe": True})
    while True:
        stop = budget_spent(study, max_trials=max_trials,
                            time_budget_minutes=time_budget_minutes)
        if stop:
            break
        finished = run_trial(
            study, base, dimensions, environment=environment,
            checkpoints=checkpoints, tune_dir=tune_dir,
        )
        _write_outputs(study, dimensions, fixed, tune_dir)
        if not finished:
            return None, study
    _write_outputs(study, dimensions, fixed, tune_dir)
    return stop, study


def best_trial(study):
    """The completed trial with the best validation accuracy, or None."""
    return _best(study)


def describe(params):
    """Trial settings in one line: name=value ..."""
    return _describe(params)


def _write_outputs(study, dimensions, fixed, tune_dir):
    atomic.write_text(os.path.join(tune_dir, RESULTS_FILE),
                      results_table(study, dimensions) + "\n")
    text = best_flags(study, fixed)
    if text is not None:
        atomic.write_text(os.path.join(tune_dir, BEST_FLAGS_FILE), text)


def _start_over(tune_dir):
    if not os.path.isdir(tune_dir):
        return
    for name in os.listdir(tune_dir):
        path = os.path.join(tune_dir, name)
        if name.startswith("trial_") and os.path.isdir(path):
            shutil.rmtree(path)
        elif name in (STUDY_FILE, RESULTS_FILE, BEST_FLAGS_FILE):
            os.remove(path)


def _best(study):
    complete = [t for t in study.get_trials(deepcopy=False,
                                            states=(TrialState.COMPLETE,))]
    return max(complete, key=lambda t: (t.value, -t.number), default=None)


def _fields(params):
    """Trial settings as `run.RunConfig` fields."""
    return {
        name: (int(value) if name == "epochs" else value)
        for name, value in params.items()
    }


def _describe(params):
    return " ".join(f"{name}={_format(value)}" for name, value in params.items())


def _drop_checkpoints(model_dir):
    # A finished trial is never resumed; its checkpoints only take space.
    shutil.rmtree(os.path.join(model_dir, "checkpoints"), ignore_errors=True)


def _seconds(trial):
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start) / (
        datetime.timedelta(seconds=1)
    )


def _format(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flag_value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
