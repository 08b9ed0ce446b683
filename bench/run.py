"""Benchmarks: painless_tf side by side with what users would run instead.

One entry point, one suite per run; every configuration runs in its own
process (so peak RSS is its own), and the ratios compare configurations of
the same run on the same machine under the same load:

    # issue 10: keras-hub default / hand-picked / Keras accumulation / painless
    python -m bench.run --suite=cpu --out=bench/results/cpu.json
    python -m bench.run --suite=cpu --time_to_accuracy   # + time to 80%
    # issue 3: accumulation overhead and memory of the training engine
    python -m bench.run --suite=engine --out=bench/results/engine.json
    # issue 5: input pipeline speed-up, padding, and "never starves"
    python -m bench.run --suite=pipeline --out=bench/results/pipeline.json
    # issue 23: painless side by side with Hugging Face Trainer on PyTorch
    python -m bench.run --suite=peer --out=bench/results/peer.json
    python -m bench.run --suite=peer --time_to_accuracy  # + 3 epochs, test
    # all of the above but peer on a tiny model, a few updates each (CI)
    python -m bench.run --suite=quick --out=/tmp/quick.json

The full suites use the default assets (all-MiniLM-L6-v2, the Rotten
Tomatoes training split) unless --model / --train_data name others; `quick`
uses a tiny 2-layer BERT written to a temporary folder and synthetic
sentiment texts. `peer` runs Hugging Face's `Trainer` (bench/hf_peer.py)
under an interpreter of its own, never painless_tf's (bench/peer_env.py:
--peer_python, else a venv created in the cache folder on first use); where
there is none it is skipped with its reason. Each run prints markdown
tables and writes one JSON file with the machine, the exact command, the
date, the load average, the measured matmul peaks and every
configuration's numbers.

Speed is never asserted: targets from the issues are printed as met or not.
See docs/benchmarks.md for the latest full tables and what each column means.
"""

import datetime
import itertools
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import types
from concurrent import futures

from absl import app
from absl import flags

from bench import suites
from bench import tables

_SUITE = flags.DEFINE_enum(
    "suite", None, suites.SUITES, "Which suite to run.")
_OUT = flags.DEFINE_string(
    "out", None, "JSON file to write; default bench/results/<suite>.json.")
_WARMUP = flags.DEFINE_integer(
    "warmup", None,
    "Untimed optimizer updates per configuration (default: 1 for quick, "
    "10 for peer, else 3).", lower_bound=1)
_UPDATES = flags.DEFINE_integer(
    "updates", None,
    "Timed optimizer updates per configuration (default: 3 for quick, 10 "
    "for cpu, 12 for engine, 16 for pipeline, 50 for peer).", lower_bound=1)
_GLOBAL_BATCH_SIZE = flags.DEFINE_integer(
    "global_batch_size", 32, "Examples per optimizer update, every config.")
_MODEL = flags.DEFINE_string(
    "model", "default",
    "Model for the full suites: 'default' (all-MiniLM-L6-v2) or a keras-hub "
    "BERT preset folder (e.g. one built from a config by bench/gpu_check.py).")
_TRAIN_DATA = flags.DEFINE_string(
    "train_data", None,
    "Labelled CSV/TSV/JSONL for the full suites; default: Rotten Tomatoes.")
_HAND_PICKED_LENGTH = flags.DEFINE_integer(
    "hand_picked_length", None,
    "Sequence length of the hand-picked keras-hub config (default: 128; "
    "32 for the tiny model of --suite=quick).")
_TIME_TO_ACCURACY = flags.DEFINE_bool(
    "time_to_accuracy", False,
    "cpu suite: also train the keras-hub default and painless until "
    "--target_accuracy on the validation split; peer suite: train both "
    "the recipe's 3 epochs, timing --target_accuracy on the way, then "
    "evaluate on the test split (long).")
_TARGET_ACCURACY = flags.DEFINE_float(
    "target_accuracy", 0.8, "Validation accuracy for --time_to_accuracy.")
_EVAL_EVERY = flags.DEFINE_integer(
    "eval_every", 20, "Updates between validation passes (time to accuracy).")
_MAX_UPDATES = flags.DEFINE_integer(
    "max_updates", 600,
    "Time to accuracy gives up after this many updates per config.")
