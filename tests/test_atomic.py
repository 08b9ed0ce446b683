"""Atomic writes leave the old file when a write fails."""

import doctest
import json

import pytest

from painless_tf import atomic


def test_docstring_examples_run():
    assert doctest.testmod(atomic).failed == 0


def test_failed_write_keeps_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    atomic.write_json(path, {"accuracy": 0.5})
    with pytest.raises(ValueError):
        atomic.write_json(path, {"bad": float("nan")}, allow_nan=False)
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_exception_while_writing_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "plan.json"
    atomic.write_text(path, "old")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_text(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
