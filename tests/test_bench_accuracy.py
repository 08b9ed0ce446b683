"""The accuracy suite (issue 18): its statistics, tables and targets on
constructed results, and one real run of `python -m bench.accuracy` on the
tiny model that a second run of the same command only reads.
"""

import doctest
import json
import math
import os
import subprocess
import sys

import pytest

from bench import accuracy
from bench import accuracy_tables as tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RT = tables.ROTTEN_TOMATOES


def _run(name, variant, seed, task="classification", seconds=100.0,
         **metrics):
    return {"set": name, "variant": variant, "seed": seed, "finished": True,
            "task": task, "wall_seconds": seconds, "test": metrics}


def _missing(name, variant, seed):
    return {"set": name, "variant": variant, "seed": seed, "finished": False,
            "error": "failed (exit status 1): boom"}


def _results():
    """Rotten Tomatoes, 3 seeds: layer_decay better, tighter and 1.2x the
    time; drug-reviews: layer_decay worse; votes: layer_decay's seed 2
    missing."""
    runs = []
    for seed, (base, mine) in enumerate([(0.85, 0.87), (0.86, 0.868),
                                         (0.87, 0.872)]):
        runs.append(_run(RT, "recipe", seed, accuracy=base, macro_f1=base))
        runs.append(_run(RT, "layer_decay", seed, seconds=120.0,
                         accuracy=mine, macro_f1=mine - 0.01))
        runs.append(_run("drug-reviews", "recipe", seed, accuracy=0.60,
                         macro_f1=0.40))
        runs.append(_run("drug-reviews", "layer_decay", seed, accuracy=0.58,
                         macro_f1=0.45))
        runs.append(_run("votes", "recipe", seed, task="regression",
                         rmse=24.0 + seed))
        runs.append(_missing("votes", "layer_decay", seed) if seed == 2 else
                    _run("votes", "layer_decay", seed, task="regression",
                         rmse=23.0))
    return runs


def _summaries(runs=None):
    return tables.summarize(
        _results() if runs is None else runs,
        sets=[RT, "drug-reviews", "votes"],
        variants=["recipe", "layer_decay"], seeds=[0, 1, 2])


def test_summary_has_mean_spread_ratio_and_delta():
    rt = _summaries()[RT]
    assert rt["task"] == "classification"
    base, mine = rt["variants"]["recipe"], rt["variants"]["layer_decay"]
    assert base["metrics"]["accuracy"]["mean"] == pytest.approx(0.86)
    assert base["metrics"]["accuracy"]["spread"] == pytest.approx(0.02)
    assert mine["metrics"]["accuracy"]["mean"] == pytest.approx(0.87)
    assert mine["metrics"]["accuracy"]["min"] == pytest.approx(0.868)
    assert mine["metrics"]["accuracy"]["spread"] == pytest.approx(0.004)
    assert mine["metrics"]["accuracy"]["delta"] == pytest.approx(0.01)
    assert mine["metrics"]["macro_f1"]["delta"] == pytest.approx(0.0)
    assert mine["time_ratio"] == pytest.approx(1.2)
    assert base["time_ratio"] == pytest.approx(1.0)
    assert base["metrics"]["accuracy"]["delta"] == pytest.approx(0.0)


def test_a_missing_run_is_counted_as_missing_never_as_a_number():
    votes = _summaries()["votes"]
    assert votes["task"] == "regression"
    mine = votes["variants"]["layer_decay"]
    assert mine["finished"] == 2 and mine["missing"] == [2]
    # The mean is over the finished seeds only, and says so in the table.
    assert mine["metrics"]["rmse"]["runs"] == 2
    table = tables.markdown(_summaries())
    assert "| layer_decay | 2 of 3 (missing: seed 2) |" in table
    # Nothing finished: every number is "missing".
    none = tables.summarize([_missing(RT, v, 0) for v in ("recipe", "all")],
                            sets=[RT], variants=["recipe", "all"], seeds=[0])
    row = [line for line in tables.markdown(none).splitlines()
           if line.startswith("| all |")][0]
    assert row == "| all | 0 of 1 (missing: seed 0) | missing | missing |"
    assert "No run of this set finished." in tables.markdown(none)
    assert {t["status"] for t in tables.targets(none)} == {tables.MISSING}


def test_tables_show_the_task_metrics_per_set():
    table = tables.markdown(_summaries())
    assert "### rotten_tomatoes (classification)" in table
    assert "### votes (regression)" in table
    rt = [line for line in table.split("### ")[1].splitlines()
          if line.startswith("| layer_decay |")][0]
    assert rt == ("| layer_decay | 3 of 3 | 0.8700 (0.8680-0.8720, 0.0040) "
                  "| 0.8600 (0.8580-0.8620, 0.0040) | 120 | 1.20x | +0.0100 "
                  "| +0.0000 |")
    votes = table.split("### votes")[1]
    assert "test RMSE: mean (min-max, spread)" in votes
    assert "macro-F1" not in votes


