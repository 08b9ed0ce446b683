"""The benchmarks run and report well-formed numbers (speed is never asserted).

The two slow tests run what CI runs: `python -m bench.run --suite=quick`
(every suite on the tiny model) and `bench/gpu_check.sh --dry_run`.
"""

import doctest
import json
import math
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest

from bench import gpu_check
from bench import peer_env
from bench import startup
from bench import suite_time
from bench import suites
from bench import tables
from bench import workloads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEASURED = ("examples_per_sec", "real_tokens_per_sec", "mfu",
            "update_seconds_median", "peak_rss_mib", "time_to_first_step_s",
            "flops_per_real_token")


def _run(command, tmp_path, **env_vars):
    # No time limit: how long these take depends on the machine and its
    # load, and says nothing about whether they work.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env_vars)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True,
    )


def _assert_measured(name, result):
    assert "error" not in result, (name, result.get("error"))
    for field in MEASURED:
        value = result[field]
        assert math.isfinite(value) and value > 0, (name, field, value)
    assert 0 <= result["padding_fraction"] < 1, name
    assert result["timed_updates"] >= 1


@pytest.mark.slow
def test_quick_suite_measures_every_config_of_every_suite(tmp_path):
    out = tmp_path / "quick.json"
    proc = _run(
        [sys.executable, "-m", "bench.run", "--suite=quick", f"--out={out}",
         "--time_to_accuracy", "--eval_every=2", "--max_updates=4",
         "--config_timeout=0"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["suite"] == "quick"
    assert report["command"].startswith("python -m bench.run --suite=quick")
    assert report["machine"]["cpu_cores_usable"] >= 1
    assert len(report["load_average"]["start"]) == 3
    assert report["peak_flops"]["best"]["float32"]["flops"] > 0
    assert report["plan"]["precision"] in ("float32", "mixed_bfloat16")
    sections = report["sections"]
    assert set(sections) == {"cpu", "engine", "pipeline", "freezing"}
    assert set(sections["cpu"]["results"]) == {
        "keras_hub_default", "keras_hub_hand_picked",
        "keras_builtin_accumulation", "painless"}
    assert set(sections["engine"]["results"]) == {
        "painless_k1_float32", "painless_k4_float32", "keras_k4_float32",
        "painless_k1_plan", "painless_k4_plan", "keras_k4_plan",
        "painless_b_float32", "painless_b_plan"}
    for section in ("cpu", "engine"):
        for name, result in sections[section]["results"].items():
            _assert_measured(name, result)
    for name in ("keras_hub_default", "our_pipeline"):
        _assert_measured(name, sections["pipeline"]["results"][name])

    cpu = sections["cpu"]["results"]
    # What each config ran is what it claims to have run.
    assert cpu["keras_hub_default"]["sequence_length"] == 64
    assert cpu["keras_hub_hand_picked"]["sequence_length"] == 32
    assert cpu["keras_hub_hand_picked"]["precision"] == "mixed_bfloat16"
    assert cpu["keras_builtin_accumulation"]["micro_batch_size"] == 8
    assert cpu["keras_builtin_accumulation"]["accumulation_steps"] == 4
    assert cpu["painless"]["buckets"]
    engine = sections["engine"]["results"]
    assert engine["painless_k4_float32"]["micro_batch_size"] == 8
    assert engine["painless_k4_float32"]["accumulation_steps"] == 4
    assert engine["painless_b_float32"]["micro_batch_size"] == 8
    freezing = sections["freezing"]["results"]
    assert freezing["layers_0"]["trainable_layers"] == 0
    assert freezing["layers_all"]["trainable_layers"] == "all"
    for result in freezing.values():
        assert result["examples_per_sec"] > 0
    assert "mfu" not in freezing["layers_0"]
    # Every engine config timed the same examples.
    assert len({round(r["examples_per_sec"] * r["timed_seconds"])
                for r in engine.values()}) == 1
    # The keras-hub path pads every row to 64; the buckets pad less.
    assert (cpu["painless"]["padding_fraction"]
            < cpu["keras_hub_default"]["padding_fraction"])
    for name in ("keras_hub_default", "painless"):
        tta = cpu[name]["time_to_accuracy"]
        assert tta["target"] == 0.8 and tta["updates_run"] >= 4
        assert [e["update"] for e in tta["evaluations"]][:1] == [2]
        assert all(0 <= e["accuracy"] <= 1 for e in tta["evaluations"])
        assert (tta["seconds"] is None) == (not tta["reached"])

    starvation = sections["pipeline"]["results"]["starvation"]
    assert starvation["pipeline_over_in_memory_median"] > 0
    for section in sections.values():
        assert section["ratios"]
        for ratio in section["ratios"]:
            if ratio["name"].startswith("time to target accuracy"):
                # A few updates of the tiny model rarely reach 80%.
                continue
            assert ratio["value"] is not None and ratio["value"] > 0, ratio
    assert "| painless |" in report["markdown"]
    assert "### engine" in proc.stdout


@pytest.mark.slow
def test_gpu_check_dry_run_writes_one_complete_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    # The script's time limits protect a lent GPU's time; off for the dry
    # run, whose CPU times depend on the load.
    limits_off = {name: "0" for name in (
        "LIMIT_INPUTS", "LIMIT_ENV", "LIMIT_ENGINE", "LIMIT_PLAN",
        "LIMIT_BENCH", "CONFIG_TIMEOUT")}
    proc = _run(["bash", "bench/gpu_check.sh", "--dry_run", f"--out={out}"],
                tmp_path, PYTHON=sys.executable, **limits_off)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["ok"] and report["dry_run"]
    assert set(report["steps"]) == {
        "inputs", "environment", "engine_tests", "plan", "bench"}
    for name, step in report["steps"].items():
        assert step["rc"] == 0 and not step["timed_out"], (name, step)
    assert report["engine_tests"]["passed"] == 3
    assert report["engine_tests"]["failed"] == 0

    default = report["plan"]["default"]["plan"]
    assert default["precision"] == "mixed_bfloat16" and default["xla"]
    # The simulated device fits 8 rows: the probe found it by catching OOM.
    assert default["micro_batch_size"] == 8
    assert default["accumulation_steps"] == 4
    calls = report["plan"]["default"]["probe_calls"]
    assert {c["fits"] for c in calls} == {True, False}
    assert any("out-of-memory" in c.get("error", "") for c in calls)
    search = report["plan"]["oom_search"]["plan"]
    assert search["global_batch_size"] == 64
    assert search["micro_batch_size"] * search["accumulation_steps"] == 64

    # The dry run benchmarks the plan's config only (the GPU run adds the
    # two keras-hub configs; the quick suite runs them on the CPU).
    results = report["bench"]["sections"]["cpu"]["results"]
    assert set(results) == {"painless"}
    _assert_measured("painless", results["painless"])


def test_step_clock_counts_updates_and_stops_at_the_target():
    accuracies = iter([0.5, 0.9, 0.95])
    clock = workloads.StepClock(
        steps_per_update=2, stop_after=10,
        evaluate=lambda: next(accuracies), eval_every=1, target=0.8,
    )
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((16, 2)), np.ones((16,)), batch_size=2, verbose=0,
              callbacks=[clock])
    # 2 train calls per update; the second evaluation reached 0.8.
    assert len(clock.update_ends) == 2
    assert clock.reached_at == 1
    assert [e[0] for e in clock.evaluations] == [1, 2]
    assert clock.eval_seconds >= 0
    assert clock.update_ends == sorted(clock.update_ends)


def test_step_clock_gives_up_at_the_first_evaluation_past_the_deadline():
    import time

    clock = workloads.StepClock(
        stop_after=50, evaluate=lambda: 0.5, eval_every=2, target=0.8,
        min_updates=3, give_up_at=time.perf_counter(),
    )
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((100, 2)), np.ones((100,)), batch_size=2, verbose=0,
              callbacks=[clock])
    # Past the deadline from the start, but the timed window (3 updates)
    # runs, and only an evaluation below the target stops: the one at 4.
    assert len(clock.update_ends) == 4
    assert clock.gave_up_at == 3 and clock.reached_at is None


