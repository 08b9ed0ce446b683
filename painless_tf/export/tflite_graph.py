"""The graph the .tflite files are converted from: tokenizer and packing.

Which keras-hub tokenizers TF Text's TFLite kernels can reproduce
(WordPiece with BERT's pre-split, SentencePiece), the TF Text tokenizer
with keras-hub's ids for each, the family's packing written with builtin
ops, and the SavedModel of that graph that the converter reads.
"""

import keras
import keras_hub
import tensorflow as tf
import tensorflow_text as tf_text

from painless_tf import models
from painless_tf import pipeline
from painless_tf import truncation as truncation_lib
from painless_tf.export.saved_model import _add_serving_endpoint
from painless_tf.export.saved_model import _output_fn


def _tflite_tokenizer_kind(tokenizer):
    """"wordpiece" or "sentencepiece": the TF Text tokenizer with TFLite
    kernels that reproduces `tokenizer`; None where none does."""
    if isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer) and (
        getattr(tokenizer, "split", False)
    ):
        return "wordpiece"
    if isinstance(tokenizer, keras_hub.tokenizers.SentencePieceTokenizer) and (
        getattr(tokenizer, "proto", None)
    ):
        return "sentencepiece"
    return None


def _tflite_inputs(classifier):
    """What the .tflite files take: "text" (tokenized in the graph),
    "token_ids" (byte-level BPE, packed on the host by the exported
    tokenizer files, `token_ids.py`), or None (no TFLite export)."""
    tokenizer = classifier.preprocessor.tokenizer
    if _tflite_tokenizer_kind(tokenizer) is not None:
        return "text"
    if isinstance(tokenizer, keras_hub.tokenizers.BytePairTokenizer):
        return "token_ids"
    return None


def _tflite_unsupported(classifier):
    """Why there can be no .tflite files, or None."""
    tokenizer = classifier.preprocessor.tokenizer
    if _tflite_inputs(classifier) is None:
        return (
            f"the model's tokenizer ({type(tokenizer).__name__}) has no "
            "TFLite kernels (TF Text has them for pre-splitting WordPiece "
            "and for SentencePiece only) and is no byte-level BPE tokenizer "
            "whose files could go beside token-id .tflite files; the "
            "SavedModel takes raw strings"
        )
    return None


def _fast_tokenizer(tokenizer):
    """Strings -> ragged int ids with the keras-hub tokenizer's ids, through
    TF Text ops that have TFLite kernels."""
    kind = _tflite_tokenizer_kind(tokenizer)
    if kind == "wordpiece":
        fast = tf_text.FastBertTokenizer(
            vocab=list(tokenizer.get_vocabulary()),
            suffix_indicator=tokenizer.suffix_indicator,
            unknown_token=tokenizer.oov_token,
            token_out_type=tf.int32,
            lower_case_nfd_strip_accents=bool(tokenizer.lowercase),
        )
        return fast.tokenize
    fast = tf_text.FastSentencepieceTokenizer(model=tokenizer.proto)
    if isinstance(tokenizer, keras_hub.tokenizers.XLMRobertaTokenizer):
        # XLM-R's ids are the SentencePiece model's plus one, with the
        # model's <unk> (0) moved to 3 (fairseq's order <s> <pad> </s>
        # <unk>), as `XLMRobertaTokenizer._tokenize_tf` does.
        def tokenize(texts):
            ids = fast.tokenize(texts)
            return ids.with_flat_values(tf.where(
                ids.flat_values == 0, tokenizer.unk_token_id,
                ids.flat_values + 1))
        return tokenize
    return fast.tokenize


