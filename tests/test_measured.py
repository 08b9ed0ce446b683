"""Measured decisions on a busy machine: the precision probe and the peak.

Timings and load averages are injected: a probe with seeded jitter, and a
fake `os.getloadavg`. Nothing here depends on the machine's own speed or
load.
"""

import json
import os
import random

import pytest

from painless_tf.hardware import Environment
from painless_tf.plan import machine_load
from painless_tf.plan import make_plan
from painless_tf.plan import precision_choice

QUIET, BUSY = 0.5, 5.0  # 1-minute load averages on a 2-core machine
CORES = 2


def _cpu(flags=()):
    return Environment(
        platform="cpu",
        cpu_model="Fake EPYC",
        cpu_flags=frozenset(flags),
        cpu_count=CORES,
        memory_bytes=64 * 2**30,
    )


class _JitterProbe:
    """Seconds per update: a base per policy, slowed at random by load.

    Load only ever slows an update, so each timing is `base x (1 + u)` with
    `u` uniform in [0, slowdown).
    """

    def __init__(self, slowdown, seed, **base):
        self.base = base
        self.slowdown = slowdown
        self.random = random.Random(seed)
        self.calls = []

    def __call__(self, policy):
        self.calls.append(policy)
        return self.base[policy] * (1 + self.random.uniform(0, self.slowdown))


@pytest.fixture
def load(monkeypatch):
    """Sets the load averages `os.getloadavg` reports, in order."""
    values = []

    def set_loads(*loads):
        values[:] = list(loads)

    def getloadavg():
        value = values.pop(0) if len(values) > 1 else values[0]
        return (value, value, value)

    monkeypatch.setattr(os, "getloadavg", getloadavg)
    return set_loads


# A CPU with bfloat16 conversions but not avx512_bf16: the probe runs, and
# the CPU-feature rule says float32.
NE_CONVERT = ("avx_ne_convert",)


def _plan(probe, tmp_path, flags=NE_CONVERT, key="minilm"):
    return make_plan(
        environment=_cpu(flags),
        num_train_examples=100,
        precision_probe=probe,
        probe_key=key,
        cache_dir=str(tmp_path),
    )


def _cached(tmp_path):
    path = tmp_path / "probes.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text()).get("precision", {})


@pytest.mark.parametrize(
    "flags, base, answer",
    [
        # bfloat16 conversions only: 1.2x slower. float32 either way.
        (NE_CONVERT, dict(float32=1.0, mixed_bfloat16=1.2), "float32"),
        # avx512_bf16: bfloat16 1.25x faster. bfloat16 either way.
        (("avx512_bf16",), dict(float32=1.25, mixed_bfloat16=1.0),
         "mixed_bfloat16"),
        # bfloat16 3% faster without avx512_bf16: noise, the rule.
        (NE_CONVERT, dict(float32=1.0, mixed_bfloat16=0.97), "float32"),
    ],
)
def test_busy_and_quiet_timings_give_the_same_precision(
    tmp_path, load, flags, base, answer
):
    for seed in range(10):
        load(QUIET)
        quiet = _plan(_JitterProbe(0.02, seed, **base), tmp_path / f"q{seed}",
                      flags)
        load(BUSY)
        busy = _plan(_JitterProbe(0.8, seed, **base), tmp_path / f"b{seed}",
                     flags)
        assert (quiet.precision, busy.precision) == (answer, answer), (
            seed, quiet.reasons["precision"], busy.reasons["precision"])
        for plan in (quiet, busy):
            reason = plan.reasons["precision"]
            measured = reason.startswith("measured")
            # Either the medians decided, or the rule did and says why.
            assert measured or (
                reason.startswith("CPU-feature rule")
                and "within the noise" in reason
            ), reason
            assert f"median of {precision_choice._PRECISION_ROUNDS} interleaved" in reason
        assert "load average 0.50 -> 0.50 on 2 cores" in quiet.reasons["precision"]
        assert "load average 5.00 -> 5.00 on 2 cores" in busy.reasons["precision"]


