"""What machine is this: TPU, GPUs, workers, CPU features and memory.

This module only observes; every decision made from what it finds lives in
`painless_tf.plan`. Each source of facts (the TPU resolver, the GPU list,
`TF_CONFIG`, environment variables, `/proc` and `/sys`) can be injected, so
tests describe a machine without owning one.

Detection is fast on purpose: the TPU resolver is only built when there is a
hint that a TPU is attached (an explicit name, Colab's `COLAB_TPU_ADDR`,
`TPU_NAME`, or a TPU device node), because on a plain machine it may query the
cloud metadata service and hang for a long time.

On a TPU VM (Colab's TPU runtime, Cloud TPU) `python -m painless_tf.hardware
--tpu=local` prints what was found and connects to the TPU in a process of
its own: a TPU belongs to one process at a time, so a notebook's kernel should
not import TensorFlow before training runs.
"""

import dataclasses
import glob
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence

from absl import logging

_PLATFORMS = ("tpu", "gpu", "cpu")
# cgroup v1 writes "no limit" as a huge page-aligned number (2**63 rounded
# down to a page); anything this large is no limit at all.
_UNLIMITED_BYTES = 2**60


@dataclasses.dataclass(frozen=True)
class Gpu:
    """One GPU as TensorFlow sees it.

    Args:
        name: str. The device name, e.g. "NVIDIA A100-SXM4-40GB".
        compute_capability: tuple[int, int]. CUDA compute capability, e.g.
            (8, 0); it decides which low-precision tensor cores exist.
        memory_bytes: int | None. Device memory, or None where unknown.

    Examples:
    >>> Gpu("NVIDIA A100", (8, 0)).compute_capability
    (8, 0)
    """

    name: str
    compute_capability: tuple[int, int]
    memory_bytes: int | None = None

    def __post_init__(self):
        capability = tuple(int(x) for x in self.compute_capability)
        if len(capability) != 2:
            raise ValueError(
                "`compute_capability` must be (major, minor). Received: "
                f"compute_capability={self.compute_capability!r}"
            )
        object.__setattr__(self, "compute_capability", capability)


@dataclasses.dataclass(frozen=True)
class Environment:
    """The machine painless_tf runs on, as found by `detect_environment`.

    Args:
        platform: str. "tpu", "gpu" or "cpu": where the model's math runs.
        tpu: str | None. The TPU's name or address, None without a TPU.
        tpu_type: str | None. The TPU's accelerator type from
            `TPU_ACCELERATOR_TYPE`, e.g. "v5litepod-1" (a v5e chip) or
            "v3-8"; None where unknown.
        tpu_cores: int | None. TPU devices TensorFlow will see: from
            `tpu_type`, else one per numbered /dev/vfio group (v5e and later,
            one device per chip); None where unknown without connecting (the
            plan then assumes a v2-8/v3-8).
        gpus: tuple[Gpu, ...]. The local GPUs.
        num_workers: int. Machines in the job (from `TF_CONFIG`), 1 alone.
        worker_index: int. This machine's rank among them; the chief is 0.
        cpu_count: int. CPU cores this process may use (affinity and cgroup
            quota).
        cpu_devices: int. Logical CPU devices TensorFlow creates; more than 1
            only where someone split the CPU, as the test set-up does.
        cpu_model: str. The CPU's model name from /proc/cpuinfo.
        cpu_flags: frozenset[str]. CPU feature flags from /proc/cpuinfo,
            e.g. "avx512_bf16", "amx_bf16".
        memory_bytes: int | None. Host memory available to this process: the
            smaller of the cgroup limit and MemAvailable; None where unknown.

    Examples:
    >>> env = Environment(platform="cpu", cpu_count=2,
    ...                   cpu_flags=frozenset({"avx512_bf16"}))
    >>> env.platform, env.num_workers
    ('cpu', 1)
    """

    platform: str = "cpu"
    tpu: str | None = None
    tpu_type: str | None = None
    tpu_cores: int | None = None
    gpus: tuple[Gpu, ...] = ()
    num_workers: int = 1
    worker_index: int = 0
    cpu_count: int = 1
    cpu_devices: int = 1
    cpu_model: str = ""
    cpu_flags: frozenset[str] = frozenset()
    memory_bytes: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "gpus", tuple(self.gpus))
        object.__setattr__(self, "cpu_flags", frozenset(self.cpu_flags))
        if self.platform not in _PLATFORMS:
            raise ValueError(
                f"`platform` must be one of {_PLATFORMS}. "
                f"Received: platform={self.platform!r}"
            )
        expected = "tpu" if self.tpu else ("gpu" if self.gpus else "cpu")
        if self.platform != expected:
            raise ValueError(
                f"`platform` must be {expected!r} for tpu={self.tpu!r} and "
                f"{len(self.gpus)} GPU(s). Received: platform={self.platform!r}"
            )
        if self.num_workers < 1 or not 0 <= self.worker_index < self.num_workers:
            raise ValueError(
                "`worker_index` must be in [0, num_workers). Received: "
                f"num_workers={self.num_workers}, "
                f"worker_index={self.worker_index}"
            )
        for name in ("cpu_count", "cpu_devices"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"`{name}` must be at least 1. "
                    f"Received: {name}={getattr(self, name)}"
                )


