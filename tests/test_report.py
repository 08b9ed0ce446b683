"""Tests for painless_tf.evaluation and painless_tf.report.

Claims:
- the classification report equals a hand count (zero divisions are 0);
- report.html from a tiny run's model directory parses as HTML, embeds one
  PNG per expected plot, and every number of metrics.json appears in it
  unchanged; the per-class table equals the evaluation;
- missing files give notes, not errors; writes are atomic.
"""

import base64
import doctest
import html.parser
import json
import os

import keras
import keras_hub
import numpy as np
import pytest

import tiny
from painless_tf import monitoring as cb
from painless_tf import evaluation as ev
from painless_tf import flops, models, pipeline, report
from painless_tf.data import LabelVocab
from painless_tf.engine import Trainer
from painless_tf.hardware import Environment
from painless_tf.plan import make_plan

LABELS = ["awful", "fine", "great"]
GLOBAL_BATCH = 4
EPOCHS = 2
PEAK = 1e9  # FLOP/s


class _Page(html.parser.HTMLParser):
    """Collects images and data-key cells; checks that tags nest."""

    VOID = {"meta", "img", "br", "hr", "input", "link"}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.values, self.text = [], [], {}, []
        self._key = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if "data-key" in attrs:
            self.values[attrs["data-key"]] = attrs["data-value"]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (self.stack[-3:], tag)
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(path):
    page = _Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    page.close()
    assert page.stack == []
    return page


def tiny_texts(n, seed):
    rng = np.random.default_rng(seed)
    words = tiny.VOCAB[5:]
    texts = [" ".join(rng.choice(words, rng.integers(1, 11))) for _ in range(n)]
    return texts, rng.integers(0, len(LABELS), n).astype(np.int32)


