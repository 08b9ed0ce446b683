"""Seed statistics, tables and issue 18's targets for the accuracy suite.

`bench/accuracy.py` collects one result dict per (set, variant, seed) run;
`summarize` groups them by set and variant (mean and min-max of each
headline metric over the finished seeds, the mean training time and its
ratio to `recipe`'s), `targets` judges the issue's targets and `markdown`
renders both. No TensorFlow here. A run that did not finish is counted as
missing, never as a number, and a target whose inputs are incomplete is
reported as missing, not as met.
"""

import math
import statistics

BASELINE = "recipe"
ROTTEN_TOMATOES = "rotten_tomatoes"
# Issue 18: mean test accuracy on Rotten Tomatoes, over the seeds.
ACCURACY_TARGET = 0.865
# Issue 18: a variant's mean training time at most this times recipe's.
TIME_RATIO_TARGET = 1.3

# The metrics the tables show per task, the first being the one a target
# compares (all of them are in `evaluation.HEADLINE_KEYS`).
TABLE_METRICS = {
    "classification": ("accuracy", "macro_f1"),
    "regression": ("rmse",),
    "multi_label": ("micro_f1",),
}
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
_LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "rmse": "RMSE",
           "micro_f1": "micro-F1"}

MET, NOT_MET, MISSING = "met", "NOT met", "missing"


def summarize(results, *, sets, variants, seeds):
    """Per set and variant: the seeds' statistics.

    Args:
        results: list of run result dicts (`set`, `variant`, `seed`,
            `finished`, and for finished runs `task`, `test` (metric ->
            value) and `wall_seconds`).
        sets, variants, seeds: the suite's lists, in table order.

    Returns:
        `{set: {"task": str or None, "variants": {variant: summary}}}`; a
        summary holds `seeds` (asked), `finished`, `missing` (seeds),
        `metrics` (`{name: {"mean", "min", "max", "spread", "delta"}}`,
        `delta` being the mean minus recipe's, None without recipe),
        `seconds_mean`, `seconds_complete` (every finished run fully
        timed) and `time_ratio` (to recipe's mean; None without).

    Examples:
    >>> runs = [{"set": "s", "variant": v, "seed": k, "finished": True,
    ...          "task": "classification", "wall_seconds": t,
    ...          "test": {"accuracy": a, "macro_f1": a}}
    ...         for v, k, a, t in [("recipe", 0, 0.8, 10.0),
    ...                            ("recipe", 1, 0.9, 10.0),
    ...                            ("layer_decay", 0, 0.9, 12.0)]]
    >>> s = summarize(runs, sets=["s"], variants=["recipe", "layer_decay"],
    ...               seeds=[0, 1])["s"]["variants"]
    >>> round(s["recipe"]["metrics"]["accuracy"]["spread"], 4)
    0.1
    >>> s["layer_decay"]["missing"], s["layer_decay"]["time_ratio"]
    ([1], 1.2)
    """
    by_key = {(r["set"], r["variant"], r["seed"]): r for r in results}
    summaries = {}
    for name in sets:
        runs = [by_key.get((name, v, k)) for v in variants for k in seeds]
        tasks = [r["task"] for r in runs if r and r.get("finished")]
        task = tasks[0] if tasks else None
        table = {}
        for variant in variants:
            done = [by_key[name, variant, k] for k in seeds
                    if by_key.get((name, variant, k), {}).get("finished")]
            table[variant] = _variant_summary(done, task, seeds)
        base = table.get(BASELINE)
        for variant, summary in table.items():
            _compare(summary, base)
        summaries[name] = {"task": task, "variants": table}
    return summaries


def _variant_summary(done, task, seeds):
    finished = {r["seed"] for r in done}
    metrics = {}
    for key in TABLE_METRICS.get(task, ()):
        values = [r["test"][key] for r in done
                  if _finite(r.get("test", {}).get(key))]
        if values:
            metrics[key] = {
                "mean": statistics.fmean(values), "min": min(values),
                "max": max(values), "spread": max(values) - min(values),
                "runs": len(values),
            }
    seconds = [r["wall_seconds"] for r in done
               if _finite(r.get("wall_seconds"))]
    return {
        "seeds": list(seeds),
        "finished": len(finished),
        "missing": [k for k in seeds if k not in finished],
        "metrics": metrics,
        "seconds_mean": statistics.fmean(seconds) if seconds else None,
        "seconds_complete": bool(done) and len(seconds) == len(done)
        and all(r.get("wall_seconds_complete", True) for r in done),
    }


