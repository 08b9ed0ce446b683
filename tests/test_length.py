"""The sequence length chosen from the data, and the head+tail cut."""

import doctest
import json

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import families
import tiny
from painless_tf import hardware
from painless_tf import packing
from painless_tf import pipeline
from painless_tf import run
from painless_tf import truncation
from painless_tf.export import saved_model
from painless_tf.export import tflite_graph
from painless_tf.plan import Plan
from painless_tf.plan import PlanError
from painless_tf.plan import choose_length
from painless_tf.plan import length_choice
from painless_tf.plan import make_plan

_HEAD_TAIL = truncation.Truncation("head+tail", head=2)


def _cost(lengths, length, hidden=768):
    """The documented compute estimate: n * (6 * hidden + n) per text."""
    n = np.minimum(np.asarray(lengths, np.float64), length)
    return float(np.sum(n * (6 * hidden + n)))


# --- the length rule --------------------------------------------------------


def test_short_texts_get_a_short_length():
    lengths = np.random.default_rng(0).integers(6, 14, 1000)  # 6..13 tokens
    choice = choose_length("auto", lengths, model_limit=512)
    assert choice.max_sequence_length == 16
    assert choice.reasons["max_sequence_length"].startswith(
        "covers 100.0% of training texts (0 of 1000 truncated, head+tail); "
        "the shortest multiple of 8 holding 99% of them")
    assert choice.reasons["max_sequence_length"].endswith("model limit 512")


def test_long_texts_are_capped_at_the_model_limit():
    lengths = np.random.default_rng(1).integers(300, 900, 1000)
    choice = choose_length("auto", lengths, model_limit=512)
    assert choice.max_sequence_length == 512
    count = int(np.sum(lengths > 512))
    assert 0 < count < 1000
    assert (f"({count} of 1000 truncated, head+tail)"
            in choice.reasons["max_sequence_length"])
    assert "capped: model limit 512" in choice.reasons["max_sequence_length"]
    # Sun et al.'s split at 512: head 128, tail 382.
    assert (choice.truncation, choice.truncation_head,
            choice.truncation_tail) == ("head+tail", 128, 382)


def test_a_longer_length_only_while_its_compute_is_worth_it():
    # 99% hold 50 tokens: 56 is the 99% length; the 1% of 500-token texts
    # may grow while an epoch's compute grows by at most 5%.
    lengths = np.array([50] * 990 + [500] * 10)
    choice = choose_length("auto", lengths, model_limit=512)
    length = choice.max_sequence_length
    assert length % 8 == 0 and 56 < length < 500
    assert _cost(lengths, length) <= 1.05 * _cost(lengths, 56)
    assert _cost(lengths, length + 8) > 1.05 * _cost(lengths, 56)
    assert "(10 of 1000 truncated, head+tail)" in (
        choice.reasons["max_sequence_length"])
    # A larger model makes each extra token dearer: the length stays shorter.
    wide = choose_length("auto", lengths, model_limit=512, hidden_dim=4096)
    assert wide.max_sequence_length >= length
    # 2% of long texts: the 99% length is theirs, and it covers them.
    two = choose_length("auto", np.array([50] * 980 + [300] * 20),
                        model_limit=512)
    assert two.max_sequence_length == 304


def test_the_length_set_by_user_says_what_it_truncates():
    lengths = np.array([10] * 90 + [100] * 10)
    choice = choose_length(64, lengths, model_limit=512)
    assert choice.max_sequence_length == 64
    assert choice.reasons["max_sequence_length"] == (
        "set by user; covers 90.0% of training texts (10 of 100 truncated, "
        "head+tail); model limit 512")
    with pytest.raises(PlanError, match=r"^[^\n]*$") as error:
        choose_length(600, lengths, model_limit=512)
    assert "--max_sequence_length=512 or less" in str(error.value)


def test_the_truncation_flag_and_sentence_pairs():
    lengths = [40] * 10
    head = choose_length(32, lengths, truncation="head")
    assert (head.truncation, head.truncation_head, head.truncation_tail) == (
        "head", 0, 0)
    assert head.reasons["truncation"].startswith("set by user")
    pairs = choose_length(32, lengths, num_text_columns=2,
                          num_special_tokens=3)
    assert pairs.truncation == "round_robin"
    assert "round robin" in pairs.reasons["truncation"]
    with pytest.raises(PlanError, match="Pass --truncation=auto"):
        choose_length(32, lengths, truncation="head+tail", num_text_columns=2)
    with pytest.raises(PlanError, match="--truncation='tail' is not one of"):
        choose_length(32, lengths, truncation="tail")


def test_the_plan_records_the_cut_and_reads_older_plans_as_head():
    choice = choose_length("auto", [20] * 50 + [300], model_limit=64)
    plan = make_plan(environment=hardware.Environment(),
                     num_train_examples=51, precision="float32",
                     length_choice=choice)
    assert plan.max_sequence_length == choice.max_sequence_length == 64
    assert (plan.truncation, plan.truncation_head,
            plan.truncation_tail) == ("head+tail", 16, 46)
    assert plan.reasons["max_sequence_length"] == (
        choice.reasons["max_sequence_length"])
    values = plan.to_dict()
    assert Plan.from_dict(values) == plan
    older = {k: v for k, v in values.items() if not k.startswith("truncation")}
    assert truncation.Truncation.of_plan(Plan.from_dict(older)) == (
        truncation.Truncation("head"))
    with pytest.raises(PlanError, match="leave no room"):
        Plan.from_dict({**values, "truncation_tail": 48})


