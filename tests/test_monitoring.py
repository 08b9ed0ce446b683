"""Tests for painless_tf.flops and painless_tf.monitoring.

Claims:
- FLOPs per token equal a hand count of the tiny BERT's matmuls;
- peaks come from the tables, and the CPU peak is measured once and cached;
- step statistics equal the tokens the pipeline really feeds;
- on a tiny Trainer run, the logged learning rate is the schedule at each
  update, token counts are the pipeline's, MFU is flops x tokens/s / peak,
  the loss scale and skipped updates follow the optimizer under
  mixed_float16, and history.json, TensorBoard and the progress lines hold
  what the monitors measured.
"""

import doctest
import importlib
import io
import json
import math
import os
import pkgutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import tiny
from painless_tf import monitoring as cb
from painless_tf import flops, pipeline
from painless_tf.engine import Trainer
from painless_tf.hardware import Environment, Gpu

GLOBAL_BATCH = 4
EPOCHS = 2
PEAK = 1e9  # FLOP/s, a made-up peak so MFU is checkable


def tiny_data(n=22, seed=0):
    """Texts of 1-10 tiny-vocabulary words, tokenized and unpadded."""
    rng = np.random.default_rng(seed)
    words = tiny.VOCAB[5:]
    texts = [
        " ".join(rng.choice(words, rng.integers(1, 11))) for _ in range(n)
    ]
    labels = rng.integers(0, 3, n).astype(np.int32)
    return pipeline.tokenize(
        texts, tiny.tiny_tokenizer(), max_sequence_length=16, labels=labels
    )


def training_input(tokenized, epochs=EPOCHS):
    buckets = pipeline.choose_buckets(
        tokenized.lengths, max_sequence_length=16, max_buckets=2,
        global_batch_size=GLOBAL_BATCH,
    )
    steps = pipeline.steps_per_epoch(
        tokenized.lengths, global_batch_size=GLOBAL_BATCH, buckets=buckets
    )
    dataset = pipeline.make_dataset(
        tokenized, global_batch_size=GLOBAL_BATCH, buckets=buckets,
        training=True, seed=0, epochs=epochs,
    )
    plans = [
        pipeline.plan_batches(
            tokenized.lengths, global_batch_size=GLOBAL_BATCH, buckets=buckets,
            training=True, seed=0, epoch=e,
        )
        for e in range(epochs)
    ]
    return dataset, steps, buckets, cb.step_stats(plans, tokenized.lengths)


# === FLOPs ===


def test_flops_per_token_matches_a_hand_count():
    classifier = tiny.tiny_classifier(num_classes=3)
    h, layers, f = 8, 2, 16
    head = 2 * h * h + 2 * h * 3  # pooler + 3-way output, once per sequence
    # One length s: projections 8h^2, feed-forward 4hf, attention 4sh.
    s = 16
    expected = 3 * (layers * (8 * h * h + 4 * h * f + 4 * s * h) + head / s)
    assert expected == 9249.0
    assert flops.training_flops_per_token(classifier, s) == expected
    # Lengths 4 and 12: attention sees sum(s^2)/sum(s) = 160/16 = 10 keys
    # per token on average; the head runs twice over 16 tokens.
    expected = 3 * (layers * (8 * h * h + 4 * h * f + 4 * 10 * h) + 2 * head / 16)
    assert expected == 8130.0
    assert flops.training_flops_per_token(classifier, [4, 12]) == expected
    # A Trainer is looked through.
    assert flops.training_flops_per_token(Trainer(classifier), [4, 12]) == expected


def test_flops_per_token_rejects_models_without_transformer_shapes():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="hidden_dim"):
        flops.training_flops_per_token(model, 16)
    with pytest.raises(ValueError, match="sequence_length"):
        flops.training_flops_per_token(tiny.tiny_classifier(), [])