def _compare(summary, base):
    for key, stats in summary["metrics"].items():
        other = (base or {}).get("metrics", {}).get(key)
        stats["delta"] = stats["mean"] - other["mean"] if other else None
    base_seconds = (base or {}).get("seconds_mean")
    summary["time_ratio"] = (
        summary["seconds_mean"] / base_seconds
        if summary["seconds_mean"] is not None and base_seconds else None)


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def _better_or_equal(key, value, reference):
    return value <= reference if key in LOWER_IS_BETTER else value >= reference


def targets(summaries):
    """Issue 18's targets for every variant beside recipe.

    On Rotten Tomatoes: mean test accuracy >= `ACCURACY_TARGET`, a spread
    (max - min over the seeds) smaller than recipe's and a mean training
    time within `TIME_RATIO_TARGET` x recipe's; on every other set: a mean
    of the task's first headline metric (accuracy, RMSE, micro-F1) no
    worse than recipe's. A target is judged only on complete inputs (every
    seed of the variant and of recipe finished); else it is missing.

    Returns:
        list of `{"variant", "target", "status", "detail"}` with status
        `MET`, `NOT_MET` or `MISSING`.

    Examples:
    >>> runs = [{"set": "rotten_tomatoes", "variant": v, "seed": 0,
    ...          "finished": True, "task": "classification",
    ...          "wall_seconds": 10.0, "test": {"accuracy": a}}
    ...         for v, a in [("recipe", 0.85), ("layer_decay", 0.87)]]
    >>> s = summarize(runs, sets=["rotten_tomatoes"],
    ...               variants=["recipe", "layer_decay"], seeds=[0])
    >>> [t["status"] for t in targets(s)]
    ['met', 'missing', 'met', 'missing']
    """
    variants = []
    for summary in summaries.values():
        variants += [v for v in summary["variants"] if v not in variants]
    found = []
    for variant in variants:
        if variant == BASELINE:
            continue

        def add(target, status, detail, variant=variant):
            found.append({"variant": variant, "target": target,
                          "status": status, "detail": detail})

        add(*_accuracy_target(summaries, variant))
        add(*_spread_target(summaries, variant))
        add(*_time_target(summaries, variant))
        add(*_real_sets_target(summaries, variant))
    return found


def _complete(summaries, name, variant, key=None):
    """(this variant's summary, recipe's) on set `name`, or None and the
    reason; complete means every seed finished (with metric `key`)."""
    if name not in summaries:
        return None, f"{name} not in this run"
    table = summaries[name]["variants"]
    if BASELINE not in table:
        return None, f"no {BASELINE} runs to compare with"
    for who in (variant, BASELINE):
        if table[who]["missing"]:
            seeds = ", ".join(str(k) for k in table[who]["missing"])
            return None, f"{who} on {name}: seed {seeds} missing"
        if key is not None and key not in table[who]["metrics"]:
            return None, f"{who} on {name}: no {_LABELS[key]}"
    return (table[variant], table[BASELINE]), None


def _accuracy_target(summaries, variant):
    target = f"Rotten Tomatoes mean test accuracy >= {ACCURACY_TARGET}"
    pair, reason = _complete(summaries, ROTTEN_TOMATOES, variant, "accuracy")
    if pair is None:
        return target, MISSING, reason
    mean = pair[0]["metrics"]["accuracy"]["mean"]
    return (target, MET if mean >= ACCURACY_TARGET else NOT_MET,
            f"{mean:.4f}")


