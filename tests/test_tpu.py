"""The TPU code path, with a fake resolver and strategy (no TPU here)."""

import os

import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

import tiny
from apps import finetune  # noqa: F401  (defines the flags parsed below)
from painless_tf import batching
from painless_tf import distribution
from painless_tf import hardware
from painless_tf import run
from painless_tf.plan import micro_batch_choice

FLAGS = flags.FLAGS
def test_tpu_strategy_is_built_from_the_resolver(monkeypatch):
    calls = []

    class FakeResolver:
        def __init__(self, tpu=None):
            calls.append(("resolver", tpu))

    monkeypatch.setattr(
        tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver
    )
    monkeypatch.setattr(
        tf.config, "experimental_connect_to_cluster",
        lambda r: calls.append(("connect", type(r).__name__)),
    )
    monkeypatch.setattr(
        tf.tpu.experimental, "initialize_tpu_system",
        lambda r: calls.append(("initialize", type(r).__name__)),
    )
    monkeypatch.setattr(
        tf.distribute, "TPUStrategy",
        lambda r: calls.append(("strategy", type(r).__name__)) or "strategy",
    )
    assert distribution.make_strategy("tpu", tpu="local") == "strategy"
    assert calls == [
        ("resolver", "local"),
        ("connect", "FakeResolver"),
        ("initialize", "FakeResolver"),
        ("strategy", "FakeResolver"),
    ]


def test_plan_for_a_tpu_uses_bfloat16_xla_and_static_buckets(tmp_path):
    preset = tiny.write_preset(tmp_path / "preset")
    train = tiny.write_csv(tmp_path / "train.csv", tiny.sentiment_rows(80))
    environment = hardware.Environment(
        platform="tpu", tpu="local", tpu_cores=8, cpu_count=2
    )
    config = run.RunConfig(
        model=preset, train_data=train, model_dir=str(tmp_path / "out"),
        tpu="local",
    )
    plan = run.prepare(config, environment=environment).plan
    assert plan.strategy == "tpu" and plan.num_replicas == 8
    assert plan.precision == "mixed_bfloat16" and plan.xla
    assert plan.global_batch_size % 8 == 0
    assert plan.bucket_boundaries  # a few static shapes for XLA
    assert len(plan.bucket_boundaries) <= batching.MAX_COMPILED_BUCKETS
    assert "each one more shape for XLA" in plan.reasons["bucket_boundaries"]
    assert plan.fused_update is False  # 8 replicas update separately
    assert not os.path.exists(tmp_path / "out")  # prepare writes nothing


def test_float16_on_tpu_is_refused_at_flag_parsing():
    with flagsaver.flagsaver():
        with pytest.raises(flags.IllegalFlagValueError, match="bfloat16"):
            FLAGS(["finetune", "--tpu=local", "--precision=mixed_float16"])


def _local_tpu(monkeypatch, tmp_path, *, environ=None, devices=(), build="tpu",
               tpu="local"):
    """detect_environment on a fake TPU VM: the real resolver path, faked."""
    monkeypatch.setattr(
        tf.distribute.cluster_resolver, "TPUClusterResolver",
        lambda tpu=None: type("Resolver", (), {"master": lambda self: ""})(),
    )
    monkeypatch.setattr(
        tf.sysconfig, "get_build_info",
        lambda: {"is_cuda_build": build != "tpu"},
    )
    for device in devices:
        path = tmp_path / device
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    return hardware.detect_environment(
        tpu=tpu, environ=environ or {}, gpu_lister=lambda: [],
        proc_root=str(tmp_path),
    )


@pytest.mark.parametrize(
    "environ, devices, tpu",
    [
        # --tpu=local and Cloud TPU's name for one v5e chip.
        ({"TPU_ACCELERATOR_TYPE": "v5litepod-1"}, (), "local"),
        # Nothing named: one numbered VFIO group is one chip.
        ({}, ("dev/vfio/0", "dev/vfio/vfio"), None),
    ],
)
def test_plan_for_one_v5e_chip(monkeypatch, tmp_path, environ, devices, tpu):
    environment = _local_tpu(
        monkeypatch, tmp_path / "machine", environ=environ, devices=devices,
        tpu=tpu,
    )
    assert (environment.platform, environment.tpu) == ("tpu", "local")
    assert environment.tpu_cores == 1
    preset = tiny.write_preset(tmp_path / "preset")
    train = tiny.write_csv(tmp_path / "train.csv", tiny.sentiment_rows(80))
    config = run.RunConfig(
        model=preset, train_data=train, model_dir=str(tmp_path / "out"),
        tpu="local",
    )
    plan = run.prepare(config, environment=environment).plan
    assert plan.strategy == "tpu" and plan.num_replicas == 1
    assert plan.precision == "mixed_bfloat16" and plan.xla
    assert 0 < len(plan.bucket_boundaries) <= batching.MAX_COMPILED_BUCKETS
    assert plan.fused_update is False
    if environ:
        assert plan.reasons["num_replicas"] == "1 TPU device(s) (v5litepod-1)"
        # One v5e chip's 16 GiB of HBM sizes the micro-batch.
        assert "vs half of 16.0 GiB" in plan.reasons["micro_batch_size"]
    else:
        assert plan.reasons["num_replicas"] == "1 TPU device(s)"
    assert not os.path.exists(tmp_path / "out")


def test_device_memory_and_name_per_tpu_generation():
    def env(tpu_type):
        return hardware.Environment(platform="tpu", tpu="local", tpu_type=tpu_type)

    gib = 2**30
    assert micro_batch_choice._device_memory(env("v5litepod-1")) == 16 * gib
    assert micro_batch_choice._device_memory(env("v3-8")) == 16 * gib
    assert micro_batch_choice._device_memory(env("v6e-4")) == 32 * gib
    assert micro_batch_choice._device_memory(env(None)) is None
    assert micro_batch_choice._device_name(env("v5litepod-1")) == "TPU (v5litepod-1, 8 cores)"


def test_the_plain_tensorflow_wheel_cannot_drive_a_local_tpu(monkeypatch, tmp_path):
    import importlib.metadata

    def no_tpu_build(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", no_tpu_build)
    with pytest.raises(ValueError, match=r"--tpu=local: .*plain tensorflow "
                       r"wheel.*pip install -e \.\[tpu\]"):
        _local_tpu(monkeypatch, tmp_path, build="plain")
    # tensorflow-tpu installed first, then overwritten by the plain wheel.
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.20.0")
    with pytest.raises(ValueError, match=r"--force-reinstall tensorflow-tpu==2\.20\.0"):
        _local_tpu(monkeypatch, tmp_path, build="plain")
    # Found from a device node only: a warning, and the CPU.
    environment = _local_tpu(
        monkeypatch, tmp_path, build="plain", devices=("dev/vfio/0",), tpu=None
    )
    assert (environment.platform, environment.tpu) == ("cpu", None)
    # The TPU build passes.
    assert _local_tpu(monkeypatch, tmp_path).platform == "tpu"
