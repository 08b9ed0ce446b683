"""The Python steps of `bench/gpu_check.sh` (see there for the whole check).

    python -m bench.gpu_check inputs --work=DIR [--dry_run]
    python -m bench.gpu_check plan --work=DIR [--dry_run]
    python -m bench.gpu_check merge --work=DIR --out=FILE [--dry_run]

`inputs` writes the model (BERT-base shapes built from a config, random
weights; the tiny test model with --dry_run) as a keras-hub preset folder,
and the labelled data: Rotten Tomatoes where the offline assets are already
on this machine, else synthetic sentiment texts of similar lengths.

`plan` makes the automatic plan's GPU decisions on this machine (precision,
XLA, micro-batch) with a micro-batch probe that really trains one update and
reports an out-of-memory error as "does not fit", twice: at the default
settings, and for a global batch too large for the device, which makes the
probe search past real OOMs. With --dry_run the "GPU" is the CPU under a
made-up name, and micro-batches above `_DRY_RUN_FITS` raise a simulated
`ResourceExhaustedError`, so the same code paths run anywhere.

`merge` gathers every step's output (and the pytest JUnit XML of the engine
tests) into one JSON file.
"""

import json
import os
import time
import xml.etree.ElementTree as ElementTree

from absl import app
from absl import flags

from painless_tf import memory

_WORK = flags.DEFINE_string("work", None, "Folder shared by the steps.")
_OUT = flags.DEFINE_string("out", None, "merge: the JSON file to write.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "CPU, tiny sizes, simulated GPU and OOM.")

# BERT-base (Devlin et al. 2018), uncased vocabulary.
BERT_BASE = dict(
    vocabulary_size=30522, num_layers=12, num_heads=12, hidden_dim=768,
    intermediate_dim=3072, max_sequence_length=512,
)
# Synthetic rows where Rotten Tomatoes is not on the machine: as many as
# its training split, with lengths of the same range.
_SYNTHETIC_ROWS = 12_808
_DRY_RUN_ROWS = 800
# --dry_run: micro-batches above this many rows "run out of memory".
_DRY_RUN_FITS = 8
# A global batch no 80 GiB GPU fits at 512 tokens in one pass (BERT-base
# keeps ~0.3 GiB of activations per example there): the probe must search.
_OOM_GLOBAL_BATCH = 1024
_OOM_SEQUENCE_LENGTH = 512


def inputs(work, dry_run):
    """Writes the model preset and the data; returns their description."""
    import keras_hub

    from painless_tf import assets
    from painless_tf import models
    from tests import tiny

    folder = os.path.join(work, "model")
    data_ready = _asset_ready(assets.ROTTEN_TOMATOES)
    vocab_ready = _asset_ready(assets.MINILM_L6_V2)
    if dry_run:
        tiny.write_preset(folder, seq=64)
        train_data = tiny.write_csv(
            os.path.join(work, "train.csv"), tiny.sentiment_rows(_DRY_RUN_ROWS))
        return {"model": "tiny (dry run)", "model_path": folder,
                "train_data": train_data, "data": "synthetic (dry run)"}
    if vocab_ready:
        # all-MiniLM-L6-v2 and BERT-base share the uncased WordPiece vocab.
        tokenizer = keras_hub.tokenizers.BertTokenizer(
            vocabulary=os.path.join(
                assets.default_model_dir(), "vocab.txt"),
            lowercase=True)
    else:
        tokenizer = tiny.tiny_tokenizer()
    backbone = keras_hub.models.BertBackbone(**BERT_BASE)
    classifier = keras_hub.models.BertTextClassifier(
        backbone=backbone,
        num_classes=2,
        preprocessor=keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer=tokenizer,
            sequence_length=BERT_BASE["max_sequence_length"]),
    )
    models.save_classifier(classifier, folder, verify=False)
    if data_ready and vocab_ready:
        train_data, data = None, "Rotten Tomatoes (offline assets)"
    else:
        train_data = _write_synthetic(os.path.join(work, "train.csv"))
        data = ("synthetic sentiment texts (Rotten Tomatoes or the MiniLM "
                "vocabulary is not on this machine)")
    return {"model": "BERT-base shapes from a config, random weights",
            "model_path": folder, "train_data": train_data, "data": data,
            "tokenizer": "uncased WordPiece (all-MiniLM-L6-v2 vocab.txt)"
            if vocab_ready else "tests/tiny.py vocabulary"}


def _asset_ready(asset):
    # The marker `assets.fetch_asset` writes after a verified extraction
    # (checked against painless_tf/assets.py as of this commit); looking for
    # it fetches nothing, which matters on a machine without network.
    from painless_tf import assets

    return os.path.isfile(
        os.path.join(assets.cache_dir(), asset.name, ".painless_tf_sha256"))


