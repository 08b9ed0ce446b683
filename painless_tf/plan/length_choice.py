"""The sequence length and the cut of longer texts, from the data.

The rule (`choose_length`): the shortest multiple of 8 tokens that holds
99% of the training texts whole (their untruncated token lengths, special
tokens included), never above the model's position table. Bucketing
already removes the padding cost of a long limit, so a longer length costs
only on the texts it stops cutting: the length grows, one multiple of 8 at
a time, while the estimated compute of an epoch grows by at most 5% over
the 99% length. Per text the estimate is `n * (6 * hidden + n)`
multiply-adds per layer for `n` tokens (the dense layers' `24 * hidden^2`
per token over `4 * hidden`, plus attention's `n` per token). Texts still
longer keep head and tail (`painless_tf.truncation`); sentence pairs keep
keras-hub's round robin.
"""

import dataclasses
import math
import types
from collections.abc import Mapping

import numpy as np

from painless_tf import truncation as truncation_lib
from painless_tf.plan.checks import AUTO
from painless_tf.plan.checks import PlanError
from painless_tf.plan.checks import _positive_int

# Share of the training texts the length holds whole.
COVERAGE = 0.99
# Lengths are multiples of this many tokens (a GPU's tensor cores).
LENGTH_MULTIPLE = 8
# A longer length is worth at most this much more compute per epoch.
EXTRA_COMPUTE = 0.05
# The longest automatic length for a model without a position table.
NO_LIMIT_LENGTH = 512
# Without training lengths (a plan made without data): the length that
# holds most sentences and reviews.
DEFAULT_MAX_SEQUENCE_LENGTH = 128
# The hidden size the compute estimate assumes where the model's is unknown.
_DEFAULT_HIDDEN = 768


@dataclasses.dataclass(frozen=True)
class LengthChoice:
    """The sequence length and the cut of longer texts, with reasons.

    Args:
        max_sequence_length: int. Tokens per sequence, special tokens
            included.
        truncation: str. "head", "head+tail" or "round_robin".
        truncation_head: int. Text tokens a cut text keeps from its start
            (head+tail; 0 otherwise).
        truncation_tail: int. Text tokens it keeps from its end (head+tail;
            0 otherwise).
        reasons: Mapping[str, str]. Reasons of "max_sequence_length" and
            "truncation".
    """

    max_sequence_length: int
    truncation: str
    truncation_head: int
    truncation_tail: int
    reasons: Mapping[str, str]

    def __post_init__(self):
        object.__setattr__(self, "reasons",
                           types.MappingProxyType(dict(self.reasons)))


