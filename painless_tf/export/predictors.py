"""Loading any artifact to predict with: `Predictor` and `load_predictor`.

One callable for a Keras model dir, a SavedModel or a .tflite file (run
with TF Text's TFLite op resolver), with the label names, text columns and
task of `export_metadata.json` (a model dir's own `task.json`), so that
`apps/predict.py` and `apps/evaluate.py` print the same thing for all.
"""

import contextlib
import dataclasses
import importlib
import json
import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from painless_tf import data as data_lib
from painless_tf.export import token_ids as token_ids_lib
from painless_tf.export.formats import METADATA_FILE
from painless_tf.export.formats import SCORE_OUTPUTS
from painless_tf.export.formats import ExportError
from painless_tf.export.formats import _check_positive
from painless_tf.export.reading import _keras_model_dir
from painless_tf.export.reading import _load_model_dir
from painless_tf.export.reading import _model_dir_text_columns
from painless_tf.export.reading import model_dir_task
from painless_tf.export.saved_model import _activation
from painless_tf.export.saved_model import _preprocess


@dataclasses.dataclass(frozen=True, eq=False)
class Predictor:
    """The model's scores from any artifact: `predictor(texts[, pairs])`.

    Build one with `load_predictor`.

    Args:
        kind: str. `"keras"`, `"saved_model"` or `"tflite"`.
        path: str. What was loaded.
        label_names: tuple of str. Class names in id order.
        num_text_columns: int. 1, or 2 for sentence pairs.
        predict_batch: callable. Maps a list of texts (and one of pairs, or
            None) to float32 scores `[n, C]` (or `[n]`, one per row);
            called with at most `batch_size` rows.
        batch_size: int. Rows per call of `predict_batch`.
        task: `data.TaskSpec` or None. The model's task (a model dir's
            `task.json`, an export's metadata): for "multi_label" the
            scores are label probabilities (sigmoid; the tuned thresholds
            are in `task.thresholds`, applied by `label_sets`), for
            "regression" one value per row in the target's units `[N, 1]`;
            None (or classification): class probabilities.

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
    task: object = None

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
            scores = np.asarray(self.predict_batch(
                texts[start:stop],
                None if pairs is None else pairs[start:stop],
            ), dtype=np.float32)
            # A regression artifact's `value` is [n]; every predictor
            # gives [n, 1] for it, as the Keras model does.
            outputs.append(scores.reshape(len(texts[start:stop]), -1))
        if not outputs:
            return np.zeros((0, len(self.label_names)), np.float32), (
                self.label_names
            )
        return np.concatenate(outputs), self.label_names

    def label_sets(self, probabilities: np.ndarray) -> list[tuple[str, ...]]:
        """The labels above their thresholds, per row, for a multi-label
        model (the thresholds tuned on validation, else 0.5 each).

        Args:
            probabilities: np.ndarray. What `self(texts)` returned, [N, K].

        Returns:
            One tuple of label names per row, in id order.

        Examples:

        >>> from painless_tf import data
        >>> p = Predictor(kind="keras", path="-", label_names=("a", "b"),
        ...     num_text_columns=1, predict_batch=None,
        ...     task=data.TaskSpec("multi_label", thresholds=(0.5, 0.2)))
        >>> p.label_sets(np.array([[0.6, 0.3], [0.4, 0.1]]))
        [('a', 'b'), ()]
        """
        kind = self.task.kind if self.task is not None else "classification"
        if kind != "multi_label":
            raise ExportError(
                f"{self.path}: label sets are for multi-label models; this "
                f"one is a {kind} model. Take the argmax (classification) "
                "or the value (regression) instead.")
        chosen = np.asarray(probabilities) > self.task.threshold_array(
            len(self.label_names))[None, :]
        return [tuple(name for name, c in zip(self.label_names, row) if c)
                for row in chosen]


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
        A `Predictor`: `predictor(texts[, pairs]) -> (scores, label_names)`:
        class or label probabilities, or for regression the value in the
        target's units `[N, 1]`; `predictor.task` is the model's task.

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
            batch_size=batch_size, task=model_dir_task(path),
        )
    metadata = _read_metadata(os.path.dirname(path), path)
    columns = metadata["num_text_columns"]
    if num_text_columns not in (None, columns):
        raise ExportError(
            f"{path} was exported for {columns} text column(s), not "
            f"{num_text_columns}. Pass the matching number or export again."
        )
    task = metadata["task"]
    output = SCORE_OUTPUTS[task.kind]
    if kind == "tflite":
        host = None
        tokenizer = os.path.join(os.path.dirname(path),
                                 token_ids_lib.TOKENIZER_DIR)
        if metadata["tflite_inputs"] == "token_ids":
            if not os.path.isfile(os.path.join(
                    tokenizer, token_ids_lib.PACKING_FILE)):
                raise ExportError(
                    f"{path} takes token ids, and its tokenizer files are "
                    f"not beside it ({tokenizer}/). Copy the export's "
                    "tokenizer/ folder next to the .tflite file.")
            host = token_ids_lib.load_host_packer(tokenizer)
        predict_batch = _tflite_predict_fn(path, num_threads, host=host,
                                           output=output)
    else:
        predict_batch = _saved_model_predict_fn(path, output)
    return Predictor(
        kind=kind, path=path, label_names=tuple(metadata["label_names"]),
        num_text_columns=columns, predict_batch=predict_batch,
        batch_size=batch_size, task=task,
    )


def _keras_predictor(classifier, vocab, *, path, num_text_columns,
                     batch_size, task):
    activation = _activation(classifier)
    preprocessor = classifier.preprocessor
    model_inputs = set(classifier.backbone.input.keys())

    # One trace for every batch size (a first call at one size and a
    # second at another would trace the tokenizer and model twice: about
    # 3 s each for the tests' tiny RoBERTa, docs/benchmarks.md); no
    # AutoGraph: nothing here branches on tensors (as in ExportArchive).
    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string)] * num_text_columns,
        autograph=False)
    def forward(*texts):
        x = _preprocess(preprocessor, texts)
        x = {k: v for k, v in x.items() if k in model_inputs}
        return tf.cast(classifier(x, training=False), tf.float32)

    def predict_batch(texts, pairs):
        inputs = [tf.constant(texts, tf.string)]
        if pairs is not None:
            inputs.append(tf.constant(pairs, tf.string))
        scores = forward(*inputs)
        if task.kind == "multi_label":
            return tf.sigmoid(scores).numpy()
        if task.kind == "regression":
            return task.destandardize(scores.numpy()).astype(np.float32)
        if activation != "softmax":
            scores = tf.nn.softmax(scores)
        return scores.numpy()

    return Predictor(
        kind="keras", path=path, label_names=tuple(vocab.names),
        num_text_columns=num_text_columns, predict_batch=predict_batch,
        batch_size=batch_size, task=task,
    )


def _saved_model_predict_fn(path, output="probabilities"):
    """`output`: the signature's score output (`SCORE_OUTPUTS`)."""
    serve = tf.saved_model.load(path).signatures["serving_default"]

    def predict_batch(texts, pairs):
        inputs = {"text": tf.constant(texts, tf.string)}
        if pairs is not None:
            inputs["text_pair"] = tf.constant(pairs, tf.string)
        return serve(**inputs)[output].numpy()

    return predict_batch


