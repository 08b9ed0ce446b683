"""One vocabulary: every --flag a message names exists, and --help shows
the main flags."""

import ast
import glob
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = ("finetune", "evaluate", "predict", "export", "tune", "launch_local",
        "compress")
# Flags of other programs that a message names on purpose.
OTHER_PROGRAMS = {
    # TensorFlow's own cluster flags, which the local launcher refuses.
    "worker_hosts": "painless_tf/launcher.py",
    "task_index": "painless_tf/launcher.py",
    # `python -m painless_tf.hardware`'s own option (the TPU check command).
    "no_connect": "painless_tf/hardware.py",
}
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_]*)(?![\w-])")

_COLLECT = """
import importlib, json, sys
from absl import flags
names = {}
for app in sys.argv[1:]:
    module = importlib.import_module("apps." + app)
    own = [f for m, fs in flags.FLAGS.flags_by_module_dict().items()
           if not m.startswith("absl") for f in fs]
    defined = {f.name for f in own}
    # A boolean flag --x also reads as --nox.
    negated = {"no" + f.name for f in own if f.boolean}
    names[app] = sorted(defined | negated | {"help", "helpfull", "flagfile"})
    for name in defined:
        delattr(flags.FLAGS, name)
print(json.dumps(names))
"""


def defined_flags():
    result = subprocess.run(
        [sys.executable, "-c", _COLLECT, *APPS], cwd=ROOT, check=True,
        capture_output=True, text=True, env=dict(os.environ,
                                                 TF_CPP_MIN_LOG_LEVEL="3"),
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def named_flags():
    """--name -> [file:line] over every string of the library and apps."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "painless_tf", "**", "*.py"),
                                 recursive=True)
                       + glob.glob(os.path.join(ROOT, "apps", "*.py"))):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for match in _FLAG.finditer(node.value):
                    where = f"{os.path.relpath(path, ROOT)}:{node.lineno}"
                    found.setdefault(match.group(1), []).append(where)
    return found


@pytest.fixture(scope="module")
def flags_by_app():
    return defined_flags()


def test_every_flag_a_message_names_exists(flags_by_app):
    known = set().union(*flags_by_app.values())
    named = named_flags()
    assert len(named) > 30  # the scan sees the messages
    unknown = {
        name: places for name, places in named.items()
        if name not in known and not (
            name in OTHER_PROGRAMS
            and all(p.startswith(OTHER_PROGRAMS[name]) for p in places))
    }
    assert not unknown, f"messages name flags that no app defines: {unknown}"


def test_help_shows_the_main_flags():
    result = subprocess.run(
        [sys.executable, "-m", "apps.finetune", "--help"], cwd=ROOT,
        capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    for flag in ("train_data", "model", "model_dir", "precision",
                 "learning_rate", "epochs", "overwrite", "keep_checkpoints"):
        assert re.search(rf"^  --(\[no\])?{flag}: ", result.stdout,
                         re.MULTILINE), flag


@pytest.mark.parametrize("command", ["module", "script"])
def test_the_apps_run_from_any_folder(tmp_path, command):
    if command == "script":
        argv = [os.path.join(os.path.dirname(sys.executable), "painless-predict")]
    else:
        argv = [sys.executable, "-m", "apps.predict"]
    result = subprocess.run(
        [*argv, "--help"], cwd=tmp_path, capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert re.search(r"^  --model_dir: ", result.stdout, re.MULTILINE), (
        result.stderr[-2000:])
