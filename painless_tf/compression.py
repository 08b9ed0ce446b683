"""Compression to an accuracy budget: distilled students and quantized
artifacts side by side, and the smallest one that stays within the budget.

From a fine-tuned model dir (the teacher), `compress`:

1. copies the teacher's model into `teacher/` (the user's folder is only
   read);
2. trains each student (`distillation.student_from_teacher`: some of the
   teacher's encoder layers) as a run of its own in `student-<layers>/`,
   through the same `run.prepare` / `run.fit_and_save` as fine-tuning: the
   same plan, engine, checkpoints, resume and best-weights selection. Its
   training rows carry the teacher's logits (`teacher_logits.npy`, written
   once), its loss is `distillation.distillation_loss`, its rate the
   teacher's planned one;
3. exports every candidate (`export.export_model`: TFLite float32, float16
   and dynamic-range int8 by default);
4. loads every artifact back (and each Keras model, for reference),
   scores it on the validation and the test split and times all of them
   interleaved (batch 1 and batch 32, median and p95);
5. picks the smallest exported artifact whose validation metric is within
   `accuracy_budget` of the teacher's Keras model (`choose`); the test
   metric is reported, never used for the choice;
6. writes `compression.json` and `compression.html`.

Run it again after a kill and it goes on: a student resumes from its last
checkpoint, finished students and exports are kept.

Layout of the compression dir (one owner, `model_dir.ModelDir`)::

    <model_dir>/
        teacher/            the teacher's model/, labels.json, run.json,
                            plan.json, metrics.json, and its export/
        student-<layers>/   the student's run (a model dir) and its export/
        compression.json    every candidate's numbers, the choice, its reason
        compression.html

    report = compression.compress("runs/demo", "runs/compressed")
"""

import dataclasses
import html
import io
import json
import os
import shutil
import time

import keras
import numpy as np
from absl import logging

from painless_tf import atomic
from painless_tf import distillation
from painless_tf import export
from painless_tf import faults
from painless_tf import hardware
from painless_tf import model_dir as model_dir_lib
from painless_tf import models
from painless_tf import pipeline
from painless_tf import run
from painless_tf.export import measure
from painless_tf.export import reading

TEACHER = "teacher"
JSON = "compression.json"
HTML = "compression.html"
# What the teacher copy holds: everything an export and a student need.
_TEACHER_FILES = (model_dir_lib.MODEL, model_dir_lib.LABELS, model_dir_lib.RUN,
                  model_dir_lib.PLAN, model_dir_lib.METRICS)
DEFAULT_FORMATS = ("tflite_float32", "tflite_float16", "tflite_dynamic_int8")
KERAS = "keras"


@dataclasses.dataclass(frozen=True)
class CompressOptions:
    """What `compress` tries and how it chooses.

    Args:
        students: tuple of str. `--student_layers` values, one student each
            (`distillation.parse_layers`).
        temperature: float. The soft-label temperature.
        alpha: float. The soft-label term's share of the loss.
        accuracy_budget: float. The most the chosen artifact's validation
            metric may fall below the teacher's, as a fraction (0.01: one
            point).
        formats: tuple of str. Export formats of every candidate.
        latency_calls: int. Timed calls per artifact at batch 1.
        latency_batch_size: int. The batched latency's batch.
        epochs: int or None. The students' epochs; None: the teacher's.
    """

    students: tuple = (distillation.EVERY_OTHER,)
    temperature: float = 2.0
    alpha: float = 0.5
    accuracy_budget: float = 0.01
    formats: tuple = DEFAULT_FORMATS
    latency_calls: int = 40
    latency_batch_size: int = 32
    epochs: int | None = None

    def __post_init__(self):
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(
                f"--epochs={self.epochs} must be >= 1, or unset for the "
                "teacher's.")
        if not self.students:
            raise ValueError(
                "--student_layers names no student. Pass e.g. "
                "--student_layers=every_other.")
        for value in self.students:
            distillation.parse_layers(value)
        if not 0 <= self.accuracy_budget < 1:
            raise ValueError(
                f"--accuracy_budget={self.accuracy_budget * 100:g} points is "
                "not between 0 and 100. Pass e.g. --accuracy_budget=1.")
        unknown = [f for f in self.formats if f not in export.FORMATS]
        if not self.formats or unknown:
            raise ValueError(
                f"--formats={','.join(self.formats)}: each must be one of "
                f"{', '.join(export.FORMATS)}. Pass e.g. "
                "--formats=tflite_float32,tflite_dynamic_int8.")


