"""Batching: length buckets and the order of an epoch's batches.

Pure NumPy, no TensorFlow: the plan (`plan.make_plan`) decides the buckets
and the steps per epoch from the token lengths here, and one `BatchPlan`
per epoch is what the dataset (`pipeline.make_dataset`), the step
statistics (`monitoring`) and the output reordering (`restore_order`)
share.

What a batch is: one optimizer update of exactly `global_batch_size` rows,
all from one length bucket (padded to its boundary); a bucket's last batch
is filled up with zero-weight rows.

The bucket rule (`bucket_rule`): under XLA each bucket is one more static
shape to compile, so at most `MAX_COMPILED_BUCKETS` boundaries at multiples
of 8; without XLA a new shape compiles nothing, so any multiple of
`UNCOMPILED_MULTIPLE` tokens, as many as lower the padding. The last
boundary always covers the longest text of every split
(`cover_every_split`), so no validation or test text can fall outside.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np
from absl import logging

# Length buckets at most when XLA compiles the step: on Rotten Tomatoes 4
# leave 22.5% of the positions the model sees as padding, 5 leave 18.9%, 6
# leave 15.6% (all-MiniLM-L6-v2 vocabulary). Each bucket is one more static
# shape for XLA to compile; 5 keeps padding under 20%.
MAX_COMPILED_BUCKETS = 5
# Without XLA the boundaries may be any multiple of this many tokens (8 on
# a GPU, for its tensor cores). On Rotten Tomatoes, multiples of 4 leave
# 7.9% padding; an epoch of the default model ran 1.14x faster with them
# than with the 5 buckets above, and boundaries of any length (4.1%
# padding) were no faster (2-core AMD EPYC with avx512_bf16, 2026-11; see
# docs/benchmarks.md).
UNCOMPILED_MULTIPLE = {"cpu": 4, "gpu": 8, "tpu": 8}


def bucket_rule(*, xla, platform, max_sequence_length):
    """Returns (multiple_of, max_buckets, why) for the bucket choice.

    Examples:
    >>> bucket_rule(xla=True, platform="gpu", max_sequence_length=128)[:2]
    (8, 5)
    >>> bucket_rule(xla=False, platform="cpu", max_sequence_length=128)[:2]
    (4, 32)
    """
    if xla:
        return 8, MAX_COMPILED_BUCKETS, (
            f"at most {MAX_COMPILED_BUCKETS}, each one more shape for XLA to "
            "compile"
        )
    multiple = UNCOMPILED_MULTIPLE.get(platform, 8)
    return multiple, -(-max_sequence_length // multiple), (
        f"multiples of {multiple} tokens, as many as lower the padding: "
        "without XLA a new shape compiles nothing"
    )


def cover_every_split(buckets, longest, *, max_sequence_length, multiple_of):
    """`buckets`, with one more boundary if a text of another split (of
    `longest` tokens) is longer than the last one.

    Examples:
    >>> cover_every_split((8, 16), 44, max_sequence_length=64, multiple_of=8)
    (8, 16, 48)
    >>> cover_every_split((8, 16), 12, max_sequence_length=64, multiple_of=8)
    (8, 16)
    """
    buckets = tuple(int(b) for b in buckets)
    if not buckets or longest <= buckets[-1]:
        return buckets
    boundary = min(max_sequence_length, -(-int(longest) // multiple_of) * multiple_of)
    return (*buckets, boundary)


def choose_buckets(
    lengths,
    *,
    max_sequence_length: int,
    max_buckets: int = 4,
    multiple_of: int = 8,
    global_batch_size: int | None = None,
) -> tuple[int, ...]:
    """Chooses bucket boundaries that minimize the padding the model sees.

    Boundaries are multiples of `multiple_of` (the largest one may instead
    be `max_sequence_length`); the largest is the longest example rounded
    up. Among all such sets of at most `max_buckets` boundaries, the one
    with the fewest padded positions is found exactly by dynamic programming
    over the length histogram. Given `global_batch_size`, the zero-weight
    filler rows that complete each bucket's last batch count as padding too,
    so small data sets get fewer buckets. Ties go to fewer, then shorter,
    buckets; the result is deterministic.

    Args:
        lengths: array-like of int. Tokens per example (e.g.
            `TokenizedExamples.lengths`).
        max_sequence_length: int. No boundary exceeds it.
        max_buckets: int. Most boundaries to return (distinct shapes XLA
            compiles for).
        multiple_of: int. Boundaries are rounded up to multiples of this
            (8 suits tensor cores and the XLA tiling).
        global_batch_size: int or None. Rows per batch, to count filler rows.

    Returns:
        Increasing tuple of ints.

    Examples:

    >>> choose_buckets([5, 6, 7, 30, 31, 60], max_sequence_length=64,
    ...                max_buckets=2)
    (8, 64)
    >>> choose_buckets([5, 6, 7, 30, 31, 60], max_sequence_length=64,
    ...                max_buckets=3)
    (8, 32, 64)
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lengths.size == 0:
        raise ValueError("`lengths` is empty: there are no examples to bucket.")
    for name, value in (
        ("max_sequence_length", max_sequence_length),
        ("max_buckets", max_buckets),
        ("multiple_of", multiple_of),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive int. Received: {name}={value!r}."
            )
    if global_batch_size is not None and (
        not isinstance(global_batch_size, int) or global_batch_size < 1
    ):
        raise ValueError(
            "`global_batch_size` must be a positive int or None. Received: "
            f"global_batch_size={global_batch_size!r}."
        )
    longest = int(lengths.max())
    if longest > max_sequence_length or int(lengths.min()) < 1:
        bad = int(np.argmax((lengths > max_sequence_length) | (lengths < 1)))
        raise ValueError(
            f"Example {bad} has {int(lengths[bad])} tokens; lengths must be in "
            f"[1, max_sequence_length={max_sequence_length}]. Tokenize with "
            "the same max_sequence_length."
        )
    # Every useful boundary is some example's length rounded up: a boundary
    # between two such values could be lowered without moving any example.
    rounded = np.minimum(
        -(-lengths // multiple_of) * multiple_of, max_sequence_length
    )
    candidates, counts = np.unique(rounded, return_counts=True)
    sums = np.bincount(
        np.searchsorted(candidates, rounded), weights=lengths
    ).astype(np.int64)
    cum_counts = np.concatenate([[0], np.cumsum(counts)])
    cum_sums = np.concatenate([[0], np.cumsum(sums)])
    num = len(candidates)

    def cost(i, j):
        # Padding of one bucket holding candidates i..j-1, boundary
        # candidates[j-1]; `i` may be a vector.
        n = cum_counts[j] - cum_counts[i]
        rows = n if global_batch_size is None else (
            -(-n // global_batch_size) * global_batch_size
        )
        return rows * candidates[j - 1] - (cum_sums[j] - cum_sums[i])

    # best[k][j]: least padding covering candidates 0..j-1 with k buckets.
    inf = np.iinfo(np.int64).max // 4
    best = np.full((max_buckets + 1, num + 1), inf, np.int64)
    best[0, 0] = 0
    choice = np.zeros((max_buckets + 1, num + 1), np.int64)
    for k in range(1, max_buckets + 1):
        for j in range(1, num + 1):
            starts = np.arange(j)
            totals = np.where(
                best[k - 1, :j] < inf, best[k - 1, :j] + cost(starts, j), inf
            )
            choice[k, j] = int(np.argmin(totals))
            best[k, j] = totals[choice[k, j]]
    # argmin takes the first minimum, so ties go to fewer buckets.
    k = int(np.argmin(best[1:, num])) + 1
    boundaries = []
    j = num
    while k:
        boundaries.append(int(candidates[j - 1]))
        j = int(choice[k, j])
        k -= 1
    boundaries = tuple(reversed(boundaries))
    logging.info(
        "buckets: %s for %d examples (mean length %.1f, longest %d); "
        "%.0f%% of the positions are padding%s, against %.0f%% padding "
        "every example to max_sequence_length=%d",
        boundaries,
        lengths.size,
        float(lengths.mean()),
        longest,
        100 * float(best[len(boundaries), num]) / (
            float(best[len(boundaries), num]) + float(lengths.sum())
        ),
        " (filler rows not counted)" if global_batch_size is None else "",
        100 * (1 - float(lengths.mean()) / max_sequence_length),
        max_sequence_length,
    )
    return boundaries


@dataclasses.dataclass(frozen=True, eq=False)
class BatchPlan:
    """Which example fills each row of each batch, for one or more epochs.

    Args:
        rows: np.ndarray. int32 [num_batches, global_batch_size]: example
            index, or -1 for a zero-weight filler row.
        batch_lengths: np.ndarray. int32 [num_batches]: the bucket length
            every row of that batch is padded to.

    Examples:

    >>> plan = plan_batches([3, 3, 9], global_batch_size=2, buckets=(8, 16),
    ...                     training=False)
    >>> plan.rows.tolist(), plan.batch_lengths.tolist()
    ([[0, 1], [2, -1]], [8, 16])
    """

    rows: np.ndarray
    batch_lengths: np.ndarray

    def __post_init__(self):
        if self.rows.ndim != 2 or self.batch_lengths.shape != (
            self.rows.shape[0],
        ):
            raise ValueError(
                "`rows` must be [num_batches, global_batch_size] and "
                "`batch_lengths` [num_batches]. Received: "
                f"{self.rows.shape} and {self.batch_lengths.shape}."
            )

    @property
    def num_batches(self) -> int:
        return int(self.rows.shape[0])

    @property
    def global_batch_size(self) -> int:
        return int(self.rows.shape[1])


def plan_batches(
    lengths,
    *,
    global_batch_size: int,
    buckets: Sequence[int],
    training: bool,
    seed: int = 0,
    epoch: int = 0,
) -> BatchPlan:
    """Plans one epoch of fixed-size, length-bucketed batches.

    Training: the examples are shuffled with `np.random.default_rng([seed,
    epoch])`, each goes to the smallest bucket that fits it, each bucket is
    cut into batches of `global_batch_size` (its last batch completed with
    fillers), and the batch order is shuffled with the same generator.
    Evaluation: the same without any shuffling. The number of batches
    depends only on the lengths, so it is the same every epoch.

    Args:
        lengths: array-like of int. Tokens per example.
        global_batch_size: int. Rows per batch (one optimizer update).
        buckets: sequence of int. Increasing bucket boundaries; the last must
            fit the longest example.
        training: bool. Shuffle (True) or keep input order (False).
        seed: int. Shuffling seed.
        epoch: int. Epoch number; every epoch has its own order.

    Returns:
        A `BatchPlan`.

    Examples:

    >>> plan = plan_batches([5, 6, 7, 30], global_batch_size=2,
    ...                     buckets=(8, 32), training=True, seed=1)
    >>> plan.num_batches, sorted(plan.batch_lengths.tolist())
    (3, [8, 8, 32])
    """
    lengths, buckets = _check_plan_args(lengths, global_batch_size, buckets)
    bucket_of = np.searchsorted(np.asarray(buckets), lengths)
    if training:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(lengths))
    else:
        order = np.arange(len(lengths))
    rows, batch_lengths = [], []
    for b, boundary in enumerate(buckets):
        members = order[bucket_of[order] == b]
        if not members.size:
            continue
        num_batches = -(-members.size // global_batch_size)
        padded = np.full(num_batches * global_batch_size, -1, np.int32)
        padded[: members.size] = members
        rows.append(padded.reshape(num_batches, global_batch_size))
        batch_lengths.append(np.full(num_batches, boundary, np.int32))
    rows = np.concatenate(rows)
    batch_lengths = np.concatenate(batch_lengths)
    if training:
        batch_order = rng.permutation(len(rows))
        rows, batch_lengths = rows[batch_order], batch_lengths[batch_order]
    return BatchPlan(rows=rows, batch_lengths=batch_lengths)


def steps_per_epoch(
    lengths, *, global_batch_size: int, buckets: Sequence[int]
) -> int:
    """Number of batches (optimizer updates) in every epoch.

    Args:
        lengths: array-like of int. Tokens per example.
        global_batch_size: int. Rows per batch.
        buckets: sequence of int. Bucket boundaries.

    Returns:
        int, the same for training and evaluation plans and for every epoch.

    Examples:

    >>> steps_per_epoch([5, 6, 7, 30], global_batch_size=2, buckets=(8, 32))
    3
    """
    lengths, buckets = _check_plan_args(lengths, global_batch_size, buckets)
    counts = np.bincount(
        np.searchsorted(np.asarray(buckets), lengths), minlength=len(buckets)
    )
    return int(np.sum(-(-counts // global_batch_size)))


def _check_plan_args(lengths, global_batch_size, buckets):
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lengths.size == 0:
        raise ValueError("`lengths` is empty: there are no examples to batch.")
    if not isinstance(global_batch_size, int) or global_batch_size < 1:
        raise ValueError(
            "`global_batch_size` must be a positive int. Received: "
            f"global_batch_size={global_batch_size!r}."
        )
    buckets = tuple(buckets)
    if (
        not buckets
        or not all(isinstance(b, (int, np.integer)) and b > 0 for b in buckets)
        or any(a >= b for a, b in zip(buckets, buckets[1:]))
    ):
        raise ValueError(
            "`buckets` must be increasing positive ints. Received: "
            f"buckets={buckets!r}. Use choose_buckets(...)."
        )
    longest = int(np.argmax(lengths))
    if lengths[longest] > buckets[-1]:
        raise ValueError(
            f"Example {longest} has {int(lengths[longest])} tokens, more than "
            f"the largest bucket {buckets[-1]}. Choose buckets from these "
            "lengths with choose_buckets(...)."
        )
    return lengths, tuple(int(b) for b in buckets)


def restore_order(batched_outputs, plan: BatchPlan) -> np.ndarray:
    """Puts outputs of an evaluation plan's batches back in input order.

    Args:
        batched_outputs: array-like [num_batches * global_batch_size, ...]
            (e.g. `model.predict(dataset)`), or a list of per-batch arrays.
        plan: BatchPlan. The plan the dataset was built from
            (`plan_batches(..., training=False)` with the same arguments).

    Returns:
        np.ndarray [num_examples, ...]; filler rows are dropped.

    Examples:

    >>> plan = plan_batches([9, 3, 3], global_batch_size=2, buckets=(8, 16),
    ...                     training=False)
    >>> plan.rows.tolist()
    [[1, 2], [0, -1]]
    >>> restore_order(np.array([10, 20, 0, -1]), plan).tolist()
    [0, 10, 20]
    """
    if isinstance(batched_outputs, (list, tuple)):
        batched_outputs = np.concatenate(
            [np.asarray(batch) for batch in batched_outputs]
        )
    outputs = np.asarray(batched_outputs)
    rows = plan.rows.reshape(-1)
    if outputs.shape[:1] != rows.shape:
        raise ValueError(
            f"Expected {rows.size} output rows ({plan.num_batches} batches x "
            f"{plan.global_batch_size}), received {outputs.shape[:1]}. Predict "
            "on the whole dataset of this plan, with one worker."
        )
    real = rows >= 0
    num_examples = int(np.sum(real))
    restored = np.empty((num_examples,) + outputs.shape[1:], outputs.dtype)
    restored[rows[real]] = outputs[real]
    return restored


def padding_fraction(
    lengths,
    plan: BatchPlan | None = None,
    *,
    sequence_length: int | None = None,
) -> float:
    """Share of padding positions among all the positions the model sees.

    Filler rows count as padding. Pass `plan` for a bucketed plan, or
    `sequence_length` for the baseline that pads every example to one length
    (keras-hub's default preprocessing, without filler rows).

    Args:
        lengths: array-like of int. Tokens per example.
        plan: BatchPlan or None. The plan to measure.
        sequence_length: int or None. Fixed padded length of the baseline.

    Returns:
        float in [0, 1).

    Examples:

    >>> lengths = [4, 4, 4, 60]
    >>> plan = plan_batches(lengths, global_batch_size=2, buckets=(8, 64),
    ...                     training=False)
    >>> round(padding_fraction(lengths, plan), 3)
    0.55
    >>> round(padding_fraction(lengths, sequence_length=64), 3)
    0.719
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if (plan is None) == (sequence_length is None):
        raise ValueError(
            "Pass exactly one of `plan` and `sequence_length`. Received: "
            f"plan={'set' if plan is not None else None}, "
            f"sequence_length={sequence_length}."
        )
    if plan is not None:
        seen = int(np.sum(plan.batch_lengths, dtype=np.int64)) * (
            plan.global_batch_size
        )
        real_rows = plan.rows[plan.rows >= 0]
        real = int(np.sum(lengths[real_rows]))
    else:
        seen = int(sequence_length) * lengths.size
        real = int(np.sum(np.minimum(lengths, sequence_length)))
    return 1.0 - real / seen
