r"""The accuracy suite (issue 18): recipe variants side by side, several seeds.

Every (set, variant, seed) is one `python -m apps.finetune` run with only
the data path, the seed and the variant's flags (plus --model and
--extra_flags when given), one at a time, so that no run is timed while
another competes for the CPU:

    python -m bench.real_data --out=data/real --only=drug-reviews
    python -m bench.accuracy --sets=rotten_tomatoes,drug-reviews \
        --data_dir=data/real --variants=recipe,layer_decay,soup,small_data,all --seeds=0,1,2 \
        --work_dir=runs/accuracy --out=bench/results/accuracy.json

`rotten_tomatoes` is the app's default data (no --train_data); any other
set name reads `<data_dir>/<name>.jsonl` (or .csv / .tsv), or
`<name>.train.jsonl` + `<name>.test.jsonl` for a set with an official split.
The run of seed k goes to `<work_dir>/<set>/<variant>/seed<k>`; its
`seed<k>.log` and `seed<k>.attempts.json` (the command and the seconds of
every attempt) lie beside it, outside the model dir, which the app owns.

Resumable: run the same command again after a kill, a reboot or in another
session. A run whose model dir holds a finished run (the app's end files) is
read, not run again; a partial one is run again with the same command and
the app resumes it from its checkpoint; its time is the sum of its attempts.

Prints one markdown table per set (the mean and min-max of each headline
metric over the seeds, the mean training time and its ratio to recipe's,
the delta of the means to recipe's) and the issue's targets as met, NOT met
or missing, and writes one JSON file with the machine, the command, the
commit, the date, the load average and every run's numbers.
"""

import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from importlib import metadata

from absl import app
from absl import flags

from bench import accuracy_tables as tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each variant's apps.finetune flags on top of the product's recipe; `all`
# combines the flags of layer_decay, soup and small_data (ema is the other
# choice of --weight_averaging, so it runs alone).
VARIANTS = {
    "recipe": [],
    "layer_decay": ["--layer_decay=0.9"],
    "soup": ["--weight_averaging=soup"],
    # 300 updates: 20 epochs of 148 speeches, 12 of 802 drug reviews at a
    # batch of 32; Rotten Tomatoes makes more in its 3 epochs.
    "small_data": ["--min_updates=300"],
}
VARIANTS["all"] = [flag for flags_ in VARIANTS.values() for flag in flags_]
VARIANTS["ema"] = ["--weight_averaging=ema"]

# The files a finished run of apps.finetune holds, in the order it writes
# them last: the report comes after the saved model and the final metrics.
FINISHED_FILES = ("evaluation.json", "metrics.json", "model", "report.html")
# Data files of a set without an official split, by preference.
_EXTENSIONS = (".jsonl", ".csv", ".tsv")

_SETS = _DATA_DIR = _VARIANTS = _SEEDS = _WORK_DIR = _OUT = None
_MODEL = _EXTRA_FLAGS = None


def define_flags():
    """The suite's flags, defined only when it runs as a program: the tests
    import this module beside the apps, whose flags share names (--model)."""
    global _SETS, _DATA_DIR, _VARIANTS, _SEEDS, _WORK_DIR, _OUT
    global _MODEL, _EXTRA_FLAGS
    _SETS = flags.DEFINE_list(
        "sets", [tables.ROTTEN_TOMATOES],
        f"Sets to fine-tune on: {tables.ROTTEN_TOMATOES} (the app's default "
        "data) or names of files in --data_dir.")
    _DATA_DIR = flags.DEFINE_string(
        "data_dir", None,
        "Folder of <name>.jsonl files (python -m bench.real_data --out=DIR).")
    _VARIANTS = flags.DEFINE_list(
        "variants", [name for name in VARIANTS if not _duplicate(name)],
        f"Variants to compare, of {', '.join(VARIANTS)} (default: those "
        "whose flags differ).")
    _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of each variant.")
    _WORK_DIR = flags.DEFINE_string(
        "work_dir", "runs/accuracy", "Where the runs' model dirs and logs go.")
    _OUT = flags.DEFINE_string(
        "out", "bench/results/accuracy.json", "The JSON file to write.")
    _MODEL = flags.DEFINE_string(
        "model", None, "--model of every run (default: the app's default).")
    _EXTRA_FLAGS = flags.DEFINE_string(
        "extra_flags", "", "Flags appended to every run's command, e.g. "
        "'--epochs=1 --precision=float32'.")
    flags.register_validator(
        "variants", lambda names: bool(names) and set(names) <= set(VARIANTS),
        message=f"--variants must name some of {', '.join(VARIANTS)}.")
    flags.register_validator(
        "seeds", lambda seeds: bool(seeds) and all(
            s.strip().isdigit() for s in seeds),
        message="--seeds must be non-negative integers, e.g. --seeds=0,1,2.")
    flags.register_multi_flags_validator(
        ["sets", "data_dir"],
        lambda v: v["data_dir"] or set(v["sets"]) <= {tables.ROTTEN_TOMATOES},
        message="Sets other than rotten_tomatoes are read from --data_dir. "
        "Pass --data_dir=DIR (python -m bench.real_data --out=DIR).")