def detect_environment(
    *,
    tpu: str | None = None,
    tf_config: str | Mapping | None = None,
    resolver_factory: Callable | None = None,
    gpu_lister: Callable[[], Sequence[Gpu]] | None = None,
    proc_root: str = "/",
    environ: Mapping[str, str] | None = None,
) -> Environment:
    """Finds the TPU, GPUs, workers, CPU and memory of this machine.

    Args:
        tpu: str | None. A TPU name or address the user gave (--tpu); it
            must be reachable. None detects one from Colab's
            `COLAB_TPU_ADDR`, `TPU_NAME` or a TPU device node.
        tf_config: str | Mapping | None. The `TF_CONFIG` cluster description,
            as JSON text or a dict; None reads the `TF_CONFIG` variable.
        resolver_factory: Callable | None. Called as `factory(tpu=name)`;
            defaults to `tf.distribute.cluster_resolver.TPUClusterResolver`.
        gpu_lister: Callable | None. Returns the local `Gpu`s; defaults to
            asking TensorFlow.
        proc_root: str. Directory holding `proc/`, `sys/` and `dev/`.
        environ: Mapping | None. Environment variables; None means
            `os.environ`.

    Returns:
        The `Environment`.

    Examples:
    >>> env = detect_environment(gpu_lister=lambda: [], environ={})
    >>> env.platform in ("cpu", "tpu")
    True
    """
    environ = os.environ if environ is None else environ
    num_workers, worker_index = _parse_tf_config(
        environ.get("TF_CONFIG") if tf_config is None else tf_config
    )
    gpus = tuple(_list_gpus() if gpu_lister is None else gpu_lister())

    tpu_name, tpu_type, tpu_cores = None, None, None
    # A TPU host has no GPUs; skipping the hint there keeps VFIO-passthrough
    # GPU machines from paying for a TPU lookup.
    hint = tpu or (None if gpus else _tpu_hint(environ, proc_root))
    if hint:
        tpu_name = _resolve_tpu(hint, explicit=bool(tpu), factory=resolver_factory)
        if tpu_name is not None:
            tpu_type = environ.get("TPU_ACCELERATOR_TYPE") or None
            tpu_cores = _tpu_cores_from_type(tpu_type)
            if tpu_cores is None and tpu_name == "local":
                tpu_cores = _tpu_chips_from_vfio(proc_root)

    cpu_model, cpu_flags = _read_cpuinfo(proc_root)
    platform = "tpu" if tpu_name else ("gpu" if gpus else "cpu")
    return Environment(
        platform=platform,
        tpu=tpu_name,
        tpu_type=tpu_type,
        tpu_cores=tpu_cores,
        gpus=gpus,
        num_workers=num_workers,
        worker_index=worker_index,
        cpu_count=_cpu_count(proc_root),
        cpu_devices=_cpu_devices(),
        cpu_model=cpu_model,
        cpu_flags=cpu_flags,
        memory_bytes=_available_memory(proc_root),
    )


def _parse_tf_config(tf_config):
    """Returns (num_workers, worker_index) from TF_CONFIG text or dict."""
    if not tf_config:
        return 1, 0
    if isinstance(tf_config, str):
        try:
            tf_config = json.loads(tf_config)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"TF_CONFIG is not valid JSON ({e}). Fix it or unset TF_CONFIG."
            ) from None
    cluster = tf_config.get("cluster") or {}
    unsupported = sorted(set(cluster) - {"chief", "worker", "evaluator"})
    if unsupported:
        raise ValueError(
            f"TF_CONFIG cluster has job(s) {unsupported}: only 'chief' and "
            "'worker' jobs are supported (multi-worker mirrored training). "
            "Remove the other jobs from TF_CONFIG."
        )
    chiefs = list(cluster.get("chief") or [])
    workers = list(cluster.get("worker") or [])
    num_workers = len(chiefs) + len(workers)
    if num_workers == 0:
        return 1, 0
    task = tf_config.get("task") or {}
    task_type, index = task.get("type", "worker"), int(task.get("index", 0))
    if task_type == "chief":
        rank = index
    elif task_type == "worker":
        rank = len(chiefs) + index
    else:
        raise ValueError(
            f"TF_CONFIG task type {task_type!r} cannot train: painless_tf "
            "runs on 'chief' and 'worker' tasks. Start this task as a worker."
        )
    if not 0 <= rank < num_workers:
        raise ValueError(
            f"TF_CONFIG task index {index} is out of range for the "
            f"{len(workers)} '{task_type}' address(es) in the cluster. "
            "Fix task.index."
        )
    return num_workers, rank


