"""The plan's precision decision, and how it reads the CPU probe's timings.

On a TPU or a GPU a rule from the hardware decides; so it does on a CPU
without bfloat16 or float16 instructions (float32: the others would only be
emulated). On any other CPU the `PrecisionProbe`
(`painless_tf.precision.cpu_precision_probe`) is timed:
interleaved rounds per policy, medians, a noise margin below which the
CPU-feature rule decides, the load average kept with the timings, and a
result taken on a busy machine (`machine_load._busy`) kept only in this
process, not in the probe cache.
"""

import datetime
import hashlib
import math
import weakref
from typing import Protocol

from absl import logging

from painless_tf.plan.checks import AUTO
from painless_tf.plan.checks import PlanError
from painless_tf.plan.checks import _check_flag_choice
from painless_tf.plan.machine_load import _busy
from painless_tf.plan.machine_load import _load_average
from painless_tf.plan.machine_load import _own_load

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class PrecisionProbe(Protocol):
    """Measures the training speed of one dtype policy (CPU only).

    An implementation sets the global Keras dtype policy to `policy`, builds
    the model, runs one step to compile it, times a few more real training
    steps, restores the previous policy and returns the mean seconds per step;
    it returns `float("nan")` when the loss is not finite, so that policy is
    never chosen. The plan calls it several times per policy, alternating
    policies (float32, mixed_bfloat16, float32, ...), and compares the
    medians; an implementation may keep each policy's model between calls,
    so that later calls only time more steps.

    Examples:
    >>> probe = lambda policy: {"float32": 1.3}.get(policy, 1.0)
    >>> probe("mixed_bfloat16")
    1.0
    """

    def __call__(self, policy: str) -> float: ...


def _decide_precision(precision, env, probe, cache, probe_key):
    if precision != AUTO:
        _check_flag_choice("precision", precision, PRECISIONS)
        if env.platform == "tpu" and precision == "mixed_float16":
            raise PlanError(
                f"--precision=mixed_float16 with --tpu={env.tpu}: TPUs do not "
                "support float16; use --precision=mixed_bfloat16 or drop --tpu."
            )
        if env.gpus and precision == "mixed_bfloat16":
            capability = min(gpu.compute_capability for gpu in env.gpus)
            if capability < (8, 0):
                return precision, (
                    "set by user (GPU compute capability "
                    f"{capability[0]}.{capability[1]} has no bfloat16 tensor "
                    "cores: expect it to be slow)"
                )
        return precision, "set by user"

    if env.platform == "tpu":
        return "mixed_bfloat16", "TPUs compute in bfloat16 natively"
    if env.gpus:
        capability = min(gpu.compute_capability for gpu in env.gpus)
        cc = f"{capability[0]}.{capability[1]}"
        if capability >= (8, 0):
            return "mixed_bfloat16", (
                f"GPU compute capability {cc} has bfloat16 tensor cores; "
                "bfloat16 needs no loss scaling"
            )
        if capability >= (7, 0):
            return "mixed_float16", (
                f"GPU compute capability {cc} has float16 tensor cores but "
                "no bfloat16; loss scaling keeps float16 gradients finite"
            )
        return "float32", (
            f"GPU compute capability {cc} has no tensor cores; low precision "
            "would not be faster"
        )
    if not worth_probing(env):
        return "float32", (
            "CPU-feature rule: no bfloat16 or float16 instructions ("
            + ", ".join(sorted(_LOW_PRECISION_FLAGS))
            + "), so a lower precision only converts; nothing measured"
        )
    if probe is None:
        policy, why = _cpu_feature_rule(env)
        return policy, f"no probe: {why}"
    return _probe_precision(env, probe, cache, probe_key)


# CPU flags of instructions that compute or convert bfloat16 / float16 in
# hardware (oneDNN's avx512_core_bf16, avx512_core_fp16, avx2_vnni_2 and AMX
# paths). Without any of them TensorFlow emulates the conversions, and a
# lower precision cannot be faster than float32.
_LOW_PRECISION_FLAGS = frozenset({
    "avx512_bf16", "amx_bf16", "avx_ne_convert", "avx512_fp16", "amx_fp16"})


def worth_probing(env) -> bool:
    """Whether timing the dtype policies on this CPU can find a faster one
    than float32: only where it has bfloat16 or float16 instructions.

    Examples:
    >>> from painless_tf.hardware import Environment
    >>> worth_probing(Environment(cpu_flags=frozenset({"avx2", "fma"})))
    False
    >>> worth_probing(Environment(cpu_flags=frozenset({"avx512_bf16"})))
    True
    """
    return bool(env.cpu_flags & _LOW_PRECISION_FLAGS)


def _probe_precision(env, probe, cache, probe_key):
    """Times the candidate policies interleaved and decides with a margin.

    The probe is called `_PRECISION_ROUNDS` times per policy in turn
    (float32, mixed_bfloat16, float32, ...), so load that comes and goes
    slows every policy alike; each policy's median counts. The measurement
    overrides the CPU-feature rule only when its winner is clearly faster
    than the rule's choice: medians at least `_PRECISION_MARGIN` apart and
    no timing of the two overlapping. The load average at the start and end
    goes into the reason and the cache; a result taken while the machine was
    busy (see `machine_load._busy`) is not cached, so a later run measures
    again.
    """
    candidates = ["float32", "mixed_bfloat16"]
    if env.cpu_flags & {"avx512_fp16", "amx_fp16"}:
        candidates.append("mixed_float16")
    flags = hashlib.sha256(" ".join(sorted(env.cpu_flags)).encode()).hexdigest()[:12]
    key = f"cpu={env.cpu_model};flags={flags};model={probe_key}"
    measurement = _cached_precision(
        cache.get("precision", key) if cache else {}, candidates
    )
    cached = measurement is not None
    if not cached:
        measurement = _unkept_measurements(probe).get(key)
    if measurement is None:
        measurement = _measure_precision(probe, candidates, env.cpu_count)
        if measurement["busy"]:
            logging.warning(
                "precision probe: the machine was busy (%s); the result is "
                "not cached and the next run measures again.",
                _load_words(measurement),
            )
            _unkept_measurements(probe)[key] = measurement
        elif cache:
            cache.put("precision", key, measurement)
    return _choose_precision(measurement, candidates, env, cached)