_ONLY = flags.DEFINE_list(
    "only", None, "Run only these config names (others are left out).")
_CONFIG_TIMEOUT = flags.DEFINE_integer(
    "config_timeout", 1800,
    "Seconds before a configuration is stopped; 0: never.")
_JOBS = flags.DEFINE_integer(
    "jobs", None,
    "Configurations run at once (default: 2 for quick, whose numbers only "
    "show that everything runs; 1 for the full suites, so that no "
    "configuration is measured while another competes for the CPU).")
_PEER_PYTHON = flags.DEFINE_string(
    "peer_python", None,
    "peer suite: an interpreter with torch, transformers and accelerate for "
    "the Hugging Face Trainer config; default: <cache dir>/bench-peer-venv, "
    "created on first use (bench/peer_env.py).")



@flags.multi_flags_validator(
    ["suite", "time_to_accuracy"],
    message="--time_to_accuracy compares the cpu or peer suite's configs. "
    "Pass --suite=cpu (or peer, or quick), or drop --time_to_accuracy.")
def _time_to_accuracy_needs_cpu(values):
    return not values["time_to_accuracy"] or values["suite"] in (
        "cpu", "peer", "quick")


_LOCK = threading.Lock()
_COUNTER = itertools.count()

_DEFAULT_UPDATES = {"quick": 3, "cpu": 10, "engine": 12, "pipeline": 16,
                    "freezing": 20, "peer": 50}
