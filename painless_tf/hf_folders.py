"""What keras-hub 0.32 leaves out when it converts a local Hugging Face folder.

`models.load_classifier` and `models.load_tokenizer` call these on what
keras-hub loaded from a Hugging Face folder, to make it compute what the
same folder computes in transformers: the accent stripping its tokenizer
config asks for, and a RoBERTa's token-type embedding. The files were
already read by keras-hub, so they are known to parse.
"""

import json
import os

import keras
import keras_hub
import safetensors


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def fold_roberta_token_type(loaded, folder):
    """Adds a RoBERTa checkpoint's token-type embedding, as transformers does.

    Hugging Face's RoBERTa adds `token_type_embeddings[0]` to every token
    (its inputs are all of type 0); keras-hub's `RobertaBackbone` has no
    token-type embedding and its 0.32 converter drops the weight. That is
    harmless for the fairseq conversions (roberta-base, roberta-large),
    whose row is zero, but a RoBERTa trained or fine-tuned with
    transformers has learned a non-zero row, and without it every hidden
    state differs. The row is folded into the position embeddings, which
    are added to every token too (keras-hub's XLM-RoBERTa converter does the
    same).
    """
    backbone = getattr(loaded, "backbone", loaded)
    if not isinstance(backbone, keras_hub.models.RobertaBackbone):
        return
    config = _read_json(os.path.join(folder, "config.json"))
    if config.get("model_type") != "roberta":
        return
    row = _tensor(folder, "embeddings.token_type_embeddings.weight")
    if row is None:
        return
    table = backbone.embeddings.position_embedding.position_embeddings
    table.assign(table + keras.ops.cast(row[0], table.dtype))


def _tensor(folder, name):
    """The tensor `name` of a Hugging Face folder's safetensors, or None.

    Matches `name` with or without the base model's prefix (`roberta.`),
    in `model.safetensors` or in the shards its index lists.
    """
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        files = sorted(set(_read_json(index).get("weight_map", {}).values()))
    else:
        files = ["model.safetensors"]
    for filename in files:
        with safetensors.safe_open(os.path.join(folder, filename),
                                   framework="np") as f:
            for key in f.keys():
                if key == name or key.endswith("." + name):
                    return f.get_tensor(key)
    return None


def match_normalization(loaded, folder):
    """Strips accents where the model's own Hugging Face tokenizer does.

    Hugging Face's `BertTokenizer` strips accents whenever it lower-cases,
    unless `tokenizer_config.json` sets `strip_accents: false`; keras-hub
    0.32's converter passes only `do_lower_case`, so "café" became `[UNK]`
    instead of the "cafe" the model was pretrained on. Setting it here also
    makes the keras-hub tokenizer agree with TF Text's TFLite tokenizer
    (`export`), which always strips accents when it lower-cases.
    """
    tokenizer = getattr(getattr(loaded, "preprocessor", None), "tokenizer",
                        loaded)
    if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        return
    path = os.path.join(folder, "tokenizer_config.json")
    config = _read_json(path) if os.path.isfile(path) else {}
    strip = config.get("strip_accents")
    tokenizer.strip_accents = bool(
        tokenizer.lowercase if strip is None else strip
    )
