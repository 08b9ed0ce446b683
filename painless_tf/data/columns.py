"""Column detection: the checks of `--text_columns` / `--label_column`, and
finding those columns in a CSV / TSV header or the keys of the first JSON
object, with a "did you mean" hint when one is missing.
"""

import difflib

from painless_tf.data.errors import DataError
from painless_tf.data.tables import _as_str_tuple


def _check_columns(text_columns, label_column):
    text_columns = _as_str_tuple(text_columns)
    if len(text_columns) not in (1, 2) or len(set(text_columns)) != len(
        text_columns
    ) or not all(isinstance(c, str) and c for c in text_columns):
        raise DataError(
            "--text_columns must name 1 column, or 2 distinct ones for "
            f"sentence pairs. Received: text_columns={text_columns!r}"
        )
    if not isinstance(label_column, str) or not label_column:
        raise DataError(
            "--label_column must name a column. "
            f"Received: label_column={label_column!r}"
        )
    if label_column in text_columns:
        raise DataError(
            f"--label_column={label_column!r} is also one of --text_columns. "
            "Pass different columns."
        )
    return text_columns


def _wanted_columns(rows):
    """(column, flag naming it) for the text columns, then the label."""
    wanted = [(c, "--text_columns") for c in rows.text_columns]
    return wanted + [(rows.label_column, "--label_column")]


def _check_present(rows, found, line, noun):
    """Raises if a wanted column is not among `found` names."""
    for column, flag in _wanted_columns(rows):
        if column in found:
            continue
        close = difflib.get_close_matches(column, found, n=1)
        hint = f"; did you mean {flag}={close[0]}?" if close else "."
        raise DataError(
            f"{rows.source} line {line}: no {noun} {column!r} ({noun}s found: "
            f"{', '.join(map(repr, found))}). Pass {flag} with one of them"
            f"{hint}"
        )


def _column_indices(rows, header, line):
    """Finds the text and label columns in a header, label last."""
    _check_present(rows, header, line, "column")
    for column, _ in _wanted_columns(rows):
        if header.count(column) > 1:
            raise DataError(
                f"{rows.source} line {line}: column {column!r} appears "
                f"{header.count(column)} times in the header. Rename all but "
                "one."
            )
    return [header.index(column) for column, _ in _wanted_columns(rows)]