def test_peak_flops_from_tables():
    assert flops.peak_flops("NVIDIA A100-SXM4-40GB", "mixed_bfloat16") == 312e12
    assert flops.peak_flops("NVIDIA H100 80GB HBM3", "mixed_float16") == 989.4e12
    assert flops.peak_flops("NVIDIA H100 PCIe", "mixed_bfloat16") == 756e12
    assert flops.peak_flops("NVIDIA A10G", "mixed_bfloat16") == 125e12
    # No bfloat16 tensor cores: the float32 rate.
    assert flops.peak_flops("Tesla V100-SXM2-16GB", "mixed_bfloat16") == 15.7e12
    assert flops.peak_flops("Tesla T4", "mixed_float16") == 65e12
    # float32 runs as TensorFloat-32 while TensorFlow allows it.
    assert tf.config.experimental.tensor_float_32_execution_enabled()
    assert flops.peak_flops("NVIDIA A100-PCIE-40GB", "float32") == 156e12
    try:
        tf.config.experimental.enable_tensor_float_32_execution(False)
        assert flops.peak_flops("NVIDIA A100-PCIE-40GB", "float32") == 19.5e12
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(True)
    # A v3 chip is two TensorFlow devices; a v4 megacore is one.
    assert flops.peak_flops("v3-8", "float32") == 61.5e12
    assert flops.peak_flops("TPU v4", "mixed_bfloat16") == 275e12

    gpus = Environment(
        platform="gpu", gpus=[Gpu("NVIDIA A100-SXM4-80GB", (8, 0))] * 2,
        num_workers=2, worker_index=1,
    )
    assert flops.peak_flops(gpus, "mixed_bfloat16") == 4 * 312e12
    assert "x 4 GPUs" in flops.peak_flops_source(gpus, "mixed_bfloat16")
    tpu = Environment(platform="tpu", tpu="grpc://10.0.0.2:8470", tpu_cores=8)
    assert flops.peak_flops(
        tpu, "mixed_bfloat16", environ={"TPU_ACCELERATOR_TYPE": "v3-8"}
    ) == 8 * 61.5e12
    assert math.isnan(flops.peak_flops(tpu, "mixed_bfloat16", environ={}))
    with pytest.raises(ValueError, match="precision"):
        flops.peak_flops("Tesla T4", "float64")


def test_cpu_peak_keeps_the_best_measurement_of_each_process(tmp_path,
                                                             monkeypatch):
    monkeypatch.setattr(flops, "_MEASURED", set())
    # A quiet machine (see tests/test_measured.py for a busy one).
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    environ = {"PAINLESS_TF_CACHE": str(tmp_path)}
    env = Environment(cpu_count=2, cpu_model="Test CPU 9000")
    measurements = iter([(2e9, 512), (1e9, 256), (3e9, 1024)])
    monkeypatch.setattr(flops, "_measure_matmul",
                        lambda *args: next(measurements))
    assert flops.peak_flops(env, "float32", environ=environ) == 2e9
    # The same process: the cache, no new measurement.
    assert flops.peak_flops(env, "float32", environ=environ) == 2e9
    # A new process on a busy machine measures less: the best stays.
    flops._MEASURED.clear()
    assert flops.peak_flops(env, "float32", environ=environ) == 2e9
    flops._MEASURED.clear()
    assert flops.peak_flops(env, "float32", environ=environ) == 3e9
    assert "1024x1024" in flops.peak_flops_source(env, "float32",
                                                  environ=environ)


def test_cpu_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(flops, "_MEASURED", set())
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.setattr(flops, "_MEASURE_SECONDS", 0.3)
    environ = {"PAINLESS_TF_CACHE": str(tmp_path)}
    env = Environment(cpu_count=2, cpu_model="Test CPU 9000")
    measured = flops.peak_flops(env, "float32", environ=environ)
    assert 1e8 < measured < 1e14
    cache = json.loads((tmp_path / "peak_flops.json").read_text())
    assert cache["cpu|Test CPU 9000|2 cores|float32"]["flops"] == measured

    def no_measuring(*args):
        raise AssertionError("the cached peak must be reused")

    monkeypatch.setattr(flops, "_measure_matmul", no_measuring)
    assert flops.peak_flops(env, "float32", environ=environ) == measured
    source = flops.peak_flops_source(env, "float32", environ=environ)
    assert source.startswith("measured: best") and "float32" in source
    two_workers = Environment(cpu_count=2, cpu_model="Test CPU 9000",
                              num_workers=2)
    assert flops.peak_flops(two_workers, "float32", environ=environ) == (
        2 * measured
    )


# === Step statistics ===


