"""Fault injection, for the fault-tolerance tests and for drills.

Two environment variables, read at the points named; unset, they cost a
dictionary lookup:

- `PAINLESS_TF_INJECT_NAN="EPOCH:BATCH"`: the sample weights of that planned
  training batch become NaN, so its loss and gradients are not finite.
- `PAINLESS_TF_KILL_AT="EVENT:N"`: the process kills itself with SIGKILL at
  the N-th (1-based) occurrence of EVENT: `batch_begin` (before an update's
  micro-batches), `batch_end` (after an update, before any checkpoint of
  it), `checkpoint_write` (checkpoint files written, not yet renamed into
  place), `validation` (during a validation: at an epoch end, or within
  an epoch with `--eval_every_updates`), `soup` (with
  `--weight_averaging=soup`, before each validation of the soup: the best
  checkpoint's, then each average's), `ema` (with
  `--weight_averaging=ema`, the moving average put in the weights, not
  yet validated), `model_save`
  (the final model written to its staging folder, not yet renamed),
  `teacher_logits` (apps/compress.py: a student's soft labels computed,
  not yet written).
"""

import collections
import os
import signal

_counts = collections.Counter()


def nan_batch():
    """The (epoch, batch) whose loss must be made non-finite, or None."""
    value = os.environ.get("PAINLESS_TF_INJECT_NAN")
    if not value:
        return None
    epoch, batch = value.split(":")
    return int(epoch), int(batch)


def maybe_kill(event):
    """SIGKILLs this process at the configured occurrence of `event`."""
    value = os.environ.get("PAINLESS_TF_KILL_AT")
    if not value:
        return
    wanted, count = value.split(":")
    if wanted != event:
        return
    _counts[event] += 1
    if _counts[event] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
