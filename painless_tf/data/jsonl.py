"""Parsing JSON Lines text (one object per line) into a `_RowCollector`, with
errors that say what a line holds instead of an object, a string text or a
class label.
"""

import json
import math

from painless_tf.data.columns import _check_present
from painless_tf.data.columns import _wanted_columns
from painless_tf.data.errors import DataError


def _parse_jsonl(text, rows):
    keys = None
    # Only "\n" ends a JSON line: `str.splitlines` would also split on
    # U+2028 and friends, which JSON strings may hold unescaped.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if keys is None and line.lstrip().startswith("["):
                _raise_json_array(rows.source)
            rows.bad(
                number,
                f"invalid JSON at column {e.colno} ({e.msg})",
                "Fix the line",
            )
            continue
        if not isinstance(obj, dict):
            if keys is None and isinstance(obj, list) and obj and all(
                isinstance(item, dict) for item in obj
            ):
                _raise_json_array(rows.source)
            rows.bad(
                number,
                f"expected a JSON object, got {_json_type(obj)}",
                'Write one object per line, like {"text": ..., "label": ...},',
            )
            continue
        if keys is None:
            # The first object plays the header's part: a key missing there
            # is a wrong flag, not a bad row.
            keys = list(obj)
            _check_present(rows, keys, number, "key")
        absent = [c for c, _ in _wanted_columns(rows) if c not in obj]
        if absent:
            found = ", ".join(map(repr, obj))
            why = f"no key {absent[0]!r} (keys found: {found})"
            rows.bad(number, why, "Add it")
            continue
        texts = []
        for column in rows.text_columns:
            value = obj[column]
            if value is not None and not isinstance(value, str):
                rows.bad(
                    number,
                    f"text column {column!r} holds {_json_type(value)}, not a "
                    "string",
                    "Write it as a JSON string",
                )
                break
            texts.append(value)
        else:
            label, why = _json_label(obj[rows.label_column], rows.label_column)
            if why:
                rows.bad(number, why, "Use a string, a number or a list of strings")
            else:
                rows.add(number, texts, label)


def _json_label(value, column):
    """Returns (label string or None, why it is bad or None)."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        if math.isnan(value):
            return "nan", None
        if value.is_integer():
            return str(int(value)), None
        # A number: a regression target (`data.tasks`).
        return repr(value), None
    if isinstance(value, list) and all(
            isinstance(v, (str, int)) and not isinstance(v, bool)
            for v in value):
        # A set of labels (multi-label, `data.tasks`), as in a CSV cell.
        return json.dumps(value, ensure_ascii=False), None
    return None, f"label column {column!r} holds {_json_type(value)}"


def _json_type(value):
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return f"{type(value).__name__} {json.dumps(value)[:40]}"


def _raise_json_array(source):
    raise DataError(
        f"{source}: is one JSON array; JSON Lines needs one object per line. "
        f"Convert it, e.g. jq -c '.[]' {source} > data.jsonl."
    )