def _spread_target(summaries, variant):
    target = "Rotten Tomatoes accuracy spread over seeds smaller than recipe's"
    pair, reason = _complete(summaries, ROTTEN_TOMATOES, variant, "accuracy")
    if pair is None:
        return target, MISSING, reason
    if len(pair[0]["seeds"]) < 2:
        return target, MISSING, "one seed has no spread: pass --seeds=0,1,2"
    mine, base = (p["metrics"]["accuracy"]["spread"] for p in pair)
    return (target, MET if mine < base else NOT_MET,
            f"{mine:.4f} vs {base:.4f}")


def _time_target(summaries, variant):
    target = (f"Rotten Tomatoes mean training time <= {TIME_RATIO_TARGET}x "
              "recipe's")
    pair, reason = _complete(summaries, ROTTEN_TOMATOES, variant)
    if pair is None:
        return target, MISSING, reason
    ratio = pair[0]["time_ratio"]
    if ratio is None or not all(p["seconds_complete"] for p in pair):
        return target, MISSING, "some runs' time is incomplete"
    return (target, MET if ratio <= TIME_RATIO_TARGET else NOT_MET,
            f"{ratio:.2f}x")


def _real_sets_target(summaries, variant):
    target = "no real set worse than recipe (mean of the first metric)"
    real = [n for n in summaries if n != ROTTEN_TOMATOES]
    if not real:
        return target, MISSING, "no real set in this run"
    worse, missing, better = [], [], []
    for name in real:
        task = summaries[name]["task"]
        key = TABLE_METRICS[task][0] if task in TABLE_METRICS else None
        pair, reason = _complete(summaries, name, variant, key)
        if pair is None or key is None:
            missing.append(reason or f"{name}: no finished run")
            continue
        mine, base = (p["metrics"][key]["mean"] for p in pair)
        line = f"{name} {_LABELS[key]} {mine:.4f} vs {base:.4f}"
        (better if _better_or_equal(key, mine, base) else worse).append(line)
    if worse:
        return target, NOT_MET, "; ".join(worse + missing)
    if missing:
        return target, MISSING, "; ".join(missing)
    return target, MET, "; ".join(better)


def markdown(summaries):
    """One markdown table per set (its task in the heading)."""
    parts = []
    for name, summary in summaries.items():
        task = summary["task"]
        keys = TABLE_METRICS.get(task, ())
        header = (["variant", "seeds"]
                  + [f"test {_LABELS[k]}: mean (min-max, spread)"
                     for k in keys]
                  + ["train time s (mean)", "time / recipe"]
                  + [f"delta {_LABELS[k]} vs recipe" for k in keys])
        lines = [f"### {name} ({task or 'task unknown: no run finished'})",
                 "", "| " + " | ".join(header) + " |",
                 "|" + "---|" * len(header)]
        for variant, s in summary["variants"].items():
            cells = [variant, _seeds_cell(s)]
            for key in keys:
                stats = s["metrics"].get(key)
                cells.append(
                    f"{stats['mean']:.4f} ({stats['min']:.4f}-"
                    f"{stats['max']:.4f}, {stats['spread']:.4f})"
                    if stats else MISSING)
            if s["seconds_mean"] is None:
                cells.append(MISSING)
            else:
                cells.append(f"{s['seconds_mean']:,.0f}" + (
                    "" if s["seconds_complete"] else " (partly untimed)"))
            cells.append(_number(s["time_ratio"], "{:.2f}x"))
            for key in keys:
                stats = s["metrics"].get(key)
                cells.append("-" if variant == BASELINE else _number(
                    stats and stats["delta"], "{:+.4f}"))
            lines.append("| " + " | ".join(cells) + " |")
        if not keys:
            lines.append("")
            lines.append("No run of this set finished.")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _seeds_cell(summary):
    cell = f"{summary['finished']} of {len(summary['seeds'])}"
    if summary["missing"]:
        cell += " (missing: seed " + ", ".join(
            str(k) for k in summary["missing"]) + ")"
    return cell


def _number(value, spec):
    return MISSING if value is None else spec.format(value)


def target_lines(found):
    """The targets as lines: `variant: target: status (detail)`."""
    return [f"{t['variant']}: {t['target']}: {t['status']} ({t['detail']})"
            for t in found]
