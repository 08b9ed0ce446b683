"""Step statistics: what each training step feeds the model, and rates.

`StepStats` holds each step's real examples, real tokens and padded
tokens, counted on the host; `step_stats` counts them from the pipeline's
batch plans. `_Counts` gives the counts of a window of steps, from
`StepStats` or from fixed per-step sizes, and `_rate` turns an amount and
its seconds into a rate; the monitors of `painless_tf.monitoring.monitors`
measure with them. Plain NumPy; nothing here imports Keras.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class StepStats:
    """What each training step feeds the model, counted on the host.

    Step `i` is the `i`-th step since the current `fit` began; a fit longer
    than the arrays wraps around (one epoch's statistics then stand for
    every epoch). Between fits, `set_step_stats` swaps them.

    Args:
        examples: np.ndarray. int64 [steps], real (non-filler) examples.
        tokens: np.ndarray. int64 [steps], real tokens, special tokens
            included, padding excluded.
        padded_tokens: np.ndarray. int64 [steps], positions the model
            computes on: rows x padded length, filler rows included.

    Examples:
    >>> stats = StepStats(examples=np.array([2, 1]), tokens=np.array([9, 4]),
    ...                   padded_tokens=np.array([16, 16]))
    >>> stats.num_steps, stats.window(0, 3)
    (2, (5, 22, 48))
    """

    examples: np.ndarray
    tokens: np.ndarray
    padded_tokens: np.ndarray

    def __post_init__(self):
        arrays = {}
        for name in ("examples", "tokens", "padded_tokens"):
            array = np.asarray(getattr(self, name), dtype=np.int64).reshape(-1)
            arrays[name] = array
            object.__setattr__(self, name, array)
        sizes = {a.size for a in arrays.values()}
        if len(sizes) != 1 or not sizes.pop():
            raise ValueError(
                "`examples`, `tokens` and `padded_tokens` must be non-empty "
                "and have one entry per step. Received sizes: "
                f"{[a.size for a in arrays.values()]}."
            )
        if np.any(self.examples < 0) or np.any(self.tokens > self.padded_tokens):
            raise ValueError(
                "Step statistics must have examples >= 0 and tokens <= "
                "padded_tokens on every step. Build them with step_stats()."
            )
        for name in ("examples", "tokens", "padded_tokens"):
            cumulative = np.concatenate([[0], np.cumsum(arrays[name])])
            object.__setattr__(self, f"_cumulative_{name}", cumulative)

    @property
    def num_steps(self) -> int:
        return int(self.examples.size)

    def window(self, start: int, stop: int) -> tuple[int, int, int]:
        """(examples, tokens, padded tokens) summed over steps [start, stop)."""
        return tuple(
            _wrapped_sum(getattr(self, f"_cumulative_{name}"), start, stop)
            for name in ("examples", "tokens", "padded_tokens")
        )


def step_stats(batch_plans, lengths, *, batches=None) -> StepStats:
    """Per-step example and token counts of the batches a pipeline feeds.

    Args:
        batch_plans: `painless_tf.pipeline.BatchPlan` or a sequence of them.
            One plan per epoch, in order (as `make_dataset` chains them:
            `plan_batches(..., training=True, seed=seed, epoch=e)`), or one
            plan that stands for every epoch.
        lengths: array-like of int. Tokens per example
            (`TokenizedExamples.lengths`).
        batches: sequence of int or None. The batches (indices into the
            plans' batches, end to end) a `fit` feeds, in order: e.g.
            `range(start_batch, steps_per_epoch)` when resuming mid-epoch.
            None takes them all.

    Returns:
        A `StepStats` with one entry per batch.

    Examples:
    >>> from painless_tf import pipeline
    >>> plan = pipeline.plan_batches([3, 5, 9], global_batch_size=2,
    ...                              buckets=(8, 16), training=False)
    >>> stats = step_stats(plan, [3, 5, 9])
    >>> stats.tokens.tolist(), stats.padded_tokens.tolist()
    ([8, 9], [16, 32])
    """
    plans = (
        list(batch_plans)
        if isinstance(batch_plans, (list, tuple))
        else [batch_plans]
    )
    if not plans:
        raise ValueError("`batch_plans` is empty. Pass one BatchPlan per epoch.")
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    rows = np.concatenate([np.asarray(p.rows) for p in plans])
    batch_lengths = np.concatenate([np.asarray(p.batch_lengths) for p in plans])
    if batches is not None:
        batches = np.asarray(list(batches), dtype=np.int64).reshape(-1)
        bad = batches[(batches < 0) | (batches >= len(rows))]
        if not batches.size or bad.size:
            raise ValueError(
                f"`batches` must be non-empty indices in [0, {len(rows)}), "
                f"the plans' batches. Received: {batches[:10].tolist()}..."
            )
        rows, batch_lengths = rows[batches], batch_lengths[batches]
    if rows.size and int(rows.max()) >= lengths.size:
        raise ValueError(
            f"The batch plans refer to example {int(rows.max())}, but "
            f"`lengths` has {lengths.size} entries. Pass the lengths the "
            "plans were made from."
        )
    real = rows >= 0
    tokens = np.where(real, lengths[np.where(real, rows, 0)], 0)
    return StepStats(
        examples=real.sum(axis=1),
        tokens=tokens.sum(axis=1),
        padded_tokens=rows.shape[1] * batch_lengths.astype(np.int64),
    )


def _wrapped_sum(cumulative, start, stop):
    n = cumulative.size - 1
    total = cumulative[-1]

    def upto(i):  # sum over the first i steps of the endless repetition
        return (i // n) * total + cumulative[i % n]

    return int(upto(stop) - upto(start))


class _Counts:
    """Examples and tokens of steps, from StepStats or fixed per-step sizes."""

    def __init__(self, step_stats, examples_per_step, tokens_per_step):
        if step_stats is not None and not isinstance(step_stats, StepStats):
            raise ValueError(
                "`step_stats` must be a StepStats (see step_stats()). "
                f"Received: {type(step_stats).__name__}."
            )
        for name, value in (
            ("examples_per_step", examples_per_step),
            ("tokens_per_step", tokens_per_step),
        ):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < 1
            ):
                raise ValueError(
                    f"`{name}` must be a positive int or None. Received: "
                    f"{name}={value!r}"
                )
        self.stats = step_stats
        self.examples_per_step = examples_per_step
        self.tokens_per_step = tokens_per_step

    def window(self, start, stop):
        """(examples, tokens, padded tokens) of steps [start, stop) of the
        fit; None for what is unknown."""
        if self.stats is not None:
            return self.stats.window(start, stop)
        steps = stop - start
        examples = None if self.examples_per_step is None else (
            steps * int(self.examples_per_step)
        )
        tokens = None if self.tokens_per_step is None else (
            steps * int(self.tokens_per_step)
        )
        return examples, tokens, None


def _window(counts, interval, start, stop):
    # StepStats count the steps of the current fit.
    return counts.window(start - interval.fit_start, stop - interval.fit_start)


def _rate(amount, seconds):
    if amount is None or not seconds or seconds <= 0:
        return None
    return float(amount) / seconds
