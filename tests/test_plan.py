"""Tests of hardware detection and of every decision of the automatic plan.

Machines are faked: TPU resolvers, GPU lists, TF_CONFIG, /proc and /sys
trees under a temporary directory, and probes that return canned answers.
No model runs here.
"""

import json
import math
import os
import types

import pytest
import tensorflow as tf

from painless_tf.hardware import Environment, Gpu, detect_environment
from painless_tf.plan import (
    ModelDims,
    Plan,
    PlanError,
    default_cache_dir,
    make_plan,
)
from painless_tf.plan import precision_choice
from painless_tf.plan.micro_batch_choice import _activation_bytes_per_example

GIB = 2**30
MINILM = ModelDims(hidden_dim=384, num_layers=6, intermediate_dim=1536, num_heads=12)
MINILM_PARAMS = 22_700_000
A100 = Gpu("NVIDIA A100", (8, 0), 40 * GIB)
V100 = Gpu("Tesla V100", (7, 0), 16 * GIB)
P100 = Gpu("Tesla P100", (6, 0), 16 * GIB)


# bfloat16 conversions (AVX-NE-CONVERT) without avx512_bf16: the probe
# runs, and the CPU-feature rule says float32.
NE_CONVERT = {"avx_ne_convert"}


def _cpu(flags=(), memory=64 * GIB, **kwargs):
    return Environment(
        platform="cpu",
        cpu_model="Fake Xeon",
        cpu_flags=frozenset(flags),
        memory_bytes=memory,
        **kwargs,
    )


def _gpu(*gpus, **kwargs):
    return Environment(platform="gpu", gpus=gpus, **kwargs)


def _tpu(cores=None):
    return Environment(platform="tpu", tpu="grpc://10.0.0.2:8470", tpu_cores=cores)


# === hardware.detect_environment ===


def _write(root, relative, text):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _fake_proc(
    root,
    *,
    flags="fpu sse avx512f",
    mem_available_kb=8 * 1024 * 1024,
    cgroup_v2=None,
    cgroup_v1=None,
    cpu_max=None,
):
    _write(
        root,
        "proc/cpuinfo",
        "processor\t: 0\nmodel name\t: Fake Xeon\nflags\t\t: "
        f"{flags}\n\nprocessor\t: 1\nmodel name\t: Fake Xeon\nflags\t\t: {flags}\n",
    )
    _write(
        root,
        "proc/meminfo",
        f"MemTotal:       99999999 kB\nMemAvailable:   {mem_available_kb} kB\n",
    )
    _write(root, "proc/self/cgroup", "4:memory:/job\n0::/job\n")
    if cgroup_v2 is not None:
        _write(root, "sys/fs/cgroup/job/memory.max", f"{cgroup_v2}\n")
    if cgroup_v1 is not None:
        _write(root, "sys/fs/cgroup/memory/memory.limit_in_bytes", f"{cgroup_v1}\n")
    if cpu_max is not None:
        _write(root, "sys/fs/cgroup/cpu.max", f"{cpu_max}\n")
    return str(root)


def _no_tpu_resolver(tpu):
    raise AssertionError(f"the TPU resolver must not be built here (tpu={tpu})")


class _FakeResolver:
    def __init__(self, tpu):
        self.tpu = tpu

    def master(self):
        return self.tpu


def _detect(root, **kwargs):
    kwargs.setdefault("environ", {})
    kwargs.setdefault("gpu_lister", lambda: [])
    kwargs.setdefault("resolver_factory", _no_tpu_resolver)
    return detect_environment(proc_root=root, **kwargs)


def test_detect_reads_cpuinfo_and_meminfo(tmp_path):
    env = _detect(_fake_proc(tmp_path, flags="fpu avx512f avx512_bf16"))
    assert env.platform == "cpu"
    assert env.cpu_model == "Fake Xeon"
    assert env.cpu_flags == {"fpu", "avx512f", "avx512_bf16"}
    assert env.memory_bytes == 8 * GIB
    assert (env.tpu, env.gpus, env.num_workers, env.worker_index) == (None, (), 1, 0)


@pytest.mark.parametrize(
    "cgroup_v2, cgroup_v1, expected",
    [
        (2 * GIB, None, 2 * GIB),  # v2 limit below MemAvailable.
        ("max", None, 8 * GIB),  # v2 without a limit.
        (None, 3 * GIB, 3 * GIB),  # v1 limit.
        (None, 9223372036854771712, 8 * GIB),  # v1 "no limit".
        (16 * GIB, None, 8 * GIB),  # MemAvailable below the limit.
    ],
)
def test_detect_memory_is_the_smaller_of_cgroup_and_meminfo(
    tmp_path, cgroup_v2, cgroup_v1, expected
):
    root = _fake_proc(tmp_path, cgroup_v2=cgroup_v2, cgroup_v1=cgroup_v1)
    assert _detect(root).memory_bytes == expected


def test_detect_cpu_count_honours_the_cgroup_quota(tmp_path):
    root = _fake_proc(tmp_path, cpu_max="50000 100000")
    assert _detect(root).cpu_count == 1


