"""What the peer of `--suite=peer` needs: its interpreter and its rows.

Hugging Face `Trainer` runs on PyTorch, which is no dependency of
painless_tf: `bench/hf_peer.py` runs under an interpreter of its own,

- `--peer_python=PATH`: an existing interpreter with torch, transformers
  and accelerate; or
- by default `<cache dir>/bench-peer-venv` (see `painless_tf.cache`),
  created on first use with `python3.11 -m venv` and
  `pip install torch==2.13.0+cpu transformers accelerate`. The `+cpu` pin
  keeps pip from resolving the CUDA build and its GiBs of nvidia packages;
  where no pip `find-links` holds that wheel, set
  `PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu`.

Where neither works the peer is skipped, with a one-line reason, and the
painless side still runs. The peer trains on the rows painless_tf's own
split gives (`export_splits`).
"""

import dataclasses
import json
import os
import shutil
import subprocess

from painless_tf import cache

VENV_NAME = "bench-peer-venv"
# What the peer venv installs (see the module docstring for the pin).
REQUIREMENTS = ("torch==2.13.0+cpu", "transformers", "accelerate")
# Seconds: importing torch the first time reads ~1 GB from disk.
_CHECK_TIMEOUT = 300
# Seconds for `pip install` (torch's wheel alone is ~200 MB).
_INSTALL_TIMEOUT = 1800
_CHECK = (
    "import torch, transformers, accelerate; "
    "print(f'torch {torch.__version__}, transformers "
    "{transformers.__version__}, accelerate {accelerate.__version__}')"
)


@dataclasses.dataclass(frozen=True)
class PeerPython:
    """The peer's interpreter, or why there is none.

    Args:
        python: str or None. The interpreter; None when skipped.
        versions: str or None. What it imports, e.g. "torch 2.13.0+cpu, ...".
        skipped: str or None. One line: why the peer does not run.

    Examples:
    >>> PeerPython(python=None, versions=None, skipped="no torch").ok
    False
    """

    python: str | None
    versions: str | None = None
    skipped: str | None = None

    @property
    def ok(self):
        return self.python is not None and self.skipped is None


def check_python(python, *, timeout=_CHECK_TIMEOUT):
    """`(versions, None)` if `python` imports the peer's packages, else
    `(None, reason)`.

    Examples:
    >>> check_python("/nonexistent/python")
    (None, '/nonexistent/python does not exist')
    """
    if not os.path.exists(python):
        return None, f"{python} does not exist"
    try:
        proc = subprocess.run(
            [python, "-c", _CHECK], capture_output=True, text=True,
            timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{python} did not run: {e}"
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        return None, f"{python} cannot import torch/transformers/accelerate: {last}"
    return proc.stdout.strip(), None


def venv_dir(environ=None):
    """`<cache dir>/bench-peer-venv`.

    Examples:
    >>> venv_dir({"PAINLESS_TF_CACHE": "/tmp/ptf"})
    '/tmp/ptf/bench-peer-venv'
    """
    return os.path.join(cache.directory(environ), VENV_NAME)


def resolve(peer_python=None, *, environ=None, create=True, log=print):
    """The peer's interpreter: `peer_python`, else the cached venv, created
    when missing or broken (if `create`).

    Args:
        peer_python: str or None. `--peer_python`; never replaced by the
            venv when given.
        environ: dict or None. For the cache folder (default `os.environ`).
        create: bool. Create (or recreate) the venv when it does not work.
        log: callable. Receives one line per decision.

    Returns:
        PeerPython.

    Examples:
    >>> resolve("/nonexistent", log=lambda line: None).skipped
    '--peer_python: /nonexistent does not exist'
    """
    if peer_python:
        # The runner starts the peer from the repository root.
        peer_python = os.path.abspath(os.path.expanduser(peer_python))
        versions, reason = check_python(peer_python)
        if reason:
            return PeerPython(None, skipped=f"--peer_python: {reason}")
        return PeerPython(peer_python, versions)
    venv = venv_dir(environ)
    python = os.path.join(venv, "bin", "python")
    versions, reason = check_python(python)
    if not reason:
        return PeerPython(python, versions)
    if not create:
        return PeerPython(None, skipped=f"no peer venv: {reason}")
    reason = _create_venv(venv, log)
    if reason:
        return PeerPython(None, skipped=reason)
    versions, reason = check_python(python)
    if reason:
        return PeerPython(None, skipped=f"the new peer venv: {reason}")
    return PeerPython(python, versions)


def _create_venv(venv, log):
    """Creates `venv` and installs `REQUIREMENTS`; None or a reason."""
    base = shutil.which("python3.11")
    if base is None:
        return (f"python3.11 not found on PATH: cannot create {venv}. Pass "
                "--peer_python=PATH (an interpreter with torch, transformers "
                "and accelerate).")
    log_path = venv + "-install.log"
    log(f"peer: creating {venv} ({base} -m venv; pip install "
        f"{' '.join(REQUIREMENTS)}; log in {log_path})")
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    python = os.path.join(venv, "bin", "python")
    steps = (
        [base, "-m", "venv", "--clear", venv],
        [python, "-m", "pip", "install", "--no-input", *REQUIREMENTS],
    )
    with open(log_path, "w") as out:
        for command in steps:
            out.write("$ " + " ".join(command) + "\n")
            out.flush()
            try:
                code = subprocess.run(
                    command, stdout=out, stderr=subprocess.STDOUT,
                    timeout=_INSTALL_TIMEOUT, check=False).returncode
            except subprocess.TimeoutExpired:
                return (f"`{' '.join(command[:4])} ...` ran past "
                        f"{_INSTALL_TIMEOUT} s (log: {log_path})")
            except OSError as e:
                return f"`{command[0]}` did not run: {e}"
            if code != 0:
                return (f"`{' '.join(command[:4])} ...` failed with exit code "
                        f"{code}: {_last_line(log_path)} (log: {log_path})")
    return None


def _last_line(path):
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1][:200] if lines else ""


def export_splits(splits, folder):
    """Writes the train, validation and test rows as JSONL for the peer.

    Each line is `{"text": str, "label": int}`, the label being painless_tf's
    label id (`splits.vocab` order), in the split's own row order.

    Args:
        splits: painless_tf.data.Splits. Single-text classification.
        folder: str. Created if missing.

    Returns:
        dict `{split: {"rows": int, "label_counts": [int per label id]}}`,
        plus `"labels"` (the label names in id order).
    """
    if splits.task.kind != "classification":
        raise ValueError(
            f"the peer config trains a sequence classifier; the data's task "
            f"is {splits.task.kind!r}. Pass classification data.")
    os.makedirs(folder, exist_ok=True)
    names = list(splits.vocab.names)
    summary = {"labels": names}
    for name in ("train", "validation", "test"):
        examples = getattr(splits, name)
        if examples.num_text_columns != 1:
            raise ValueError(
                f"{examples.source}: the peer config feeds one text column; "
                "sentence pairs are not benchmarked. Pass single-text data.")
        counts = [0] * len(names)
        with open(os.path.join(folder, f"{name}.jsonl"), "w",
                  encoding="utf-8") as f:
            for text, label in zip(examples.texts[0], examples.labels):
                counts[int(label)] += 1
                f.write(json.dumps({"text": text, "label": int(label)}) + "\n")
        summary[name] = {"rows": len(examples), "label_counts": counts}
    return summary