def test_step_stats_count_what_the_pipeline_feeds():
    tokenized = tiny_data()
    dataset, steps, _, stats = training_input(tokenized)
    assert stats.num_steps == EPOCHS * steps
    examples, tokens, padded = [], [], []
    for x, _, weight in dataset:
        examples.append(int(np.sum(weight.numpy() > 0)))
        real_rows = weight.numpy() > 0
        tokens.append(int(x["padding_mask"].numpy()[real_rows].sum()))
        padded.append(int(np.prod(x["token_ids"].shape)))
    np.testing.assert_array_equal(stats.examples, examples)
    np.testing.assert_array_equal(stats.tokens, tokens)
    np.testing.assert_array_equal(stats.padded_tokens, padded)
    assert stats.tokens.sum() == EPOCHS * tokenized.lengths.sum()
    # A window past the end wraps around.
    assert stats.window(0, 2 * stats.num_steps)[1] == 2 * stats.tokens.sum()


def test_step_stats_reject_mismatched_lengths():
    plan = pipeline.plan_batches([3, 5, 9], global_batch_size=2,
                                 buckets=(8, 16), training=False)
    with pytest.raises(ValueError, match="example 2"):
        cb.step_stats(plan, [3, 5])


# === A tiny Trainer run ===


def run_tiny(callbacks, *, tokenized=None, precision="float32", optimizer=None,
             validation=True):
    tokenized = tokenized or tiny_data()
    dataset, steps, buckets, stats = training_input(tokenized)
    validation_data = None
    if validation:
        validation_data = pipeline.make_dataset(
            tiny_data(8, seed=1), global_batch_size=GLOBAL_BATCH,
            buckets=(16,), training=False,
        )
    keras.mixed_precision.set_global_policy(precision)
    trainer = Trainer(tiny.tiny_classifier(), accumulation_steps=2)
    trainer.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.1),
        weighted_metrics=["sparse_categorical_accuracy"],
    )
    history = trainer.fit(
        dataset, epochs=EPOCHS, steps_per_epoch=steps,
        validation_data=validation_data, callbacks=callbacks, verbose=0,
    )
    return trainer, history, steps, stats


