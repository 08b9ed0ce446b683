"""The learning-rate range test: its rules, and a sweep of a tiny model."""

import json
import math
import os

import keras
import numpy as np
import pytest

import tiny
from painless_tf import hardware
from painless_tf import lr_curve
from painless_tf import lr_finder
from painless_tf import pipeline
from painless_tf import plan as plan_lib


def synthetic_curve(num_steps=32, *, noise=0.0, seed=0):
    """A fine-tuning-like loss: flat at tiny rates, falling fastest at
    3e-5, lowest at 3e-4, diverging above it."""
    rates = lr_curve.sweep_rates(1e-6, 1e-3, num_steps)
    x = np.log10(rates)
    losses = 0.7 - 0.4 / (1 + np.exp(-3 * (x + 4.5)))  # steepest at 10**-4.5
    losses += np.where(x > -3.5, 8.0 * (x + 3.5) ** 2, 0.0)  # lowest ~3e-4
    losses += np.random.default_rng(seed).normal(0, noise, num_steps)
    return rates, losses


def probe_like_curve(num_steps=32, *, edge=2e-3, noise=0.0, seed=0):
    """A probe's loss: falls 0.70 -> 0.55 as the rate grows, then jumps
    (x1.6 or more) at the first rate past `edge`, the way the real probe
    curves of MiniLM-L6 on Rotten Tomatoes did within one update."""
    rates = lr_curve.sweep_rates(1e-6, 1e-2, num_steps)
    x = np.log10(rates)
    losses = 0.70 - 0.15 / (1 + np.exp(-3 * (x + 4.0)))
    losses += np.where(rates > edge, 0.4 + 2.0 * (x - np.log10(edge)), 0.0)
    losses += np.random.default_rng(seed).normal(0, noise, num_steps)
    return rates, losses


def test_edge_rule_reads_a_tenth_of_the_first_climb():
    rates, probe = probe_like_curve()
    edge = int(np.argmax(rates > 2e-3))
    result = lr_curve.choose_learning_rate(
        rates, probe, probe_losses=probe, bounds=(1e-6, 1e-2))
    assert result.learning_rate == pytest.approx(rates[edge] / 10)
    assert result.reason.startswith("LR range test, edge/10 rule:")
    assert "probe loss climbed 25% above its lowest" in result.reason
    # The probe is the curve read, unsmoothed; the training losses are
    # kept for the record.
    training = np.full_like(probe, 0.69)
    with_training = lr_curve.choose_learning_rate(
        rates, training, probe_losses=probe, bounds=(1e-6, 1e-2))
    assert with_training.learning_rate == result.learning_rate
    assert with_training.losses == tuple(training)
    assert with_training.smoothed_losses == tuple(probe)
    # Clamped into the recipe range, with the reason.
    clamped = lr_curve.choose_learning_rate(rates, probe, probe_losses=probe)
    assert clamped.learning_rate == 1e-4
    assert "lowered to the recipe's highest 1.0e-04" in clamped.reason


def test_edge_rule_when_the_probe_never_climbs_or_diverges():
    rates = lr_curve.sweep_rates(1e-6, 1e-2, 16)
    falling = np.linspace(0.7, 0.3, 16)
    beyond = lr_curve.choose_learning_rate(
        rates, falling, probe_losses=falling, bounds=(1e-6, 1e-2))
    assert beyond.learning_rate == pytest.approx(rates[-1] / 10)
    assert "the edge lies beyond" in beyond.reason
    # A probe that is not finite at an update marks the edge there.
    broken = np.concatenate([falling[:9], [np.inf] * 7])
    edge = lr_curve.choose_learning_rate(
        rates, falling, probe_losses=broken, bounds=(1e-6, 1e-2))
    assert edge.learning_rate == pytest.approx(rates[9] / 10)
    assert f"probe loss not finite at {rates[9]:.1e}" in edge.reason
    # edge/10 reads the probe: without one it is refused, not guessed.
    with pytest.raises(ValueError, match="probe_losses"):
        lr_curve.choose_learning_rate(rates, falling)
    with pytest.raises(ValueError, match="one value per rate"):
        lr_curve.choose_learning_rate(rates, falling,
                                       probe_losses=falling[:-1])