# --- the cut ----------------------------------------------------------------


def test_cut_keeps_head_and_tail_of_longer_rows_only():
    rows = tf.ragged.constant([list(range(1, 11)), [1, 2, 3], []])
    assert truncation.cut(rows, budget=6, head=2).to_list() == [
        [1, 2, 7, 8, 9, 10], [1, 2, 3], []]
    assert truncation.cut(rows, budget=4, head=0).to_list()[0] == [
        7, 8, 9, 10]
    assert truncation.cut(rows, budget=4, head=9).to_list()[0] == [
        1, 2, 3, 4]


def test_wordpiece_head_and_tail_by_hand():
    tokenizer = tiny.tiny_tokenizer()
    words = ("the a good bad movie film great awful fun dull plot acting"
             ).split()
    ids = [tiny.VOCAB.index(w) for w in words]
    cls, sep = tiny.VOCAB.index("[CLS]"), tiny.VOCAB.index("[SEP]")
    # L = 8: 6 text tokens, head round(8 / 4) = 2, tail 4.
    t = pipeline.tokenize([" ".join(words), "fun plot"], tokenizer,
                          max_sequence_length=8, truncation=_HEAD_TAIL)
    assert t.token_ids[:8].tolist() == [cls, *ids[:2], *ids[-4:], sep]
    assert t.lengths.tolist() == [8, 4]
    assert t.full_lengths.tolist() == [14, 4]
    head = pipeline.tokenize([" ".join(words)], tokenizer,
                             max_sequence_length=8)
    assert head.token_ids.tolist() == [cls, *ids[:6], sep]


@pytest.mark.parametrize("family", ["albert", "roberta"])
def test_sentencepiece_and_bpe_head_and_tail(family):
    tokenizer = families.make_tokenizer(family)
    text = " ".join(families.corpus()[:6])
    pieces = tokenizer(tf.constant([text]))
    pieces = list(pieces.to_list() if hasattr(pieces, "to_list")
                  else pieces)[0]
    assert len(pieces) > 12
    t = pipeline.tokenize([text], tokenizer, max_sequence_length=12,
                          truncation=truncation.Truncation("head+tail", 3))
    assert t.token_ids.tolist() == [
        tokenizer.start_token_id, *pieces[:3], *pieces[-7:],
        tokenizer.end_token_id]
    assert t.full_lengths.tolist() == [len(pieces) + 2]


def test_sentence_pairs_are_packed_as_keras_hub_does():
    tokenizer = tiny.tiny_tokenizer()
    pairs = (["the good movie was fun", "bad"],
             ["a dull plot and awful acting the worst", "great"])
    cut = pipeline.tokenize(pairs, tokenizer, max_sequence_length=9,
                            truncation=_HEAD_TAIL)
    packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length=9, start_value=2, end_value=3, pad_value=0)
    token_ids, _ = packer(tuple(tokenizer(tf.constant(c)) for c in pairs))
    expected = [row[row != 0].tolist() for row in token_ids.numpy()]
    assert cut.token_ids.tolist() == expected[0] + expected[1]


@pytest.mark.parametrize("columns", [1, 2])
def test_packing_once_tokenized_equals_tokenizing_at_the_length(columns):
    tokenizer = tiny.tiny_tokenizer()
    texts = [text for text, _ in tiny.sentiment_rows(40)]
    long = " ".join(texts[:8])
    examples = (texts + [long],) if columns == 1 else (
        texts + [long], [long] + texts)
    tokens = packing.tokenize_texts(examples, tokenizer, keep=32)
    for length, cut in ((7, _HEAD_TAIL), (32, _HEAD_TAIL), (9, None)):
        once = pipeline.from_text_tokens(
            tokens, tokenizer, max_sequence_length=length, truncation=cut)
        direct = pipeline.tokenize(examples, tokenizer,
                                   max_sequence_length=length, truncation=cut)
        for field in ("token_ids", "segment_ids", "lengths", "full_lengths"):
            np.testing.assert_array_equal(getattr(once, field),
                                          getattr(direct, field))


def test_the_cache_tells_the_cuts_apart(tmp_path):
    tokenizer = tiny.tiny_tokenizer()
    texts = ["the a good bad movie film great awful fun dull plot acting"]
    path = str(tmp_path / "tokens.npz")
    head = pipeline.tokenize(texts, tokenizer, max_sequence_length=8,
                             cache_path=path)
    both = pipeline.tokenize(texts, tokenizer, max_sequence_length=8,
                             truncation=_HEAD_TAIL, cache_path=path)
    assert head.token_ids.tolist() != both.token_ids.tolist()
    again = pipeline.tokenize(texts, tokenizer, max_sequence_length=8,
                              truncation=_HEAD_TAIL, cache_path=path)
    assert again.token_ids.tolist() == both.token_ids.tolist()
    assert again.full_lengths.tolist() == [14]


