"""Ratios and markdown tables from benchmark results (no TensorFlow here).

`bench/run.py` collects one result dict per configuration into sections
(`{"cpu": {"results": {name: result}}, ...}`); `add_mfu`, `ratios` and
`markdown` turn them into what people read. Targets come from the issues
and are reported, never asserted: speed depends on the machine and its load.
"""

import math

# (ratio name, numerator config, denominator config, result field, target,
#  "min" when the ratio should reach the target, "max" when stay under it).
_RATIOS = {
    "cpu": (
        ("painless / keras-hub default, examples/sec", "painless",
         "keras_hub_default", "examples_per_sec", 5.0, "min"),
        ("painless / hand-picked (seq 128, bf16), examples/sec", "painless",
         "keras_hub_hand_picked", "examples_per_sec", 1.5, "min"),
        ("painless / Keras built-in accumulation, examples/sec", "painless",
         "keras_builtin_accumulation", "examples_per_sec", None, "min"),
        ("painless / keras-hub default, real tokens/sec", "painless",
         "keras_hub_default", "real_tokens_per_sec", None, "min"),
        ("painless / keras-hub default, time to first step", "painless",
         "keras_hub_default", "time_to_first_step_s", None, "max"),
    ),
    "engine": (
        ("k=4 x b / one step of 4b, float32, examples/sec",
         "painless_k4_float32", "painless_k1_float32", "examples_per_sec",
         0.95, "min"),
        ("k=4 x b / one step of 4b, plan precision, examples/sec",
         "painless_k4_plan", "painless_k1_plan", "examples_per_sec", 0.95,
         "min"),
        # The engine's own cost: k=4 x b against k=1 x b on the same
        # kernels; the ratio above also holds the kernels' speed at b vs 4b.
        ("k=4 x b / one step of b, float32, examples/sec",
         "painless_k4_float32", "painless_b_float32", "examples_per_sec",
         None, "min"),
        ("k=4 x b / one step of b, plan precision, examples/sec",
         "painless_k4_plan", "painless_b_plan", "examples_per_sec", None,
         "min"),
        ("painless k=4 / Keras built-in k=4, float32, examples/sec",
         "painless_k4_float32", "keras_k4_float32", "examples_per_sec", 0.95,
         "min"),
        ("painless k=4 / Keras built-in k=4, plan precision, examples/sec",
         "painless_k4_plan", "keras_k4_plan", "examples_per_sec", 0.95,
         "min"),
        ("peak RSS: k=4 x b / batch b, float32", "painless_k4_float32",
         "painless_b_float32", "peak_rss_mib", None, "max"),
        ("peak RSS: k=4 x b / batch 4b, float32", "painless_k4_float32",
         "painless_k1_float32", "peak_rss_mib", None, "max"),
        ("RSS growth in fit: k=4 x b / batch b, float32",
         "painless_k4_float32", "painless_b_float32", "rss_growth_mib", None,
         "max"),
        ("RSS growth in fit: k=4 x b / batch 4b, float32",
         "painless_k4_float32", "painless_k1_float32", "rss_growth_mib", None,
         "max"),
    ),
    "freezing": (
        ("head only / all layers, examples/sec", "layers_0", "layers_all",
         "examples_per_sec", 2.0, "min"),
        ("top 2 layers / all layers, examples/sec", "layers_2",
         "layers_all", "examples_per_sec", None, "min"),
        ("top 4 layers / all layers, examples/sec", "layers_4",
         "layers_all", "examples_per_sec", None, "min"),
        ("peak RSS: head only / all layers", "layers_0", "layers_all",
         "peak_rss_mib", None, "max"),
    ),
    "peer": (
        ("painless / HF Trainer, examples/sec", "painless", "hf_trainer",
         "examples_per_sec", 1.5, "min"),
        ("painless / HF Trainer, real tokens/sec", "painless", "hf_trainer",
         "real_tokens_per_sec", None, "min"),
        ("peak RSS: painless / HF Trainer", "painless", "hf_trainer",
         "peak_rss_mib", 1.0, "max"),
        ("time to first step from launch: painless / HF Trainer",
         "painless", "hf_trainer", "time_to_first_step_from_launch_s", None,
         "max"),
    ),
    "pipeline": (
        ("our pipeline / keras-hub default path, examples/sec",
         "our_pipeline", "keras_hub_default", "examples_per_sec", 4.0, "min"),
    ),
}