def test_targets_are_met_not_met_or_missing():
    found = {t["target"]: t for t in tables.targets(_summaries())}
    accuracy_, spread, time_, real = found.values()
    assert accuracy_["status"] == tables.MET
    assert accuracy_["detail"] == "0.8700"
    assert spread["status"] == tables.MET
    assert time_["status"] == tables.MET and time_["detail"] == "1.20x"
    # drug-reviews is worse (accuracy, the first metric); votes is missing.
    assert real["status"] == tables.NOT_MET
    assert "drug-reviews accuracy 0.5800 vs 0.6000" in real["detail"]
    assert "seed 2 missing" in real["detail"]
    lines = tables.target_lines(tables.targets(_summaries()))
    assert lines[0] == ("layer_decay: Rotten Tomatoes mean test accuracy >= "
                        "0.865: met (0.8700)")


def test_targets_not_met_and_lower_rmse_is_better():
    runs = [r for r in _results() if r["set"] != "drug-reviews"]
    for r in runs:
        if r["set"] == RT and r["variant"] == "layer_decay":
            r["wall_seconds"] = 140.0
            r["test"]["accuracy"] -= 0.02 * (r["seed"] + 1)
        if r["set"] == "votes" and not r["finished"]:
            r.update(_run("votes", "layer_decay", 2, task="regression",
                          rmse=23.5))
    found = tables.targets(tables.summarize(
        runs, sets=[RT, "votes"], variants=["recipe", "layer_decay"],
        seeds=[0, 1, 2]))
    assert [t["status"] for t in found] == [
        tables.NOT_MET, tables.NOT_MET, tables.NOT_MET, tables.MET]
    assert found[2]["detail"] == "1.40x"
    assert found[3]["detail"] == "votes RMSE 23.1667 vs 25.0000"


def test_variants_all_combines_every_addition_but_the_other_averaging():
    assert accuracy.VARIANTS["recipe"] == []
    assert accuracy.VARIANTS["layer_decay"] == ["--layer_decay=0.9"]
    # ema is the other value of --weight_averaging than soup: it runs alone.
    assert accuracy.VARIANTS["ema"] == ["--weight_averaging=ema"]
    additions = [f for name, fl in accuracy.VARIANTS.items()
                 if name not in ("all", "ema") for f in fl]
    assert accuracy.VARIANTS["all"] == additions
    assert accuracy.VARIANTS["all"] == [
        "--layer_decay=0.9", "--weight_averaging=soup", "--min_updates=300"]
    for name in ("all", "layer_decay", "ema"):
        assert not accuracy._duplicate(name)


def test_command_has_only_the_data_seed_variant_and_extra_flags(tmp_path):
    model_dir = accuracy.run_dir(tmp_path, "s", "layer_decay", 2)
    assert model_dir == str(tmp_path / "s" / "layer_decay" / "seed2")
    args = accuracy.command(model_dir, 2, ["--train_data=x.jsonl"],
                            "layer_decay", extra=["--epochs=1"])
    assert args[1:] == ["-m", "apps.finetune", f"--model_dir={model_dir}",
                        "--seed=2", "--train_data=x.jsonl",
                        "--layer_decay=0.9", "--epochs=1"]


def test_data_flags_name_the_set_files(tmp_path):
    assert accuracy.data_flags(RT, None) == []
    (tmp_path / "one.jsonl").write_text("{}\n")
    (tmp_path / "two.train.jsonl").write_text("{}\n")
    (tmp_path / "two.test.jsonl").write_text("{}\n")
    (tmp_path / "three.csv").write_text("text,label\n")
    assert accuracy.data_flags("one", str(tmp_path)) == [
        f"--train_data={tmp_path / 'one.jsonl'}"]
    assert accuracy.data_flags("two", str(tmp_path)) == [
        f"--train_data={tmp_path / 'two.train.jsonl'}",
        f"--test_data={tmp_path / 'two.test.jsonl'}"]
    assert accuracy.data_flags("three", str(tmp_path)) == [
        f"--train_data={tmp_path / 'three.csv'}"]
    with pytest.raises(FileNotFoundError, match="bench.real_data"):
        accuracy.data_flags("drug-reviews", str(tmp_path))