def _tpu_hint(environ, proc_root):
    """Returns the TPU name to try, or None where nothing hints at a TPU."""
    if environ.get("COLAB_TPU_ADDR"):
        return "grpc://" + environ["COLAB_TPU_ADDR"]
    if environ.get("TPU_NAME"):
        return environ["TPU_NAME"]
    dev = os.path.join(proc_root, "dev")
    # /dev/accel* are TPU v2-v4 chips; v5 and later appear as numbered VFIO
    # groups (Colab's v5e-1 runtime among them).
    if glob.glob(os.path.join(dev, "accel*")) or _tpu_chips_from_vfio(proc_root):
        return "local"
    return None


def _tpu_chips_from_vfio(proc_root):
    """TPU chips shown as numbered VFIO groups (v5e and later), None if none.

    A bare /dev/vfio/vfio exists on many hosts and means nothing. From v5e on
    each chip is one TensorFlow device (v5p's two cores form one megacore).
    """
    groups = [
        p for p in glob.glob(os.path.join(proc_root, "dev", "vfio", "*"))
        if os.path.basename(p).isdigit()
    ]
    return len(groups) or None


def _resolve_tpu(name, *, explicit, factory):
    """Returns the TPU's master address, or None where it is unreachable."""
    if factory is None:
        import tensorflow as tf

        factory = tf.distribute.cluster_resolver.TPUClusterResolver
        # A local TPU is driven by this process's TensorFlow; a remote one
        # (grpc://, a TPU node) runs its own.
        problem = _local_tpu_build_problem(tf) if name == "local" else None
        if problem:
            if explicit:
                raise ValueError(f"--tpu={name}: {problem}")
            logging.warning(
                "A TPU device node was found, but %s Continuing without a TPU.", problem
            )
            return None
    try:
        resolver = factory(tpu=name)
        master = resolver.master()
    except Exception as e:  # The resolver raises many unrelated types.
        if explicit:
            raise ValueError(
                f"--tpu={name}: the TPU cannot be reached "
                f"({type(e).__name__}: {e}). Check the name or drop --tpu."
            ) from e
        logging.warning(
            "A TPU hint (%s) was found but the TPU cannot be reached (%s: %s); "
            "continuing without a TPU.", name, type(e).__name__, e,
        )
        return None
    return master or name


def _local_tpu_build_problem(tf):
    """Why this TensorFlow cannot drive a TPU VM's chips, or None.

    The PyPI `tensorflow` wheel is a CUDA build without TPU support; the TPU
    build is `tensorflow-tpu` (with `libtpu`). Both write the same files under
    tensorflow/, so whichever was installed last is the one that runs.
    """
    if not tf.sysconfig.get_build_info().get("is_cuda_build"):
        return None
    import importlib.metadata

    try:
        tpu_build = importlib.metadata.version("tensorflow-tpu")
    except importlib.metadata.PackageNotFoundError:
        return (
            f"TensorFlow {tf.__version__} here is the plain tensorflow wheel, "
            "which cannot drive a TPU. Install the TPU build with "
            "`pip install -e .[tpu]` (tensorflow-tpu and libtpu) and run again."
        )
    return (
        f"tensorflow-tpu {tpu_build} is installed, but the plain tensorflow "
        "wheel was installed after it and replaced its files. Run `pip install "
        f"--no-deps --force-reinstall tensorflow-tpu=={tpu_build}` and run again."
    )