# Columns of the markdown tables: (header, result field, format).
_COLUMNS = (
    ("precision", "precision", "{}"),
    ("seq / buckets", None, None),
    ("micro x k", None, None),
    ("examples/s", "examples_per_sec", "{:.1f}"),
    ("real tokens/s", "real_tokens_per_sec", "{:,.0f}"),
    ("padding", "padding_fraction", "{:.0%}"),
    ("MFU", "mfu", "{:.1%}"),
    # One global batch is one update, except where a config trains on
    # micro-batches without accumulating (the engine's batch-b reference).
    ("s / global batch (median)", "update_seconds_median", "{:.3f}"),
    ("peak RSS MiB", "peak_rss_mib", "{:,.0f}"),
    ("RSS growth MiB", "rss_growth_mib", "{:,.0f}"),
    ("first step s", "time_to_first_step_s", "{:.1f}"),
)
# Further columns of one section's table.
_SECTION_COLUMNS = {
    # The peer imports PyTorch, the others TensorFlow: from launch, the
    # imports count too.
    "peer": (("first step from launch s", "time_to_first_step_from_launch_s",
              "{:.1f}"),),
}


def add_mfu(sections, peaks):
    """Adds `mfu` and `rss_growth_mib` to every result, in place.

    Args:
        sections: dict. `{section: {"results": {name: result}}}`.
        peaks: dict. `{precision: {"flops": float, ...}}`.

    Examples:
    >>> s = {"cpu": {"results": {"a": {"precision": "float32",
    ...      "model_flops_per_sec": 5.0}}}}
    >>> add_mfu(s, {"float32": {"flops": 10.0}})
    >>> s["cpu"]["results"]["a"]["mfu"]
    0.5
    """
    for section in sections.values():
        for result in section["results"].values():
            peak = peaks.get(result.get("precision"), {}).get("flops")
            achieved = result.get("model_flops_per_sec")
            if peak and achieved is not None and math.isfinite(peak):
                result["mfu"] = achieved / peak
            if "peak_rss_mib" in result and result.get("rss_before_fit_mib"):
                result["rss_growth_mib"] = (
                    result["peak_rss_mib"] - result["rss_before_fit_mib"]
                )


def ratios(name, results):
    """The side-by-side ratios of one section.

    Args:
        name: str. "cpu", "engine", "pipeline", "freezing" or "peer".
        results: dict. `{config name: result}` of that section; a ratio
            with a config that did not run is left out (one that failed
            or was skipped gives None, which meets no target).

    Returns:
        list of dict with `name`, `value` (None where a side is missing or
        failed), `target` and `meets_target` (None without a target).

    Examples:
    >>> r = ratios("pipeline", {"our_pipeline": {"examples_per_sec": 50.0},
    ...                         "keras_hub_default": {"examples_per_sec": 10.0}})
    >>> r[0]["value"], r[0]["meets_target"]
    (5.0, True)
    """
    out = []
    for label, top, bottom, field, target, sense in _RATIOS.get(name, ()):
        if top not in results or bottom not in results:
            continue  # a config not in this run (--only, quick suite)
        a = results.get(top, {}).get(field)
        b = results.get(bottom, {}).get(field)
        value = a / b if a is not None and b else None
        out.append(_ratio(label, value, target, sense))
    out.extend(_extra_ratios(name, results))
    return out


def _ratio(label, value, target, sense="min"):
    meets = None
    if value is not None and target is not None:
        meets = value >= target if sense == "min" else value <= target
    return {"name": label, "value": value, "target": target,
            "sense": sense, "meets_target": meets}


def _extra_ratios(name, results):
    out = []
    if name == "cpu":
        painless = results.get("painless", {})
        mfu = painless.get("mfu")
        out.append(_ratio("painless MFU on real tokens (of the measured "
                          "peak at its precision)", mfu, 0.35))
        default = results.get("keras_hub_default", {})
        ours = _tta_seconds(painless)
        theirs = _tta_seconds(default)
        if "time_to_accuracy" in painless or "time_to_accuracy" in default:
            label = "time to target accuracy: painless / keras-hub default"
            gave_up = (default.get("time_to_accuracy") or {}).get(
                "gave_up_after_seconds")
            if ours and not theirs and gave_up:
                # keras-hub's time is longer than `gave_up`: a bound.
                out.append(_ratio(f"{label} (at most: keras-hub had not "
                                  f"reached it after {gave_up:.0f} s)",
                                  ours / gave_up, 1 / 3, "max"))
            else:
                value = ours / theirs if ours and theirs else None
                out.append(_ratio(label, value, 1 / 3, "max"))
    if name == "peer":
        painless, hf = results.get("painless", {}), results.get(
            "hf_trainer", {})
        if "time_to_accuracy" in painless or "time_to_accuracy" in hf:
            ours, theirs = _tta_seconds(painless), _tta_seconds(hf)
            out.append(_ratio(
                "time to target accuracy: painless / HF Trainer",
                ours / theirs if ours and theirs else None, None, "max"))
    if name == "pipeline":
        ours = results.get("our_pipeline", {}).get("padding_fraction")
        out.append(_ratio("padding fraction, our pipeline", ours, 0.20, "max"))
        theirs = results.get("keras_hub_default", {}).get("padding_fraction")
        out.append(_ratio("padding fraction, keras-hub default path", theirs,
                          None))
        starve = results.get("starvation", {})
        out.append(_ratio(
            "step time: real pipeline / same batches in memory (median)",
            starve.get("pipeline_over_in_memory_median"), 1.05, "max"))
        out.append(_ratio(
            "step time: real pipeline / same batches in memory (mean)",
            starve.get("pipeline_over_in_memory_mean"), None, "max"))
    return out