def test_time_to_accuracy_ratio_is_a_bound_when_keras_hub_gave_up():
    results = {
        "painless": {"time_to_accuracy": {"seconds": 100.0}},
        "keras_hub_default": {"time_to_accuracy": {
            "seconds": None, "gave_up_after_seconds": 320.0}},
    }
    (ratio,) = [r for r in tables.ratios("cpu", results)
                if r["name"].startswith("time to target accuracy")]
    assert ratio["value"] == pytest.approx(100 / 320)
    assert ratio["meets_target"] and "at most" in ratio["name"]
    # Given up too early to prove anything: the bound misses the target.
    results["keras_hub_default"]["time_to_accuracy"][
        "gave_up_after_seconds"] = 200.0
    (ratio,) = [r for r in tables.ratios("cpu", results)
                if r["name"].startswith("time to target accuracy")]
    assert not ratio["meets_target"]


def test_summarize_counts_only_the_timed_window():
    clock = workloads.StepClock()
    clock.update_ends = [10.0, 11.0, 13.0, 14.0]
    window = workloads.Window(
        examples=6, tokens=60, positions=100, lengths=np.full(6, 10))

    def window_fn(first, stop):
        assert (first, stop) == (1, 4)
        return window

    backbone = types.SimpleNamespace(
        hidden_dim=8, num_layers=2, intermediate_dim=16)
    result = workloads.summarize(
        {"warmup": 1, "updates": 3}, clock, window_fn, backbone, "float32",
        started=4.0)
    # From the end of the warm-up update (10.0) to the end of the last.
    assert result["timed_seconds"] == 4.0
    assert result["examples_per_sec"] == 1.5
    assert result["real_tokens_per_sec"] == 15.0
    assert result["padding_fraction"] == pytest.approx(0.4)
    assert result["time_to_first_step_s"] == 6.0
    assert result["update_seconds_median"] == 1.0  # of 1, 2 and 1 s
    assert result["model_flops_per_sec"] == pytest.approx(
        15.0 * result["flops_per_real_token"])