def choose_length(
    requested="auto",
    full_lengths=None,
    *,
    model_limit: int | None = None,
    truncation: str = "auto",
    num_text_columns: int = 1,
    num_special_tokens: int = 2,
    hidden_dim: int | None = None,
) -> LengthChoice:
    """Decides the sequence length and how longer texts are cut.

    Args:
        requested: int | "auto". `--max_sequence_length`.
        full_lengths: Sequence[int] | None. Untruncated token lengths of the
            training texts, special tokens included; None: no data (an
            automatic length is then 128, or the model limit if shorter).
        model_limit: int | None. The model's position-table size.
        truncation: str. `--truncation`: "auto", "head" or "head+tail".
        num_text_columns: int. 1, or 2 for sentence pairs.
        num_special_tokens: int. Special tokens of one packed text (2 for
            `[CLS] a [SEP]`).
        hidden_dim: int | None. The model's hidden size, for the compute
            estimate.

    Returns:
        A `LengthChoice`.

    Raises:
        PlanError: for a bad value, or a length above the model limit.

    Examples:
    >>> choice = choose_length("auto", [10] * 99 + [300], model_limit=512)
    >>> choice.max_sequence_length, choice.truncation
    (64, 'head+tail')
    >>> choice.reasons["max_sequence_length"].split(";")[0]
    'covers 99.0% of training texts (1 of 100 truncated, head+tail)'
    >>> choose_length("auto", [10] * 1000, model_limit=512).max_sequence_length
    16
    """
    if truncation not in truncation_lib.CHOICES:
        raise PlanError(
            f"--truncation={truncation!r} is not one of "
            f"{', '.join(truncation_lib.CHOICES)}. Pass --truncation=auto.")
    if model_limit is not None:
        model_limit = _positive_int(model_limit, "model_max_sequence_length")
    lengths = None if full_lengths is None else np.asarray(
        full_lengths, np.int64)
    limit_words = (f"model limit {model_limit}" if model_limit
                   else f"no model limit (at most {NO_LIMIT_LENGTH} chosen)")
    if requested != AUTO:
        length = _positive_int(requested, "max_sequence_length")
        if model_limit and length > model_limit:
            raise PlanError(
                f"--max_sequence_length={length} exceeds the model's "
                f"position table ({model_limit}). Pass "
                f"--max_sequence_length={model_limit} or less.")
        why = "set by user"
    elif lengths is None or not lengths.size:
        length = min(DEFAULT_MAX_SEQUENCE_LENGTH,
                     model_limit or DEFAULT_MAX_SEQUENCE_LENGTH)
        why = ("no training lengths: the default "
               f"{DEFAULT_MAX_SEQUENCE_LENGTH}" if length
               == DEFAULT_MAX_SEQUENCE_LENGTH
               else "no training lengths; the model's position table is "
               "shorter than the default")
    else:
        length, why = _auto_length(
            lengths, model_limit or NO_LIMIT_LENGTH,
            hidden_dim or _DEFAULT_HIDDEN, limit_words)
    if length < num_special_tokens + 1:
        raise PlanError(
            f"--max_sequence_length={length} leaves no room for text after "
            f"{num_special_tokens} special tokens. Pass "
            f"--max_sequence_length={num_special_tokens + 8} or more.")
    cut, head, tail, cut_why = _decide_cut(
        truncation, length, num_text_columns, num_special_tokens)
    if lengths is not None and lengths.size:
        count = truncation_lib.truncated_count(lengths, length)
        covered = math.floor(1000 * (lengths.size - count) / lengths.size) / 10
        counted = (f"covers {covered:.1f}% of training texts ({count} of "
                   f"{lengths.size} truncated, {cut})")
        why = (f"{counted}; {why}" if requested == AUTO
               else f"{why}; {counted}; {limit_words}")
    return LengthChoice(
        max_sequence_length=int(length), truncation=cut,
        truncation_head=head, truncation_tail=tail,
        reasons={"max_sequence_length": why, "truncation": cut_why})


def _auto_length(lengths, limit, hidden, limit_words):
    """(length, reason) by the module's rule."""
    ordered = np.sort(lengths)
    needed = int(ordered[math.ceil(COVERAGE * ordered.size) - 1])
    base = min(_round_up(needed), limit)
    longest = min(_round_up(int(ordered[-1])), limit)

    def compute(length):
        n = np.minimum(lengths, length).astype(np.float64)
        return float(np.sum(n * (6 * hidden + n)))

    budget = (1 + EXTRA_COMPUTE) * compute(base)
    length = base
    # Compute grows with the length: stop at the first one over budget.
    for candidate in [*range(base + LENGTH_MULTIPLE, longest,
                             LENGTH_MULTIPLE), longest]:
        if candidate <= length or compute(candidate) > budget:
            break
        length = candidate
    if needed > limit:
        return length, (f"capped: {limit_words} ({COVERAGE:.0%} of the "
                        f"texts need {needed})")
    why = (f"the shortest multiple of {LENGTH_MULTIPLE} holding "
           f"{COVERAGE:.0%} of them")
    if length > base:
        why += (f", lengthened to {length} for "
                f"{compute(length) / compute(base) - 1:.1%} more compute "
                f"(at most {EXTRA_COMPUTE:.0%})")
    return length, f"{why}; {limit_words}"


def _round_up(length):
    return -(-int(length) // LENGTH_MULTIPLE) * LENGTH_MULTIPLE


def _decide_cut(truncation, length, num_text_columns, num_special_tokens):
    """(kind, head, tail, reason) of the cut of longer texts."""
    if num_text_columns == 2:
        if truncation != AUTO:
            raise PlanError(
                f"--truncation={truncation} cuts one text; sentence pairs "
                "are cut by keras-hub's packer, round robin. Pass "
                "--truncation=auto.")
        return (truncation_lib.ROUND_ROBIN, 0, 0,
                "sentence pairs: keras-hub's packer, round robin (the "
                "longer text gives way)")
    room = length - num_special_tokens
    if truncation == truncation_lib.HEAD:
        return (truncation_lib.HEAD, 0, 0,
                f"set by user: the first {room} tokens of a longer text")
    head = min(truncation_lib.head_tokens(length), room)
    why = (f"head {head} + tail {room - head} tokens of a longer text "
           "(L/4 from the start; Sun et al. 2019: 128 + 382 of 512 best on "
           "IMDb)")
    if truncation != AUTO:
        why = f"set by user: {why}"
    return truncation_lib.HEAD_TAIL, head, room - head, why
