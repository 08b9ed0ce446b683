"""Atomic writes: a reader sees the old file or the new one, never half.

Every JSON and HTML output of painless_tf goes through `write_text`. A local
file is written to a temporary name in the same folder, fsync'ed, renamed
into place and the folder fsync'ed, so a crash leaves the previous version.
On object stores (`gs://...`) each object write is atomic already.
"""

import json
import os
import tempfile

import tensorflow as tf


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
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
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
