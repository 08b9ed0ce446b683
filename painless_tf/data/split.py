"""`load_splits`: the train / validation / test `Examples` and their
`LabelVocab` (`Splits`). The vocabulary comes from the training data; splits
without a file of their own are carved out of it by a hash of each text, so
identical texts always land in the same split.
"""

import dataclasses
import hashlib
import math
import os
from collections.abc import Sequence

import numpy as np

from painless_tf.data.errors import DataError
from painless_tf.data.errors import _preview
from painless_tf.data.files import read_table
from painless_tf.data.labels import LabelVocab
from painless_tf.data.labels import _check_num_classes
from painless_tf.data.labels import _is_int_literal
from painless_tf.data.tables import Examples
from painless_tf.data.tables import RawTable
from painless_tf.data.tasks import TaskSpec
from painless_tf.data.tasks import detect_task
from painless_tf.data.tasks import encode_labels
from painless_tf.data.tasks import label_vocab
from painless_tf.data.tasks import standardize

_SPLIT_NAMES = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """The train, validation and test examples and their label vocabulary.

    Args:
        train: `Examples`. Training rows.
        validation: `Examples`. Validation rows (possibly empty).
        test: `Examples`. Test rows (possibly empty).
        vocab: `LabelVocab`. Maps label names to the ids in `Examples.labels`
            (for regression: one name, the label column's).
        warnings: tuple of str. One-line warnings for people.
        task: `TaskSpec`. The task and why (`data.tasks`); for regression
            `Examples.labels` are the targets standardized by its mean and
            std.

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
    task: TaskSpec = TaskSpec("classification")


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
    task: str = "auto",
    label_delimiter: str | None = None,
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
        task: str. "auto" or one of `data.tasks.TASKS`; see
            `data.tasks.detect_task`.
        label_delimiter: str or None. Splits multi-label cells.

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
    spec = detect_task(train_table, task=task, label_delimiter=label_delimiter)
    classes = spec.kind == "classification"
    if classes:
        vocab = _vocab_for(train_table, num_classes)
        train_ids = _encode_all(train_table, vocab)
    else:
        vocab = label_vocab(spec, train_table)
        train_ids = encode_labels(spec, vocab, train_table)

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
            ids = (_encode_all(table, vocab) if classes
                   else encode_labels(spec, vocab, table))
            examples[role] = _subset(table, ids, range(len(table)))

    if classes:
        _check_training_classes(train_table, examples["train"], vocab, missing)
    spec = standardize(spec, examples["train"].labels, train_table.source)
    if spec.kind == "regression":
        examples = {
            role: dataclasses.replace(e, labels=spec.standardize(e.labels))
            for role, e in examples.items()
        }
    for role in missing:
        if kept[role] > 0 and not examples[role]:
            warnings.append(
                f"{train_table.source}: the {role} split is empty; "
                f"{len(train_table)} rows are too few for split={split}. "
                f"Add rows or pass a --{role} file."
            )
    if missing and classes:
        absent = set(range(len(vocab))) - set(examples["train"].labels.tolist())
        present = set(train_ids.tolist())
        for i in sorted(absent & present):
            warnings.append(
                f"{train_table.source}: label {vocab.names[i]!r} has no rows "
                "in the training split (all went to validation/test). Add "
                "rows with it or change --seed."
            )
    if (classes and vocab._integer and not vocab._dense
            and num_classes is None):
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
        task=spec,
    )


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
    return np.array([
        vocab.encode(
            label, where=f"{table.source} {table.row_name} {line}"
        )
        for label, line in zip(table.labels, table.lines)
    ], np.int32)


def _subset(table, ids, rows):
    rows = list(rows)
    return Examples(
        texts=tuple(tuple(column[r] for r in rows) for column in table.texts),
        labels=np.asarray(ids)[np.array(rows, np.int64)],
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
