"""Every keras-hub text classifier family, end to end through the apps.

Per family (tiny random presets from `families.py`): the pipeline packs
texts and sentence pairs exactly as the family's own keras-hub
preprocessor does; `apps.finetune` trains it with no family-specific flag;
`apps.evaluate` and `apps.predict` read the model dir it wrote and agree
with the run's own predictions.
"""

import csv
import json
import os
import subprocess
import sys

import keras_hub
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

import families
import tiny
from apps import finetune
from painless_tf import data
from painless_tf import export
from painless_tf import models
from painless_tf import pipeline
from painless_tf import run
from painless_tf.engine import Trainer

FLAGS = flags.FLAGS
FLAGS.mark_as_parsed()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Padding changes these models' outputs (measured by `models.describe`).
FIXED_LENGTH = {"f_net", "roformer_v2"}
TEXTS = ["The film was GOOD, and fun!", "dull plot", "Café crème: smart.",
         "worst acting ever made, boring and loud and dull and awful", "a"]
PAIRS = ["a great story", "I hate it? Great movie.", "", "bad", "fun fun"]


def _app(module, *args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True, text=True, timeout=300, input=stdin,
    )


@pytest.mark.parametrize("family", families.FAMILIES)
def test_pipeline_packs_like_the_family_preprocessor(family):
    tokenizer = families.make_tokenizer(family)
    preprocessor = pipeline._preprocessor_class(type(tokenizer))(
        tokenizer=tokenizer, sequence_length=12)
    assert preprocessor.tokenizer_cls is type(tokenizer)
    for columns in ((TEXTS,), (TEXTS, PAIRS)):
        packed = pipeline.tokenize(columns, tokenizer, max_sequence_length=12)
        theirs = preprocessor(x=columns[0] if len(columns) == 1
                              else tuple(columns))
        token_ids = np.asarray(theirs["token_ids"])
        for row, (offset, length) in enumerate(
                zip(packed.offsets, packed.lengths)):
            ours = packed.token_ids[offset:offset + length]
            np.testing.assert_array_equal(ours, token_ids[row, :length])
            assert np.all(token_ids[row, length:] == tokenizer.pad_token_id)
            if "segment_ids" in theirs:
                np.testing.assert_array_equal(
                    packed.segment_ids[offset:offset + length],
                    np.asarray(theirs["segment_ids"])[row, :length])
        if len(columns) == 2:
            # The family's own special tokens: RoBERTa and XLM-R separate
            # the texts of a pair with two </s>.
            ids = packed.token_ids[:packed.lengths[0]].tolist()
            end = tokenizer.end_token_id
            assert ids[0] == tokenizer.start_token_id and ids[-1] == end
            assert ids.count(end) == (
                3 if family in ("roberta", "xlm_roberta") else 2)


@pytest.mark.parametrize("family", families.FAMILIES)
def test_batches_of_several_lengths_train_every_family_on_one_trace(
        family, tmp_path, monkeypatch):
    # The LR range test's path: train_on_batch / test_on_batch on batches of
    # new lengths, traced once for any length (`engine._any_length`).
    from painless_tf import trainers

    traced = []
    real = Trainer._replica_train_step
    monkeypatch.setattr(
        Trainer, "_replica_train_step",
        lambda self, batch: traced.append(1) or real(self, batch))
    folder = families.write_preset(family, tmp_path / family)
    trainer = trainers.make_trainer(
        models.load_classifier(str(folder), num_classes=2),
        learning_rate=1e-3)
    rng = np.random.default_rng(0)
    for seq in (8, 12, families.SEQUENCE_LENGTH):
        x = {"token_ids": rng.integers(5, 20, (4, seq)).astype("int32"),
             "padding_mask": np.ones((4, seq), bool),
             "segment_ids": np.zeros((4, seq), "int32")}
        y = np.array([0, 1, 0, 1])
        logs = trainer.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["loss"])
        assert np.isfinite(trainer.test_on_batch(x, y, return_dict=True)[
            "loss"])
    assert len(traced) == 1


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    os.environ["PAINLESS_TF_CACHE"] = str(root / "cache")
    train = tiny.write_csv(root / "train.csv", tiny.sentiment_rows(160))
    return root, train


@pytest.fixture(scope="module", params=families.FAMILIES)
def family_run(request, data_files):
    """One fine-tuning run per family, shared by the tests below."""
    family = request.param
    root, train = data_files
    preset = families.write_preset(family, root / f"preset_{family}")
    model_dir = str(root / f"run_{family}")
    with flagsaver.as_parsed(
        model=preset, train_data=train, model_dir=model_dir, epochs="2",
        learning_rate="0.02", lr_range_test_steps="0", precision="float32",
        global_batch_size="16",
    ):
        finetune.main([])
    with open(os.path.join(model_dir, "run.json")) as f:
        recorded = json.load(f)
    recorded.pop("model_dir")
    splits = run.load_data(run.RunConfig(
        **{k: tuple(v) if isinstance(v, list) else v
           for k, v in recorded.items()}))
    test_csv = root / f"test_{family}.csv"
    vocab = splits.vocab
    tiny.write_csv(test_csv, [
        (text, vocab.names[label])
        for text, label in zip(splits.test.texts[0], splits.test.labels)])
    return family, model_dir, str(test_csv), splits


