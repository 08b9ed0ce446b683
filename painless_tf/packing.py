"""Texts to token ids in two passes: tokenize once, pack at any length.

`tokenize_texts` runs the tokenizer (the costly part) once and keeps, per
text column, every row's first and last `keep` ids and its untruncated
length. `pack` then cuts and packs them at any sequence length up to
`keep` with the model family's `MultiSegmentPacker`, as exactly as
tokenizing again would: a plan can choose the length from the untruncated
lengths without tokenizing twice. `pipeline.tokenize` is the two in one.

Examples:

>>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]
>>> tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab)
>>> texts = tokenize_texts(["a b c a b c", "a"], tokenizer, keep=16)
>>> texts.full_lengths.tolist()
[8, 3]
>>> token_ids, _, lengths = pack(
...     texts, tokenizer, max_sequence_length=6,
...     truncation=truncation_lib.Truncation("head+tail", head=2))
>>> token_ids[:6].tolist(), lengths.tolist()
([2, 5, 6, 6, 7, 3], [6, 3])
"""

import dataclasses

import keras_hub
import numpy as np
import tensorflow as tf

from painless_tf import models
from painless_tf import truncation as truncation_lib

# Texts per tokenizer call; large enough to amortize the per-call overhead of
# the tokenizer ops, small enough that the padded packer output stays small
# (1024 x 512 int32 = 2 MiB).
_TOKENIZE_BATCH_SIZE = 1024


@dataclasses.dataclass(frozen=True, eq=False)
class TextTokens:
    """The token ids of every text column, unpacked, kept as numpy.

    Row `i` of column `c` holds `kept[c][i]` ids in `values[c]`, end to
    end: all of its ids, or its first and last `keep` when it had more.

    Args:
        values: tuple of np.ndarray. int32 ids per column, rows end to end.
        kept: tuple of np.ndarray. int32 [num_examples] ids kept per row.
        full_lengths: np.ndarray. int32 [num_examples]: tokens of each
            example packed without truncation, special tokens included.
        keep: int. Ids kept from each end of a longer row.
        labels: np.ndarray or None. int32 [num_examples] labels.
        num_special_tokens: int. Special tokens of one packed example.
    """

    values: tuple
    kept: tuple
    full_lengths: np.ndarray
    keep: int
    labels: np.ndarray | None
    num_special_tokens: int

    @property
    def num_examples(self) -> int:
        return int(self.full_lengths.shape[0])

    @property
    def num_columns(self) -> int:
        return len(self.values)

    def rows(self, start: int, stop: int) -> "TextTokens":
        """The `TextTokens` of rows `start` to `stop` (exclusive)."""
        values = []
        for column, kept in zip(self.values, self.kept):
            offsets = np.concatenate([[0], np.cumsum(kept, dtype=np.int64)])
            values.append(column[offsets[start]:offsets[stop]])
        return dataclasses.replace(
            self, values=tuple(values),
            kept=tuple(kept[start:stop] for kept in self.kept),
            full_lengths=self.full_lengths[start:stop],
            labels=None if self.labels is None else self.labels[start:stop])


