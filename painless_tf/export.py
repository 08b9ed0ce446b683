"""Export a trained model dir for serving and for the edge, and measure it.

`export_model(model_dir)` reads what `apps/finetune.py` wrote (the keras-hub
preset in `model/`, `labels.json`) and writes into `<model_dir>/export/`
every format the model's tokenizer allows. Each format is built, loaded
back and checked on its own; one that fails (a converter error, an int8
calibration that cannot run, no calibration texts) is left out with its
reason in the report's `skipped`, and the others are kept. The folder is
replaced only when at least one format was written:

| file | `--formats` name | runs with |
|---|---|---|
| `saved_model/` | `saved_model` | TensorFlow + TF Text ops |
| `model_float32.tflite` | `tflite_float32` | TFLite + TF Text ops |
| `model_float16.tflite` | `tflite_float16` | TFLite + TF Text ops |
| `model_dynamic_int8.tflite` | `tflite_dynamic_int8` | TFLite + TF Text ops |
| `model_int8.tflite` | `tflite_int8` | TFLite + TF Text ops |
| `export_metadata.json` | | label names, inputs, tokenizer |
| `export_report.json` | | sizes, latencies, accuracies |
| `README.md` | | how to load each artifact |

`keras_int8` (`model.quantize("int8")`) is measured in memory only.

Every artifact maps a batch of texts `text: string [N]` (plus `text_pair:
string [N]` for a model trained on sentence pairs) to

    {"probabilities": float32 [N, C], "label_ids": int64 [N],
     "labels": string [N]}

Tokenization happens inside the graph:

* The SavedModel runs the model's own keras-hub preprocessor, so its
  probabilities equal the Keras model's to float round-off. Loading it needs
  `import tensorflow_text` (the tokenizer's ops live there), never
  painless_tf or keras-hub:

      import tensorflow as tf, tensorflow_text  # noqa: F401
      serve = tf.saved_model.load("export/saved_model").signatures[
          "serving_default"]
      serve(text=tf.constant(["a fine film"]))["probabilities"]

* The .tflite files cannot run the keras-hub tokenizer (its regex split and
  Unicode case folding have no TFLite kernels). They tokenize with TF Text's
  TFLite ops instead: for WordPiece models (BERT, DistilBERT, RoFormer-v2)
  `FastBertNormalizer` (lower-case, NFD, strip accents) and
  `FastWordpieceTokenizer` with BERT's whitespace-and-punctuation
  pre-split; for SentencePiece models (ALBERT, DeBERTa-v3, F-Net,
  XLM-RoBERTa, whose ids it shifts as keras-hub does)
  `FastSentencepieceTokenizer` on the model's own proto. They then pack as
  the family does (`[CLS] a [SEP] (b [SEP])`, `<s> a </s></s> b </s>`) with
  builtin ops, padded only to the longest text of the batch (to the full
  sequence length for a model whose outputs change with padding). Byte-level
  BPE (RoBERTa) has no TFLite kernel: such a model gets the SavedModel only,
  and the report says so. They give keras-hub's token ids
  whenever the keras-hub tokenizer normalizes as BERT's own does: accents
  stripped when lower-casing (set from the Hugging Face folder's
  `tokenizer_config.json`, `models._match_hf_normalization`) and NFKC before
  splitting (`models.normalize_text`, on every path from text to model).
  The report's `tokenization_agreement` says on how many test texts the two
  agree. Load with the TF Text op resolver:

      import tensorflow_text as tf_text
      from tensorflow.lite.python import interpreter
      runner = interpreter.InterpreterWithCustomOps(
          model_path="export/model_float32.tflite",
          custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS,
      ).get_signature_runner()
      runner(text=np.array(["a fine film"], dtype=object))["probabilities"]

  On a device, link the TF Text TFLite kernels (`tflite_registrar`) into the
  interpreter; no Flex (Select TF ops) delegate is needed.

Measured on 2 CPU cores, the demo model (all-MiniLM-L6-v2 fine-tuned on
Rotten Tomatoes, Keras test accuracy 0.8421 on 1,311 rows): float32
.tflite 92.9 MB, within 2.1e-6 of Keras on every row; dynamic-range int8
25.8 MB (3.6x smaller), accuracy -0.3 points, about half the float32
latency; full-integer int8 25.1 MB, accuracy -10.8 points (77% of
predictions equal to Keras's): per-tensor int8 activations cost a BERT real
accuracy, so prefer dynamic-range int8 unless the target needs integer-only
math. `model.quantize("int8")` keeps Keras's accuracy (-0.15 points) in
3.9x less memory, but runs 2.7-4x slower on CPU.

`load_predictor(path)` gives one callable for a Keras model dir, a SavedModel
or a .tflite file, so that `apps/predict.py` prints the same thing for all.
"""

import contextlib
import dataclasses
import importlib
import json
import math
import os
import shutil
import time
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence

import keras
import keras_hub
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from absl import logging

from painless_tf import atomic
from painless_tf import data as data_lib
from painless_tf import hardware
from painless_tf import model_dir as model_dir_lib
from painless_tf import models
from painless_tf import pipeline

FORMATS = (
    "saved_model",
    "tflite_float32",
    "tflite_float16",
    "tflite_dynamic_int8",
    "tflite_int8",
    "keras_int8",
)
TFLITE_FILES = {
    "tflite_float32": "model_float32.tflite",
    "tflite_float16": "model_float16.tflite",
    "tflite_dynamic_int8": "model_dynamic_int8.tflite",
    "tflite_int8": "model_int8.tflite",
}
EXPORT_DIR = model_dir_lib.EXPORT
SAVED_MODEL_DIR = "saved_model"
METADATA_FILE = "export_metadata.json"
REPORT_FILE = "export_report.json"
INPUT_NAMES = ("text", "text_pair")
# Bumped whenever the layout of `export_metadata.json` changes.
_METADATA_VERSION = 1
# The SavedModel runs the Keras model's own graph: anything beyond float
# round-off is a bug, not a quantization cost.
_SAVED_MODEL_TOLERANCE = 1e-4
# Calls to each artifact before timing: the first calls build kernels,
# allocate tensors and resize the TFLite interpreter.
_WARMUP_CALLS = 2


