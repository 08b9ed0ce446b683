"""The containers rows travel in: `RawTable` (raw text and label strings, as
read from one source, with its `BadRows`) and `Examples` (texts and integer
label ids, ready for tokenization).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class BadRows:
    """Rows skipped by `skip_bad_rows=True`.

    Args:
        count: int. How many rows were skipped.
        examples: tuple of str. The first few, as `"file:line: why"`.

    Examples:

    >>> BadRows(count=1, examples=("train.csv:4: text column 'text' is empty",))
    BadRows(count=1, examples=("train.csv:4: text column 'text' is empty",))
    """

    count: int = 0
    examples: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class RawTable:
    """Rows of text and raw label strings, as read from one source.

    Args:
        source: str. Where the rows came from (a file path, or
            `"name[split]"` for TFDS); used in messages.
        text_columns: tuple of str. Names of the 1 or 2 text columns.
        label_column: str. Name of the label column.
        texts: tuple of tuples of str. One inner tuple per text column, each
            with one text per row.
        labels: tuple of str. The raw label of each row (the readers strip
            surrounding whitespace).
        lines: tuple of int. The line (or example number) of each row in
            `source`.
        bad_rows: `BadRows`. Rows skipped because of `skip_bad_rows`.
        warnings: tuple of str. One-line warnings for people (skipped rows,
            truncated texts).
        label_names: tuple of str, or None. Label names in id order when the
            source declares them (a TFDS `ClassLabel`); None to infer them
            from the labels.
        row_name: str. What `lines` count: `"line"` or `"example"`.

    Examples:

    >>> table = RawTable(source="inline", text_columns=("text",),
    ...     label_column="label", texts=(("good", "bad"),),
    ...     labels=("pos", "neg"), lines=(2, 3))
    >>> len(table)
    2
    """

    source: str
    text_columns: tuple[str, ...]
    label_column: str
    texts: tuple[tuple[str, ...], ...]
    labels: tuple[str, ...]
    lines: tuple[int, ...]
    bad_rows: BadRows = dataclasses.field(default_factory=BadRows)
    warnings: tuple[str, ...] = ()
    label_names: tuple[str, ...] | None = None
    row_name: str = "line"

    def __post_init__(self):
        # Accept lists from callers but store tuples, so the table stays
        # immutable like its frozen fields promise.
        set_ = object.__setattr__
        set_(self, "text_columns", _as_str_tuple(self.text_columns))
        set_(self, "texts", tuple(tuple(column) for column in self.texts))
        set_(self, "labels", tuple(self.labels))
        set_(self, "lines", tuple(int(line) for line in self.lines))
        set_(self, "warnings", tuple(self.warnings))
        if self.label_names is not None:
            set_(self, "label_names", tuple(self.label_names))
        if len(self.text_columns) not in (1, 2):
            raise ValueError(
                "`text_columns` must name 1 column, or 2 for sentence pairs. "
                f"Received: text_columns={self.text_columns}"
            )
        if len(self.texts) != len(self.text_columns):
            raise ValueError(
                "`texts` must hold one tuple per text column "
                f"({len(self.text_columns)}). Received: {len(self.texts)}"
            )
        n = len(self.labels)
        if len(self.lines) != n or any(len(c) != n for c in self.texts):
            raise ValueError(
                "`texts` columns, `labels` and `lines` must have the same "
                f"length. Received: texts={[len(c) for c in self.texts]}, "
                f"labels={n}, lines={len(self.lines)}"
            )

    def __len__(self):
        return len(self.labels)


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
    """Texts and integer label ids, ready for tokenization.

    `eq=False` because `==` on numpy arrays is element-wise and would make
    dataclass equality (and hashing) raise.

    Args:
        texts: tuple of tuples of str. One inner tuple per text column (1
            column, or 2 for sentence pairs), each of length n.
        labels: np.ndarray. int32 label ids `[n]`; or float32 targets
            `[n]` (regression) or multi-hot `[n, K]` (multi-label);
            read-only.
        lines: tuple of int. The source line (or example number) of each row.
        source: str. The file name, or `"name[split]"` for TFDS.

    Examples:

    >>> examples = Examples(texts=(("good", "bad"),), labels=[1, 0],
    ...     lines=(2, 3), source="train.csv")
    >>> len(examples), examples.num_text_columns, examples.labels.dtype
    (2, 1, dtype('int32'))
    """

    texts: tuple[tuple[str, ...], ...]
    labels: np.ndarray
    lines: tuple[int, ...]
    source: str

    def __post_init__(self):
        labels = np.asarray(self.labels)
        floats = labels.dtype.kind == "f"
        labels = np.array(labels, dtype=np.float32 if floats else np.int32)
        labels.flags.writeable = False
        object.__setattr__(self, "labels", labels)
        object.__setattr__(
            self, "texts", tuple(tuple(column) for column in self.texts)
        )
        object.__setattr__(self, "lines", tuple(int(x) for x in self.lines))
        if len(self.texts) not in (1, 2):
            raise ValueError(
                "`texts` must hold 1 text column, or 2 for sentence pairs. "
                f"Received: {len(self.texts)} columns"
            )
        n = len(self.lines)
        if (labels.shape[:1] != (n,) or labels.ndim > 2
                or (labels.ndim == 2 and not floats)
                or any(len(c) != n for c in self.texts)):
            raise ValueError(
                "`texts` columns, `labels` and `lines` must all have length "
                f"n. Received: texts={[len(c) for c in self.texts]}, "
                f"labels.shape={labels.shape}, lines={n}"
            )

    def __len__(self):
        return len(self.lines)

    @property
    def num_text_columns(self):
        """1 for single texts, 2 for sentence pairs."""
        return len(self.texts)


def _as_str_tuple(columns):
    # A lone string is one column name, not a sequence of letters.
    return (columns,) if isinstance(columns, str) else tuple(columns)
