"""The hyperparameter search app: search space, pruning, budget, outputs,
and a 2-trial search on a tiny model that resumes after a kill."""

import datetime
import json
import os
import signal
import subprocess
import sys

import optuna
import pytest
from absl import flags
from absl.testing import flagsaver
from optuna.trial import TrialState

import tiny
from apps import finetune  # noqa: F401  (first: it defines the shared flags)
from apps import tune  # noqa: F401  (its flags: --tune_dir, --search, ...)
from painless_tf import search
from painless_tf import run

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_search_items_take_defaults_ranges_and_choices():
    dimensions = search.parse_search(
        ["learning_rate", "epochs=1:2", "weight_decay=0|0.05",
         "trainable_layers=0|all", "warmup_fraction=0:0.1"]
    )
    assert [d.spec() for d in dimensions] == [
        "learning_rate=1e-05:0.0001", "epochs=1:2", "weight_decay=0|0.05",
        "trainable_layers=0|all", "warmup_fraction=0:0.1",
    ]
    assert dimensions[0].kind == "log" and dimensions[1].kind == "int"
    assert dimensions[3].choices == ("0", "all")
    # The learning-rate range follows the optimizer's recipe.
    (sgd,) = search.parse_search(["learning_rate"], optimizer="sgd")
    assert (sgd.low, sgd.high) == (1e-3, 1e-1)


@pytest.mark.parametrize(
    "item, message",
    [
        ("momentum", r"unknown hyperparameter 'momentum'. Search among "
                     r"learning_rate, epochs"),
        ("epochs=4:2", r"'epochs=4:2': LOW must be below HIGH, e.g. "
                       r"epochs=2:4"),
        ("epochs=1.5:3", "takes integers"),
        ("learning_rate=0:1e-4", "above 0"),
        ("dropout=0.1", "give a range LOW:HIGH or choices A|B|C"),
        ("trainable_layers=2|top", "'top' is not a layer count"),
    ],
)
def test_bad_search_items_say_what_to_do(item, message):
    with pytest.raises(ValueError, match=message):
        search.parse_search([item])


def test_trial_zero_is_the_recipe_within_the_ranges():
    config = run.RunConfig(epochs=3, learning_rate="auto")
    dimensions = search.parse_search(["learning_rate", "epochs=1:2",
                                    "weight_decay"])
    # epochs=3 lies outside 1:2, so the sampler chooses it instead.
    assert search.starting_point(config, dimensions) == {
        "learning_rate": 3e-5, "weight_decay": 0.01}


class FakeTrial:
    def __init__(self, prune):
        self.prune = prune
        self.reports = []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return self.prune


def test_pruning_stops_a_trial_but_never_after_its_last_epoch():
    trial = FakeTrial(prune=True)
    callback = search.PruneCallback(trial, epochs=3)
    with pytest.raises(optuna.TrialPruned, match="after epoch 2 is below"):
        callback.on_epoch_end(1, {"val_accuracy": 0.5, "accuracy": 0.6})
    assert trial.reports == [(1, 0.5)]
    callback.on_epoch_end(2, {"val_accuracy": 0.55})  # the last: completes
    assert trial.reports[-1] == (2, 0.55)
    calm = search.PruneCallback(FakeTrial(prune=False), epochs=3)
    calm.on_epoch_end(0, {"val_accuracy": 0.4})


def finished_trial(number, value, minutes, params, state=TrialState.COMPLETE,
                   **attrs):
    start = datetime.datetime(2025, 1, 1, 12, 0)
    distributions = {
        "learning_rate": optuna.distributions.FloatDistribution(
            1e-5, 1e-4, log=True),
        "epochs": optuna.distributions.IntDistribution(2, 4),
    }
    return optuna.trial.FrozenTrial(
        number=number, state=state,
        value=value if state == TrialState.COMPLETE else None,
        datetime_start=start,
        datetime_complete=start + datetime.timedelta(minutes=minutes),
        params=params, distributions={k: distributions[k] for k in params},
        user_attrs=attrs, system_attrs={}, intermediate_values={},
        trial_id=number,
    )


def small_study():
    study = optuna.create_study(direction="maximize")
    study.add_trial(finished_trial(
        0, 0.80, 3.0, {"learning_rate": 3e-5, "epochs": 3},
        validation_accuracy=0.80, test_accuracy=0.79,
        model_dir="runs/tune/trial_0"))
    study.add_trial(finished_trial(
        1, 0.85, 4.0, {"learning_rate": 5.123456e-5, "epochs": 2},
        validation_accuracy=0.85, test_accuracy=0.83,
        model_dir="runs/tune/trial_1"))
    study.add_trial(finished_trial(
        2, None, 1.0, {"learning_rate": 1e-5, "epochs": 4},
        state=TrialState.PRUNED, model_dir="runs/tune/trial_2"))
    return study


def test_budget_counts_finished_trials_and_their_minutes():
    study = small_study()
    assert search.budget_spent(study, max_trials=4, time_budget_minutes=0) is None
    assert search.budget_spent(study, max_trials=3, time_budget_minutes=0) == (
        "3 trials finished (--max_trials=3)")
    assert search.budget_spent(study, max_trials=9,
                            time_budget_minutes=8.0).startswith(
        "finished trials took 8.0 min")
    assert search.budget_spent(study, max_trials=9, time_budget_minutes=8.5) is None