def teacher_config(teacher_dir):
    """The teacher's `run.RunConfig`, from its `run.json`.

    Raises:
        ValueError: in one line, for a folder that is not a finished
            fine-tuning run of a classifier.
    """
    for name in (model_dir_lib.RUN, model_dir_lib.METRICS,
                 os.path.join(model_dir_lib.MODEL, "config.json")):
        if not os.path.isfile(os.path.join(teacher_dir, name)):
            raise ValueError(
                f"--teacher_dir={teacher_dir} has no {name}. Pass a model dir "
                "that apps/finetune.py finished writing.")
    with open(os.path.join(teacher_dir, model_dir_lib.RUN),
              encoding="utf-8") as f:
        recorded = json.load(f)
    fields = {field.name for field in dataclasses.fields(run.RunConfig)}
    config = run.RunConfig(**{
        key: tuple(value) if isinstance(value, list) else value
        for key, value in recorded.items() if key in fields})
    if config.student_layers is not None:
        raise ValueError(
            f"--teacher_dir={teacher_dir} is itself a student. Pass the "
            "fine-tuned model dir it was distilled from.")
    if os.path.isfile(os.path.join(teacher_dir, model_dir_lib.TASK)):
        with open(os.path.join(teacher_dir, model_dir_lib.TASK),
                  encoding="utf-8") as f:
            kind = json.load(f).get("kind")
        raise ValueError(
            f"--teacher_dir={teacher_dir} is a {kind} run; apps.compress "
            "distills classifiers (one class per text) only.")
    return config


def student_config(teacher, layers, options, *, model_dir, model,
                   learning_rate):
    """The run config of one student: the teacher's run, on the teacher
    copy's `model`, with the teacher's planned `learning_rate` (no range
    test: it would measure the teacher)."""
    return dataclasses.replace(
        teacher, model=model, model_dir=model_dir,
        epochs=options.epochs or teacher.epochs,
        student_layers=str(layers), distill_temperature=options.temperature,
        distill_alpha=options.alpha, learning_rate=learning_rate,
        lr_range_test_steps=0)


def choose(rows, *, metric, reference, budget):
    """The artifact kept: the smallest whose validation `metric` is within
    `budget` of `reference`, the faster at batch 1 between equal sizes.

    Args:
        rows: dict of name -> {"size_bytes", "validation": {metric: ...},
            "latency_ms_per_example": {"batch_1": {"median": ...}}}.
        metric: str. The validation metric compared, higher is better.
        reference: float. The teacher's value of `metric`.
        budget: float. The most it may fall below `reference`.

    Returns:
        `(name, reason)`; name is None when no artifact is within budget.

    Examples:
    >>> rows = {
    ...     "big": {"size_bytes": 9, "validation": {"accuracy": 0.90},
    ...             "latency_ms_per_example": {"batch_1": {"median": 3.0}}},
    ...     "small": {"size_bytes": 2, "validation": {"accuracy": 0.85},
    ...               "latency_ms_per_example": {"batch_1": {"median": 1.0}}},
    ...     "mid": {"size_bytes": 4, "validation": {"accuracy": 0.895},
    ...             "latency_ms_per_example": {"batch_1": {"median": 2.0}}}}
    >>> choose(rows, metric="accuracy", reference=0.90, budget=0.01)[0]
    'mid'
    """
    floor = reference - budget
    within = [name for name, row in rows.items()
              if row["validation"][metric] >= floor - 1e-12]
    if not within:
        best = max(rows, key=lambda n: rows[n]["validation"][metric])
        return None, (
            f"no artifact is within {budget * 100:g} points of the teacher's "
            f"validation {metric} {reference:.4f}; the best is {best} at "
            f"{rows[best]['validation'][metric]:.4f}")

    def key(name):
        return (rows[name]["size_bytes"], _latency(rows[name]))

    name = min(within, key=key)
    row = rows[name]
    return name, (
        f"the smallest of the {len(within)} of {len(rows)} artifacts within "
        f"{budget * 100:g} points of the teacher's validation {metric} "
        f"{reference:.4f}: {row['size_bytes'] / 2**20:.1f} MiB, validation "
        f"{metric} {row['validation'][metric]:.4f}, "
        f"{_latency(row):.2f} ms per text at batch 1 (median)")


