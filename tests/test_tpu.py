"""The TPU code path, with a fake resolver and strategy (no TPU here)."""

import json
import os
import shlex

import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

import tiny
from apps import finetune  # noqa: F401  (defines the flags parsed below)
from painless_tf import distribution
from painless_tf import hardware
from painless_tf import run

FLAGS = flags.FLAGS
NOTEBOOK = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "notebooks", "colab_tpu.ipynb",
)


def notebook_commands(module):
    with open(NOTEBOOK) as f:
        notebook = json.load(f)
    assert notebook["nbformat"] == 4
    assert notebook["metadata"]["accelerator"] == "TPU"
    commands = []
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        source = "".join(cell["source"])
        assert source.strip()
        for line in source.splitlines():
            if line.startswith(f"!python -m {module}"):
                commands.append(shlex.split(line[1:])[3:])
    return commands


def test_notebook_finetune_command_parses_with_the_apps_flags():
    (args,) = notebook_commands("apps.finetune")
    with flagsaver.flagsaver():
        FLAGS(["finetune", *args])
        assert FLAGS.tpu == "local"
        assert FLAGS.model_dir == "runs/colab_tpu"
        assert FLAGS.precision == "auto"  # the plan picks bfloat16


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
    assert len(plan.bucket_boundaries) <= run.MAX_BUCKETS
    assert "each one more shape for XLA" in plan.reasons["bucket_boundaries"]
    assert plan.fused_update is False  # 8 replicas update separately
    assert not os.path.exists(tmp_path / "out")  # prepare writes nothing


def test_float16_on_tpu_is_refused_at_flag_parsing():
    with flagsaver.flagsaver():
        with pytest.raises(flags.IllegalFlagValueError, match="bfloat16"):
            FLAGS(["finetune", "--tpu=local", "--precision=mixed_float16"])
