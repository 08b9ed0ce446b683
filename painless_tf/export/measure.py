"""Measuring the artifacts side by side, and the report's table.

Each artifact is loaded back and checked (finite outputs; the SavedModel
within float round-off of the Keras model), scored on the test rows with
the task's metrics (`evaluation.HEADLINE_KEYS`: accuracy and macro-F1;
micro/macro-F1 and subset accuracy for multi-label; RMSE, MAE, Pearson and
Spearman for regression) and against the Keras model (largest difference;
the share of rows with the same predicted class or label set; for the
.tflite files also over the rows tokenized alike), timed at batch 1 and at
a batch, and sized; each quantized artifact is compared with its float
one. `format_report` prints the result as a Markdown table.
"""

import math
import os
import shutil
import time
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from absl import logging

from painless_tf import evaluation
from painless_tf import hardware
from painless_tf.export.formats import SAVED_MODEL_DIR
from painless_tf.export.formats import TFLITE_FILES
from painless_tf.export.formats import ExportError
from painless_tf.export.formats import _format_attempt
from painless_tf.export.predictors import _cpu_count
from painless_tf.export.predictors import _keras_predictor
from painless_tf.export.predictors import load_predictor
from painless_tf.export.reading import _load_model_dir
from painless_tf.export.reading import model_dir_task
from painless_tf.export.reading import _task_entry
from painless_tf.export.saved_model import _preprocess
from painless_tf.export.tflite_graph import _tflite_inputs
from painless_tf.export.tflite_graph import _tflite_tokenize_fn

# The SavedModel runs the Keras model's own graph: anything beyond float
# round-off is a bug, not a quantization cost. Relative to the largest
# value for regression, whose values are in the target's units.
_SAVED_MODEL_TOLERANCE = 1e-4
# The report's keys for the largest difference from the Keras model, and
# for the share of rows whose prediction equals the Keras model's (none
# for regression: its difference says it all).
_DIFF_KEYS = {"classification": "max_abs_prob_diff",
              "multi_label": "max_abs_prob_diff",
              "regression": "max_abs_value_diff"}
_AGREEMENT_KEYS = {"classification": "argmax_agreement",
                   "multi_label": "label_set_agreement"}
# Calls to each artifact before timing: the first calls build kernels,
# allocate tensors and resize the TFLite interpreter.
_WARMUP_CALLS = 2


def _measure(model_dir, staging, classifier, vocab, num_text_columns,
             artifacts, options, test, representative, skipped):
    """Loads every artifact back, then times and scores them side by side.

    An artifact that does not load, returns non-finite outputs or (the
    SavedModel) differs from the Keras model beyond float round-off is
    removed from `artifacts` and from disk, with its reason in `skipped`.
    """
    threads = options.num_threads or _cpu_count()
    batch = options.latency_batch_size
    task = model_dir_task(model_dir)
    predictors = {"keras": _keras_predictor(
        classifier, vocab, path=model_dir, num_text_columns=num_text_columns,
        batch_size=batch, task=task,
    )}
    rows = {"keras": {
        "size_bytes": _size(os.path.join(model_dir, "model")),
        "weight_bytes": _weight_bytes(classifier),
    }}
    if "keras_int8" in options.formats:
        quantized, _ = _load_model_dir(model_dir, quantize="int8")
        predictors["keras_int8"] = _keras_predictor(
            quantized, vocab, path=model_dir,
            num_text_columns=num_text_columns, batch_size=batch, task=task,
        )
        rows["keras_int8"] = {
            "size_bytes": None, "weight_bytes": _weight_bytes(quantized)
        }
    smoke = [["", "a b c"]] * num_text_columns
    _check_finite("keras", predictors["keras"](*smoke)[0])
    for name, file in list(artifacts.items()):
        path = os.path.join(staging, file)
        with _format_attempt(name, skipped, path):
            predictor = load_predictor(
                path, batch_size=batch, num_threads=threads
            )
            _check_finite(name, predictor(*smoke)[0])
            predictors[name] = predictor
            rows[name] = {"size_bytes": _size(path)}
        if name not in predictors:
            del artifacts[name]

    if test:
        same_tokens = None
        if any(name in TFLITE_FILES for name in predictors):
            same_tokens = _same_tokens(classifier, test)
        reference = _score(predictors, rows, test, same_tokens, task,
                           vocab.names)
        difference = rows.get("saved_model", {}).get(_DIFF_KEYS[task.kind],
                                                     0.0)
        allowed = _SAVED_MODEL_TOLERANCE * (
            max(1.0, float(np.max(np.abs(reference), initial=0.0)))
            if task.kind == "regression" else 1.0)
        if difference > allowed:
            skipped["saved_model"] = (
                f"its outputs differ from the Keras model's by up to "
                f"{difference:.2g} (> {allowed:.2g}); report this "
                "with the model class and the TensorFlow, Keras and "
                "keras-hub versions")
            shutil.rmtree(os.path.join(staging, SAVED_MODEL_DIR))
            del artifacts["saved_model"], rows["saved_model"]
            del predictors["saved_model"]
    pool = test if test else representative
    if pool:
        for name, timing in latencies(predictors, pool, options).items():
            rows[name]["latency_ms_per_example"] = timing

    env = hardware.detect_environment(gpu_lister=lambda: [])
    return {
        "model_dir": model_dir,
        "task": _task_entry(task, len(vocab)),
        "label_names": list(vocab.names),
        "num_text_columns": num_text_columns,
        "cpu": env.cpu_model,
        "cpu_count": env.cpu_count,
        "tflite_threads": threads,
        "tensorflow": tf.__version__,
        "latency_batch_size": batch,
        "test_data": test.source if test else None,
        "test_examples": len(test) if test else 0,
        "representative_data": (
            representative.source if representative else None
        ),
        "representative_examples": (
            min(len(representative), options.max_representative_examples)
            if representative and "tflite_int8" in artifacts else 0
        ),
        "artifacts": rows,
        "skipped": dict(skipped),
        "ratios": _ratios(rows, batch),
    }


