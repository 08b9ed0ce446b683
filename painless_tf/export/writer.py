"""`export_model`: builds every format and writes `<model_dir>/export/`.

It decides the formats the model's tokenizer allows, builds each into a
staging folder beside `export/` (the SavedModel, then the TFLite graph and
its conversions), has `measure` load them back and measure them, writes
`export_metadata.json`, `export_report.json` and `README.md`, and renames
the staging folder onto `export/` under the model dir's owner.
"""

import json
import os
import shutil
import time

from absl import logging

from painless_tf import atomic
from painless_tf import data as data_lib
from painless_tf import model_dir as model_dir_lib
from painless_tf import models
from painless_tf import truncation as truncation_lib
from painless_tf.export.convert import _convert_tflite
from painless_tf.export.convert import _probe_float32
from painless_tf.export.formats import EXPORT_DIR
from painless_tf.export.formats import INPUT_NAMES
from painless_tf.export.formats import METADATA_FILE
from painless_tf.export.formats import REPORT_FILE
from painless_tf.export.formats import SAVED_MODEL_DIR
from painless_tf.export.formats import SCORE_OUTPUTS
from painless_tf.export.formats import TFLITE_FILES
from painless_tf.export.formats import ExportError
from painless_tf.export.formats import ExportOptions
from painless_tf.export.formats import _format_attempt
from painless_tf.export.measure import _measure
from painless_tf.export import token_ids as token_ids_lib
from painless_tf.export.reading import _keras_model_dir
from painless_tf.export.reading import _load_model_dir
from painless_tf.export.reading import model_dir_task
from painless_tf.export.reading import _task_entry
from painless_tf.export.reading import _model_dir_text_columns
from painless_tf.export.reading import recorded_text_columns
from painless_tf.export.saved_model import _write_saved_model
from painless_tf.export.tflite_graph import _tflite_inputs
from painless_tf.export.tflite_graph import _tflite_tokenizer_kind
from painless_tf.export.tflite_graph import _tflite_unsupported
from painless_tf.packing import _num_special_tokens
from painless_tf.packing import family_packer
from painless_tf.export.tflite_graph import _write_tflite_source