def test_monitors_and_sinks_on_a_tiny_trainer_run(tmp_path):
    tokenized = tiny_data()
    _, steps, _, stats = training_input(tokenized)
    every = {"log_every_steps": 2}
    schedule = keras.optimizers.schedules.PolynomialDecay(0.1, EPOCHS * steps, 0.0)
    flops_per_token = 1000.0
    throughput = cb.Throughput(step_stats=stats, **every)
    mfu = cb.MFU(flops_per_token=flops_per_token, peak_flops=PEAK,
                 step_stats=stats, **every)
    lr = cb.LearningRateMonitor(**every)
    scale = cb.LossScaleMonitor(**every)
    monitors = [throughput, mfu, lr, scale]
    out = io.StringIO()
    sinks = [
        cb.TensorBoardLogger(tmp_path / "tensorboard", monitors=monitors, **every),
        cb.HistoryWriter(tmp_path / "history.json", monitors=monitors, **every),
        cb.ProgressLogger(monitors=monitors, stream=out, **every),
    ]
    trainer, history, steps, _ = run_tiny(
        monitors + sinks, tokenized=tokenized,
        optimizer=keras.optimizers.SGD(schedule),
    )
    total = EPOCHS * steps
    # Intervals close every 2 steps and at each epoch's end.
    closes = sorted(
        {s for s in range(2, total + 1, 2)} | {steps * (e + 1) for e in range(EPOCHS)}
    )
    assert [r["step"] for r in throughput.records] == closes

    # The learning rate is the schedule at optimizer.iterations, one update
    # per step.
    for record in lr.records:
        assert record["iterations"] == record["step"]
        np.testing.assert_allclose(
            record["learning_rate"], float(schedule(record["iterations"])),
            rtol=1e-6,
        )

    # Token and example counts are the pipeline's, rates are positive.
    assert sum(r["tokens"] for r in throughput.records) == stats.tokens[:total].sum()
    assert sum(r["examples"] for r in throughput.records) == (
        EPOCHS * tokenized.num_examples
    )
    assert sum(r["padded_tokens"] for r in throughput.records) == (
        stats.padded_tokens[:total].sum()
    )
    # Rates leave out the first (compiling) step and each epoch's last one.
    summary = throughput.summary()
    assert summary["timed_steps"] == total - 1 - EPOCHS
    start = 0
    for record in throughput.records:
        untimed = set(range(start, record["step"])) <= {0, steps - 1, total - 1}
        assert (record["tokens_per_sec"] is None) == untimed, record
        if not untimed:
            assert record["tokens_per_sec"] > 0 and record["examples_per_sec"] > 0
        start = record["step"]
    assert summary["tokens_per_sec"] > 0
    assert summary["padding_fraction"] == pytest.approx(
        1 - stats.tokens[:total].sum() / stats.padded_tokens[:total].sum()
    )
    assert summary["first_step_seconds"] > 0

    # MFU = flops per token x real tokens/s / peak, interval by interval.
    for t, m in zip(throughput.records, mfu.records):
        if t["tokens_per_sec"] is None:
            assert m["mfu"] is None
        else:
            assert m["mfu"] == pytest.approx(
                flops_per_token * t["tokens_per_sec"] / PEAK, rel=1e-9
            )
    assert mfu.summary()["mfu"] == pytest.approx(
        flops_per_token * summary["tokens_per_sec"] / PEAK, rel=1e-9
    )
    # float32: no loss scaling, nothing skipped.
    assert all(r["loss_scale"] is None for r in scale.records)
    assert scale.summary()["skipped_updates"] == 0

    # Epoch values reach Keras' History too.
    assert len(history.history["examples_per_sec"]) == EPOCHS
    assert history.history["learning_rate"][-1] == pytest.approx(0.0, abs=1e-9)

    # history.json holds the same records and epochs.
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["format"] == 1 and saved["accumulation_steps"] == 2
    assert [r["step"] for r in saved["train"]] == closes
    assert [r["learning_rate"] for r in saved["train"]] == [
        r["learning_rate"] for r in lr.records
    ]
    assert all(r["loss"] > 0 for r in saved["train"])
    assert [e["epoch"] for e in saved["epochs"]] == list(range(EPOCHS))
    for e, epoch in enumerate(saved["epochs"]):
        assert epoch["loss"] == pytest.approx(history.history["loss"][e])
        assert epoch["val_loss"] == pytest.approx(history.history["val_loss"][e])
        assert epoch["validation_seconds"] > 0 and epoch["train_seconds"] > 0
    assert saved["summary"] == cb.summarize(monitors)
    assert saved["summary"]["tokens_per_sec"] == pytest.approx(
        summary["tokens_per_sec"]
    )
    assert saved["wall_seconds"] > 0

    # TensorBoard: interval scalars and epoch scalars for train/validation.
    tags = {}
    for run in ("train", "validation"):
        tags[run] = set()
        for path in tf.io.gfile.glob(str(tmp_path / "tensorboard" / run / "*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    assert value.metadata.plugin_data.plugin_name == "scalars"
                    tags[run].add(value.tag)
    assert {"loss", "sparse_categorical_accuracy", "examples_per_sec",
            "tokens_per_sec", "padding_fraction", "mfu", "learning_rate",
            "skipped_updates", "epoch_loss"} <= tags["train"]
    assert {"epoch_loss", "epoch_sparse_categorical_accuracy"} == tags["validation"]

    # One line per interval, one per epoch, a header and a footer.
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 + len(closes) + EPOCHS + 1
    assert lines[0] == (
        f"training: {EPOCHS} epochs x {steps} steps (one step = one "
        "optimizer update of 2 micro-batches per replica)"
    )
    assert lines[2].startswith(f"epoch 1/{EPOCHS} step 4/{steps}  loss ")
    for part in (" tok/s ", " ex/s ", "  pad ", "  MFU ", "  lr ", "  ETA "):
        assert part in lines[2], part
    assert lines[-2].startswith(f"epoch {EPOCHS}/{EPOCHS} done in ")
    assert "val_loss" in lines[-2] and "val_acc" in lines[-2]


def test_loss_scale_and_skipped_updates_under_mixed_float16():
    # A scale of 2^24 overflows float16 gradients: the first updates are
    # skipped, each halving the scale, until the gradients are finite.
    initial = 2.0**24
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.1), initial_scale=initial
    )
    scale = cb.LossScaleMonitor(log_every_steps=1)
    lr = cb.LearningRateMonitor(log_every_steps=1)
    trainer, _, steps, _ = run_tiny(
        [scale, lr], precision="mixed_float16", optimizer=optimizer,
        validation=False,
    )
    total = EPOCHS * steps
    skipped = [r["skipped_updates"] for r in scale.records]
    assert sum(skipped) > 0
    assert sum(skipped) == total - int(trainer.optimizer.iterations.numpy())
    assert scale.summary()["skipped_updates"] == sum(skipped)
    # Each skipped update halves the scale (growth needs 2000 good steps).
    expected = initial
    for record in scale.records:
        expected /= 2 ** record["skipped_updates"]
        assert record["loss_scale"] == expected
    assert scale.records[-1]["loss_scale"] == float(
        trainer.optimizer.dynamic_scale.numpy()
    )
    # optimizer.iterations counts only the applied updates.
    applied = np.cumsum([1 - s for s in skipped])
    assert [r["iterations"] for r in lr.records] == applied.tolist()


