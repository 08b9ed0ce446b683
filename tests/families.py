"""Tiny random presets of every keras-hub text classifier family, offline.

Each family gets its own kind of vocabulary, built here without downloads:

| family | tokenizer | vocabulary |
|---|---|---|
| bert, distil_bert, roformer_v2 | WordPiece | `tiny.VOCAB` |
| albert, f_net, deberta_v3, xlm_roberta | SentencePiece | a unigram model trained on `corpus()` |
| roberta | byte-level BPE | every byte plus merges of `corpus()`'s words |

    import families
    folder = families.write_preset("albert", tmp_path / "albert")

The SentencePiece models and the BPE merges are computed once per process
(`functools.cache`); the same family and seed always give the same preset.
"""

import functools
import io
import os

import keras
import keras_hub

import tiny

FAMILIES = (
    "bert",
    "distil_bert",
    "roformer_v2",
    "albert",
    "f_net",
    "deberta_v3",
    "xlm_roberta",
    "roberta",
)
SEQUENCE_LENGTH = 16
# An upper bound: on this corpus the unigram trainer stops at about 70
# pieces, most corpus words among them.
_SPM_VOCAB_SIZE = 160
_LAYERS = dict(num_layers=2, hidden_dim=8, intermediate_dim=16)


def corpus():
    """Texts the SentencePiece and BPE vocabularies are built from.

    The texts of `tiny.sentiment_rows`, and a few with punctuation, capitals
    and accents, so that the tokenizers meet more than lowercase ASCII words.
    """
    texts = [text for text, _ in tiny.sentiment_rows(200)]
    texts += [
        "The film was GOOD, and fun!",
        "A dull plot; awful acting... the worst.",
        "Café crème: a smart, funny story.",
        "I love it. I hate it? Great movie.",
    ]
    return texts


def write_preset(family, folder, *, num_classes=2, seed=0):
    """Saves a tiny random `<Family>TextClassifier` preset into `folder`.

    Args:
        family: str. One of `FAMILIES`.
        folder: path. Where `save_to_preset` writes the preset.
        num_classes: int. Classes of the head.
        seed: int. Seeds the random weights.

    Returns:
        str: the folder.
    """
    keras.utils.set_random_seed(seed)
    tokenizer = make_tokenizer(family)
    size = tokenizer.vocabulary_size()
    backbone = _backbone(family, size)
    names = {
        "bert": "Bert", "distil_bert": "DistilBert",
        "roformer_v2": "RoformerV2", "albert": "Albert", "f_net": "FNet",
        "deberta_v3": "DebertaV3", "xlm_roberta": "XLMRoberta",
        "roberta": "Roberta",
    }
    name = names[family]
    preprocessor = getattr(
        keras_hub.models, f"{name}TextClassifierPreprocessor"
    )(tokenizer=tokenizer, sequence_length=SEQUENCE_LENGTH)
    classifier = getattr(keras_hub.models, f"{name}TextClassifier")(
        backbone=backbone, preprocessor=preprocessor,
        num_classes=num_classes, dropout=0.0,
    )
    folder = os.fspath(folder)
    classifier.save_to_preset(folder)
    return folder


def make_tokenizer(family):
    """The family's keras-hub tokenizer over its tiny vocabulary."""
    if family in ("bert", "roformer_v2"):
        cls = (keras_hub.tokenizers.BertTokenizer if family == "bert"
               else keras_hub.tokenizers.RoformerV2Tokenizer)
        return cls(vocabulary=tiny.VOCAB, lowercase=True)
    if family == "distil_bert":
        return keras_hub.tokenizers.DistilBertTokenizer(
            vocabulary=tiny.VOCAB, lowercase=True
        )
    if family == "roberta":
        vocabulary, merges = bpe_vocabulary()
        return keras_hub.tokenizers.RobertaTokenizer(
            vocabulary=vocabulary, merges=merges
        )
    tokenizers = {
        "albert": keras_hub.tokenizers.AlbertTokenizer,
        "f_net": keras_hub.tokenizers.FNetTokenizer,
        "deberta_v3": keras_hub.tokenizers.DebertaV3Tokenizer,
        "xlm_roberta": keras_hub.tokenizers.XLMRobertaTokenizer,
    }
    return tokenizers[family](proto=sentencepiece_proto(family))