def _write_synthetic(path, rows=_SYNTHETIC_ROWS, seed=0):
    """Sentiment texts of 3-60 words (Rotten Tomatoes: 27 tokens average)."""
    import numpy as np

    from tests import tiny

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        positive = bool(rng.random() < 0.5)
        length = int(np.clip(rng.lognormal(np.log(22), 0.5), 3, 60))
        cue = rng.choice(tiny.POSITIVE if positive else tiny.NEGATIVE,
                         max(1, length // 4))
        words = list(cue) + list(rng.choice(tiny.FILLER, length - len(cue)))
        rng.shuffle(words)
        out.append((" ".join(words), "pos" if positive else "neg"))
    return tiny.write_csv(path, out)


FitsProbe = memory.MicroBatchProbe


def plan_decisions(work, dry_run):
    """The plan's GPU decisions, at the defaults and for an OOM search."""
    from painless_tf import hardware
    from painless_tf import models
    from painless_tf import plan as plan_lib

    with open(os.path.join(work, "inputs.json")) as f:
        model_path = json.load(f)["model_path"]
    if dry_run:
        environment = hardware.Environment(
            platform="gpu",
            gpus=(hardware.Gpu("dry run: CPU posing as a GPU", (8, 0)),),
            cpu_count=len(os.sched_getaffinity(0)),
        )
        probe = FitsProbe(model_path, simulate_oom_above=_DRY_RUN_FITS)
    else:
        environment = hardware.detect_environment()
        if environment.platform != "gpu":
            raise RuntimeError(
                "TensorFlow sees no GPU (platform "
                f"{environment.platform!r}). Install a CUDA build "
                "(pip install 'tensorflow[and-cuda]==2.21.*') or pass "
                "--dry_run.")
        probe = FitsProbe(model_path)
    info = models.describe(model_path)
    dims = plan_lib.ModelDims(info.hidden_dim, info.num_layers,
                              info.intermediate_dim, info.num_heads)
    cache = os.path.join(work, "probe_cache")  # measure, never recall
    common = dict(
        environment=environment, num_train_examples=10_000,
        model_params=info.num_params, model_dims=dims, fits_probe=probe,
        probe_key="gpu_check", cache_dir=cache,
        model_max_sequence_length=info.max_sequence_length,
    )
    out = {"environment": {
        "platform": environment.platform,
        "gpus": [{"name": g.name, "compute_capability": list(
            g.compute_capability)} for g in environment.gpus],
    }}
    for name, overrides in (
        ("default", {}),
        # Without XLA: each probed size would otherwise compile anew
        # (tens of seconds for BERT-base), and memory is what is searched.
        ("oom_search", {
            "global_batch_size": 64 if dry_run else _OOM_GLOBAL_BATCH,
            "max_sequence_length": 16 if dry_run else _OOM_SEQUENCE_LENGTH,
            "xla": False,
        }),
    ):
        before = len(probe.calls)
        start = time.perf_counter()
        try:
            plan = plan_lib.make_plan(**common, **overrides)
            entry = {"plan": plan.to_dict()}
        except Exception as e:  # recorded; the check goes on
            entry = {"error": f"{type(e).__name__}: {e}"}
        entry["probe_calls"] = probe.calls[before:]
        entry["seconds"] = time.perf_counter() - start
        out[name] = entry
    return out


def merge(work, out, dry_run):
    """One JSON of every step: env, engine tests, plan, bench, timings."""
    report = {"dry_run": dry_run, "steps": {}}
    steps_file = os.path.join(work, "steps.jsonl")
    if os.path.exists(steps_file):
        with open(steps_file) as f:
            for line in f:
                step = json.loads(line)
                report["steps"][step.pop("name")] = step
    for key, name in (("inputs", "inputs.json"), ("environment", "env.json"),
                      ("plan", "plan.json"), ("bench", "bench.json")):
        path = os.path.join(work, name)
        if os.path.exists(path):
            with open(path) as f:
                report[key] = json.load(f)
        else:
            report[key] = {"error": f"{name} was not written (see steps)"}
    report["engine_tests"] = junit_summary(os.path.join(work, "engine.xml"))
    report["ok"] = all(s.get("rc") == 0 for s in report["steps"].values()) and (
        report["engine_tests"].get("failed", 1) == 0)
    from painless_tf import run

    run.write_json(out, report)
    return report


def junit_summary(path):
    """Counts and failures from a pytest JUnit XML file.

    Examples:
    >>> junit_summary("/nonexistent.xml")["error"]
    'no JUnit XML at /nonexistent.xml'
    """
    if not os.path.exists(path):
        return {"error": f"no JUnit XML at {path}"}
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        entry = {"name": case.get("name"), "seconds": float(case.get("time", 0))}
        if problem is not None:
            entry["failure"] = (problem.get("message") or "").splitlines()[0][:300] \
                if problem.get("message") else problem.tag
        if case.find("skipped") is not None:
            entry["skipped"] = True
        cases.append(entry)
    failed = sum(1 for c in cases if "failure" in c)
    return {
        "tests": len(cases),
        "failed": failed,
        "passed": sum(1 for c in cases if "failure" not in c
                      and not c.get("skipped")),
        "seconds": float(suite.get("time", 0)),
        "cases": cases,
    }


def main(argv):
    if len(argv) != 2 or argv[1] not in ("inputs", "plan", "merge"):
        raise app.UsageError("usage: python -m bench.gpu_check "
                             "inputs|plan|merge --work=DIR [--out=FILE]")
    work, dry_run = _WORK.value, _DRY_RUN.value
    from painless_tf import run

    if argv[1] == "inputs":
        run.write_json(os.path.join(work, "inputs.json"), inputs(work, dry_run))
    elif argv[1] == "plan":
        run.write_json(os.path.join(work, "plan.json"),
                       plan_decisions(work, dry_run))
    else:
        report = merge(work, _OUT.value, dry_run)
        print(json.dumps({k: report[k] for k in ("ok", "steps")}, indent=2))
        return 0 if report["ok"] else 1
    return 0


if __name__ == "__main__":
    flags.mark_flag_as_required("work")
    app.run(main)
