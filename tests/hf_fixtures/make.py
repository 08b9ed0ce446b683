"""Writes the tiny Hugging Face folders that tests/test_hf_families.py loads.

Run from the repository root, in a venv of its own (never a dependency of
painless_tf or of its tests, which read only the files written here):

    python3.11 -m venv /tmp/hfvenv
    /tmp/hfvenv/bin/pip install torch==2.13.0 transformers sentencepiece \
        safetensors numpy protobuf
    /tmp/hfvenv/bin/python tests/hf_fixtures/make.py

Last run with torch 2.13.0+cpu, transformers 5.24.0, tokenizers 0.23.3,
sentencepiece 0.2.3, safetensors 0.8.0, protobuf 7.36.2 (transformers needs
protobuf to read a SentencePiece model); each reference.json records the
versions it was made with. Nothing is downloaded: the vocabularies are built
here from tests/families.py's corpus, as its keras-hub presets' are
(WordPiece: tests/tiny.py's VOCAB and a few more words; SentencePiece: the
same trainer settings with a smaller normalization table, see
`_NORMALIZATION_RULES`; byte-level BPE: `families.bpe_vocabulary`). The
output is the same on every run.

Per family, `tests/hf_fixtures/<family>/` holds what a checkpoint on the
Hugging Face hub holds:

- `config.json` and `model.safetensors`, written by `save_pretrained` from
  the `<Family>ForMaskedLM` class (ALBERT: `AlbertForPreTraining`), as the
  pretrained checkpoints are: their weight names carry the base model's
  prefix, e.g. `roberta.`;
- the tokenizer: `tokenizer.json` and `tokenizer_config.json` from
  `save_pretrained`, plus the vocabulary files it was built from, which
  transformers 5 no longer writes but hub repositories carry and keras-hub's
  converters read: `vocab.txt` (DistilBERT), `spiece.model` (ALBERT),
  `sentencepiece.bpe.model` (XLM-RoBERTa), `vocab.json` + `merges.txt`
  (RoBERTa);
- `reference.json`: texts and one sentence pair, with the ids the Hugging
  Face tokenizer (loaded back from the folder) gives them and the base
  model's `last_hidden_state` on those ids (keras-hub's `sequence_output`;
  for ALBERT also `pooler_output`, keras-hub's `pooled_output`).

The models are 2 layers, hidden size 8, 2 heads, intermediate size 16, 40
positions. Every weight is redrawn at a scale where it visibly changes the
output (the default init, std 0.02, leaves attention almost uniform and
would hide a misplaced weight), and RoBERTa's token-type embedding is not
zero, as in a checkpoint fine-tuned with transformers.
"""

import io
import json
import os
import shutil
import sys
import types
import unicodedata

import google.protobuf
import numpy as np
import safetensors
import sentencepiece
import tokenizers
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, TESTS)
# families.py and tiny.py import Keras at the top; what is used of them here
# (`corpus`, `_SPM_SPECIALS`, `bpe_vocabulary`, `VOCAB`) needs only numpy,
# so empty stand-ins let them load. The
# stand-ins are removed again: torch looks for a real `tensorflow`.
_STUBS = ("keras", "keras_hub", "tensorflow")
for _name in _STUBS:
    sys.modules.setdefault(_name, types.ModuleType(_name))
import families  # noqa: E402
import tiny  # noqa: E402

for _name in _STUBS:
    if getattr(sys.modules[_name], "__spec__", None) is None:
        del sys.modules[_name]

FAMILIES = ("distil_bert", "albert", "roberta", "xlm_roberta")
TEXTS = [
    "the movie was fun and smart",
    "The film was GOOD, and fun!",
    "Café crème: a dull plot.",
    "worst acting, boring and loud",
    # Full-width letters and a ligature: SentencePiece maps them to ASCII
    # by the rules of its model (`_NORMALIZATION_RULES`).
    "ＧＲＥＡＴ ﬁlm",
]
PAIR = ["a great story", "I hate it? Great movie."]
# tiny.VOCAB and the punctuation and words of TEXTS, so that lower-casing,
# accent stripping ("Café" -> "cafe") and punctuation splitting all show.
WORDPIECE_VOCAB = tiny.VOCAB + [
    "was", "and", "it", "i", "cafe", "creme", "##s", "##ing", ",", ".",
    "!", "?", ":",
]
# The SentencePiece models are trained as families.sentencepiece_proto
# trains them, except for their normalization: the default (nmt_nfkc) puts a
# 240 KB table into the model and again into tokenizer.json, so these
# models carry a small table of their own: full-width ASCII to ASCII, the
# "fi" ligature and the ideographic space. Both tokenizers apply the
# model's table, keras-hub's through TF Text and Hugging Face's as a
# `Precompiled` normalizer.
_NORMALIZATION_RULES = (
    [f"{c:X}\t{c - 0xFEE0:X}" for c in range(0xFF01, 0xFF5F)]
    + ["FB01\t66 69", "3000\t20"]
)
SIZES = dict(layers=2, hidden=8, heads=2, intermediate=16, positions=40)
SEED = 0


def main():
    torch.manual_seed(SEED)
    for family in FAMILIES:
        folder = os.path.join(HERE, family)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        write_tokenizer_files(family, folder)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        model = pretrained_model(family, len(tokenizer))
        randomize(model)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_reference(family, folder, tokenizer, model)
        total = sum(os.path.getsize(os.path.join(folder, f))
                    for f in os.listdir(folder))
        print(f"{family}: {sorted(os.listdir(folder))}, {total} bytes")


