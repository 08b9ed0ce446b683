"""Atomic writes: a reader sees the old file or folder or the new one,
never half.

Every JSON and HTML output of painless_tf goes through `write_text`, every
output folder (the model preset, the export, an extracted asset) through
`replace_dir`. A local file is written to a temporary name in the same
folder, fsync'ed, renamed into place and the folder fsync'ed, so a crash
leaves the previous version. On object stores (`gs://...`) each object
write is atomic already.

Files and folders get the permissions the process umask gives (as `open`
and `os.makedirs` would), not the 0600 / 0700 of `tempfile`: a serving
account must be able to read what the run wrote.

Staging names start with a dot and end in `.tmp` (files) or hold `.tmp-` /
`.old-` (folders); `model_dir.ModelDir` removes those that a killed write
left behind.
"""

import contextlib
import json
import os
import shutil
import tempfile
import threading

import tensorflow as tf

_UMASK_LOCK = threading.Lock()


def umask():
    """The process umask (reading it means setting it: done under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode():
    """The mode `open(path, "w")` would give a new file."""
    return 0o666 & ~umask()


def dir_mode():
    """The mode `os.makedirs` would give a new folder."""
    return 0o777 & ~umask()


def write_text(path, text):
    """Replaces the file at `path` with `text`, atomically.

    Examples:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a", "b.txt")
    >>> write_text(path, "hello"); open(path).read()
    'hello'
    """
    path = os.fspath(path)
    if "://" in path:
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "wb" if isinstance(text, bytes)
                               else "w") as f:
            f.write(text)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    binary = isinstance(text, bytes)
    try:
        os.fchmod(handle, file_mode())
        with os.fdopen(handle, "wb" if binary else "w",
                       encoding=None if binary else "utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    fsync_dir(directory)


def write_bytes(path, content):
    """`write_text` of bytes (e.g. an `np.save` buffer).

    Examples:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "b.bin")
    >>> write_bytes(path, b"ab"); open(path, "rb").read()
    b'ab'
    """
    if not isinstance(content, bytes):
        raise TypeError(f"`content` must be bytes. Received: {type(content)}")
    write_text(path, content)


def fsync_dir(directory):
    """Makes a rename inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path, value, **dumps_kwargs):
    """`write_text` of `json.dumps(value, **dumps_kwargs)` plus a newline.

    Examples:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.json")
    >>> write_json(path, {"a": 1}); json.load(open(path))
    {'a': 1}
    """
    write_text(path, json.dumps(value, **dumps_kwargs) + "\n")


def staging_dir(target):
    """A new, empty folder beside `target` to build its next version in.

    Its name is `.<name>.tmp-XXXX`; its mode is the umask's.
    """
    parent, name = os.path.split(os.path.abspath(os.fspath(target)))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    os.chmod(staging, dir_mode())
    return staging


def replace_dir(staging, target):
    """Renames the finished folder `staging` onto `target`.

    A rename cannot replace a non-empty folder, so an earlier `target` is
    first renamed aside into `.<name>.old-XXXX` and deleted after the new
    one is in place: at every moment `target` is the old folder, the new
    one, or (between the two renames) absent with the old one beside it.

    Examples:
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "out")
    >>> for text in ("one", "two"):
    ...     staging = staging_dir(target)
    ...     write_text(os.path.join(staging, "a.txt"), text)
    ...     replace_dir(staging, target)
    >>> open(os.path.join(target, "a.txt")).read(), len(os.listdir(
    ...     os.path.dirname(target)))
    ('two', 1)
    """
    target = os.path.abspath(os.fspath(target))
    parent, name = os.path.split(target)
    if os.path.lexists(target):
        old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
        os.replace(target, os.path.join(old, name))
        os.replace(staging, target)
        fsync_dir(parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
        fsync_dir(parent)


@contextlib.contextmanager
def building_dir(target):
    """Yields a staging folder; on success it replaces `target`, on any
    error (or a kill) `target` is left as it was.

    Examples:
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "out")
    >>> with building_dir(target) as staging:
    ...     write_text(os.path.join(staging, "a.txt"), "x")
    >>> os.listdir(target)
    ['a.txt']
    """
    staging = staging_dir(target)
    try:
        yield staging
        replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