class ExportError(ValueError):
    """A model dir, artifact or option that cannot be exported or loaded."""


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What `export_model` writes and how it measures it.

    Args:
        formats: tuple of str. Artifacts to build, from `FORMATS`.
        latency_batch_size: int. The batch size of the batched latency and
            of the accuracy runs (examples per call).
        latency_calls: int. Timed calls per artifact at batch size 1; the
            batched latency takes `max(3, latency_calls // 4)` calls.
        max_representative_examples: int. Texts, at most, that calibrate
            `tflite_int8` (one call each).
        max_test_examples: int or None. Test rows, at most, for the accuracy
            runs; None takes all.
        num_threads: int or None. Threads of the TFLite interpreters; None
            takes every core this process may use (TensorFlow's default).

    Examples:

    >>> ExportOptions(formats=("saved_model",)).latency_batch_size
    32
    """

    formats: tuple[str, ...] = FORMATS
    latency_batch_size: int = 32
    latency_calls: int = 40
    max_representative_examples: int = 200
    max_test_examples: int | None = None
    num_threads: int | None = None

    def __post_init__(self):
        formats = tuple(self.formats)
        object.__setattr__(self, "formats", formats)
        unknown = [f for f in formats if f not in FORMATS]
        if not formats or unknown or len(set(formats)) != len(formats):
            raise ExportError(
                f"--formats={','.join(formats)}: each must be one of "
                f"{', '.join(FORMATS)}, at least one, none twice. Pass e.g. "
                "--formats=saved_model,tflite_dynamic_int8."
            )
        for name in ("latency_batch_size", "latency_calls",
                     "max_representative_examples"):
            _check_positive(name, getattr(self, name))
        for name in ("max_test_examples", "num_threads"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))


@dataclasses.dataclass(frozen=True, eq=False)
class Predictor:
    """Class probabilities from any artifact: `predictor(texts[, pairs])`.

    Build one with `load_predictor`.

    Args:
        kind: str. `"keras"`, `"saved_model"` or `"tflite"`.
        path: str. What was loaded.
        label_names: tuple of str. Class names in id order.
        num_text_columns: int. 1, or 2 for sentence pairs.
        predict_batch: callable. Maps a list of texts (and one of pairs, or
            None) to float32 probabilities `[n, C]`; called with at most
            `batch_size` rows.
        batch_size: int. Rows per call of `predict_batch`.

    Examples:

    >>> p = Predictor(kind="keras", path="-", label_names=("neg", "pos"),
    ...     num_text_columns=1, batch_size=2,
    ...     predict_batch=lambda t, _: np.full((len(t), 2), 0.5, "float32"))
    >>> probs, names = p(["good", "bad", "ok"])
    >>> probs.shape, names
    ((3, 2), ('neg', 'pos'))
    """

    kind: str
    path: str
    label_names: tuple[str, ...]
    num_text_columns: int
    predict_batch: Callable
    batch_size: int = 32

    def __call__(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """Returns `(probabilities float32 [N, C], label_names)`.

        Args:
            texts: sequence of str. The first (or only) text of each row.
            pairs: sequence of str or None. The second text of each row, for
                a model trained on sentence pairs; None otherwise.
        """
        texts = [_as_text(t) for t in texts]
        if (pairs is not None) != (self.num_text_columns == 2):
            need = "needs" if self.num_text_columns == 2 else "takes no"
            raise ExportError(
                f"{self.path}: the model {need} a second text per row "
                f"(trained on {self.num_text_columns} text column(s)). "
                + ("Pass pairs=[...]." if self.num_text_columns == 2
                   else "Drop pairs.")
            )
        if pairs is not None:
            pairs = [_as_text(t) for t in pairs]
            if len(pairs) != len(texts):
                raise ExportError(
                    f"`pairs` must have one text per row of `texts` "
                    f"({len(texts)}). Received: {len(pairs)} pairs."
                )
        outputs = []
        for start in range(0, len(texts), self.batch_size):
            stop = start + self.batch_size
            outputs.append(np.asarray(self.predict_batch(
                texts[start:stop],
                None if pairs is None else pairs[start:stop],
            ), dtype=np.float32))
        if not outputs:
            return np.zeros((0, len(self.label_names)), np.float32), (
                self.label_names
            )
        return np.concatenate(outputs), self.label_names


def export_model(
    model_dir: str,
    *,
    options: ExportOptions | None = None,
    test: data_lib.Examples | None = None,
    representative: data_lib.Examples | None = None,
    num_text_columns: int | None = None,
) -> dict:
    """Writes `<model_dir>/export/` and returns its `export_report.json`.

    Everything is written into a temporary folder beside `export/`, checked
    (each artifact is loaded back with `load_predictor`), measured, and then
    renamed onto `export/`, replacing an earlier export.

    Args:
        model_dir: str. A trained model dir: `model/` (keras-hub preset with
            its preprocessor) and `labels.json`.
        options: `ExportOptions` or None. Formats and measurement settings;
            None takes the defaults.
        test: `data.Examples` or None. Labelled rows, with label ids of the
            model's `labels.json`, for accuracy and latency; None skips
            accuracy.
        representative: `data.Examples` or None. Texts that calibrate
            `tflite_int8` (labels unused), e.g. the validation split;
            required for that format.
        num_text_columns: int or None. 1, or 2 for sentence pairs; None
            takes it from the model dir (`text_columns` in `metrics.json`
            or `plan.json`), `test` or `representative`, else 1.

    Returns:
        The report, as written to `export_report.json` (see
        `format_report`).

    Raises:
        ExportError: for an unreadable model dir or inconsistent data; for
            an artifact whose probabilities are not finite, or a SavedModel
            that differs from the Keras model by more than 1e-4 (then
            nothing is written).

    Examples:

    >>> report = export_model("runs/demo")  # doctest: +SKIP
    >>> print(format_report(report))  # doctest: +SKIP
    """
    options = options or ExportOptions()
    model_dir = os.path.abspath(os.fspath(model_dir))
    classifier, vocab = _load_model_dir(model_dir)
    num_text_columns = _decide_text_columns(
        num_text_columns, _model_dir_text_columns(model_dir), test,
        representative,
    )
    if test is not None and options.max_test_examples is not None:
        test = _head(test, options.max_test_examples)
    skipped = {}
    tflite_formats = [f for f in options.formats if f in TFLITE_FILES]
    if tflite_formats:
        reason = _tflite_unsupported(classifier)
        if reason:
            skipped.update({name: reason for name in tflite_formats})
            tflite_formats = []
    if "tflite_int8" in tflite_formats and not representative:
        skipped["tflite_int8"] = (
            "no texts to calibrate on: pass --representative_data (e.g. the "
            "validation file)")
        tflite_formats.remove("tflite_int8")

    # The model dir's owner: locked while the export runs (a finetune on
    # the same folder waits its turn), staging of a killed export removed,
    # export/ listed before it is written and never written over if it is
    # not a run's.
    with model_dir_lib.ModelDir(model_dir, shared=True) as owner:
        target = owner.claim(EXPORT_DIR)
        report, skipped = _export_into(
            model_dir, target, classifier, vocab, num_text_columns, options,
            test, representative, skipped, tflite_formats)
    for name, reason in skipped.items():
        logging.warning("export: skipped %s: %s", name, reason)
    logging.info("export: wrote %s", os.path.join(model_dir, EXPORT_DIR))
    return report


def _export_into(model_dir, target, classifier, vocab, num_text_columns,
                 options, test, representative, skipped, tflite_formats):
    staging = atomic.staging_dir(target)
    try:
        artifacts = {}
        if "saved_model" in options.formats:
            path = os.path.join(staging, SAVED_MODEL_DIR)
            # One failing format never costs the others: its reason goes
            # into the report and the rest are still written.
            with _format_attempt("saved_model", skipped, path):
                _write_saved_model(classifier, vocab, num_text_columns, path)
                artifacts["saved_model"] = SAVED_MODEL_DIR
        if tflite_formats:
            source = os.path.join(staging, ".tflite_source")
            _write_tflite_source(classifier, vocab, num_text_columns, source)
            converted = {}
            probe, static = _probe_float32(source, num_text_columns)
            if static:
                # DeBERTa-v3's relative position buckets take Abs of an
                # int64 tensor, which TFLite has a kernel for only when the
                # converter can fold it: at a fixed length.
                logging.info("export: the TFLite graphs take the full "
                             "sequence length (an op has no kernel at a "
                             "dynamic length)")
                shutil.rmtree(source)
                _write_tflite_source(classifier, vocab, num_text_columns,
                                     source, full_width=True)
            elif probe is not None:
                converted["tflite_float32"] = probe
            calibration = None
            if representative:
                calibration = _head(
                    representative, options.max_representative_examples
                )
            for name in tflite_formats:
                path = os.path.join(staging, TFLITE_FILES[name])
                with _format_attempt(name, skipped, path):
                    started = time.perf_counter()
                    content = converted.pop(name, None) or _convert_tflite(
                        source, name, calibration)
                    with open(path, "wb") as f:
                        f.write(content)
                    artifacts[name] = TFLITE_FILES[name]
                    logging.info(
                        "export: %s, %.1f MB, converted in %.1f s", name,
                        len(content) / 1e6, time.perf_counter() - started,
                    )
            shutil.rmtree(source)
        metadata = _metadata(classifier, vocab, num_text_columns, artifacts)
        recorded = recorded_text_columns(model_dir)
        if recorded is not None and len(recorded) == num_text_columns:
            metadata["text_columns"] = recorded
        _write_json(os.path.join(staging, METADATA_FILE), metadata)
        report = _measure(
            model_dir, staging, classifier, vocab, num_text_columns,
            artifacts, options, test, representative, skipped,
        )
        if not artifacts and not any(
                f == "keras_int8" for f in options.formats):
            raise ExportError(
                "No format could be exported: " + "; ".join(
                    f"{k}: {v}" for k, v in skipped.items())
                + ". Nothing was written."
            )
        # The metadata lists only what was kept after verification.
        metadata["artifacts"] = artifacts
        _write_json(os.path.join(staging, METADATA_FILE), metadata)
        _write_json(os.path.join(staging, REPORT_FILE), report)
        _write_readme(staging, metadata)
        atomic.replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report, skipped


@contextlib.contextmanager
def _format_attempt(name, skipped, path):
    """Runs one format's build; a failure becomes `skipped[name]` (its
    reason, one line) and its partial files are removed."""
    try:
        yield
    # Converters and kernels fail in many ways (ValueError, RuntimeError,
    # ConverterError, OpError): whatever it is, it is that format's alone.
    except Exception as error:  # noqa: BLE001
        skipped[name] = _first_line(error)
        logging.warning("export: %s failed: %s", name, skipped[name])
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)


def _first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text}"[:300]


def load_predictor(
    path: str,
    *,
    batch_size: int = 32,
    num_threads: int | None = None,
    quantize: str | None = None,
    num_text_columns: int | None = None,
) -> Predictor:
    """Loads a Keras model dir, a SavedModel or a .tflite file to predict with.

    Args:
        path: str. A trained model dir (holding `model/` and `labels.json`),
            its `model/` preset folder, an exported `saved_model/` folder, or
            an exported `.tflite` file (with `export_metadata.json` beside
            it).
        batch_size: int. Rows per model call.
        num_threads: int or None. TFLite interpreter threads; None takes
            every core this process may use.
        quantize: str or None. `"int8"` quantizes a Keras model in memory
            (`model.quantize`); only for Keras model dirs.
        num_text_columns: int or None. 1, or 2 for sentence pairs. None
            reads it from the export metadata, or for a Keras model dir from
            `text_columns` in its `metrics.json` or `plan.json`, else 1.

    Returns:
        A `Predictor`: `predictor(texts[, pairs]) -> (probabilities,
        label_names)`.

    Raises:
        ExportError: for a path that is none of the above.

    Examples:

    >>> predict = load_predictor("runs/demo/export/model_int8.tflite")  # doctest: +SKIP
    >>> probabilities, names = predict(["a fine film"])  # doctest: +SKIP
    """
    _check_positive("batch_size", batch_size)
    if num_threads is not None:
        _check_positive("num_threads", num_threads)
    path = os.path.abspath(os.fspath(path))
    if quantize not in (None, "int8"):
        raise ExportError(
            f"`quantize` must be None or 'int8'. Received: quantize="
            f"{quantize!r}."
        )
    if num_text_columns not in (None, 1, 2):
        raise ExportError(
            "`num_text_columns` must be 1, or 2 for sentence pairs. "
            f"Received: {num_text_columns!r}."
        )
    if os.path.isfile(path) and path.endswith(".tflite"):
        kind = "tflite"
    elif os.path.isfile(os.path.join(path, "saved_model.pb")):
        kind = "saved_model"
    elif _keras_model_dir(path) is not None:
        kind = "keras"
    else:
        raise ExportError(
            f"{path}: neither a trained model dir (model/ and labels.json), "
            "a SavedModel folder (saved_model.pb) nor a .tflite file. Pass "
            "one of those, e.g. <model_dir>/export/model_float32.tflite."
        )
    if quantize and kind != "keras":
        raise ExportError(
            f"{path}: quantize='int8' applies to Keras model dirs only; a "
            f"{kind} artifact is quantized at export. Drop quantize."
        )
    if kind == "keras":
        classifier, vocab = _load_model_dir(path, quantize)
        columns = num_text_columns or _model_dir_text_columns(path) or 1
        return _keras_predictor(
            classifier, vocab, path=path, num_text_columns=columns,
            batch_size=batch_size,
        )
    metadata = _read_metadata(os.path.dirname(path), path)
    columns = metadata["num_text_columns"]
    if num_text_columns not in (None, columns):
        raise ExportError(
            f"{path} was exported for {columns} text column(s), not "
            f"{num_text_columns}. Pass the matching number or export again."
        )
    if kind == "tflite":
        predict_batch = _tflite_predict_fn(path, num_threads)
    else:
        predict_batch = _saved_model_predict_fn(path)
    return Predictor(
        kind=kind, path=path, label_names=tuple(metadata["label_names"]),
        num_text_columns=columns, predict_batch=predict_batch,
        batch_size=batch_size,
    )


def format_report(report: Mapping) -> str:
    """The report as a Markdown table, one row per artifact, then the ratios.

    `MB` is the size on disk; for `keras_int8`, which lives in memory only,
    the weights' size in memory (marked `mem`). `agree` is the share of test
    rows whose predicted class equals the Keras model's. Latencies are per
    example, mean and p95, at batch 1 and at the report's batch size.

    Args:
        report: Mapping. What `export_model` returns.

    Returns:
        str. The table; the .tflite tokenizer's agreement with keras-hub's
        and the differences on the rows where they agree; one line per
        quantized-vs-float comparison.

    Examples:

    >>> print(format_report({"latency_batch_size": 32, "artifacts": {
    ...     "keras": {"size_bytes": 2_000_000, "accuracy": 0.8}}}))
    | artifact | MB | accuracy | max diff | agree | b1 ms (p95) | b32 ms (p95) |
    |---|---|---|---|---|---|---|
    | keras | 2.00 | 0.8000 | - | - | - | - |
    """
    batch = report.get("latency_batch_size")
    lines = [
        "| artifact | MB | accuracy | max diff | agree | b1 ms (p95) | "
        f"b{batch} ms (p95) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in report.get("artifacts", {}).items():
        if row.get("size_bytes"):
            size = f"{row['size_bytes'] / 1e6:.2f}"
        elif row.get("weight_bytes"):
            size = f"{row['weight_bytes'] / 1e6:.2f} mem"
        else:
            size = "-"
        latency = row.get("latency_ms_per_example", {})
        cells = [
            name,
            size,
            _cell(row.get("accuracy"), "{:.4f}"),
            _cell(row.get("max_abs_prob_diff"), "{:.1e}"),
            _cell(row.get("argmax_agreement"), "{:.4f}"),
        ]
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
                f"{name} {row['max_abs_prob_diff_same_tokens']:.1e}"
                for name, row in tflite.items()
            )
        )
    for name, ratios in report.get("ratios", {}).items():
        parts = [f"{k} {v:.2f}" for k, v in ratios.items() if v is not None]
        lines.append(f"{name}: " + ", ".join(parts))
    for name, reason in report.get("skipped", {}).items():
        lines.append(f"skipped {name}: {reason}")
    return "\n".join(lines)


# --- Reading the model dir ------------------------------------------------


def _keras_model_dir(path):
    """(model_dir, preset folder) for a model dir or its preset, else None."""
    if os.path.isfile(os.path.join(path, "labels.json")) and os.path.isfile(
        os.path.join(path, "model", "config.json")
    ):
        return path, os.path.join(path, "model")
    parent = os.path.dirname(path)
    if os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(
        os.path.join(parent, "labels.json")
    ):
        return parent, path
    return None


def _load_model_dir(model_dir, quantize=None):
    found = _keras_model_dir(model_dir)
    if found is None:
        raise ExportError(
            f"--model_dir={model_dir}: no trained model there (expected "
            "model/config.json and labels.json). Pass the --model_dir that "
            "apps/finetune.py wrote."
        )
    model_dir, preset = found
    try:
        vocab = data_lib.LabelVocab.from_json(
            os.path.join(model_dir, "labels.json")
        )
        models.check_trained_head(
            preset, len(vocab), os.path.join(model_dir, "labels.json"))
        classifier = models.load_classifier(preset, num_classes=len(vocab))
    except (data_lib.DataError, models.ModelError) as e:
        raise ExportError(str(e)) from None
    if classifier.preprocessor is None:
        raise ExportError(
            f"{preset}: the model was saved without its preprocessor, so "
            "raw text cannot be tokenized. Save it again with "
            "models.save_classifier after attaching the preprocessor."
        )
    if quantize:
        _quantize_int8(classifier)
    return classifier, vocab


def _quantize_int8(classifier):
    # `TextClassifier.quantize` also visits the preprocessor, whose tokenizer
    # is never "built" and makes Keras refuse; the weights all live in the
    # functional model's own layers.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for layer in classifier.layers:
            if layer.weights:
                layer.quantize("int8")


def _decide_text_columns(explicit, recorded, test, representative):
    found = {
        name: examples.num_text_columns
        for name, examples in (("test", test), ("representative",
                                                representative))
        if examples is not None
    }
    if recorded is not None:
        found["model dir"] = recorded
    if explicit is not None:
        if explicit not in (1, 2):
            raise ExportError(
                f"`num_text_columns` must be 1, or 2 for sentence pairs. "
                f"Received: {explicit!r}."
            )
        found["--text_columns"] = explicit
    if len(set(found.values())) > 1:
        raise ExportError(
            "The data disagree on the number of text columns ("
            + ", ".join(f"{k}: {v}" for k, v in found.items())
            + "). Pass the same --text_columns the model was trained with."
        )
    return next(iter(found.values()), 1)


def _head(examples, count):
    if len(examples) <= count:
        return examples
    return data_lib.Examples(
        texts=tuple(column[:count] for column in examples.texts),
        labels=examples.labels[:count],
        lines=examples.lines[:count],
        source=examples.source,
    )


# --- The SavedModel -------------------------------------------------------


def _activation(classifier):
    """"linear" (logits) or "softmax": what the classifier's head returns."""
    activation = keras.activations.serialize(
        getattr(classifier, "activation", None) or keras.activations.linear
    )
    if activation not in ("linear", "softmax"):
        raise ExportError(
            f"The classifier ends in activation={activation!r}; export "
            "supports logits (activation=None) or 'softmax'."
        )
    return activation