def test_interval_loss_is_the_mean_over_its_steps_under_two_replicas(tmp_path):
    x, y, w = tiny.token_batch(16)
    strategy = tiny.mirrored()
    with strategy.scope():
        trainer = Trainer(tiny.tiny_classifier())
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    writer = cb.HistoryWriter(tmp_path / "history.json", log_every_steps=2)
    history = trainer.fit(tiny.dataset(x, y, w, 4), epochs=1, verbose=0,
                          callbacks=[writer])
    # With a zero learning rate every step sees the same weights, so the
    # weighted mean of two intervals' losses is the epoch loss.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True).call(
        y, trainer.model(x)
    ).numpy()
    records = json.loads((tmp_path / "history.json").read_text())["train"]
    assert [r["step"] for r in records] == [2, 4]
    for record, rows in zip(records, (slice(0, 8), slice(8, 16))):
        expected = (loss[rows] * w[rows]).sum() / w[rows].sum()
        assert record["loss"] == pytest.approx(expected, rel=1e-5)
    assert history.history["loss"][0] == pytest.approx(
        (loss * w).sum() / w.sum(), rel=1e-5
    )


def test_one_history_over_one_fit_per_epoch_and_a_resumed_run(tmp_path):
    # The way a checkpointing loop trains: fit once per epoch, with the
    # statistics of each fit's batches, then resume in a new "process" at
    # step 6 (epoch 2, batch 0) and redo the rest.
    tokenized = tiny_data()
    dataset, steps, buckets, _ = training_input(tokenized, epochs=1)

    def epoch_stats(epoch, batches):
        plan = pipeline.plan_batches(
            tokenized.lengths, global_batch_size=GLOBAL_BATCH,
            buckets=buckets, training=True, seed=0, epoch=epoch,
        )
        return cb.step_stats(plan, tokenized.lengths, batches=batches)

    out = io.StringIO()

    def run(epochs, initial_step=0, append=False):
        every = {"log_every_steps": 3, "initial_step": initial_step}
        throughput = cb.Throughput(**every)
        mfu = cb.MFU(flops_per_token=100.0, peak_flops=PEAK, **every)
        writer = cb.HistoryWriter(
            tmp_path / "history.json", monitors=[throughput],
            total_epochs=3, append=append, **every,
        )
        progress = cb.ProgressLogger(monitors=[throughput], total_epochs=3,
                                     stream=out, **every)
        trainer = Trainer(tiny.tiny_classifier())
        trainer.compile(optimizer="sgd")
        for epoch in epochs:
            cb.set_step_stats([throughput, mfu, writer],
                              epoch_stats(epoch, range(steps)))
            trainer.fit(
                pipeline.make_dataset(
                    tokenized, global_batch_size=GLOBAL_BATCH,
                    buckets=buckets, training=True, seed=0, epoch=epoch),
                initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps,
                callbacks=[throughput, mfu, writer, progress], verbose=0,
            )
        return throughput, mfu

    throughput, mfu = run([0, 1, 2])
    # MFU got its token counts from set_step_stats alone.
    assert mfu.summary()["mfu"] == pytest.approx(
        100.0 * throughput.summary()["tokens_per_sec"] / PEAK
    )
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"training: 3 epochs x {steps} steps")
    assert [line[:13] for line in lines if " done in " in line] == [
        "epoch 1/3 don", "epoch 2/3 don", "epoch 3/3 don", "training: don"
    ]
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["epochs_planned"] == 3
    assert [e["epoch"] for e in history["epochs"]] == [0, 1, 2]
    assert [e["step"] for e in history["epochs"]] == [steps, 2 * steps, 3 * steps]
    assert history["train"][-1]["step"] == 3 * steps
    # Token counts follow each epoch's own batches.
    assert sum(r["tokens"] for r in throughput.records) == (
        3 * tokenized.lengths.sum()
    )

    resumed, _ = run([1, 2], initial_step=steps, append=True)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1, 2]
    steps_logged = [r["step"] for r in history["train"]]
    assert steps_logged == sorted(steps_logged) and steps_logged[-1] == 3 * steps
    assert resumed.records[0]["step"] > steps
    assert history["initial_step"] == steps


