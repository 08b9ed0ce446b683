"""The plan's distribution and compilation decisions.

The strategy and the replicas from the machine (a TPU, the GPUs, TF_CONFIG's
workers), the global batch size, XLA, and whether the optimizer update is
one fused XLA function. `painless_tf.distribution` creates the strategy
chosen here.
"""

import math

from painless_tf.plan.checks import AUTO
from painless_tf.plan.checks import PlanError
from painless_tf.plan.checks import _bool_or_auto
from painless_tf.plan.checks import _check_flag_choice
from painless_tf.plan.checks import _positive_int

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")

# Examples per optimizer update in the BERT fine-tuning recipe.
DEFAULT_GLOBAL_BATCH_SIZE = 32
# TPU devices assumed where neither TPU_ACCELERATOR_TYPE nor the device nodes
# tell (a remote TPU node: a v2-8 / v3-8, 8 cores). A TPU VM's own chips are
# counted (Colab's v5e-1: 1).
DEFAULT_TPU_CORES = 8


def _decide_strategy(strategy, env):
    """Returns (strategy, num_replicas, strategy reason, replicas reason)."""
    if strategy != AUTO:
        _check_flag_choice("strategy", strategy, STRATEGIES)
    tpu = f"--tpu={env.tpu}"
    local_devices = len(env.gpus) or env.cpu_devices
    device_word = "GPU(s)" if env.gpus else "CPU device(s)"

    if env.platform == "tpu":
        if strategy not in (AUTO, "tpu"):
            raise PlanError(
                f"--strategy={strategy} with {tpu}: a TPU trains only under "
                "TPUStrategy. Drop --strategy or drop --tpu."
            )
        if env.tpu_cores:
            replicas = env.tpu_cores
            why = f"{env.tpu_cores} TPU device(s)" + (
                f" ({env.tpu_type})" if env.tpu_type else ""
            )
        else:
            replicas = DEFAULT_TPU_CORES
            why = (
                f"{DEFAULT_TPU_CORES} TPU cores: assumed a v2-8/v3-8 (set "
                "TPU_ACCELERATOR_TYPE, e.g. v5litepod-1, for another slice)"
            )
        reason = f"TPU {env.tpu} reachable" if strategy == AUTO else "set by user"
        return "tpu", replicas, reason, why

    if strategy == "tpu":
        raise PlanError(
            "--strategy=tpu but no TPU was found (no --tpu, COLAB_TPU_ADDR, "
            "TPU_NAME or TPU device). Pass --tpu=NAME or drop --strategy."
        )
    if env.num_workers > 1 and strategy not in (AUTO, "multi_worker_mirrored"):
        raise PlanError(
            f"--strategy={strategy} with TF_CONFIG of {env.num_workers} "
            "workers: that strategy trains on one machine, so every worker "
            "would train alone. Drop --strategy or unset TF_CONFIG."
        )
    if strategy == "mirrored" and local_devices < 2:
        raise PlanError(
            "--strategy=mirrored needs at least 2 devices, but this machine "
            f"has one ({'1 GPU' if env.gpus else 'CPU only'}). Drop "
            "--strategy: one device trains with the default strategy."
        )

    if strategy == "multi_worker_mirrored" or (
        strategy == AUTO and env.num_workers > 1
    ):
        per_worker = len(env.gpus) or 1
        replicas = env.num_workers * per_worker
        reason = (
            f"TF_CONFIG lists {env.num_workers} workers"
            if strategy == AUTO
            else "set by user"
        )
        kind = "GPU(s)" if env.gpus else "CPU replica"
        why = f"{env.num_workers} worker(s) x {per_worker} {kind}"
        return "multi_worker_mirrored", replicas, reason, why
    if strategy == "mirrored" or (strategy == AUTO and len(env.gpus) > 1):
        reason = "set by user"
        if strategy == AUTO:
            reason = f"{len(env.gpus)} GPUs on one machine"
        return "mirrored", local_devices, reason, f"{local_devices} {device_word}"
    if strategy == AUTO:
        what = f"one GPU ({env.gpus[0].name})" if env.gpus else "CPU only"
        return "default", 1, f"{what}: nothing to distribute", "one device"
    extra = f"; only 1 of {len(env.gpus)} GPUs is used" if len(env.gpus) > 1 else ""
    return "default", 1, f"set by user{extra}", "one device"