def test_detect_tf_config_with_two_workers(tmp_path):
    tf_config = {
        "cluster": {"worker": ["host0:2222", "host1:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    env = _detect(_fake_proc(tmp_path), tf_config=json.dumps(tf_config))
    assert (env.num_workers, env.worker_index) == (2, 1)
    from_environ = _detect(
        _fake_proc(tmp_path), environ={"TF_CONFIG": json.dumps(tf_config)}
    )
    assert from_environ.num_workers == 2


def test_detect_tf_config_chief_comes_first(tmp_path):
    tf_config = {
        "cluster": {"chief": ["c:1"], "worker": ["w0:1", "w1:1"]},
        "task": {"type": "worker", "index": 0},
    }
    env = _detect(_fake_proc(tmp_path), tf_config=tf_config)
    assert (env.num_workers, env.worker_index) == (3, 1)


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ({"cluster": {"worker": ["a:1"], "ps": ["b:1"]}}, "'ps'"),
        (
            {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}},
            "task index 3",
        ),
    ],
)
def test_detect_bad_tf_config_says_what_to_fix(tmp_path, tf_config, message):
    with pytest.raises(ValueError, match=message):
        _detect(_fake_proc(tmp_path), tf_config=tf_config)


def test_detect_lists_gpus_and_never_looks_for_a_tpu_beside_them(tmp_path):
    root = _fake_proc(tmp_path)
    _write(tmp_path, "dev/vfio/7", "")
    env = _detect(root, gpu_lister=lambda: [A100, A100])
    assert env.platform == "gpu"
    assert [g.compute_capability for g in env.gpus] == [(8, 0), (8, 0)]


def test_detect_plain_cpu_never_builds_a_tpu_resolver(tmp_path):
    # A bare /dev/vfio/vfio exists on many hosts and is no TPU.
    _write(tmp_path, "dev/vfio/vfio", "")
    env = _detect(_fake_proc(tmp_path), resolver_factory=_no_tpu_resolver)
    assert env.platform == "cpu"


