"""The route of one run: the plan is made once, forward, and is final."""

import pytest

import tiny
from painless_tf import hardware
from painless_tf import plan as plan_lib
from painless_tf import run


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("route")
    preset = tiny.write_preset(tmp_path / "preset")
    train = tiny.write_csv(tmp_path / "train.csv", tiny.sentiment_rows(48))
    long_text = " ".join(["good film"] * 6)
    test = tiny.write_csv(tmp_path / "test.csv", [(long_text, "pos"),
                                                  ("bad", "neg")])
    return run.RunConfig(
        model=str(preset), train_data=train, validation_data=test,
        test_data=test, epochs=2, global_batch_size=8, precision="float32",
        max_sequence_length=16, lr_range_test_steps=4,
        model_dir=str(tmp_path / "run"),
    )


@pytest.fixture(scope="module")
def prepared(config):
    calls = []
    real = plan_lib.make_plan

    def counted(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plan_lib, "make_plan", counted)
        result = run.prepare(config, environment=hardware.Environment())
    return result, len(calls)


def test_prepare_makes_the_plan_once_with_its_probes(prepared):
    prepared, calls = prepared
    assert calls == 1
    plan = prepared.plan
    # The LR range test ran inside make_plan: its rate is the plan's.
    assert plan.lr_range_test["learning_rate"] == plan.learning_rate
    assert plan.reasons["learning_rate"].startswith("LR range test")
    # Buckets and steps come from the training lengths, and the last bucket
    # covers the longest test text (12 words + [CLS] + [SEP]).
    assert plan.bucket_boundaries[-1] >= 14
    assert "added for a validation/test text of 14 tokens" in (
        plan.reasons["bucket_boundaries"])
    assert plan.steps_per_epoch >= 48 // 8


def test_a_resumed_run_keeps_its_measured_decisions(config, prepared):
    environment = hardware.Environment()
    first = prepared[0].plan
    recorded = plan_lib.Plan.from_dict({
        **first.to_dict(), "learning_rate": 7e-5,
        "lr_range_test": {**first.lr_range_test, "learning_rate": 7e-5},
    })
    again = run.prepare(config, environment=environment, recorded=recorded)
    assert again.plan.learning_rate == 7e-5
    assert "kept on resume" in again.plan.reasons["learning_rate"]


def test_every_probe_builds_the_runs_trainer(config, monkeypatch, tmp_path):
    # The precision probe and the LR range test make their updates with the
    # run's optimizer, through the one factory the run uses too.
    import tensorflow as tf

    from painless_tf import trainers

    monkeypatch.setenv("PAINLESS_TF_CACHE", str(tmp_path / "cache"))
    built = []
    real = trainers.make_trainer

    def recorded(model, **kwargs):
        built.append(kwargs)
        return real(model, **kwargs)

    monkeypatch.setattr(trainers, "make_trainer", recorded)
    sgd = run.RunConfig(**{**config.__dict__, "precision": "auto",
                           "optimizer": "sgd", "momentum": 0.5})
    prepared = run.prepare(sgd, environment=hardware.Environment(
        platform="cpu", cpu_count=2, cpu_flags=frozenset({"avx512_bf16"})))
    plan = prepared.plan
    # Measured, whichever way the timings went ("no probe: ..." would
    # mean the probe never ran).
    assert "interleaved timings" in plan.reasons["precision"], (
        plan.reasons["precision"])
    # Both policies timed (a trainer each), then the range test.
    assert len(built) >= 3, built
    assert {b["optimizer"] for b in built} == {"sgd"}
    assert {b["momentum"] for b in built} == {0.5}
    run.build_trainer(prepared, tf.distribute.get_strategy())
    assert built[-1]["optimizer"] == "sgd"
    assert built[-1]["accumulation_steps"] == plan.accumulation_steps