# Untimed updates; 3 unless named (the peer suite's 10, for both of its
# configs, is issue 23's).
_DEFAULT_WARMUP = {"quick": 1, "peer": 10}
# Rows of synthetic sentiment text for --suite=quick: 640 train examples,
# 20 global batches of 32.
_QUICK_ROWS = 800
# The tiny model pads to this many tokens by default (keras-hub's way).
_QUICK_SEQUENCE_LENGTH = 64
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    suite = _SUITE.value
    out = _OUT.value or os.path.join(_REPO, "bench", "results", f"{suite}.json")
    started, load_start = time.time(), os.getloadavg()
    warmup = _WARMUP.value if _WARMUP.value is not None else (
        _DEFAULT_WARMUP.get(suite, 3))
    updates = _UPDATES.value or _DEFAULT_UPDATES[suite]
    with tempfile.TemporaryDirectory(prefix="painless_bench-") as work:
        model_path, train_data, env = _inputs(suite, work)
        peer = (_peer(model_path, train_data, work) if suite == "peer"
                else None)
        specs = suites.suite_specs(
            suite, model_path=model_path, train_data=train_data,
            hand_picked_length=_HAND_PICKED_LENGTH.value
            or (32 if suite == "quick" else 128),
            time_to_accuracy=_time_to_accuracy(),
            peer=peer and peer["spec"],
        )
        peaks = {"start": _measure_peaks(env)}
        try:
            plan = _resolve_plan_precision(
                specs, model_path, train_data, work, env, warmup, updates)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
        sections = _run_sections(specs, work, env, warmup, updates, suite)
        peaks["end"] = _measure_peaks(env)
    report = _report(suite, sections, peaks, plan, started, load_start,
                     warmup, updates)
    if peer:
        report["peer"] = peer["report"]
    print(_header(report) + "\n\n" + report["markdown"], flush=True)
    from painless_tf import run

    run.write_json(out, report)
    print(f"\nwrote {out}", flush=True)
    failed = [f"{s}/{n}" for s, section in sections.items()
              for n, r in section["results"].items() if "error" in r]
    if failed:
        print(f"failed configs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _peer(model_path, train_data, work):
    """The peer's interpreter and rows: `{"spec": ..., "report": ...}`.

    The rows are painless_tf's own split of the data (the seed every config
    uses), written as JSONL in the work folder; the peer's spec carries
    their folder and interpreter, or `skipped` and why.
    """
    from bench import peer_env
    from painless_tf import run

    splits = run.load_data(run.RunConfig(
        model=model_path, train_data=train_data, seed=suites.SEED))
    folder = os.path.join(work, "peer_data")
    rows = peer_env.export_splits(splits, folder)
    if _ONLY.value and "hf_trainer" not in _ONLY.value:
        # Left out: no interpreter to find, let alone a venv to create.
        return {"spec": {"skipped": "not in --only"},
                "report": {"rows": rows}}
    resolved = peer_env.resolve(
        _PEER_PYTHON.value, log=lambda line: print(line, flush=True))
    report = {"python": resolved.python, "versions": resolved.versions,
              "skipped": resolved.skipped, "rows": rows}
    if not resolved.ok:
        print(f"[peer/hf_trainer] skipped: {resolved.skipped}", flush=True)
        return {"spec": {"skipped": resolved.skipped}, "report": report}
    print(f"peer: {resolved.python} ({resolved.versions})", flush=True)
    return {"spec": {"python": resolved.python, "data_dir": folder,
                     "num_labels": len(rows["labels"])},
            "report": report}


def _time_to_accuracy():
    if not _TIME_TO_ACCURACY.value:
        return None
    return {"target": _TARGET_ACCURACY.value, "eval_every": _EVAL_EVERY.value,
            "max_updates": _MAX_UPDATES.value}


def _resolve_plan_precision(specs, model_path, train_data, work, env,
                            warmup, updates):
    """Runs the automatic plan once; the engine section's "auto" precision
    becomes the plan's, so that a float32 plan reruns nothing."""
    if "engine" not in specs:
        return None
    result = _run_config(
        _complete({"kind": "plan", "model_path": model_path,
                   "train_data": train_data}, warmup, updates),
        work, env, "plan",
    )
    if "error" in result:
        raise RuntimeError(f"the automatic plan failed: {result['error']}")
    plan = result["plan"]
    for spec in specs["engine"].values():
        if spec["precision"] == "auto":
            spec["precision"] = plan["precision"]
    return plan


def _run_sections(specs, work, env, warmup, updates, suite):
    """Runs every distinct config once (`--jobs` at a time), by section."""
    chosen = {}  # (section, name) -> spec key
    pending = {}  # spec key -> (label, spec)
    for section, configs in specs.items():
        for name, spec in configs.items():
            if _ONLY.value and name not in _ONLY.value:
                continue
            spec = _complete(spec, warmup, updates)
            key = json.dumps(spec, sort_keys=True)
            chosen[section, name] = key
            pending.setdefault(key, (f"{section}/{name}", spec))
    done = {}
    jobs = _JOBS.value or (2 if suite == "quick" else 1)
    # Configs whose time to accuracy gives up relative to another's run
    # after it, with the other's measured seconds.
    later = {key: item for key, item in pending.items()
             if "give_up_relative_to" in (item[1].get("time_to_accuracy")
                                          or {})}
    for phase in ({k: v for k, v in pending.items() if k not in later},
                  later):
        with futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            running = {
                pool.submit(_run_config, _give_up(spec, chosen, done), work,
                            env, label): key
                for key, (label, spec) in phase.items()
            }
            for future in futures.as_completed(running):
                done[running[future]] = future.result()
    sections = {}
    for (section, name), key in chosen.items():
        # JSON keeps keys sorted; "order" keeps the tables in suite order.
        sections.setdefault(section, {"results": {}, "order": []})
        sections[section]["results"][name] = done[key]
        sections[section]["order"].append(name)
    return sections


def _give_up(spec, chosen, done):
    """`spec` with its give-up time set from the config it is relative to."""
    tta = spec.get("time_to_accuracy") or {}
    other = tta.get("give_up_relative_to")
    if other is None:
        return spec
    keys = [key for (_, name), key in chosen.items() if name == other]
    seconds = (done.get(keys[0], {}).get("time_to_accuracy") or {}).get(
        "seconds") if keys else None
    if seconds is None:
        # The other never reached the target: nothing to be relative to.
        return spec
    tta = dict(tta, give_up_after_seconds=tta["give_up_factor"] * seconds)
    return dict(spec, time_to_accuracy=tta)


def _report(suite, sections, peaks, plan, started, load_start, warmup,
            updates):
    best = _best_peaks(peaks)
    tables.add_mfu(sections, best)
    for name, section in sections.items():
        section["ratios"] = tables.ratios(name, section["results"])
    quick = suite == "quick"
    return {
        "suite": suite,
        "command": _command(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "machine": _machine(),
        "load_average": {"start": list(load_start),
                         "end": list(os.getloadavg())},
        "settings": {
            "model": "tiny BERT (2 layers, hidden 8, sequence length "
            f"{_QUICK_SEQUENCE_LENGTH})" if quick else _MODEL.value,
            "train_data": f"{_QUICK_ROWS} synthetic sentiment rows"
            if quick else _TRAIN_DATA.value or "Rotten Tomatoes",
            "global_batch_size": _GLOBAL_BATCH_SIZE.value,
            "warmup_updates": warmup,
            "timed_updates": updates,
            "jobs": _JOBS.value or (2 if quick else 1),
            "time_to_accuracy": _time_to_accuracy(),
        },
        "peak_flops": {"best": best, **peaks},
        "plan": plan,
        "sections": sections,
        "markdown": "\n\n".join(
            f"### {name}\n\n{tables.markdown(name, section)}"
            for name, section in sections.items()),
        "wall_seconds": time.time() - started,
    }


def _inputs(suite, work):
    """(model path, train data, worker environment) for the suite."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_REPO, env.get("PYTHONPATH")) if p)
    if suite != "quick":
        if _MODEL.value == "default":
            from painless_tf import assets

            return assets.default_model_dir(), _TRAIN_DATA.value, env
        return os.path.abspath(_MODEL.value), _TRAIN_DATA.value, env
    # The tiny model and data of the tests: the suite must run anywhere.
    from tests import tiny

    preset = tiny.write_preset(
        os.path.join(work, "tiny_preset"), seq=_QUICK_SEQUENCE_LENGTH)
    data = tiny.write_csv(
        os.path.join(work, "tiny.csv"), tiny.sentiment_rows(_QUICK_ROWS))
    # Probe results for a temporary model would only clutter the user's cache.
    env["PAINLESS_TF_CACHE"] = os.path.join(work, "cache")
    return preset, data, env


def _complete(spec, warmup, updates):
    return suites.complete(spec, warmup=warmup, updates=updates,
                           global_batch_size=_GLOBAL_BATCH_SIZE.value,
                           seed=suites.SEED)


def _run_config(spec, work, env, label=None):
    """Runs one configuration in a fresh process; its result or an error
    (or `{"skipped": reason}` for a spec the run could not give a process).
    """
    skipped = suites.skipped(spec)
    if skipped:
        # Already printed with its reason when the run decided it.
        return skipped
    with _LOCK:
        index = next(_COUNTER)
        if label:
            print(f"[{label}] started", flush=True)
    spec_path = os.path.join(work, f"spec-{index}.json")
    result_path = os.path.join(work, f"result-{index}.json")
    log_path = os.path.join(work, f"log-{index}.txt")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    command = [sys.executable, "-m", "bench.workloads", spec_path, result_path]
    if spec["kind"] == "hf_trainer":
        # The peer imports nothing of this repository: its own interpreter,
        # the script by path, no PYTHONPATH.
        command = [spec["python"], os.path.join(_REPO, "bench", "hf_peer.py"),
                   spec_path, result_path]
        env = _peer_env(env)
    start = time.perf_counter()
    launched = time.time()
    with open(log_path, "w") as log:
        try:
            code = subprocess.run(
                command, cwd=_REPO, env=env, stdout=log,
                stderr=subprocess.STDOUT, timeout=_CONFIG_TIMEOUT.value or None,
            ).returncode
        except subprocess.TimeoutExpired:
            result = {"error": f"stopped after --config_timeout="
                               f"{_CONFIG_TIMEOUT.value} s"}
            if label:
                _print_brief(label, result)
            return result
    if code != 0 or not os.path.exists(result_path):
        with open(log_path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        tail = lines[-1] if lines else f"exit code {code}"
        with _LOCK:
            print("\n".join(lines[-30:]), file=sys.stderr)
        result = {"error": tail[:300]}
        if label:
            _print_brief(label, result)
        return result
    with open(result_path) as f:
        result = json.load(f)
    result["process_seconds"] = time.perf_counter() - start
    if spec["kind"] == "hf_trainer":
        result.update(_peer_flops(spec["model_path"],
                                  result.pop("timed_lengths", None),
                                  result["real_tokens_per_sec"]))
    if "first_step_unix_time" in result:
        # Imports and interpreter start included, unlike time_to_first_step_s.
        result["time_to_first_step_from_launch_s"] = (
            result["first_step_unix_time"] - launched)
    if label:
        _print_brief(label, result)
    return result


def _peer_flops(model_path, lengths, tokens_per_sec):
    """The peer's FLOPs per real token and FLOP/s, counted as painless's are
    (`flops.training_flops_per_token` on the timed rows' real lengths), from
    the Hugging Face BERT config's shapes; the pooler and the classifier, a
    few 1e-4 of the total at these lengths, are left out. Empty for a
    config without BERT's field names."""
    from painless_tf import flops

    try:
        with open(os.path.join(model_path, "config.json")) as f:
            config = json.load(f)
        shapes = types.SimpleNamespace(
            hidden_dim=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            intermediate_dim=config["intermediate_size"])
    except (OSError, KeyError, ValueError):
        return {}
    if not lengths:
        return {}
    per_token = flops.training_flops_per_token(shapes, lengths)
    return {"flops_per_real_token": per_token,
            "model_flops_per_sec": per_token * tokens_per_sec}


def _peer_env(env):
    env = {k: v for k, v in env.items()
           if k not in ("PYTHONPATH", "KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")}
    # The model is a local folder: nothing to fetch, nothing to report.
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    return env


def _print_brief(label, result):
    if "error" in result:
        brief = f"failed: {result['error']}"
    elif "examples_per_sec" in result:
        brief = (f"{result['examples_per_sec']:.1f} examples/s, first step "
                 f"{result['time_to_first_step_s']:.1f} s, peak RSS "
                 f"{result['peak_rss_mib']:.0f} MiB")
    else:
        brief = f"done in {result['wall_seconds']:.0f} s"
    with _LOCK:
        print(f"[{label}] {brief}", flush=True)


def _measure_peaks(env):
    """Matmul peak FLOP/s per precision, measured now (never from cache)."""
    from painless_tf import flops
    from painless_tf import hardware

    environment = hardware.detect_environment()
    # A fresh cache folder makes `peak_flops` measure instead of recalling.
    with tempfile.TemporaryDirectory() as cache:
        environ = dict(env, PAINLESS_TF_CACHE=cache)
        peaks = {}
        for precision in ("float32", "mixed_bfloat16", "mixed_float16"):
            if precision == "mixed_float16" and environment.platform == "cpu":
                continue  # no CPU here has the float16 path the plan probes
            # The report records the load itself: keep a busy measurement.
            peaks[precision] = {
                "flops": flops.peak_flops(
                    environment, precision, environ=environ, under_load=True),
                "source": flops.peak_flops_source(
                    environment, precision, environ=environ, under_load=True),
            }
    return peaks


def _best_peaks(peaks):
    best = {}
    for measured in (peaks["start"], peaks["end"]):
        for precision, entry in measured.items():
            if entry["flops"] > best.get(precision, {}).get("flops", -1):
                best[precision] = entry
    return best


def _machine():
    import keras
    import keras_hub
    import tensorflow as tf

    model = "unknown"
    try:
        text = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    gpus = [
        tf.config.experimental.get_device_details(g).get("device_name", g.name)
        for g in tf.config.list_physical_devices("GPU")
    ]
    return {
        "cpu_model": model,
        "cpu_cores_usable": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpus": gpus,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "uptime": _uptime(),
        "git": _git(),
    }


def _git():
    """The commit measured, and how many files differ from it."""
    def run(*args):
        try:
            return subprocess.run(
                ["git", *args], cwd=_REPO, capture_output=True, text=True,
                check=False, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": run("rev-parse", "--short", "HEAD") or None,
            "changed_files": len(run("status", "--porcelain").splitlines())}


def _uptime():
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return None


def _command():
    return "python -m bench.run " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])


def _header(report):
    machine = report["machine"]
    load = report["load_average"]
    lines = [
        f"## bench suite={report['suite']}  ({report['date']})",
        f"machine: {machine['cpu_model']}, {machine['cpu_cores_usable']} "
        f"cores usable" + (f", GPUs: {', '.join(machine['gpus'])}"
                           if machine["gpus"] else ""),
        f"load average at start {load['start'][0]:.1f}, at end "
        f"{load['end'][0]:.1f} (1 min)",
        "matmul peak: " + "; ".join(
            f"{p} {e['flops'] / 1e9:,.0f} GFLOP/s"
            for p, e in report["peak_flops"]["best"].items()),
        f"command: {report['command']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    flags.mark_flag_as_required("suite")
    app.run(main)