@pytest.mark.parametrize(
    "environ, device, expected_name",
    [
        ({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, None, "grpc://10.0.0.2:8470"),
        ({"TPU_NAME": "my-tpu"}, None, "my-tpu"),
        ({}, "dev/accel0", "local"),
        ({}, "dev/vfio/0", "local"),
    ],
)
def test_detect_tpu_from_hints(tmp_path, environ, device, expected_name):
    root = _fake_proc(tmp_path)
    if device:
        _write(tmp_path, device, "")
    env = _detect(root, environ=environ, resolver_factory=_FakeResolver)
    assert (env.platform, env.tpu) == ("tpu", expected_name)
    # A numbered VFIO group is one v5e-or-later chip: one device.
    assert env.tpu_cores == (1 if device == "dev/vfio/0" else None)


@pytest.mark.parametrize(
    "accelerator_type, cores",
    [("v3-8", 8), ("v2-32", 32), ("v4-16", 8), ("v5litepod-4", 4)],
)
def test_detect_tpu_cores_from_the_accelerator_type(tmp_path, accelerator_type, cores):
    env = _detect(
        _fake_proc(tmp_path),
        tpu="my-tpu",
        environ={"TPU_ACCELERATOR_TYPE": accelerator_type},
        resolver_factory=_FakeResolver,
    )
    assert env.tpu_cores == cores


def test_detect_unreachable_tpu(tmp_path):
    def unreachable(tpu):
        raise RuntimeError("no such TPU")

    root = _fake_proc(tmp_path)
    with pytest.raises(ValueError, match=r"--tpu=ghost: the TPU cannot be reached"):
        _detect(root, tpu="ghost", resolver_factory=unreachable)
    # An auto-detected hint that leads nowhere falls back to the CPU.
    env = _detect(root, environ={"TPU_NAME": "ghost"}, resolver_factory=unreachable)
    assert (env.platform, env.tpu) == ("cpu", None)


def test_environment_checks_its_platform():
    with pytest.raises(ValueError, match="`platform` must be 'gpu'"):
        Environment(platform="cpu", gpus=(A100,))


# === strategy and replicas ===


def test_tpu_plan():
    plan = make_plan(environment=_tpu(), num_train_examples=1000)
    assert (plan.strategy, plan.num_replicas, plan.precision, plan.xla) == (
        "tpu",
        8,
        "mixed_bfloat16",
        True,
    )
    assert (plan.global_batch_size, plan.micro_batch_size) == (32, 4)
    assert "v2-8/v3-8" in plan.reasons["num_replicas"]


def test_tpu_cores_from_the_environment_win_over_the_default():
    plan = make_plan(environment=_tpu(cores=32), num_train_examples=1000)
    assert plan.num_replicas == 32
    assert (plan.global_batch_size, plan.micro_batch_size) == (32, 1)


@pytest.mark.parametrize(
    "gpus, strategy, replicas",
    [
        ((A100,), "default", 1),
        ((A100, A100), "mirrored", 2),
        ((V100,) * 4, "mirrored", 4),
    ],
)
def test_gpu_strategy(gpus, strategy, replicas):
    plan = make_plan(environment=_gpu(*gpus), num_train_examples=1000)
    assert (plan.strategy, plan.num_replicas) == (strategy, replicas)


def test_two_workers_use_multi_worker_mirrored():
    cpu = make_plan(environment=_cpu(num_workers=2), num_train_examples=1000)
    assert (cpu.strategy, cpu.num_replicas, cpu.num_workers) == (
        "multi_worker_mirrored",
        2,
        2,
    )
    gpu = make_plan(
        environment=_gpu(A100, A100, num_workers=2), num_train_examples=1000
    )
    assert (gpu.strategy, gpu.num_replicas) == ("multi_worker_mirrored", 4)
    assert "2 workers" in gpu.reasons["strategy"]


def test_auto_global_batch_is_32_rounded_to_the_replicas():
    assert make_plan(environment=_cpu(), num_train_examples=10).global_batch_size == 32
    three = make_plan(environment=_gpu(A100, A100, A100), num_train_examples=10)
    assert (three.global_batch_size, three.micro_batch_size) == (33, 11)
    assert "multiple of the 3 replicas" in three.reasons["global_batch_size"]


def test_user_mirrored_on_split_cpu_devices():
    plan = make_plan(
        environment=_cpu(cpu_devices=2), num_train_examples=64, strategy="mirrored"
    )
    assert (plan.strategy, plan.num_replicas) == ("mirrored", 2)
    assert plan.micro_batch_size == 16
    assert plan.reasons["strategy"] == "set by user"


# === precision ===


@pytest.mark.parametrize(
    "gpus, precision",
    [
        ((A100,), "mixed_bfloat16"),
        ((V100,), "mixed_float16"),
        ((P100,), "float32"),
        ((A100, V100), "mixed_float16"),  # The weakest GPU decides.
    ],
)
def test_gpu_precision_follows_compute_capability(gpus, precision):
    plan = make_plan(environment=_gpu(*gpus), num_train_examples=100)
    assert plan.precision == precision
    assert "compute capability" in plan.reasons["precision"]


@pytest.mark.parametrize(
    "flags, precision",
    [
        ({"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
        ({"amx_bf16"}, "mixed_bfloat16"),
        ({"avx512f", "avx_ne_convert"}, "float32"),
    ],
)
def test_cpu_precision_without_probe_follows_cpu_flags(flags, precision):
    plan = make_plan(environment=_cpu(flags), num_train_examples=100)
    assert plan.precision == precision
    assert plan.reasons["precision"].startswith("no probe: CPU-feature rule")


def test_a_cpu_without_low_precision_instructions_is_not_probed():
    probe = _Probe()  # any call would raise KeyError
    plan = make_plan(environment=_cpu({"avx2", "fma", "avx512f"}),
                     num_train_examples=100, precision_probe=probe)
    assert (plan.precision, probe.calls) == ("float32", [])
    assert plan.reasons["precision"].startswith(
        "CPU-feature rule: no bfloat16 or float16 instructions (amx_bf16, ")
    assert plan.reasons["precision"].endswith("nothing measured")


@pytest.fixture(autouse=True)
def _quiet_machine(monkeypatch):
    # The precision probe records the load average and caches nothing taken
    # on a busy machine; these tests must not depend on the real load.
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))


ROUNDS = precision_choice._PRECISION_ROUNDS


class _Probe:
    """Canned seconds per step per policy; remembers what it was asked."""

    def __init__(self, **seconds):
        self.seconds = seconds
        self.calls = []

    def __call__(self, policy):
        self.calls.append(policy)
        return self.seconds[policy]


def test_probe_picks_the_faster_policy_and_quotes_the_ratio():
    probe = _Probe(float32=1.31, mixed_bfloat16=1.0)
    plan = make_plan(environment=_cpu(NE_CONVERT), num_train_examples=100, precision_probe=probe)
    assert plan.precision == "mixed_bfloat16"
    assert plan.reasons["precision"] == (
        "measured 1.31x faster than float32 on this CPU; median of "
        f"{ROUNDS} interleaved timings, load average 0.50 -> 0.50 on 1 core"
    )
    assert probe.calls == ["float32", "mixed_bfloat16"] * ROUNDS

    slower = _Probe(float32=1.0, mixed_bfloat16=1.25)
    plan = make_plan(environment=_cpu(NE_CONVERT), num_train_examples=100, precision_probe=slower)
    assert plan.precision == "float32"
    assert "mixed_bfloat16 1.25x slower" in plan.reasons["precision"]


def test_probe_never_picks_a_policy_whose_loss_is_not_finite():
    probe = _Probe(float32=2.0, mixed_bfloat16=0.5, mixed_float16=float("nan"))
    env = _cpu({"avx512_fp16"})
    plan = make_plan(environment=env, num_train_examples=100, precision_probe=probe)
    # A policy whose loss is not finite is not asked again.
    assert probe.calls == (
        ["float32", "mixed_bfloat16", "mixed_float16"]
        + ["float32", "mixed_bfloat16"] * (ROUNDS - 1)
    )
    assert plan.precision == "mixed_bfloat16"
    assert "mixed_float16 rejected: loss not finite" in plan.reasons["precision"]

    fast_but_nan = _Probe(float32=2.0, mixed_bfloat16=float("nan"))
    plan = make_plan(
        environment=_cpu(NE_CONVERT), num_train_examples=100, precision_probe=fast_but_nan
    )
    assert plan.precision == "float32"


def test_probe_skips_float16_without_cpu_support():
    probe = _Probe(float32=1.0, mixed_bfloat16=2.0)
    make_plan(
        environment=_cpu({"avx512_bf16"}), num_train_examples=100, precision_probe=probe
    )
    assert "mixed_float16" not in probe.calls


def test_probe_results_are_cached_per_model_key(tmp_path):
    env = _cpu({"avx512_bf16"})
    kwargs = dict(environment=env, num_train_examples=100, cache_dir=str(tmp_path))
    first = _Probe(float32=1.5, mixed_bfloat16=1.0)
    make_plan(precision_probe=first, probe_key="minilm", **kwargs)
    assert len(first.calls) == 2 * ROUNDS

    again = _Probe()  # Any call would raise KeyError.
    plan = make_plan(precision_probe=again, probe_key="minilm", **kwargs)
    assert again.calls == []
    assert plan.precision == "mixed_bfloat16"
    assert "(cached probe of 20" in plan.reasons["precision"]

    other = _Probe(float32=1.0, mixed_bfloat16=3.0)
    plan = make_plan(precision_probe=other, probe_key="bert-base", **kwargs)
    assert plan.precision == "float32"
    assert len(other.calls) == 2 * ROUNDS
    cached = json.loads((tmp_path / "probes.json").read_text())["precision"]
    models = sorted(key.rsplit("model=", 1)[1] for key in cached)
    assert models == ["bert-base", "minilm"]


def test_unreadable_probe_cache_is_measured_again(tmp_path):
    (tmp_path / "probes.json").write_text("{half a file")
    probe = _Probe(float32=1.0, mixed_bfloat16=2.0)
    plan = make_plan(
        environment=_cpu(NE_CONVERT),
        num_train_examples=10,
        precision_probe=probe,
        probe_key="m",
        cache_dir=str(tmp_path),
    )
    assert (plan.precision, len(probe.calls)) == ("float32", 2 * ROUNDS)
    assert "precision" in json.loads((tmp_path / "probes.json").read_text())


def test_cache_dir_comes_from_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("PAINLESS_TF_CACHE", str(tmp_path))
    assert default_cache_dir() == str(tmp_path)
    make_plan(
        environment=_cpu(NE_CONVERT),
        num_train_examples=10,
        precision_probe=_Probe(float32=1.0, mixed_bfloat16=1.0),
        probe_key="m",
    )
    assert (tmp_path / "probes.json").exists()


# === xla ===


def test_xla_is_on_for_accelerators_and_off_on_cpu():
    assert make_plan(environment=_gpu(A100), num_train_examples=10).xla is True
    cpu = make_plan(environment=_cpu(), num_train_examples=10)
    assert cpu.xla is False
    assert cpu.reasons["xla"].startswith("off on CPU")
    forced = make_plan(environment=_cpu(), num_train_examples=10, xla=True)
    assert (forced.xla, forced.reasons["xla"]) == (True, "set by user")


def test_reasons_quoting_the_development_machine_cite_the_benchmark_file():
    # A figure measured on one machine must not read as a fact of the
    # user's: the reason says where it was measured and names the file that
    # holds it, and the file does hold it.
    benchmarks = os.path.join(
        os.path.dirname(__file__), os.pardir, "docs", "benchmarks.md"
    )
    with open(benchmarks) as f:
        text = " ".join(f.read().split())
    plan = make_plan(environment=_cpu(), num_train_examples=10)
    for name, figure in (("xla", "0.60x"), ("fused_update", "1.11x")):
        reason = plan.reasons[name]
        assert "docs/benchmarks.md" in reason, reason
        assert "not measured on this machine" in reason, reason
        assert "2-core AMD EPYC" in reason
        assert "AMD EPYC" in text and "2 cores" in text
        assert figure in reason and figure in text, (name, figure)


def test_fused_update_is_on_for_one_device_only():
    cpu = make_plan(environment=_cpu(), num_train_examples=10)
    assert cpu.fused_update is True
    assert cpu.reasons["fused_update"].startswith("one device")
    two = make_plan(environment=_gpu(A100, A100), num_train_examples=64)
    assert (two.strategy, two.fused_update) == ("mirrored", False)
    off = make_plan(environment=_cpu(), num_train_examples=10,
                    fused_update="false")
    assert (off.fused_update, off.reasons["fused_update"]) == (
        False, "set by user")
    with pytest.raises(PlanError, match="--fused_update=true with strategy"):
        make_plan(environment=_gpu(A100, A100), num_train_examples=64,
                  fused_update="true")
    with pytest.raises(PlanError, match="--fused_update='yes'"):
        make_plan(environment=_cpu(), num_train_examples=10,
                  fused_update="yes")


def test_fused_update_is_off_for_a_model_too_small_to_gain():
    small = make_plan(environment=_cpu(), num_train_examples=10,
                      model_params=10_000)
    assert small.fused_update is False
    assert small.reasons["fused_update"].startswith(
        "10,000 parameters, under 1,000,000")
    large = make_plan(environment=_cpu(), num_train_examples=10,
                      model_params=22_700_000)
    assert large.fused_update is True
    forced = make_plan(environment=_cpu(), num_train_examples=10,
                       model_params=10_000, fused_update="true")
    assert (forced.fused_update, forced.reasons["fused_update"]) == (
        True, "set by user")


def test_a_plan_written_without_fused_update_runs_unfused():
    values = make_plan(environment=_cpu(), num_train_examples=10).to_dict()
    del values["fused_update"]
    assert Plan.from_dict(values).fused_update is False


# === micro-batch and accumulation ===


def test_activation_formula_for_minilm():
    # 2 bytes x 128 tokens x (6 x (10*384 + 2*1536 + 2*12*128) + 3*384).
    assert _activation_bytes_per_example(MINILM, 128, 2) == 15_630_336
    assert _activation_bytes_per_example(MINILM, 128, 4) == 2 * 15_630_336


def _cpu_plan(memory, **kwargs):
    kwargs.setdefault("precision", "mixed_bfloat16")
    return make_plan(
        environment=_cpu(memory=memory),
        num_train_examples=1000,
        model_params=MINILM_PARAMS,
        model_dims=MINILM,
        **kwargs,
    )


def test_cpu_micro_batch_shrinks_with_memory():
    static = MINILM_PARAMS * 20
    per_example = 15_630_336
    # Half the memory holds the static part and exactly 8 examples.
    memory = 2 * (static + 8 * per_example)
    plan = _cpu_plan(memory)
    assert (plan.micro_batch_size, plan.accumulation_steps) == (8, 4)
    assert plan.global_batch_size == 32
    assert plan.reasons["micro_batch_size"].startswith("estimate")
    assert _cpu_plan(memory - 2).micro_batch_size == 4
    assert _cpu_plan(64 * GIB).micro_batch_size == 32
    # float32 activations take twice the bytes.
    assert _cpu_plan(memory, precision="float32").micro_batch_size == 4


def test_cpu_micro_batch_when_nothing_fits_is_one():
    plan = _cpu_plan(GIB // 4)
    assert (plan.micro_batch_size, plan.accumulation_steps) == (1, 32)
    assert "even 1 may not fit" in plan.reasons["micro_batch_size"]


def test_micro_batch_that_does_not_divide_picks_the_nearest_exact_split():
    static = MINILM_PARAMS * 20
    memory = 2 * (static + 40 * 15_630_336)  # 32 fits, 48 does not.
    plan = _cpu_plan(memory, global_batch_size=48)
    assert (plan.micro_batch_size, plan.accumulation_steps) == (24, 2)
    assert plan.global_batch_size == 48
    reason = plan.reasons["micro_batch_size"]
    assert "32 fits but does not divide 48 per replica; 24" in reason


def test_without_model_size_the_whole_batch_goes_in_one_pass():
    plan = make_plan(environment=_cpu(), num_train_examples=100)
    assert (plan.micro_batch_size, plan.accumulation_steps) == (32, 1)
    assert "no model size" in plan.reasons["micro_batch_size"]


class _Fits:
    def __init__(self, limit, oom=False):
        self.limit, self.oom, self.calls = limit, oom, []

    def __call__(self, micro_batch_size, *, precision, xla, max_sequence_length):
        self.calls.append((micro_batch_size, precision, xla, max_sequence_length))
        if micro_batch_size <= self.limit:
            return True
        if self.oom:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating")
        return False


def test_gpu_micro_batch_by_fits_probe(tmp_path):
    fits = _Fits(limit=16, oom=True)
    plan = make_plan(
        environment=_gpu(A100),
        num_train_examples=1000,
        global_batch_size=64,
        fits_probe=fits,
        probe_key="minilm",
        cache_dir=str(tmp_path),
    )
    assert (plan.micro_batch_size, plan.accumulation_steps) == (16, 4)
    assert plan.global_batch_size == 64
    assert [c[0] for c in fits.calls] == [64, 4, 16, 32]
    assert fits.calls[0][1:] == ("mixed_bfloat16", True, 128)
    assert "probed" in plan.reasons["micro_batch_size"]

    again = _Fits(limit=0)
    cached = make_plan(
        environment=_gpu(A100),
        num_train_examples=1000,
        global_batch_size=64,
        fits_probe=again,
        probe_key="minilm",
        cache_dir=str(tmp_path),
    )
    assert again.calls == []
    assert cached.micro_batch_size == 16


def test_fits_probe_that_fits_at_once_is_asked_once():
    fits = _Fits(limit=1000)
    plan = make_plan(
        environment=_tpu(),
        num_train_examples=100,
        global_batch_size=256,
        fits_probe=fits,
    )
    assert [c[0] for c in fits.calls] == [32]
    assert (plan.micro_batch_size, plan.accumulation_steps) == (32, 1)


def test_fits_probe_when_nothing_fits():
    with pytest.raises(PlanError, match="does not fit on NVIDIA A100 even with 1"):
        make_plan(
            environment=_gpu(A100), num_train_examples=100, fits_probe=_Fits(limit=0)
        )


# === learning rate and schedule ===


@pytest.mark.parametrize(
    "global_batch_size, learning_rate",
    [(32, 3e-5), (128, 6e-5), (64, 3e-5 * math.sqrt(2)), (4096, 1e-4), (2, 1e-5)],
)
def test_learning_rate_square_root_scaling_with_clamp(global_batch_size, learning_rate):
    plan = make_plan(
        environment=_cpu(), num_train_examples=100, global_batch_size=global_batch_size
    )
    assert plan.learning_rate == pytest.approx(learning_rate)
    assert "square-root scaling" in plan.reasons["learning_rate"]


def test_schedule_counts_updates():
    plan = make_plan(environment=_cpu(), num_train_examples=1000, epochs=2)
    assert (plan.steps_per_epoch, plan.total_updates, plan.warmup_steps) == (32, 64, 7)
    assert (plan.optimizer, plan.schedule, plan.weight_decay, plan.clip_norm) == (
        "adamw",
        "linear",
        0.01,
        1.0,
    )
    given = make_plan(environment=_cpu(), num_train_examples=1000, steps_per_epoch=10)
    assert (given.steps_per_epoch, given.total_updates) == (10, 30)
    assert given.warmup_steps == 3
    assert given.reasons["steps_per_epoch"].startswith("from the data pipeline")


# === optimizer ===


@pytest.mark.parametrize(
    "optimizer, at_32, at_512, scaling",
    [
        ("adamw", 3e-5, 1e-4, "square-root"),  # 1.2e-4 clamped to 1e-4
        ("adam", 3e-5, 1e-4, "square-root"),
        ("rmsprop", 3e-5, 1e-4, "square-root"),
        ("lamb", 1.2e-4, 4.8e-4, "square-root"),
        ("sgd", 1e-2, 1e-1, "linear"),  # 0.16 clamped to 0.1
        ("adagrad", 5e-2, 2e-1, "square-root"),
        ("adafactor", 1e-3, 3e-3, "square-root"),
    ],
)
def test_each_optimizer_has_its_default_learning_rate(
    optimizer, at_32, at_512, scaling
):
    small, large = (
        make_plan(
            environment=_cpu(),
            num_train_examples=1000,
            optimizer=optimizer,
            global_batch_size=batch,
        )
        for batch in (32, 512)
    )
    assert small.optimizer == optimizer
    assert small.learning_rate == pytest.approx(at_32)
    assert large.learning_rate == pytest.approx(at_512)
    reason = large.reasons["learning_rate"]
    assert f"{scaling} scaling; " in reason
    assert ("clamped to" in reason) == (optimizer in ("adamw", "adam", "rmsprop", "sgd",
                                                      "adafactor"))
    # Every rule names where its numbers come from.
    assert any(source in reason for source in ("et al.", "Kingma & Ba", "Keras'"))


def test_lamb_reason_and_clamp():
    plan = make_plan(
        environment=_cpu(), num_train_examples=10**6, optimizer="lamb",
        global_batch_size=65536,
    )
    assert plan.learning_rate == pytest.approx(5e-3)
    assert plan.reasons["learning_rate"] == (
        "1.2e-4 x sqrt(65536/32) clamped to [4e-5, 5e-3]: square-root scaling; "
        "4x AdamW's, as LAMB trains BERT at ~4x Adam's rate, and 5e-3 at 32k "
        "(You et al. 2019)"
    )
    assert plan.reasons["optimizer"] == "set by user"


@pytest.mark.parametrize("optimizer", ["adamw", "auto"])
def test_very_large_batch_suggests_lamb_without_switching(optimizer):
    plan = make_plan(
        environment=_tpu(cores=512), num_train_examples=10**6,
        global_batch_size=16384, optimizer=optimizer,
    )
    assert plan.optimizer == "adamw"
    assert plan.reasons["optimizer"] == (
        "AdamW, the BERT fine-tuning recipe; global batch 16384 >= 8192: "
        "consider --optimizer=lamb (You et al. 2019)"
    )
    below = make_plan(
        environment=_tpu(cores=512), num_train_examples=10**6,
        global_batch_size=4096, optimizer=optimizer,
    )
    assert below.reasons["optimizer"] == "AdamW, the BERT fine-tuning recipe"
    chosen = make_plan(
        environment=_tpu(cores=512), num_train_examples=10**6,
        global_batch_size=16384, optimizer="sgd",
    )
    assert "lamb" not in chosen.reasons["optimizer"]


def test_momentum_and_nesterov_defaults():
    def plan(**kwargs):
        return make_plan(environment=_cpu(), num_train_examples=100, **kwargs)

    sgd = plan(optimizer="sgd")
    assert (sgd.momentum, sgd.nesterov) == (0.9, False)
    assert "0.9" in sgd.reasons["momentum"]
    assert (plan(optimizer="rmsprop").momentum, plan().momentum) == (0.0, 0.0)
    assert plan().reasons["momentum"] == "not used by adamw"
    nesterov = plan(optimizer="sgd", momentum="0.8", nesterov=True)
    assert (nesterov.momentum, nesterov.nesterov) == (0.8, True)
    assert nesterov.reasons["momentum"] == nesterov.reasons["nesterov"] == "set by user"
    assert plan(optimizer="rmsprop", momentum=0.5).momentum == 0.5


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (dict(momentum=0.9), ["--momentum=0.9", "not adamw", "--optimizer=sgd"]),
        (dict(optimizer="lamb", momentum="0.5"), ["--momentum=0.5", "not lamb"]),
        (dict(optimizer="sgd", momentum=1.5), ["--momentum=1.5", "[0, 1)"]),
        (dict(optimizer="sgd", momentum="fast"), ["--momentum='fast'"]),
        (
            dict(optimizer="rmsprop", nesterov=True),
            ["--nesterov=true", "--optimizer=rmsprop"],
        ),
        (
            dict(optimizer="sgd", momentum=0, nesterov=True),
            ["--nesterov=true", "--momentum=0"],
        ),
        (dict(optimizer="adamax"), ["--optimizer='adamax'", "lamb"]),
        (
            dict(optimizer="sgd", weight_decay=-1),
            ["--weight_decay=-1", "--weight_decay=0.0001"],
        ),
    ],
)
def test_bad_optimizer_settings_name_the_flags(overrides, fragments):
    with pytest.raises(PlanError) as info:
        make_plan(environment=_cpu(), num_train_examples=100, **overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    "optimizer, weight_decay",
    [("adamw", 0.01), ("adam", 0.0), ("lamb", 0.01), ("sgd", 1e-4),
     ("rmsprop", 0.01), ("adagrad", 1e-4), ("adafactor", 0.0)],
)
def test_each_optimizer_has_its_default_weight_decay(optimizer, weight_decay):
    plan = make_plan(environment=_cpu(), num_train_examples=100, optimizer=optimizer)
    assert plan.weight_decay == weight_decay
    assert ("exempt" in plan.reasons["weight_decay"]) == (weight_decay > 0)
    given = make_plan(
        environment=_cpu(), num_train_examples=100, optimizer=optimizer,
        weight_decay="0.05",
    )
    assert given.weight_decay == 0.05
    assert given.reasons["weight_decay"].startswith("set by user")


