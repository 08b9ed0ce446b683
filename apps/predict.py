r"""Predicts labels for texts with a trained model or any exported artifact.

    echo "a gripping, funny film" | python -m apps.predict --model_dir=runs/demo
    python -m apps.predict --model_dir=runs/demo/export/model_int8.tflite \
        --input=texts.txt --output=predictions.jsonl

Input: one text per line (a TAB between the two texts of a sentence pair),
or JSON lines with the text column(s). Output: one JSON object per line,
in the input order: {"text", "label", "probabilities": {label: p}}; for a
multi-label model {"text", "labels": [...], "probabilities": {label: p}}
(the labels above their thresholds, tuned on validation), for a regression
model {"text", "value"}.
"""

import json
import sys

from absl import app
from absl import flags

from painless_tf import export
from painless_tf import flags as painless_flags

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", "runs/demo",
    "A trained model dir, its export/saved_model folder or an exported "
    ".tflite file.")
_INPUT = flags.DEFINE_string(
    "input", "-", "Text file (one text per line) or .jsonl; '-' is stdin.")
_OUTPUT = flags.DEFINE_string("output", "-", "JSON lines out; '-' is stdout.")
_TEXT_COLUMNS = flags.DEFINE_list(
    "text_columns", None,
    "Text field(s) of .jsonl input. Unset: the columns the model was "
    "trained on (run.json), else 'text'.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Texts per model call.")


def read_texts(path, text_columns):
    """Texts (and pairs, or None) from a text/JSONL file or stdin."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        lines = [line.rstrip("\n") for line in stream if line.strip()]
    if path.endswith(".jsonl"):
        rows = []
        for number, line in enumerate(lines, 1):
            row = json.loads(line)
            if not isinstance(row, dict) or any(c not in row for c in text_columns):
                raise ValueError(
                    f"{path} line {number}: expected a JSON object with "
                    f"{', '.join(text_columns)}. Pass --text_columns to name "
                    "the fields.")
            rows.append([str(row[c]) for c in text_columns])
    else:
        rows = [line.split("\t") for line in lines]
    texts = [r[0] for r in rows]
    pairs = [r[1] if len(r) > 1 else "" for r in rows]
    return texts, (pairs if len(text_columns) == 2 or any(
        len(r) > 1 for r in rows) else None)


def main(argv):
    del argv
    predictor = export.load_predictor(
        _MODEL_DIR.value, batch_size=_BATCH_SIZE.value)
    columns = (_TEXT_COLUMNS.value
               or export.recorded_text_columns(_MODEL_DIR.value) or ["text"])
    texts, pairs = read_texts(_INPUT.value, columns)
    probabilities, names = predictor(texts, pairs)
    out = sys.stdout if _OUTPUT.value == "-" else open(
        _OUTPUT.value, "w", encoding="utf-8")
    with out:
        kind = predictor.task.kind if predictor.task else "classification"
        sets = (predictor.label_sets(probabilities) if kind == "multi_label"
                else [None] * len(texts))
        for text, row, chosen in zip(texts, probabilities, sets):
            out.write(json.dumps(_row(kind, text, row, names, chosen))
                      + "\n")


def _row(kind, text, row, names, chosen):
    if kind == "regression":
        return {"text": text, "value": round(float(row[0]), 6)}
    result = {"text": text}
    if kind == "multi_label":
        result["labels"] = list(chosen)
    else:
        result["label"] = names[int(row.argmax())]
    result["probabilities"] = {n: round(float(p), 6)
                               for n, p in zip(names, row)}
    return result


run_main = painless_flags.one_line_errors(main)

def console_main():
    """The `painless-predict` command (pyproject.toml's entry point)."""
    painless_flags.as_main(__name__)
    app.run(run_main)


if __name__ == "__main__":
    console_main()
