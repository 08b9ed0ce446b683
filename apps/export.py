r"""Exports a trained model dir for serving and the edge, and measures it.

Writes `<model_dir>/export/` (see `painless_tf.export`): a SavedModel and
.tflite files that take raw strings, `export_metadata.json`, and
`export_report.json` with each artifact's size, latency on this CPU and test
metrics against the Keras model (accuracy; micro/macro-F1 and subset
accuracy for multi-label; RMSE, MAE, Pearson and Spearman for regression).
Prints the report as a table.

Any trained model dir alone: every format its tokenizer allows, measured
on the run's own test split and int8 calibrated on its validation split
(both rebuilt from `<model_dir>/run.json`); formats that cannot be built are
listed with the reason:

    python -m apps.export --model_dir=runs/demo

Your own model and files, only the SavedModel and a dynamic-range TFLite:

    python -m apps.export --model_dir=runs/mine --test_data=test.csv \
        --formats=saved_model,tflite_dynamic_int8

Sentence pairs: `--text_columns=premise,hypothesis`.
"""

import dataclasses
import json
import os

from absl import app
from absl import flags

from painless_tf import assets
from painless_tf import data
from painless_tf import export
from painless_tf import flags as painless_flags
from painless_tf import run

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", "runs/demo",
    "Trained model dir written by apps/finetune.py (model/, labels.json); "
    "the export goes to <model_dir>/export/.",
)
_FORMATS = flags.DEFINE_list(
    "formats", list(export.FORMATS),
    f"Artifacts to build, from: {', '.join(export.FORMATS)}.",
)
_TEST_DATA = flags.DEFINE_string(
    "test_data", None,
    "Labelled CSV/TSV/JSONL file for accuracy and latency, or 'default' for "
    "the default data's test split. Unset: the run's own test split "
    "(rebuilt from <model_dir>/run.json), else accuracy is skipped.",
)
_REPRESENTATIVE_DATA = flags.DEFINE_string(
    "representative_data", None,
    "Labelled CSV/TSV/JSONL file whose texts calibrate tflite_int8 (e.g. "
    "the validation file), or 'default' for the default data's validation "
    "split. Unset: the run's own validation split (from run.json).",
)
_TEXT_COLUMNS = flags.DEFINE_list(
    "text_columns", None,
    "Text column(s) of the data files: one, or two for sentence pairs. "
    "Unset: the model dir's text_columns (metrics.json or plan.json), else "
    "'text'.",
)
_LABEL_COLUMN = flags.DEFINE_string(
    "label_column", "label", "Label column of the data files."
)
_LATENCY_BATCH_SIZE = flags.DEFINE_integer(
    "latency_batch_size", 32,
    "Examples per call for the batched latency and the accuracy runs.",
)
_LATENCY_CALLS = flags.DEFINE_integer(
    "latency_calls", 40,
    "Timed calls per artifact at batch size 1 (a quarter of that, at least "
    "3, batched).",
)
_MAX_TEST_EXAMPLES = flags.DEFINE_integer(
    "max_test_examples", None,
    "Test rows, at most, for the accuracy runs; unset takes all.",
)

_DEFAULT_DATA = "default"


@flags.validator("model_dir")
def _check_model_dir(value):
    folder = value or ""
    for needed in ("model/config.json", "labels.json"):
        if not os.path.isfile(os.path.join(folder, needed)):
            raise flags.ValidationError(
                f"{os.path.join(folder, needed)} not found. Pass the "
                "--model_dir that apps/finetune.py wrote."
            )
    return True


@flags.validator("formats")
def _check_formats(value):
    # absl prefixes messages with "flag --formats=[...]: ".
    unknown = [f for f in value if f not in export.FORMATS]
    if not value or unknown or len(set(value)) != len(value):
        raise flags.ValidationError(
            f"each must be one of {', '.join(export.FORMATS)}, at least one, "
            "none twice. Pass e.g. --formats=saved_model,tflite_dynamic_int8."
        )
    return True


@flags.validator("test_data")
def _check_test_data(value):
    return _check_data_file(value)


@flags.validator("representative_data")
def _check_representative_data(value):
    return _check_data_file(value)


@flags.validator("text_columns")
def _check_text_columns(value):
    if value is not None and len(value) not in (1, 2):
        raise flags.ValidationError(
            f"names {len(value)} columns. Pass one column, or two for "
            "sentence pairs."
        )
    return True


@flags.multi_flags_validator(
    ["formats", "representative_data", "model_dir"],
    message="--formats includes tflite_int8, which calibrates on texts, and "
    "the model dir has no run.json to find the run's validation split. "
    "Pass --representative_data=<validation file> (or 'default'), or drop "
    "tflite_int8 from --formats.",
)
def _check_calibration_data(values):
    return (
        "tflite_int8" not in (values["formats"] or [])
        or bool(values["representative_data"])
        or os.path.isfile(os.path.join(values["model_dir"] or "", "run.json"))
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(
            f"Unexpected arguments: {' '.join(argv[1:])}. Pass flags only."
        )
    model_dir = _MODEL_DIR.value
    options = export.ExportOptions(
        formats=tuple(_FORMATS.value),
        latency_batch_size=_LATENCY_BATCH_SIZE.value,
        latency_calls=_LATENCY_CALLS.value,
        max_test_examples=_MAX_TEST_EXAMPLES.value,
    )
    vocab = data.LabelVocab.from_json(os.path.join(model_dir, "labels.json"))
    columns = _TEXT_COLUMNS.value or _model_dir_text_columns(model_dir)
    splits = None
    if not (_TEST_DATA.value and _REPRESENTATIVE_DATA.value):
        splits = _run_splits(model_dir, vocab)
    test = _examples(_TEST_DATA, "test", model_dir, vocab, columns, splits)
    representative = _examples(
        _REPRESENTATIVE_DATA, "validation", model_dir, vocab, columns, splits
    )
    report = export.export_model(
        model_dir, options=options, test=test,
        representative=representative, num_text_columns=len(columns),
    )
    print(export.format_report(report))
    print(f"Wrote {os.path.join(model_dir, export.EXPORT_DIR)}")


def _check_data_file(value):
    if value and value != _DEFAULT_DATA and not os.path.isfile(value):
        raise flags.ValidationError(
            f"no such file. Pass a labelled CSV, TSV or JSONL file, or "
            f"'{_DEFAULT_DATA}' for the default data."
        )
    return True


def _model_dir_text_columns(model_dir):
    """The text columns the model was trained on, as finetune recorded them."""
    for name in ("metrics.json", "plan.json"):
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                try:
                    columns = json.load(f).get("text_columns")
                except (json.JSONDecodeError, AttributeError):
                    continue
            if isinstance(columns, list) and len(columns) in (1, 2):
                return columns
    return ["text"]


def _run_splits(model_dir, vocab):
    """The run's own splits, rebuilt from run.json as finetune made them;
    None without run.json."""
    path = os.path.join(model_dir, "run.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        recorded = json.load(f)
    fields = {field.name for field in dataclasses.fields(run.RunConfig)}
    config = run.RunConfig(**{
        key: tuple(value) if isinstance(value, list) else value
        for key, value in recorded.items()
        if key in fields and key != "model_dir"
    })
    splits = run.load_data(config)
    if splits.vocab != vocab:
        raise data.DataError(
            f"{path}: the run's data now has the labels {splits.vocab.names}, "
            f"not the model's {vocab.names} (labels.json). Pass "
            "--test_data and --representative_data.")
    source = config.train_data or config.tfds or "the default data"
    print(f"export: the run's own data ({source}): its validation split "
          "calibrates int8, its test split measures accuracy", flush=True)
    return splits


def _examples(flag, split, model_dir, vocab, columns, splits=None):
    """`data.Examples` of a flag's file, of the default data's `split`, or
    (flag unset) of the run's own `split`."""
    value = flag.value
    if not value:
        return getattr(splits, split) if splits is not None else None
    if value == _DEFAULT_DATA:
        splits = data.load_splits(
            train=data.rotten_tomatoes_table(assets.default_data_file()),
            seed=_plan_seed(model_dir),
        )
        if splits.vocab != vocab:
            raise data.DataError(
                f"The default data's labels {splits.vocab.names} are not the "
                f"model's {vocab.names}. Pass your own --{flag.name} file."
            )
        return getattr(splits, split)
    table = data.read_table(
        value, text_columns=columns, label_column=_LABEL_COLUMN.value
    )
    # As the run encoded its own splits: class ids, multi-hot rows, or
    # targets standardized by the training mean and std (task.json).
    task = data.TaskSpec.from_json(os.path.join(model_dir, "task.json"))
    labels = data.tasks.encode_labels(task, vocab, table)
    if task.kind == "regression":
        labels = task.standardize(labels)
    return data.Examples(
        texts=table.texts, labels=labels, lines=table.lines, source=value
    )


def _plan_seed(model_dir):
    path = os.path.join(model_dir, "plan.json")
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return int(json.load(f).get("seed", 0))


run_main = painless_flags.one_line_errors(main)

def console_main():
    """The `painless-export` command (pyproject.toml's entry point)."""
    painless_flags.as_main(__name__)
    app.run(run_main)


if __name__ == "__main__":
    console_main()