def test_edge_rule_follows_the_edge_not_the_noise():
    # Injected noise, 200 draws each. The probe's batches are fixed, so its
    # curve moves with the model only (0.01 here); a training loss is that
    # of a new batch each update (0.03: MiniLM-L6 on Rotten Tomatoes).
    rates, clean = probe_like_curve()
    step = rates[1] / rates[0]
    exact = rates[int(np.argmax(rates > 2e-3))] / 10
    edge_ratios, min_ratios = [], []
    for seed in range(200):
        _, probe = probe_like_curve(noise=0.01, seed=seed)
        edge_ratios.append(lr_curve.choose_learning_rate(
            rates, probe, probe_losses=probe,
            bounds=(1e-6, 1e-2)).learning_rate / exact)
        # The training loss before the edge, no probe, the old rule.
        _, noisy = probe_like_curve(noise=0.03, seed=seed)
        min_ratios.append(lr_curve.choose_learning_rate(
            rates[:26], noisy[:26], rule="min/10",
            bounds=(1e-6, 1e-2)).learning_rate / exact)
    within = np.abs(np.log(edge_ratios)) <= np.log(step) + 1e-9
    assert within.mean() >= 0.95, sorted(edge_ratios)
    # min/10 on the noisy training loss wanders over many sweep steps.
    spread = np.log(max(min_ratios) / min(min_ratios)) / np.log(step)
    assert spread >= 4, sorted(min_ratios)


REAL_CURVES = os.path.join(os.path.dirname(__file__), "data",
                           "lr_curves_minilm_rotten_tomatoes.json")


def test_real_curves_give_one_rate_over_seeds_where_min_over_ten_did_not():
    # The default run's range tests on Rotten Tomatoes, seeds 0-2, as
    # plan.json recorded them (see the file's "what").
    with open(REAL_CURVES) as f:
        seeds = json.load(f)["seeds"]
    edge, old = {}, {}
    for seed, record in seeds.items():
        recorded = lr_curve.RangeTestResult.from_dict(record["lr_range_test"])
        rates, losses = recorded.learning_rates, recorded.losses
        again = lr_curve.choose_learning_rate(
            rates, losses, probe_losses=recorded.probe_losses)
        assert again == recorded  # the rule reads the record as it chose
        edge[seed] = again.learning_rate
        # The sweep ended at the edge: its last probe loss is the climb.
        probe = recorded.probe_losses
        assert probe[-1] > 1.25 * min(probe[:-1])
        old[seed] = lr_curve.choose_learning_rate(
            rates, losses, rule="min/10", fallback=3e-5).learning_rate
    assert set(edge.values()) == {1e-4}, edge
    # The training loss's lowest point followed the seed: seed 1's lay 5x
    # lower than the others'.
    assert max(old.values()) / min(old.values()) > 4, old


def test_min_over_ten_rule_reads_a_tenth_of_the_lowest_point():
    rates, losses = synthetic_curve()
    lowest = rates[np.argmin(losses)]
    result = lr_curve.choose_learning_rate(rates, losses, rule="min/10",
                                            smoothing_window=1)
    assert result.learning_rate == pytest.approx(lowest / 10)
    assert 2e-5 <= result.learning_rate <= 4e-5
    assert result.reason.startswith("LR range test, min/10 rule:")
    assert "/ 10" in result.reason


def test_steepest_rule_reads_the_fastest_fall():
    rates, losses = synthetic_curve()
    result = lr_curve.choose_learning_rate(
        rates, losses, rule="steepest", smoothing_window=1
    )
    assert 10**-4.7 <= result.learning_rate <= 10**-4.3  # the curve's 3e-5
    assert "falls fastest" in result.reason


def test_smoothing_keeps_the_choice_on_a_noisy_curve_without_lag():
    rates, clean = synthetic_curve()
    choices = []
    for seed in range(5):
        _, noisy = synthetic_curve(noise=0.03, seed=seed)
        choices.append(lr_curve.choose_learning_rate(
            rates, noisy, rule="min/10").learning_rate)
    exact = lr_curve.choose_learning_rate(rates, clean, rule="min/10",
                                           smoothing_window=1)
    # Within three sweep steps (1.25x each) below the noise-free choice and
    # none above: past the minimum the loss climbs steeply, so the centered
    # window leans toward lower rates, the safe side (a lagging exponential
    # average would lean toward higher ones).
    ratios = np.array(choices) / exact.learning_rate
    assert np.all((ratios >= 1.25**-3 - 1e-9) & (ratios <= 1.0 + 1e-9)), ratios
    # A symmetric bump keeps its center under the centered average.
    bump = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert int(np.argmin(lr_curve.smooth(bump, 5))) == 4


def test_choice_is_clamped_into_the_recipe_range_with_a_reason():
    rates = lr_curve.sweep_rates(1e-6, 1e-2, 16)
    still_falling = np.linspace(0.7, 0.2, 16)
    high = lr_curve.choose_learning_rate(rates, still_falling,
                                          rule="min/10")
    assert high.learning_rate == 1e-4
    assert "still falling at the sweep's end" in high.reason
    assert "lowered to the recipe's highest 1.0e-04" in high.reason
    rising = np.linspace(0.7, 1.2, 16)
    low = lr_curve.choose_learning_rate(rates, rising, rule="min/10")
    assert low.learning_rate == 1e-5
    assert "raised to the recipe's lowest 1.0e-05" in low.reason