def test_summarize_refuses_a_run_shorter_than_the_window():
    clock = workloads.StepClock()
    clock.update_ends = [1.0, 2.0]
    with pytest.raises(RuntimeError, match="warmup \\+ updates = 4"):
        workloads.summarize({"warmup": 1, "updates": 3}, clock, None, None,
                            "float32", started=0.0)


def test_ratios_compare_the_named_configs_and_mark_targets():
    results = {
        "painless": {"examples_per_sec": 60.0, "mfu": 0.4,
                     "real_tokens_per_sec": 1200.0,
                     "time_to_first_step_s": 30.0},
        "keras_hub_default": {"examples_per_sec": 10.0,
                              "real_tokens_per_sec": 200.0,
                              "time_to_first_step_s": 60.0},
        "keras_hub_hand_picked": {"error": "boom"},
    }
    by_name = {r["name"]: r for r in tables.ratios("cpu", results)}
    default = by_name["painless / keras-hub default, examples/sec"]
    assert default["value"] == 6.0 and default["meets_target"] is True
    hand = by_name["painless / hand-picked (seq 128, bf16), examples/sec"]
    assert hand["value"] is None and hand["meets_target"] is None
    first = by_name["painless / keras-hub default, time to first step"]
    assert first["value"] == 0.5
    mfu = by_name["painless MFU on real tokens (of the measured peak at its "
                  "precision)"]
    assert mfu["meets_target"] is True


def test_markdown_shows_failures_and_unmet_targets():
    section = {
        "results": {"painless": {"error": "boom"},
                    "keras_hub_default": {"precision": "float32",
                                          "examples_per_sec": 3.0,
                                          "sequence_length": 256}},
        "ratios": [tables._ratio("r", 0.5, 0.95)],
    }
    text = tables.markdown("engine", section)
    assert "| painless | failed: boom |" in text
    assert "| keras_hub_default | float32 | 256 |" in text
    assert "| r | 0.50 | >= 0.95 (not met) |" in text


def test_junit_summary_counts_failures(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest" time="1.5">'
        '<testcase name="a" time="0.5"/>'
        '<testcase name="b" time="1.0"><failure message="assert 1 == 2&#10;'
        'detail">trace</failure></testcase>'
        "</testsuite></testsuites>")
    summary = gpu_check.junit_summary(str(xml))
    assert (summary["tests"], summary["passed"], summary["failed"]) == (2, 1, 1)
    assert summary["cases"][1]["failure"] == "assert 1 == 2"


def test_peer_is_skipped_with_its_reason_without_a_working_interpreter(
        tmp_path, monkeypatch):
    resolved = peer_env.resolve("/nonexistent")
    assert not resolved.ok and resolved.python is None
    assert resolved.skipped == "--peer_python: /nonexistent does not exist"
    # An interpreter without torch: the import error is the reason.
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named "
                    "'torch'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    resolved = peer_env.resolve(str(fake))
    assert resolved.skipped.endswith("No module named 'torch'")
    # No venv yet and none may be made / no python3.11 to make one.
    environ = {"PAINLESS_TF_CACHE": str(tmp_path / "cache")}
    resolved = peer_env.resolve(environ=environ, create=False)
    assert resolved.skipped.startswith("no peer venv: ")
    monkeypatch.setattr(peer_env.shutil, "which", lambda name: None)
    resolved = peer_env.resolve(environ=environ, log=lambda line: None)
    assert resolved.skipped.startswith("python3.11 not found on PATH")

    specs = suites.suite_specs(
        "peer", model_path="m", train_data=None, hand_picked_length=128,
        peer={"skipped": "no torch"})["peer"]
    assert set(specs) == {"hf_trainer", "painless"}
    assert "skipped" not in specs["painless"]
    spec = suites.complete(specs["hf_trainer"], warmup=10, updates=50,
                           global_batch_size=32)
    # The runner starts no process for it and records the reason.
    assert suites.skipped(spec) == {"skipped": "no torch"}
    assert suites.skipped(specs["painless"]) is None


