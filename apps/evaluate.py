r"""Evaluates a trained model (or exported artifact) on a labelled file.

    python -m apps.evaluate --model_dir=runs/demo --data=test.csv

Prints accuracy, per-class precision/recall/F1 and the confusion matrix
(multi-label: micro/macro-F1, subset accuracy and per-label rows;
regression: RMSE, MAE, Pearson and Spearman);
writes them as JSON to --output (default <model_dir>/evaluation.json when
--model_dir is a trained model dir) and, with --report, an HTML page.
"""

import json
import os

from absl import app
from absl import flags

from painless_tf import data
from painless_tf import evaluation
from painless_tf import export
from painless_tf import flags as painless_flags
from painless_tf import report
from painless_tf import run

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", "runs/demo",
    "A trained model dir, an export/saved_model folder or a .tflite file.")
_DATA = flags.DEFINE_string(
    "data", None, "Labelled CSV, TSV or JSONL file.", required=True)
_TEXT_COLUMNS = flags.DEFINE_list(
    "text_columns", None,
    "Text column(s): one, or two for sentence pairs. Unset: the columns the "
    "model was trained on (run.json), else 'text'.")
_LABEL_COLUMN = flags.DEFINE_string(
    "label_column", None,
    "Label column. Unset: the one the model was trained on (run.json), else "
    "'label'.")
_ENCODING = flags.DEFINE_string("encoding", "utf-8", "Text encoding.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "JSON output (default: <model_dir>/evaluation.json).")
_REPORT = flags.DEFINE_string(
    "report", None, "Also write this HTML evaluation report.")


def main(argv):
    del argv
    columns = (_TEXT_COLUMNS.value
               or export.recorded_text_columns(_MODEL_DIR.value) or ["text"])
    predictor = export.load_predictor(
        _MODEL_DIR.value, num_text_columns=len(columns))
    table = data.read_table(
        _DATA.value, text_columns=columns,
        label_column=_LABEL_COLUMN.value or _recorded_label_column(),
        encoding=_ENCODING.value)
    vocab = data.LabelVocab(predictor.label_names)
    task = predictor.task or data.TaskSpec("classification")
    labels = data.tasks.encode_labels(task, vocab, table)
    texts = table.texts[0]
    pairs = table.texts[1] if len(table.texts) > 1 else None
    probabilities, names = predictor(list(texts), pairs and list(pairs))
    if task.kind == "regression":
        # The predictor gives the target's units; the labels are raw.
        result = evaluation.regression_report(labels, probabilities)
    else:
        result = evaluation.report_for(task, labels, probabilities, names)
    output = _OUTPUT.value or (
        os.path.join(_MODEL_DIR.value, "evaluation.json")
        if os.path.isdir(os.path.join(_MODEL_DIR.value, "model")) else None)
    if output:
        run.write_json(output, result)
    if _REPORT.value:
        report.write_evaluation_report(_REPORT.value, result)
    print(json.dumps(evaluation.headline(result)))
    for row in result.get("per_class", ()):
        print(f"{row['label']:>12}  precision {row['precision']:.4f}  "
              f"recall {row['recall']:.4f}  f1 {row['f1']:.4f}  "
              f"support {row['support']}")
    if "confusion_matrix" in result:
        print("confusion matrix (rows: true, columns: predicted):")
        for name, row in zip(names, result["confusion_matrix"]):
            print(f"{name:>12}  {row}")


def _recorded_label_column():
    """The label column of run.json in the model dir (or the one above an
    exported artifact), else "label"."""
    for folder in (_MODEL_DIR.value, os.path.dirname(_MODEL_DIR.value),
                   os.path.dirname(os.path.dirname(_MODEL_DIR.value))):
        path = os.path.join(folder, "run.json")
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    column = json.load(f).get("label_column")
            except (OSError, ValueError, AttributeError):
                break
            if isinstance(column, str) and column:
                return column
            break
    return "label"


run_main = painless_flags.one_line_errors(main)

def console_main():
    """The `painless-evaluate` command (pyproject.toml's entry point)."""
    painless_flags.as_main(__name__)
    app.run(run_main)


if __name__ == "__main__":
    console_main()
