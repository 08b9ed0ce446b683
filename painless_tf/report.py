"""`report.html`: one self-contained page a person reads after training.

The page shows the run's numbers (exactly those of `metrics.json`), the plan
with the reason for each decision, loss and accuracy curves for training and
validation, throughput and MFU over time, learning rate and loss scale, the
confusion matrix and per-class metrics on the test split, and the wall time.
Plots are PNGs drawn with matplotlib's Agg renderer and embedded as base64
`data:` URIs, so the file can be mailed, attached to CI or opened offline.

It reads what a model directory holds (see `apps/finetune.py`):
`metrics.json`, `plan.json`, `history.json` (written by
`painless_tf.monitoring.HistoryWriter`), `model/config.json` and
`model/task.json` (the keras-hub preset) and, for the test
split, `evaluation.json` (a `painless_tf.evaluation.classification_report`)
unless an evaluation is passed in. Any of them may be missing; its section
then says so.

To look at a report without a browser window, take a screenshot with
headless Chromium: `bench/screenshot_report.sh <model_dir>/report.html out.png`.
"""

import base64
import dataclasses
import datetime
import html
import io
import json
import math
import os

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from painless_tf import atomic
from painless_tf import evaluation as evaluation_lib
from painless_tf import selection
from painless_tf.plan import Plan

# Metrics shown first, in this order; the rest of metrics.json follows.
_LEADING_METRICS = (
    "test_accuracy",
    "validation_accuracy",
    "mfu",
    "tokens_per_sec",
    "train_examples_per_sec",
    "examples_per_sec",
    "padding_fraction",
    "wall_seconds",
)
_PERCENT_KEYS = frozenset(
    {"test_accuracy", "validation_accuracy", "mfu", "padding_fraction",
     "accuracy", "macro_f1", "weighted_f1"}
)
_FIGURE_SIZE = (7.5, 3.2)  # inches; 100 dpi keeps each PNG near 30 kB
_DPI = 100
_TRAIN_COLOR = "#1f77b4"
_VALIDATION_COLOR = "#d62728"
_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.subtitle, .note { color: #666; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f6f6f6; font-weight: 600; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { display: block; max-width: 100%; margin: 0.6em 0; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 0.9em;
        min-width: 9em; }