def test_peer_ratios_count_a_skip_as_nothing_met():
    results = {"painless": {"examples_per_sec": 60.0, "peak_rss_mib": 900.0,
                            "precision": "float32"},
               "hf_trainer": {"skipped": "no torch"}}
    ratios = tables.ratios("peer", results)
    assert ratios and all(r["value"] is None for r in ratios)
    assert all(r["meets_target"] is None for r in ratios)
    text = tables.markdown("peer", {"results": results, "ratios": ratios})
    assert "| hf_trainer | skipped: no torch |" in text
    assert "(met)" not in text and "(not met)" not in text


def _reached(seconds):
    return {"target": 0.8, "reached": True, "seconds": seconds,
            "updates": 100, "updates_run": 800, "evaluations": []}


def test_peer_ratios_compare_painless_with_the_trainer():
    results = {
        "hf_trainer": {"examples_per_sec": 40.0, "real_tokens_per_sec": 1000.0,
                       "peak_rss_mib": 800.0,
                       "time_to_first_step_from_launch_s": 20.0,
                       "time_to_accuracy": _reached(300.0)},
        "painless": {"examples_per_sec": 50.0, "real_tokens_per_sec": 1500.0,
                     "peak_rss_mib": 1600.0,
                     "time_to_first_step_from_launch_s": 30.0,
                     "time_to_accuracy": _reached(150.0),
                     "test_accuracy": 0.81, "epochs": 3},
    }
    by_name = {r["name"]: r for r in tables.ratios("peer", results)}
    speed = by_name["painless / HF Trainer, examples/sec"]
    assert speed["value"] == 1.25 and speed["meets_target"] is False
    rss = by_name["peak RSS: painless / HF Trainer"]
    assert rss["value"] == 2.0 and rss["meets_target"] is False
    assert by_name["time to first step from launch: painless / HF Trainer"][
        "value"] == 1.5
    assert by_name["time to target accuracy: painless / HF Trainer"][
        "value"] == 0.5
    text = tables.markdown("peer", {"results": results,
                                    "ratios": list(by_name.values())})
    assert "| 1.25 | >= 1.50 (not met) |" in text
    assert text.splitlines()[0].endswith("| first step from launch s |")
    assert "- painless: test accuracy 81.0% after 3 epochs (800 updates)" in text


def test_peer_rows_are_the_splits_rows(tmp_path):
    from painless_tf import data
    from tests import tiny

    csv = tiny.write_csv(tmp_path / "rows.csv", tiny.sentiment_rows(50))
    splits = data.load_splits(train=csv, seed=suites.SEED)
    summary = peer_env.export_splits(splits, str(tmp_path / "peer"))
    assert summary["labels"] == list(splits.vocab.names)
    for name in ("train", "validation", "test"):
        examples = getattr(splits, name)
        with open(tmp_path / "peer" / f"{name}.jsonl") as f:
            rows = [json.loads(line) for line in f]
        assert [r["text"] for r in rows] == list(examples.texts[0])
        assert [r["label"] for r in rows] == examples.labels.tolist()
        assert summary[name]["rows"] == len(examples)
        assert summary[name]["label_counts"] == np.bincount(
            examples.labels, minlength=len(summary["labels"])).tolist()


@pytest.mark.parametrize("module", [suites, tables, workloads, gpu_check,
                                    peer_env, suite_time, startup])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_suite_time_sums_each_file_and_lists_the_slowest(tmp_path):
    xml = tmp_path / "suite.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_a" name="test_one" time="2.0"/>'
        '<testcase classname="tests.test_a" name="test_two[x]" time="1.0"/>'
        '<testcase classname="tests.test_b" name="test_three" time="6.0"/>'
        '</testsuite></testsuites>')
    proc = subprocess.run(
        [sys.executable, "-m", "bench.suite_time", str(xml), "--slowest=2"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "3 tests, 9 worker-seconds"
    assert "| test_b | 1 | 6.0 | 66.7% |" in lines
    assert "| test_a | 2 | 3.0 | 33.3% |" in lines
    assert lines.index("| test_b | 1 | 6.0 | 66.7% |") < lines.index(
        "| test_a | 2 | 3.0 | 33.3% |")
    slowest = lines[lines.index("| slowest test | seconds |") + 2:]
    assert slowest == ["| test_b::test_three | 6.0 |",
                       "| test_a::test_one | 2.0 |"]


def test_suite_time_names_a_file_it_cannot_read(tmp_path):
    for name, text in (("missing.xml", None), ("broken.xml", "<testsuites")):
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.suite_time", str(path)],
            cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{path}: "), lines
        assert "--junitxml" in lines[0]
