"""The GPU micro-batch probe, as `run.prepare` uses it (simulated OOM)."""

import tensorflow as tf

import tiny
from painless_tf import hardware
from painless_tf import memory
from painless_tf import run


def test_gpu_plan_searches_the_micro_batch_by_catching_oom(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PAINLESS_TF_CACHE", str(tmp_path / "cache"))
    tried = []

    def train_once(self, micro, precision, xla, length):
        tried.append(micro)
        if micro > 8:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM")

    monkeypatch.setattr(memory.MicroBatchProbe, "_train_once", train_once)
    preset = tiny.write_preset(tmp_path / "preset")
    train = tiny.write_csv(tmp_path / "train.csv", tiny.sentiment_rows(80))
    environment = hardware.Environment(
        platform="gpu", gpus=(hardware.Gpu("NVIDIA A100", (8, 0)),),
        cpu_count=2,
    )
    config = run.RunConfig(model=preset, train_data=train,
                           model_dir=str(tmp_path / "out"))
    plan = run.prepare(config, environment=environment).plan
    assert plan.global_batch_size == 32
    assert plan.micro_batch_size == 8 and plan.accumulation_steps == 4
    assert 32 in tried and 8 in tried  # the whole batch first, then smaller


def test_probe_reports_real_training_on_this_device(tmp_path):
    preset = tiny.write_preset(tmp_path / "preset")
    probe = memory.MicroBatchProbe(preset)
    assert probe(4, precision="float32", xla=False, max_sequence_length=16)
    assert probe.calls[0]["fits"] is True
