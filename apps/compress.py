r"""Compresses a fine-tuned classifier to an accuracy budget, for the edge.

From a model dir that apps/finetune.py wrote (the teacher), trains a
distilled student (by default every other encoder layer of the teacher,
DistilBERT style) on the run's own training texts with the teacher's soft
labels plus the true ones, through the same plan, engine, checkpoints and
resume as fine-tuning; exports the teacher and every student as TFLite
float32, float16 and dynamic-range int8; scores each artifact on the
validation and test splits and times them all interleaved; and keeps the
smallest whose validation accuracy is within --accuracy_budget points of the
teacher's. The test accuracy is reported, not used for the choice.

    python -m apps.compress --teacher_dir=runs/demo --model_dir=runs/compressed

Writes into --model_dir only: `teacher/` (a copy of the teacher's model and
records, with its export), `student-<layers>/` (each student's run and
export), `compression.json` and `compression.html`. Run the same command
again after a kill and it resumes.
"""

from absl import app
from absl import flags
from absl import logging

from painless_tf import compression
from painless_tf import flags as painless_flags

painless_flags.define_distill_flags()
painless_flags.define_checkpoint_flags()
flags.adopt_module_key_flags(painless_flags)
_TEACHER_DIR = flags.DEFINE_string(
    "teacher_dir", "runs/demo",
    "The fine-tuned model dir (apps/finetune.py's --model_dir); only read.")
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", "runs/compressed",
    "Where the students, the exports and the report go.")
_ACCURACY_BUDGET = flags.DEFINE_float(
    "accuracy_budget", 1.0,
    "Points of validation accuracy (macro-F1 where the teacher selected "
    "on it) the chosen artifact may lose against the teacher's Keras model.",
    lower_bound=0.0, upper_bound=100.0)
_FORMATS = flags.DEFINE_list(
    "formats", list(compression.DEFAULT_FORMATS),
    "Export formats of every candidate (see apps/export.py --formats).")
_EPOCHS = flags.DEFINE_integer(
    "epochs", None,
    "Passes of each student over the training texts (unset: the "
    "teacher's).", lower_bound=1)
_LATENCY_CALLS = flags.DEFINE_integer(
    "latency_calls", 40,
    "Timed calls per artifact at batch size 1 (a quarter of that batched).",
    lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(
            f"Unexpected arguments: {' '.join(argv[1:])}. Pass flags only.")
    options = compression.CompressOptions(
        students=tuple(flags.FLAGS.student_layers),
        temperature=flags.FLAGS.distill_temperature,
        alpha=flags.FLAGS.distill_alpha,
        accuracy_budget=_ACCURACY_BUDGET.value / 100.0,
        formats=tuple(_FORMATS.value),
        latency_calls=_LATENCY_CALLS.value,
        epochs=_EPOCHS.value,
    )
    report = compression.compress(
        _TEACHER_DIR.value, _MODEL_DIR.value, options=options,
        checkpoints=painless_flags.checkpoint_options())
    if report is None:  # preempted: a student's checkpoint is written
        return
    print(compression.format_table(report))
    print(f"-> {_MODEL_DIR.value}")


run_main = painless_flags.one_line_errors(main)


def console_main():
    """The `painless-compress` command (pyproject.toml's entry point)."""
    painless_flags.as_main(__name__)
    logging.set_verbosity(logging.INFO)
    app.run(run_main)


if __name__ == "__main__":
    console_main()
