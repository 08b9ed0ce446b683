"""Reading a learning rate off a range-test curve, and drawing it.

Pure functions of the curve that `lr_finder.range_test` records: the rate
of each update, its training loss and, after each update, the loss of the
probe's fixed batches. No model is built: the rules are tested
on synthetic and recorded curves (`tests/data/`).

Rule. The default, "edge/10", takes a tenth of the rate at which the probe
loss first climbs `edge_rise` (25%) above its lowest value so far: the edge
of stability, which a sweep finds as a jump (on that model and set 1.5-1.6x
within one update), not a level within the noise. A tenth of it is an order
of magnitude inside the stable region (Smith 2018: the largest rate before
the loss turns up is the one-cycle peak; fastai's `lr_min` is the same tenth
of the lowest point, which lies just below the edge). When the loss does
not climb within the sweep, the edge lies beyond it and a tenth of the
sweep's last rate is taken, which the clamp bounds. "min/10" takes a tenth
of the rate at which the smoothed loss is lowest; "steepest" the rate at
which it falls fastest per unit of log rate (Lightning's suggestion). Both
read the probe curve when there is one (`probe_batches=0`: the training
loss). On the three seeds measured, edge/10 read 1.0e-4 each time (after
the clamp), min/10 on the training loss 1.0e-4, 2.2e-5 and 1.0e-4.

Smoothing. A centered moving average of `smoothing_window` updates. The
exponential average of fastai lags by beta / (1 - beta) updates, which on
the default sweep (32 updates from 1e-6 to 1e-2: the rate grows 1.35x per
update) moves the minimum by a factor of ~15 at beta 0.9; a centered
window has no lag.

No signal. For min/10 and steepest: when the smoothed loss never falls
`min_drop` (2%) below its start, the curve says nothing about the rate (a
head that cannot learn the task in a few updates, or noise larger than the
trend), and the recipe's batch-scaled rate is kept instead. edge/10 reads
the climb, not the fall, and needs no fall.
"""

import dataclasses
import io
import math
import os

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

RULES = ("edge/10", "min/10", "steepest")
PLOT_FILE = "lr_range_test.png"


@dataclasses.dataclass(frozen=True)
class RangeTestResult:
    """The chosen rate, why, and the curve it was read from.

    Args:
        learning_rate: float. The chosen peak learning rate.
        reason: str. One line: rule, where the curve turned, any clamp.
        rule: str. "edge/10", "min/10" or "steepest".
        learning_rates: tuple[float, ...]. The rate of each update.
        losses: tuple[float, ...]. Each update's training loss (inf where
            it was not finite).
        smoothed_losses: tuple[float, ...]. The smoothed finite prefix of
            the curve read: the probe's (unsmoothed) or the training loss.
        bounds: tuple[float, float]. The clamp of the choice.
        probe_losses: tuple[float, ...]. The probe's loss after each update
            (inf where not finite); empty without a probe.

    Examples:
    >>> rates = sweep_rates(1e-6, 1e-3, 10)
    >>> losses = [0.7 - 0.01 * i for i in range(10)]
    >>> result = choose_learning_rate(rates, losses, probe_losses=losses,
    ...                               bounds=(1e-5, 1e-4))
    >>> RangeTestResult.from_dict(result.to_dict()) == result
    True
    """

    learning_rate: float
    reason: str
    rule: str
    learning_rates: tuple
    losses: tuple
    smoothed_losses: tuple
    bounds: tuple
    probe_losses: tuple = ()

    def to_dict(self) -> dict:
        """JSON-ready (non-finite losses become None), for `plan.json`."""
        return {
            "learning_rate": self.learning_rate,
            "reason": self.reason,
            "rule": self.rule,
            "learning_rates": list(self.learning_rates),
            "losses": [x if math.isfinite(x) else None for x in self.losses],
            "smoothed_losses": list(self.smoothed_losses),
            "bounds": list(self.bounds),
            "probe_losses": [
                x if math.isfinite(x) else None for x in self.probe_losses
            ],
        }

    @classmethod
    def from_dict(cls, values) -> "RangeTestResult":
        """Reads `to_dict()` output back."""
        return cls(
            learning_rate=float(values["learning_rate"]),
            reason=str(values["reason"]),
            rule=str(values["rule"]),
            learning_rates=tuple(float(x) for x in values["learning_rates"]),
            losses=tuple(
                math.inf if x is None else float(x) for x in values["losses"]
            ),
            smoothed_losses=tuple(float(x) for x in values["smoothed_losses"]),
            bounds=tuple(float(x) for x in values["bounds"]),
            # Absent from the records of runs made before the probe.
            probe_losses=tuple(
                math.inf if x is None else float(x)
                for x in values.get("probe_losses", ())
            ),
        )