# Timings per policy, interleaved with the other policies' (see
# `_probe_precision`); the median of 5 ignores two outliers.
_PRECISION_ROUNDS = 5
# Relative gap between two policies' median seconds per update below which
# the measurement does not decide: repeated runs on a shared 2-core machine
# moved the bfloat16/float32 ratio by more than 10% (1.08x and 1.24x).
_PRECISION_MARGIN = 0.10


def _cpu_feature_rule(env):
    """(policy, why) from the CPU flags alone: bfloat16 where it has the
    instructions (avx512_bf16, amx_bf16), else float32."""
    bf16 = sorted(env.cpu_flags & {"avx512_bf16", "amx_bf16"})
    if bf16:
        return "mixed_bfloat16", f"CPU-feature rule (CPU has {', '.join(bf16)})"
    return "float32", "CPU-feature rule (no avx512_bf16/amx_bf16)"


def _measure_precision(probe, candidates, cores):
    """Interleaved timings; a policy whose loss was not finite is dropped."""
    start = _load_average()
    timings = {policy: [] for policy in candidates}
    for _ in range(_PRECISION_ROUNDS):
        for policy in candidates:
            if None in timings[policy]:
                continue
            seconds = float(probe(policy))
            ok = math.isfinite(seconds) and seconds > 0
            timings[policy].append(seconds if ok else None)
    end = _load_average()
    own = _own_load()
    return {
        "timings": timings,
        "load_average": [start, end],
        "own_load": own,
        "cores": cores,
        "busy": _busy([start, end], own, cores),
        "measured": _now(),
    }


def _cached_precision(entry, candidates):
    """A cached measurement in the current format for `candidates`, or None.

    Entries written before the load was recorded (policy -> seconds) are
    measured again: nothing says what the machine was doing then.
    """
    timings = entry.get("timings")
    load = entry.get("load_average")
    if not (
        isinstance(timings, dict)
        and set(candidates) <= set(timings)
        and all(isinstance(timings[p], list) and timings[p] for p in candidates)
        and isinstance(load, list)
        and len(load) == 2
        and not entry.get("busy")
    ):
        return None
    return entry


def _choose_precision(measurement, candidates, env, cached):
    timings = measurement["timings"]
    valid = {
        p: sorted(timings[p])
        for p in candidates
        if timings[p] and all(isinstance(t, (int, float)) for t in timings[p])
    }
    rejected = [p for p in candidates if p not in valid]
    rounds = max(len(timings[p]) for p in candidates)
    note = f"; {', '.join(rejected)} rejected: loss not finite" if rejected else ""
    note += f"; median of {rounds} interleaved timings, {_load_words(measurement)}"
    if cached:
        note += f" (cached probe of {measurement.get('measured', 'an earlier run')})"
    elif measurement["busy"]:
        note += " (busy: not cached)"
    if not valid:
        logging.warning(
            "No dtype policy gave a finite loss in the precision probe; "
            "check the data and the model."
        )
        return "float32", "probe: no policy gave a finite loss; float32 kept" + note
    median = {p: _median(t) for p, t in valid.items()}
    rule, rule_why = _cpu_feature_rule(env)
    if rule not in valid:
        rule, rule_why = "float32", "float32 kept"
    if rule not in valid:
        rule, rule_why = min(median, key=median.get), "the only finite one"
    def clearly_faster(fast, slow):
        return median[slow] / median[fast] >= 1 + _PRECISION_MARGIN and (
            max(valid[fast]) < min(valid[slow])
        )

    # Ties go to the rule.
    best = min(median, key=lambda p: (median[p], p != rule))
    if best == rule:
        others = ", ".join(
            f"{p} {median[p] / median[best]:.2f}x slower" for p in median if p != best
        )
        if others and not all(clearly_faster(best, p) for p in median if p != best):
            return best, (
                f"{rule_why}, and the probe agrees within the noise ({others})"
                + note
            )
        detail = f" ({others})" if others else ""
        return best, f"measured fastest on this CPU{detail}" + note
    ratio = median[rule] / median[best]
    if clearly_faster(best, rule):
        return best, f"measured {ratio:.2f}x faster than {rule} on this CPU" + note
    return rule, (
        f"{rule_why}: the probe's {best} was {ratio:.2f}x faster than {rule}, "
        f"within the noise (a {100 * _PRECISION_MARGIN:.0f}% margin and "
        "non-overlapping timings are needed)" + note
    )


def _median(values):
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2


def _load_words(measurement):
    start, end = measurement["load_average"]
    cores = measurement["cores"]
    return (
        f"load average {_number(start)} -> {_number(end)} on {cores} "
        + ("core" if cores == 1 else "cores")
    )


def _number(value):
    return "?" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


# Busy measurements, not cached, that a probe made in this process: a plan
# decided twice with the same probe (as `run.prepare` does) reads them
# instead of measuring again.
_UNKEPT = weakref.WeakKeyDictionary()


def _unkept_measurements(probe):
    try:
        return _UNKEPT.setdefault(probe, {})
    except TypeError:  # Not weakly referable: no memory for it.
        return {}