def test_table_marks_the_best_and_the_flagfile_feeds_finetune(tmp_path):
    study = small_study()
    dimensions = search.parse_search(["learning_rate", "epochs"])
    table = search.results_table(study, dimensions).splitlines()
    assert table[0] == ("| trial | state | learning_rate | epochs | "
                        "validation | test | minutes | model dir |")
    assert table[3] == ("| 1* | complete | 5.123e-05 | 2 | 0.85 | 0.83 | 4.0 "
                        "| runs/tune/trial_1 |")
    assert table[4].startswith("| 2 | pruned | 1e-05 | 4 |")

    fixed = {"train_data": "--train_data=train.csv",
             "learning_rate": "--learning_rate=0.01",
             "skip_bad_rows": "--skip_bad_rows"}
    path = tmp_path / "best.flags"
    path.write_text(search.best_flags(study, fixed))
    args = FLAGS.read_flags_from_files([f"--flagfile={path}"])
    assert sorted(args) == ["--epochs=2", "--learning_rate=5.12346e-05",
                            "--skip_bad_rows", "--train_data=train.csv"]
    for arg in args:
        name = arg[2:].split("=")[0]
        assert FLAGS.find_module_defining_flag(name) == "painless_tf.flags"
    with flagsaver.flagsaver():
        FLAGS(["finetune", f"--flagfile={path}"])
        assert FLAGS.learning_rate == "5.12346e-05" and FLAGS.epochs == 2
        assert FLAGS.train_data == "train.csv" and FLAGS.skip_bad_rows


def run_tune(args, *, env=None):
    environment = dict(os.environ, TF_DETERMINISTIC_OPS="1",
                       TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    environment.pop("PAINLESS_TF_KILL_AT", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "apps.tune", *args], cwd=ROOT, env=environment,
        capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_two_trial_search_resumes_after_a_kill(tmp_path):
    preset = tiny.write_preset(tmp_path / "preset")
    train = tiny.write_csv(tmp_path / "train.csv", tiny.sentiment_rows(80))
    tune_dir = tmp_path / "tune"
    args = [
        f"--model={preset}", f"--train_data={train}", f"--tune_dir={tune_dir}",
        "--max_trials=2", "--search=learning_rate=0.001:0.1,epochs=1:2",
        "--epochs=1", "--learning_rate=0.01", "--global_batch_size=8",
        "--precision=float32", "--xla=false", "--max_sequence_length=16",
        "--checkpoint_every_updates=2",
    ]
    env = {"PAINLESS_TF_CACHE": str(tmp_path / "cache")}
    # Killed at the third update of trial 0, after its checkpoint at two.
    killed = run_tune(args, env={**env, "PAINLESS_TF_KILL_AT": "batch_end:3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert os.listdir(tune_dir / "trial_0" / "checkpoints")
    assert not (tune_dir / "results.md").exists()

    resumed = run_tune(args, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = resumed.stdout
    assert "trial 0 was interrupted: it continues from its last checkpoint" in out
    # Trial 0's settings (the recipe: the flags given) continue in its dir.
    assert f"trial 1: learning_rate=0.01 epochs=1 -> {tune_dir}/trial_0" in out
    assert "resumed from" in out
    assert "search done: 2 trials finished (--max_trials=2)" in out
    table = (tune_dir / "results.md").read_text().splitlines()
    assert len(table) == 4  # header, rule, two trials; the kill left no row
    assert table[2].startswith("| 1") and "complete (resumed 0)" in table[2]
    assert f"{tune_dir}/trial_2 |" in table[3]
    assert not (tune_dir / "trial_0" / "checkpoints").exists()
    metrics = run_json(tune_dir / "trial_0" / "metrics.json")
    plan = run_json(tune_dir / "trial_0" / "plan.json")
    assert metrics["optimizer_updates"] == plan["total_updates"]
    best = (tune_dir / "best.flags").read_text()
    assert f"--model={preset}" in best and "--epochs=" in best

    again = run_tune(args, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "search done: 2 trials finished" in again.stdout
    assert sorted(os.listdir(tune_dir)) == [
        "best.flags", "results.md", "study.journal", "trial_0", "trial_2"]


def test_a_regression_set_is_refused_before_any_trial_trains(tmp_path):
    preset = tiny.write_preset(tmp_path / "preset")
    train = tiny.write_csv(tmp_path / "train.csv", tiny.regression_rows(40))
    tune_dir = tmp_path / "tune"
    refused = run_tune([
        f"--model={preset}", f"--train_data={train}", f"--tune_dir={tune_dir}",
        "--max_trials=2", "--precision=float32", "--xla=false",
        "--max_sequence_length=16", "--lr_range_test_steps=0",
    ], env={"PAINLESS_TF_CACHE": str(tmp_path / "cache")})
    assert refused.returncode != 0
    line = refused.stderr.strip().splitlines()[-1]
    assert f"--train_data={train} holds a regression task" in line, line
    assert "apps.finetune" in line
    assert "epoch 1/" not in refused.stdout
    assert not os.path.exists(tune_dir / "trial_0" / "checkpoints")


def run_json(path):
    with open(path) as f:
        return json.load(f)


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(search).failed == 0
