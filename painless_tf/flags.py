"""Command-line flags shared by the apps, and their translation to options.

Flags are absl `FlagHolder`s; each has the name of the `run.RunConfig`
field it fills. Cross-flag rules are `multi_flags_validator`s, so a bad
combination fails at parse time with a one-line message.
"""

import functools
import sys

from absl import flags
from absl import logging

from painless_tf import checkpointing
from painless_tf import data
from painless_tf import distribution
from painless_tf import freezing
from painless_tf import models
from painless_tf import optimization
from painless_tf import plan as plan_lib
from painless_tf import run

FLAGS = flags.FLAGS
AUTO = plan_lib.AUTO


def define_data_flags():
    """Flags naming the model and the labelled data."""
    flags.DEFINE_string(
        "model", "default",
        "keras-hub preset name, kaggle:// or hf:// handle, local keras-hub "
        "preset folder or local Hugging Face folder; 'default' is "
        "all-MiniLM-L6-v2 from the offline assets.")
    flags.DEFINE_string(
        "train_data", None,
        "CSV, TSV or JSONL file (optionally .gz/.bz2) of labelled texts. "
        "Default: the Rotten Tomatoes snippets.")
    flags.DEFINE_string("validation_data", None, "Validation file.")
    flags.DEFINE_string("test_data", None, "Test file.")
    flags.DEFINE_list(
        "split", ["0.8", "0.1", "0.1"],
        "Train/validation/test fractions used to split --train_data when "
        "--validation_data/--test_data are not given (by a hash of the "
        "text, so duplicates stay together).")
    flags.DEFINE_list(
        "text_columns", ["text"],
        "One text column, or two for sentence-pair tasks.")
    flags.DEFINE_string("label_column", "label", "Label column.")
    flags.DEFINE_enum(
        "file_format", None, ["csv", "tsv", "jsonl"],
        "File format; default: from the file extension.")
    flags.DEFINE_string("encoding", "utf-8", "Text encoding of the files.")
    flags.DEFINE_bool(
        "skip_bad_rows", False,
        "Skip and count malformed rows instead of stopping at the first.")
    flags.DEFINE_string(
        "tfds", None, "TensorFlow Datasets name, e.g. glue/sst2, already "
        "prepared in --tfds_data_dir.")
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir.")


def define_plan_flags():
    """Flags overriding the automatic plan; 'auto' everywhere by default."""
    flags.DEFINE_integer("epochs", 3, "Passes over the training data.")
    flags.DEFINE_string(
        "global_batch_size", AUTO,
        "Examples per optimizer update, over all replicas and micro-batches "
        "(auto: 32).")
    flags.DEFINE_string(
        "learning_rate", AUTO,
        "Peak learning rate (auto: an LR range test on the real model and "
        "data, see --lr_range_test_steps).")
    flags.DEFINE_integer(
        "lr_range_test_steps", 24,
        "Updates of the LR range test behind --learning_rate=auto (0: the "
        "recipe's 3e-5 x sqrt(global_batch_size / 32) instead).",
        lower_bound=0)
    flags.DEFINE_float(
        "warmup_fraction", 0.1,
        "Share of the updates spent warming the learning rate up.",
        lower_bound=0.0, upper_bound=0.99)
    flags.DEFINE_string(
        "weight_decay", AUTO,
        "Decoupled weight decay (auto: the optimizer's recipe value, 0.01 "
        "for AdamW).")
    flags.DEFINE_float(
        "dropout", None,
        "Dropout before the classifier head (default: the preset's, 0.1 "
        "for BERT).", lower_bound=0.0, upper_bound=0.95)
    flags.DEFINE_string(
        "trainable_layers", freezing.ALL,
        "Train only the top N encoder layers and the head (0: the head "
        "only); 'all' trains every layer, embeddings included.")
    flags.DEFINE_enum(
        "unfreeze", "none", list(freezing.UNFREEZE_MODES),
        "gradual: one more layer trains each epoch, from the top, starting "
        "from --trainable_layers (from the head alone when 'all').")
    flags.DEFINE_string(
        "max_sequence_length", AUTO, "Tokens per example at most (auto: 128).")
    flags.DEFINE_integer("seed", 0, "Seed of data order and initialization.")
    flags.DEFINE_enum(
        "strategy", AUTO, [AUTO, *plan_lib.STRATEGIES],
        "tf.distribute strategy (auto: from the hardware).")
    flags.DEFINE_enum(
        "precision", AUTO, [AUTO, *plan_lib.PRECISIONS],
        "Dtype policy (auto: by rule on GPU/TPU, by measurement on CPU).")
    flags.DEFINE_enum(
        "xla", AUTO, [AUTO, "true", "false"],
        "XLA-compile the per-replica step (auto: on for GPU/TPU).")
    flags.DEFINE_enum(
        "fused_update", AUTO, [AUTO, "true", "false"],
        "XLA-compile the optimizer update as one function (auto: on one "
        "device; false saves its extra copy of the weights and slots).")
    flags.DEFINE_string(
        "micro_batch_size", AUTO,
        "Examples per replica per forward/backward pass (auto: the largest "
        "that fits).")
    flags.DEFINE_string(
        "tpu", None, "TPU name or address; 'local' on a TPU VM.")
    flags.DEFINE_enum(
        "optimizer", "adamw", list(optimization.OPTIMIZERS),
        "Optimizer; each gets the warmup/decay schedule, weight-decay "
        "exclusions and global clip norm, with its own default peak learning "
        "rate and weight decay (see plan.json).")
    flags.DEFINE_string(
        "momentum", AUTO,
        "Momentum of --optimizer=sgd (auto: 0.9) or rmsprop (auto: 0).")
    flags.DEFINE_bool(
        "nesterov", False, "Nesterov momentum (--optimizer=sgd only).")

    @flags.multi_flags_validator(
        ["tfds", "train_data"],
        message="--tfds and --train_data both name the training data; pass "
        "only one of them.",
    )
    def _one_training_source(values):
        return not (values["tfds"] and values["train_data"])

    @flags.multi_flags_validator(
        ["tpu", "precision"],
        message="TPUs do not support float16: use --precision=mixed_bfloat16 "
        "or drop --tpu.",
    )
    def _no_float16_on_tpu(values):
        return not (values["tpu"] and values["precision"] == "mixed_float16")