def _score(predictors, rows, test, same_tokens, task, label_names):
    """The task's metrics and the agreement with the Keras model, per
    artifact; returns the Keras model's scores.

    For the .tflite files, whose tokenizer differs from keras-hub's on
    accented text, the difference is also given over the rows both tokenize
    alike: that one measures the conversion alone.
    """
    columns = test.texts
    pairs = columns[1] if len(columns) == 2 else None
    reference, _ = predictors["keras"](columns[0], pairs)
    diff_key = _DIFF_KEYS[task.kind]
    agreement_key = _AGREEMENT_KEYS.get(task.kind)
    for name, predictor in predictors.items():
        started = time.perf_counter()
        scores = reference if name == "keras" else predictor(
            columns[0], pairs
        )[0]
        _check_finite(name, scores)
        metrics = _task_metrics(task, test.labels, scores, label_names)
        rows[name].update(metrics)
        difference = np.abs(scores - reference)
        rows[name][diff_key] = float(np.max(difference, initial=0.0))
        if agreement_key:
            rows[name][agreement_key] = float(np.mean(np.all(
                _decisions(task, scores) == _decisions(task, reference),
                axis=-1)))
        if name in TFLITE_FILES:
            rows[name].update({
                "tokenization_agreement": float(np.mean(same_tokens)),
                f"{diff_key}_same_tokens": float(np.max(
                    difference[same_tokens], initial=0.0)),
            })
        logging.info(
            "export: %s %s on %d test rows (%.1f s)", name,
            ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
            len(test), time.perf_counter() - started,
        )
    return reference


def artifact_metrics(predictor, examples, task, label_names):
    """The task's headline metrics (`evaluation.headline`) of one loaded
    artifact on labelled `examples` (labels as the run trained on them)."""
    columns = examples.texts
    pairs = columns[1] if len(columns) == 2 else None
    scores = predictor(columns[0], pairs)[0]
    _check_finite("artifact", scores)
    return _task_metrics(task, examples.labels, scores, label_names)


def _task_metrics(task, labels, scores, label_names):
    """The headline numbers of the task's test report (`evaluation`)."""
    if task.kind == "regression":
        # The predictors give the target's units; the labels are
        # standardized, as the run trained on them.
        report = evaluation.regression_report(task.destandardize(labels),
                                              scores)
    else:
        report = evaluation.report_for(task, labels, scores, label_names)
    return evaluation.headline(report)


