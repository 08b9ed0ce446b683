"""Model FLOPs and hardware peaks, for model FLOPs utilization (MFU).

MFU is the share of the hardware's peak arithmetic a training run turns into
useful model math:

    mfu = training_flops_per_token(model, lengths) * real_tokens_per_sec
          / peak_flops(environment, precision)

Only the model's own matmuls on real tokens count: padding, recomputation,
optimizer math and the gradient accumulation bookkeeping do not, so MFU
compares runs with different batching, padding or hardware fairly (the
convention of the PaLM paper, Lightning's `ThroughputMonitor` and nanoGPT).

Peaks come from the vendors' data sheets for GPUs and TPUs (dense math, no
structured sparsity) and from a short measured matmul on the CPU, where no
data sheet says what a shared, frequency-scaled core reaches. The CPU figure
is cached in `peak_flops.json` under `$PAINLESS_TF_CACHE` (else
`~/.cache/painless_tf`), keyed by CPU model, usable cores and precision,
with the load average at the measurement's start and end. Only a
measurement on a quiet machine (other work, the load average less this
process's own share, at most half the usable cores) is cached or used: a busy machine lowers the peak and so would raise MFU, so
then the peak is NaN and MFU is not reported ("MFU n/a: peak measured under
load"). Delete the file to measure again.
"""

import datetime
import json
import math
import os
import re
import time
from collections.abc import Mapping

import numpy as np
from absl import logging

from painless_tf import atomic
from painless_tf.hardware import Environment
from painless_tf import cache
from painless_tf.plan import DEFAULT_TPU_CORES
# One rule for "the machine was busy", shared with the precision probe.
from painless_tf.plan.machine_load import _busy, _load_average, _own_load

# One forward pass plus a backward pass that costs two (gradients of the
# activations and of the weights): the standard 3x of training.
TRAINING_TO_FORWARD = 3
_PEAK_CACHE_FILE = "peak_flops.json"
# Seconds the CPU matmul measurement may take, warm-up included.
_MEASURE_SECONDS = 1.5
# A single matmul must last at least this long (s) to be timed reliably.
_MIN_MATMUL_SECONDS = 0.05
_MAX_MATMUL_SIZE = {"cpu": 4096, "gpu": 16384}
_MIN_MATMUL_SIZE = 256