def _tta_seconds(result):
    tta = result.get("time_to_accuracy") or {}
    return tta.get("seconds")


def markdown(name, section):
    """A markdown table of one section, then its ratios.

    Args:
        name: str. The section name.
        section: dict. `{"results": {...}, "ratios": [...]}`, and
            optionally `"order"`, the config names in the order to show.

    Returns:
        str.

    Examples:
    >>> print(markdown("pipeline", {"results": {"x": {"error": "boom"}},
    ...                             "ratios": []}).splitlines()[2])
    | x | failed: boom |  |  |  |  |  |  |  |  |  |  |
    """
    columns = _COLUMNS + _SECTION_COLUMNS.get(name, ())
    headers = ["config"] + [h for h, _, _ in columns]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    results = section["results"]
    for config in section.get("order") or list(results):
        result = results[config]
        if "error" in result or "skipped" in result:
            brief = (f"failed: {result['error']}" if "error" in result
                     else f"skipped: {result['skipped']}")
            cells = [brief] + [""] * (len(columns) - 1)
        else:
            cells = [_cell(result, field, fmt, header)
                     for header, field, fmt in columns]
        lines.append("| " + " | ".join([config] + cells) + " |")
    extra = _extra_lines(section["results"])
    if extra:
        lines += [""] + extra
    if section.get("ratios"):
        lines += ["", "| ratio | value | target |", "|---|---|---|"]
        for ratio in section["ratios"]:
            value = ratio["value"]
            shown = "n/a" if value is None else f"{value:.2f}"
            target = ""
            if ratio["target"] is not None:
                sign = ">=" if ratio["sense"] == "min" else "<="
                mark = {True: " (met)", False: " (not met)", None: ""}[
                    ratio["meets_target"]]
                target = f"{sign} {ratio['target']:.2f}{mark}"
            lines.append(f"| {ratio['name']} | {shown} | {target} |")
    return "\n".join(lines)


def _cell(result, field, fmt, header):
    if header == "seq / buckets":
        buckets = result.get("buckets")
        if buckets:
            return "buckets " + "/".join(str(b) for b in buckets)
        return str(result.get("sequence_length", ""))
    if header == "micro x k":
        if "micro_batch_size" not in result:
            return ""
        return f"{result['micro_batch_size']} x {result['accumulation_steps']}"
    value = result.get(field)
    if isinstance(value, dict) or value is None:
        return ""
    return fmt.format(value)


def _extra_lines(results):
    lines = []
    for config, result in results.items():
        tta = result.get("time_to_accuracy")
        if tta:
            if tta["reached"]:
                lines.append(
                    f"- {config}: {tta['target']:.0%} validation accuracy after "
                    f"{tta['updates']} updates, {tta['seconds']:.0f} s "
                    "(training time, startup included, evaluation excluded)"
                )
            else:
                best = max((e["accuracy"] for e in tta["evaluations"]),
                           default=None)
                best = "n/a" if best is None else f"{best:.1%}"
                gave_up = tta.get("gave_up_after_seconds")
                when = (f", stopped after {gave_up:.0f} s of training"
                        if gave_up else "")
                lines.append(
                    f"- {config}: {tta['target']:.0%} not reached in "
                    f"{tta['updates_run']} updates (best {best}{when})"
                )
        if "test_accuracy" in result:
            lines.append(
                f"- {config}: test accuracy {result['test_accuracy']:.1%} "
                f"after {result['epochs']} epochs "
                f"({tta['updates_run'] if tta else '?'} updates)")
        if "pipeline_over_in_memory_median" in result:
            median = result["update_seconds_median"]
            lines.append(
                f"- {config}: median s/update {median['pipeline']:.3f} with "
                f"the real pipeline, {median['in_memory']:.3f} with the same "
                f"batches in memory ({result['timed_updates_per_feed']} "
                "timed updates each)"
            )
    return lines