def _duplicate(name):
    """Whether an earlier variant has the same flags (`all`, while only one
    addition exists)."""
    names = list(VARIANTS)
    return any(sorted(VARIANTS[other]) == sorted(VARIANTS[name])
               for other in names[:names.index(name)])


def data_flags(name, data_dir):
    """The --train_data (and --test_data) flags of set `name`.

    Raises:
        FileNotFoundError: `data_dir` has no file of the set; the message
            says how to fetch it.

    Examples:
    >>> data_flags("rotten_tomatoes", None)
    []
    """
    if name == tables.ROTTEN_TOMATOES:
        return []
    folder = os.path.abspath(data_dir)
    for extension in _EXTENSIONS:
        path = os.path.join(folder, name + extension)
        if os.path.isfile(path):
            return [f"--train_data={path}"]
    train, test = (os.path.join(folder, f"{name}.{split}.jsonl")
                   for split in ("train", "test"))
    if os.path.isfile(train) and os.path.isfile(test):
        return [f"--train_data={train}", f"--test_data={test}"]
    raise FileNotFoundError(
        f"--data_dir={data_dir} has no {name}.jsonl (nor {name}.train.jsonl "
        f"+ {name}.test.jsonl). Fetch it: python -m bench.real_data "
        f"--out={data_dir} --only={name}, or drop {name} from --sets.")


def run_dir(work_dir, name, variant, seed):
    """The model dir of one run."""
    return os.path.join(os.path.abspath(work_dir), name, variant, f"seed{seed}")


def command(model_dir, seed, data, variant, *, model=None, extra=()):
    """The apps.finetune command of one run, as a list."""
    return [sys.executable, "-m", "apps.finetune", f"--model_dir={model_dir}",
            f"--seed={seed}", *data, *VARIANTS[variant],
            *([f"--model={_model_path(model)}"] if model else []), *extra]


def _model_path(model):
    # A local folder is named absolutely: the runs start in the repository.
    return os.path.abspath(model) if os.path.isdir(model) else model


def finished(model_dir):
    """Whether `model_dir` holds a finished apps.finetune run."""
    return all(os.path.exists(os.path.join(model_dir, name))
               for name in FINISHED_FILES)


def _record_path(model_dir):
    return model_dir + ".attempts.json"


def read_attempts(model_dir):
    """The run's attempts record: `{"command", "attempts": [...]}`."""
    try:
        with open(_record_path(model_dir)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"command": None, "attempts": []}


def _write_json(path, payload):
    # The library's atomic writer (it imports TensorFlow: only when writing).
    from painless_tf import run

    run.write_json(path, payload)