def _latency(row):
    return row.get("latency_ms_per_example", {}).get(
        "batch_1", {}).get("median", float("inf"))


def compress(teacher_dir, model_dir, *, options=None, checkpoints=None,
             environment=None):
    """Compresses the fine-tuned `teacher_dir` into `model_dir` (see the
    module docstring). Returns the report (`compression.json`), or None
    when a preemption stopped a student after its checkpoint.

    Raises:
        ValueError, data.DataError, model_dir.ModelDirError: in one line,
            before anything is trained.
    """
    options = options or CompressOptions()
    checkpoints = checkpoints or run.CheckpointOptions()
    started = time.perf_counter()
    teacher_dir = os.path.abspath(teacher_dir)
    model_dir = os.path.abspath(model_dir)
    if os.path.commonpath([teacher_dir, model_dir]) in (teacher_dir,
                                                        model_dir):
        raise ValueError(
            f"--model_dir={model_dir} and --teacher_dir={teacher_dir} are "
            "inside one another. Pass a --model_dir of its own.")
    teacher = teacher_config(teacher_dir)
    environment = environment or hardware.detect_environment(tpu=teacher.tpu)
    names = {layers: distillation.layers_name(layers)
             for layers in options.students}
    with model_dir_lib.ModelDir(model_dir) as owner:
        outputs = [TEACHER, *names.values(), JSON, HTML]
        owner.claim_all(outputs)
        print(f"compression dir {owner.path}: writes only "
              f"{', '.join(outputs)} (listed in {model_dir_lib.MANIFEST}); "
              f"reads {teacher_dir}", flush=True)
        copy = os.path.join(model_dir, TEACHER)
        if not os.path.isdir(copy):
            _copy_teacher(teacher_dir, copy)
        with open(os.path.join(copy, model_dir_lib.PLAN),
                  encoding="utf-8") as f:
            teacher_plan = json.load(f)
        prepared = None
        for layers, name in names.items():
            config = student_config(
                teacher, layers, options,
                model_dir=os.path.join(model_dir, name),
                model=os.path.join(copy, model_dir_lib.MODEL),
                learning_rate=teacher_plan["learning_rate"])
            prepared = _train_student(config, environment, checkpoints)
            if prepared is None:
                return None
        # The exports and the Keras references compute in float32.
        keras.config.set_dtype_policy("float32")
        splits = prepared.splits
        candidates = {TEACHER: copy, **{
            name: os.path.join(model_dir, name) for name in names.values()}}
        for folder in candidates.values():
            if not os.path.isfile(os.path.join(folder, export.EXPORT_DIR,
                                               export.REPORT_FILE)):
                export.export_model(
                    folder, options=export.ExportOptions(
                        formats=tuple(options.formats),
                        latency_calls=options.latency_calls,
                        latency_batch_size=options.latency_batch_size),
                    test=splits.test, representative=splits.validation)
        report = _measure(candidates, splits, options, teacher_plan)
        report.update({
            "teacher_dir": teacher_dir,
            "teacher_fit_seconds": _read_json(os.path.join(
                copy, model_dir_lib.METRICS)).get("fit_seconds"),
            "students_fit_seconds": {
                name: _read_json(os.path.join(
                    model_dir, name, model_dir_lib.METRICS)).get("fit_seconds")
                for name in names.values()},
            "wall_seconds_this_process": time.perf_counter() - started,
            "cpu": environment.cpu_model,
            "cpu_flags": sorted(environment.cpu_flags),
        })
        atomic.write_json(owner.claim(JSON), report, indent=2, sort_keys=True)
        atomic.write_text(owner.claim(HTML), report_page(report))
    return report