def tokenize_texts(examples, tokenizer, *, keep: int, labels=None
                   ) -> TextTokens:
    """Tokenizes every text column once, keeping `keep` ids at each end.

    Args:
        examples: the texts, as `pipeline.tokenize` takes them.
        tokenizer: keras_hub tokenizer of a text classifier family.
        keep: int. Ids kept from the start and from the end of a longer
            text: packing at lengths up to `keep` is then exact.
        labels: array-like or None. int labels [n]; overrides
            `examples.labels`.

    Returns:
        A `TextTokens`.
    """
    columns, labels = checked_columns_and_labels(examples, labels)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(
            f"`keep` must be a positive int. Received: keep={keep!r}.")
    num_special = _num_special_tokens(family_packer(tokenizer, keep),
                                      len(columns))

    def tokenize(*texts):
        outputs = []
        for text in texts:
            ids = tokenizer(models.normalize_text(tokenizer, text))
            if not isinstance(ids, tf.RaggedTensor):
                ids = tf.RaggedTensor.from_tensor(ids)
            stored = truncation_lib.cut(ids, budget=2 * keep, head=keep)
            outputs += [tf.cast(stored.flat_values, tf.int32),
                        tf.cast(stored.row_lengths(), tf.int32),
                        tf.cast(ids.row_lengths(), tf.int32)]
        return tuple(outputs)

    dataset = (
        tf.data.Dataset.from_tensor_slices(
            tuple(np.asarray(column, dtype=object) for column in columns))
        .batch(_TOKENIZE_BATCH_SIZE)
        # Traced without autograph, as the packing below: keras-hub's
        # tokenizers have no tensor-dependent Python control flow.
        .map(tf.autograph.experimental.do_not_convert(tokenize),
             num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    parts = [[] for _ in range(3 * len(columns))]
    for batch in dataset:
        for part, tensor in zip(parts, batch):
            part.append(tensor.numpy())
    parts = [np.concatenate(part).astype(np.int32) for part in parts]
    full = sum(parts[3 * c + 2] for c in range(len(columns))) + num_special
    return TextTokens(
        values=tuple(parts[3 * c] for c in range(len(columns))),
        kept=tuple(parts[3 * c + 1] for c in range(len(columns))),
        full_lengths=full.astype(np.int32), keep=keep, labels=labels,
        num_special_tokens=int(num_special),
    )


def pack(texts: TextTokens, tokenizer, *, max_sequence_length: int,
         truncation: truncation_lib.Truncation | None = None):
    """Cuts and packs `tokenize_texts` output at `max_sequence_length`.

    One text longer than the room after its special tokens is cut as
    `truncation` says (`painless_tf.truncation`: "head" by default);
    sentence pairs are cut by the family's packer (round robin).

    Args:
        texts: TextTokens. From `tokenize_texts` with `keep` at least
            `max_sequence_length`.
        tokenizer: the keras_hub tokenizer `texts` was made with.
        max_sequence_length: int. Longest packed example.
        truncation: Truncation or None. The cut of a longer single text.

    Returns:
        (token_ids int32, segment_ids int8, lengths int32): the packed
        examples end to end, unpadded.
    """
    truncation = truncation or truncation_lib.Truncation()
    if max_sequence_length > texts.keep:
        raise ValueError(
            f"`max_sequence_length` ({max_sequence_length}) exceeds the ids "
            f"kept per text ({texts.keep}). Tokenize with keep="
            f"{max_sequence_length} or more.")
    packer = family_packer(tokenizer, max_sequence_length)
    pad_id = int(tokenizer.pad_token_id)
    room = max_sequence_length - texts.num_special_tokens
    cuts_tail = truncation.cuts_tail(texts.num_columns)
    positions = tf.range(1, max_sequence_length + 1)

    @tf.function(reduce_retracing=True, autograph=False)
    def pack_batch(*segments):
        if cuts_tail:
            segments = (truncation_lib.cut(
                segments[0], budget=room, head=truncation.head),)
        token_ids, segment_ids = packer(segments)
        # The packer pads on the right and always ends the real tokens with
        # [SEP], so the length is the last non-pad position. Counting
        # non-pad tokens would break if a text itself spelled "[PAD]".
        lengths = tf.reduce_max(
            tf.where(token_ids != pad_id, positions[tf.newaxis, :], 0), axis=1
        )
        token_ids = tf.RaggedTensor.from_tensor(token_ids, lengths=lengths)
        segment_ids = tf.RaggedTensor.from_tensor(segment_ids, lengths=lengths)
        return token_ids.flat_values, segment_ids.flat_values, lengths

    splits = [np.concatenate([[0], np.cumsum(kept, dtype=np.int64)])
              for kept in texts.kept]
    token_ids, segment_ids, lengths = [], [], []
    for start in range(0, texts.num_examples, _TOKENIZE_BATCH_SIZE):
        stop = min(start + _TOKENIZE_BATCH_SIZE, texts.num_examples)
        segments = tuple(
            tf.RaggedTensor.from_row_lengths(
                values[split[start]:split[stop]], kept[start:stop])
            for values, kept, split in zip(texts.values, texts.kept, splits))
        batch_tokens, batch_segments, batch_lengths = pack_batch(*segments)
        token_ids.append(batch_tokens.numpy().astype(np.int32))
        segment_ids.append(batch_segments.numpy().astype(np.int8))
        lengths.append(batch_lengths.numpy().astype(np.int32))
    return (np.concatenate(token_ids), np.concatenate(segment_ids),
            np.concatenate(lengths))


def checked_columns_and_labels(examples, labels=None):
    """(text columns, labels or None) of `examples`, checked: int32 class
    ids, float32 targets or float32 multi-hot rows.

    Raises:
        ValueError: with one line, for texts or labels of the wrong kind.
    """
    columns, found_labels = _columns_and_labels(examples)
    if labels is None:
        labels = found_labels
    num_examples = len(columns[0])
    if labels is not None:
        labels = np.asarray(labels)
        floats = np.issubdtype(labels.dtype, np.floating)
        if labels.shape[:1] != (num_examples,) or labels.ndim > (
                2 if floats else 1):
            raise ValueError(
                f"`labels` must have one entry per text ({num_examples}): "
                "int ids [n], float targets [n] or multi-hot [n, K]. "
                f"Received: labels.shape={labels.shape}."
            )
        if not floats and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                "`labels` must be integer class ids or float targets. "
                f"Received: dtype={labels.dtype}. Map label names to ids "
                "first."
            )
        labels = labels.astype(np.float32 if floats else np.int32)
    return columns, labels


def _columns_and_labels(examples):
    """Returns (tuple of text columns, labels or None) from `examples`."""
    labels = None
    if hasattr(examples, "texts"):
        labels = getattr(examples, "labels", None)
        columns = examples.texts
    elif isinstance(examples, (str, bytes)):
        raise ValueError(
            "`examples` must be a sequence of texts, not one string. "
            f"Received: {examples[:40]!r}. Wrap it in a list."
        )
    elif not len(examples):
        raise ValueError(
            "`examples` holds no texts. Check the input file and filters."
        )
    elif isinstance(examples[0], str):
        columns = (examples,)
    else:
        columns = examples
    columns = tuple(columns)
    if not columns or not 1 <= len(columns) <= 2:
        raise ValueError(
            "`examples` must have one text column, or two for sentence "
            f"pairs. Received: {len(columns)} columns."
        )
    sizes = {len(column) for column in columns}
    if len(sizes) != 1:
        raise ValueError(
            "All text columns must have the same number of rows. Received: "
            f"{[len(column) for column in columns]}."
        )
    if not sizes.pop():
        raise ValueError(
            "`examples` holds no texts. Check the input file and filters."
        )
    for c, column in enumerate(columns):
        for i, text in enumerate(column):
            if not isinstance(text, str):
                raise ValueError(
                    f"Text column {c} row {i}: expected a string, got "
                    f"{type(text).__name__} {text!r}. Convert or drop it "
                    "before tokenizing."
                )
    return columns, labels


def family_packer(tokenizer, sequence_length):
    """The packer of the tokenizer's model family, as its preprocessor builds it.

    Every keras-hub text classifier family names its tokenizer in its
    `TextClassifierPreprocessor` subclass (`tokenizer_cls`); that class's
    `build` makes the family's `MultiSegmentPacker`: `[CLS] a [SEP] b [SEP]`
    for BERT, ALBERT, DeBERTa-v3, F-Net and RoFormer-v2, `<s> a </s></s> b
    </s>` for RoBERTa and XLM-RoBERTa, with the family's pad id and
    truncation. A tokenizer of no known family gets the generic
    `TextClassifierPreprocessor`'s packer.

    Args:
        tokenizer: keras_hub tokenizer. Must define `start_token_id`,
            `end_token_id` and `pad_token_id`.
        sequence_length: int. Length the packer truncates and pads to.

    Returns:
        A built `keras_hub.layers.MultiSegmentPacker`.

    Raises:
        ValueError: for a tokenizer without start, end or pad token.

    Examples:

    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]
    >>> packer = family_packer(
    ...     keras_hub.tokenizers.BertTokenizer(vocabulary=vocab), 8)
    >>> packer.start_value, packer.end_value, packer.sep_value
    ([2], [3], [3])
    """
    missing = [
        name for name in ("start_token_id", "end_token_id", "pad_token_id")
        if getattr(tokenizer, name, None) is None
    ]
    if missing:
        raise ValueError(
            f"The tokenizer ({type(tokenizer).__name__}) has no "
            f"{', '.join(missing)}: a text classifier needs start, end and "
            "padding tokens to pack texts. Pass a keras-hub text classifier "
            "model (BERT, DistilBERT, ALBERT, DeBERTa-v3, F-Net, RoBERTa, "
            "RoFormer-v2 or XLM-RoBERTa)."
        )
    preprocessor = _preprocessor_class(type(tokenizer))(
        tokenizer=tokenizer, sequence_length=sequence_length
    )
    preprocessor.build(None)
    return preprocessor.packer


def _preprocessor_class(tokenizer_class):
    """The `TextClassifierPreprocessor` subclass made for `tokenizer_class`,
    or for its nearest base class; the generic one if none is."""
    found = {}
    pending = [keras_hub.models.TextClassifierPreprocessor]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        own = cls.__dict__.get("tokenizer_cls")
        if own is not None:
            found.setdefault(own, cls)
    for base in tokenizer_class.__mro__:
        if base in found:
            return found[base]
    return keras_hub.models.TextClassifierPreprocessor


def _num_special_tokens(packer, num_segments):
    def count(value):
        return len(value) if isinstance(value, (list, tuple)) else 1

    return (count(packer.start_value) + count(packer.end_value)
            + count(packer.sep_value) * (num_segments - 1))


def rows_end_to_end(splits, names):
    """The text columns and labels of the splits `names` (attributes of
    `splits`, e.g. a `data.Splits`) end to end, and each split's
    (start, stop) among them: one set of rows to tokenize once."""
    parts = {name: checked_columns_and_labels(getattr(splits, name))
             for name in names}
    bounds, start = {}, 0
    for name, (columns, _) in parts.items():
        bounds[name] = (start, start + len(columns[0]))
        start = bounds[name][1]
    num_columns = len(parts[names[0]][0])
    columns = tuple(
        [text for split_columns, _ in parts.values()
         for text in split_columns[c]]
        for c in range(num_columns))
    # An empty split's labels may lack the others' label axis.
    labels = np.concatenate([split_labels for split_columns, split_labels
                             in parts.values() if len(split_columns[0])])
    return columns, labels, bounds