def test_a_flat_curve_keeps_the_recipe_rate():
    rates = lr_curve.sweep_rates(1e-6, 1e-3, 16)
    flat = 0.6931 + 0.0003 * np.random.default_rng(0).normal(size=16)
    result = lr_curve.choose_learning_rate(rates, flat, rule="min/10",
                                            fallback=3e-5)
    assert result.learning_rate == 3e-5
    assert "no signal, the recipe's 3.0e-05" in result.reason
    # A real fall is read even with a fallback at hand.
    rates, losses = synthetic_curve()
    read = lr_curve.choose_learning_rate(rates, losses, rule="min/10",
                                          fallback=1e-4)
    assert read.learning_rate < 1e-4 and "no signal" not in read.reason


def test_a_diverged_tail_ends_the_curve():
    rates, losses = synthetic_curve(24)
    losses = np.concatenate([losses[:18], [np.inf] * 6])
    result = lr_curve.choose_learning_rate(rates, losses, rule="min/10",
                                            smoothing_window=3)
    assert len(result.smoothed_losses) == 18
    assert f"diverged at {rates[18]:.1e}" in result.reason
    assert math.isfinite(result.learning_rate)
    early = lr_curve.choose_learning_rate(rates[:3], [0.7, np.nan, np.inf],
                                           rule="min/10")
    assert early.learning_rate == 1e-5 and "diverged" in early.reason
    # plan.json holds the curve: JSON without NaN or Infinity.
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert lr_curve.RangeTestResult.from_dict(json.loads(text)) == result


def test_options_are_checked():
    with pytest.raises(ValueError, match="smoothing_window"):
        lr_finder.RangeTestOptions(smoothing_window=4)
    with pytest.raises(ValueError, match="rule"):
        lr_finder.RangeTestOptions(rule="valley")
    with pytest.raises(ValueError, match="below"):
        lr_finder.RangeTestOptions(min_learning_rate=1e-3,
                                   max_learning_rate=1e-6)
    with pytest.raises(ValueError, match="probe_batches"):
        lr_finder.RangeTestOptions(probe_batches=-1)
    with pytest.raises(ValueError, match="edge_rise"):
        lr_finder.RangeTestOptions(edge_rise=0.0)
    with pytest.raises(ValueError, match="probe_batches >= 1"):
        lr_finder.RangeTestOptions(probe_batches=0)
    assert lr_finder.RangeTestOptions(probe_batches=0,
                                      rule="min/10").probe_batches == 0


def test_the_record_keeps_the_probe_and_reads_older_records():
    rates, probe = probe_like_curve()
    probe[-3:] = np.inf
    result = lr_curve.choose_learning_rate(rates, probe, probe_losses=probe)
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert lr_curve.RangeTestResult.from_dict(json.loads(text)) == result
    # A plan.json written before the probe existed still loads.
    older = result.to_dict()
    del older["probe_losses"]
    assert lr_curve.RangeTestResult.from_dict(older).probe_losses == ()


# === A sweep of a tiny model ===


def tiny_run(num_examples=48):
    rows = tiny.sentiment_rows(num_examples)
    train = pipeline.tokenize(
        [text for text, _ in rows], tiny.tiny_tokenizer(),
        labels=[int(label == "pos") for _, label in rows],
        max_sequence_length=16,
    )
    buckets = (16,)  # one bucket: one trace keeps the tests fast
    plan = plan_lib.make_plan(
        environment=hardware.Environment(),
        num_train_examples=num_examples,
        global_batch_size=8,
        micro_batch_size=4,  # 2 accumulated micro-batches per update
        precision="float32",
        xla=False,
        max_sequence_length=16,
        bucket_boundaries=buckets,
        steps_per_epoch=pipeline.steps_per_epoch(
            train.lengths, global_batch_size=8, buckets=buckets
        ),
    )
    return plan, train


def make_classifier():
    # Dropout on: its seed states must be restored as well as the weights.
    return tiny.tiny_classifier(2, dropout=0.1)


def test_range_test_restores_weights_and_dropout_state():
    plan, train = tiny_run()
    model = make_classifier()
    # Dropout's seed states are variables too, and are restored with the
    # weights: the model then trains as if the test had never run.
    assert any("seed_generator" in v.path for v in model.variables)
    before = [np.array(v.numpy()) for v in model.variables]
    batches = pipeline.make_dataset(
        train, global_batch_size=8, buckets=plan.bucket_boundaries,
        training=True, epochs=2,
    )
    rates, losses, probed = lr_finder.range_test(
        model, batches,
        options=lr_finder.RangeTestOptions(
            num_steps=6, min_learning_rate=1e-4, max_learning_rate=1e-1
        ),
        accumulation_steps=2,
    )
    assert len(rates) == len(losses) == 6
    assert probed == []  # no probe given
    assert rates[0] == pytest.approx(1e-4) and rates[-1] == pytest.approx(1e-1)
    assert all(math.isfinite(x) for x in losses)
    for value, variable in zip(before, model.variables):
        np.testing.assert_array_equal(value, variable.numpy())