def _preprocess(preprocessor, texts):
    """The keras-hub preprocessor's model inputs for 1 or 2 text columns."""
    # By keyword: a positional tuple `(texts, pairs)` is read as `(x, y)`,
    # and the pairs would silently become labels.
    texts = [models.normalize_text(preprocessor.tokenizer, t) for t in texts]
    return preprocessor(x=texts[0] if len(texts) == 1 else tuple(texts))


def _output_fn(classifier, label_names):
    """Maps the classifier's model inputs to the three serving outputs."""
    activation = _activation(classifier)
    names = tf.constant(list(label_names))

    def outputs(x):
        scores = tf.cast(classifier(x, training=False), tf.float32)
        probabilities = (
            scores if activation == "softmax" else tf.nn.softmax(scores)
        )
        label_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            "probabilities": probabilities,
            "label_ids": label_ids,
            "labels": tf.gather(names, label_ids),
        }

    return outputs


def _add_serving_endpoint(archive, fn, num_text_columns):
    """Adds `fn(*texts)` as `serving_default` with named string inputs.

    The archive tracks the variables the endpoint uses by itself; also
    calling `archive.track(classifier)` would save every weight twice (Keras
    3.15 keeps both the Keras variables and the tf.Variables under them).
    """
    if num_text_columns == 1:
        def serve(text):
            return fn(text)
    else:
        def serve(text, text_pair):
            return fn(text, text_pair)
    archive.add_endpoint(
        "serving_default", serve,
        input_signature=[
            tf.TensorSpec([None], tf.string, name=name)
            for name in INPUT_NAMES[:num_text_columns]
        ],
    )