# The special pieces each family's tokenizer expects in its model, at the
# ids its pretrained checkpoints use.
_SPM_SPECIALS = {
    "albert": dict(pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="<pad>",
                   unk_piece="<unk>", bos_piece="[CLS]", eos_piece="[SEP]",
                   user_defined_symbols=["[MASK]"]),
    "deberta_v3": dict(pad_id=0, bos_id=1, eos_id=2, unk_id=3,
                       pad_piece="[PAD]", bos_piece="[CLS]",
                       eos_piece="[SEP]", unk_piece="[UNK]",
                       user_defined_symbols=["[MASK]"]),
    # XLM-R's sentencepiece model has no pad piece: its tokenizer shifts
    # every id by one and puts <pad> at 1.
    "xlm_roberta": dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1),
}
_SPM_SPECIALS["f_net"] = _SPM_SPECIALS["albert"]


@functools.cache
def sentencepiece_proto(family):
    """bytes: a unigram SentencePiece model of `corpus()` for `family`."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=model,
        model_type="unigram",
        vocab_size=_SPM_VOCAB_SIZE,
        hard_vocab_limit=False,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
        **_SPM_SPECIALS[family],
    )
    return model.getvalue()


@functools.cache
def bpe_vocabulary():
    """(vocabulary dict, merges list) of a byte-level BPE over `corpus()`.

    Every byte is a token (GPT-2's byte-to-unicode table), so any text
    tokenizes; each corpus word, with and without its leading space
    (`Ġ`), is built up by merges from left to right.
    """
    byte_chars = _bytes_to_unicode()
    vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in byte_chars:
        vocabulary.setdefault(char, len(vocabulary))
    merges = []
    words = sorted({
        w.strip(".,;:!?").lower()
        for text in corpus() for w in text.split()
    } - {""})
    for word in words:
        letters = [byte_chars[b] for b in word.encode()]
        # byte_chars[32] is "Ġ", the space before a word.
        for spelled in (letters, [byte_chars[32]] + letters):
            piece = spelled[0]
            for char in spelled[1:]:
                merge = f"{piece} {char}"
                if merge not in merges:
                    merges.append(merge)
                piece += char
                vocabulary.setdefault(piece, len(vocabulary))
    vocabulary["<mask>"] = len(vocabulary)
    return vocabulary, merges


def _bytes_to_unicode():
    """GPT-2's map from the 256 bytes to printable characters, as a list."""
    printable = (list(range(ord("!"), ord("~") + 1))
                 + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = {}
    extra = 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _backbone(family, vocabulary_size):
    common = dict(vocabulary_size=vocabulary_size, dropout=0.0, **_LAYERS)
    if family == "albert":
        return keras_hub.models.AlbertBackbone(
            num_heads=2, embedding_dim=8, max_sequence_length=SEQUENCE_LENGTH,
            **common,
        )
    if family == "f_net":
        return keras_hub.models.FNetBackbone(
            max_sequence_length=SEQUENCE_LENGTH, **common
        )
    if family == "roformer_v2":
        return keras_hub.models.RoformerV2Backbone(
            num_heads=2, head_size=4, **common
        )
    if family == "deberta_v3":
        return keras_hub.models.DebertaV3Backbone(
            num_heads=2, max_sequence_length=SEQUENCE_LENGTH, bucket_size=8,
            **common,
        )
    names = {"bert": "Bert", "distil_bert": "DistilBert",
             "xlm_roberta": "XLMRoberta", "roberta": "Roberta"}
    return getattr(keras_hub.models, f"{names[family]}Backbone")(
        num_heads=2, max_sequence_length=SEQUENCE_LENGTH, **common
    )