def test_table_shows_momentum_only_for_optimizers_that_use_it(tmp_path):
    sgd = make_plan(environment=_cpu(), num_train_examples=100, optimizer="sgd",
                    nesterov=True)
    names = [line.split()[0] for line in sgd.table().splitlines()]
    assert names[names.index("optimizer"):names.index("optimizer") + 4] == [
        "optimizer", "momentum", "nesterov", "learning_rate"]
    rmsprop = make_plan(environment=_cpu(), num_train_examples=100,
                        optimizer="rmsprop")
    names = [line.split()[0] for line in rmsprop.table().splitlines()]
    assert "momentum" in names and "nesterov" not in names
    path = str(tmp_path / "plan.json")
    sgd.to_json(path)
    assert Plan.from_json(path) == sgd


def test_plan_checks_the_optimizer_fields():
    values = make_plan(environment=_cpu(), num_train_examples=100).to_dict()
    with pytest.raises(PlanError, match="momentum=0.9 is used only by"):
        Plan.from_dict({**values, "momentum": 0.9})
    with pytest.raises(PlanError, match="optimizer='nadam'"):
        Plan.from_dict({**values, "optimizer": "nadam"})


def test_sequence_length_and_buckets():
    plan = make_plan(environment=_cpu(), num_train_examples=10)
    assert plan.max_sequence_length == 128
    # Without training lengths nothing is said to cover the data.
    assert plan.reasons["max_sequence_length"] == (
        "no training lengths: the default 128"
    )
    assert plan.bucket_boundaries == ()
    bucketed = make_plan(
        environment=_cpu(),
        num_train_examples=10,
        max_sequence_length=64,
        bucket_boundaries=[16, 32, 64],
    )
    assert bucketed.max_sequence_length == 64
    assert bucketed.bucket_boundaries == (16, 32, 64)
    with pytest.raises(PlanError, match="^bucket_boundaries: "):
        make_plan(environment=_cpu(), num_train_examples=10, bucket_boundaries=[32, 16])


