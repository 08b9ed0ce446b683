"""The plan's micro-batch decision: the largest that fits in memory.

On a GPU or a TPU the `FitsProbe` (`painless_tf.memory.MicroBatchProbe`)
tries sizes, largest first, then bisecting; on a CPU, or without a probe, an
estimate of the weights' and the activations' memory (`ModelDims`) against
half of the device's memory decides. The micro-batch always divides the
per-replica batch.
"""

import re
from typing import NamedTuple, Protocol

import tensorflow as tf
from absl import logging

from painless_tf.plan.checks import PlanError
from painless_tf.plan.strategy_choice import DEFAULT_TPU_CORES

# HBM of one TPU device (a core for v2/v3, a megacore for v4/v5p, a chip for
# v5e/v6e), in GiB, from Cloud TPU's system architecture pages.
_TPU_DEVICE_MEMORY_GIB = {
    "v2": 8, "v3": 16, "v4": 32, "v5e": 16, "v5p": 95, "v6e": 32,
}
# Share of the available memory an estimate may plan to use: estimates miss
# the runtime's own buffers and fragmentation.
_MEMORY_SAFETY = 0.5
# Bytes per parameter during training: float32 weights, gradients, two Adam
# slots and the gradient accumulator (5 x 4 bytes). Mixed precision keeps
# float32 variables, so this does not shrink under it.
_BYTES_PER_PARAMETER = 5 * 4
_GIB = 2**30
_MIB = 2**20


class ModelDims(NamedTuple):
    """The transformer sizes the memory estimate needs.

    Args:
        hidden_dim: int. Width of the hidden states.
        num_layers: int. Transformer layers.
        intermediate_dim: int. Width of the feed-forward layer.
        num_heads: int. Attention heads.

    Examples:
    >>> ModelDims(hidden_dim=384, num_layers=6, intermediate_dim=1536,
    ...           num_heads=12).num_layers
    6
    """

    hidden_dim: int
    num_layers: int
    intermediate_dim: int
    num_heads: int


class FitsProbe(Protocol):
    """Says whether one replica can train on `micro_batch_size` examples.

    An implementation builds the model under `precision` (compiled with XLA
    when `xla`), runs one training step on a batch of `micro_batch_size`
    sequences of `max_sequence_length` tokens on one device, frees the
    model, and returns True; it may return False or let
    `tf.errors.ResourceExhaustedError` escape when memory runs out.

    Examples:
    >>> fits = lambda micro_batch_size, **kwargs: micro_batch_size <= 16
    >>> fits(8, precision="mixed_bfloat16", xla=True, max_sequence_length=128)
    True
    """

    def __call__(
        self,
        micro_batch_size: int,
        *,
        precision: str,
        xla: bool,
        max_sequence_length: int,
    ) -> bool: ...


def _decide_micro_batch(
    *,
    env,
    per_replica,
    local_replicas,
    precision,
    xla,
    max_sequence_length,
    model_params,
    model_dims,
    fits_probe,
    cache,
    probe_key,
):
    """Returns (micro_batch_size, reason): the largest fitting divisor."""
    powers = {2**k for k in range(per_replica.bit_length()) if 2**k < per_replica}
    candidates = sorted(powers | {per_replica})
    if env.platform != "cpu" and fits_probe is not None:
        device = _device_name(env)
        fitting = _search_fitting(
            candidates,
            fits_probe,
            cache,
            f"device={device};precision={precision};xla={xla};"
            f"seq={max_sequence_length};model={probe_key}",
            dict(precision=precision, xla=xla, max_sequence_length=max_sequence_length),
        )
        if fitting is None:
            raise PlanError(
                f"--micro_batch_size: the model does not fit on {device} even "
                f"with 1 example of {max_sequence_length} tokens in {precision}. "
                "Pass a smaller --max_sequence_length or use a larger device."
            )
        how = f"largest that fits on {device} (probed)"
    else:
        memory = _device_memory(env)
        missing = []
        if env.platform != "cpu":
            missing.append("no fits probe")
        if memory is None:
            missing.append("no memory figure")
        if model_params is None and model_dims is None:
            missing.append("no model size")
        if memory is None or (model_params is None and model_dims is None):
            return per_replica, (
                f"{', '.join(missing)}: no memory check, the whole "
                "per-replica batch in one pass"
            )
        static = (model_params or 0) * _BYTES_PER_PARAMETER
        per_example = _activation_bytes_per_example(
            model_dims, max_sequence_length, 4 if precision == "float32" else 2
        )
        # CPU replicas share the host's memory; each GPU has its own.
        sharing = local_replicas if env.platform == "cpu" else 1
        budget = memory * _MEMORY_SAFETY / sharing - static
        fits = [c for c in candidates if c * per_example <= budget]
        estimate = (
            f"estimate {static / _GIB:.2f} GiB weights/grads/Adam/accumulator + "
            f"{per_example / _MIB:.1f} MiB activations per example vs half of "
            f"{memory / _GIB:.1f} GiB"
        )
        if not fits:
            logging.warning(
                "Even one example may not fit in memory (%s); expect swapping "
                "or an out-of-memory kill.", estimate,
            )
            return 1, f"{estimate}: even 1 may not fit; lower --max_sequence_length"
        fitting = fits[-1]
        how = ("no fits probe; " if env.platform != "cpu" else "") + estimate
    micro = _largest_divisor_at_most(per_replica, fitting)
    if micro != fitting:
        return micro, (
            f"{how}: {fitting} fits but does not divide {per_replica} per "
            f"replica; {micro} is the largest that does"
        )
    return micro, how