def define_checkpoint_flags():
    """Flags of checkpointing and resumption."""
    flags.DEFINE_float(
        "checkpoint_every_seconds", 300.0,
        "Checkpoint at least this often (seconds), and at every epoch end.")
    flags.DEFINE_integer(
        "checkpoint_every_updates", 0,
        "Also checkpoint every N optimizer updates (0: by time only).")
    flags.DEFINE_integer(
        "keep_checkpoints", 3,
        "Complete checkpoints kept (at least 1: the one to resume from).",
        lower_bound=1)
    flags.DEFINE_bool(
        "overwrite", False,
        "Start over in a --model_dir that holds another run, instead of "
        "refusing (the same run always resumes).")
    flags.DEFINE_integer(
        "max_rollbacks", 3,
        "Rollbacks to the last checkpoint after non-finite losses before "
        "the run stops.")


def checkpoint_options():
    """A `run.CheckpointOptions` from the parsed flags."""
    return run.CheckpointOptions(
        every_seconds=FLAGS.checkpoint_every_seconds,
        every_updates=FLAGS.checkpoint_every_updates,
        keep=FLAGS.keep_checkpoints,
        overwrite=FLAGS.overwrite,
        max_rollbacks=FLAGS.max_rollbacks,
    )


def _number_or_auto(text, cast):
    return text if text == AUTO else cast(text)


def run_config(**overrides):
    """A `run.RunConfig` from the parsed flags."""
    values = dict(
        model=FLAGS.model,
        train_data=FLAGS.train_data,
        validation_data=FLAGS.validation_data,
        test_data=FLAGS.test_data,
        split=tuple(float(s) for s in FLAGS.split),
        text_columns=tuple(FLAGS.text_columns),
        label_column=FLAGS.label_column,
        file_format=FLAGS.file_format,
        encoding=FLAGS.encoding,
        skip_bad_rows=FLAGS.skip_bad_rows,
        tfds=FLAGS.tfds,
        tfds_data_dir=FLAGS.tfds_data_dir,
        epochs=FLAGS.epochs,
        global_batch_size=FLAGS.global_batch_size,
        learning_rate=FLAGS.learning_rate,
        max_sequence_length=FLAGS.max_sequence_length,
        seed=FLAGS.seed,
        strategy=FLAGS.strategy,
        precision=FLAGS.precision,
        xla=FLAGS.xla,
        fused_update=FLAGS.fused_update,
        micro_batch_size=FLAGS.micro_batch_size,
        tpu=FLAGS.tpu,
        optimizer=FLAGS.optimizer,
        lr_range_test_steps=FLAGS.lr_range_test_steps,
        warmup_fraction=FLAGS.warmup_fraction,
        weight_decay=FLAGS.weight_decay,
        dropout=FLAGS.dropout,
        trainable_layers=FLAGS.trainable_layers,
        unfreeze=FLAGS.unfreeze,
        momentum=_number_or_auto(FLAGS.momentum, float),
        nesterov=FLAGS.nesterov,
    )
    values.update(overrides)
    return run.RunConfig(**values)


# User mistakes: one line on stderr and exit status 2, never a traceback.
USER_ERRORS = (
    data.DataError,
    models.ModelError,
    plan_lib.PlanError,
    checkpointing.ResumeError,
    checkpointing.TrainingError,
    ValueError,
    FileNotFoundError,
)


def one_line_errors(main):
    """Wraps an app's `main` so user mistakes print one line, exit 2."""

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except USER_ERRORS as error:
            message = " ".join(str(error).split())
            logging.debug("user error", exc_info=True)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        except distribution.WorkerLostError as error:
            # Not the user's mistake: exit 1, as for any other crash.
            logging.debug("worker lost", exc_info=True)
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapped
