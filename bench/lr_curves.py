r"""The default run's LR range test over seeds (issue 18): does the rate
follow the seed?

For each seed, plans the zero-flag run (`painless_tf.run.prepare` with only
the seed set: all-MiniLM-L6-v2 on Rotten Tomatoes, every decision
automatic), which runs the range test, and records its `lr_range_test` (the
rates, the training and probe losses, the rule's reading) as `plan.json`
would. Nothing is trained past the sweep and nothing is written but `--out`:

    python -m bench.lr_curves --seeds=0,1,2 \
        --out=tests/data/lr_curves_minilm_rotten_tomatoes.json

Prints one row per seed: the chosen rate, the edge the probe found and what
the "min/10" rule reads on the same sweep's training loss.
`tests/test_lr_finder.py` reads the curves of that file.
"""

import sys
import time

from absl import app
from absl import flags

from bench import accuracy
from painless_tf import atomic
from painless_tf import lr_curve
from painless_tf import run

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to plan with.")
_OUT = flags.DEFINE_string(
    "out", "tests/data/lr_curves_minilm_rotten_tomatoes.json",
    "The JSON file to write (atomically).")


def row(seed, record):
    """One markdown row: seed, precision, chosen, edge, min/10's reading."""
    curve = lr_curve.RangeTestResult.from_dict(record["lr_range_test"])
    old = lr_curve.choose_learning_rate(
        curve.learning_rates, curve.losses, rule="min/10",
        bounds=curve.bounds)
    return (f"| {seed} | {record['precision']} | {curve.learning_rate:.1e} "
            f"| {curve.learning_rates[-1]:.1e} | {old.learning_rate:.1e} "
            f"| {len(curve.losses)} | {record['seconds']:.0f} |")


def main(argv):
    del argv
    seeds = {}
    started = accuracy._now()
    for seed in (int(s) for s in _SEEDS.value):
        start = time.monotonic()
        plan = run.prepare(run.RunConfig(seed=seed)).plan
        seeds[str(seed)] = {
            "precision": plan.precision,
            "reason": plan.reasons["learning_rate"],
            "seconds": time.monotonic() - start,
            "lr_range_test": dict(plan.lr_range_test),
        }
    atomic.write_json(_OUT.value, {
        "what": "The LR range test of the zero-flag run for each seed, as "
                "plan.json records it (python -m bench.lr_curves).",
        "command": "python -m bench.lr_curves " + accuracy._shell(
            sys.argv[1:]),
        "started": started,
        "finished": accuracy._now(),
        "machine": accuracy.machine(),
        "seeds": seeds,
    }, indent=1)
    print("| seed | precision | chosen | last rate (the edge, if found) "
          "| min/10 on the training loss | updates | prepare s |")
    print("|---|---|---|---|---|---|---|")
    for seed, record in seeds.items():
        print(row(seed, record))


if __name__ == "__main__":
    app.run(main)
