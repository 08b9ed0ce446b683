"""`LabelVocab`: the ordered label names, inferred from raw labels or read
from JSON, that map a raw label to its id; and the check of `num_classes`.
"""

import collections
import json
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from painless_tf import atomic
from painless_tf.data.errors import DataError
from painless_tf.data.errors import _one_line
from painless_tf.data.errors import _preview

# ASCII digits only: `\d` and `int()` would also accept other scripts' digits
# and "1_000".
_INT_LITERAL = re.compile(r"[+-]?[0-9]+")


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


def _is_int_literal(text):
    return bool(_INT_LITERAL.fullmatch(text.strip()))