def _copy_teacher(teacher_dir, target):
    with atomic.building_dir(target) as staging:
        for name in _TEACHER_FILES:
            source = os.path.join(teacher_dir, name)
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(staging, name))
            else:
                shutil.copy2(source, os.path.join(staging, name))


def _train_student(config, environment, checkpoints):
    """One student's run in its own model dir; its `run.Prepared` (hard
    labels), or None when preempted."""
    with run.open_model_dir(config, environment) as owner:
        prepared = run.prepare(
            config, environment=environment,
            recorded=run.recorded_plan(config,
                                       overwrite=checkpoints.overwrite))
        plan = prepared.plan
        prepared = dataclasses.replace(prepared, plan=dataclasses.replace(
            plan, reasons={**plan.reasons, "learning_rate": (
                "the teacher's planned rate (--learning_rate in the "
                "teacher's plan.json); an LR range test here would measure "
                "the teacher, whose model the student is cut from")}))
        logits = _teacher_logits(prepared, owner)
        train = prepared.tokenized["train"]
        soft = dataclasses.replace(train, labels=distillation.soft_targets(
            train.labels, logits))
        student = dataclasses.replace(
            prepared, tokenized={**prepared.tokenized, "train": soft})
        outputs = run.fit_and_save(student, checkpoints=checkpoints,
                                   owner=owner)
    return None if outputs is None else prepared


def _teacher_logits(prepared, owner):
    """The teacher's logits on the training rows: read from the student's
    `teacher_logits.npy`, or computed once (float32, no dropout) and
    written there atomically."""
    train = prepared.tokenized["train"]
    shape = (len(train.lengths), len(prepared.splits.vocab))
    path = os.path.join(owner.path, model_dir_lib.TEACHER_LOGITS)
    if owner.has(model_dir_lib.TEACHER_LOGITS):
        logits = np.load(path, allow_pickle=False)
        if logits.shape == shape and np.all(np.isfinite(logits)):
            return logits
    keras.config.set_dtype_policy("float32")
    teacher = models.load_classifier(
        prepared.model_path, num_classes=shape[1],
        sequence_length=prepared.plan.max_sequence_length)
    started = time.perf_counter()
    logits = pipeline.predict_logits(
        teacher, train, global_batch_size=prepared.plan.global_batch_size,
        buckets=prepared.plan.bucket_boundaries).astype("float32")
    logging.info("teacher logits on %d training rows (%.1f s)", shape[0],
                 time.perf_counter() - started)
    faults.maybe_kill("teacher_logits")
    buffer = io.BytesIO()
    np.save(buffer, logits, allow_pickle=False)
    atomic.write_bytes(owner.claim(model_dir_lib.TEACHER_LOGITS),
                       buffer.getvalue())
    return logits


def _artifacts(folder, formats):
    """name -> path of a candidate's Keras model and exported files."""
    paths = {KERAS: folder}
    for name in formats:
        file = export.TFLITE_FILES.get(name)
        path = os.path.join(folder, export.EXPORT_DIR,
                            file or export.SAVED_MODEL_DIR)
        if name in ("keras_int8",) or not os.path.exists(path):
            continue
        paths[name] = path
    return paths


