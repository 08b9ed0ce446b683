"""TFLite over token ids, for tokenizers that no TFLite kernel reproduces.

Byte-level BPE (RoBERTa) has no TF Text op with a TFLite kernel, so its
.tflite files take the packed model inputs instead of strings: `token_ids`
and `padding_mask` (and `segment_ids` where the backbone has them), each
int32 `[N, L]` for any `L` up to the sequence length. The tokenizer goes
beside them as files, in `export/tokenizer/`: the keras-hub preprocessor
preset (`tokenizer.json`, `preprocessor.json`, `config.json`) with the
tokenizer's own `assets/tokenizer/vocabulary.json` and `merges.txt`, the
files every byte-level BPE implementation reads. `load_predictor` packs
texts with that preprocessor on the host, so the ids are keras-hub's.
"""

import json
import os
import shutil

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from painless_tf import truncation as truncation_lib
from painless_tf.export.saved_model import _output_fn
from painless_tf.export.saved_model import _preprocess

TOKENIZER_DIR = "tokenizer"
# In TOKENIZER_DIR: the .tflite inputs and whether rows are padded to the
# full sequence length.
PACKING_FILE = "packing.json"
# The order of the .tflite inputs, of those the backbone takes.
_INPUT_ORDER = ("token_ids", "segment_ids", "padding_mask")


def input_names(classifier):
    """The model inputs a token-id .tflite file takes, in order."""
    model_inputs = set(classifier.backbone.input.keys())
    return [name for name in _INPUT_ORDER if name in model_inputs]


def write_tokenizer(classifier, preset, folder, *, full_width):
    """Writes the preprocessor preset that packs texts for the .tflite files.

    `preset` is the model's keras-hub preset folder; its `config.json` (the
    backbone's config, no weights) is what keras-hub needs to load a
    preprocessor preset on its own. `full_width`: rows are padded to the
    sequence length (the model's outputs change with padding, or its graph
    has a fixed length).
    """
    classifier.preprocessor.save_to_preset(folder)
    shutil.copyfile(os.path.join(preset, "config.json"),
                    os.path.join(folder, "config.json"))
    with open(os.path.join(folder, PACKING_FILE), "w",
              encoding="utf-8") as f:
        cut = truncation_lib.attached(classifier.preprocessor)
        json.dump({"inputs": input_names(classifier),
                   "full_width": bool(full_width),
                   "truncation": {"kind": cut.kind, "head": cut.head}},
                  f, indent=2)
        f.write("\n")


def load_host_packer(folder):
    """`pack(texts, pairs) -> {name: int32 [N, L]}` from `write_tokenizer`'s
    folder: keras-hub's packing with the run's cut of longer texts
    (`truncation`), cut to the longest row of the batch unless
    the folder says the model needs the full width."""
    with open(os.path.join(folder, PACKING_FILE), encoding="utf-8") as f:
        packing = json.load(f)
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
        folder)
    # Files written before they recorded the cut were cut at the head.
    cut = packing.get("truncation") or {}
    truncation_lib.attach(preprocessor, truncation_lib.Truncation(
        cut.get("kind", truncation_lib.HEAD), int(cut.get("head", 0))))
    return host_packer(preprocessor, full_width=bool(packing["full_width"]),
                       names=list(packing["inputs"]))


def host_packer(preprocessor, *, full_width, names=None):
    """`pack(texts, pairs)`: the packed int32 inputs `names` (None: all the
    preprocessor gives) of a token-id .tflite file, by the keras-hub
    `preprocessor` itself."""

    def pack(texts, pairs=None):
        columns = [tf.constant(list(texts), tf.string)]
        if pairs is not None:
            columns.append(tf.constant(list(pairs), tf.string))
        x = _preprocess(preprocessor, columns)
        mask = np.asarray(x["padding_mask"])
        width = mask.shape[1]
        if not full_width:
            # Padded keys get exactly zero attention weight: cutting the
            # batch to its longest row changes no probability.
            width = max(1, int(mask.sum(axis=1).max()))
        wanted = names or [k for k in _INPUT_ORDER if k in x]
        return {k: np.asarray(x[k])[:, :width].astype(np.int32)
                for k in wanted}

    return pack


def write_source(classifier, vocab, path, *, full_width, task=None):
    """A SavedModel of the token-id graph, for `from_saved_model`: int32
    inputs `[N, L]` (`L` fixed at the sequence length if `full_width`)."""
    outputs = _output_fn(classifier, vocab.names, task)
    names = input_names(classifier)
    length = (int(classifier.preprocessor.sequence_length) if full_width
              else None)

    def serve(*tensors):
        x = dict(zip(names, tensors))
        x["padding_mask"] = tf.cast(x["padding_mask"], tf.bool)
        return outputs(x)

    # The signature's input names come from the function's arguments.
    if names == ["token_ids", "padding_mask"]:
        def endpoint(token_ids, padding_mask):
            return serve(token_ids, padding_mask)
    elif names == ["token_ids", "segment_ids", "padding_mask"]:
        def endpoint(token_ids, segment_ids, padding_mask):
            return serve(token_ids, segment_ids, padding_mask)
    else:
        raise ValueError(
            f"A token-id TFLite graph needs token_ids and padding_mask "
            f"inputs. Received: the backbone's inputs {names}.")
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        "serving_default", endpoint,
        input_signature=[tf.TensorSpec([None, length], tf.int32, name=name)
                         for name in names],
    )
    archive.write_out(path, verbose=False)
