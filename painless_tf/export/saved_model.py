"""The serving signature every artifact shares, and the SavedModel.

`serving_default` maps `text` (and `text_pair`) string [N] to the task's
outputs (`_output_fn`): `probabilities`, `label_ids` and `labels` for a
classifier, `probabilities` for multi-label, `value` for regression. The
SavedModel runs the model's own keras-hub preprocessor inside it;
`tflite_graph` puts its own tokenizer in front of the same outputs and
endpoint.
"""

import keras
import tensorflow as tf

from painless_tf import models
from painless_tf import truncation as truncation_lib
from painless_tf.packing import _num_special_tokens
from painless_tf.export.formats import INPUT_NAMES
from painless_tf.export.formats import SCORE_OUTPUTS
from painless_tf.export.formats import ExportError


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
    """The keras-hub preprocessor's model inputs for 1 or 2 text columns,
    with a longer text cut as the training run cut it
    (`truncation.attached(preprocessor)`: head+tail, or the packer's own
    head and round robin)."""
    # By keyword: a positional tuple `(texts, pairs)` is read as `(x, y)`,
    # and the pairs would silently become labels.
    texts = [models.normalize_text(preprocessor.tokenizer, t) for t in texts]
    cut = truncation_lib.attached(preprocessor)
    if not cut.cuts_tail(len(texts)):
        return preprocessor(x=texts[0] if len(texts) == 1 else tuple(texts))
    # The preprocessor's own steps (keras-hub's `_call_tf`), with the cut
    # between tokenizer and packer; the packer then cuts nothing.
    names = _input_names(preprocessor)
    tokenizer = preprocessor.tokenizer
    ids = tokenizer(texts[0])
    if isinstance(ids, list):  # eager: keras-hub's Python workflow
        ids = tf.ragged.constant(ids, dtype=tf.int32, ragged_rank=1)
    elif not isinstance(ids, tf.RaggedTensor):
        ids = tf.RaggedTensor.from_tensor(ids)
    room = int(preprocessor.sequence_length) - _num_special_tokens(
        preprocessor.packer, 1)
    token_ids, segment_ids = preprocessor.packer(
        (truncation_lib.cut(ids, budget=room, head=cut.head),))
    x = {"token_ids": token_ids,
         "padding_mask": token_ids != tokenizer.pad_token_id,
         "segment_ids": segment_ids}
    return {k: v for k, v in x.items() if k in names}


def _input_names(preprocessor):
    """The keys the family's preprocessor returns (no segment ids for
    RoBERTa, no padding mask for F-Net), from one eager call."""
    with tf.init_scope():
        return set(preprocessor(x=tf.constant(["a"])))


def _output_fn(classifier, label_names, task=None):
    """Maps the classifier's model inputs to the serving outputs of `task`
    (a `data.TaskSpec`; None is classification):

    * classification: `probabilities` (softmax) float32 [N, C],
      `label_ids` int64 [N] and `labels` string [N];
    * multi_label: `probabilities` (one sigmoid per label) float32 [N, K];
      the tuned thresholds are in the export's metadata;
    * regression: `value` float32 [N], in the target's units (the model
      learns `(target - mean) / std`; the graph takes it back).
    """
    activation = _activation(classifier)
    kind = task.kind if task is not None else "classification"
    if kind != "classification" and activation != "linear":
        raise ExportError(
            f"A {kind} model must end in logits (activation=None); this one "
            f"ends in activation={activation!r}. Fine-tune it again with "
            "apps.finetune.")
    names = tf.constant(list(label_names))

    def outputs(x):
        scores = tf.cast(classifier(x, training=False), tf.float32)
        if kind == "multi_label":
            return {SCORE_OUTPUTS[kind]: tf.sigmoid(scores)}
        if kind == "regression":
            value = scores[:, 0] * float(task.std) + float(task.mean)
            return {SCORE_OUTPUTS[kind]: value}
        probabilities = (
            scores if activation == "softmax" else tf.nn.softmax(scores)
        )
        label_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            SCORE_OUTPUTS[kind]: probabilities,
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


def _write_saved_model(classifier, vocab, num_text_columns, path, task=None):
    preprocessor = classifier.preprocessor
    outputs = _output_fn(classifier, vocab.names, task)

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
