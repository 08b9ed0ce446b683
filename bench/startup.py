"""Where the time and memory before the first update go.

    python -m bench.startup                  # the zero-flag run's prepare()
    python -m bench.startup --precision=mixed_bfloat16   # no precision probe

Runs `painless_tf.run.prepare` with the data and plan flags of
`apps/finetune.py` (default: the zero-flag run's model and data) as that
app does, then builds the run's trainer, and prints the seconds since
launch, the resident memory (VmRSS) and the peak (VmHWM; both read by
`bench.workloads`) at each stage: imports, tokenizing, the CPU precision
probe's measurement (absent when `probes.json` in the cache
folder already holds its answer for this machine and model, or the
precision is given), the LR range test, the plan, the trainer. The numbers
depend on the machine and its load: read them, compare them only with a run
on the same machine, and never assert them.
"""

import functools
import time

_START = time.perf_counter()

from absl import app  # noqa: E402

from bench import workloads  # noqa: E402
from painless_tf import distribution  # noqa: E402
from painless_tf import flags as painless_flags  # noqa: E402
from painless_tf import lr_finder  # noqa: E402
from painless_tf import precision  # noqa: E402
from painless_tf import run  # noqa: E402

class Stages:
    """Marks of `(stage, seconds since launch, RSS MiB, peak MiB)`."""

    def __init__(self):
        self.marks = []

    def mark(self, stage):
        self.marks.append((stage, time.perf_counter() - _START,
                           workloads.current_rss_mib(),
                           workloads.peak_rss_mib()))

    def around(self, stage, function):
        """`function`, marking the stage's start and end."""

        @functools.wraps(function)
        def wrapped(*args, **kwargs):
            self.mark(f"{stage}: start")
            try:
                return function(*args, **kwargs)
            finally:
                self.mark(f"{stage}: end")

        return wrapped

    def table(self):
        """The marks as a markdown table.

        Examples:
        >>> stages = Stages()
        >>> stages.marks = [("imports", 3.14, 731.9, 732.0)]
        >>> print(stages.table())
        | stage | s since launch | RSS MiB | peak RSS MiB |
        |---|---|---|---|
        | imports | 3.1 | 732 | 732 |
        """
        rows = ["| stage | s since launch | RSS MiB | peak RSS MiB |",
                "|---|---|---|---|"]
        rows += [f"| {stage} | {seconds:.1f} | {rss:.0f} | {peak:.0f} |"
                 for stage, seconds, rss, peak in self.marks]
        return "\n".join(rows)


def main(argv):
    del argv
    stages = Stages()
    stages.mark("imports")
    # `run` calls these through their modules: the wrappers see each call.
    run._tokenize_splits = stages.around("tokenizing", run._tokenize_splits)
    make_probe = precision.cpu_precision_probe

    def first_call_marked(*args, **kwargs):
        # The probe is lazy: the plan calls it, alternating policies.
        probe = make_probe(*args, **kwargs)

        def marked(policy):
            if not any(m[0] == "precision probe: first call"
                       for m in stages.marks):
                stages.mark("precision probe: first call")
            return probe(policy)

        return marked

    precision.cpu_precision_probe = first_call_marked
    lr_finder.find_learning_rate = stages.around(
        "LR range test", lr_finder.find_learning_rate)
    prepared = run.prepare(painless_flags.run_config())
    stages.mark("plan made")
    run.build_trainer(
        prepared, distribution.make_strategy(prepared.plan.strategy))
    stages.mark("trainer built")
    plan = prepared.plan
    print(stages.table())
    print(f"\nplan: {plan.precision}, learning rate {plan.learning_rate:.1e}, "
          f"micro-batch {plan.micro_batch_size} x {plan.accumulation_steps}")


if __name__ == "__main__":
    # Defined here, not on import: the docstring test imports this module
    # beside others that define the same flags.
    painless_flags.define_data_flags()
    painless_flags.define_plan_flags()
    app.run(main)