def test_monitors_work_alone_with_a_plain_keras_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    throughput = cb.Throughput(examples_per_step=4, log_every_steps=3)
    history = model.fit(
        np.ones((20, 2)), np.ones((20,)), batch_size=4, epochs=2, verbose=0,
        validation_data=(np.ones((4, 2)), np.ones((4,))),
        callbacks=[throughput],
    )
    # 5 steps per epoch: closes at 3, 5 (epoch end), 6, 9, 10 (epoch end).
    assert [r["step"] for r in throughput.records] == [3, 5, 6, 9, 10]
    assert sum(r["examples"] for r in throughput.records) == 40
    assert all(r["tokens_per_sec"] is None for r in throughput.records)
    assert len(history.history["examples_per_sec"]) == 2
    assert "tokens_per_sec" not in history.history


def test_no_callback_blocks_asynchronous_batch_end_dispatch(tmp_path):
    stats = cb.StepStats(examples=[4], tokens=[30], padded_tokens=[64])
    callbacks = cb.default_callbacks(
        model_dir=str(tmp_path), step_stats=stats, flops_per_token=10.0,
        peak_flops=1e12,
    )
    assert [type(c).__name__ for c in callbacks] == [
        "Throughput", "MFU", "LearningRateMonitor", "LossScaleMonitor",
        "TensorBoardLogger", "HistoryWriter", "ProgressLogger",
    ]
    base = keras.callbacks.Callback
    for callback in callbacks:
        for hook in ("on_train_batch_end", "on_test_batch_end", "on_batch_end"):
            assert getattr(type(callback), hook) is getattr(base, hook), hook
    # The progress logger stands in for Keras' own bar.
    assert isinstance(callbacks[-1], keras.callbacks.ProgbarLogger)


def test_progress_bar_on_a_terminal():
    out = io.StringIO()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((16, 2)), np.ones((16,)), batch_size=4, epochs=1,
              callbacks=[cb.ProgressLogger(log_every_steps=2, stream=out,
                                           is_terminal=True)])
    text = out.getvalue()
    assert "\r" in text and "[" in text and "ETA" in text
    assert "epoch 1/1 done in" in text


def test_errors_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match="log_every_steps=0"):
        cb.Throughput(log_every_steps=0)
    with pytest.raises(ValueError, match="flops_per_token"):
        cb.MFU(flops_per_token=0, peak_flops=1.0)
    with pytest.raises(ValueError, match="StepStats"):
        cb.set_step_stats([], np.ones(3))
    with pytest.raises(ValueError, match="same log_every_steps"):
        cb.HistoryWriter("h.json", monitors=[cb.Throughput(log_every_steps=3)],
                         log_every_steps=2)


def test_docstring_examples_run():
    modules = [flops] + [
        importlib.import_module(f"painless_tf.monitoring.{info.name}")
        for info in pkgutil.iter_modules(cb.__path__)
    ]
    # The modules that hold no public symbol have no examples.
    without_examples = {"callback", "interval", "records", "sinks"}
    for module in modules:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        if module.__name__.rsplit(".", 1)[-1] not in without_examples:
            assert result.attempted > 0, module.__name__