def test_a_small_gap_is_left_to_the_cpu_feature_rule(tmp_path, load):
    load(QUIET)
    # Steady timings, bfloat16 5% faster: under the 10% margin.
    probe = _JitterProbe(0.0, 0, float32=1.05, mixed_bfloat16=1.0)
    plan = _plan(probe, tmp_path)
    assert plan.precision == "float32"
    assert plan.reasons["precision"].startswith(
        "CPU-feature rule (no avx512_bf16/amx_bf16): the probe's "
        "mixed_bfloat16 was 1.05x faster than float32, within the noise"
    )
    # The rule's choice ahead, but by less than the margin: the rule, saying so.
    probe = _JitterProbe(0.0, 0, float32=1.0, mixed_bfloat16=1.05)
    plan = _plan(probe, tmp_path / "ahead")
    assert (plan.precision, plan.reasons["precision"].split(";")[0]) == (
        "float32",
        "CPU-feature rule (no avx512_bf16/amx_bf16), and the probe agrees "
        "within the noise (mixed_bfloat16 1.05x slower)",
    )
    # 30% faster, but one slow timing overlaps float32's: still noise.
    timings = iter([1.3, 1.0, 1.3, 1.0, 1.3, 1.0, 1.3, 1.0, 1.3, 1.4])
    plan = _plan(lambda policy: next(timings), tmp_path / "overlap")
    assert plan.precision == "float32"
    assert "1.30x faster than float32, within the noise" in plan.reasons["precision"]


def test_a_busy_result_is_not_cached_and_is_measured_again(tmp_path, load):
    base = dict(float32=1.0, mixed_bfloat16=1.3)
    load(0.4, 3.0)  # quiet at the start, busy by the end
    first = _JitterProbe(0.1, 0, **base)
    plan = _plan(first, tmp_path)
    assert plan.precision == "float32"
    assert "load average 0.40 -> 3.00 on 2 cores" in plan.reasons["precision"]
    assert "(busy: not cached)" in plan.reasons["precision"]
    assert _cached(tmp_path) == {}
    calls = len(first.calls)
    assert calls == 2 * precision_choice._PRECISION_ROUNDS

    # The same probe in the same process (a plan decided twice) keeps it.
    again = _plan(first, tmp_path)
    assert (again.precision, len(first.calls)) == ("float32", calls)

    # A later run measures again, and a quiet result is cached with its load.
    load(QUIET)
    later = _JitterProbe(0.01, 1, **base)
    plan = _plan(later, tmp_path)
    assert len(later.calls) == calls
    (entry,) = _cached(tmp_path).values()
    assert entry["load_average"] == [QUIET, QUIET] and entry["cores"] == CORES
    assert entry["busy"] is False and entry["measured"]
    assert len(entry["timings"]["float32"]) == precision_choice._PRECISION_ROUNDS

    cached = _JitterProbe(0.0, 0)  # any call would raise KeyError
    plan = _plan(cached, tmp_path)
    assert cached.calls == [] and plan.precision == "float32"
    reason = plan.reasons["precision"]
    assert "load average 0.50 -> 0.50 on 2 cores" in reason
    assert f"(cached probe of {entry['measured']})" in reason


def test_a_cache_entry_without_its_load_is_measured_again(tmp_path, load):
    load(QUIET)
    _plan(_JitterProbe(0.0, 0, float32=1.0, mixed_bfloat16=2.0), tmp_path)
    (key,) = _cached(tmp_path)
    # What earlier versions wrote: seconds per policy, no conditions.
    (tmp_path / "probes.json").write_text(json.dumps(
        {"precision": {key: {"float32": 2.0, "mixed_bfloat16": 1.0}}}))
    probe = _JitterProbe(0.0, 0, float32=1.0, mixed_bfloat16=2.0)
    plan = _plan(probe, tmp_path)
    assert plan.precision == "float32" and probe.calls
    assert "load_average" in _cached(tmp_path)[key]


def test_the_cpu_probe_builds_each_policy_once_and_times_it_per_call():
    import keras
    import tiny

    from painless_tf import precision

    built = []

    def model_fn():
        built.append(keras.mixed_precision.global_policy().name)
        return tiny.tiny_classifier(num_classes=2)

    x, y, _ = tiny.token_batch(4, num_classes=2)
    probe = precision.cpu_precision_probe(model_fn, (x, y), steps=1,
                                          warmup_steps=1)
    seconds = [probe(p) for p in ("float32", "mixed_bfloat16") * 2]
    assert all(s > 0 for s in seconds), seconds
    # Built once per policy, under that policy; later calls only time.
    assert built == ["float32", "mixed_bfloat16"]
    assert keras.mixed_precision.global_policy().name == "float32"