def _decide_global_batch(value, num_replicas, strategy):
    if value == AUTO:
        size = math.ceil(DEFAULT_GLOBAL_BATCH_SIZE / num_replicas) * num_replicas
        if size == DEFAULT_GLOBAL_BATCH_SIZE:
            return size, "BERT fine-tuning recipe: 32 examples per update"
        return size, (
            f"BERT recipe's 32, rounded up to a multiple of the {num_replicas} replicas"
        )
    size = _positive_int(value, "global_batch_size")
    if size % num_replicas:
        lower = size // num_replicas * num_replicas
        options = " or ".join(
            str(s) for s in (lower, lower + num_replicas) if s > 0
        )
        raise PlanError(
            f"--global_batch_size={size} is not a multiple of the "
            f"{num_replicas} replicas of --strategy={strategy}. Pass "
            f"--global_batch_size={options}."
        )
    return size, "set by user"


def _decide_xla(xla, env):
    xla = _bool_or_auto(xla, "xla")
    if xla == AUTO:
        if env.platform == "tpu":
            return True, "TPUs always compile with XLA"
        if env.platform == "gpu":
            return True, "XLA fuses kernels on GPU"
        # Not measured on the user's machine: a number from the development
        # machine, said as such, with the file that holds it.
        return False, (
            "off on CPU: XLA ran MiniLM-L6's forward and backward 0.60x as "
            "fast as plain TensorFlow on a 2-core AMD EPYC (2026-11-28, "
            "docs/benchmarks.md, cpu suite); not measured on this machine; "
            "pass --xla=true to force"
        )
    if env.platform == "tpu" and not xla:
        raise PlanError(
            f"--xla=false with --tpu={env.tpu}: TPUs always compile with XLA. "
            "Drop --xla=false or drop --tpu."
        )
    return xla, "set by user"


# Below this many parameters the optimizer update is too small for one XLA
# function to save anything, while compiling it still costs seconds (the first
# step of the 2k-parameter test model took 12.6 CPU-s fused, 6.5 unfused, on
# the 2-core AMD EPYC, 2026-12-02; AdamW streams 16 bytes per parameter, 16 MB
# at this size).
FUSE_MIN_PARAMS = 1_000_000


def _decide_fused_update(fused_update, strategy, model_params=None):
    fused_update = _bool_or_auto(fused_update, "fused_update")
    # The plan's name for what `distribution.fusable_update` tells from a
    # strategy object: only the one-device strategy can fuse its update.
    one_device = strategy == "default"
    if fused_update == AUTO:
        if one_device and model_params is not None and (
                model_params < FUSE_MIN_PARAMS):
            return False, (
                f"{model_params:,} parameters, under {FUSE_MIN_PARAMS:,}: an "
                "update this small gains nothing from one XLA function, "
                "whose compilation costs seconds (6 CPU-s for a 2k-parameter "
                "model on a 2-core AMD EPYC, 2026-12-02; not measured on this "
                "machine)"
            )
        if one_device:
            return True, (
                "one device: the optimizer update is one XLA function "
                "(MiniLM-L6 updates 1.11x faster on a 2-core AMD EPYC, "
                "2026-11-28, docs/benchmarks.md, cpu suite; not measured on "
                "this machine)"
            )
        return False, (
            f"{strategy}: Keras updates each replica's copy of a weight "
            "separately, which one XLA function cannot hold"
        )
    if fused_update and not one_device:
        raise PlanError(
            f"--fused_update=true with strategy {strategy}: only a one-device "
            "update can be fused. Pass --fused_update=auto."
        )
    return fused_update, "set by user"
