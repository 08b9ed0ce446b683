"""Export a trained model dir for serving and for the edge, and measure it.

`export_model(model_dir)` reads what `apps/finetune.py` wrote (the keras-hub
preset in `model/`, `labels.json`, `task.json`) and writes into
`<model_dir>/export/`
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
| `tokenizer/` | | byte-level BPE only: the tokenizer files |
| `export_metadata.json` | | label names, task, inputs, outputs, tokenizer |
| `export_report.json` | | sizes, latencies, the task's metrics |
| `README.md` | | how to load each artifact |

`keras_int8` (`model.quantize("int8")`) is measured in memory only.

Every artifact maps a batch of texts `text: string [N]` (plus `text_pair:
string [N]` for a model trained on sentence pairs) to the outputs of the
model dir's task (`task.json`; `SCORE_OUTPUTS` names the one with the
scores):

* classification: `{"probabilities": float32 [N, C], "label_ids": int64
  [N], "labels": string [N]}` (softmax);
* multi-label: `{"probabilities": float32 [N, K]}`, one sigmoid per label.
  A label is predicted where its probability is above its threshold, tuned
  on the validation split: `export_metadata.json` keeps them
  (`task.thresholds`, in label order), and `Predictor.label_sets` applies
  them;
* regression: `{"value": float32 [N]}`, in the target's units: the model
  learns `(target - mean) / std`, and the graph takes its output back with
  the training mean and std (`task.mean`, `task.std` in the metadata).

`export_report.json` scores each artifact with the task's metrics on the
test rows (accuracy and macro-F1; micro/macro-F1 and subset accuracy;
RMSE, MAE, Pearson and Spearman) and gives its largest difference from the
Keras model.

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
  BPE (RoBERTa) has no TFLite kernel: its .tflite files take the packed
  `token_ids` and `padding_mask` (int32 [N, L]) instead, and the tokenizer
  files go beside them in `tokenizer/` (`token_ids.py`; `load_predictor`
  packs with them on the host). The string graphs give keras-hub's token ids
  whenever the keras-hub tokenizer normalizes as BERT's own does: accents
  stripped when lower-casing (set from the Hugging Face folder's
  `tokenizer_config.json`, `hf_folders.match_normalization`) and NFKC before
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

Measured on 2 cores of the AMD EPYC with avx512_bf16 (README's "Measured
numbers" has a run on a Zen 3 with AVX2 only), the demo model
(all-MiniLM-L6-v2 fine-tuned on
Rotten Tomatoes, Keras test accuracy 0.8421 on 1,311 rows): float32
.tflite 92.9 MB, within 2.1e-6 of Keras on every row; dynamic-range int8
25.8 MB (3.6x smaller), accuracy -0.3 points, about half the float32
latency; full-integer int8 25.1 MB, accuracy -10.8 points (77% of
predictions equal to Keras's): per-tensor int8 activations cost a BERT real
accuracy, so prefer dynamic-range int8 unless the target needs integer-only
math. `model.quantize("int8")` keeps Keras's accuracy (-0.15 points) in
3.9x less memory, but runs 2.7-4x slower on CPU.

`load_predictor(path)` gives one callable for a Keras model dir, a SavedModel
or a .tflite file, so that `apps/predict.py` prints the same thing for all:
class or label probabilities, or regression values `[N, 1]` in the target's
units, with the model's task (`predictor.task`).

The package holds one module per concern; each imports only those above it:

* `formats`: the format and file names, the score output of each task,
  `ExportOptions`, `ExportError`, and the attempt that keeps one format's
  failure its own.
* `reading`: reading a trained model dir: the classifier, its labels, its
  task, its text columns (`recorded_text_columns`).
* `saved_model`: the serving signature every artifact shares (each task's
  outputs), and the SavedModel.
* `tflite_graph`: the graph the .tflite files are converted from: TF Text
  tokenization with TFLite kernels, packing with builtin ops.
* `token_ids`: the .tflite graph over token ids for byte-level BPE, its
  tokenizer files, and the host packing that feeds it.
* `predictors`: `Predictor` and `load_predictor`, any artifact as one
  callable.
* `convert`: TFLite conversion: float32, float16, dynamic-range int8, and
  full-integer int8 calibrated on texts.
* `measure`: the artifacts loaded back, checked, scored and timed side by
  side; `format_report`.
* `writer`: `export_model`, which builds the formats and writes
  `<model_dir>/export/`.
"""

from painless_tf.export.formats import EXPORT_DIR
from painless_tf.export.formats import FORMATS
from painless_tf.export.formats import INPUT_NAMES
from painless_tf.export.formats import METADATA_FILE
from painless_tf.export.formats import REPORT_FILE
from painless_tf.export.formats import SAVED_MODEL_DIR
from painless_tf.export.formats import SCORE_OUTPUTS
from painless_tf.export.formats import TFLITE_FILES
from painless_tf.export.formats import ExportError
from painless_tf.export.formats import ExportOptions
from painless_tf.export.measure import artifact_metrics
from painless_tf.export.measure import format_report
from painless_tf.export.measure import latencies
from painless_tf.export.predictors import Predictor
from painless_tf.export.predictors import load_predictor
from painless_tf.export.reading import recorded_text_columns
from painless_tf.export.writer import export_model

__all__ = [
    "EXPORT_DIR",
    "FORMATS",
    "INPUT_NAMES",
    "METADATA_FILE",
    "REPORT_FILE",
    "SAVED_MODEL_DIR",
    "SCORE_OUTPUTS",
    "TFLITE_FILES",
    "ExportError",
    "ExportOptions",
    "Predictor",
    "artifact_metrics",
    "export_model",
    "format_report",
    "latencies",
    "load_predictor",
    "recorded_text_columns",
]