def _decisions(task, scores):
    """[N, 1] predicted class ids, or [N, K] predicted label sets."""
    if task.kind == "multi_label":
        return scores > task.threshold_array(scores.shape[1])[None, :]
    return scores.argmax(axis=-1)[:, None]


def _check_finite(name, scores):
    if not np.all(np.isfinite(scores)):
        raise ExportError(
            f"The exported {name} returns non-finite outputs. Report "
            "this with the model class and the TensorFlow, Keras and "
            "keras-hub versions."
        )


def _same_tokens(classifier, examples):
    """bool [n]: whether the TFLite graph packs row i as keras-hub does."""
    if _tflite_inputs(classifier) == "token_ids":
        # Packed on the host by the keras-hub preprocessor itself.
        return np.ones(len(examples), bool)
    tokenize = _tflite_tokenize_fn(classifier, examples.num_text_columns)
    preprocessor = classifier.preprocessor
    pad_id = int(preprocessor.tokenizer.pad_token_id)
    same = []
    for start in range(0, len(examples), 256):
        chunk = [tf.constant(c[start:start + 256]) for c in examples.texts]
        ours = tokenize(*chunk)
        theirs = _preprocess(preprocessor, chunk)
        equal = np.ones(len(chunk[0]), bool)
        for key in ("token_ids", "segment_ids"):
            if key not in ours:
                continue
            mine = np.asarray(ours[key])
            full = np.asarray(theirs[key])
            # Ours is padded to the longest row only.
            padded = np.full_like(full, pad_id if key == "token_ids" else 0)
            padded[:, :mine.shape[1]] = mine
            equal &= np.all(padded == full, axis=1)
        same.append(equal)
    return np.concatenate(same)


