"""Random kills (SIGKILL and SIGTERM) of a run with the automatic learning
rate: the resumed run must end with the uninterrupted run's weights.

One seed of `bench/kill_resume.py` (which runs many): kills during the LR
range test, during training, at a `faults` event and in the end phase,
then re-runs until the app exits 0 with the final model written.
"""

import json
import os
import signal

import pytest

from bench import kill_resume

# Seed 4's schedule: SIGKILL in the range test, SIGTERM in training,
# SIGKILL before an update's micro-batches, SIGKILL in the end phase.
SEED = 4
ROWS = 60


@pytest.mark.slow
def test_random_kills_resume_to_the_uninterrupted_weights(tmp_path):
    interruptions, _ = kill_resume.schedule(SEED)
    signals = {value for _, value in interruptions}
    assert {signal.SIGKILL, signal.SIGTERM} <= signals
    assert [phase for phase, _ in interruptions][0] == "range_test"
    assert [phase for phase, _ in interruptions][-1] == "end"
    preset, train = kill_resume.prepare(str(tmp_path), ROWS)
    args = kill_resume.finetune_args(preset, train, epochs=2)
    reference = str(tmp_path / "reference")
    assert kill_resume.run_once(args, reference) == 0
    model_dir = str(tmp_path / "run")
    statuses = kill_resume.interrupted_run(args, model_dir, SEED)
    # Killed (or preempted: exit 0, no model yet) more than once.
    assert len(statuses) >= 3, statuses
    assert statuses[-1] == 0
    assert -signal.SIGKILL in statuses
    assert kill_resume.max_difference(model_dir, reference) <= 1e-6
    with open(os.path.join(model_dir, "metrics.json")) as f:
        updates = json.load(f)["optimizer_updates"]
    with open(os.path.join(reference, "plan.json")) as f:
        assert updates == json.load(f)["total_updates"]
    with open(os.path.join(model_dir, "plan.json")) as f:
        assert json.load(f)["lr_range_test"]  # the rate was searched