def _tpu_cores_from_type(accelerator_type):
    """TPU devices TensorFlow sees for an accelerator type such as "v3-8".

    v2/v3 names count TensorCores, each its own device. v4 and v5p names
    count TensorCores too, but two of them form one "megacore" device. v5e
    and v6e names count chips, one core each; Cloud TPU calls a v5e slice
    "v5litepod-N" (Colab's free TPU is one chip, v5e-1).
    """
    match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", accelerator_type or "")
    if not match:
        return None
    version, count = match.group(1), int(match.group(2))
    if version in ("v4", "v5p"):
        return max(1, count // 2)
    return count


def _list_gpus():
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append(
            Gpu(
                name=details.get("device_name", device.name),
                compute_capability=details.get("compute_capability", (0, 0)),
            )
        )
    return gpus


def _cpu_devices():
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    # Reads the configuration only: listing logical devices would start the
    # runtime and freeze the device set-up for the rest of the process.
    configured = tf.config.get_logical_device_configuration(cpus[0]) if cpus else None
    return max(1, len(configured or ()))


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _read_cpuinfo(proc_root):
    text = _read(os.path.join(proc_root, "proc", "cpuinfo")) or ""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if not model and key in ("model name", "Model Name", "cpu model"):
            model = value.strip()
        # x86 says "flags", ARM says "Features".
        elif not flags and key in ("flags", "Features"):
            flags = frozenset(value.split())
    return model, flags


def _cgroup_paths(proc_root):
    """Returns {controller: path} from /proc/self/cgroup ("" for v2)."""
    paths = {}
    text = _read(os.path.join(proc_root, "proc", "self", "cgroup")) or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                paths[controller] = parts[2]
    return paths


def _cgroup_file(proc_root, controller_dir, own_path, name):
    """Reads a cgroup file at the process's own cgroup, else the mount root.

    Inside containers the mount root is usually the process's own cgroup
    and the path from /proc/self/cgroup does not exist under it.
    """
    base = os.path.join(proc_root, "sys", "fs", "cgroup", controller_dir)
    for directory in (os.path.join(base, own_path.lstrip("/")), base):
        text = _read(os.path.join(directory, name))
        if text is not None:
            return text.strip()
    return None


def _available_memory(proc_root):
    paths = _cgroup_paths(proc_root)
    candidates = []
    v2 = _cgroup_file(proc_root, "", paths.get("", "/"), "memory.max")
    if v2 and v2 != "max":
        candidates.append(int(v2))
    v1 = _cgroup_file(
        proc_root, "memory", paths.get("memory", "/"), "memory.limit_in_bytes"
    )
    if v1:
        candidates.append(int(v1))
    meminfo = _read(os.path.join(proc_root, "proc", "meminfo")) or ""
    match = re.search(r"^MemAvailable:\s+(\d+)\s*kB", meminfo, re.MULTILINE)
    if match:
        candidates.append(int(match.group(1)) * 1024)
    candidates = [c for c in candidates if 0 < c < _UNLIMITED_BYTES]
    return min(candidates) if candidates else None


def _cpu_count(proc_root):
    count = len(os.sched_getaffinity(0))
    paths = _cgroup_paths(proc_root)
    quota = None
    v2 = _cgroup_file(proc_root, "", paths.get("", "/"), "cpu.max")
    if v2 and not v2.startswith("max"):
        limit, period = v2.split()[:2]
        quota = int(limit) / int(period)
    else:
        own = paths.get("cpu", "/")
        limit = _cgroup_file(proc_root, "cpu", own, "cpu.cfs_quota_us")
        period = _cgroup_file(proc_root, "cpu", own, "cpu.cfs_period_us")
        if limit and period and int(limit) > 0:
            quota = int(limit) / int(period)
    if quota:
        count = min(count, max(1, math.ceil(quota)))
    return count


def main(argv=None):
    """Prints what `detect_environment` finds and, with a TPU, connects to it.

    Exits 2 with one line where the TPU cannot be reached or driven.

    Examples:
    >>> main(["--no_connect"])  # doctest: +ELLIPSIS
    platform: ...
    0
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m painless_tf.hardware")
    parser.add_argument("--tpu", help="TPU name or address, e.g. local")
    parser.add_argument(
        "--no_connect", action="store_true",
        help="only detect; do not initialize the TPU system",
    )
    args = parser.parse_args(argv)
    try:
        env = detect_environment(tpu=args.tpu)
        if args.tpu and env.platform != "tpu":
            raise ValueError(f"--tpu={args.tpu}: no TPU was found.")
        print(f"platform: {env.platform}")
        if env.platform == "tpu":
            print(f"tpu: {env.tpu} ({env.tpu_type or 'type unknown'}), "
                  f"{env.tpu_cores or 'unknown'} device(s) expected")
            if not args.no_connect:
                from painless_tf import distribution

                strategy = distribution.make_strategy("tpu", tpu=env.tpu)
                print(f"connected: {strategy.num_replicas_in_sync} TPU replica(s)")
        print(f"cpu: {env.cpu_count} core(s), {env.cpu_model or 'model unknown'}")
    except Exception as e:  # The TPU runtime raises many unrelated types.
        print(f"{type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