def test_only_a_run_with_every_end_file_is_finished(tmp_path):
    model_dir = tmp_path / "seed0"
    (model_dir / "model").mkdir(parents=True)
    for name in ("evaluation.json", "metrics.json"):
        (model_dir / name).write_text("{}")
    assert not accuracy.finished(str(model_dir))  # killed before the report
    (model_dir / "report.html").write_text("")
    assert accuracy.finished(str(model_dir))


def test_a_run_trained_by_another_command_is_missing(tmp_path):
    model_dir = accuracy.run_dir(tmp_path, "s", "recipe", 0)
    os.makedirs(os.path.join(model_dir, "model"))
    for name in accuracy.FINISHED_FILES[:2] + accuracy.FINISHED_FILES[3:]:
        with open(os.path.join(model_dir, name), "w") as f:
            f.write("{}")
    with open(model_dir + ".attempts.json", "w") as f:
        json.dump({"command": "python -m apps.finetune --epochs=9",
                   "attempts": [{"seconds": 1.0}]}, f)
    result = accuracy.run_one("s", "recipe", 0, [], env={},
                              work_dir=str(tmp_path), model=None, extra=())
    assert not result["finished"]
    assert "another --work_dir" in result["error"]
    assert result["recorded_command"].endswith("--epochs=9")


def test_wall_seconds_sum_the_attempts_and_mark_untimed_ones():
    timed = accuracy._wall_seconds(
        {"attempts": [{"seconds": 10.0}, {"seconds": 5.5}]}, {})
    assert timed["wall_seconds"] == 15.5 and timed["wall_seconds_complete"]
    partial = accuracy._wall_seconds(
        {"attempts": [{"seconds": None}, {"seconds": 5.0}]}, {})
    assert partial["wall_seconds"] == 5.0
    assert not partial["wall_seconds_complete"]
    before = accuracy._wall_seconds({"attempts": []},
                                    {"app_wall_seconds": 7.0})
    assert before["wall_seconds"] == 7.0
    assert not before["wall_seconds_complete"]
    summary = tables.summarize(
        [dict(_run("s", "recipe", 0), wall_seconds_complete=False)],
        sets=["s"], variants=["recipe"], seeds=[0])
    assert "100 (partly untimed)" in tables.markdown(summary)


@pytest.mark.parametrize("module", [accuracy, tables])
def test_docstring_examples_run(module):
    failures, _ = doctest.testmod(module)
    assert failures == 0


@pytest.mark.slow
def test_the_suite_runs_the_app_and_a_second_run_only_reads(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import tiny

    preset = tiny.write_preset(tmp_path / "preset")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tiny.write_csv(data_dir / "tiny.csv", tiny.sentiment_rows(80))
    out, work = tmp_path / "accuracy.json", tmp_path / "work"
    extra = ("--epochs=1 --global_batch_size=8 --precision=float32 "
             "--xla=false --max_sequence_length=16 --learning_rate=0.01")
    command = [sys.executable, "-m", "bench.accuracy", "--sets=tiny",
               f"--data_dir={data_dir}", "--variants=recipe,layer_decay",
               "--seeds=0", f"--model={preset}", f"--extra_flags={extra}",
               f"--work_dir={work}", f"--out={out}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("CUDA_VISIBLE_DEVICES", None)

    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                           text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["command"].startswith("python -m bench.accuracy --sets=tiny")
    assert "avx512_bf16" in report["machine"]["cpu_flags"]
    assert report["machine"]["git"]["commit"]
    assert len(report["load_average"]["end"]) == 3
    runs = {r["variant"]: r for r in report["runs"]}
    assert set(runs) == {"recipe", "layer_decay"}
    for variant, run in runs.items():
        assert run["finished"] and run["ran_now"], run
        assert run["task"] == "classification"
        assert set(run["test"]) == {"accuracy", "macro_f1"}
        assert all(math.isfinite(v) for v in run["test"].values())
        assert run["selection"]["metric"] == "val_accuracy"
        assert run["updates"] > 0 and run["wall_seconds"] > 0
        assert os.path.isfile(run["log"])
    with open(work / "tiny" / "layer_decay" / "seed0" / "plan.json") as f:
        assert json.load(f)["layer_decay"] == 0.9
    assert "| layer_decay | 1 of 1 |" in report["markdown"]
    assert "| layer_decay | 1 of 1 |" in first.stdout
    assert "targets (issue 18):" in first.stdout

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                            text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("finished earlier, read") == 2
    again = json.loads(out.read_text())
    for run in again["runs"]:
        assert not run["ran_now"]
        assert run["attempts"] == 1  # nothing trained again
        assert run["test"] == runs[run["variant"]]["test"]
        assert run["wall_seconds"] == runs[run["variant"]]["wall_seconds"]