def _tflite_tokenize_fn(classifier, num_text_columns, full_width=None):
    """Strings -> packed model inputs, with TFLite-compatible ops only.

    TF Text's FastBertTokenizer (FastBertNormalize + FastWordpieceTokenize)
    and FastSentencepieceTokenizer have TFLite kernels; the keras-hub
    packer (RaggedTensor ops, trimmers) does not, so the family's packing
    (start, separator and end tokens of `pipeline.family_packer`) is
    written with dense builtin ops: gather the kept tokens of each segment
    from the flat ids by position, a longer single text cut as the run cut
    it (`truncation.attached`: its head, or head and tail). Rows are
    padded to the longest one, except for a model whose outputs change
    with padding (F-Net), which gets its full sequence length as in Keras,
    and for one whose graph has ops TFLite runs only on static shapes
    (`full_width=True`).
    """
    preprocessor = classifier.preprocessor
    tokenizer = preprocessor.tokenizer
    fast = _fast_tokenizer(tokenizer)
    sequence_length = int(preprocessor.sequence_length)
    packer = pipeline.family_packer(tokenizer, sequence_length)
    start_ids = [int(i) for i in packer.start_value]
    sep_ids = [int(i) for i in packer.sep_value]
    end_ids = [int(i) for i in packer.end_value]
    pad_id = int(tokenizer.pad_token_id)
    truncate = getattr(preprocessor, "truncate", "round_robin")
    model_inputs = set(classifier.backbone.input.keys())
    cut = truncation_lib.attached(preprocessor)
    head_tail = cut.cuts_tail(num_text_columns)
    head = tf.constant(cut.head, tf.int64)
    if not full_width:
        full_width = models.padding_changes_outputs(classifier.backbone,
                                                    tokenizer)

    def tokenize(*texts):
        segments = [fast(t) for t in texts]
        # Room for the start, separator and end tokens.
        budget = tf.constant(
            sequence_length - len(start_ids) - len(end_ids)
            - len(sep_ids) * (len(segments) - 1), tf.int64)
        lengths = [tf.cast(s.row_lengths(), tf.int64) for s in segments]
        if len(segments) == 1:
            kept = [tf.minimum(lengths[0], budget)]
        elif truncate == "round_robin":
            # Closed form of MultiSegmentPacker's round robin: the first
            # segment gets the odd turn, and any turns the other can't use.
            first = tf.minimum(
                lengths[0], tf.maximum((budget + 1) // 2, budget - lengths[1])
            )
            kept = [first, tf.minimum(lengths[1], budget - first)]
        else:
            first = tf.minimum(lengths[0], budget)
            kept = [first, tf.minimum(lengths[1], budget - first)]
        closers = [sep_ids] * (len(segments) - 1) + [end_ids]
        total = len(start_ids) + sum(
            k + len(c) for k, c in zip(kept, closers))
        if full_width:
            width = tf.constant(sequence_length, tf.int64)
        else:
            # Padding only to the longest row keeps batch-1 calls short;
            # padded keys get exactly zero attention weight.
            width = tf.minimum(tf.reduce_max(total), sequence_length)
        position = tf.range(width, dtype=tf.int64)[tf.newaxis, :]
        token_ids = tf.fill(tf.shape(position + total[:, tf.newaxis]), pad_id)
        segment_ids = tf.zeros_like(token_ids)
        for offset, value in enumerate(start_ids):
            token_ids = tf.where(position == offset, value, token_ids)
        start = tf.fill(tf.shape(total), tf.constant(len(start_ids), tf.int64))
        for index, (segment, count, closer) in enumerate(
                zip(segments, kept, closers)):
            values = tf.concat([segment.flat_values, [pad_id]], axis=0)
            row_start = tf.cast(segment.row_splits[:-1], tf.int64)
            inside = (position >= start[:, tf.newaxis]) & (
                position < (start + count)[:, tf.newaxis]
            )
            source = row_start[:, tf.newaxis] + position - start[:, tf.newaxis]
            if head_tail:
                # A cut text: past its head, read its tail (`truncation`).
                skip = (lengths[index] - count)[:, tf.newaxis]
                source += tf.where(position - start[:, tf.newaxis] >= head,
                                   skip, tf.zeros_like(skip))
            gathered = tf.gather(values, tf.where(inside, source, 0))
            token_ids = tf.where(inside, gathered, token_ids)
            end = (start + count)[:, tf.newaxis]
            for offset, value in enumerate(closer):
                token_ids = tf.where(position == end + offset, value,
                                     token_ids)
            in_segment = (position >= start[:, tf.newaxis]) & (
                position < end + len(closer))
            segment_ids = tf.where(in_segment, index, segment_ids)
            start = start + count + len(closer)
        x = {
            "token_ids": token_ids,
            "segment_ids": segment_ids,
            "padding_mask": position < total[:, tf.newaxis],
        }
        return {k: v for k, v in x.items() if k in model_inputs}

    return tokenize


def _write_tflite_source(classifier, vocab, num_text_columns, path,
                         full_width=None, task=None):
    """A SavedModel of the TFLite graph, for `from_saved_model`.

    Keras 3 variables reach the converter frozen only through an
    `ExportArchive`; a plain `tf.Module` around the model converts to
    uninitialized resource variables (NaN outputs, TF 2.21).
    """
    tokenize = _tflite_tokenize_fn(classifier, num_text_columns, full_width)
    outputs = _output_fn(classifier, vocab.names, task)
    archive = keras.export.ExportArchive()
    _add_serving_endpoint(
        archive, lambda *texts: outputs(tokenize(*texts)), num_text_columns
    )
    archive.write_out(path, verbose=False)
