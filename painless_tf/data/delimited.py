"""Parsing CSV and TSV text (header row, quoting, fields spanning lines) into
a `_RowCollector`, with errors that name the line a row starts on.
"""

import contextlib
import csv
import io

from painless_tf.data.columns import _column_indices
from painless_tf.data.errors import DataError

# Larger than any sane `max_text_bytes` (in characters) and still a C long on
# every platform `csv` runs on.
_CSV_FIELD_LIMIT = 2**31 - 1


def _parse_delimited(text, rows, delimiter):
    kind = "CSV" if delimiter == "," else "TSV"
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=delimiter, strict=True
    )
    header = None
    header_line = 0
    with _csv_field_limit():
        while True:
            # A quoted field may span lines: report the line a row starts on.
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise DataError(_csv_error(rows.source, kind, start, reader, e))
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if header is None:
                header = [name.strip() for name in record]
                header_line = start
                indices = _column_indices(rows, header, start)
                continue
            if [field.strip() for field in record] == header:
                rows.bad(
                    start,
                    f"this row repeats the header ({delimiter.join(header)});"
                    " files were probably concatenated",
                    "Delete the row",
                )
                continue
            if len(record) != len(header):
                shown = "TAB" if delimiter == "\t" else delimiter
                rows.bad(
                    start,
                    f"{len(record)} fields but the header has {len(header)}",
                    f"Quote fields that contain '{shown}' or newlines, "
                    "fix the row,",
                )
                continue
            rows.add(
                start,
                [record[i] for i in indices[:-1]],
                record[indices[-1]],
            )
    if header is None:
        raise DataError(
            f"{rows.source}: the file holds no rows. Fill it with a header row "
            "and data rows."
        )
    if not rows.num_rows:
        raise DataError(
            f"{rows.source}: there is a header row (line {header_line}: "
            f"{delimiter.join(header)}) but no data rows. Add rows below it."
        )


def _csv_error(source, kind, start, reader, error):
    message = str(error)
    if "unexpected end of data" in message:
        return (
            f"{source} line {start}: a quoted field opens here and its closing"
            " quote never comes (the rest of the file fell into it). Close "
            'the quote, and double any quote inside a quoted field ("").'
        )
    return (
        f"{source} line {reader.line_num}: malformed {kind} ({message}). Quote"
        ' the whole field, and double any quote inside it ("").'
    )


@contextlib.contextmanager
def _csv_field_limit():
    # `csv` rejects fields over 131,072 characters by default, far below
    # `max_text_bytes`. The limit is process-wide, so lift it only while
    # reading and put it back.
    previous = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        yield
    finally:
        csv.field_size_limit(previous)
