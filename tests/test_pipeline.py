"""Tests for painless_tf.pipeline: tokenize once, bucket, fixed-size batches."""

import dataclasses
import doctest
import itertools
import os

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from painless_tf import pipeline

_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "movie", "was", "good", "bad", "a", "plot", "very", "!",
]  # fmt: skip
_ID = {token: i for i, token in enumerate(_VOCAB)}
_CLS, _SEP, _PAD = _ID["[CLS]"], _ID["[SEP]"], _ID["[PAD]"]


@dataclasses.dataclass(frozen=True)
class _Examples:
    """Stands in for painless_tf.data.Examples."""

    texts: tuple
    labels: np.ndarray


@pytest.fixture
def tokenizer():
    return keras_hub.tokenizers.BertTokenizer(
        vocabulary=_VOCAB, lowercase=True
    )


def _texts(n, seed=0, max_words=20):
    """n distinct texts, skewed lengths: mostly short, a few long."""
    rng = np.random.default_rng(seed)
    words = _VOCAB[5:]
    texts = {}
    while len(texts) < n:
        k = min(int(rng.geometric(0.25)), max_words)
        texts.setdefault(" ".join(rng.choice(words, size=k)), None)
    return list(texts)


def _tokenized(n=50, seed=0, max_sequence_length=24, tokenizer=None):
    tokenizer = tokenizer or keras_hub.tokenizers.BertTokenizer(
        vocabulary=_VOCAB, lowercase=True
    )
    texts = _texts(n, seed)
    labels = np.arange(n, dtype=np.int32) % 3
    return pipeline.tokenize(
        _Examples(texts=(tuple(texts),), labels=labels),
        tokenizer,
        max_sequence_length=max_sequence_length,
    )


def _collect(dataset):
    """Lists of numpy (token_ids, segment_ids, padding_mask, y, weight)."""
    out = []
    for x, y, w in dataset:
        out.append(
            (
                x["token_ids"].numpy(),
                x["segment_ids"].numpy(),
                x["padding_mask"].numpy(),
                y.numpy(),
                w.numpy(),
            )
        )
    return out


def _example_of_row(tokenized, token_ids_row, mask_row):
    """The example index whose tokens equal a batch row (texts distinct)."""
    tokens = token_ids_row[mask_row.astype(bool)]
    offsets = tokenized.offsets
    for i in range(tokenized.num_examples):
        start = offsets[i]
        got = tokenized.token_ids[start : start + tokenized.lengths[i]]
        if got.shape == tokens.shape and np.array_equal(got, tokens):
            return i
    raise AssertionError(f"row {tokens} matches no example")


# --- tokenize ---------------------------------------------------------------


def test_tokenize_single_column_unpadded_and_matches_keras_hub_packer(
    tokenizer,
):
    texts = ["The movie was good!", "bad", "", "a very very very bad plot"]
    t = pipeline.tokenize(
        texts, tokenizer, max_sequence_length=6, labels=[1, 0, 1, 0]
    )
    assert t.lengths.tolist() == [6, 3, 2, 6]
    assert t.token_ids[:6].tolist() == [
        _CLS, _ID["the"], _ID["movie"], _ID["was"], _ID["good"], _SEP
    ]  # fmt: skip
    assert t.token_ids[6:9].tolist() == [_CLS, _ID["bad"], _SEP]
    assert t.token_ids[9:11].tolist() == [_CLS, _SEP]
    assert t.labels.dtype == np.int32 and t.labels.tolist() == [1, 0, 1, 0]
    # Padding each example back to 6 gives exactly keras-hub's packing.
    packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length=6, start_value=_CLS, end_value=_SEP, pad_value=_PAD
    )
    expected, _ = packer(tokenizer(tf.constant(texts)))
    for i, start in enumerate(t.offsets):
        row = np.full(6, _PAD)
        row[: t.lengths[i]] = t.token_ids[start : start + t.lengths[i]]
        np.testing.assert_array_equal(row, expected[i].numpy())


def test_tokenize_sentence_pairs_pack_with_segment_ids(tokenizer):
    examples = _Examples(
        texts=(("the movie", "a very very very good plot"),
               ("was bad", "the movie was bad")),
        labels=np.array([0, 1]),
    )  # fmt: skip
    t = pipeline.tokenize(examples, tokenizer, max_sequence_length=9)
    first = t.token_ids[: t.lengths[0]].tolist()
    assert first == [
        _CLS, _ID["the"], _ID["movie"], _SEP, _ID["was"], _ID["bad"], _SEP
    ]  # fmt: skip
    assert t.segment_ids[: t.lengths[0]].tolist() == [0, 0, 0, 0, 1, 1, 1]
    # The second pair is too long: round-robin truncation as in keras-hub.
    packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length=9, start_value=_CLS, end_value=_SEP, pad_value=_PAD
    )
    token_ids, segment_ids = packer(
        (tokenizer(tf.constant(examples.texts[0])),
         tokenizer(tf.constant(examples.texts[1])))
    )  # fmt: skip
    assert t.lengths[1] == 9
    np.testing.assert_array_equal(t.token_ids[7:], token_ids[1].numpy())
    np.testing.assert_array_equal(t.segment_ids[7:], segment_ids[1].numpy())