# --- the run and its readers ------------------------------------------------


def _config(tmp_path, rows, **overrides):
    preset = tiny.write_preset(tmp_path / "preset", seq=64)
    train = tiny.write_csv(tmp_path / "train.csv", rows)
    return run.RunConfig(
        model=str(preset), train_data=train, epochs=1, global_batch_size=8,
        precision="float32", learning_rate=0.01, lr_range_test_steps=0,
        model_dir=str(tmp_path / "run"), **overrides)


def test_prepare_chooses_the_length_from_the_training_texts(tmp_path):
    rows = tiny.sentiment_rows(60)  # 2..11 words: at most 13 tokens
    prepared = run.prepare(_config(tmp_path, rows),
                           environment=hardware.Environment())
    plan = prepared.plan
    assert plan.max_sequence_length == 16  # not the model's 64
    assert plan.truncation == "head+tail"
    num_train = len(prepared.splits.train)
    assert f"(0 of {num_train} truncated, head+tail)" in (
        plan.reasons["max_sequence_length"])
    assert "model limit 64" in plan.reasons["max_sequence_length"]
    assert int(prepared.tokenized["train"].lengths.max()) <= 16
    # Set by user: the length wins, and the reason counts what it cuts.
    short = run.prepare(_config(tmp_path, rows, max_sequence_length=8),
                        environment=hardware.Environment())
    count = int(np.sum(short.tokenized["train"].full_lengths > 8))
    assert count > 0
    assert short.plan.max_sequence_length == 8
    assert short.plan.reasons["max_sequence_length"].startswith(
        "set by user; covers")
    assert f"({count} of {num_train} truncated, head+tail)" in (
        short.plan.reasons["max_sequence_length"])


def test_every_reader_cuts_as_the_plan_says(tmp_path):
    """The Keras predictor, the SavedModel and the .tflite graph's tokens
    of a long text equal the training pipeline's head+tail ids."""
    from painless_tf import data as data_lib
    from painless_tf import export

    model_dir = tmp_path / "run"
    tiny.write_preset(model_dir / "model", seq=16)
    data_lib.LabelVocab(["neg", "pos"]).to_json(str(model_dir / "labels.json"))
    choice = choose_length("auto", [30], model_limit=16)
    make_plan(environment=hardware.Environment(), num_train_examples=1,
              precision="float32", length_choice=choice).to_json(
                  str(model_dir / "plan.json"))
    assert (choice.truncation_head, choice.truncation_tail) == (4, 10)
    words = "the a good bad movie film great awful fun dull plot acting"
    text = " ".join([words, words, "love hate best worst"])
    cut = truncation.recorded(str(model_dir))
    assert cut == truncation.Truncation("head+tail", 4)
    tokenized = pipeline.tokenize([text], tiny.tiny_tokenizer(),
                                  max_sequence_length=16, truncation=cut)
    ids = [tiny.VOCAB.index(w) for w in text.split()]
    assert tokenized.token_ids.tolist() == [2, *ids[:4], *ids[-10:], 3]
    x = {"token_ids": tokenized.token_ids[None, :],
         "segment_ids": np.zeros((1, 16), np.int32),
         "padding_mask": np.ones((1, 16), np.int32)}

    classifier, vocab = export.reading._load_model_dir(str(model_dir))
    expected = tf.nn.softmax(classifier(x, training=False)).numpy()
    predicted, _ = export.load_predictor(str(model_dir))([text])
    np.testing.assert_allclose(predicted, expected, atol=1e-6)
    # The predictor's inputs are the pipeline's ids, eager and in a graph
    # (a random tiny model's probabilities barely depend on the ids; the
    # trained run of test_apps.py shows that the cut decides the label).
    preprocess = lambda texts: saved_model._preprocess(  # noqa: E731
        classifier.preprocessor, [texts])["token_ids"]
    texts = tf.constant([text])
    assert preprocess(texts).numpy().tolist() == [tokenized.token_ids.tolist()]
    assert tf.function(preprocess)(texts).numpy().tolist() == [
        tokenized.token_ids.tolist()]

    path = str(tmp_path / "saved_model")
    saved_model._write_saved_model(classifier, vocab, 1, path)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    np.testing.assert_allclose(
        serve(text=tf.constant([text]))["probabilities"].numpy(), expected,
        atol=1e-5)
    graph = tflite_graph._tflite_tokenize_fn(classifier, 1)(
        tf.constant([text, "good fun"]))
    assert graph["token_ids"].numpy()[0].tolist() == (
        tokenized.token_ids.tolist())
    assert graph["token_ids"].numpy()[1].tolist()[:4] == [
        2, tiny.VOCAB.index("good"), tiny.VOCAB.index("fun"), 3]
    with open(model_dir / "plan.json") as f:
        assert json.load(f)["truncation"] == "head+tail"


@pytest.mark.parametrize("module", [truncation, packing, length_choice])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
