"""The probe cache: measured answers kept in `probes.json`.

`default_cache_dir` names the folder (`painless_tf.cache` owns where it is);
`_ProbeCache` reads and writes the one JSON file there that holds the
precision timings and the micro-batch answers, keyed by kind, then by the
machine and model an answer belongs to.
"""

import json
import os

from absl import logging

from painless_tf import atomic
from painless_tf import cache

_PROBE_CACHE_FILE = "probes.json"


def default_cache_dir() -> str:
    """The painless_tf cache directory: `$PAINLESS_TF_CACHE` or
    `~/.cache/painless_tf`.

    Examples:
    >>> isinstance(default_cache_dir(), str)
    True
    """
    return cache.directory()


class _ProbeCache:
    """Probe results in one JSON file, `{kind: {key: {answer...}}}`."""

    def __init__(self, directory):
        self._path = os.path.join(directory, _PROBE_CACHE_FILE)

    def _load(self):
        try:
            with open(self._path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as e:
            logging.warning(
                "Ignoring the unreadable probe cache %s (%s).", self._path, e
            )
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, kind, key):
        entry = self._load().get(kind, {}).get(key, {})
        return entry if isinstance(entry, dict) else {}

    def put(self, kind, key, value):
        data = self._load()
        data.setdefault(kind, {})[key] = value
        try:
            atomic.write_json(self._path, data, indent=2, sort_keys=True)
        except OSError as e:
            # A read-only cache only costs a probe next time.
            logging.warning(
                "probe cache %s not written (%s); set PAINLESS_TF_CACHE to "
                "a writable folder to keep probe results", self._path, e,
            )