def _write_saved_model(classifier, vocab, num_text_columns, path):
    preprocessor = classifier.preprocessor
    outputs = _output_fn(classifier, vocab.names)

    def serve(*texts):
        return outputs(_preprocess(preprocessor, texts))

    archive = keras.export.ExportArchive()
    # The tokenizer's own TF resources (the SentencePiece model, lookup
    # tables) are no Keras variables: without tracking them, SentencePiece
    # models fail with "references an 'untracked' resource". ExportArchive
    # tracks built layers only; one call builds the tokenizer.
    _preprocess(preprocessor, [tf.constant(["a"])] * num_text_columns)
    archive.track(preprocessor.tokenizer)
    _add_serving_endpoint(archive, serve, num_text_columns)
    archive.write_out(path, verbose=False)


# --- TFLite ---------------------------------------------------------------


def _tflite_tokenizer_kind(tokenizer):
    """"wordpiece" or "sentencepiece": the TF Text tokenizer with TFLite
    kernels that reproduces `tokenizer`; None where none does."""
    if isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer) and (
        getattr(tokenizer, "split", False)
    ):
        return "wordpiece"
    if isinstance(tokenizer, keras_hub.tokenizers.SentencePieceTokenizer) and (
        getattr(tokenizer, "proto", None)
    ):
        return "sentencepiece"
    return None