def attempt(model_dir, args, env):
    """Runs the app once; appends the attempt (seconds, exit status) to the
    record beside `model_dir` before and after. Returns the exit status.

    A SIGTERM to the suite is passed on to the app, which checkpoints and
    exits; the attempt is recorded, then the suite stops.
    """
    os.makedirs(os.path.dirname(model_dir), exist_ok=True)
    record = read_attempts(model_dir)
    record["command"] = _shell(args)
    entry = {"started": _now(), "seconds": None, "exit_status": None}
    record["attempts"].append(entry)
    _write_json(_record_path(model_dir), record)
    start = time.perf_counter()
    with open(model_dir + ".log", "a") as log:
        log.write(f"=== attempt {len(record['attempts'])} at "
                  f"{entry['started']}: {record['command']}\n")
        log.flush()
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            entry["exit_status"] = process.wait()
        except BaseException:
            process.send_signal(signal.SIGTERM)
            entry["exit_status"] = process.wait()
            raise
        finally:
            entry["seconds"] = time.perf_counter() - start
            _write_json(_record_path(model_dir), record)
    return entry["exit_status"]


def read_run(model_dir):
    """The numbers of a finished run from its files.

    Returns:
        dict with `task`, `test` (the task's `evaluation.HEADLINE_KEYS`
        from evaluation.json), `selection` (the validation metric the
        weights were kept by and its best value), `validation` (the app's
        `validation_*` metrics) and `updates`.
    """
    from painless_tf import evaluation

    def load(name):
        with open(os.path.join(model_dir, name)) as f:
            return json.load(f)

    metrics, report = load("metrics.json"), load("evaluation.json")
    # Plans written before regression and multi-label held no task.
    task = load("plan.json").get("task", "classification")
    return {
        "task": task,
        "test": {key: report[key] for key in evaluation.HEADLINE_KEYS[task]
                 if key in report},
        "selection": {"metric": metrics.get("selection_metric"),
                      "best_value": metrics.get("best_value"),
                      "best_update": metrics.get("best_update")},
        "validation": {k: v for k, v in metrics.items()
                       if k.startswith("validation_")},
        "updates": metrics.get("optimizer_updates"),
        "app_wall_seconds": metrics.get("wall_seconds"),
    }


def run_one(name, variant, seed, data, *, env, work_dir, model, extra):
    """Runs (or reads) one (set, variant, seed); returns its result dict."""
    model_dir = run_dir(work_dir, name, variant, seed)
    args = command(model_dir, seed, data, variant, model=model, extra=extra)
    label = f"[{name}/{variant}/seed{seed}]"
    result = {"set": name, "variant": variant, "seed": seed,
              "model_dir": model_dir, "log": model_dir + ".log",
              "command": _shell(args)}
    ran = not finished(model_dir)
    if ran:
        attempts = len(read_attempts(model_dir)["attempts"])
        print(f"{label} {'resuming' if attempts else 'running'} "
              f"(attempt {attempts + 1}), log {result['log']}", flush=True)
        status = attempt(model_dir, args, env)
        if not finished(model_dir):
            result.update(finished=False, error=_failure(status, result["log"]))
            print(f"{label} {result['error']}", flush=True)
            return result
    record = read_attempts(model_dir)
    recorded = record["command"]
    if recorded and _flags_of(recorded) != _flags_of(result["command"]):
        # Its numbers answer another question: missing, not read.
        result.update(finished=False, recorded_command=recorded, error=(
            f"{model_dir} was trained by another command ({recorded}). Pass "
            "another --work_dir, or remove the folder to train it again."))
        print(f"{label} {result['error']}", flush=True)
        return result
    result.update(finished=True, ran_now=ran, **read_run(model_dir))
    result.update(_wall_seconds(record, result))
    _print_done(label, result)
    return result


def _wall_seconds(record, result):
    """The run's seconds: the sum of its attempts as the suite timed them."""
    timed = [a["seconds"] for a in record["attempts"]
             if a.get("seconds") is not None]
    if not record["attempts"]:
        # Trained before the suite timed it: the app's own clock of its last
        # process is all there is.
        return {"wall_seconds": result["app_wall_seconds"],
                "wall_seconds_complete": False,
                "wall_seconds_source": "metrics.json (last process only)"}
    untimed = len(record["attempts"]) - len(timed)
    return {"wall_seconds": sum(timed), "attempts": len(record["attempts"]),
            "wall_seconds_complete": not untimed,
            "wall_seconds_source": "suite" if not untimed else
            f"suite, {untimed} attempt(s) untimed (the suite stopped in them)"}