def _search_fitting(candidates, fits_probe, cache, key, kwargs):
    """Largest candidate that fits, trying the largest first, then bisecting.

    Assumes that if a micro-batch fits, every smaller one fits too.
    """
    known = cache.get("fits", key) if cache else {}
    answers = {}

    def fits(size):
        if str(size) in known:
            return bool(known[str(size)])
        try:
            answer = bool(fits_probe(size, **kwargs))
        except tf.errors.ResourceExhaustedError:
            answer = False
        answers[str(size)] = answer
        return answer

    if fits(candidates[-1]):
        result = candidates[-1]
    else:
        low, high = -1, len(candidates) - 1  # Index that fits / does not fit.
        while high - low > 1:
            middle = (low + high) // 2
            if fits(candidates[middle]):
                low = middle
            else:
                high = middle
        result = candidates[low] if low >= 0 else None
    if cache and answers:
        cache.put("fits", key, {**known, **answers})
    return result


def _activation_bytes_per_example(dims, sequence_length, bytes_per_value):
    """Activation memory one example keeps alive for the backward pass.

    Counting values kept per token in one transformer layer, with hidden
    size h, intermediate size i and a heads:
      attention: the Q/K/V projections' input (h), Q, K and V (3h) and the
        context before the output projection (h)                    5h
      attention probabilities and their dropout mask, per head      2as
      output projection's dropout mask and LayerNorm input          2h
      feed-forward: its input (h), pre-activation and GELU output
        (2i), dropout mask (h) and LayerNorm input (h)              3h + 2i
    which totals 10h + 2i + 2as. With i = 4h that is 18h + 2as, the
    per-layer count of Korthikanti et al., "Reducing Activation
    Recomputation in Large Transformer Models" (2022): 34sh + 5as^2 bytes at
    2 bytes per value, dropout masks counted as full values here to err on
    the safe side. The embeddings add 3h per token (sum, LayerNorm,
    dropout). Per example:

      bytes = bytes_per_value * s * (layers * (10h + 2i + 2as) + 3h).
    """
    if dims is None:
        return 0
    h, layers, i, a = ModelDims(*dims)
    s = sequence_length
    return bytes_per_value * s * (layers * (10 * h + 2 * i + 2 * a * s) + 3 * h)


def _device_name(env):
    if env.platform == "tpu":
        kind = f"{env.tpu_type}, " if env.tpu_type else ""
        return f"TPU ({kind}{env.tpu_cores or DEFAULT_TPU_CORES} cores)"
    gpu = min(env.gpus, key=lambda g: g.memory_bytes or 0)
    return gpu.name


def _device_memory(env):
    """Memory one replica's device has, or None where unknown."""
    if env.platform == "cpu":
        return env.memory_bytes
    if env.platform == "gpu" and all(g.memory_bytes for g in env.gpus):
        return min(g.memory_bytes for g in env.gpus)
    if env.platform == "tpu":
        gib = _TPU_DEVICE_MEMORY_GIB.get(_tpu_generation(env.tpu_type))
        return gib * _GIB if gib else None
    return None


def _tpu_generation(accelerator_type):
    """"v5litepod-1" -> "v5e", "v3-8" -> "v3"; None where unknown."""
    match = re.fullmatch(r"(v\d+[a-z]*)-\d+", accelerator_type or "")
    if not match:
        return None
    # Cloud TPU names v5e slices "v5litepod".
    return {"v5litepod": "v5e", "v5lite": "v5e"}.get(match.group(1), match.group(1))


def _largest_divisor_at_most(number, limit):
    return max(d for d in range(1, min(number, limit) + 1) if number % d == 0)