.card .value { font-size: 1.5em; font-weight: 600; }
.card .label { color: #666; font-size: 0.9em; }
"""


def write_report(model_dir: str, *, evaluation: dict | None = None) -> str:
    """Writes `<model_dir>/report.html` from the run's files, atomically.

    Args:
        model_dir: str. A model directory written by `apps/finetune.py`.
        evaluation: dict or None. A
            `painless_tf.evaluation.classification_report` of the test
            split; None reads `<model_dir>/evaluation.json` if it exists.

    Returns:
        str, the path of the report.

    Examples:
    >>> import os, tempfile
    >>> model_dir = tempfile.mkdtemp()
    >>> with open(os.path.join(model_dir, "metrics.json"), "w") as f:
    ...     _ = f.write('{"test_accuracy": 0.5}')
    >>> path = write_report(model_dir)
    >>> 'data-key="test_accuracy" data-value="0.5"' in open(path).read()
    True
    """
    model_dir = os.fspath(model_dir)
    metrics = _read_json(os.path.join(model_dir, "metrics.json"))
    plan = _read_json(os.path.join(model_dir, "plan.json"))
    history = _read_json(os.path.join(model_dir, "history.json"))
    model_config = _read_json(os.path.join(model_dir, "model", "config.json"))
    task_config = _read_json(os.path.join(model_dir, "model", "task.json"))
    if evaluation is None:
        evaluation = _read_json(os.path.join(model_dir, "evaluation.json"))

    sections = [
        _summary_section(metrics),
        _plan_section(plan),
        _model_section(model_config, task_config),
        _curves_section(history),
        _speed_section(history, metrics),
        _optimizer_section(history),
        _evaluation_section(evaluation),
        _time_section(history, metrics),
    ]
    title = f"Training report: {os.path.basename(os.path.abspath(model_dir))}"
    subtitle = f"{os.path.abspath(model_dir)} &middot; written {_now()}"
    path = os.path.join(model_dir, "report.html")
    atomic.write_text(path, _page(title, subtitle, sections))
    return path


def write_evaluation_report(path: str, evaluation: dict) -> str:
    """Writes an HTML page with only the evaluation part, atomically.

    Args:
        path: str. The HTML file to write.
        evaluation: dict. A
            `painless_tf.evaluation.classification_report`.

    Returns:
        str, `path`.

    Examples:
    >>> import os, tempfile
    >>> from painless_tf.evaluation import classification_report
    >>> path = os.path.join(tempfile.mkdtemp(), "evaluation.html")
    >>> _ = write_evaluation_report(
    ...     path, classification_report([0, 1, 1], [0, 1, 0], ["no", "yes"]))
    >>> open(path).read().count("<img")
    1
    """
    section = _evaluation_section(evaluation)
    page = _page("Evaluation report", f"written {_now()}", [section])
    atomic.write_text(os.fspath(path), page)
    return os.fspath(path)


# === Sections ===


def _summary_section(metrics):
    if metrics is None:
        return _section("summary", "Summary", _note("No metrics.json."))
    keys = [k for k in _LEADING_METRICS if k in metrics]
    keys += sorted(k for k in metrics if k not in keys)
    cards = "".join(
        f'<div class="card"><div class="value">'
        f"{_format_metric(k, metrics[k])}</div>"
        f'<div class="label">{_label(k)}</div></div>'
        for k in keys[:4]
        if _is_number(metrics[k])
    )
    rows = "".join(
        f"<tr><th>{_label(k)}</th>"
        f'<td class="number" data-key="{html.escape(k)}" '
        f'data-value="{html.escape(json.dumps(metrics[k]))}">'
        f"{_format_metric(k, metrics[k])}</td></tr>"
        for k in keys
    )
    kept = selection.kept_line(metrics)
    body = (
        (f'<p class="kept">{html.escape(kept[0].upper() + kept[1:])}.</p>'
         if kept else "")
        + f'<div class="cards">{cards}</div>'
        f'<table class="metrics"><tr><th>metric (metrics.json)</th>'
        f"<th>value</th></tr>{rows}</table>"
    )
    return _section("summary", "Summary", body)


def _plan_section(plan):
    if plan is None:
        return _section("plan", "Plan", _note("No plan.json."))
    reasons = plan.get("reasons") or {}
    # The Plan's own field order reads as a person decides; plan.json is
    # sorted by name.
    order = [f.name for f in dataclasses.fields(Plan)]
    names = [n for n in order if n in plan] + sorted(
        n for n in plan if n not in order
    )
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        f"<td>{html.escape(_plain(plan[name]))}</td>"
        f"<td>{html.escape(str(reasons.get(name, '')))}</td></tr>"
        for name in names
        if name != "reasons"
    )
    body = (
        "<table><tr><th>decision</th><th>value</th><th>why</th></tr>"
        f"{rows}</table>"
    )
    return _section("plan", "Plan", body)


def _model_section(backbone, task):
    """The keras-hub preset's task and backbone (config.json, task.json)."""
    if backbone is None and task is None:
        return _section("model", "Model", _note("No model/config.json."))
    fields = {}
    if task is not None:
        fields["task"] = task.get("class_name")
        fields["num_classes"] = (task.get("config") or {}).get("num_classes")
    if backbone is not None:
        fields["backbone"] = backbone.get("class_name")
        inner = backbone.get("config") or {}
        for key in ("num_layers", "hidden_dim", "intermediate_dim",
                    "num_heads", "vocabulary_size", "max_sequence_length"):
            fields[key] = inner.get(key)
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_plain(v))}</td></tr>"
        for k, v in fields.items()
        if v is not None
    )
    return _section("model", "Model", f"<table>{rows}</table>")


def _curves_section(history):
    if history is None:
        return _section("curves", "Loss and accuracy",
                        _note("No history.json: nothing to plot."))
    train, epochs = history.get("train") or [], history.get("epochs") or []
    parts = [_curve_plot(train, epochs, "loss", "loss", "Loss")]
    accuracy = _accuracy_key(train, epochs)
    if accuracy:
        parts.append(
            _curve_plot(train, epochs, accuracy, "accuracy",
                        f"Accuracy ({accuracy})", percent=True)
        )
    else:
        parts.append(_note("No accuracy metric was compiled."))
    return _section("curves", "Loss and accuracy", "".join(parts))


