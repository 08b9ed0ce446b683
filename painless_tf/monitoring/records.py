"""The values of interval and epoch records.

`_to_numpy` and `_number` read a value from a tensor, a Keras variable or
a NumPy value (`_number`: a finite float or None); `_json_ready` makes a
record JSON-ready, non-finite numbers as None; `_NOT_SCALARS` are the
record keys that are bookkeeping, not curves. Nothing here imports Keras.
"""

import math

import numpy as np

# Record keys that are bookkeeping, not curves.
_NOT_SCALARS = frozenset(
    {"step", "epoch", "fractional_epoch", "wall_seconds", "iterations",
     "examples", "tokens", "padded_tokens"}
)


def _to_numpy(value):
    # Keras variables and TF tensors convert themselves; np.asarray on a
    # Keras variable warns under NumPy 2 (no `copy` argument).
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _number(value):
    try:
        number = float(_to_numpy(value))
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return str(value)
