"""notebooks/colab_tpu.ipynb: its cells are valid, and every command in it
runs here on the CPU (a fake TPU where one is needed, pip as a dry run).

The notebook is JSON (no nbformat needed); code cells are Python with
IPython's `!shell` and `%magic` lines, which are parsed apart.
"""

import ast
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
import types

import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

import tiny
from apps import finetune
from painless_tf import flags as painless_flags
from painless_tf import hardware
from painless_tf import run

FLAGS = flags.FLAGS
FLAGS.mark_as_parsed()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "colab_tpu.ipynb")
# The programs the notebook may run, each exercised by a test below.
KNOWN_COMMANDS = (
    "git clone",
    "pip install",
    "python -m painless_tf.hardware",
    "python -m apps.finetune",
    "python -m apps.export",
)


def _code_cells():
    with open(NOTEBOOK) as f:
        notebook = json.load(f)
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


def _lines(prefix):
    """The notebook's `!`/`%` lines starting with `prefix`, without the mark."""
    return [
        line.strip()[1:]
        for source in _code_cells()
        for line in source.splitlines()
        if line.strip().startswith(prefix)
    ]


def _command(program):
    """The one `!program ...` line's arguments after the program."""
    (line,) = [c for c in _lines("!") if c.startswith(program)]
    return shlex.split(line)[len(program.split()):]


def _python(source):
    """A code cell as plain Python: IPython's ! and % lines become `pass`."""
    return "\n".join(
        line[: len(line) - len(line.lstrip())] + "pass"
        if line.strip()[:1] in ("!", "%") else line
        for line in source.splitlines()
    )


def _cell(startswith):
    (source,) = [s for s in _code_cells() if s.startswith(startswith)]
    return _python(source)


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _tpu_pin(name):
    (pin,) = [
        p for p in _pyproject()["project"]["optional-dependencies"]["tpu"]
        if p.split("==")[0] == name
    ]
    return pin


def test_cells_are_valid_and_every_command_is_known():
    with open(NOTEBOOK) as f:
        notebook = json.load(f)
    assert notebook["nbformat"] == 4
    assert notebook["metadata"]["accelerator"] == "TPU"
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert "".join(cell["source"]).strip()
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
            ast.parse(_python("".join(cell["source"])))
    commands = _lines("!")
    assert commands
    for command in commands:
        assert command.startswith(KNOWN_COMMANDS), command
    assert _lines("%") == ["cd painless_tf"]  # the folder git clone makes
    # The TPU build reinstalled last is the [tpu] extra's pin.
    (reinstall,) = [c for c in commands if "--force-reinstall" in c]
    assert reinstall.split()[-1] == _tpu_pin("tensorflow-tpu")
    assert commands.index(reinstall) == len(
        [c for c in commands if c.startswith(("git", "pip"))]
    ) - 1


def test_runtime_cell_stops_without_a_tpu_and_names_the_fix(monkeypatch):
    source = _cell("# 1.")
    requires = _pyproject()["project"]["requires-python"]
    assert f">={sys.version_info.major}.{sys.version_info.minor}" in requires
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    with pytest.raises(SystemExit, match="No TPU is attached.*Change runtime type"):
        exec(source, {})
    # Colab's v5e-1: one numbered VFIO group (and the bare vfio node).
    devices = {"/dev/vfio/*": ["/dev/vfio/0", "/dev/vfio/vfio"]}
    monkeypatch.setattr(glob, "glob", lambda pattern: devices.get(pattern, []))
    namespace = {}
    exec(source, namespace)
    assert namespace["vfio"] == ["/dev/vfio/0"] and namespace["accel"] == []


def test_git_clone_and_cd(tmp_path):
    args = _command("git clone")
    assert args[-2] == "{REPO}"
    folder = _lines("%")[0].split()[1]
    assert args[-1] == folder
    # A one-commit repository of this project's files stands in for REPO
    # (this tree need not be a git checkout, e.g. under Bazel).
    names = ("pyproject.toml", "notebooks/colab_tpu.ipynb", "apps/finetune.py")
    source = tmp_path / "source"
    for name in names:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(ROOT, name), source / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=source, check=True)
    subprocess.run([*git, "add", "."], cwd=source, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "files"], cwd=source, check=True)
    subprocess.run(
        ["git", "clone", "-q", *args[:-2], "file://" + str(source), folder],
        cwd=tmp_path, check=True,
    )
    for name in names:
        assert os.path.exists(tmp_path / folder / name), name


