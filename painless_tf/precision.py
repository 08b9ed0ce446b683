"""Precision: the Keras dtype policy, and the CPU probe that chooses it.

GPUs and TPUs follow a rule (see `plan/precision_choice.py`); a CPU is
measured instead, because whether bfloat16 pays off depends on instructions
(avx512_bf16, AMX) and on how well oneDNN uses them for this model's shapes.
The probe trains the real model for a few updates under each candidate
policy and reports the seconds per update, or NaN when the loss was not
finite. The plan calls it in turns (float32, bfloat16, float32, ...) and
decides on the medians only beyond a noise margin, else by the CPU-feature
rule; it records the load average and caches no result taken on a busy
machine (`plan/precision_choice.py`).
"""

import functools
import math
import time

import keras
import numpy as np

from painless_tf import trainers

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def set_policy(name):
    """Sets the global Keras dtype policy (variables stay float32).

    Args:
        name: str. `float32`, `mixed_float16` or `mixed_bfloat16`.

    Examples:
    >>> set_policy("mixed_bfloat16"); keras.mixed_precision.global_policy().name
    'mixed_bfloat16'
    >>> set_policy("float32")
    """
    if name not in PRECISIONS:
        raise ValueError(
            f"`precision` must be one of {', '.join(PRECISIONS)}. "
            f"Received: precision={name!r}"
        )
    keras.mixed_precision.set_global_policy(name)


def cpu_precision_probe(model_fn, batch, *, steps=2, warmup_steps=2,
                        make_trainer=None):
    """Makes a probe `policy -> seconds per update` for `plan.make_plan`.

    The plan calls the probe several times per policy, alternating policies
    (see `plan.PrecisionProbe`). The first call for a policy builds its
    model and trainer under that policy and runs `warmup_steps` untimed
    updates (the first traces the function); every call then times `steps`
    more updates of that same trainer, so repeated calls cost only the
    timed updates.

    Args:
        model_fn: callable. Builds a fresh model (under the current policy).
        batch: tuple. One `(x, y)` batch of the size and length training will
            use.
        steps: int. Timed updates per call.
        warmup_steps: int. Untimed updates before a policy's first timing.
        make_trainer: callable or None. `model -> compiled engine.Trainer`
            with the run's update (`trainers.make_trainer` with the run's
            optimizer settings); None: AdamW with its defaults.

    Returns:
        A callable taking a policy name and returning seconds per update, or
        `float("nan")` if the loss was not finite. The global policy is
        restored afterwards.
    """
    trainers_by_policy = {}
    build = make_trainer or functools.partial(
        trainers.make_trainer, learning_rate=1e-5)

    def probe(policy):
        previous = keras.mixed_precision.global_policy().name
        set_policy(policy)
        try:
            x, y = batch
            trainer = trainers_by_policy.get(policy)
            if trainer is None:
                trainer = build(model_fn())
                for _ in range(warmup_steps):
                    trainer.train_on_batch(x, y, return_dict=True)
                trainers_by_policy[policy] = trainer
            start = time.perf_counter()
            for _ in range(steps):
                logs = trainer.train_on_batch(x, y, return_dict=True)
            elapsed = (time.perf_counter() - start) / steps
            if not math.isfinite(float(np.asarray(logs["loss"]))):
                return float("nan")
            return elapsed
        finally:
            set_policy(previous)

    return probe