# === overrides ===


def test_every_override_wins_and_says_so():
    plan = make_plan(
        environment=_gpu(A100, A100),
        num_train_examples=1000,
        global_batch_size=64,
        learning_rate=5e-5,
        precision="float32",
        xla=False,
        micro_batch_size=8,
        strategy="default",
        max_sequence_length=256,
    )
    assert (
        plan.global_batch_size,
        plan.learning_rate,
        plan.precision,
        plan.xla,
        plan.micro_batch_size,
        plan.accumulation_steps,
        plan.strategy,
        plan.max_sequence_length,
    ) == (64, 5e-5, "float32", False, 8, 8, "default", 256)
    for name in (
        "global_batch_size",
        "learning_rate",
        "precision",
        "xla",
        "micro_batch_size",
        "max_sequence_length",
    ):
        assert plan.reasons[name] == "set by user", name
    assert plan.reasons["strategy"] == "set by user; only 1 of 2 GPUs is used"


def test_overrides_from_string_flags_and_a_slow_precision_warning():
    plan = make_plan(
        environment=_gpu(V100),
        num_train_examples=100,
        global_batch_size="64",
        learning_rate="2e-5",
        xla="false",
        precision="mixed_bfloat16",
    )
    assert (plan.global_batch_size, plan.learning_rate, plan.xla) == (64, 2e-5, False)
    reason = plan.reasons["precision"]
    assert reason.startswith("set by user (GPU compute capability 7.0")