def test_tokenize_cache_round_trip_and_stale_cache(
    tokenizer, tmp_path, monkeypatch
):
    texts = _texts(30)
    path = str(tmp_path / "sub" / "tokens.npz")
    first = pipeline.tokenize(
        texts, tokenizer, max_sequence_length=16, labels=np.zeros(30, int),
        cache_path=path,
    )  # fmt: skip
    assert sorted(os.listdir(tmp_path / "sub")) == ["tokens.npz"]

    def no_tokenizing(*args):
        raise AssertionError("tokenized again despite a valid cache")

    with monkeypatch.context() as m:
        m.setattr(pipeline, "_tokenize_and_pack", no_tokenizing)
        loaded = pipeline.tokenize(
            texts, tokenizer, max_sequence_length=16,
            labels=np.zeros(30, int), cache_path=path,
        )  # fmt: skip
    for field in ("token_ids", "segment_ids", "lengths", "labels"):
        np.testing.assert_array_equal(
            getattr(loaded, field), getattr(first, field)
        )
    assert loaded.max_sequence_length == 16
    # Another max_sequence_length makes the cache stale: redo and overwrite.
    shorter = pipeline.tokenize(
        texts, tokenizer, max_sequence_length=4, labels=np.zeros(30, int),
        cache_path=path,
    )  # fmt: skip
    assert shorter.lengths.max() == 4
    with np.load(path, allow_pickle=False) as data:
        assert int(data["max_sequence_length"]) == 4
    # An unreadable file at the cache path is rebuilt, not trusted.
    with open(path, "wb") as f:
        f.write(b"not an npz file")
    rebuilt = pipeline.tokenize(
        texts, tokenizer, max_sequence_length=16, labels=np.zeros(30, int),
        cache_path=path,
    )  # fmt: skip
    np.testing.assert_array_equal(rebuilt.token_ids, first.token_ids)
    assert sorted(os.listdir(tmp_path / "sub")) == ["tokens.npz"]


@pytest.mark.parametrize(
    "examples, labels, message",
    [
        (["good", 3.5], None, "Text column 0 row 1: expected a string"),
        (["good", "bad"], [1], "`labels` must have one entry per text (2)"),
        # Float labels are regression targets; names are no labels yet.
        (["good", "bad"], ["pos", "neg"],
         "`labels` must be integer class ids or float targets"),
        ([], None, "holds no texts"),
        ((("a",), ("b",), ("c",)), None, "one text column, or two"),
    ],
)
def test_tokenize_rejects_bad_input_with_one_line_message(
    tokenizer, examples, labels, message
):
    with pytest.raises(ValueError, match=r"^[^\n]*$") as error:
        pipeline.tokenize(
            examples, tokenizer, max_sequence_length=8, labels=labels
        )
    assert message in str(error.value)


# --- choose_buckets ---------------------------------------------------------