def _failure(status, log_path):
    with open(log_path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    last = lines[-1][:300] if lines else "no output"
    if status == 0:
        return f"exited 0 without finishing (preempted?): {last}"
    return f"failed (exit status {status}): {last}"


def _print_done(label, result):
    numbers = ", ".join(f"{k} {v:.4f}" for k, v in result["test"].items())
    how = "ran" if result["ran_now"] else "finished earlier, read"
    seconds = result["wall_seconds"]
    print(f"{label} {how}: test {numbers}; {result['updates']} updates"
          + (f", {seconds:,.0f} s" if seconds is not None else ""), flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # The atomic writer imports TensorFlow into this process.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started, load_start = _now(), os.getloadavg()
    seeds = [int(s) for s in _SEEDS.value]
    try:
        data = {name: data_flags(name, _DATA_DIR.value) for name in _SETS.value}
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    # A SIGTERM stops the suite like Ctrl-C: the running app is passed it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, env.get("PYTHONPATH")) if p)
    settings = {"sets": _SETS.value, "variants": _VARIANTS.value,
                "seeds": seeds, "work_dir": os.path.abspath(_WORK_DIR.value),
                "model": _MODEL.value or "default",
                "extra_flags": shlex.split(_EXTRA_FLAGS.value),
                "variant_flags": {v: VARIANTS[v] for v in _VARIANTS.value}}
    header = {"command": _command(), "date": started, "machine": machine(),
              "settings": settings}
    results = []
    # Seed by seed, the variants of a seed one after the other: a suite
    # stopped half-way leaves comparable runs.
    for name in _SETS.value:
        for seed in seeds:
            for variant in _VARIANTS.value:
                results.append(run_one(
                    name, variant, seed, data[name], env=env,
                    work_dir=_WORK_DIR.value, model=_MODEL.value,
                    extra=settings["extra_flags"]))
                _write_json(_OUT.value, report(header, results, load_start))
    final = report(header, results, load_start)
    _write_json(_OUT.value, final)
    lines = tables.target_lines(final["targets"]) or [
        "none judged: no variant beside recipe ran"]
    print("\n" + final["markdown"] + "\n\ntargets (issue 18):\n"
          + "\n".join(lines) + f"\n\nwrote {_OUT.value}", flush=True)
    return 0 if all(r["finished"] for r in results) else 1


def report(header, results, load_start):
    """The JSON report of the runs so far."""
    settings = header["settings"]
    summaries = tables.summarize(
        results, sets=settings["sets"], variants=settings["variants"],
        seeds=settings["seeds"])
    return {
        **header,
        "load_average": {"start": list(load_start),
                         "end": list(os.getloadavg())},
        "runs": results,
        "summaries": summaries,
        "targets": tables.targets(summaries),
        "markdown": tables.markdown(summaries),
    }


def machine():
    """The CPU (lscpu's model and the flags that decide precision), cores,
    versions and commit."""
    model, cpu_flags = "unknown", set()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True,
                              check=False).stdout
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "Model name":
            model = value.strip()
        elif key == "Flags":
            cpu_flags = set(value.split())
    versions = {}
    for package in ("tensorflow", "keras", "keras-hub"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": model,
        "cpu_flags": {f: f in cpu_flags for f in (
            "avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni")},
        "cpu_cores_usable": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        **versions,
        "git": _git(),
    }


def _git():
    def run(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                                  text=True, check=False, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": run("rev-parse", "--short", "HEAD").strip() or None,
            "changed_files": len(run("status", "--porcelain").splitlines())}


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")


def _shell(args):
    return " ".join(shlex.quote(a) for a in args)


def _flags_of(line):
    """A recorded command without its interpreter (another venv is the
    same run)."""
    return shlex.split(line)[1:]


def _command():
    return "python -m bench.accuracy " + _shell(sys.argv[1:])


if __name__ == "__main__":
    define_flags()
    app.run(main)