@pytest.mark.parametrize(
    "environment, overrides, fragments",
    [
        (
            _tpu(),
            dict(precision="mixed_float16"),
            ["--precision=mixed_float16", "--tpu", "float16"],
        ),
        (_tpu(), dict(xla=False), ["--xla=false", "--tpu"]),
        (_tpu(), dict(strategy="mirrored"), ["--strategy=mirrored", "--tpu"]),
        (_cpu(), dict(strategy="mirrored"), ["--strategy=mirrored", "2 devices"]),
        (_gpu(A100), dict(strategy="mirrored"), ["--strategy=mirrored", "1 GPU"]),
        (_cpu(), dict(strategy="tpu"), ["--strategy=tpu", "--tpu=NAME"]),
        (
            _cpu(num_workers=2),
            dict(strategy="mirrored"),
            ["--strategy=mirrored", "TF_CONFIG"],
        ),
        (
            _gpu(A100, A100),
            dict(global_batch_size=64, micro_batch_size=24),
            [
                "--micro_batch_size=24",
                "--global_batch_size=64",
                "2 replica(s) = 32",
                "--micro_batch_size=16",
            ],
        ),
        (
            _gpu(A100, A100, A100, A100),
            dict(global_batch_size=30),
            ["--global_batch_size=30", "4 replicas", "28 or 32"],
        ),
        (_cpu(), dict(precision="fp16"), ["--precision='fp16'", "mixed_float16"]),
        (_cpu(), dict(epochs=0), ["--epochs=0"]),
        (_cpu(), dict(learning_rate=-1.0), ["--learning_rate=-1.0"]),
    ],
)
def test_incompatible_overrides_name_both_flags(environment, overrides, fragments):
    with pytest.raises(PlanError) as info:
        make_plan(environment=environment, num_train_examples=100, **overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


# === Plan ===


def test_plan_checks_the_batch_identity():
    values = make_plan(environment=_cpu(), num_train_examples=100).to_dict()
    values.update(global_batch_size=96, micro_batch_size=32, accumulation_steps=1)
    with pytest.raises(PlanError) as info:
        Plan.from_dict(values)
    assert str(info.value) == (
        "`global_batch_size` (96) must equal num_replicas x accumulation_steps x "
        "micro_batch_size (1 x 1 x 32 = 32). Pass global_batch_size=32 or "
        "micro_batch_size=96."
    )


def test_plan_reasons_are_read_only():
    plan = make_plan(environment=_cpu(), num_train_examples=100)
    with pytest.raises(TypeError):
        plan.reasons["precision"] = "changed"


def test_json_round_trip(tmp_path):
    plan = make_plan(
        environment=_gpu(V100, V100),
        num_train_examples=5000,
        bucket_boundaries=(32, 64),
        seed=7,
    )
    path = str(tmp_path / "run" / "plan.json")
    plan.to_json(path)
    assert os.listdir(tmp_path / "run") == ["plan.json"]  # No temporary left.
    loaded = Plan.from_json(path)
    assert loaded == plan
    assert loaded.bucket_boundaries == (32, 64)
    written = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert written["precision"] == "mixed_float16"


def test_from_json_rejects_unknown_keys_and_broken_files(tmp_path):
    values = make_plan(environment=_cpu(), num_train_examples=100).to_dict()
    values["learning_rat"] = values.pop("learning_rate")
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(values))
    expected = r"unknown keys \['learning_rat'\] and missing keys \['learning_rate'\]"
    with pytest.raises(PlanError, match=expected):
        Plan.from_json(str(path))
    path.write_text('{"strategy": ')
    with pytest.raises(PlanError, match="line 1 column 14: not valid JSON"):
        Plan.from_json(str(path))