def _tflite_predict_fn(path, num_threads, host=None, output="probabilities"):
    """`host`: the packer of a token-id .tflite file (`token_ids.py`);
    None for one that tokenizes strings in its graph. `output`: the
    signature's score output (`SCORE_OUTPUTS`)."""
    runner = _tflite_interpreter(path, num_threads).get_signature_runner()

    def predict_batch(texts, pairs):
        if host is not None:
            return runner(**host(texts, pairs))[output]
        inputs = {"text": np.array(texts, dtype=object)}
        if pairs is not None:
            inputs["text_pair"] = np.array(pairs, dtype=object)
        return runner(**inputs)[output]

    return predict_batch


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


def _read_metadata(folder, artifact):
    path = os.path.join(folder, METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
        names = metadata["label_names"]
        columns = metadata["num_text_columns"]
        # Exports written before the task was recorded are classifiers.
        task = data_lib.TaskSpec(**metadata.get(
            "task", {"kind": "classification"}))
    except FileNotFoundError:
        raise ExportError(
            f"{artifact}: no {METADATA_FILE} beside it (label names, "
            "inputs). Copy it from the export folder next to the artifact."
        ) from None
    except (OSError, json.JSONDecodeError, KeyError, TypeError,
            data_lib.DataError) as e:
        raise ExportError(
            f"{path}: not an export metadata file ({type(e).__name__}: {e}). "
            "Export the model again."
        ) from None
    # Exports written before token-id .tflite files existed take strings.
    inputs = (metadata.get("tflite_tokenizer") or {}).get("inputs", "text")
    return {"label_names": names, "num_text_columns": columns,
            "tflite_inputs": inputs, "task": task}


def _as_text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise ExportError(
            f"Texts must be strings. Received: {value!r} "
            f"({type(value).__name__})."
        )
    return value


def _cpu_count():
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
