"""Tiny models and data shared by the tests (no downloads)."""

import json

import keras
import keras_hub
import numpy as np
import tensorflow as tf

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    w
    for w in (
        "the a good bad movie film great awful fun dull plot acting "
        "love hate best worst story funny boring smart loud"
    ).split()
]


def tiny_classifier(num_classes=3, *, dropout=0.0, seq=16):
    """A 2-layer BERT classifier with hidden size 8."""
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB),
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=seq,
        dropout=dropout,
    )
    return keras_hub.models.BertTextClassifier(
        backbone=backbone,
        num_classes=num_classes,
        preprocessor=None,
        dropout=dropout,
    )


def tiny_tokenizer():
    return keras_hub.tokenizers.BertTokenizer(vocabulary=VOCAB, lowercase=True)


def token_batch(n, seq=16, *, num_classes=3, seed=0):
    """Random token ids with ragged real lengths, labels and weights."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, seq + 1, (n, 1))
    mask = (np.arange(seq)[None, :] < lengths).astype("int32")
    x = {
        "token_ids": (rng.integers(5, len(VOCAB), (n, seq)) * mask).astype(
            "int32"
        ),
        "segment_ids": np.zeros((n, seq), "int32"),
        "padding_mask": mask,
    }
    y = rng.integers(0, num_classes, n).astype("int32")
    w = rng.uniform(0.5, 1.5, n).astype("float32")
    return x, y, w


def dataset(x, y, w, batch_size):
    return tf.data.Dataset.from_tensor_slices((x, y, w)).batch(batch_size)


def weights_of(model):
    return [np.array(v.numpy(), dtype="float64") for v in model.trainable_variables]


def max_abs_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def mirrored():
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def optimizer(name):
    if name == "sgd":
        return keras.optimizers.SGD(0.1, momentum=0.9)
    # epsilon 1e-3 rather than 1e-7: Adam divides by sqrt(v) + epsilon, so
    # with a tiny epsilon a 1e-9 round-off difference in a near-zero
    # gradient becomes an O(learning rate) difference in the update, which
    # says nothing about accumulation. 1e-3 bounds that amplification.
    return keras.optimizers.AdamW(
        1e-2, weight_decay=0.01, epsilon=1e-3, global_clipnorm=1.0
    )


POSITIVE = "good great fun love best smart funny".split()
NEGATIVE = "bad awful dull hate worst boring loud".split()
FILLER = "the a movie film plot acting story".split()


def write_preset(folder, *, num_classes=2, seq=16, dropout=0.0, seed=0):
    """A tiny keras-hub BERT classifier preset folder with its tokenizer.

    Deterministic for a seed, whatever ran before in the process.
    """
    import keras_hub

    from painless_tf import models

    keras.utils.set_random_seed(seed)
    classifier = tiny_classifier(num_classes, seq=seq, dropout=dropout)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer=tiny_tokenizer(), sequence_length=seq
    )
    classifier = keras_hub.models.BertTextClassifier(
        backbone=classifier.backbone,
        num_classes=num_classes,
        preprocessor=preprocessor,
        dropout=dropout,
    )
    return models.save_classifier(classifier, str(folder))


def sentiment_rows(n, *, seed=0):
    """Texts whose label is decided by sentiment words: learnable quickly."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        positive = bool(rng.random() < 0.5)
        words = list(rng.choice(POSITIVE if positive else NEGATIVE,
                                rng.integers(2, 6)))
        words += list(rng.choice(FILLER, rng.integers(0, 6)))
        rng.shuffle(words)
        rows.append((" ".join(words), "pos" if positive else "neg"))
    return rows


LABEL_OF = {"good": "pos", "great": "pos", "fun": "fun", "funny": "fun",
            "bad": "neg", "awful": "neg"}


def multi_label_rows(n, seed=0):
    """Texts whose label set is decided by the label words they hold."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        words = list(rng.choice(list(LABEL_OF), rng.integers(1, 4)))
        words += list(rng.choice(FILLER, rng.integers(0, 3)))
        rng.shuffle(words)
        names = sorted({LABEL_OF[w] for w in words if w in LABEL_OF})
        rows.append((" ".join(words), json.dumps(names)))
    return rows


def regression_rows(n, seed=0):
    """Texts whose score grows with the number of \"good\" in them."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        good = int(rng.integers(0, 4))
        words = ["good"] * good + list(rng.choice(FILLER, 3 - good + 1))
        rng.shuffle(words)
        rows.append((" ".join(words), f"{2.5 * good + 1.0:.2f}"))
    return rows


def write_csv(path, rows, header=("text", "label")):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)
