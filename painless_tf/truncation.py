"""How a text longer than the sequence length is cut: head, or head + tail.

Sun et al. (2019, "How to Fine-Tune BERT for Text Classification?") found
that keeping the first 128 and the last 382 tokens of a long IMDb review
(512 in all) classifies better than its first 510. A single text longer
than the room left after the special tokens keeps its first
`head_tokens(L)` tokens (L/4, rounded: 128 of 512) and fills the rest with
its last ones; sentence pairs keep keras-hub's packer truncation
(round robin: the longer text gives way). The same cut is made wherever
texts are tokenized for a trained model: training (`pipeline`), the Keras
predictor of `apps/evaluate.py` and `apps/predict.py`, the SavedModel and
the .tflite graphs (`painless_tf.export`).

A plan records the cut (`Plan.truncation`, `truncation_head`,
`truncation_tail`); `recorded(model_dir)` reads it back from `plan.json`,
and `attach` hands it to a keras-hub preprocessor so that every reader of
that preprocessor cuts the same way.

Examples:

>>> head_tokens(512), head_tokens(128)
(128, 32)
>>> ragged = tf.ragged.constant([[1, 2, 3, 4, 5, 6], [7, 8]])
>>> cut(ragged, budget=4, head=1).to_list()
[[1, 4, 5, 6], [7, 8]]
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

HEAD = "head"
HEAD_TAIL = "head+tail"
ROUND_ROBIN = "round_robin"
# What --truncation accepts; "auto" is head+tail for one text column.
CHOICES = ("auto", HEAD, HEAD_TAIL)
# The cuts a plan records.
KINDS = (HEAD, HEAD_TAIL, ROUND_ROBIN)
# The attribute `attach` sets on a keras-hub preprocessor.
_ATTRIBUTE = "painless_truncation"


def head_tokens(max_sequence_length: int) -> int:
    """Text tokens a cut text keeps from its start: L/4, rounded half up.

    Args:
        max_sequence_length: int. The sequence length L, special tokens
            included.

    Examples:
    >>> head_tokens(510), head_tokens(8)
    (128, 2)
    """
    return (int(max_sequence_length) + 2) // 4


@dataclasses.dataclass(frozen=True)
class Truncation:
    """The cut of a text longer than the sequence length.

    Args:
        kind: str. "head" (keep the first tokens), "head+tail" (keep
            `head` tokens from the start and the rest from the end) or
            "round_robin" (sentence pairs, keras-hub's packer).
        head: int. With "head+tail", text tokens kept from the start; the
            tail gets the remaining room after the special tokens.

    Examples:
    >>> Truncation("head+tail", head=32).cuts_tail(num_segments=1)
    True
    >>> Truncation("head+tail", head=32).cuts_tail(num_segments=2)
    False
    """

    kind: str = HEAD
    head: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"`kind` must be one of {KINDS}. Received: {self.kind!r}.")
        if self.kind == HEAD_TAIL and (
                isinstance(self.head, bool) or not isinstance(self.head, int)
                or self.head < 0):
            raise ValueError(
                "`head` must be an int >= 0 for head+tail. Received: "
                f"head={self.head!r}.")

    def cuts_tail(self, num_segments: int) -> bool:
        """Whether a text keeps its tail (one text column, head+tail)."""
        return self.kind == HEAD_TAIL and num_segments == 1

    @classmethod
    def of_plan(cls, plan) -> "Truncation":
        """The cut a `Plan` (or its `to_dict()`) records; "head" for a plan
        written before plans recorded it (keras-hub's packer kept the
        head)."""
        get = plan.get if isinstance(plan, dict) else (
            lambda name, default=None: getattr(plan, name, default))
        kind = get("truncation", HEAD) or HEAD
        head = get("truncation_head", 0) or 0
        return cls(kind, int(head) if kind == HEAD_TAIL else 0)


def cut(ragged: tf.RaggedTensor, *, budget, head) -> tf.RaggedTensor:
    """Keeps the first `head` and the last `budget - head` ids of every row
    longer than `budget`; shorter rows stay whole.

    Args:
        ragged: tf.RaggedTensor. int ids [N, (n)].
        budget: int or scalar tensor. Ids a row may keep.
        head: int or scalar tensor. Of those, the ones from the start.

    Returns:
        A tf.RaggedTensor of the same dtype, rows of `min(n, budget)` ids.
    """
    lengths = tf.cast(ragged.row_lengths(), tf.int64)
    budget = tf.cast(budget, tf.int64)
    head = tf.minimum(tf.cast(head, tf.int64), budget)
    kept = tf.minimum(lengths, budget)
    position = tf.ragged.range(kept, dtype=tf.int64)
    # Past the head, a cut row reads from `lengths - budget` further on.
    skip = tf.gather(lengths - kept, position.value_rowids())
    source = position.flat_values + tf.where(
        position.flat_values >= head, skip, tf.zeros_like(skip))
    starts = tf.gather(tf.cast(ragged.row_splits[:-1], tf.int64),
                       position.value_rowids())
    values = tf.gather(ragged.flat_values, starts + source)
    return tf.RaggedTensor.from_row_lengths(values, kept, validate=False)


def attach(preprocessor, truncation: Truncation | None):
    """Makes `preprocessor` cut texts as `truncation` says (see
    `painless_tf.export.saved_model._preprocess`); returns it."""
    if truncation is not None:
        object.__setattr__(preprocessor, _ATTRIBUTE, truncation)
    return preprocessor


def attached(preprocessor) -> Truncation:
    """The cut `attach` gave `preprocessor`; "head" (keras-hub's own packer)
    where none was given."""
    return getattr(preprocessor, _ATTRIBUTE, None) or Truncation()


def recorded(model_dir: str) -> Truncation:
    """The cut the plan in `model_dir` records (`plan.json`); "head" where
    there is none (a model dir written before plans recorded it).

    Args:
        model_dir: str. A trained model dir.

    Examples:
    >>> recorded("/nonexistent").kind
    'head'
    """
    try:
        with open(os.path.join(model_dir, "plan.json"),
                  encoding="utf-8") as f:
            plan = json.load(f)
    except (OSError, ValueError):
        return Truncation()
    if not isinstance(plan, dict):
        return Truncation()
    try:
        return Truncation.of_plan(plan)
    except (TypeError, ValueError):
        return Truncation()


def truncated_count(full_lengths, max_sequence_length: int) -> int:
    """How many of the texts (of these untruncated token lengths, special
    tokens included) are longer than `max_sequence_length`."""
    return int(np.sum(np.asarray(full_lengths) > int(max_sequence_length)))