def latencies(predictors, pool, options):
    """Per-example latency (ms) at batch 1 and at a batch, interleaved:
    `{name: {"batch_1": {"mean", "median", "p95", "calls"}, ...}}`.

    Each round times one call of every artifact in turn, so that load from
    other processes hits all artifacts alike.

    Args:
        predictors: dict of name -> `Predictor` (or any callable taking
            `(texts, pairs)`).
        pool: `data.Examples` whose texts are cycled through.
        options: `ExportOptions` (its `latency_batch_size` and
            `latency_calls`).
    """
    batch = options.latency_batch_size
    columns = pool.texts
    n = len(pool)
    plans = {
        "batch_1": (1, options.latency_calls),
        f"batch_{batch}": (batch, max(3, options.latency_calls // 4)),
    }
    timings = {name: {} for name in predictors}
    for key, (size, calls) in plans.items():
        samples = {name: [] for name in predictors}
        for call in range(-_WARMUP_CALLS, calls):
            rows = [(call * size + i) % n for i in range(size)]
            texts = [columns[0][r] for r in rows]
            pairs = [columns[1][r] for r in rows] if len(columns) == 2 else None
            for name, predictor in predictors.items():
                started = time.perf_counter()
                predictor(texts, pairs)
                seconds = time.perf_counter() - started
                if call >= 0:
                    samples[name].append(seconds * 1e3 / size)
        for name, values in samples.items():
            timings[name][key] = {
                "mean": float(np.mean(values)),
                "median": float(np.median(values)),
                "p95": float(np.percentile(values, 95)),
                "calls": len(values),
            }
    return timings


def _ratios(rows, batch):
    """Size reduction and latency ratios of each quantized artifact."""
    pairs = {
        "tflite_dynamic_int8_vs_tflite_float32": (
            "tflite_dynamic_int8", "tflite_float32"),
        "tflite_int8_vs_tflite_float32": ("tflite_int8", "tflite_float32"),
        "tflite_float16_vs_tflite_float32": (
            "tflite_float16", "tflite_float32"),
        "keras_int8_vs_keras": ("keras_int8", "keras"),
    }
    ratios = {}
    for key, (quantized, base) in pairs.items():
        if quantized not in rows or base not in rows:
            continue
        q, b = rows[quantized], rows[base]
        size_key = "size_bytes" if q.get("size_bytes") else "weight_bytes"
        entry = {"size_reduction": _divide(b.get(size_key), q.get(size_key))}
        for latency_key in ("batch_1", f"batch_{batch}"):
            entry[f"latency_ratio_{latency_key}"] = _divide(
                q.get("latency_ms_per_example", {}).get(latency_key, {})
                .get("mean"),
                b.get("latency_ms_per_example", {}).get(latency_key, {})
                .get("mean"),
            )
        ratios[key] = entry
    return ratios


def _weight_bytes(classifier):
    """Bytes of the classifier's weights in memory."""
    return int(sum(
        math.prod(v.shape) * np.dtype(v.dtype).itemsize
        for v in classifier.weights
    ))


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(path) for f in files
    )


def _divide(numerator, denominator):
    if not numerator or not denominator:
        return None
    return float(numerator) / float(denominator)


def format_report(report: Mapping) -> str:
    """The report as a Markdown table, one row per artifact, then the ratios.

    `MB` is the size on disk; for `keras_int8`, which lives in memory only,
    the weights' size in memory (marked `mem`). Then the task's metrics on
    the test rows (`evaluation.HEADLINE_KEYS`), the largest difference from
    the Keras model's outputs, and (classification, multi-label) `agree`:
    the share of test rows whose predicted class or label set equals the
    Keras model's. Latencies are per example, mean and p95, at batch 1 and
    at the report's batch size.

    Args:
        report: Mapping. What `export_model` returns.

    Returns:
        str. The table; the .tflite tokenizer's agreement with keras-hub's
        and the differences on the rows where they agree; one line per
        quantized-vs-float comparison.

    Examples:

    >>> print(format_report({"latency_batch_size": 32, "artifacts": {
    ...     "keras": {"size_bytes": 2_000_000, "accuracy": 0.8}}}))
    | artifact | MB | accuracy | macro_f1 | max diff | agree | b1 ms (p95) | b32 ms (p95) |
    |---|---|---|---|---|---|---|---|
    | keras | 2.00 | 0.8000 | - | - | - | - | - |
    """
    batch = report.get("latency_batch_size")
    # Reports written before the task was recorded are classifiers'.
    kind = (report.get("task") or {}).get("kind", "classification")
    metrics = evaluation.HEADLINE_KEYS[kind]
    diff_key = _DIFF_KEYS[kind]
    agreement_key = _AGREEMENT_KEYS.get(kind)
    header = ["artifact", "MB", *metrics, "max diff"]
    if agreement_key:
        header.append("agree")
    header += ["b1 ms (p95)", f"b{batch} ms (p95)"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for name, row in report.get("artifacts", {}).items():
        if row.get("size_bytes"):
            size = f"{row['size_bytes'] / 1e6:.2f}"
        elif row.get("weight_bytes"):
            size = f"{row['weight_bytes'] / 1e6:.2f} mem"
        else:
            size = "-"
        latency = row.get("latency_ms_per_example", {})
        cells = [name, size]
        cells += [_cell(row.get(key), "{:.4f}") for key in metrics]
        cells.append(_cell(row.get(diff_key), "{:.1e}"))
        if agreement_key:
            cells.append(_cell(row.get(agreement_key), "{:.4f}"))
        for key in ("batch_1", f"batch_{batch}"):
            timing = latency.get(key)
            cells.append(
                "-" if not timing
                else f"{timing['mean']:.2f} ({timing['p95']:.2f})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    tflite = {
        name: row for name, row in report.get("artifacts", {}).items()
        if "tokenization_agreement" in row
    }
    if tflite:
        agreement = next(iter(tflite.values()))["tokenization_agreement"]
        lines.append(
            f"tflite tokenization = keras-hub's on {agreement:.2%} of test "
            "rows; max diff on those: " + ", ".join(
                f"{name} {row[diff_key + '_same_tokens']:.1e}"
                for name, row in tflite.items()
            )
        )
    for name, ratios in report.get("ratios", {}).items():
        parts = [f"{k} {v:.2f}" for k, v in ratios.items() if v is not None]
        lines.append(f"{name}: " + ", ".join(parts))
    for name, reason in report.get("skipped", {}).items():
        lines.append(f"skipped {name}: {reason}")
    return "\n".join(lines)


def _cell(value, fmt):
    return "-" if value is None else fmt.format(value)