# Bumped whenever the layout of `export_metadata.json` changes (2: the
# task, its thresholds or target mean and std, and its outputs).
_METADATA_VERSION = 2


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
            its preprocessor), `labels.json` and (multi-label, regression)
            `task.json`.
        options: `ExportOptions` or None. Formats and measurement settings;
            None takes the defaults.
        test: `data.Examples` or None. Labelled rows for the task's metrics
            and latency, with labels as the run trained on them (the
            `data.Splits` labels): class ids of the model's `labels.json`,
            multi-hot rows (multi-label) or targets standardized by the
            task's mean and std (regression); None skips the metrics.
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
        ExportError: for an unreadable model dir or inconsistent data
            (test labels that are not the task's); for an artifact whose
            outputs are not finite, or a SavedModel that differs from the
            Keras model by more than 1e-4 (then nothing is written).

    Examples:

    >>> report = export_model("runs/demo")  # doctest: +SKIP
    >>> print(format_report(report))  # doctest: +SKIP
    """
    options = options or ExportOptions()
    model_dir = os.path.abspath(os.fspath(model_dir))
    task = model_dir_task(model_dir)
    classifier, vocab = _load_model_dir(model_dir)
    if test is not None:
        _check_test_labels(test, task, vocab)
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
            model_dir, target, classifier, vocab, task, num_text_columns,
            options, test, representative, skipped, tflite_formats)
    for name, reason in skipped.items():
        logging.warning("export: skipped %s: %s", name, reason)
    logging.info("export: wrote %s", os.path.join(model_dir, EXPORT_DIR))
    return report


def _check_test_labels(test, task, vocab):
    """Refuses test labels of another task: class ids [n] for a classifier,
    multi-hot [n, K] for multi-label, float targets [n] for regression (the
    representative texts calibrate only: their labels may be any)."""
    labels = test.labels
    if task.kind == "multi_label":
        fits = labels.ndim == 2 and labels.shape[1] == len(vocab)
        want = f"multi-hot rows [n, {len(vocab)}]"
    elif task.kind == "regression":
        fits = labels.ndim == 1 and labels.dtype.kind == "f"
        want = "float targets [n] (standardized by task.json's mean and std)"
    else:
        fits = labels.ndim == 1 and labels.dtype.kind in "iu"
        want = "class ids [n]"
    if not fits:
        raise ExportError(
            f"The test rows ({test.source}) have labels of shape "
            f"{list(labels.shape)} ({labels.dtype}); the model is a "
            f"{task.kind} model and needs {want}. Encode them with "
            "data.tasks.encode_labels, as the run did.")


def _export_into(model_dir, target, classifier, vocab, task, num_text_columns,
                 options, test, representative, skipped, tflite_formats):
    staging = atomic.staging_dir(target)
    try:
        artifacts = {}
        if "saved_model" in options.formats:
            path = os.path.join(staging, SAVED_MODEL_DIR)
            # One failing format never costs the others: its reason goes
            # into the report and the rest are still written.
            with _format_attempt("saved_model", skipped, path):
                _write_saved_model(classifier, vocab, num_text_columns, path,
                                   task=task)
                artifacts["saved_model"] = SAVED_MODEL_DIR
        if tflite_formats:
            source = os.path.join(staging, ".tflite_source")
            host = _write_tflite_graph(model_dir, staging, source, classifier,
                                       vocab, task, num_text_columns)
            converted = {}
            probe, static = _probe_float32(source, num_text_columns,
                                           host=host,
                                           output=SCORE_OUTPUTS[task.kind])
            if static:
                # DeBERTa-v3's relative position buckets take Abs of an
                # int64 tensor, which TFLite has a kernel for only when the
                # converter can fold it: at a fixed length.
                logging.info("export: the TFLite graphs take the full "
                             "sequence length (an op has no kernel at a "
                             "dynamic length)")
                shutil.rmtree(source)
                host = _write_tflite_graph(model_dir, staging, source,
                                           classifier, vocab, task,
                                           num_text_columns, full_width=True)
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
                        source, name, calibration, host=host)
                    with open(path, "wb") as f:
                        f.write(content)
                    artifacts[name] = TFLITE_FILES[name]
                    logging.info(
                        "export: %s, %.1f MB, converted in %.1f s", name,
                        len(content) / 1e6, time.perf_counter() - started,
                    )
            shutil.rmtree(source)
        metadata = _metadata(classifier, vocab, task, num_text_columns,
                             artifacts)
        if not any(name in TFLITE_FILES for name in artifacts):
            # Token-id .tflite files need their tokenizer files; without
            # them the folder is the SavedModel's alone.
            shutil.rmtree(os.path.join(staging, token_ids_lib.TOKENIZER_DIR),
                          ignore_errors=True)
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


def _write_tflite_graph(model_dir, staging, source, classifier, vocab, task,
                        num_text_columns, full_width=None):
    """Writes the SavedModel the .tflite files convert from; returns the
    host packer of token-id graphs (their tokenizer files written into
    `staging/tokenizer/`), or None for graphs that take strings."""
    if _tflite_inputs(classifier) != "token_ids":
        _write_tflite_source(classifier, vocab, num_text_columns, source,
                             full_width=full_width, task=task)
        return None
    full = bool(full_width) or models.padding_changes_outputs(
        classifier.backbone, classifier.preprocessor.tokenizer)
    folder = os.path.join(staging, token_ids_lib.TOKENIZER_DIR)
    shutil.rmtree(folder, ignore_errors=True)
    token_ids_lib.write_tokenizer(classifier, _keras_model_dir(model_dir)[1],
                                  folder, full_width=full)
    token_ids_lib.write_source(classifier, vocab, source, full_width=full,
                               task=task)
    return token_ids_lib.host_packer(
        classifier.preprocessor, full_width=full,
        names=token_ids_lib.input_names(classifier))


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


# What each task's artifacts output (`saved_model._output_fn`).
_OUTPUTS = {
    "classification": {
        "probabilities": "float32 [N, num_classes] (softmax)",
        "label_ids": "int64 [N]",
        "labels": "string [N]",
    },
    "multi_label": {
        "probabilities": ("float32 [N, num_labels] (one sigmoid per label; "
                          "a label is predicted above its threshold in "
                          "task.thresholds)"),
    },
    "regression": {
        "value": ("float32 [N], in the target's units (the model's "
                  "standardized output times task.std plus task.mean)"),
    },
}


def _metadata(classifier, vocab, task, num_text_columns, artifacts):
    return {
        "format_version": _METADATA_VERSION,
        "label_names": list(vocab.names),
        "num_text_columns": num_text_columns,
        "inputs": list(INPUT_NAMES[:num_text_columns]),
        "task": _task_entry(task, len(vocab)),
        "outputs": _OUTPUTS[task.kind],
        "sequence_length": int(classifier.preprocessor.sequence_length),
        "truncation": _truncation_metadata(classifier, num_text_columns),
        "artifacts": artifacts,
        "tflite_tokenizer": _tflite_tokenizer_metadata(classifier),
    }


def _truncation_metadata(classifier, num_text_columns):
    """How every artifact cuts a text longer than the sequence length: as
    the training run did (`truncation`)."""
    cut = truncation_lib.attached(classifier.preprocessor)
    if num_text_columns == 2:
        return {"kind": "round_robin"}
    if not cut.cuts_tail(1):
        return {"kind": "head"}
    length = int(classifier.preprocessor.sequence_length)
    room = length - _num_special_tokens(
        family_packer(classifier.preprocessor.tokenizer, length), 1)
    return {"kind": "head+tail", "head_tokens": cut.head,
            "tail_tokens": room - cut.head}


def _truncation_sentence(metadata):
    cut = metadata["truncation"]
    length = metadata["sequence_length"]
    if cut["kind"] == "head+tail":
        return (f"A text longer than {length} tokens keeps its first "
                f"{cut['head_tokens']} and last {cut['tail_tokens']} tokens, "
                "as in training (every artifact cuts it the same way).")
    if cut["kind"] == "round_robin":
        return (f"A pair longer than {length} tokens is cut round robin (the "
                "longer text gives way), as in training.")
    return (f"A text longer than {length} tokens keeps its first tokens, as "
            "in training.")


def _tflite_tokenizer_metadata(classifier):
    tokenizer = classifier.preprocessor.tokenizer
    kind = _tflite_tokenizer_kind(tokenizer)
    full = models.padding_changes_outputs(classifier.backbone, tokenizer)
    padding = ("to the sequence length (padding changes this model's "
               "outputs)" if full else "to the longest row of the batch")
    if kind is None:
        if _tflite_inputs(classifier) != "token_ids":
            return None
        return {
            "kind": "byte_pair",
            "inputs": "token_ids",
            "tflite_inputs": {name: "int32 [N, L]" for name in
                              token_ids_lib.input_names(classifier)},
            "tokenizer_files": (
                f"{token_ids_lib.TOKENIZER_DIR}/ (a keras-hub preprocessor "
                "preset; assets/tokenizer/vocabulary.json and merges.txt are "
                "the BPE files)"),
            "why": ("byte-level BPE has no TFLite kernel: the .tflite files "
                    "take token ids, packed by the tokenizer files"),
            "padding": padding,
        }
    entry = {
        "kind": kind,
        "inputs": "text",
        "ops": (["FastBertNormalize", "FastWordpieceTokenizeWithOffsets"]
                if kind == "wordpiece"
                else ["TFText>FastSentencepieceTokenize"]),
        "op_resolver": "tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS",
        "padding": padding,
    }
    if kind == "wordpiece":
        entry["lower_case_nfd_strip_accents"] = bool(
            getattr(tokenizer, "lowercase", False))
    return entry


_README = """\
# Exported model

Inputs: {inputs} (string tensors [N]). Outputs: {outputs}.
{labels}
{truncation}

SavedModel (`saved_model/`), from raw strings, tokenized in the graph:

    import tensorflow as tf, tensorflow_text  # registers the tokenizer ops
    serve = tf.saved_model.load("saved_model").signatures["serving_default"]
    print(serve({call_args})["{output}"])

"""
_TEXT_TFLITE = """\
TFLite (`model_*.tflite`), from raw strings, with TF Text's TFLite kernels:

    import numpy as np, tensorflow_text as tf_text
    from tensorflow.lite.python import interpreter
    runner = interpreter.InterpreterWithCustomOps(
        model_path="model_float32.tflite",
        custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS,
    ).get_signature_runner()
    print(runner({np_args})["{output}"])

The .tflite tokenizer (FastBertNormalizer + FastWordpiece) always strips
accents when it lower-cases; a Keras model whose tokenizer keeps them gets
other token ids for accented words. export_report.json gives the share of
test texts on which both agree (tokenization_agreement).
"""
_TOKEN_ID_TFLITE = """\
TFLite (`model_*.tflite`), from token ids: byte-level BPE has no TFLite
kernel, so the texts are tokenized and packed outside the model, by the
files in `tokenizer/` (a keras-hub preprocessor preset; its
`assets/tokenizer/vocabulary.json` and `merges.txt` are the BPE files).
Inputs {token_inputs}: int32 [N, L], L up to {sequence_length}, padded
{padding}.

    import keras_hub, numpy as np, tensorflow as tf
    pack = keras_hub.models.TextClassifierPreprocessor.from_preset("tokenizer")
    x = pack(x=["a fine film"])
    runner = tf.lite.Interpreter(
        model_path="model_float32.tflite").get_signature_runner()
    print(runner({np_token_args})["{output}"])
"""


def _write_readme(folder, metadata):
    inputs = metadata["inputs"]
    task = metadata["task"]
    output = SCORE_OUTPUTS[task["kind"]]
    text = _README.format(
        inputs=", ".join(inputs),
        outputs="; ".join(f"{name} {kind}" for name, kind in
                          metadata["outputs"].items()),
        labels=_labels_sentence(metadata["label_names"], task),
        output=output,
        call_args=", ".join(f'{n}=tf.constant(["a fine film"])' for n in inputs),
        truncation=_truncation_sentence(metadata),
    )
    tokenizer = metadata.get("tflite_tokenizer") or {}
    if tokenizer.get("inputs") == "token_ids":
        names = list(tokenizer["tflite_inputs"])
        text += _TOKEN_ID_TFLITE.format(
            token_inputs=", ".join(names),
            sequence_length=metadata["sequence_length"],
            padding=tokenizer["padding"],
            np_token_args=", ".join(
                f'{n}=np.asarray(x["{n}"], np.int32)' for n in names),
            output=output,
        )
    else:
        text += _TEXT_TFLITE.format(output=output, np_args=", ".join(
            f'{n}=np.array(["a fine film"], dtype=object)' for n in inputs))
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


def _labels_sentence(names, task):
    if task["kind"] == "regression":
        return (f"The value predicts the label column {names[0]!r} in its "
                f"own units (training mean {task['mean']:.6g}, std "
                f"{task['std']:.6g}).")
    if task["kind"] == "multi_label":
        return "Labels in id order, each with its threshold: " + ", ".join(
            f"{n} ({t:.6g})" for n, t in zip(names, task["thresholds"])) + "."
    return "Labels in id order: " + ", ".join(names) + "."


def _write_json(path, content):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, ensure_ascii=False)
        f.write("\n")