# Dense peak FLOP/s per GPU, from NVIDIA's data sheets (the sparse figures
# are twice these). Ordered so that a longer name wins over its prefix
# ("a100" before "a10", "l40s" before "l4"). "tf32" is what float32 matmuls
# run at where TensorFloat-32 is on (TensorFlow's default on Ampere and
# later); GPUs without bfloat16 tensor cores have no "bf16" entry.
_GPU_PEAKS = (
    ("h100 nvl", {"bf16": 835e12, "fp16": 835e12, "tf32": 417.5e12, "fp32": 60e12}),
    ("h100 pcie", {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51.2e12}),
    ("h100", {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    ("h200", {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    ("a100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    # NVIDIA publishes no sheet for AWS's A10G; "a10" matches it and gives
    # the A10's figures, as Lightning's table does.
    ("a10", {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    ("l40s", {"bf16": 362.05e12, "fp16": 362.05e12, "tf32": 183e12, "fp32": 91.6e12}),
    ("l4", {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12}),
    ("v100s", {"fp16": 130e12, "fp32": 16.4e12}),
    ("v100 pcie", {"fp16": 112e12, "fp32": 14e12}),
    ("v100", {"fp16": 125e12, "fp32": 15.7e12}),
    ("t4", {"fp16": 65e12, "fp32": 8.1e12}),
)
# Peak bfloat16 FLOP/s per TPU *chip*, from Google's system architecture
# pages; TPUs run every matmul in bfloat16 passes, so one figure serves all
# precisions.
_TPU_CHIP_PEAKS = {
    "v2": 45e12,
    "v3": 123e12,
    "v4": 275e12,
    "v5e": 197e12,
    "v5p": 459e12,
    "v6e": 918e12,
}
# TensorFlow devices per chip: v2 and v3 chips show their two TensorCores as
# two devices; v4 and v5p fuse two into one "megacore"; v5e and v6e have one.
_TPU_DEVICES_PER_CHIP = {"v2": 2, "v3": 2}


def training_flops_per_token(model, sequence_length) -> float:
    """Training FLOPs per real token of a keras-hub BERT-style classifier.

    Counted from the backbone's shapes (a multiply-add is 2 FLOPs; biases,
    LayerNorm, softmax, GELU and the embedding lookups are left out, as
    they are in every MFU convention). With hidden size `h`, `n` layers,
    feed-forward size `f`, sequence length `s` and a classifier head of
    dense layers `(d_in -> d_out)` applied once per sequence:

        per layer, per token:
          query, key, value, output projections   4 x 2 h h  =  8 h^2
          feed-forward in and out                 2 x 2 h f  =  4 h f
          scores q.k over s keys, then mix of s values
                                                  2 x 2 s h  =  4 s h
        forward per token  = n (8 h^2 + 4 h f + 4 s h)
                             + sum(2 d_in d_out over the head) / s
        training per token = 3 x forward (the backward pass costs twice
                             the forward)

    The number of heads does not enter: the heads split `h`, they do not
    add to it. The vocabulary enters only through a language-model head,
    which a classifier does not have (the token embedding is a lookup).

    Given every example's real length instead of one `s`, the attention
    term uses `sum(s_i^2) / sum(s_i)` and the head term `count / sum(s_i)`,
    which is the exact average over those tokens.

    Args:
        model: keras.Model. A keras-hub task with a `backbone` that has
            `hidden_dim`, `num_layers` and `intermediate_dim` (BERT,
            DistilBERT, RoBERTa, ...), the backbone itself, or a
            `painless_tf.Trainer` wrapping the task.
        sequence_length: int or array-like of int. One sequence length, or
            the real length of every example (e.g.
            `TokenizedExamples.lengths`).

    Returns:
        float, FLOPs per real token for one training step (forward and
        backward).

    Examples:
    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(
    ...     vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8,
    ...     intermediate_dim=16, max_sequence_length=16)
    >>> training_flops_per_token(backbone, 16)  # 3 x (2 x 1536 + 128 / 16)
    9240.0
    """
    backbone = _backbone_of(model)
    h = _dimension(backbone, "hidden_dim")
    layers = _dimension(backbone, "num_layers")
    f = _dimension(backbone, "intermediate_dim")
    lengths = np.asarray(sequence_length, dtype=np.float64).reshape(-1)
    if lengths.size == 0 or not np.all(lengths >= 1):
        raise ValueError(
            "`sequence_length` must be a positive length or non-empty "
            f"lengths. Received: sequence_length={sequence_length!r}"
        )
    tokens = float(lengths.sum())
    # Attention over each example's own keys: sum_i s_i * (4 s_i h) tokens.
    attention_length = float(np.sum(lengths**2)) / tokens
    sequences_per_token = lengths.size / tokens
    per_layer = 8 * h * h + 4 * h * f + 4 * attention_length * h
    head = sum(2 * d_in * d_out for d_in, d_out in _head_shapes(model, backbone))
    forward = layers * per_layer + head * sequences_per_token
    return float(TRAINING_TO_FORWARD * forward)


def peak_flops(
    environment_or_device, precision: str, *, environ=None, under_load=False
) -> float:
    """Peak FLOP/s of the hardware that trains, at a precision.

    GPUs and TPUs: the data-sheet peak for the precision's matmuls
    (float32 counts as TensorFloat-32 where TensorFlow enables it, as it
    does by default on Ampere and later). The CPU: the best of a few large
    `tf.linalg.matmul`s at the precision, measured once per process (about
    1.5 s); the cache keeps the best measurement so far taken on a quiet
    machine (other work at most half the usable cores, by the 1-minute
    load average at its start and end), since other work on the machine can only lower it. Without
    one the peak is NaN, so no MFU is computed against a peak measured
    under load. A GPU missing from the table is measured the same way.

    Args:
        environment_or_device: `painless_tf.hardware.Environment` or str.
            An environment gives the peak of every device that trains (all
            GPUs or TPU cores of all workers; the whole CPU of each
            worker). A string names one device: "cpu", a GPU name such as
            "NVIDIA A100-SXM4-40GB", or a TPU such as "v3" or "v4-8"
            (one TensorFlow TPU device).
        precision: str. "float32", "mixed_float16" or "mixed_bfloat16".
        environ: Mapping or None. Environment variables (for
            `TPU_ACCELERATOR_TYPE` and the cache location); None means
            `os.environ`.
        under_load: bool. Return this process's CPU measurement even when
            it was taken under load and no quiet one is cached (for
            benchmarks that record the load beside it); never cached.

    Returns:
        float, FLOP/s; NaN where the TPU generation is unknown or the CPU
        was only measured under load (`peak_flops_source` says which).

    Examples:
    >>> peak_flops("NVIDIA A100-SXM4-80GB", "mixed_bfloat16")
    312000000000000.0
    >>> peak_flops("v3-8", "float32")  # one TensorCore of a v3 chip
    61500000000000.0
    """
    return _peak(environment_or_device, precision, environ, under_load)[0]


def peak_flops_source(
    environment_or_device, precision: str, *, environ=None, under_load=False
) -> str:
    """One line saying where `peak_flops` took its number from.

    Args:
        environment_or_device: as for `peak_flops`.
        precision: str. As for `peak_flops`.
        environ: Mapping or None. As for `peak_flops`.
        under_load: bool. As for `peak_flops`.

    Returns:
        str, e.g. "NVIDIA A100 data sheet, bf16 dense: 312 TFLOP/s x 8 GPUs".

    Examples:
    >>> peak_flops_source("Tesla T4", "mixed_float16")
    'Tesla T4 data sheet, fp16 dense: 65 TFLOP/s'
    """
    return _peak(environment_or_device, precision, environ, under_load)[1]


# === Model shapes ===


def _backbone_of(model):
    # A painless_tf.Trainer keeps the task in `.model`.
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "backbone"):
        model = inner
    backbone = getattr(model, "backbone", None) or model
    if not all(
        hasattr(backbone, name)
        for name in ("hidden_dim", "num_layers", "intermediate_dim")
    ):
        raise ValueError(
            "`model` must be a keras-hub transformer task or backbone with "
            "`hidden_dim`, `num_layers` and `intermediate_dim`. Received: "
            f"{type(model).__name__}. Pass e.g. a keras_hub.models."
            "BertTextClassifier, or count its FLOPs by hand."
        )
    return backbone


def _dimension(backbone, name):
    value = getattr(backbone, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"The backbone's `{name}` must be a positive int. Received: "
            f"{name}={value!r} on {type(backbone).__name__}."
        )
    return int(value)


def _head_shapes(model, backbone):
    """(in, out) of the dense layers applied once per sequence."""
    task = getattr(model, "model", None)
    task = task if task is not None and hasattr(task, "backbone") else model
    layers = [getattr(backbone, "pooled_dense", None)]
    if task is not backbone:
        layers += [
            getattr(task, "pooled_dense", None),
            getattr(task, "output_dense", None),
        ]
    shapes = []
    for layer in layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) == 2:
            shapes.append((int(kernel.shape[0]), int(kernel.shape[1])))
    return shapes


# === Peaks ===


def _peak(device, precision, environ, under_load=False):
    environ = os.environ if environ is None else environ
    if precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(
            "`precision` must be 'float32', 'mixed_float16' or "
            f"'mixed_bfloat16'. Received: precision={precision!r}"
        )
    if isinstance(device, Environment):
        return _environment_peak(device, precision, environ, under_load)
    if not isinstance(device, str) or not device.strip():
        raise ValueError(
            "`environment_or_device` must be an Environment or a device "
            f"name such as 'cpu' or 'NVIDIA A100'. Received: {device!r}"
        )
    name = device.strip()
    if name.lower() == "cpu":
        cores = len(os.sched_getaffinity(0))
        return _cpu_peak(precision, _cpu_model(), cores, environ, under_load)
    tpu = _tpu_version(name)
    if tpu is not None:
        return _tpu_device_peak(tpu)
    return _gpu_peak(name, precision, environ)


def _environment_peak(env, precision, environ, under_load=False):
    workers = env.num_workers
    if env.platform == "gpu":
        peaks = [_gpu_peak(gpu.name, precision, environ) for gpu in env.gpus]
        total = sum(p for p, _ in peaks) * workers
        source = peaks[0][1] + f" x {len(env.gpus) * workers} GPUs"
        return total, source
    if env.platform == "tpu":
        version = _tpu_version(environ.get("TPU_ACCELERATOR_TYPE", ""))
        if version is None:
            logging.warning(
                "peak FLOPs: the TPU generation is unknown; MFU is not "
                "reported. Set TPU_ACCELERATOR_TYPE (e.g. v3-8)."
            )
            return math.nan, "TPU generation unknown (set TPU_ACCELERATOR_TYPE)"
        per_device, source = _tpu_device_peak(version)
        cores = env.tpu_cores or DEFAULT_TPU_CORES
        return per_device * cores, f"{source} x {cores} devices"
    flops, source = _cpu_peak(
        precision, env.cpu_model, env.cpu_count, environ, under_load
    )
    if workers > 1:
        return flops * workers, f"{source} x {workers} workers"
    return flops, source


def _tpu_version(name):
    # "v3", "v3-8", "TPU v4", "v5litepod-16"; a GPU's "V100" is no TPU.
    match = re.fullmatch(
        r"(?:tpu[\s_-]*)?v(\d)([a-z]*)(?:-\d+)?", name.strip().lower()
    )
    if not match:
        return None
    version = "v" + match.group(1) + match.group(2)
    # Cloud TPU names v5e slices "v5litepod".
    return {"v5litepod": "v5e", "v5lite": "v5e"}.get(version, version)


def _tpu_device_peak(version):
    chip = _TPU_CHIP_PEAKS.get(version)
    if chip is None:
        raise ValueError(
            f"TPU {version}: no peak FLOPs known. Known: "
            f"{', '.join(_TPU_CHIP_PEAKS)}."
        )
    per_chip = _TPU_DEVICES_PER_CHIP.get(version, 1)
    flops = chip / per_chip
    source = f"TPU {version} spec, bf16: {_tera(chip)} TFLOP/s per chip"
    if per_chip > 1:
        source += f" / {per_chip} TensorCores"
    return flops, source


def _gpu_peak(name, precision, environ):
    lowered = name.lower()
    for key, peaks in _GPU_PEAKS:
        if key in lowered:
            dtype = _gpu_dtype(precision, peaks)
            flops = peaks[dtype]
            return flops, f"{name} data sheet, {dtype} dense: {_tera(flops)} TFLOP/s"
    logging.info("peak FLOPs: %s is not in the table; measuring it.", name)
    return _measured_peak(
        precision, f"gpu|{name}", "/GPU:0", "gpu", environ
    )


def _gpu_dtype(precision, peaks):
    if precision == "mixed_bfloat16":
        # Without bfloat16 tensor cores (V100, T4) XLA and cuBLAS run
        # bfloat16 matmuls at no better than the float32 rate.
        return "bf16" if "bf16" in peaks else "fp32"
    if precision == "mixed_float16":
        return "fp16"
    import tensorflow as tf

    if "tf32" in peaks and tf.config.experimental.tensor_float_32_execution_enabled():
        return "tf32"
    return "fp32"


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model Name", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return "unknown CPU"


def _cpu_peak(precision, cpu_model, cpu_count, environ, under_load=False):
    key = f"cpu|{cpu_model or 'unknown CPU'}|{cpu_count} cores"
    return _measured_peak(
        precision, key, "/CPU:0", "cpu", environ, cores=cpu_count,
        under_load=under_load,
    )


# Cache keys measured by this process. Each process measures once more and
# the cache keeps the best quiet measurement: other work on the machine can
# only make a measurement lower, and a low peak would overstate MFU from
# then on.
_MEASURED = set()
# This process's measurements taken under load, by (path, cache key): not
# cached, and no MFU is computed against them.
_UNDER_LOAD = {}


def _measured_peak(
    precision, key, device, kind, environ, cores=None, under_load=False
):
    """(FLOP/s, source) from the best quiet measurement, cached.

    A CPU measurement counts as quiet when other work kept at most half of
    `cores` busy (`plan.machine_load._busy`: the 1-minute load average at its start and
    end, less this process's own share).
    Without a quiet measurement, cached or new, the peak is NaN and MFU is
    not reported ("MFU n/a"), unless `under_load`: then this process's own
    measurement is returned as it is (for benchmarks, which record the load
    themselves).
    """
    cache_key = f"{key}|{precision}"
    path = os.path.join(_cache_dir(environ), _PEAK_CACHE_FILE)
    entry = _quiet_entry(_read_cache(path).get(cache_key))
    if (path, cache_key) not in _MEASURED or (
        entry is None and (path, cache_key) not in _UNDER_LOAD
    ):
        start = _load_average()
        flops, size = _measure_matmul(precision, device, kind)
        load = [start, _load_average()]
        own = _own_load()
        _MEASURED.add((path, cache_key))
        busy = cores is not None and _busy(load, own, cores)
        measured = {
            "flops": flops,
            "matmul_size": size,
            "measured": datetime.datetime.now(
                datetime.timezone.utc
            ).isoformat(timespec="seconds"),
            "load_average": load,
            "own_load": own,
            "cores": cores,
        }
        if busy:
            _UNDER_LOAD[(path, cache_key)] = measured
            logging.warning(
                "peak FLOPs: measured %.1f GFLOP/s on %s (%s) under load "
                "(%s); not cached, and MFU is reported only against a peak "
                "measured on a quiet machine.",
                flops / 1e9, key, precision, _load_words(measured),
            )
        elif entry is None or flops > entry["flops"]:
            entry = measured
            cache = _read_cache(path)  # another process may have written
            cache[cache_key] = entry
            _write_cache(path, cache)
        if entry is not None:
            logging.info(
                "peak FLOPs: measured %.1f GFLOP/s on %s (%s, %dx%d matmuls, "
                "%s); the best quiet one, %.1f GFLOP/s, is cached in %s",
                flops / 1e9, key, precision, size, size,
                _load_words(measured), entry["flops"] / 1e9, path,
            )
    where = ", ".join(key.split("|")[1:])
    dtype = _MATMUL_DTYPE_NAMES[precision]
    if entry is None:
        busy = _UNDER_LOAD[(path, cache_key)]
        size = busy["matmul_size"]
        if under_load:
            return float(busy["flops"]), (
                f"measured under load: {size}x{size} {dtype} tf.linalg.matmul "
                f"on {where} = {busy['flops'] / 1e9:.1f} GFLOP/s "
                f"({busy['measured']}, {_load_words(busy)}; not cached)"
            )
        return math.nan, (
            f"MFU n/a: peak measured under load ({size}x{size} {dtype} "
            f"tf.linalg.matmul on {where} = {busy['flops'] / 1e9:.1f} GFLOP/s, "
            f"{_load_words(busy)}, {busy['measured']}; not cached, so a run "
            "on a quiet machine measures again)"
        )
    size = entry["matmul_size"]
    source = (
        f"measured: best {size}x{size} {dtype} "
        f"tf.linalg.matmul on {where} = {entry['flops'] / 1e9:.1f} GFLOP/s "
        f"({entry['measured']}, {_load_words(entry)}, cached in {path})"
    )
    return float(entry["flops"]), source


def _quiet_entry(entry):
    """A cached measurement that recorded its load, or None.

    Entries written before the load was recorded are measured again:
    nothing says the machine was quiet then.
    """
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("flops"), (int, float))
        and entry["flops"] > 0
        and isinstance(entry.get("matmul_size"), int)
        and isinstance(entry.get("load_average"), list)
        and len(entry["load_average"]) == 2
    ):
        return None
    return entry


def _load_words(measurement):
    words = []
    for value in measurement["load_average"]:
        words.append("?" if value is None else f"{value:.2f}")
    text = f"load average {words[0]} -> {words[1]}"
    cores = measurement.get("cores")
    if cores:
        text += f" on {cores} " + ("core" if cores == 1 else "cores")
    return text


_MATMUL_DTYPE_NAMES = {
    "float32": "float32",
    "mixed_float16": "float16",
    "mixed_bfloat16": "bfloat16",
}


def _measure_matmul(precision, device, kind):
    """Returns (best FLOP/s, matrix size) of square matmuls on `device`."""
    import tensorflow as tf

    dtype = _MATMUL_DTYPE_NAMES[precision]
    deadline = time.perf_counter() + _MEASURE_SECONDS
    best, size = 0.0, _MIN_MATMUL_SIZE
    with tf.device(device):
        while True:
            a = tf.cast(tf.random.uniform((size, size), -1, 1, seed=1), dtype)
            b = tf.cast(tf.random.uniform((size, size), -1, 1, seed=2), dtype)
            # The first call pays for kernel selection and thread start-up.
            _ = tf.linalg.matmul(a, b)[0, 0].numpy()
            start = time.perf_counter()
            # Reading one element waits for the whole product on any device.
            _ = tf.linalg.matmul(a, b)[0, 0].numpy()
            seconds = time.perf_counter() - start
            best = max(best, 2 * size**3 / seconds)
            if (
                seconds >= _MIN_MATMUL_SECONDS
                or size >= _MAX_MATMUL_SIZE[kind]
                or time.perf_counter() + 8 * seconds > deadline
            ):
                break
            size *= 2
        while time.perf_counter() + seconds < deadline:
            start = time.perf_counter()
            _ = tf.linalg.matmul(a, b)[0, 0].numpy()
            seconds = time.perf_counter() - start
            best = max(best, 2 * size**3 / seconds)
    return best, size


def _cache_dir(environ):
    return cache.directory(environ)


def _read_cache(path):
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError):
        # Absent, or damaged by something else: it is only a cache.
        return {}
    return dict(values) if isinstance(values, Mapping) else {}


def _write_cache(path, values):
    atomic.write_json(path, values, indent=2, sort_keys=True)


def _tera(flops):
    return f"{flops / 1e12:g}"
