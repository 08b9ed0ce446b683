"""The painless_tf cache folder, one owner for its place.

`$PAINLESS_TF_CACHE` when set, else `~/.cache/painless_tf`. It holds the
assets fetched from registry wheels (`assets`), the probe results
(`plan.probe_cache`'s `probes.json`), the measured peak FLOP/s (`flops`)
and the tokenization cache (`pipeline`). Nothing here creates it.
"""

import os


def directory(environ=None) -> str:
    """The cache folder, from `environ` (default: `os.environ`).

    Examples:
    >>> directory({"PAINLESS_TF_CACHE": "/tmp/ptf"})
    '/tmp/ptf'
    >>> directory({}).endswith(os.path.join(".cache", "painless_tf"))
    True
    """
    environ = os.environ if environ is None else environ
    path = environ.get("PAINLESS_TF_CACHE")
    if path:
        return os.path.abspath(os.path.expanduser(path))
    return os.path.join(os.path.expanduser("~"), ".cache", "painless_tf")
