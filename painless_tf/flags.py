"""Command-line flags shared by the apps, and their translation to options.

The data and plan flags are defined from the fields of `config.RunConfig`
(name, kind, default and help come from the field), and `run_config` reads
them back by the same names. Rules across flags live once, in the library
(`RunConfig.__post_init__`, `plan.make_plan`); their errors name the flags
and reach the user as one line through `one_line_errors`.
"""

import errno
import functools
import re
import sys

import tensorflow as tf
from absl import flags
from absl import logging

from painless_tf import checkpointing
from painless_tf import config as config_lib
from painless_tf import data
from painless_tf import distillation
from painless_tf import distribution
from painless_tf import models
from painless_tf import plan as plan_lib
from painless_tf import run

FLAGS = flags.FLAGS
AUTO = plan_lib.AUTO


def _define(field):
    """Defines the flag of one `config.RunConfig` field."""
    spec = field.metadata["flag"]
    kind, help_text = spec["kind"], spec["help"]
    bounds = {k: spec[k] for k in ("lower_bound", "upper_bound") if k in spec}
    default = field.default
    if kind == "list":
        flags.DEFINE_list(field.name, [str(v) for v in default], help_text)
    elif kind == "enum":
        flags.DEFINE_enum(field.name, default, spec["choices"], help_text)
    elif kind == "bool":
        flags.DEFINE_bool(field.name, default, help_text)
    elif kind == "integer":
        flags.DEFINE_integer(field.name, default, help_text, **bounds)
    elif kind == "float":
        flags.DEFINE_float(field.name, default, help_text, **bounds)
    else:
        flags.DEFINE_string(field.name, default, help_text)


def define_data_flags():
    """Flags naming the model and the labelled data (`config.RunConfig`'s
    "data" fields)."""
    for field in config_lib.flag_fields("data"):
        _define(field)


def define_plan_flags():
    """Flags overriding the automatic plan; 'auto' everywhere by default
    (`config.RunConfig`'s "plan" fields)."""
    for field in config_lib.flag_fields("plan"):
        _define(field)

    @flags.multi_flags_validator(
        ["tpu", "precision"],
        message="TPUs do not support float16: use --precision=mixed_bfloat16 "
        "or drop --tpu.",
    )
    def _no_float16_on_tpu(values):
        return not (values["tpu"] and values["precision"] == "mixed_float16")


def define_distill_flags():
    """The distillation flags of `apps/compress.py` (`config.RunConfig`'s
    "distill" fields); --student_layers may be given once per student."""
    for field in config_lib.flag_fields("distill"):
        if field.name == "student_layers":
            flags.DEFINE_multi_string(
                field.name, [distillation.EVERY_OTHER],
                "One student per value (repeat the flag for more): the "
                "teacher's encoder layers it keeps: every_other, a count N "
                "(spread evenly, the top one kept) or indices like 0,2,5.")
        else:
            _define(field)


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
        "refusing: removes only what that run listed in its manifest "
        "(.painless_tf/manifest.json), never the user's own files (the same "
        "run always resumes).")
    flags.DEFINE_integer(
        "max_rollbacks", 3,
        "Rollbacks to the last checkpoint after non-finite losses before "
        "the run stops.")


def as_main(module_name):
    """Gives the program the key flags of the app `module_name`, so that the
    app's console script (whose main module is the script, not the app)
    lists them under --help as `python -m apps.<name>` does."""
    for flag in FLAGS.get_key_flags_for_module(module_name):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def checkpoint_options():
    """A `run.CheckpointOptions` from the parsed flags."""
    return run.CheckpointOptions(
        every_seconds=FLAGS.checkpoint_every_seconds,
        every_updates=FLAGS.checkpoint_every_updates,
        keep=FLAGS.keep_checkpoints,
        overwrite=FLAGS.overwrite,
        max_rollbacks=FLAGS.max_rollbacks,
    )


def _value(field):
    value = getattr(FLAGS, field.name)
    parse = field.metadata["flag"].get("parse")
    if field.metadata["flag"]["kind"] == "list":
        return tuple((parse or str)(v) for v in value)
    if parse == "number_or_auto" and value != AUTO:
        return float(value)
    return value


def run_config(**overrides):
    """A `config.RunConfig` from the parsed flags (every field that is a
    flag), with `overrides` on top."""
    values = {
        field.name: _value(field)
        for group in ("data", "plan")
        for field in config_lib.flag_fields(group)
        if field.name in FLAGS
    }
    values.update(overrides)
    return config_lib.RunConfig(**values)


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


_DISK_FULL = "No space left on device"
_FREE_SPACE = ("Free some space and run the same command again: it resumes "
               "from the last checkpoint.")
_OS_HINTS = {
    errno.ENOSPC: _FREE_SPACE,
    errno.EDQUOT: _FREE_SPACE,
    errno.EACCES: "Fix its permissions or choose another path.",
    errno.EPERM: "Fix its permissions or choose another path.",
    errno.EROFS: "It is on a read-only file system: choose another path.",
    errno.ENOTDIR: "A file stands where a folder is needed: choose another "
                   "path.",
    errno.EISDIR: "A folder stands where a file is needed: choose another "
                  "path.",
    errno.ENOENT: "Check the path.",
}


def os_error_line(error):
    """One line for an `OSError` on a user's path: the path, what went
    wrong, what to do."""
    where = error.filename if error.filename is not None else "a file"
    what = error.strerror or str(error)
    hint = _OS_HINTS.get(error.errno, "Check the path and the disk.")
    return f"{where}: {what}. {hint}"


def _first_line(error):
    """TensorFlow's message without its graph-node prefix, on one line."""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", str(error))
    return " ".join(text.split())[:300]


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
        except OSError as error:
            # The user's paths (folders, files, disks): one line, the path.
            logging.debug("OS error", exc_info=True)
            print(f"error: {os_error_line(error)}", file=sys.stderr)
            sys.exit(2)
        except tf.errors.OpError as error:
            if _DISK_FULL not in str(error):
                raise
            logging.debug("disk full", exc_info=True)
            print(f"error: {_DISK_FULL} while TensorFlow wrote a file "
                  f"({_first_line(error)}). {_FREE_SPACE}", file=sys.stderr)
            sys.exit(2)
        except distribution.WorkerLostError as error:
            # Not the user's mistake: exit 1, as for any other crash.
            logging.debug("worker lost", exc_info=True)
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapped
