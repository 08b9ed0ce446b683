"""`read_table`: reading CSV, TSV and JSON Lines files, optionally compressed
(`.gz`, `.bz2`): the format from the extension, decompression, decoding (bad
bytes, NUL bytes, a byte order mark), then the parser of the format.
"""

import bz2
import codecs
import gzip
import os
from collections.abc import Sequence

from painless_tf.data.columns import _check_columns
from painless_tf.data.delimited import _parse_delimited
from painless_tf.data.errors import DataError
from painless_tf.data.errors import _one_line
from painless_tf.data.jsonl import _parse_jsonl
from painless_tf.data.rows import _RowCollector
from painless_tf.data.rows import _check_max_text_bytes
from painless_tf.data.tables import RawTable

_FORMATS = ("csv", "tsv", "jsonl")
_FORMAT_OF_EXTENSION = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_OPENER_OF_EXTENSION = {".gz": gzip.open, ".bz2": bz2.open}


def read_table(
    path,
    *,
    text_columns: Sequence[str] = ("text",),
    label_column: str = "label",
    file_format: str | None = None,
    encoding: str = "utf-8",
    skip_bad_rows: bool = False,
    max_text_bytes: int = 1_000_000,
) -> RawTable:
    """Reads and checks a CSV, TSV or JSON Lines file of labelled text.

    The format comes from the extension (`.csv`; `.tsv`, `.tab`; `.jsonl`,
    `.ndjson`, `.json` read as JSON Lines) after an optional `.gz` or `.bz2`,
    which is decompressed. CSV and TSV need a header row and follow the usual
    quoting rules (fields with the delimiter, quotes or newlines are quoted,
    quotes inside doubled). A UTF-8 byte order mark is ignored.

    Args:
        path: str or path-like. The file.
        text_columns: sequence of str. The 1 text column, or 2 for sentence
            pairs.
        label_column: str. The label column (JSON key for JSON Lines).
        file_format: str or None. `"csv"`, `"tsv"` or `"jsonl"`; None to go
            by the extension.
        encoding: str. The file's text encoding.
        skip_bad_rows: bool. Skip and count row-level problems (wrong field
            count, empty text or label, repeated header, a JSON line that is
            not an object) instead of raising. File-level problems raise
            anyway.
        max_text_bytes: int. Longer texts (in UTF-8 bytes) are truncated and
            counted in `RawTable.warnings`.

    Returns:
        A `RawTable`.

    Raises:
        DataError: for any problem in the file, in one line naming the file,
            line and column, and what to do.

    Examples:

    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "train.csv")
    ...     with open(path, "w") as f:
    ...         _ = f.write('text,label\\ngreat film,pos\\n"dull, long",neg\\n')
    ...     table = read_table(path)
    >>> table.texts, table.labels, table.lines
    ((('great film', 'dull, long'),), ('pos', 'neg'), (2, 3))
    """
    return _read_table(
        path,
        text_columns=text_columns,
        label_column=label_column,
        file_format=file_format,
        encoding=encoding,
        skip_bad_rows=skip_bad_rows,
        max_text_bytes=max_text_bytes,
    )


def _read_table(
    path,
    *,
    text_columns,
    label_column,
    file_format,
    encoding,
    skip_bad_rows,
    max_text_bytes,
    keep_labels=None,
):
    """`read_table`, dropping rows whose label is not in `keep_labels`.

    The filter runs before the checks, so rows about to be dropped cannot
    fail them.
    """
    text_columns = _check_columns(text_columns, label_column)
    _check_max_text_bytes(max_text_bytes)
    source = os.fspath(path)
    fmt = _format_of(source, file_format)
    text = _decode(source, _read_bytes(source), encoding)
    if not text.strip():
        what = "one JSON object per line" if fmt == "jsonl" else (
            "a header row and data rows"
        )
        raise DataError(f"{source}: the file is empty. Fill it with {what}.")
    rows = _RowCollector(
        source,
        text_columns,
        label_column,
        skip_bad_rows,
        max_text_bytes,
        keep_labels=keep_labels,
    )
    if fmt == "jsonl":
        _parse_jsonl(text, rows)
    else:
        _parse_delimited(text, rows, "," if fmt == "csv" else "\t")
    return rows.table()


def _format_of(source, file_format):
    if file_format is not None:
        if file_format not in _FORMATS:
            raise DataError(
                f"--file_format must be one of {', '.join(_FORMATS)}. "
                f"Received: file_format={file_format!r}"
            )
        return file_format
    stem, extension = os.path.splitext(source.lower())
    if extension in _OPENER_OF_EXTENSION:
        extension = os.path.splitext(stem)[1]
    if extension not in _FORMAT_OF_EXTENSION:
        raise DataError(
            f"{source}: cannot tell the format from the extension "
            f"{extension or '(none)'!r}. Pass --file_format=csv, tsv or jsonl."
        )
    return _FORMAT_OF_EXTENSION[extension]


def _read_bytes(source):
    extension = os.path.splitext(source.lower())[1]
    opener = _OPENER_OF_EXTENSION.get(extension, open)
    try:
        with opener(source, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{source}: no such file. Check the path.") from None
    except IsADirectoryError:
        raise DataError(f"{source}: is a directory. Pass a file.") from None
    except (OSError, EOFError) as e:
        if opener is open:
            raise DataError(
                f"{source}: cannot read the file ({_one_line(e)})."
            ) from None
        raise DataError(
            f"{source}: the {extension[1:]} data is corrupt or truncated "
            f"({_one_line(e)}). Fetch the file again, or decompress it and "
            "pass the plain file."
        ) from None


def _decode(source, data, encoding):
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(
            f"--encoding={encoding!r} is not an encoding Python knows. Pass "
            "e.g. --encoding=utf-8 or --encoding=latin-1."
        ) from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        compressed = os.path.splitext(source.lower())[1] in _OPENER_OF_EXTENSION
        of = " of the decompressed data" if compressed else ""
        is_utf8 = codecs.lookup(encoding).name == "utf-8"
        other = "latin-1" if is_utf8 else "utf-8"
        raise DataError(
            f"{source} line {line}: bytes {data[e.start:e.end]!r} at byte "
            f"offset {e.start}{of} are not valid {encoding} ({e.reason}). "
            f"Pass the file's real encoding, e.g. --encoding={other}, or "
            f"re-save it as {encoding}."
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        # No text format holds NUL: binary corruption, or a UTF-16 file
        # read as UTF-8.
        line = text.count("\n", 0, nul) + 1
        raise DataError(
            f"{source} line {line}: a NUL byte, which no text file holds: "
            "the file is corrupt or binary (or UTF-16: pass "
            "--encoding=utf-16). Fix or delete that line."
        )
    # A byte order mark (Excel writes one) is not part of the first header.
    return text[1:] if text.startswith("\ufeff") else text