def write_tokenizer_files(family, folder):
    """The vocabulary files a hub checkpoint of `family` carries."""

    def write(name, content, mode="w"):
        with open(os.path.join(folder, name), mode,
                  **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            f.write(content)

    if family == "distil_bert":
        write("vocab.txt", "\n".join(WORDPIECE_VOCAB) + "\n")
        config = {"tokenizer_class": "DistilBertTokenizer",
                  "do_lower_case": True}
    elif family == "albert":
        write("spiece.model", sentencepiece_proto("albert"), "wb")
        config = {"tokenizer_class": "AlbertTokenizer", "do_lower_case": True,
                  "keep_accents": False}
    elif family == "xlm_roberta":
        write("sentencepiece.bpe.model",
              sentencepiece_proto("xlm_roberta"), "wb")
        config = {"tokenizer_class": "XLMRobertaTokenizer"}
    else:
        vocabulary, merges = families.bpe_vocabulary()
        write("vocab.json", json.dumps(vocabulary, ensure_ascii=False))
        write("merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
        config = {"tokenizer_class": "RobertaTokenizer"}
    write("tokenizer_config.json", json.dumps(config, indent=2) + "\n")


def sentencepiece_proto(family):
    rules = os.path.join(HERE, f".{family}_rules.tsv")
    with open(rules, "w", encoding="utf-8") as f:
        f.write("\n".join(_NORMALIZATION_RULES) + "\n")
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(families.corpus()),
            model_writer=model,
            model_type="unigram",
            vocab_size=families._SPM_VOCAB_SIZE,
            hard_vocab_limit=False,
            character_coverage=1.0,
            num_threads=1,
            minloglevel=2,
            normalization_rule_tsv=rules,
            **families._SPM_SPECIALS[family],
        )
    finally:
        os.remove(rules)
    return model.getvalue()


def pretrained_model(family, vocab_size):
    s = SIZES
    if family == "distil_bert":
        config = transformers.DistilBertConfig(
            vocab_size=vocab_size, dim=s["hidden"], n_layers=s["layers"],
            n_heads=s["heads"], hidden_dim=s["intermediate"],
            max_position_embeddings=s["positions"], pad_token_id=0,
        )
        return transformers.DistilBertForMaskedLM(config)
    common = dict(
        vocab_size=vocab_size, hidden_size=s["hidden"],
        num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
        intermediate_size=s["intermediate"],
        max_position_embeddings=s["positions"],
    )
    if family == "albert":
        # An embedding narrower than the hidden size, as in every ALBERT.
        config = transformers.AlbertConfig(
            embedding_size=4, pad_token_id=0, bos_token_id=2, eos_token_id=3,
            **common,
        )
        # keras-hub's ALBERT needs the pooler, which AlbertForMaskedLM
        # drops on save; the pretrained checkpoints and
        # AlbertForSequenceClassification keep it.
        return transformers.AlbertForPreTraining(config)
    # RoBERTa's and XLM-R's real configs: pad 1, LayerNorm epsilon 1e-5.
    roberta = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2,
                   type_vocab_size=1, layer_norm_eps=1e-5, **common)
    if family == "xlm_roberta":
        return transformers.XLMRobertaForMaskedLM(
            transformers.XLMRobertaConfig(**roberta))
    return transformers.RobertaForMaskedLM(
        transformers.RobertaConfig(**roberta))


def randomize(model):
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name.lower() and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                param.copy_(0.2 * noise)
            else:
                param.copy_(0.5 * noise)
    model.eval()


def write_reference(family, folder, tokenizer, model):
    # Loaded back from the folder: the reference is what the folder computes.
    model = type(model).from_pretrained(folder).eval()
    base = model.base_model
    examples = [dict(text=[t]) for t in TEXTS] + [dict(text=PAIR)]
    # transformers 5's AlbertTokenizer leaves token_type_ids out unless
    # asked, and the model then gives both texts of a pair segment 0; ALBERT
    # was pretrained with segments 0 and 1, as keras-hub packs them.
    with_segments = getattr(model.config, "type_vocab_size", 1) > 1 or None
    for example in examples:
        encoded = tokenizer(*example["text"], return_tensors="pt",
                            return_token_type_ids=with_segments)
        with torch.no_grad():
            outputs = base(**encoded)
        example["input_ids"] = encoded["input_ids"][0].tolist()
        if "token_type_ids" in encoded:
            example["token_type_ids"] = encoded["token_type_ids"][0].tolist()
        nfkc = [unicodedata.normalize("NFKC", t) for t in example["text"]]
        if nfkc != example["text"]:
            # painless_tf NFKC-normalizes texts for lower-casing WordPiece
            # tokenizers (`models.normalize_text`); Hugging Face's does not.
            example["nfkc_input_ids"] = tokenizer(*nfkc)["input_ids"]
        example["sequence_output"] = _floats(outputs.last_hidden_state[0])
        if getattr(outputs, "pooler_output", None) is not None:
            example["pooled_output"] = _floats(outputs.pooler_output[0])
    reference = {
        "family": family,
        "model_class": type(model).__name__,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentencepiece": sentencepiece.__version__,
            "safetensors": safetensors.__version__,
            "protobuf": google.protobuf.__version__,
        },
        "examples": examples,
    }
    with open(os.path.join(folder, "reference.json"), "w",
              encoding="utf-8") as f:
        json.dump(reference, f, ensure_ascii=False)
        f.write("\n")


def _floats(tensor):
    """Nested lists of float32 values, at 7 significant digits."""
    values = tensor.numpy().astype(np.float32)
    return np.vectorize(lambda v: float(f"{v:.7g}"), otypes=[object])(
        values).tolist()


if __name__ == "__main__":
    main()