# === Peak FLOP/s and MFU ===


@pytest.fixture
def peak_cache(tmp_path, monkeypatch):
    """A fresh peak cache and process memory; `measure(flops)` queues what
    the next matmul measurement returns."""
    from painless_tf import flops

    monkeypatch.setattr(flops, "_MEASURED", set())
    monkeypatch.setattr(flops, "_UNDER_LOAD", {})
    queued = []
    monkeypatch.setattr(flops, "_measure_matmul",
                        lambda *args: (queued.pop(0), 1024))
    return tmp_path, queued


def _peak(tmp_path, **kwargs):
    from painless_tf import flops

    env = Environment(cpu_count=CORES, cpu_model="Fake EPYC")
    environ = {"PAINLESS_TF_CACHE": str(tmp_path)}
    return (flops.peak_flops(env, "float32", environ=environ, **kwargs),
            flops.peak_flops_source(env, "float32", environ=environ, **kwargs))


def _new_process():
    from painless_tf import flops

    flops._MEASURED.clear()


def test_the_peak_is_cached_and_used_only_from_a_quiet_machine(
    peak_cache, load
):
    import math

    tmp_path, queued = peak_cache
    cache_file = tmp_path / "peak_flops.json"
    # Busy, nothing cached: no peak, so no MFU, and the source says why.
    load(BUSY)
    queued.append(105e9)
    peak, source = _peak(tmp_path)
    assert math.isnan(peak)
    assert source.startswith("MFU n/a: peak measured under load")
    assert "105.0 GFLOP/s" in source and "load average 5.00 -> 5.00 on 2 cores" in source
    assert not cache_file.exists()
    # A benchmark, which records the load itself, may still have the number.
    peak, source = _peak(tmp_path, under_load=True)
    assert peak == 105e9 and source.startswith("measured under load")
    assert not cache_file.exists()

    # A later process on a quiet machine measures, and caches with the load.
    _new_process()
    load(QUIET)
    queued.append(150e9)
    peak, source = _peak(tmp_path)
    assert peak == 150e9
    assert "load average 0.50 -> 0.50 on 2 cores" in source
    (entry,) = json.loads(cache_file.read_text()).values()
    assert entry["load_average"] == [QUIET, QUIET] and entry["cores"] == CORES

    # A busy process measures less and keeps the quiet peak: MFU stays true.
    _new_process()
    load(0.5, 4.0)
    queued.append(90e9)
    assert _peak(tmp_path)[0] == 150e9
    assert list(json.loads(cache_file.read_text()).values()) == [entry]

    # A peak cached without its load (earlier versions) is not trusted.
    (key,) = json.loads(cache_file.read_text())
    cache_file.write_text(json.dumps(
        {key: {"flops": 105e9, "matmul_size": 1024, "measured": "then"}}))
    _new_process()
    load(BUSY)
    queued.append(100e9)
    assert math.isnan(_peak(tmp_path)[0])


def test_mfu_without_a_quiet_peak_says_n_a_in_the_progress_line():
    import io

    import keras
    import numpy as np

    from painless_tf import monitoring as cb

    out = io.StringIO()
    mfu = cb.MFU(flops_per_token=12.0, peak_flops=float("nan"),
                 tokens_per_step=4, log_every_steps=2)
    progress = cb.ProgressLogger(monitors=[mfu], total_epochs=1, stream=out,
                                 log_every_steps=2)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((16, 2)), np.ones((16,)), batch_size=4, epochs=1,
              verbose=0, callbacks=[mfu, progress])
    lines = [line for line in out.getvalue().splitlines()
             if line.startswith("epoch 1/1 step")]
    assert lines and all("MFU n/a" in line for line in lines), out.getvalue()
    assert mfu.summary()["mfu"] is None


def test_busy_means_other_work_on_more_than_half_the_cores():
    # This run alone: its own threads make the load, nobody else's.
    assert not machine_load._busy([2.6, 2.4], own=2.0, cores=CORES)
    # Another job on one core of two, beside this run.
    assert machine_load._busy([2.0, 3.3], own=1.3, cores=CORES)
    assert machine_load._busy([BUSY, BUSY], own=0.0, cores=CORES)
    assert not machine_load._busy([None, None], own=0.0, cores=CORES)
    assert 0 <= machine_load._own_load()