def _measure(candidates, splits, options, teacher_plan):
    """Every artifact's size, validation and test metrics and latency."""
    task = reading.model_dir_task(candidates[TEACHER])
    names = list(splits.vocab.names)
    metric = ("macro_f1" if teacher_plan.get("selection_metric") == "macro_f1"
              else "accuracy")
    predictors, rows = {}, {}
    for candidate, folder in candidates.items():
        for name, path in _artifacts(folder, options.formats).items():
            key = f"{candidate}/{name}"
            predictor = export.load_predictor(
                path, batch_size=options.latency_batch_size)
            size_path = (os.path.join(path, model_dir_lib.MODEL)
                         if name == KERAS else path)
            rows[key] = {
                "candidate": candidate, "format": name,
                "size_bytes": measure._size(size_path),
                "validation": export.artifact_metrics(
                    predictor, splits.validation, task, names),
                "test": export.artifact_metrics(
                    predictor, splits.test, task, names),
            }
            predictors[key] = predictor
    timing = export.latencies(predictors, splits.test, export.ExportOptions(
        latency_calls=options.latency_calls,
        latency_batch_size=options.latency_batch_size))
    for key, value in timing.items():
        rows[key]["latency_ms_per_example"] = value
    reference = rows[f"{TEACHER}/{KERAS}"]["validation"][metric]
    # The Keras models are the reference, not edge artifacts.
    chosen, reason = choose(
        {k: v for k, v in rows.items() if v["format"] != KERAS},
        metric=metric, reference=reference, budget=options.accuracy_budget)
    teacher_int8 = rows.get(f"{TEACHER}/tflite_dynamic_int8")
    return {
        "artifacts": rows,
        "metric": metric,
        "accuracy_budget": options.accuracy_budget,
        "latency_batch_size": options.latency_batch_size,
        "teacher_validation": reference,
        "chosen": chosen,
        "reason": reason,
        "chosen_vs_teacher_dynamic_int8_batch_1": (
            _latency(rows[chosen]) / _latency(teacher_int8)
            if chosen and teacher_int8 else None),
        "chosen_test_vs_teacher_test": (
            rows[chosen]["test"][metric]
            - rows[f"{TEACHER}/{KERAS}"]["test"][metric]
            if chosen else None),
        "validation_examples": len(splits.validation),
        "test_examples": len(splits.test),
        "students": {
            c: _read_json(os.path.join(f, model_dir_lib.RUN)).get(
                "student_layers") for c, f in candidates.items() if c != TEACHER},
    }


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def format_table(report):
    """The report's artifacts as a text table, the chosen one marked."""
    metric = report["metric"]
    width = max(len(name) for name in report["artifacts"]) + 1
    lines = [f"{'artifact':{width + 1}} {'MiB':>7} {'val ' + metric:>13} "
             f"{'test ' + metric:>14} {'b1 ms':>7} {'b1 p95':>7} "
             f"{'b32 ms':>7}"]
    batch = f"batch_{report.get('latency_batch_size', 32)}"
    for name, row in sorted(report["artifacts"].items(),
                            key=lambda item: -item[1]["size_bytes"]):
        times = row.get("latency_ms_per_example", {})
        one = times.get("batch_1", {})
        many = times.get(batch) or next(
            (v for k, v in times.items() if k != "batch_1"), {})
        mark = "*" if name == report["chosen"] else " "
        lines.append(
            f"{mark}{name:{width}} {row['size_bytes'] / 2**20:7.1f} "
            f"{row['validation'][metric]:13.4f} {row['test'][metric]:14.4f} "
            f"{one.get('median', float('nan')):7.2f} "
            f"{one.get('p95', float('nan')):7.2f} "
            f"{many.get('median', float('nan')):7.2f}")
    lines.append(f"chosen: {report['chosen']}: {report['reason']}")
    return "\n".join(lines)


def report_page(report):
    """`compression.html`: the side-by-side table and the choice."""
    table = html.escape(format_table(report))
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        "<title>Compression report</title></head><body>"
        "<h1>Compression report</h1>"
        f"<p>Teacher: {html.escape(str(report.get('teacher_dir')))}; "
        f"CPU: {html.escape(str(report.get('cpu')))}; validation "
        f"{report['validation_examples']} rows, test "
        f"{report['test_examples']} rows; latency per text, median and "
        "p95, all artifacts timed interleaved.</p>"
        f"<pre>{table}</pre>"
        f"<p><b>Chosen:</b> {html.escape(str(report['chosen']))}: "
        f"{html.escape(report['reason'])}. The test numbers are reported, "
        "not used for the choice.</p></body></html>\n")