def _tflite_unsupported(classifier):
    """Why the .tflite formats cannot take raw strings, or None."""
    tokenizer = classifier.preprocessor.tokenizer
    if _tflite_tokenizer_kind(tokenizer) is None:
        return (
            f"the model's tokenizer ({type(tokenizer).__name__}) has no "
            "TFLite kernels (TF Text has them for pre-splitting WordPiece "
            "and for SentencePiece only); the SavedModel takes raw strings"
        )
    return None


def _fast_tokenizer(tokenizer):
    """Strings -> ragged int ids with the keras-hub tokenizer's ids, through
    TF Text ops that have TFLite kernels."""
    kind = _tflite_tokenizer_kind(tokenizer)
    if kind == "wordpiece":
        fast = tf_text.FastBertTokenizer(
            vocab=list(tokenizer.get_vocabulary()),
            suffix_indicator=tokenizer.suffix_indicator,
            unknown_token=tokenizer.oov_token,
            token_out_type=tf.int32,
            lower_case_nfd_strip_accents=bool(tokenizer.lowercase),
        )
        return fast.tokenize
    fast = tf_text.FastSentencepieceTokenizer(model=tokenizer.proto)
    if isinstance(tokenizer, keras_hub.tokenizers.XLMRobertaTokenizer):
        # XLM-R's ids are the SentencePiece model's plus one, with the
        # model's <unk> (0) moved to 3 (fairseq's order <s> <pad> </s>
        # <unk>), as `XLMRobertaTokenizer._tokenize_tf` does.
        def tokenize(texts):
            ids = fast.tokenize(texts)
            return ids.with_flat_values(tf.where(
                ids.flat_values == 0, tokenizer.unk_token_id,
                ids.flat_values + 1))
        return tokenize
    return fast.tokenize


