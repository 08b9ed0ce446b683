"""Reading a trained model dir: its classifier, labels and text columns.

What `apps/finetune.py` wrote (the keras-hub preset in `model/`,
`labels.json`, the text columns in `run.json`, `metrics.json` or
`plan.json`) and the text columns an artifact's `export_metadata.json`
copies, read for the export and for `load_predictor`; and the in-memory
`model.quantize("int8")` of `keras_int8`.
"""

import json
import os
import warnings

import keras

from painless_tf import data as data_lib
from painless_tf import models
from painless_tf import truncation as truncation_lib
from painless_tf.export.formats import METADATA_FILE
from painless_tf.export.formats import ExportError


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
        # Float32 whatever the process's global policy (a training run in
        # the same process may have set mixed_bfloat16): the artifacts
        # compute in float32, and TFLite has no kernels for the casts.
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float32")
        try:
            classifier = models.load_classifier(preset,
                                                num_classes=len(vocab))
        finally:
            keras.config.set_dtype_policy(policy)
    except (data_lib.DataError, models.ModelError) as e:
        raise ExportError(str(e)) from None
    if classifier.preprocessor is None:
        raise ExportError(
            f"{preset}: the model was saved without its preprocessor, so "
            "raw text cannot be tokenized. Save it again with "
            "models.save_classifier after attaching the preprocessor."
        )
    # The cut of longer texts the run trained with, for every reader of
    # this preprocessor (Keras predictor, SavedModel, .tflite graphs).
    truncation_lib.attach(classifier.preprocessor,
                          truncation_lib.recorded(model_dir))
    if quantize:
        _quantize_int8(classifier)
    return classifier, vocab


def model_dir_task(path):
    """The `data.TaskSpec` of a trained model dir (its `task.json`;
    classification without one, or for a path that is no model dir)."""
    found = _keras_model_dir(os.path.abspath(os.fspath(path)))
    if found is None:
        return data_lib.TaskSpec("classification")
    try:
        return data_lib.TaskSpec.from_json(os.path.join(found[0], "task.json"))
    except data_lib.DataError as e:
        raise ExportError(str(e)) from None


def _task_entry(task, num_labels):
    """The task as the export's metadata and report record it: the
    `TaskSpec` fields, a multi-label model's thresholds spelled out (the
    tuned ones, else 0.5 each: what every reader applies)."""
    entry = task.to_dict()
    if task.kind == "multi_label":
        entry["thresholds"] = task.threshold_array(num_labels).tolist()
    return entry


def _quantize_int8(classifier):
    # `TextClassifier.quantize` also visits the preprocessor, whose tokenizer
    # is never "built" and makes Keras refuse; the weights all live in the
    # functional model's own layers.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for layer in classifier.layers:
            if layer.weights:
                layer.quantize("int8")


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
