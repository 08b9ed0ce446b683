"""The model dir's one owner: its layout, its manifest and its lock.

A run writes only into its `--model_dir`, and only paths it has listed first
in the manifest `.painless_tf/manifest.json`. So a folder tells whose it is:

- new or empty: the run takes it;
- with a manifest: another painless_tf run's (the same run resumes in it;
  `--overwrite` removes exactly the listed paths, nothing else);
- a run of an earlier painless_tf version (plan.json and complete
  checkpoints, no manifest): adopted, listing only the layout's names;
- anything else (the user's own files): refused before anything is read or
  written, with `--overwrite` or without it.

`.painless_tf/lock` is an OS file lock (`fcntl.flock`), held while the run
lives and released by the kernel when the process dies, however it dies. A
second run on the same folder refuses with one line naming the holder.

Staging entries of killed writes (`.model.tmp-*`, `.export.tmp-*`,
`.<file>.*.tmp`, ...) are removed when the next run takes the lock.

Layout::

    <model_dir>/
        .painless_tf/manifest.json   paths this run wrote (and will write)
        .painless_tf/lock            the lock; its text names the holder
        .painless_tf/progress.json   training summary, kept across resumes
        run.json  plan.json  labels.json  task.json  metrics.json
        evaluation.json  teacher_logits.npy (a student's)
        history.json  report.html  lr_range_test.png
        model/  checkpoints/  tensorboard/  export/
"""

import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time

from painless_tf import atomic

# === Layout: every name the run writes at the top of its model dir ===

OWNER_DIR = ".painless_tf"
MANIFEST = os.path.join(OWNER_DIR, "manifest.json")
LOCK = os.path.join(OWNER_DIR, "lock")
PROGRESS = os.path.join(OWNER_DIR, "progress.json")
RUN = "run.json"
PLAN = "plan.json"
LABELS = "labels.json"
TASK = "task.json"  # multi-label thresholds, regression mean/std
METRICS = "metrics.json"
EVALUATION = "evaluation.json"
HISTORY = "history.json"
REPORT = "report.html"
LR_PLOT = "lr_range_test.png"
MODEL = "model"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
EXPORT = "export"
TEACHER_LOGITS = "teacher_logits.npy"  # a student's soft labels
# What a run of this version may write, in the order it writes them.
LAYOUT = (RUN, PLAN, LABELS, TASK, TEACHER_LOGITS, LR_PLOT, CHECKPOINTS,
          TENSORBOARD, HISTORY, METRICS, EVALUATION, MODEL, REPORT, EXPORT)

# Staging names of interrupted writes: atomic.write_text's temporary files
# and atomic.replace_dir's folders.
_STAGING = re.compile(r"^\..+\.(tmp-[^/]*|old-[^/]*|[^./]+\.tmp)$")
_FORMAT = 1
# Bytes of free space kept beyond an estimate: file-system metadata, and
# the runtime's own temporary files.
_SPACE_MARGIN = 64 * 2**20


class ModelDirError(ValueError):
    """The model dir cannot be used; the message says why and what to do."""


def path_in(model_dir, name):
    """The path of a layout entry (one of `LAYOUT`) inside `model_dir`."""
    return os.path.join(model_dir, name)


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a model dir's lock."""

    host: str
    pid: int
    started: str

    def describe(self):
        return f"host {self.host}, PID {self.pid}, started {self.started}"