def make_model_dir(model_dir):
    """A model directory as apps/finetune.py writes it, from a tiny run."""
    tokenizer = tiny.tiny_tokenizer()
    train, validation, test = (
        pipeline.tokenize(texts, tokenizer, max_sequence_length=16,
                          labels=labels)
        for texts, labels in (tiny_texts(20, 0), tiny_texts(8, 1),
                              tiny_texts(12, 2))
    )
    buckets = pipeline.choose_buckets(train.lengths, max_sequence_length=16,
                                      max_buckets=2,
                                      global_batch_size=GLOBAL_BATCH)
    steps = pipeline.steps_per_epoch(train.lengths,
                                     global_batch_size=GLOBAL_BATCH,
                                     buckets=buckets)
    plan = make_plan(
        environment=Environment(memory_bytes=8 * 2**30),
        num_train_examples=train.num_examples, epochs=EPOCHS,
        global_batch_size=GLOBAL_BATCH, precision="float32", xla=False,
        max_sequence_length=16, bucket_boundaries=buckets,
        steps_per_epoch=steps,
    )
    stats = cb.step_stats(
        [pipeline.plan_batches(train.lengths, global_batch_size=GLOBAL_BATCH,
                               buckets=buckets, training=True, seed=0, epoch=e)
         for e in range(EPOCHS)],
        train.lengths,
    )
    classifier = keras_hub.models.BertTextClassifier(
        backbone=tiny.tiny_classifier().backbone,
        num_classes=len(LABELS),
        preprocessor=keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer=tokenizer, sequence_length=16
        ),
    )
    trainer = Trainer(classifier)
    trainer.compile(optimizer=keras.optimizers.SGD(
        keras.optimizers.schedules.PolynomialDecay(0.1, EPOCHS * steps, 0.0)),
        weighted_metrics=["sparse_categorical_accuracy"])
    callbacks = cb.default_callbacks(
        model_dir=model_dir, plan=plan, step_stats=stats,
        flops_per_token=flops.training_flops_per_token(classifier, train.lengths),
        peak_flops=PEAK, log_every_steps=2, verbose=False,
    )
    fit = trainer.fit(
        pipeline.make_dataset(train, global_batch_size=GLOBAL_BATCH,
                              buckets=buckets, training=True, epochs=EPOCHS),
        epochs=EPOCHS, steps_per_epoch=steps, callbacks=callbacks, verbose=0,
        validation_data=pipeline.make_dataset(
            validation, global_batch_size=GLOBAL_BATCH, buckets=(16,),
            training=False),
    )
    y_true, y_pred = [], []
    for x, y, w in pipeline.make_dataset(test, global_batch_size=GLOBAL_BATCH,
                                         buckets=(16,), training=False):
        real = w.numpy() > 0
        y_true.append(y.numpy()[real])
        y_pred.append(np.argmax(classifier(x).numpy(), axis=-1)[real])
    evaluation = ev.classification_report(
        np.concatenate(y_true), np.concatenate(y_pred), LABELS
    )
    models.save_classifier(classifier, os.path.join(model_dir, "model"),
                           verify=False)
    LabelVocab(LABELS).to_json(os.path.join(model_dir, "labels.json"))
    plan.to_json(os.path.join(model_dir, "plan.json"))
    metrics = {
        "test_accuracy": evaluation["accuracy"],
        "validation_accuracy": fit.history["val_sparse_categorical_accuracy"][-1],
        "wall_seconds": 12.5,
        "epochs": EPOCHS,
        "global_batch_size": GLOBAL_BATCH,
        "peak_flops_source": "a made-up peak of 1 GFLOP/s",
        **cb.summarize(callbacks),
    }
    with open(os.path.join(model_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    return metrics, evaluation, plan


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(1234)
    path = str(tmp_path_factory.mktemp("run"))
    metrics, evaluation, plan = make_model_dir(path)
    return path, metrics, evaluation, plan


# === Evaluation ===


def test_classification_report_matches_a_hand_count():
    # Class 2 is never predicted; class 0 is predicted once, wrongly; class
    # 1 is predicted 5 times, 2 of them right, and occurs 3 times.
    result = ev.classification_report(
        [1, 1, 1, 2, 2, 0], [1, 1, 0, 1, 1, 1], ["a", "b", "c"]
    )
    assert result["confusion_matrix"] == [[0, 1, 0], [1, 2, 0], [0, 2, 0]]
    assert result["accuracy"] == pytest.approx(2 / 6)
    b = result["per_class"][1]
    assert (b["precision"], b["recall"], b["support"]) == (0.4, 2 / 3, 3)
    assert b["f1"] == pytest.approx(0.5)  # 2 x 0.4 x 2/3 / (0.4 + 2/3)
    assert result["per_class"][2] == {
        "label": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2
    }
    assert result["macro_f1"] == pytest.approx(0.5 / 3)
    assert result["weighted_f1"] == pytest.approx(0.5 * 3 / 6)
    json.dumps(result)  # JSON-ready


def test_classification_report_errors_name_the_fix():
    with pytest.raises(ValueError, match="entry 1 is class id 3"):
        ev.classification_report([0, 3], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="one entry per example"):
        ev.classification_report([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match="argmax"):
        ev.classification_report([0, 1], np.zeros((2, 2), int), ["a", "b"])


# === The report ===


def test_report_of_a_tiny_run(model_dir):
    path, metrics, evaluation, plan = model_dir
    written = report.write_report(path, evaluation=evaluation)
    assert written == os.path.join(path, "report.html")
    page = parse(written)

    plots = [image["data-plot"] for image in page.images]
    assert plots == ["loss", "accuracy", "throughput", "mfu", "learning_rate",
                     "confusion_matrix"]
    for image in page.images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix)
        assert base64.b64decode(image["src"][len(prefix):])[:8] == b"\x89PNG\r\n\x1a\n"

    # Every number of metrics.json, unchanged.
    assert set(page.values) == set(metrics)
    for key, value in metrics.items():
        assert json.loads(page.values[key]) == value, key
    assert metrics["mfu"] > 0 and metrics["tokens_per_sec"] > 0
    assert 0 < metrics["padding_fraction"] < 1

    text = " ".join(page.text)
    for name in plan.to_dict():
        if name != "reasons":
            assert name in text
    for row in evaluation["per_class"]:
        assert (f"{row['label']} {100 * row['precision']:.2f}% "
                f"{100 * row['recall']:.2f}% {100 * row['f1']:.2f}% "
                f"{row['support']}") in " ".join(text.split())
    assert f"accuracy {100 * evaluation['accuracy']:.2f}%" in text
    assert "BertTextClassifier" in text  # from model/config.json
    assert "a made-up peak of 1 GFLOP/s" in text
    assert [f for f in os.listdir(path) if ".tmp" in f] == []


def test_report_reads_evaluation_json_and_plots_the_loss_scale(tmp_path):
    history = {
        "train": [
            {"step": s, "epoch": 0, "fractional_epoch": s / 4, "loss": 1.0 / s,
             "learning_rate": 0.1, "loss_scale": 2.0**15 / (2 if s > 2 else 1),
             "skipped_updates": int(s == 3)}
            for s in (1, 2, 3, 4)
        ],
        "epochs": [{"epoch": 0, "step": 4, "loss": 0.5, "val_loss": 0.6,
                    "train_seconds": 3.0, "validation_seconds": 1.0,
                    "wall_seconds": 4.0}],
        "wall_seconds": 4.2,
        "first_step_seconds": 1.5,
    }
    (tmp_path / "history.json").write_text(json.dumps(history))
    evaluation = ev.classification_report([0, 1], [0, 0], ["no", "yes"])
    (tmp_path / "evaluation.json").write_text(json.dumps(evaluation))
    page = parse(report.write_report(str(tmp_path)))
    assert [i["data-plot"] for i in page.images] == [
        "loss", "learning_rate", "loss_scale", "confusion_matrix"
    ]
    text = " ".join(page.text)
    assert "No metrics.json." in text and "No plan.json." in text
    assert "No accuracy metric was compiled." in text
    assert "Throughput was not measured." in text
    assert "Wall time: 0:04" in " ".join(text.split())


def test_mfu_against_a_busy_peak_says_why_it_is_missing(tmp_path):
    history = {"train": [{"step": s, "epoch": 0, "fractional_epoch": s / 2,
                          "loss": 1.0, "examples_per_sec": 10.0 * s}
                         for s in (1, 2)]}
    (tmp_path / "history.json").write_text(json.dumps(history))
    source = ("MFU n/a: peak measured under load (1024x1024 float32 "
              "tf.linalg.matmul on AMD EPYC = 80.0 GFLOP/s, load 3.1)")
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"peak_flops_source": source}))
    text = " ".join(" ".join(parse(report.write_report(str(tmp_path))).text)
                    .split())
    assert source in text
    assert "MFU was not measured" not in text and "Peak: MFU" not in text


def test_report_of_an_empty_model_dir_says_what_is_missing(tmp_path):
    page = parse(report.write_report(str(tmp_path)))
    assert page.images == [] and page.values == {}
    text = " ".join(page.text)
    for note in ("No metrics.json.", "No history.json", "No evaluation"):
        assert note in text


def test_evaluation_report_alone(tmp_path):
    evaluation = ev.classification_report([0, 1, 2, 2], [0, 2, 2, 2],
                                          ["a", "b", "c"])
    path = report.write_evaluation_report(str(tmp_path / "eval.html"),
                                          evaluation)
    page = parse(path)
    assert [i["data-plot"] for i in page.images] == ["confusion_matrix"]
    assert "75.00%" in " ".join(page.text)
    with pytest.raises(ValueError, match="classification_report"):
        report.write_evaluation_report(str(tmp_path / "bad.html"),
                                       {"accuracy": 1.0})


def test_broken_json_names_the_file_and_line(tmp_path):
    (tmp_path / "metrics.json").write_text('{\n"mfu": nope}\n')
    with pytest.raises(ValueError, match=r"metrics.json line 2 column 8"):
        report.write_report(str(tmp_path))


def test_docstring_examples_run():
    for module in (ev, report):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
