"""The task a label column asks for, and its labels as arrays.

`detect_task` reads the raw training labels of a `RawTable` and decides:

* `"multi_label"`: the labels are lists: a JSON list (`["a", "b"]`, in a
  CSV/TSV cell or as a JSON array in JSON Lines), or text split by
  `label_delimiter`.
* `"regression"`: every label is a number, and either one is not an
  integer or there are more than `MANY_VALUES` distinct integers.
* `"classification"`: anything else.

`task=` overrides the rule; a contradiction (`--task=regression` on a label
that is no number) is one line naming the flag, the file and line, and the
fix. `encode_labels` turns raw labels into what the model trains on: class
ids `int32 [n]`, multi-hot `float32 [n, K]`, or float targets `float32 [n]`
(standardized by the training split's mean and standard deviation, kept in
the `TaskSpec`).
"""

import dataclasses
import json
import math
import os

import numpy as np

from painless_tf import atomic
from painless_tf.data.errors import DataError
from painless_tf.data.errors import _preview
from painless_tf.data.labels import LabelVocab

TASKS = ("classification", "multi_label", "regression")
AUTO = "auto"
# More distinct integer labels than this make a numeric column a score to
# regress on rather than classes.
MANY_VALUES = 20


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """The task of a run and what its labels need to be read back.

    Args:
        kind: str. One of `TASKS`.
        reason: str. Why, in one line (the plan records it).
        label_delimiter: str or None. Splits a multi-label cell that is not
            a JSON list.
        mean: float. Regression: mean of the training targets.
        std: float. Regression: their standard deviation; the model learns
            `(target - mean) / std`.
        thresholds: tuple of float. Multi-label: the probability above
            which each label is predicted (tuned on validation), one per
            label; empty before tuning (0.5 each).

    Examples:

    >>> spec = TaskSpec("regression", "set by user", mean=3.0, std=2.0)
    >>> float(spec.destandardize(np.array([0.5]))[0])
    4.0
    """

    kind: str
    reason: str = ""
    label_delimiter: str | None = None
    mean: float = 0.0
    std: float = 1.0
    thresholds: tuple = ()

    def __post_init__(self):
        if self.kind not in TASKS:
            raise DataError(
                f"--task must be one of {', '.join((AUTO,) + TASKS)}. "
                f"Received: --task={self.kind}"
            )
        object.__setattr__(self, "thresholds",
                           tuple(float(t) for t in self.thresholds))

    def standardize(self, targets):
        """Targets in their units to what the model learns (float32)."""
        return (np.asarray(targets, np.float32) - self.mean) / self.std

    def destandardize(self, values):
        """Standardized model outputs to target units."""
        return np.asarray(values, np.float64) * self.std + self.mean

    def threshold_array(self, num_labels):
        """[num_labels]: the tuned thresholds, else 0.5 each."""
        if len(self.thresholds) == num_labels:
            return np.array(self.thresholds, np.float64)
        return np.full(num_labels, 0.5, np.float64)

    def to_dict(self):
        return dataclasses.asdict(self) | {"thresholds": list(self.thresholds)}

    def to_json(self, path):
        """Writes the spec to `path` atomically (`task.json`)."""
        atomic.write_json(path, self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, path):
        """Reads `to_json`'s file; a missing file is classification (model
        dirs written before tasks existed).

        Examples:

        >>> TaskSpec.from_json("/nonexistent/task.json").kind
        'classification'
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            return cls("classification", "no task.json")
        try:
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
            return cls(**values)
        except (OSError, ValueError, TypeError) as e:
            raise DataError(
                f"{path}: not a task file ({str(e).splitlines()[0]}). Train "
                "the model again to rewrite it."
            ) from None


def detect_task(table, *, task=AUTO, label_delimiter=None):
    """Decides the task from the raw training labels of `table`.

    Args:
        table: `RawTable`. The training rows.
        task: str. `"auto"` or one of `TASKS` (`--task`).
        label_delimiter: str or None. Splits multi-label text (`--label_delimiter`).

    Returns:
        A `TaskSpec` (mean and std still 0 and 1).

    Raises:
        DataError: for labels that contradict `task`, in one line.

    Examples:

    >>> from painless_tf.data.tables import RawTable
    >>> table = RawTable(source="t.csv", text_columns=("text",),
    ...     label_column="label", texts=(("a", "b"),),
    ...     labels=('["x", "y"]', '["y"]'), lines=(2, 3))
    >>> detect_task(table).kind
    'multi_label'
    """
    if task != AUTO and task not in TASKS:
        raise DataError(
            f"--task must be one of {', '.join((AUTO,) + TASKS)}. Received: "
            f"--task={task}"
        )
    if label_delimiter is not None and not label_delimiter:
        label_delimiter = None
    if label_delimiter is not None and task not in (AUTO, "multi_label"):
        raise DataError(
            f"--label_delimiter={label_delimiter!r} splits multi-label cells, "
            f"but --task={task}. Drop --label_delimiter or pass "
            "--task=multi_label."
        )
    column = table.label_column
    where = _where(table)
    lists = [(line, label) for label, line in zip(table.labels, table.lines)
             if _is_json_list(label)]
    if task == "multi_label" or (task == AUTO and (lists or label_delimiter)):
        for label, line in zip(table.labels, table.lines):
            _parse_list(label, label_delimiter, f"{where(line)}")
        if task == "multi_label":
            reason = "set by user"
        elif lists:
            line, label = lists[0]
            reason = (f"label column {column!r} holds lists ({len(lists)} of "
                      f"{len(table)} rows, e.g. line {line}: {label[:40]})")
        else:
            reason = (f"--label_delimiter={label_delimiter!r} splits label "
                      f"column {column!r} into sets")
        return TaskSpec("multi_label", reason, label_delimiter=label_delimiter)
    numbers = [_number(label) for label in table.labels]
    if task == "regression":
        for value, label, line in zip(numbers, table.labels, table.lines):
            if value is None:
                raise DataError(
                    f"{where(line)}: label {label[:40]!r} is not a finite "
                    "number, but --task=regression. Fix the label, or pass "
                    "--task=classification (or --task=auto)."
                )
        return TaskSpec("regression", "set by user")
    if task == "classification":
        return TaskSpec("classification", "set by user")
    if numbers and all(value is not None for value in numbers):
        fractional = [(line, label) for value, label, line
                      in zip(numbers, table.labels, table.lines)
                      if not float(value).is_integer()]
        if fractional:
            line, label = fractional[0]
            return TaskSpec(
                "regression",
                f"label column {column!r} is numeric with non-integer values "
                f"(e.g. line {line}: {label}); --task=classification to "
                "override")
        distinct = len(set(numbers))
        if distinct > MANY_VALUES:
            return TaskSpec(
                "regression",
                f"label column {column!r} holds {distinct} distinct integers "
                f"(more than {MANY_VALUES}); --task=classification to "
                "override")
    return TaskSpec(
        "classification",
        f"label column {column!r}: one class per row "
        f"({len(set(table.labels))} distinct labels)")


def label_vocab(spec, table):
    """The label names: classes' or multi-label's sorted names; for
    regression one name, the label column's."""
    if spec.kind == "regression":
        return LabelVocab([table.label_column])
    if spec.kind == "multi_label":
        where = _where(table)
        names = {name for label, line in zip(table.labels, table.lines)
                 for name in _parse_list(label, spec.label_delimiter,
                                         where(line))}
        if not names:
            raise DataError(
                f"{table.source}: every label list is empty. Fill in labels."
            )
        return LabelVocab.from_labels(sorted(names), source=table.source)
    return LabelVocab.from_labels(table.labels, source=table.source)