def sweep_rates(min_learning_rate, max_learning_rate, num_steps) -> np.ndarray:
    """`num_steps` rates growing geometrically from the first to the last.

    Examples:
    >>> [float(f"{r:.0e}") for r in sweep_rates(1e-6, 1e-3, 4)]
    [1e-06, 1e-05, 0.0001, 0.001]
    """
    return np.geomspace(min_learning_rate, max_learning_rate, num_steps)


def smooth(losses, window: int) -> np.ndarray:
    """Centered moving average; the window shrinks at both ends.

    Examples:
    >>> smooth([1.0, 2.0, 3.0, 10.0], 3).tolist()
    [1.5, 2.0, 5.0, 6.5]
    """
    values = np.asarray(losses, dtype=np.float64)
    half = window // 2
    return np.array([
        values[max(0, i - half):i + half + 1].mean()
        for i in range(len(values))
    ])


def diverged(losses, *, factor: float, window: int) -> bool:
    """Whether a sweep's losses so far have diverged.

    The last loss is not finite, or the median of the last `window` losses
    (the lower middle value of an even count) exceeds `factor` times the
    lowest such median before it. One batch far above the rest, as a
    heavy-tailed regression target gives, does not end the sweep; a loss
    that keeps climbing ends it within `window // 2 + 1` updates.

    Examples:
    >>> diverged([1.0, 0.9, 12.0], factor=4.0, window=5)  # one noisy batch
    False
    >>> diverged([1.0, 0.9, 4.0, 12.0, 40.0], factor=4.0, window=5)
    True
    >>> diverged([1.0, float("nan")], factor=4.0, window=5)
    True
    """
    if not math.isfinite(losses[-1]):
        return True
    medians = []
    for end in range(1, len(losses) + 1):
        recent = sorted(losses[max(0, end - window):end])
        medians.append(recent[(len(recent) - 1) // 2])
    return len(medians) > 1 and medians[-1] > factor * min(medians[:-1])


def past_the_edge(probe_losses, *, edge_rise: float) -> bool:
    """Whether the last probe loss ends the sweep: it is not finite, or it
    climbed `edge_rise` above the lowest probe loss before it (edge/10's
    edge, which `choose_learning_rate` reads).

    Examples:
    >>> past_the_edge([0.70, 0.60, 0.70], edge_rise=0.25)
    False
    >>> past_the_edge([0.70, 0.60, 0.76], edge_rise=0.25)
    True
    """
    last = probe_losses[-1]
    before = probe_losses[:-1]
    return not math.isfinite(last) or (
        len(before) > 0 and last > (1 + edge_rise) * min(before))


def check_reading(rule, smoothing_window, edge_rise) -> None:
    """Raises `ValueError` unless the three settings can read a curve.

    Examples:
    >>> check_reading("min/10", 5, 0.25)
    >>> check_reading("lowest", 5, 0.25)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `rule` must be one of edge/10, min/10, steepest. ...
    """
    if rule not in RULES:
        raise ValueError(
            f"`rule` must be one of {', '.join(RULES)}. Received: "
            f"rule={rule!r}"
        )
    if isinstance(smoothing_window, bool) or not (
        isinstance(smoothing_window, int) and smoothing_window >= 1
        and smoothing_window % 2 == 1
    ):
        raise ValueError(
            "`smoothing_window` must be an odd integer >= 1 (a centered "
            f"window). Received: smoothing_window={smoothing_window!r}"
        )
    if not edge_rise > 0:
        raise ValueError(
            f"`edge_rise` must be > 0. Received: edge_rise={edge_rise!r}"
        )


def choose_learning_rate(
    learning_rates,
    losses,
    *,
    probe_losses=None,
    rule: str = "edge/10",
    bounds: tuple = (1e-5, 1e-4),
    smoothing_window: int = 5,
    fallback: float | None = None,
    min_drop: float = 0.02,
    edge_rise: float = 0.25,
) -> RangeTestResult:
    """Reads a learning rate off a range-test curve (a pure function).

    Args:
        learning_rates: Sequence[float]. The rate of each update, growing.
        losses: Sequence[float]. Each update's training loss.
        probe_losses: Sequence[float] | None. The probe's loss after each
            update; when given, it is the curve read (unsmoothed). edge/10
            needs it.
        rule: str. "edge/10", "min/10" or "steepest" (see the module
            docstring).
        bounds: tuple[float, float]. The choice is clamped into them.
        smoothing_window: int. Updates in the centered moving average of
            the training loss.
        fallback: float | None. For min/10 and steepest: the rate to keep
            when the smoothed loss never falls `min_drop` below its start
            (no signal); None reads the curve anyway.
        min_drop: float. The relative fall that counts as a signal.
        edge_rise: float. For edge/10: the climb above the lowest probe
            loss so far that marks the edge.

    The curve ends at its first non-finite value.

    Returns:
        A `RangeTestResult`.

    Examples:
    >>> rates = sweep_rates(1e-6, 1e-3, 7)
    >>> losses = [0.70, 0.69, 0.60, 0.40, 0.35, 0.30, float("inf")]
    >>> result = choose_learning_rate(rates, losses, rule="min/10",
    ...                               smoothing_window=1)
    >>> f"{result.learning_rate:.1e}"
    '3.2e-05'
    >>> probe = [0.70, 0.69, 0.66, 0.60, 0.55, 0.90, 2.0]
    >>> result = choose_learning_rate(rates, probe, probe_losses=probe)
    >>> f"{result.learning_rate:.1e}"
    '3.2e-05'
    """
    check_reading(rule, smoothing_window, edge_rise)
    rates = np.asarray(learning_rates, dtype=np.float64)
    values = np.asarray(losses, dtype=np.float64)
    if rates.shape != values.shape or rates.ndim != 1:
        raise ValueError(
            "`learning_rates` and `losses` must be 1-D and of one length. "
            f"Received: {rates.shape} and {values.shape}"
        )
    probe = None
    if probe_losses is not None:
        probe = np.asarray(probe_losses, dtype=np.float64)
        if probe.shape != rates.shape:
            raise ValueError(
                "`probe_losses` must have one value per rate. Received: "
                f"{probe.shape} and {rates.shape}"
            )
    elif rule == "edge/10":
        raise ValueError(
            "The edge/10 rule reads `probe_losses`; pass them, or "
            "rule='min/10'."
        )
    curve = values if probe is None else probe
    window = smoothing_window if probe is None else 1
    record = dict(
        rule=rule,
        learning_rates=tuple(float(r) for r in rates),
        losses=tuple(float(x) if np.isfinite(x) else math.inf for x in values),
        bounds=(float(bounds[0]), float(bounds[1])),
        probe_losses=() if probe is None else tuple(
            float(x) if np.isfinite(x) else math.inf for x in probe),
    )
    low, high = record["bounds"]
    finite = np.isfinite(curve)
    n = int(np.argmin(finite)) if not finite.all() else len(curve)
    which = "training loss" if probe is None else "probe loss"
    sweep = (
        f"over {n} updates from {_rate(rates[0])} to "
        f"{_rate(rates[max(n - 1, 0)])}" if n else "before the first update"
    )
    if n < 3:
        smoothed = smooth(curve[:n], window)
        return RangeTestResult(
            learning_rate=low,
            reason=(
                f"LR range test: the {which} diverged {sweep}; the "
                f"recipe's lowest rate {_rate(low)}"
            ),
            smoothed_losses=tuple(float(x) for x in smoothed),
            **record,
        )
    smoothed = smooth(curve[:n], min(window, _odd_at_most(n)))
    if rule == "edge/10":
        lowest = np.minimum.accumulate(smoothed)
        climbed = np.flatnonzero(smoothed[1:] > (1 + edge_rise) * lowest[:-1])
        if climbed.size:
            edge = int(climbed[0]) + 1
            candidate = rates[edge] / 10
            found = (
                f"probe loss climbed {100 * edge_rise:g}% above its lowest "
                f"({lowest[edge - 1]:.3f}) at {_rate(rates[edge])} {sweep}; "
                f"/ 10 = {_rate(candidate)}"
            )
        elif n < len(curve):
            candidate = rates[n] / 10
            found = (
                f"probe loss not finite at {_rate(rates[n])} {sweep}; / 10 "
                f"= {_rate(candidate)}"
            )
        else:
            candidate = rates[n - 1] / 10
            found = (
                f"probe loss never climbed {100 * edge_rise:g}% above its "
                f"lowest {sweep}: the edge lies beyond; / 10 = "
                f"{_rate(candidate)}"
            )
    else:
        if rule == "min/10":
            index = int(np.argmin(smoothed))
            candidate = rates[index] / 10
            found = (
                f"smoothed {which} lowest ({smoothed[index]:.3f}) at "
                f"{_rate(rates[index])} {sweep}; / 10 = {_rate(candidate)}"
            )
        else:
            slopes = np.gradient(smoothed, np.log(rates[:n]))
            index = int(np.argmin(slopes))
            candidate = rates[index]
            found = (
                f"smoothed {which} falls fastest ({slopes[index]:.3f} per "
                f"e-fold) at {_rate(candidate)} {sweep}"
            )
            if slopes[index] >= 0:
                candidate = 0.0
                found = f"smoothed {which} never falls {sweep}"
        drop = (smoothed[0] - smoothed.min()) / max(abs(smoothed[0]), 1e-12)
        if fallback is not None and drop < min_drop:
            candidate = fallback
            found = (
                f"smoothed {which} fell {100 * drop:.1f}% {sweep}, under "
                f"{100 * min_drop:g}%: no signal, the recipe's "
                f"{_rate(fallback)}"
            )
        elif index == n - 1 and n == len(curve):
            found += "; still falling at the sweep's end"
        elif n < len(curve):
            found += f"; diverged at {_rate(rates[n])}"
    chosen = min(max(candidate, low), high)
    if candidate < low:
        found += f"; raised to the recipe's lowest {_rate(low)}"
    elif candidate > high:
        found += f"; lowered to the recipe's highest {_rate(high)}"
    return RangeTestResult(
        learning_rate=float(chosen),
        reason=f"LR range test, {rule} rule: {found}",
        smoothed_losses=tuple(float(x) for x in smoothed),
        **record,
    )


def plot(result: RangeTestResult, path: str) -> None:
    """Draws the curve, its smoothing, the recipe range and the choice.

    Args:
        result: RangeTestResult. What to draw.
        path: str. The PNG to write (any `tf.io.gfile` path).

    Examples:
    >>> import os, tempfile
    >>> rates = sweep_rates(1e-6, 1e-3, 8)
    >>> probe = [0.7, 0.7, 0.6, 0.5, 0.4, 0.3, 0.5, 3.0]
    >>> result = choose_learning_rate(rates, [0.69] * 8, probe_losses=probe)
    >>> path = os.path.join(tempfile.mkdtemp(), "lr.png")
    >>> plot(result, path); open(path, "rb").read(4) == b"\\x89PNG"
    True
    """
    figure = Figure(figsize=(7.5, 3.6), dpi=100)
    axes = figure.subplots()
    axes.grid(True, alpha=0.3)
    rates = np.asarray(result.learning_rates)
    losses = np.asarray(result.losses)
    finite = np.isfinite(losses)
    low, high = result.bounds
    axes.axvspan(low, high, color="#2ca02c", alpha=0.08,
                 label="recipe range (the clamp)")
    axes.plot(rates[finite], losses[finite], ".", color="#1f77b4", alpha=0.5,
              label="loss of each update")
    if result.probe_losses:
        probe = np.asarray(result.probe_losses)
        shown = np.isfinite(probe)
        axes.plot(rates[:len(probe)][shown], probe[shown], "-o",
                  color="#ff7f0e", markersize=3,
                  label="probe loss (fixed batches, no dropout)")
    else:
        axes.plot(rates[:len(result.smoothed_losses)],
                  result.smoothed_losses, "-", color="#1f77b4",
                  label="smoothed")
    axes.axvline(result.learning_rate, color="#d62728", linestyle="--",
                 label=f"chosen {_rate(result.learning_rate)} "
                       f"({result.rule})")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss")
    axes.set_title("Learning-rate range test")
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    # A bare Figure renders with the Agg canvas: no pyplot, no global state.
    figure.savefig(buffer, format="png")
    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def _odd_at_most(n):
    return n if n % 2 else n - 1


def _rate(rate):
    return f"{rate:.1e}"