def test_table_has_one_line_per_decision_with_its_reason():
    plan = make_plan(
        environment=_cpu(NE_CONVERT),
        num_train_examples=100,
        precision_probe=_Probe(float32=1.31, mixed_bfloat16=1.0),
    )
    lines = plan.table().splitlines()
    # 21, layer_decay, weight_averaging, the 4 of the weights kept,
    # truncation, and the last: the task
    assert len(lines) == 29
    assert any(line.split()[:2] == ["layer_decay", "1"] for line in lines)
    assert any(line.split()[:2] == ["weight_averaging", "none"]
               for line in lines)
    assert lines[-1].split()[:2] == ["task", "classification"]
    assert [line.split()[0] for line in lines][:4] == [
        "strategy",
        "num_workers",
        "num_replicas",
        "precision",
    ]
    precision = lines[3].split(None, 2)
    assert precision == [
        "precision",
        "mixed_bfloat16",
        "measured 1.31x faster than float32 on this CPU; median of "
        f"{ROUNDS} interleaved timings, load average 0.50 -> 0.50 on 1 core",
    ]
    learning_rate = next(line for line in lines if line.startswith("learning_rate"))
    assert learning_rate.split()[1] == "3e-05"
    # Values start in the same column on every line.
    starts = {line.index(line.split()[1], len(line.split()[0])) for line in lines}
    assert len(starts) == 1


