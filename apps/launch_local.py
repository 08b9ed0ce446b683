r"""Runs N workers of a painless_tf app on this machine, as one multi-worker job.

Each worker is `python -m apps.finetune <the flags after -->` with its own
TF_CONFIG: all workers share one cluster of free 127.0.0.1 ports and differ in
the task index, so `tf.distribute.MultiWorkerMirroredStrategy` treats them as
separate hosts and worker 0 as the chief. Their output is streamed with a
`[worker i]` prefix. If one worker fails, the others are stopped and the
launcher exits non-zero with a message naming that worker.

Two workers of the finetune app:
    python apps/launch_local.py --num_workers=2 -- \
        --train_data=train.csv --model_dir=runs/two_workers
Any other module that reads TF_CONFIG:
    python -m apps.launch_local --num_workers=3 --module=apps.evaluate -- ...
With Bazel:
    bazel run //:launch_local -- --num_workers=2 -- --train_data=train.csv

On several real hosts, start `python -m apps.finetune <flags>` on each host
with its own TF_CONFIG instead: what this launcher sets is the same.
"""

import signal
import sys

from absl import app
from absl import flags

from painless_tf import launcher

_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", 2, "Worker processes to start (one TF_CONFIG task each).",
    lower_bound=1,
)
_MODULE = flags.DEFINE_string(
    "module", "apps.finetune", "Python module each worker runs with `python -m`."
)
_HOST = flags.DEFINE_string(
    "host", "127.0.0.1", "Address the workers listen on (one port each)."
)
_GRACE_SECONDS = flags.DEFINE_float(
    "grace_seconds", 10.0,
    "After a failure, seconds the other workers get to exit on SIGTERM "
    "before they are killed.",
    lower_bound=0.0,
)
flags.register_validator(
    "module",
    lambda module: launcher.MODULE_PATTERN.fullmatch(module) is not None,
    message="--module must be a dotted Python module name, e.g. "
    "--module=apps.finetune.",
)


def main(argv):
    options = launcher.LaunchOptions(
        num_workers=_NUM_WORKERS.value,
        module=_MODULE.value,
        host=_HOST.value,
        grace_seconds=_GRACE_SECONDS.value,
    )
    try:
        launcher.launch(argv[1:], options)
    except launcher.LaunchError as error:
        print(f"launch_local: {error}", file=sys.stderr)
        return 1
    except launcher.Terminated:
        print("launch_local: got SIGTERM; stopped every worker.",
              file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("launch_local: interrupted; stopped every worker.",
              file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


def console_main():
    """The `painless-launch-local` command (pyproject.toml's entry point)."""
    # Its key flags are the script's, for --help (as painless_flags.as_main;
    # that module would import TensorFlow, which the launcher does not need).
    for flag in flags.FLAGS.get_key_flags_for_module(__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)


if __name__ == "__main__":
    console_main()