def _speed_section(history, metrics):
    if history is None:
        return _section("speed", "Throughput and MFU",
                        _note("No history.json: nothing to plot."))
    train = history.get("train") or []
    parts = []
    if _series(train, "tokens_per_sec")[0] or _series(train, "examples_per_sec")[0]:
        parts.append(_throughput_plot(train))
    else:
        parts.append(_note("Throughput was not measured."))
    source = (metrics or {}).get("peak_flops_source")
    if _series(train, "mfu")[0]:
        overall = (metrics or {}).get("mfu")
        parts.append(_mfu_plot(train, overall))
    elif source and source.startswith("MFU n/a"):
        # The peak was taken on a busy machine: no MFU against it.
        parts.append(_note(f"{source}."))
        source = None
    else:
        parts.append(_note(
            "MFU was not measured (it needs token counts, FLOPs per token "
            "and a peak)."
        ))
    if source:
        parts.append(_note(f"Peak: {source}."))
    return _section("speed", "Throughput and MFU", "".join(parts))


def _optimizer_section(history):
    if history is None:
        return _section("optimizer", "Learning rate and loss scale",
                        _note("No history.json: nothing to plot."))
    train = history.get("train") or []
    parts = []
    if _series(train, "learning_rate")[0]:
        parts.append(_line_plot(
            train, "learning_rate", "learning_rate",
            "Learning rate (the next update's)", "learning rate",
        ))
    else:
        parts.append(_note("The learning rate was not logged."))
    if _series(train, "loss_scale")[0]:
        parts.append(_loss_scale_plot(train))
    else:
        parts.append(_note("No loss scaling (not mixed_float16): no loss "
                           "scale to plot."))
    return _section("optimizer", "Learning rate and loss scale", "".join(parts))


def _evaluation_section(evaluation):
    if evaluation is None:
        return _section("evaluation", "Test split",
                        _note("No evaluation of a test split."))
    if evaluation.get("task") in ("multi_label", "regression"):
        return _task_section(evaluation)
    _check_evaluation(evaluation)
    head = (
        f"<p>{evaluation['num_examples']} examples: accuracy "
        f"<b>{_percent(evaluation['accuracy'])}</b>, macro F1 "
        f"<b>{_percent(evaluation['macro_f1'])}</b>, weighted F1 "
        f"{_percent(evaluation.get('weighted_f1', float('nan')))}.</p>"
    )
    rows = "".join(
        f"<tr><th>{html.escape(c['label'])}</th>"
        f'<td class="number">{_percent(c["precision"])}</td>'
        f'<td class="number">{_percent(c["recall"])}</td>'
        f'<td class="number">{_percent(c["f1"])}</td>'
        f'<td class="number">{c["support"]}</td></tr>'
        for c in evaluation["per_class"]
    )
    table = (
        '<table class="per-class"><tr><th>class</th><th>precision</th>'
        f"<th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>"
    )
    plot = _confusion_plot(evaluation)
    return _section("evaluation", "Test split", head + plot + table)


def _task_section(evaluation):
    """The test split of a multi-label or regression model: its headline
    numbers, and the per-label table of a multi-label one."""
    keys = evaluation_lib.HEADLINE_KEYS[evaluation["task"]]
    numbers = ", ".join(
        f"{key.replace('_', ' ')} <b>{evaluation[key]:.4f}</b>"
        for key in keys)
    head = f"<p>{evaluation['num_examples']} examples: {numbers}.</p>"
    rows = "".join(
        f"<tr><th>{html.escape(c['label'])}</th>"
        f'<td class="number">{_percent(c["precision"])}</td>'
        f'<td class="number">{_percent(c["recall"])}</td>'
        f'<td class="number">{_percent(c["f1"])}</td>'
        f'<td class="number">{c["threshold"]:.3f}</td>'
        f'<td class="number">{c["support"]}</td></tr>'
        for c in evaluation.get("per_class", ())
    )
    table = (
        '<table class="per-class"><tr><th>label</th><th>precision</th>'
        "<th>recall</th><th>F1</th><th>threshold</th><th>support</th></tr>"
        f"{rows}</table>" if rows else "")
    return _section("evaluation", "Test split", head + table)


def _time_section(history, metrics):
    parts = []
    wall = (metrics or {}).get("wall_seconds")
    if wall is None and history:
        wall = history.get("wall_seconds")
    if _is_number(wall):
        parts.append(f"<p>Wall time: <b>{_duration(wall)}</b> ({wall:.1f} s).</p>")
    epochs = (history or {}).get("epochs") or []
    if epochs:
        rows = "".join(
            f"<tr><td>{e['epoch'] + 1}</td>"
            f'<td class="number">{_duration(e.get("train_seconds"))}</td>'
            f'<td class="number">{_duration(e.get("validation_seconds"))}</td>'
            f'<td class="number">{_duration(e.get("wall_seconds"))}</td></tr>'
            for e in epochs
        )
        parts.append(
            "<table><tr><th>epoch</th><th>training</th><th>validation</th>"
            f"<th>elapsed at its end</th></tr>{rows}</table>"
        )
    first = (history or {}).get("first_step_seconds")
    if _is_number(first):
        parts.append(_note(
            f"The first step (tracing and compiling) took {first:.1f} s; "
            "rates leave it out."
        ))
    if not parts:
        parts.append(_note("No wall time recorded."))
    return _section("time", "Wall time", "".join(parts))