@pytest.mark.slow
@pytest.mark.pypi
def test_pip_commands_resolve_from_pypi(tmp_path):
    """Both installs as dry runs: the [tpu] extra with every dependency."""
    installs = [shlex.split(c)[2:] for c in _lines("!pip install")]
    assert len(installs) == 2
    resolved = []
    for i, args in enumerate(installs):
        report = tmp_path / f"report{i}.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", *args, "--dry-run",
             "--ignore-installed", "--report", str(report)],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
        )
        with open(report) as f:
            resolved.append({
                item["metadata"]["name"].lower().replace("_", "-"):
                    item["metadata"]["version"]
                for item in json.load(f)["install"]
            })
    extra, reinstall = resolved
    for pin in _pyproject()["project"]["optional-dependencies"]["tpu"]:
        name, version = pin.split("==")
        assert extra[name] == version, (pin, extra.get(name))
    # Both builds write tensorflow/: they must be the same version.
    assert extra["tensorflow"] == extra["tensorflow-tpu"]
    assert extra["keras"].startswith("3.15.") and extra["keras-hub"].startswith("0.32.")
    assert reinstall == {"tensorflow-tpu": extra["tensorflow-tpu"]}


def _fake_tpu(monkeypatch, replicas):
    """A TPU VM's TensorFlow as far as hardware.main and the strategy see it."""

    class FakeResolver:
        def __init__(self, tpu=None):
            self.tpu = tpu

        def master(self):
            return ""  # what a local TPU's resolver answers

    monkeypatch.setattr(
        tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver
    )
    monkeypatch.setattr(tf.sysconfig, "get_build_info", lambda: {"is_cuda_build": False})
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda r: None)
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", lambda r: None)
    class FakeStrategy:  # a class: the engine's isinstance checks see it
        num_replicas_in_sync = replicas

        def __init__(self, resolver):
            del resolver

    monkeypatch.setattr(tf.distribute, "TPUStrategy", FakeStrategy)


def test_hardware_command_connects_to_a_fake_v5e_and_fails_in_one_line(
    monkeypatch, capsys
):
    args = _command("python -m painless_tf.hardware")
    assert args == ["--tpu=local"]
    # Here, without a TPU, TensorFlow is the plain wheel: one line, exit 2.
    assert hardware.main(args) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1
    assert "plain tensorflow wheel" in err and "pip install -e .[tpu]" in err
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-1")
    _fake_tpu(monkeypatch, replicas=1)
    assert hardware.main(args) == 0
    out, err = capsys.readouterr()
    assert "platform: tpu" in out
    assert "tpu: local (v5litepod-1), 1 device(s) expected" in out
    assert "connected: 1 TPU replica(s)" in out


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory):
    """The notebook's fine-tune command on the tiny model, on the CPU.

    Run from a folder of its own, as the notebook runs from the clone; the
    TPU flag is left out here (this CPU cannot train under TPUStrategy) and
    the whole command is planned against a fake v5e in the test below.
    """
    root = tmp_path_factory.mktemp("notebook")
    preset = tiny.write_preset(root / "preset")
    train = tiny.write_csv(root / "train.csv", tiny.sentiment_rows(64))
    args = _command("python -m apps.finetune")
    parsed = dict(a[2:].split("=", 1) for a in args)
    assert parsed.pop("tpu") == "local"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        # Faster here only: one epoch, no precision probe, no LR range test.
        fast = dict(epochs="1", precision="float32", learning_rate="0.05")
        with flagsaver.as_parsed(
            model=preset, train_data=train, **{**parsed, **fast}
        ):
            finetune.main([])
    finally:
        os.chdir(cwd)
    return root, parsed


def test_finetune_command_plans_one_replica_on_a_fake_v5e(notebook_run, monkeypatch):
    root, parsed = notebook_run
    assert os.path.exists(root / parsed["model_dir"] / "plan.json")
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-1")
    _fake_tpu(monkeypatch, replicas=1)
    environment = hardware.detect_environment(tpu="local", gpu_lister=lambda: [])
    args = _command("python -m apps.finetune")
    with flagsaver.flagsaver():
        FLAGS(["finetune", *args])
        config = painless_flags.run_config(
            model=str(root / "preset"), train_data=str(root / "train.csv"),
            model_dir=str(root / "planned"),
        )
    plan = run.prepare(config, environment=environment).plan
    assert (plan.strategy, plan.num_replicas) == ("tpu", 1)
    assert plan.precision == "mixed_bfloat16" and plan.xla
    assert "16.0 GiB" in plan.reasons["micro_batch_size"]


def test_show_cell_prints_the_plan_and_displays_the_report(
    notebook_run, monkeypatch, capsys
):
    root, _ = notebook_run
    shown = []
    display = types.ModuleType("IPython.display")
    display.HTML = lambda text: ("html", text)
    display.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    monkeypatch.chdir(root)
    exec(_cell("# 5."), {})
    out = capsys.readouterr().out
    assert "strategy: default (" in out  # the CPU run's plan, with its reason
    assert "micro_batch_size: " in out
    ((kind, html),) = shown
    assert kind == "html" and "<html" in html.lower()


@pytest.mark.slow
def test_export_command_on_the_finetune_output(notebook_run):
    root, parsed = notebook_run
    args = _command("python -m apps.export")
    assert f"--model_dir={parsed['model_dir']}" in args
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "apps.export", *args],
        cwd=root, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    exported = os.listdir(root / parsed["model_dir"] / "export")
    assert exported, "nothing exported"
