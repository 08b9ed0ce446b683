"""Row validation shared by every reader: `_RowCollector` checks each row
(empty text or label, NaN label, over-long text), raises for a bad one in one
line naming the source and line, or skips and counts it with
`skip_bad_rows`, and builds the `RawTable`.
"""

from painless_tf.data.errors import DataError
from painless_tf.data.errors import _preview
from painless_tf.data.tables import BadRows
from painless_tf.data.tables import RawTable

# How many skipped rows `BadRows` quotes; the rest are only counted.
_MAX_BAD_ROW_EXAMPLES = 5


class _RowCollector:
    """Checks rows one at a time and collects the good ones."""

    def __init__(
        self,
        source,
        text_columns,
        label_column,
        skip_bad_rows,
        max_text_bytes,
        row_name="line",
        keep_labels=None,
    ):
        self.source = source
        self.text_columns = text_columns
        self.label_column = label_column
        self.skip_bad_rows = skip_bad_rows
        self.max_text_bytes = max_text_bytes
        self.row_name = row_name
        self.keep_labels = keep_labels
        self.dropped_labels = set()
        self.texts = [[] for _ in text_columns]
        self.labels = []
        self.lines = []
        self.num_rows = 0
        self.num_bad = 0
        self.bad_examples = []
        self.num_truncated = 0
        self.first_truncated = None

    def bad(self, line, why, fix):
        """Raises for a bad row, or counts it when skipping bad rows."""
        self.num_rows += 1
        if not self.skip_bad_rows:
            raise DataError(
                f"{self.source} {self.row_name} {line}: {why}. {fix} or pass "
                "--skip_bad_rows."
            )
        self.num_bad += 1
        if len(self.bad_examples) < _MAX_BAD_ROW_EXAMPLES:
            self.bad_examples.append(f"{self.source}:{line}: {why}")

    def add(self, line, texts, label):
        """Checks a row and keeps it; texts and label may be None."""
        if self.keep_labels is not None and (
            (label or "").strip() not in self.keep_labels
        ):
            self.num_rows += 1
            # Only quoted in a message: a few examples are enough.
            if len(self.dropped_labels) <= 10:
                self.dropped_labels.add((label or "").strip())
            return
        for column, text in zip(self.text_columns, texts):
            if text is None or not text.strip():
                blank = " (only whitespace)" if text else ""
                why = f"text column {column!r} is empty{blank}"
                return self.bad(line, why, "Fill it in")
        label = "" if label is None else label.strip()
        if not label:
            why = f"label column {self.label_column!r} is empty"
            return self.bad(line, why, "Fill it in")
        if label.lower() == "nan":
            return self.bad(
                line,
                f"label column {self.label_column!r} is NaN",
                "Fill in a real label",
            )
        self.num_rows += 1
        for column, text, kept in zip(self.text_columns, texts, self.texts):
            kept.append(self._truncate(line, column, text))
        self.labels.append(label)
        self.lines.append(line)

    def _truncate(self, line, column, text):
        # A character takes at most 4 UTF-8 bytes: skip encoding short texts.
        if len(text) * 4 <= self.max_text_bytes:
            return text
        encoded = text.encode("utf-8")
        if len(encoded) <= self.max_text_bytes:
            return text
        self.num_truncated += 1
        if self.first_truncated is None:
            self.first_truncated = (line, column)
        return encoded[: self.max_text_bytes].decode("utf-8", errors="ignore")

    def table(self):
        """Returns the `RawTable`, or raises if no row survived."""
        if not self.lines and self.num_bad:
            raise DataError(
                f"{self.source}: all {self.num_bad} rows are bad, e.g. "
                f"{self.bad_examples[0]}. Fix the file."
            )
        if not self.lines:
            raise DataError(
                f"{self.source}: no rows with {self.label_column} "
                f"{' or '.join(map(repr, self.keep_labels))} (found: "
                f"{_preview(sorted(self.dropped_labels))}). Check the file."
            )
        warnings = []
        if self.num_bad:
            warnings.append(
                f"{self.source}: skipped {self.num_bad} bad rows "
                f"(--skip_bad_rows), e.g. {'; '.join(self.bad_examples)}"
            )
        if self.num_truncated:
            line, column = self.first_truncated
            warnings.append(
                f"{self.source}: {self.num_truncated} texts longer than "
                f"{self.max_text_bytes:,} bytes were truncated to that length "
                f"(first: {self.row_name} {line}, column {column!r}). Raise "
                "`max_text_bytes` (a `read_table` argument) to keep them whole."
            )
        return RawTable(
            source=self.source,
            text_columns=self.text_columns,
            label_column=self.label_column,
            texts=self.texts,
            labels=self.labels,
            lines=self.lines,
            bad_rows=BadRows(self.num_bad, tuple(self.bad_examples)),
            warnings=warnings,
            row_name=self.row_name,
        )


def _check_max_text_bytes(max_text_bytes):
    if (
        not isinstance(max_text_bytes, int)
        or isinstance(max_text_bytes, bool)
        or max_text_bytes < 1
    ):
        raise DataError(
            "`max_text_bytes` must be a positive integer. "
            f"Received: max_text_bytes={max_text_bytes!r}"
        )