class ModelDir:
    """Takes `path` for one run: checks it, locks it, records what it writes.

    Args:
        path: str. The `--model_dir`.
        flag: str. The flag that named `path`, for messages.
        shared: bool. The folder may hold files no run listed (a model dir
            assembled by hand that `export` writes into): they are not
            refused, and, like every unlisted path, never written over.

    Raises:
        ModelDirError: a file, not a folder; not writable; the user's own
            files; locked by another process.

    Examples:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "run")
    >>> owner = ModelDir(path)
    >>> owner.claim(PLAN)
    '...plan.json'
    >>> owner.listed()
    ['plan.json']
    >>> owner.release()
    """

    def __init__(self, path, *, flag="model_dir", shared=False):
        self.path = os.path.abspath(os.fspath(path))
        self.flag = flag
        self._lock_fd = None
        self._check_usable()
        self._created = not os.path.lexists(self.path)
        adopted = None if shared else self._whose()
        self._lock()
        try:
            if adopted is not None:
                self._write_manifest(adopted)
            self.clean_staging()
        except BaseException:
            self.release()
            raise

    # --- checks before anything is written ---

    def _check_usable(self):
        path, flag = self.path, self.flag
        if os.path.lexists(path) and not os.path.isdir(path):
            raise ModelDirError(
                f"--{flag}={path} is a file, not a folder. Pass a new or "
                "empty folder."
            )
        existing = path
        while not os.path.isdir(existing):
            existing = os.path.dirname(existing)
        if not os.access(existing, os.W_OK | os.X_OK):
            where = "" if existing == path else f" (its parent {existing})"
            raise ModelDirError(
                f"--{flag}={path}{where} is not writable. Pass a folder you "
                "can write to, or fix its permissions."
            )

    def _whose(self):
        """None if the folder is new, empty or a run's; else the names to
        adopt from an earlier version's run. Raises for the user's files."""
        if not os.path.isdir(self.path):
            return None
        entries = sorted(os.listdir(self.path))
        if not entries or os.path.isfile(os.path.join(self.path, MANIFEST)):
            return None
        if OWNER_DIR in entries:
            # A run that died before its first manifest write.
            rest = [e for e in entries if e != OWNER_DIR]
            if not rest:
                return None
        if _earlier_run(self.path):
            return [e for e in entries if e in LAYOUT]
        shown = ", ".join(e + ("/" if os.path.isdir(
            os.path.join(self.path, e)) else "") for e in entries[:5])
        more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        raise ModelDirError(
            f"--{self.flag}={self.path} holds files that no painless_tf run "
            f"wrote ({shown}{more}); nothing was changed. Pass a new or empty "
            f"--{self.flag}."
        )

    # --- the lock ---

    def _lock(self):
        owner = os.path.join(self.path, OWNER_DIR)
        try:
            os.makedirs(owner, exist_ok=True)
            fd = os.open(os.path.join(self.path, LOCK),
                         os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ModelDirError(
                f"--{self.flag}={self.path}: cannot create {owner} "
                f"({e.strerror}). Pass a folder you can write to."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            who = holder.describe() if holder else "another process"
            raise ModelDirError(
                f"--{self.flag}={self.path} is in use by another run ({who}). "
                f"Wait for it to finish, or pass another --{self.flag}."
            ) from None
        holder = Holder(socket.gethostname(), os.getpid(),
                        time.strftime("%Y-%m-%d %H:%M:%S %Z"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(dataclasses.asdict(holder)).encode(), 0)
        self._lock_fd = fd

    def release(self):
        """Releases the lock (the kernel does it too when the process dies).

        A run that claimed nothing (bad input found after the folder was
        taken) leaves no trace: its lock, and the folder if it made it.
        """
        if self._lock_fd is None:
            return
        if not os.path.exists(os.path.join(self.path, MANIFEST)):
            owner = os.path.join(self.path, OWNER_DIR)
            try:
                os.remove(os.path.join(self.path, LOCK))
                os.rmdir(owner)
                if self._created:
                    os.rmdir(self.path)
            except OSError:
                pass  # Not empty: something else is there; leave it.
        os.close(self._lock_fd)
        self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    # --- the manifest ---

    def listed(self):
        """The names this run and earlier ones in the folder listed."""
        try:
            with open(os.path.join(self.path, MANIFEST), encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise ModelDirError(
                f"{os.path.join(self.path, MANIFEST)} is unreadable ({e}). "
                f"Pass a new --{self.flag}."
            ) from None
        return list(manifest.get("paths", []))

    def _write_manifest(self, names):
        atomic.write_json(
            os.path.join(self.path, MANIFEST),
            {"format": _FORMAT, "paths": sorted(set(names))},
            indent=2, sort_keys=True,
        )

    def claim(self, name):
        """Lists `name` (a top-level entry) in the manifest, then returns its
        path: a run says what it will write before it writes it.

        Raises `ModelDirError` if `name` exists but no run listed it: what
        is not the run's is never written over.
        """
        self.claim_all([name])
        return os.path.join(self.path, name)

    def claim_all(self, names):
        """`claim` of several names, in one manifest write."""
        for name in names:
            if os.sep in name.strip(os.sep):
                raise ValueError(
                    f"`name` must be a top-level entry. Received: {name!r}")
        listed = self.listed()
        missing = [n for n in names if n not in listed]
        theirs = [n for n in missing
                  if os.path.lexists(os.path.join(self.path, n))]
        if theirs:
            raise ModelDirError(
                f"--{self.flag}={self.path} already holds "
                f"{', '.join(theirs)}, which no painless_tf run wrote; nothing "
                "was changed. Move it away, or pass another "
                f"--{self.flag}."
            )
        if missing:
            self._write_manifest([*listed, *missing])

    def has(self, name):
        """Whether an earlier run of this folder listed `name` and it exists."""
        return name in self.listed() and os.path.lexists(
            os.path.join(self.path, name))

    def remove_listed(self):
        """`--overwrite`: removes the listed entries, all or none.

        Each is first renamed into a trash folder inside `.painless_tf/`
        (a rename never follows a symlink, and fails at once where a
        deletion would fail half-way); only when every rename succeeded is
        the trash deleted. A failed rename puts the earlier ones back.
        """
        listed = [n for n in self.listed()
                  if os.path.lexists(os.path.join(self.path, n))]
        if not listed:
            return
        trash = os.path.join(self.path, OWNER_DIR, f"trash-{os.getpid()}")
        os.makedirs(trash, exist_ok=True)
        moved = []
        try:
            for name in listed:
                os.rename(os.path.join(self.path, name),
                          os.path.join(trash, name))
                moved.append(name)
        except OSError as e:
            for name in reversed(moved):
                os.rename(os.path.join(trash, name),
                          os.path.join(self.path, name))
            raise ModelDirError(
                f"--overwrite: cannot remove {os.path.join(self.path, name)} "
                f"({e.strerror}); nothing was removed. Fix its permissions or "
                f"pass another --{self.flag}."
            ) from None
        _remove_tree(trash)
        self._write_manifest([])

    def clean_staging(self):
        """Removes staging entries that killed writes left behind."""
        for name in os.listdir(self.path):
            if _STAGING.match(name):
                _remove_tree(os.path.join(self.path, name))
        owner = os.path.join(self.path, OWNER_DIR)
        for name in os.listdir(owner):
            if name.startswith("trash-") or _STAGING.match(name):
                _remove_tree(os.path.join(owner, name))

    # --- space ---

    def check_space(self, needed_bytes, what):
        """Raises `ModelDirError` unless `needed_bytes` (plus a margin) are
        free where the folder is."""
        free = shutil.disk_usage(self.path).free
        if free < needed_bytes + _SPACE_MARGIN:
            raise ModelDirError(
                f"{self.path}: {what} needs about "
                f"{(needed_bytes + _SPACE_MARGIN) / 2**20:,.0f} MiB free, and "
                f"{free / 2**20:,.0f} MiB are. Free some space and run the "
                "same command again: it resumes from the last checkpoint."
            )

    # --- the training summary kept across resumes ---

    def read_progress(self):
        """The training summary an earlier process of this run saved."""
        try:
            with open(os.path.join(self.path, PROGRESS), encoding="utf-8") as f:
                value = json.load(f)
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def write_progress(self, value):
        atomic.write_json(os.path.join(self.path, PROGRESS), value,
                          indent=2, sort_keys=True)


def _earlier_run(path):
    """A folder an earlier painless_tf version wrote: its plan.json and at
    least one complete checkpoint."""
    checkpoints = os.path.join(path, CHECKPOINTS)
    if not os.path.isfile(os.path.join(path, PLAN)) or not os.path.isdir(
            checkpoints):
        return False
    return any(
        re.fullmatch(r"update-\d{9}", name)
        and os.path.isfile(os.path.join(checkpoints, name, "manifest.json"))
        for name in os.listdir(checkpoints)
    )


def _read_holder(fd):
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        return Holder(**json.loads(text))
    except (OSError, ValueError, TypeError):
        return None


def _remove_tree(path):
    """Removes a file, a link (not its target) or a folder."""
    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    else:
        shutil.rmtree(path)