# === Plots ===


def _x_axis(records):
    """(x values, label): fractional epochs where known, else steps."""
    if records and all(r.get("fractional_epoch") is not None for r in records):
        return [r["fractional_epoch"] for r in records], "epoch"
    return [r.get("step") for r in records], "step"


def _series(records, key):
    points = [
        (x, r.get(key))
        for x, r in zip(_x_axis(records)[0], records)
        if _is_number(r.get(key))
    ]
    return [p[0] for p in points], [p[1] for p in points]


def _curve_plot(train, epochs, key, name, title, percent=False):
    figure, axes = _figure()
    scale = 100.0 if percent else 1.0
    x, y = _series(train, key)
    if x:
        axes.plot(x, np.multiply(y, scale), color=_TRAIN_COLOR, alpha=0.45,
                  linewidth=1, label="train (interval mean)")
    # Epoch values sit at the epoch's end.
    ex = [e["epoch"] + 1 for e in epochs if _is_number(e.get(key))]
    ey = [e[key] * scale for e in epochs if _is_number(e.get(key))]
    if ex:
        axes.plot(ex, ey, "o-", color=_TRAIN_COLOR, label="train (epoch)")
    vx = [e["epoch"] + 1 for e in epochs if _is_number(e.get(f"val_{key}"))]
    vy = [e[f"val_{key}"] * scale for e in epochs if _is_number(e.get(f"val_{key}"))]
    if vx:
        axes.plot(vx, vy, "s-", color=_VALIDATION_COLOR, label="validation")
    axes.set_xlabel(_x_axis(train)[1] if x else "epoch")
    axes.set_ylabel(f"{name} (%)" if percent else name)
    axes.set_title(title)
    _legend(axes)
    return _image(figure, name, title)


def _throughput_plot(train):
    figure, axes = _figure()
    tx, ty = _series(train, "tokens_per_sec")
    ex, ey = _series(train, "examples_per_sec")
    if tx:
        axes.plot(tx, ty, color=_TRAIN_COLOR, label="real tokens/s")
        axes.set_ylabel("real tokens/s")
        if ex:
            right = axes.twinx()
            right.plot(ex, ey, color="#2ca02c", linestyle="--",
                       label="examples/s")
            right.set_ylabel("examples/s")
            right.set_ylim(bottom=0)
            _legend(axes, right)
    else:
        axes.plot(ex, ey, color="#2ca02c", label="examples/s")
        axes.set_ylabel("examples/s")
    axes.set_ylim(bottom=0)
    axes.set_xlabel(_x_axis(train)[1])
    axes.set_title("Throughput (first step and validation left out)")
    return _image(figure, "throughput", "Throughput over time")


def _mfu_plot(train, overall):
    figure, axes = _figure()
    x, y = _series(train, "mfu")
    axes.plot(x, np.multiply(y, 100), color=_TRAIN_COLOR, label="interval")
    if _is_number(overall):
        axes.axhline(overall * 100, color="#555", linestyle=":",
                     label=f"whole run {overall * 100:.2f}%")
    axes.set_ylim(bottom=0)
    axes.set_xlabel(_x_axis(train)[1])
    axes.set_ylabel("MFU (%)")
    axes.set_title("Model FLOPs utilization")
    _legend(axes)
    return _image(figure, "mfu", "MFU over time")


def _line_plot(train, key, name, title, ylabel):
    figure, axes = _figure()
    x, y = _series(train, key)
    axes.plot(x, y, color=_TRAIN_COLOR)
    axes.set_xlabel(_x_axis(train)[1])
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    return _image(figure, name, title)