def test_partial_training_is_checked_and_recorded(tmp_path):
    plan = make_plan(environment=_cpu(), num_train_examples=100,
                     precision="float32", epochs=3, trainable_layers="2",
                     unfreeze="gradual", num_layers=6)
    assert plan.trainable_layers == 2 and plan.unfreeze == "gradual"
    assert plan.reasons["unfreeze"].endswith("(layers by epoch: 2, 3, 4)")
    line = next(x for x in plan.table().splitlines()
                if x.startswith("trainable_layers"))
    assert line.split()[1] == "2" and line.endswith("and the head")
    path = str(tmp_path / "plan.json")
    plan.to_json(path)
    assert Plan.from_json(path) == plan
    with pytest.raises(PlanError, match="--trainable_layers=7 exceeds the 6"):
        make_plan(environment=_cpu(), num_train_examples=100,
                  precision="float32", trainable_layers=7, num_layers=6)


def test_plans_written_before_the_later_fields_still_load(tmp_path):
    plan = make_plan(environment=_cpu(), num_train_examples=100,
                     precision="float32")
    values = plan.to_dict()
    assert values["lr_range_test"] == {} and "trainable_layers" not in (
        plan.table())
    for name in ("trainable_layers", "unfreeze", "lr_range_test"):
        del values[name]
    assert Plan.from_dict(values) == plan


@pytest.mark.parametrize("examples,probed", [(160, False), (1600, True)])
def test_a_run_too_short_to_pay_for_the_lr_range_test_keeps_the_recipe_rate(
        examples, probed):
    # 160 examples x 3 epochs at 32 = 15 updates: a range test of 32 would
    # cost more than the training; 1,600 make 150.
    calls = []

    def probe(plan):
        calls.append(plan.total_updates)
        return types.SimpleNamespace(
            learning_rate=5e-5, reason="LR range test",
            to_dict=lambda: {"learning_rate": 5e-5})

    plan = make_plan(environment=_cpu(), num_train_examples=examples,
                     learning_rate_probe=probe,
                     learning_rate_probe_updates=32)
    assert bool(calls) == probed
    if probed:
        assert plan.learning_rate == 5e-5 and plan.lr_range_test
        assert plan.reasons["learning_rate"] == "LR range test"
    else:
        assert plan.total_updates == 15 and not plan.lr_range_test
        recipe = make_plan(environment=_cpu(), num_train_examples=examples)
        assert plan.learning_rate == recipe.learning_rate
        reason = plan.reasons["learning_rate"]
        assert "no LR range test: its 32 updates would be more than 1/2 " \
               "of this run's 15 (it runs for runs of 64 updates or more)" \
               in reason, reason


def test_the_small_data_recipe_raises_the_epochs_to_the_minimum_updates():
    def plan(examples, **kwargs):
        return make_plan(environment=_cpu(), num_train_examples=examples,
                         precision="float32", global_batch_size=32, **kwargs)

    # 148 examples: 5 updates per epoch; 300 updates would take 60 epochs.
    small = plan(148, min_updates=300)
    assert (small.epochs, small.total_updates) == (20, 100)
    assert small.reasons["epochs"].startswith(
        "raised from 3 by --min_updates=300")
    assert "capped at 20 epochs" in small.reasons["epochs"]
    # The warm-up and the decay follow the raised length.
    assert small.warmup_steps == 10
    medium = plan(1600, min_updates=300)
    assert (medium.epochs, medium.total_updates) == (6, 300)
    assert "capped" not in medium.reasons["epochs"]
    # A set large enough, or no minimum: the epochs asked for.
    assert plan(16000, min_updates=300).epochs == 3
    assert plan(148).epochs == 3
    assert plan(148, epochs=5).reasons["epochs"] == "set by user"
    with pytest.raises(PlanError, match="--min_updates=-1 must be"):
        plan(148, min_updates=-1)


def test_planner_docstring_examples_run():
    import doctest

    from painless_tf.plan import planner

    assert doctest.testmod(planner).failed == 0