def encode_labels(spec, vocab, table):
    """Raw labels of `table` as arrays (see the module docstring); targets
    are not standardized here (`standardize`)."""
    where = _where(table)
    if spec.kind == "regression":
        values = []
        for label, line in zip(table.labels, table.lines):
            value = _number(label)
            if value is None:
                raise DataError(
                    f"{where(line)}: label {label[:40]!r} is not a finite "
                    "number; a regression target must be one. Fix the label "
                    "or drop the row."
                )
            values.append(value)
        return np.array(values, np.float32).reshape(len(table))
    if spec.kind == "multi_label":
        hot = np.zeros((len(table), len(vocab)), np.float32)
        for row, (label, line) in enumerate(zip(table.labels, table.lines)):
            for name in _parse_list(label, spec.label_delimiter, where(line)):
                hot[row, vocab.encode(name, where=where(line))] = 1.0
        return hot
    return np.array([vocab.encode(label, where=where(line))
                     for label, line in zip(table.labels, table.lines)],
                    np.int32)


def standardize(spec, train_targets, source):
    """The spec with the training targets' mean and std (regression)."""
    if spec.kind != "regression":
        return spec
    targets = np.asarray(train_targets, np.float64)
    std = float(np.std(targets)) if targets.size else 0.0
    if not std > 0:
        raise DataError(
            f"{source}: every training target is "
            f"{_preview(sorted(set(targets.tolist())))}; regression needs "
            "targets that vary. Check --label_column or pass "
            "--task=classification."
        )
    return dataclasses.replace(spec, mean=float(np.mean(targets)), std=std)


def _where(table):
    return lambda line: f"{table.source} {table.row_name} {line}"


def _is_json_list(label):
    text = label.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return False
    try:
        return isinstance(json.loads(text), list)
    except ValueError:
        return False


def _parse_list(label, delimiter, where):
    """The label names of one multi-label cell."""
    text = label.strip()
    if text.startswith("["):
        try:
            values = json.loads(text)
        except ValueError:
            values = None
        if not isinstance(values, list) or not all(
                isinstance(v, (str, int)) and not isinstance(v, bool)
                for v in values):
            raise DataError(
                f"{where}: label {text[:40]!r} is not a JSON list of "
                'strings. Write it like ["sports", "politics"].'
            )
        names = [str(v).strip() for v in values]
    elif delimiter:
        names = [part.strip() for part in text.split(delimiter)]
    else:
        names = [text]
    return [name for name in names if name]


def _number(label):
    try:
        value = float(label)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