def test_finetune_trains_every_family(family_run):
    family, model_dir, _, _ = family_run
    with open(os.path.join(model_dir, "model", "task.json")) as f:
        task = json.load(f)
    assert task["class_name"] == {
        "bert": "BertTextClassifier", "distil_bert": "DistilBertTextClassifier",
        "roformer_v2": "RoformerV2TextClassifier",
        "albert": "AlbertTextClassifier", "f_net": "FNetTextClassifier",
        "deberta_v3": "DebertaV3TextClassifier",
        "xlm_roberta": "XLMRobertaTextClassifier",
        "roberta": "RobertaTextClassifier"}[family]
    with open(os.path.join(model_dir, "plan.json")) as f:
        plan = json.load(f)
    if family in FIXED_LENGTH:
        assert plan["bucket_boundaries"] == [plan["max_sequence_length"]]
    else:
        assert len(plan["bucket_boundaries"]) >= 1
        assert plan["bucket_boundaries"][-1] <= plan["max_sequence_length"]
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert np.isfinite(metrics["test_accuracy"])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


def test_evaluate_and_predict_agree_with_the_run(family_run):
    family, model_dir, test_csv, splits = family_run
    with open(os.path.join(model_dir, "metrics.json")) as f:
        run_accuracy = json.load(f)["test_accuracy"]
    output = os.path.join(os.path.dirname(model_dir), f"eval_{family}.json")
    result = _app("apps.evaluate", f"--model_dir={model_dir}",
                  f"--data={test_csv}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(output) as f:
        evaluation = json.load(f)
    # The keras-hub preprocessor (apps) and the bucketed pipeline (the run)
    # classify the test split alike.
    assert evaluation["num_examples"] == len(splits.test)
    assert evaluation["accuracy"] == pytest.approx(run_accuracy, abs=1e-9)

    texts = list(splits.test.texts[0][:6])
    result = _app("apps.predict", f"--model_dir={model_dir}",
                  stdin="\n".join(texts) + "\n")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == texts
    expected, names = export.load_predictor(model_dir)(texts)
    got = np.array([[r["probabilities"][n] for n in names] for r in rows])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert [r["label"] for r in rows] == [names[i] for i in
                                          expected.argmax(axis=-1)]


@pytest.mark.parametrize("damage", ["labels", "head_weights", "task_json"])
def test_predict_refuses_a_broken_model_dir(tmp_path, damage):
    broken = tmp_path / "broken"
    tiny.write_preset(broken / "model", num_classes=2)
    data.LabelVocab(["neg", "pos"]).to_json(str(broken / "labels.json"))
    export.load_predictor(str(broken))  # intact: loads
    if damage == "labels":
        data.LabelVocab(["neg", "pos", "meh"]).to_json(
            str(broken / "labels.json"))
        expected = "lists 3 classes but the model's head"
    elif damage == "head_weights":
        os.remove(broken / "model" / "task.weights.h5")
        expected = "task.weights.h5 not found"
    else:
        os.remove(broken / "model" / "task.json")
        expected = "task.json not found"
    with pytest.raises(export.ExportError, match=expected):
        export.load_predictor(str(broken))
    if damage == "labels":
        # The apps say it in one line, exit 2 and print no prediction.
        result = _app("apps.predict", f"--model_dir={broken}", stdin="good\n")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr[-2000:]
        assert lines[-1].startswith("error: ") and expected in lines[-1]
        assert result.stdout == ""


def test_sentence_pairs_end_to_end(data_files):
    """RoBERTa (`</s></s>` between the texts) on pairs: evaluate finds the
    text columns in run.json, predict reads TAB-separated pairs."""
    root, _ = data_files
    rows = tiny.sentiment_rows(160, seed=3)
    others = tiny.sentiment_rows(160, seed=4)
    train = root / "pairs.csv"
    with open(train, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["premise", "hypothesis", "label"])
        writer.writerows((a, b, label) for (a, label), (b, _)
                         in zip(rows, others))
    preset = families.write_preset("roberta", root / "preset_pairs")
    model_dir = str(root / "run_pairs")
    with flagsaver.as_parsed(
        model=preset, train_data=str(train), model_dir=model_dir,
        text_columns="premise,hypothesis", epochs="1",
        lr_range_test_steps="0", precision="float32", global_batch_size="16",
    ):
        finetune.main([])
    assert export.recorded_text_columns(model_dir) == ["premise",
                                                       "hypothesis"]
    output = root / "eval_pairs.json"
    result = _app("apps.evaluate", f"--model_dir={model_dir}",
                  f"--data={train}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(output) as f:
        assert json.load(f)["num_examples"] == 160
    predictor = export.load_predictor(model_dir)
    assert predictor.num_text_columns == 2
    expected, _ = predictor(["good fun"], ["bad plot"])
    assert expected.shape == (1, 2) and np.isfinite(expected).all()


def test_unknown_tokenizer_is_one_line():
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=tiny.VOCAB)
    with pytest.raises(ValueError, match="WordPieceTokenizer.*start_token_id"):
        pipeline.tokenize(["a"], tokenizer, max_sequence_length=8)


# How far each artifact's probabilities may be from the Keras model's on
# the rows both tokenize alike: float round-off for the float32 graphs;
# the quantization error of a tiny random model for the others.
_TOLERANCE = {
    "saved_model": 1e-4, "tflite_float32": 1e-4, "tflite_float16": 1e-2,
    "tflite_dynamic_int8": 5e-2, "tflite_int8": 5e-2,
}
_EXPORT_FORMATS = ("saved_model", "tflite_float32", "tflite_float16",
                   "tflite_dynamic_int8", "tflite_int8")


@pytest.mark.slow
@pytest.mark.parametrize("family", families.FAMILIES)
def test_export_every_family(family, tmp_path):
    # XLM-R also covers pairs: its </s></s> between the texts.
    pairs = family == "xlm_roberta"
    model_dir = tmp_path / "run"
    families.write_preset(family, model_dir / "model")
    data.LabelVocab(["neg", "pos"]).to_json(str(model_dir / "labels.json"))
    texts = tuple(families.corpus()[-4:] + [t for t, _ in
                                            tiny.sentiment_rows(12, seed=7)])
    columns = (texts, tuple(reversed(texts))) if pairs else (texts,)
    examples = data.Examples(texts=columns, labels=[0, 1] * 8,
                             lines=tuple(range(2, 18)), source="inline")
    report = export.export_model(
        str(model_dir), test=examples, representative=examples,
        num_text_columns=len(columns),
        options=export.ExportOptions(formats=_EXPORT_FORMATS,
                                     latency_calls=3))
    rows = report["artifacts"]
    metadata = json.loads(
        (model_dir / "export" / export.METADATA_FILE).read_text())
    if family == "roberta":
        # Byte-level BPE has no TFLite kernel: the .tflite files take token
        # ids, packed by the tokenizer files exported beside them.
        assert report["skipped"] == {}
        assert set(rows) == {"keras", *_EXPORT_FORMATS}
        assert metadata["tflite_tokenizer"]["inputs"] == "token_ids"
        assert sorted(os.listdir(model_dir / "export" / "tokenizer" / "assets"
                                 / "tokenizer")) == ["merges.txt",
                                                     "vocabulary.json"]
    elif family == "f_net":
        # Its Fourier transform needs complex numbers, which TFLite has no
        # builtin kernels for: the SavedModel only, and the report says why.
        assert set(rows) == {"keras", "saved_model"}
        for name in _EXPORT_FORMATS[1:]:
            assert "op" in report["skipped"][name], report["skipped"]
        assert "Complex" in report["skipped"]["tflite_float32"]
    else:
        assert report["skipped"] == {}
        assert set(rows) == {"keras", *_EXPORT_FORMATS}
    for name, row in rows.items():
        if name == "keras":
            continue
        if name in export.TFLITE_FILES:
            # The TFLite tokenizer gives keras-hub's ids on every text.
            assert row["tokenization_agreement"] == 1.0, (name, row)
        assert row["max_abs_prob_diff"] <= _TOLERANCE[name], (name, row)
    # Every kept artifact loads on its own and agrees on new texts.
    new = ["good fun film", "The worst, the DULLEST!"]
    new_pairs = ["bad", "a café"] if pairs else None
    reference, _ = export.load_predictor(
        str(model_dir), num_text_columns=len(columns))(new, new_pairs)
    for name, file in _exported(model_dir).items():
        got, _ = export.load_predictor(
            str(model_dir / "export" / file))(new, new_pairs)
        np.testing.assert_allclose(got, reference, atol=_TOLERANCE[name])


def _exported(model_dir):
    with open(model_dir / "export" / export.METADATA_FILE) as f:
        return json.load(f)["artifacts"]


def test_the_trainer_feeds_a_model_only_its_own_inputs(tmp_path):
    """RoFormer-v2 takes no padding mask. The pipeline's batches have one,
    and Keras matches a larger dict by position (sorted keys), which would
    read the padding mask as segment ids; the Trainer drops the extra key."""
    preset = families.write_preset("roformer_v2", tmp_path / "preset")
    classifier = models.load_classifier(preset, num_classes=2)
    assert "padding_mask" not in classifier.input
    x, _, _ = tiny.token_batch(4, seq=16)
    x["segment_ids"] = x["segment_ids"] + 1 - x["padding_mask"]  # not all 0
    expected = classifier({k: x[k] for k in classifier.input}, training=False)
    got = Trainer(classifier)(x, training=False)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # The whole batch fed to the model itself gives other outputs.
    shifted = classifier(x, training=False)
    assert not np.allclose(shifted, expected, atol=1e-6)