def _loss_scale_plot(train):
    figure, axes = _figure()
    x, y = _series(train, "loss_scale")
    axes.step(x, y, where="post", color=_TRAIN_COLOR, label="loss scale")
    axes.set_yscale("log", base=2)
    sx, sy = _series(train, "skipped_updates")
    skipped = [(a, b) for a, b in zip(sx, sy) if b]
    if skipped:
        right = axes.twinx()
        right.bar([a for a, _ in skipped], [b for _, b in skipped],
                  width=0.02 * max(1.0, max(sx) - min(sx)),
                  color=_VALIDATION_COLOR, alpha=0.6,
                  label="skipped updates")
        right.set_ylabel("skipped updates")
        _legend(axes, right)
    axes.set_xlabel(_x_axis(train)[1])
    axes.set_ylabel("loss scale")
    axes.set_title("Dynamic loss scale")
    return _image(figure, "loss_scale", "Loss scale over time")


def _confusion_plot(evaluation):
    labels = evaluation["labels"]
    matrix = np.asarray(evaluation["confusion_matrix"], dtype=np.float64)
    k = len(labels)
    size = min(9.0, 2.5 + 0.6 * k)
    figure = Figure(figsize=(size, size * 0.85), dpi=_DPI)
    axes = figure.subplots()
    # Colour by the share of each true class, so small classes show too.
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                axes.text(j, i, f"{int(matrix[i, j])}", ha="center",
                          va="center", fontsize=9,
                          color="white" if shares[i, j] > 0.6 else "black")
    axes.set_xticks(range(k))
    axes.set_yticks(range(k))
    if k > 4:
        axes.set_xticklabels(labels, rotation=45, ha="right")
    else:
        axes.set_xticklabels(labels)
    axes.set_yticklabels(labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix (test split)")
    figure.tight_layout()
    return _image(figure, "confusion_matrix", "Confusion matrix", tight=False)


def _figure():
    figure = Figure(figsize=_FIGURE_SIZE, dpi=_DPI)
    axes = figure.subplots()
    axes.grid(True, alpha=0.3)
    return figure, axes


def _legend(*axes_list):
    handles, labels = [], []
    for axes in axes_list:
        h, l = axes.get_legend_handles_labels()
        handles += h
        labels += l
    if handles:
        axes_list[0].legend(handles, labels, loc="best", fontsize=8)


def _image(figure, name, alt, tight=True):
    if tight:
        figure.tight_layout()
    buffer = io.BytesIO()
    # A bare Figure renders with the Agg canvas: no pyplot, no global state.
    figure.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<img data-plot="{name}" alt="{html.escape(alt)}" '
        f'src="data:image/png;base64,{data}">'
    )


# === HTML and formatting ===


def _page(title, subtitle, sections):
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n"
        "</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f'<p class="subtitle">{subtitle}</p>\n'
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def _section(anchor, title, body):
    return f'<section id="{anchor}">\n<h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _note(text):
    return f'<p class="note">{html.escape(text)}</p>'


def _label(key):
    return html.escape(key.replace("_", " "))


def _is_number(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _format_metric(key, value):
    if value is None:
        return "n/a"
    if not _is_number(value):
        return html.escape(_plain(value))
    if key in _PERCENT_KEYS:
        return _percent(value)
    if key == "peak_flops" or key.endswith("flops_per_sec"):
        number, prefix = _si(value)
        return f"{number} {prefix}FLOP/s"
    if key.endswith("_per_sec"):
        return "".join(_si(value)) + "/s"
    if key.endswith("seconds"):
        return f"{_duration(value)} ({value:.1f} s)"
    if isinstance(value, int):
        return f"{value}"
    return f"{value:.4g}"


def _percent(value):
    return f"{100 * value:.2f}%" if _is_number(value) else "n/a"


def _si(value):
    """(number, SI prefix), e.g. ("3.28", "M") for 3.28e6."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"),
                           (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}", prefix
    return f"{value:.3g}", ""


def _duration(seconds):
    if not _is_number(seconds):
        return "n/a"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def _plain(value):
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _accuracy_key(train, epochs):
    keys = set()
    for record in list(train) + list(epochs):
        keys.update(
            k for k in record
            if k.endswith("accuracy") and not k.startswith("val_")
        )
    return sorted(keys)[0] if keys else None


def _check_evaluation(evaluation):
    missing = [
        key for key in ("num_examples", "accuracy", "macro_f1", "labels",
                        "per_class", "confusion_matrix")
        if key not in evaluation
    ]
    if missing:
        raise ValueError(
            f"`evaluation` lacks {missing}. Pass the dict returned by "
            "painless_tf.evaluation.classification_report."
        )


def _read_json(path):
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} line {e.lineno} column {e.colno}: not valid JSON "
            f"({e.msg}). Write it again or delete it."
        ) from None


def _now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