def _brute_force_padding(lengths, max_sequence_length, max_buckets, m, batch):
    lengths = np.asarray(lengths)
    rounded = np.minimum(-(-lengths // m) * m, max_sequence_length)
    candidates = np.unique(rounded)
    best = None
    for k in range(1, max_buckets + 1):
        for chosen in itertools.combinations(candidates[:-1], k - 1):
            buckets = tuple(chosen) + (candidates[-1],)
            plan = pipeline.plan_batches(
                lengths, global_batch_size=batch, buckets=buckets,
                training=False,
            )  # fmt: skip
            cost = int(plan.batch_lengths.sum()) * batch - lengths.sum()
            if best is None or cost < best:
                best = cost
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_choose_buckets_is_optimal_and_well_formed(seed):
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.05, size=200) + 2, 100)
    buckets = pipeline.choose_buckets(
        lengths, max_sequence_length=100, max_buckets=3, global_batch_size=8
    )
    assert len(buckets) <= 3
    assert list(buckets) == sorted(set(buckets))
    assert buckets[-1] == min(-(-lengths.max() // 8) * 8, 100)
    assert all(b % 8 == 0 for b in buckets[:-1])
    plan = pipeline.plan_batches(
        lengths, global_batch_size=8, buckets=buckets, training=False
    )
    cost = int(plan.batch_lengths.sum()) * 8 - lengths.sum()
    assert cost == _brute_force_padding(lengths, 100, 3, 8, 8)
    again = pipeline.choose_buckets(
        lengths, max_sequence_length=100, max_buckets=3, global_batch_size=8
    )
    assert again == buckets


def test_choose_buckets_caps_at_max_sequence_length_and_drops_useless():
    assert pipeline.choose_buckets(
        [3, 4, 50, 60], max_sequence_length=60, max_buckets=4
    ) == (8, 56, 60)
    # With 64-row batches, a second bucket would only add filler rows.
    assert pipeline.choose_buckets(
        [3, 4, 50, 60], max_sequence_length=60, global_batch_size=64
    ) == (60,)


def test_choose_buckets_rejects_too_long_lengths():
    with pytest.raises(ValueError, match="Example 1 has 40 tokens"):
        pipeline.choose_buckets([5, 40], max_sequence_length=32)


# --- training batches -------------------------------------------------------


def test_training_batches_fixed_size_bucketed_and_cover_each_example_once():
    t = _tokenized(n=50)
    buckets = pipeline.choose_buckets(
        t.lengths, max_sequence_length=24, max_buckets=3, multiple_of=4
    )
    assert len(buckets) == 3
    steps = pipeline.steps_per_epoch(
        t.lengths, global_batch_size=8, buckets=buckets
    )
    dataset = pipeline.make_dataset(
        t, global_batch_size=8, buckets=buckets, training=True, seed=3
    )
    assert int(dataset.cardinality()) == steps
    assert dataset.element_spec[0]["token_ids"].shape.as_list() == [8, None]
    batches = _collect(dataset)
    assert len(batches) == steps
    seen = []
    for token_ids, segment_ids, mask, y, w in batches:
        length = token_ids.shape[1]
        assert token_ids.shape == segment_ids.shape == mask.shape == (8, length)
        assert length in buckets
        assert token_ids.dtype == mask.dtype == segment_ids.dtype == np.int32
        assert y.dtype == np.int32 and w.dtype == np.float32
        for row in range(8):
            if w[row] == 1.0:
                i = _example_of_row(t, token_ids[row], mask[row])
                seen.append(i)
                assert y[row] == t.labels[i]
                # The smallest bucket that fits.
                assert length == min(b for b in buckets if b >= t.lengths[i])
            else:
                assert w[row] == 0.0
                assert token_ids[row, :2].tolist() == [_CLS, _SEP]
                assert mask[row].tolist() == [1, 1] + [0] * (length - 2)
                assert (token_ids[row, 2:] == _PAD).all()
    assert sorted(seen) == list(range(50))
    assert sum(float(b[4].sum()) for b in batches) == 50.0


def test_training_order_deterministic_per_seed_and_differs_by_epoch():
    lengths = _tokenized(n=60).lengths
    kwargs = dict(global_batch_size=4, buckets=(8, 16, 24), training=True)

    def rows(seed, epoch):
        return pipeline.plan_batches(lengths, seed=seed, epoch=epoch, **kwargs)

    np.testing.assert_array_equal(rows(0, 0).rows, rows(0, 0).rows)
    assert not np.array_equal(rows(0, 0).rows, rows(0, 1).rows)
    assert not np.array_equal(rows(0, 0).rows, rows(1, 0).rows)
    counts = {rows(0, e).num_batches for e in range(4)}
    assert counts == {
        pipeline.steps_per_epoch(
            lengths, global_batch_size=4, buckets=(8, 16, 24)
        )
    }


def test_resume_at_epoch_and_batch_equals_tail_of_uninterrupted_run():
    t = _tokenized(n=40)
    kwargs = dict(global_batch_size=4, buckets=(8, 16, 24), training=True,
                  seed=7)  # fmt: skip
    steps = pipeline.steps_per_epoch(
        t.lengths, global_batch_size=4, buckets=(8, 16, 24)
    )
    full = _collect(pipeline.make_dataset(t, epoch=0, epochs=3, **kwargs))
    assert len(full) == 3 * steps
    resumed = _collect(
        pipeline.make_dataset(t, epoch=1, start_batch=5, epochs=2, **kwargs)
    )
    tail = full[steps + 5 :]
    assert len(resumed) == len(tail)
    for got, want in zip(resumed, tail):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    # Chained epochs are the single epochs back to back.
    second = _collect(pipeline.make_dataset(t, epoch=1, **kwargs))
    for got, want in zip(second, full[steps : 2 * steps]):
        np.testing.assert_array_equal(got[0], want[0])


def test_worker_slices_union_is_the_global_batch():
    t = _tokenized(n=30)
    kwargs = dict(global_batch_size=6, buckets=(8, 16, 24), training=True,
                  seed=1, epoch=2)  # fmt: skip
    whole = _collect(pipeline.make_dataset(t, **kwargs))
    parts = [
        _collect(
            pipeline.make_dataset(t, num_workers=3, worker_index=w, **kwargs)
        )
        for w in range(3)
    ]
    assert all(len(p) == len(whole) for p in parts)
    for step, want in enumerate(whole):
        for field, full_field in enumerate(want):
            joined = np.concatenate([p[step][field] for p in parts])
            np.testing.assert_array_equal(joined, full_field)
        assert parts[0][step][0].shape[0] == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(global_batch_size=8, num_workers=3),
         r"`global_batch_size` \(8\) must be a multiple of num_workers \(3\)"),
        (dict(global_batch_size=8, num_workers=2, worker_index=2),
         r"`worker_index` must be in \[0, 2\)"),
        (dict(global_batch_size=8, start_batch=1000),
         r"`start_batch` must be in \[0, "),
        (dict(global_batch_size=8, buckets=(8, 12)),
         r"more than the largest bucket 12"),
    ],
)  # fmt: skip
def test_make_dataset_rejects_bad_arguments(kwargs, message):
    t = _tokenized(n=20)
    kwargs = {"buckets": (8, 16, 24), "training": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipeline.make_dataset(t, **kwargs)


# --- evaluation -------------------------------------------------------------


def test_evaluation_keeps_every_example_and_restores_input_order():
    t = _tokenized(n=37)
    buckets = (8, 16, 24)
    dataset = pipeline.make_dataset(
        t, global_batch_size=8, buckets=buckets, training=False
    )
    plan = pipeline.plan_batches(
        t.lengths, global_batch_size=8, buckets=buckets, training=False
    )
    batches = _collect(dataset)
    assert len(batches) == plan.num_batches
    assert sum(float(b[4].sum()) for b in batches) == 37.0
    # A stand-in "prediction": the number of real tokens of each row.
    outputs = [b[2].sum(axis=1) for b in batches]
    restored = pipeline.restore_order(outputs, plan)
    np.testing.assert_array_equal(restored, t.lengths)
    with pytest.raises(ValueError, match="Expected 48 output rows"):
        pipeline.restore_order(np.zeros(40), plan)


def test_bucketed_predictions_equal_pad_to_max_predictions():
    t = _tokenized(n=12, max_sequence_length=24)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(_VOCAB), num_layers=2, num_heads=2,
        hidden_dim=4, intermediate_dim=8, max_sequence_length=24,
    )  # fmt: skip
    model = keras_hub.models.BertTextClassifier(
        backbone, num_classes=3, preprocessor=None
    )
    buckets = (8, 16, 24)
    dataset = pipeline.make_dataset(
        t, global_batch_size=4, buckets=buckets, training=False
    )
    plan = pipeline.plan_batches(
        t.lengths, global_batch_size=4, buckets=buckets, training=False
    )
    bucketed = pipeline.restore_order(model.predict(dataset, verbose=0), plan)
    reference = pipeline.make_dataset(
        t, global_batch_size=4, buckets=(24,), training=False
    )
    reference_plan = pipeline.plan_batches(
        t.lengths, global_batch_size=4, buckets=(24,), training=False
    )
    padded = pipeline.restore_order(
        model.predict(reference, verbose=0), reference_plan
    )
    np.testing.assert_allclose(bucketed, padded, atol=1e-5)
    # An int32 mask trains under keras fit, fillers included.
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


