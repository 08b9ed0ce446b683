r"""Searches fine-tuning hyperparameters; every trial is a painless run.

Each trial is `apps/finetune.py` with some flags chosen by the search: it
goes through `run.prepare` and `run.fit_and_save` (the same automatic plan,
checkpoints and outputs) into `<tune_dir>/trial_<n>`, and is scored by its
validation accuracy (the test split only reports: choosing on it would
overstate the winner). The search is Optuna's TPE sampler (seeded by
--seed), starting from the recipe's settings as trial 0, with Optuna's
median pruner as early stopping: from the second epoch on, a trial whose
validation accuracy falls below the median of the earlier trials at the same
epoch stops there.

One machine (CPU, or the GPUs/TPU that finetune would use):
    python -m apps.tune --tune_dir=runs/tune --max_trials=12
    python -m apps.tune --tune_dir=runs/tune --time_budget_minutes=120 \
        --search='learning_rate,epochs,trainable_layers=0|2|4|all'
Run the same command again after a crash or a kill and the search resumes:
the trial that was running continues from its last checkpoint, the finished
ones are kept, and --max_trials / --time_budget_minutes count all of them.
Then train with the best settings:
    python -m apps.finetune --flagfile=runs/tune/best.flags --model_dir=runs/best

--search names the hyperparameters (flags of apps/finetune.py), each
optionally with its range `low:high` or its choices `a|b|c`:
    learning_rate    log-uniform over the optimizer's recipe range
                     (AdamW: 1e-5:1e-4)
    epochs           integer, 2:4
    warmup_fraction  0:0.2
    weight_decay     0|0.01|0.1
    dropout          0:0.3 in steps of 0.05 (the classifier's dropout)
    trainable_layers 0|2|4|all (not searched unless named)
Every other flag of apps/finetune.py (data, model, plan) is fixed for all
trials.

Writes into --tune_dir:
    study.journal  the search state (Optuna's append-only journal; a kill
                   loses at most the running trial's last updates)
    trial_<n>/     each trial's model dir (its checkpoints are deleted when
                   the trial ends)
    results.md     the table of trials, best marked with *
    best.flags     the best trial's settings as a flagfile for finetune
"""

import os

from absl import app
from absl import flags
from absl import logging

from painless_tf import flags as painless_flags
from painless_tf import hardware
from painless_tf import search

FLAGS = flags.FLAGS
# apps.finetune defines the same shared flags; a process that imports both
# apps (the test suite) must define them once.
if "train_data" not in FLAGS:
    painless_flags.define_data_flags()
    painless_flags.define_plan_flags()
    painless_flags.define_checkpoint_flags()
# The shared flags are this app's own: --help lists them.
flags.adopt_module_key_flags(painless_flags)

_TUNE_DIR = flags.DEFINE_string(
    "tune_dir", "runs/tune", "Where the search state, trials and results go.")
_MAX_TRIALS = flags.DEFINE_integer(
    "max_trials", 10,
    "Trials to finish (completed, pruned or failed), resumed runs included.",
    lower_bound=1)
_TIME_BUDGET = flags.DEFINE_float(
    "time_budget_minutes", 0.0,
    "No trial starts once finished trials took this many minutes (0: no "
    "limit); the running trial finishes.", lower_bound=0.0)
_SEARCH = flags.DEFINE_list(
    "search", ["learning_rate", "epochs", "warmup_fraction", "weight_decay",
               "dropout"],
    "Hyperparameters to search, each NAME, NAME=LOW:HIGH or NAME=A|B|C "
    "(see the module docstring).")
_PRUNE = flags.DEFINE_bool(
    "prune", True,
    "Stop a trial whose validation accuracy after an epoch (from the second "
    "on) is below the median of earlier trials at that epoch.")


def fixed_flags() -> dict:
    """apps/finetune.py's data and plan flags given on the command line:
    flag name -> serialized flag (the settings every trial shares)."""
    return {
        flag.name: flag.serialize()
        for flag in FLAGS.flags_by_module_dict().get(painless_flags.__name__, [])
        if flag.present and flag.name not in search.NOT_SETTINGS
    }


def main(argv):
    del argv
    tune_dir = _TUNE_DIR.value
    base = painless_flags.run_config(model_dir=tune_dir)
    checkpoints = painless_flags.checkpoint_options()
    dimensions = search.parse_search(_SEARCH.value, optimizer=base.optimizer)
    stop, study = search.search(
        base, dimensions,
        tune_dir=tune_dir,
        environment=hardware.detect_environment(tpu=base.tpu),
        checkpoints=checkpoints, fixed=fixed_flags(),
        max_trials=_MAX_TRIALS.value, time_budget_minutes=_TIME_BUDGET.value,
        prune=_PRUNE.value, overwrite=checkpoints.overwrite,
    )
    if stop is None:
        print("preempted: run the same command to resume the search",
              flush=True)
        return
    print(f"search done: {stop}", flush=True)
    print(search.results_table(study, dimensions), flush=True)
    best = search.best_trial(study)
    if best is not None:
        print(f"best: trial {best.number}, {search.describe(best.params)} -> "
              f"{os.path.join(tune_dir, search.BEST_FLAGS_FILE)}", flush=True)


run_main = painless_flags.one_line_errors(main)

def console_main():
    """The `painless-tune` command (pyproject.toml's entry point)."""
    painless_flags.as_main(__name__)
    logging.set_verbosity(logging.INFO)
    app.run(run_main)


if __name__ == "__main__":
    console_main()