def _tflite_tokenize_fn(classifier, num_text_columns, full_width=None):
    """Strings -> packed model inputs, with TFLite-compatible ops only.

    TF Text's FastBertTokenizer (FastBertNormalize + FastWordpieceTokenize)
    and FastSentencepieceTokenizer have TFLite kernels; the keras-hub
    packer (RaggedTensor ops, trimmers) does not, so the family's packing
    (start, separator and end tokens of `pipeline.family_packer`) is
    written with dense builtin ops: gather the kept tokens of each segment
    from the flat ids by position. Rows are padded to the longest one,
    except for a model whose outputs change with padding (F-Net), which
    gets its full sequence length as in Keras, and for one whose graph
    has ops TFLite runs only on static shapes (`full_width=True`).
    """
    preprocessor = classifier.preprocessor
    tokenizer = preprocessor.tokenizer
    fast = _fast_tokenizer(tokenizer)
    sequence_length = int(preprocessor.sequence_length)
    packer = pipeline.family_packer(tokenizer, sequence_length)
    start_ids = [int(i) for i in packer.start_value]
    sep_ids = [int(i) for i in packer.sep_value]
    end_ids = [int(i) for i in packer.end_value]
    pad_id = int(tokenizer.pad_token_id)
    truncate = getattr(preprocessor, "truncate", "round_robin")
    model_inputs = set(classifier.backbone.input.keys())
    if not full_width:
        full_width = models.padding_changes_outputs(classifier.backbone,
                                                    tokenizer)

    def tokenize(*texts):
        segments = [fast(t) for t in texts]
        # Room for the start, separator and end tokens.
        budget = tf.constant(
            sequence_length - len(start_ids) - len(end_ids)
            - len(sep_ids) * (len(segments) - 1), tf.int64)
        lengths = [tf.cast(s.row_lengths(), tf.int64) for s in segments]
        if len(segments) == 1:
            kept = [tf.minimum(lengths[0], budget)]
        elif truncate == "round_robin":
            # Closed form of MultiSegmentPacker's round robin: the first
            # segment gets the odd turn, and any turns the other can't use.
            first = tf.minimum(
                lengths[0], tf.maximum((budget + 1) // 2, budget - lengths[1])
            )
            kept = [first, tf.minimum(lengths[1], budget - first)]
        else:
            first = tf.minimum(lengths[0], budget)
            kept = [first, tf.minimum(lengths[1], budget - first)]
        closers = [sep_ids] * (len(segments) - 1) + [end_ids]
        total = len(start_ids) + sum(
            k + len(c) for k, c in zip(kept, closers))
        if full_width:
            width = tf.constant(sequence_length, tf.int64)
        else:
            # Padding only to the longest row keeps batch-1 calls short;
            # padded keys get exactly zero attention weight.
            width = tf.minimum(tf.reduce_max(total), sequence_length)
        position = tf.range(width, dtype=tf.int64)[tf.newaxis, :]
        token_ids = tf.fill(tf.shape(position + total[:, tf.newaxis]), pad_id)
        segment_ids = tf.zeros_like(token_ids)
        for offset, value in enumerate(start_ids):
            token_ids = tf.where(position == offset, value, token_ids)
        start = tf.fill(tf.shape(total), tf.constant(len(start_ids), tf.int64))
        for index, (segment, count, closer) in enumerate(
                zip(segments, kept, closers)):
            values = tf.concat([segment.flat_values, [pad_id]], axis=0)
            row_start = tf.cast(segment.row_splits[:-1], tf.int64)
            inside = (position >= start[:, tf.newaxis]) & (
                position < (start + count)[:, tf.newaxis]
            )
            source = row_start[:, tf.newaxis] + position - start[:, tf.newaxis]
            gathered = tf.gather(values, tf.where(inside, source, 0))
            token_ids = tf.where(inside, gathered, token_ids)
            end = (start + count)[:, tf.newaxis]
            for offset, value in enumerate(closer):
                token_ids = tf.where(position == end + offset, value,
                                     token_ids)
            in_segment = (position >= start[:, tf.newaxis]) & (
                position < end + len(closer))
            segment_ids = tf.where(in_segment, index, segment_ids)
            start = start + count + len(closer)
        x = {
            "token_ids": token_ids,
            "segment_ids": segment_ids,
            "padding_mask": position < total[:, tf.newaxis],
        }
        return {k: v for k, v in x.items() if k in model_inputs}

    return tokenize


def _write_tflite_source(classifier, vocab, num_text_columns, path,
                         full_width=None):
    """A SavedModel of the TFLite graph, for `from_saved_model`.

    Keras 3 variables reach the converter frozen only through an
    `ExportArchive`; a plain `tf.Module` around the model converts to
    uninitialized resource variables (NaN outputs, TF 2.21).
    """
    tokenize = _tflite_tokenize_fn(classifier, num_text_columns, full_width)
    outputs = _output_fn(classifier, vocab.names)
    archive = keras.export.ExportArchive()
    _add_serving_endpoint(
        archive, lambda *texts: outputs(tokenize(*texts)), num_text_columns
    )
    archive.write_out(path, verbose=False)


def _convert_tflite(source, name, calibration):
    converter = tf.lite.TFLiteConverter.from_saved_model(source)
    # The tokenizer's ops are TF Text's TFLite custom ops.
    converter.allow_custom_ops = True
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if name != "tflite_float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if name == "tflite_float16":
        converter.target_spec.supported_types = [tf.float16]
    if name == "tflite_int8":
        # One text per calibration call: no padding, so the ranges come from
        # real activations, not from attention-mask fill values.
        columns = calibration.texts

        def representative_dataset():
            for row in zip(*columns):
                yield {
                    INPUT_NAMES[i]: tf.constant([text])
                    for i, text in enumerate(row)
                }

        converter.representative_dataset = representative_dataset
        _register_tf_text_ops_for_calibration(converter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def _probe_float32(source, num_text_columns):
    """`(content, static)`: the float32 TFLite model of `source` (None if
    it does not convert or run), and whether it has ops that neither TFLite
    nor TF Text has a kernel for (they became custom ops, which fail when
    the graph first runs). Failures are left to the formats' own attempts,
    which report them."""
    try:
        content = _convert_tflite(source, "tflite_float32", None)
    except Exception:  # noqa: BLE001
        return None, False
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "probe.tflite")
        with open(path, "wb") as f:
            f.write(content)
        try:
            predict = _tflite_predict_fn(path, num_threads=1)
            predict(["a b"], ["c"] if num_text_columns == 2 else None)
        except Exception as error:  # noqa: BLE001
            return None, "unresolved custom op" in str(error)
    return content, False


def _register_tf_text_ops_for_calibration(converter):
    # Calibration runs the model in a TFLite interpreter, which needs the TF
    # Text kernels; TF 2.21 exposes no public setting for that, only this
    # attribute read by `TFLiteConverter._calibrate_quantize_model`.
    converter.target_spec._experimental_custom_op_registerers = list(
        tf_text.tflite_registrar.SELECT_TFTEXT_OPS
    )


def _tflite_interpreter(path, num_threads):
    # `tf.lite.Interpreter` takes no custom op registerers; its subclass that
    # does lives in a module outside the public API (checked on TF 2.21,
    # where TF Text's own TFLite guide uses it the same way).
    module = importlib.import_module("tensorflow.lite.python.interpreter")
    with warnings.catch_warnings():
        # "tf.lite.Interpreter is deprecated": its suggested replacement,
        # ai_edge_litert, is not a dependency, and TF Text documents its
        # TFLite registrars with this class.
        warnings.simplefilter("ignore")
        return module.InterpreterWithCustomOps(
            model_path=path,
            custom_op_registerers=list(
                tf_text.tflite_registrar.SELECT_TFTEXT_OPS
            ),
            num_threads=num_threads or _cpu_count(),
        )


# --- Predictors -----------------------------------------------------------


def _keras_predictor(classifier, vocab, *, path, num_text_columns,
                     batch_size):
    activation = _activation(classifier)
    preprocessor = classifier.preprocessor
    model_inputs = set(classifier.backbone.input.keys())

    # No AutoGraph: nothing here branches on tensors (as in ExportArchive).
    @tf.function(reduce_retracing=True, autograph=False)
    def forward(*texts):
        x = _preprocess(preprocessor, texts)
        x = {k: v for k, v in x.items() if k in model_inputs}
        return tf.cast(classifier(x, training=False), tf.float32)

    def predict_batch(texts, pairs):
        inputs = [tf.constant(texts, tf.string)]
        if pairs is not None:
            inputs.append(tf.constant(pairs, tf.string))
        scores = forward(*inputs)
        if activation != "softmax":
            scores = tf.nn.softmax(scores)
        return scores.numpy()

    return Predictor(
        kind="keras", path=path, label_names=tuple(vocab.names),
        num_text_columns=num_text_columns, predict_batch=predict_batch,
        batch_size=batch_size,
    )


def _model_dir_text_columns(path):
    """How many text columns the model was trained on, if recorded."""
    columns = recorded_text_columns(path)
    return None if columns is None else len(columns)


def recorded_text_columns(path: str) -> list[str] | None:
    """The text columns a model was trained on, as its model dir records them.

    `apps/finetune.py` writes them into `run.json` (and `metrics.json`); an
    exported artifact's `export_metadata.json` copies them, and an artifact
    inside `<model_dir>/export/` also finds its model dir's `run.json`.

    Args:
        path: str. A trained model dir, its `model/` folder, or an exported
            `saved_model/` folder or `.tflite` file.

    Returns:
        The column names (one, or two for sentence pairs), or None where
        nothing records them.

    Examples:

    >>> recorded_text_columns("/nonexistent") is None
    True
    """
    path = os.path.abspath(os.fspath(path))
    found = _keras_model_dir(path) if os.path.isdir(path) else None
    if found is None:
        # An exported artifact: its metadata, else the model dir above it.
        folder = os.path.dirname(path)
        metadata = _read_json_object(os.path.join(folder, METADATA_FILE))
        columns = metadata.get("text_columns")
        if _valid_columns(columns):
            return list(columns)
        found = _keras_model_dir(os.path.dirname(folder))
        if found is None:
            return None
    model_dir = found[0]
    for name in ("run.json", "metrics.json", "plan.json"):
        columns = _read_json_object(os.path.join(model_dir, name)).get(
            "text_columns")
        if _valid_columns(columns):
            return list(columns)
    return None


def _valid_columns(columns):
    return (isinstance(columns, list) and len(columns) in (1, 2)
            and all(isinstance(c, str) for c in columns))


def _read_json_object(path):
    """The JSON object in `path`; {} when absent or not a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _saved_model_predict_fn(path):
    serve = tf.saved_model.load(path).signatures["serving_default"]

    def predict_batch(texts, pairs):
        inputs = {"text": tf.constant(texts, tf.string)}
        if pairs is not None:
            inputs["text_pair"] = tf.constant(pairs, tf.string)
        return serve(**inputs)["probabilities"].numpy()

    return predict_batch


def _tflite_predict_fn(path, num_threads):
    runner = _tflite_interpreter(path, num_threads).get_signature_runner()

    def predict_batch(texts, pairs):
        inputs = {"text": np.array(texts, dtype=object)}
        if pairs is not None:
            inputs["text_pair"] = np.array(pairs, dtype=object)
        return runner(**inputs)["probabilities"]

    return predict_batch


def _read_metadata(folder, artifact):
    path = os.path.join(folder, METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
        names = metadata["label_names"]
        columns = metadata["num_text_columns"]
    except FileNotFoundError:
        raise ExportError(
            f"{artifact}: no {METADATA_FILE} beside it (label names, "
            "inputs). Copy it from the export folder next to the artifact."
        ) from None
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ExportError(
            f"{path}: not an export metadata file ({type(e).__name__}: {e}). "
            "Export the model again."
        ) from None
    return {"label_names": names, "num_text_columns": columns}


# --- Measuring ------------------------------------------------------------


def _measure(model_dir, staging, classifier, vocab, num_text_columns,
             artifacts, options, test, representative, skipped):
    """Loads every artifact back, then times and scores them side by side.

    An artifact that does not load, returns non-finite probabilities or (the
    SavedModel) differs from the Keras model beyond float round-off is
    removed from `artifacts` and from disk, with its reason in `skipped`.
    """
    threads = options.num_threads or _cpu_count()
    batch = options.latency_batch_size
    predictors = {"keras": _keras_predictor(
        classifier, vocab, path=model_dir, num_text_columns=num_text_columns,
        batch_size=batch,
    )}
    rows = {"keras": {
        "size_bytes": _size(os.path.join(model_dir, "model")),
        "weight_bytes": _weight_bytes(classifier),
    }}
    if "keras_int8" in options.formats:
        quantized, _ = _load_model_dir(model_dir, quantize="int8")
        predictors["keras_int8"] = _keras_predictor(
            quantized, vocab, path=model_dir,
            num_text_columns=num_text_columns, batch_size=batch,
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
        _score(predictors, rows, test, same_tokens)
        difference = rows.get("saved_model", {}).get("max_abs_prob_diff", 0.0)
        if difference > _SAVED_MODEL_TOLERANCE:
            skipped["saved_model"] = (
                f"its probabilities differ from the Keras model's by up to "
                f"{difference:.2g} (> {_SAVED_MODEL_TOLERANCE}); report this "
                "with the model class and the TensorFlow, Keras and "
                "keras-hub versions")
            shutil.rmtree(os.path.join(staging, SAVED_MODEL_DIR))
            del artifacts["saved_model"], rows["saved_model"]
            del predictors["saved_model"]
    pool = test if test else representative
    if pool:
        for name, timing in _latencies(predictors, pool, options).items():
            rows[name]["latency_ms_per_example"] = timing

    env = hardware.detect_environment(gpu_lister=lambda: [])
    return {
        "model_dir": model_dir,
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


def _score(predictors, rows, test, same_tokens):
    """Accuracy and agreement with the Keras model, per artifact.

    For the .tflite files, whose tokenizer differs from keras-hub's on
    accented text, the difference is also given over the rows both tokenize
    alike: that one measures the conversion alone.
    """
    columns = test.texts
    pairs = columns[1] if len(columns) == 2 else None
    reference, _ = predictors["keras"](columns[0], pairs)
    for name, predictor in predictors.items():
        started = time.perf_counter()
        probabilities = reference if name == "keras" else predictor(
            columns[0], pairs
        )[0]
        _check_finite(name, probabilities)
        predicted = probabilities.argmax(axis=-1)
        rows[name].update(
            accuracy=float(np.mean(predicted == test.labels)),
            max_abs_prob_diff=float(np.max(
                np.abs(probabilities - reference), initial=0.0
            )),
            argmax_agreement=float(
                np.mean(predicted == reference.argmax(axis=-1))
            ),
        )
        if name in TFLITE_FILES:
            rows[name].update(
                tokenization_agreement=float(np.mean(same_tokens)),
                max_abs_prob_diff_same_tokens=float(np.max(
                    np.abs(probabilities - reference)[same_tokens],
                    initial=0.0,
                )),
            )
        logging.info(
            "export: %s accuracy %.4f on %d test rows (%.1f s)", name,
            rows[name]["accuracy"], len(test), time.perf_counter() - started,
        )


def _check_finite(name, probabilities):
    if not np.all(np.isfinite(probabilities)):
        raise ExportError(
            f"The exported {name} returns non-finite probabilities. Report "
            "this with the model class and the TensorFlow, Keras and "
            "keras-hub versions."
        )


def _same_tokens(classifier, examples):
    """bool [n]: whether the TFLite graph packs row i as keras-hub does."""
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


def _latencies(predictors, pool, options):
    """Per-example latency at batch 1 and at a batch, interleaved.

    Each round times one call of every artifact in turn, so that load from
    other processes hits all artifacts alike.
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


# --- Files ----------------------------------------------------------------


def _metadata(classifier, vocab, num_text_columns, artifacts):
    return {
        "format_version": _METADATA_VERSION,
        "label_names": list(vocab.names),
        "num_text_columns": num_text_columns,
        "inputs": list(INPUT_NAMES[:num_text_columns]),
        "outputs": {
            "probabilities": "float32 [N, num_classes]",
            "label_ids": "int64 [N]",
            "labels": "string [N]",
        },
        "sequence_length": int(classifier.preprocessor.sequence_length),
        "artifacts": artifacts,
        "tflite_tokenizer": _tflite_tokenizer_metadata(classifier),
    }


def _tflite_tokenizer_metadata(classifier):
    tokenizer = classifier.preprocessor.tokenizer
    kind = _tflite_tokenizer_kind(tokenizer)
    if kind is None:
        return None
    full = models.padding_changes_outputs(classifier.backbone, tokenizer)
    entry = {
        "kind": kind,
        "ops": (["FastBertNormalize", "FastWordpieceTokenizeWithOffsets"]
                if kind == "wordpiece"
                else ["TFText>FastSentencepieceTokenize"]),
        "op_resolver": "tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS",
        "padding": ("to the sequence length (padding changes this "
                    "model's outputs)" if full
                    else "to the longest row of the batch"),
    }
    if kind == "wordpiece":
        entry["lower_case_nfd_strip_accents"] = bool(
            getattr(tokenizer, "lowercase", False))
    return entry


_README = """\
# Exported model

Inputs: {inputs} (string tensors [N]). Outputs: probabilities (float32
[N, {num_classes}]), label_ids (int64 [N]), labels (string [N]).
Labels in id order: {labels}.

SavedModel (`saved_model/`), from raw strings, tokenized in the graph:

    import tensorflow as tf, tensorflow_text  # registers the tokenizer ops
    serve = tf.saved_model.load("saved_model").signatures["serving_default"]
    print(serve({call_args})["probabilities"])

TFLite (`model_*.tflite`), from raw strings, with TF Text's TFLite kernels:

    import numpy as np, tensorflow_text as tf_text
    from tensorflow.lite.python import interpreter
    runner = interpreter.InterpreterWithCustomOps(
        model_path="model_float32.tflite",
        custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS,
    ).get_signature_runner()
    print(runner({np_args})["probabilities"])

The .tflite tokenizer (FastBertNormalizer + FastWordpiece) always strips
accents when it lower-cases; a Keras model whose tokenizer keeps them gets
other token ids for accented words. export_report.json gives the share of
test texts on which both agree (tokenization_agreement).
"""


def _write_readme(folder, metadata):
    inputs = metadata["inputs"]
    text = _README.format(
        inputs=", ".join(inputs),
        num_classes=len(metadata["label_names"]),
        labels=", ".join(metadata["label_names"]),
        call_args=", ".join(f'{n}=tf.constant(["a fine film"])' for n in inputs),
        np_args=", ".join(
            f'{n}=np.array(["a fine film"], dtype=object)' for n in inputs
        ),
    )
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


def _write_json(path, content):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(path) for f in files
    )


# --- Small helpers --------------------------------------------------------


def _cpu_count():
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExportError(
            f"--{name} must be a positive integer. Received: {value!r}."
        )


def _as_text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise ExportError(
            f"Texts must be strings. Received: {value!r} "
            f"({type(value).__name__})."
        )
    return value


def _divide(numerator, denominator):
    if not numerator or not denominator:
        return None
    return float(numerator) / float(denominator)


def _cell(value, fmt):
    return "-" if value is None else fmt.format(value)