# --- padding ----------------------------------------------------------------


def test_padding_fraction_on_skewed_lengths_is_far_below_pad_to_max():
    # Mostly short texts with a long tail to the limit (mean 29, max 128).
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.geometric(0.04, size=2000) + 4, 128)
    baseline = pipeline.padding_fraction(lengths, sequence_length=128)
    fractions = []
    for max_buckets in (1, 2, 4, 8):
        buckets = pipeline.choose_buckets(
            lengths, max_sequence_length=128, max_buckets=max_buckets,
            global_batch_size=32,
        )  # fmt: skip
        plan = pipeline.plan_batches(
            lengths, global_batch_size=32, buckets=buckets, training=True
        )
        fractions.append(pipeline.padding_fraction(lengths, plan))
        # By hand: every position of every batch minus the real tokens.
        seen = int(plan.batch_lengths.sum()) * 32
        assert fractions[-1] == pytest.approx(1 - lengths.sum() / seen)
    assert baseline > 0.75
    # One bucket is pad-to-max plus the fillers of the last batch.
    assert fractions[0] == pytest.approx(baseline, abs=0.01)
    assert fractions == sorted(fractions, reverse=True)
    assert fractions[2] < baseline / 2  # the default, 4 buckets
    assert fractions[3] < 0.25


def test_docstring_examples_run():
    result = doctest.testmod(
        pipeline,
        extraglobs={"np": np, "keras_hub": keras_hub, "keras": keras},
        optionflags=doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted > 10 and result.failed == 0