def _dense_model_and_batches():
    """20 copies of one batch of 16 and a small dense classifier: any Keras
    model takes the sweep, and this one traces in a fraction of the time of
    a BERT."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    batches = [(x, y, np.ones((16,), "float32"))] * 20
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(2),
    ])
    return batches, model


def test_range_test_stops_when_the_loss_diverges():
    batches, model = _dense_model_and_batches()
    options = lr_finder.RangeTestOptions(
        num_steps=20, min_learning_rate=1e-2, max_learning_rate=1e5
    )
    rates, losses, probed = lr_finder.range_test(
        model, batches, options=options, optimizer="sgd", clip_norm=None
    )
    assert probed == []  # no probe given
    assert len(losses) < 20
    # It stopped at the first update where the rule reads a divergence.
    assert lr_curve.diverged(losses, factor=4.0, window=5)
    assert not lr_curve.diverged(losses[:-1], factor=4.0, window=5)


def test_range_test_ends_where_the_probe_climbs():
    batches, model = _dense_model_and_batches()
    before = [np.array(v.numpy()) for v in model.variables]
    options = lr_finder.RangeTestOptions(
        num_steps=20, min_learning_rate=1e-2, max_learning_rate=1e5)
    rates, losses, probed = lr_finder.range_test(
        model, batches, options=options, optimizer="sgd", clip_norm=None,
        probe=batches[:2])
    assert len(rates) == len(losses) == len(probed) < 20
    # It stopped at the first update whose probe loss climbed 25% above
    # the lowest before it, and not earlier.
    assert probed[-1] > 1.25 * min(probed[:-1]) or not np.isfinite(probed[-1])
    assert all(probed[i] <= 1.25 * min(probed[:i])
               for i in range(1, len(probed) - 1))
    # The weights are restored after the probe's evaluations too.
    for value, variable in zip(before, model.variables):
        np.testing.assert_array_equal(value, variable.numpy())


def test_noisy_batches_do_not_end_the_sweep_a_climb_does():
    # Injected losses: a heavy-tailed regression target gives single
    # batches 5-20x the others (the drug-review-votes sweep stopped after 4
    # updates on one); a loss that climbs 3x per update is a divergence.
    rng = np.random.default_rng(0)
    for _ in range(200):
        noisy = list(rng.uniform(0.5, 1.0, size=24))
        for i in rng.choice(np.arange(1, 24), size=4, replace=False):
            if not any(abs(i - j) < 3 and noisy[j] > 2 for j in range(24)):
                noisy[i] *= rng.uniform(5, 20)
        assert not any(lr_curve.diverged(noisy[:n], factor=4.0, window=5)
                       for n in range(1, 25)), noisy
    climb = [1.0] * 6 + [3.0 ** k for k in range(1, 8)]
    stops = [n for n in range(1, len(climb) + 1)
             if lr_curve.diverged(climb[:n], factor=4.0, window=5)]
    # The median of 5 passes 4x once three losses above it (9, 27, 81)
    # are in the window: window // 2 + 1 updates after the first.
    assert stops[0] == 10, stops


def test_find_learning_rate_is_deterministic_and_draws_the_curve(tmp_path):
    plan, train = tiny_run()
    options = lr_finder.RangeTestOptions(num_steps=8)
    first = lr_finder.find_learning_rate(
        plan, make_classifier=make_classifier, train=train, options=options,
        output_dir=str(tmp_path),
    )
    second = lr_finder.find_learning_rate(
        plan, make_classifier=make_classifier, train=train, options=options
    )
    assert first == second
    assert first.rule == "edge/10"
    # AdamW's sweep: 1e-6 to 1e-2 over 8 updates, or up to the edge.
    assert first.learning_rates[0] == pytest.approx(1e-6)
    expected = lr_curve.sweep_rates(1e-6, 1e-2, 8)
    np.testing.assert_allclose(first.learning_rates,
                               expected[:len(first.learning_rates)],
                               rtol=1e-6)  # float32 schedule
    assert len(first.probe_losses) == len(first.losses) >= 3
    assert first.bounds == (1e-5, 1e-4)
    assert 1e-5 <= first.learning_rate <= 1e-4
    assert all(math.isfinite(x) for x in first.losses)
    with open(tmp_path / lr_curve.PLOT_FILE, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_docstring_examples_run():
    import doctest

    for module in (lr_curve, lr_finder):
        assert doctest.testmod(module).failed == 0, module.__name__
