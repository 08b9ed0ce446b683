"""Tests for painless_tf.export and apps/export.py on a tiny trained model."""

import doctest
import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest

import tiny
from painless_tf import data
from painless_tf import export
from painless_tf import models
from painless_tf.export import convert
from painless_tf.export import measure
from painless_tf.export import tflite_graph
from painless_tf.export import writer

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LABELS = ("neg", "pos")
# Plain ASCII, where the .tflite tokenizer and keras-hub's agree: upper case,
# punctuation, out-of-vocabulary words, an empty string and a text far longer
# than the sequence length.
_TEXTS = [
    "good fun film",
    "",
    "The WORST, most boring plot!",
    " ".join(["great"] * 3000),
    "awful acting and a dull story",
    "zebra quantum",
    "love the smart funny movie",
]
# Probability tolerances against the Keras model.
_TOLERANCE = {
    "saved_model": 1e-5,
    "tflite_float32": 1e-4,
    "tflite_float16": 1e-2,
    "tflite_dynamic_int8": 1e-2,
}

# Runs in a fresh interpreter: only TensorFlow, TF Text and numpy.
_FRESH_PROCESS_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow.lite.python import interpreter

export_dir, texts_path, out_path = sys.argv[1:]
with open(texts_path) as f:
    texts = json.load(f)
with open(f"{export_dir}/export_metadata.json") as f:
    artifacts = json.load(f)["artifacts"]

def as_lists(outputs):
    return {
        "probabilities": np.asarray(outputs["probabilities"]).tolist(),
        "label_ids": np.asarray(outputs["label_ids"]).tolist(),
        "labels": [bytes(x).decode() for x in np.asarray(outputs["labels"])],
    }

results = {}
for name, file in artifacts.items():
    if name == "saved_model":
        serve = tf.saved_model.load(f"{export_dir}/{file}").signatures[
            "serving_default"]
        call = lambda batch: serve(text=tf.constant(batch))
    else:
        runner = interpreter.InterpreterWithCustomOps(
            model_path=f"{export_dir}/{file}",
            custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS,
        ).get_signature_runner()
        call = lambda batch, runner=runner: runner(
            text=np.array(batch, dtype=object))
    results[name] = {
        "batch": as_lists(call(texts)),
        "single": [as_lists(call([t]))["probabilities"][0] for t in texts],
    }
results["modules"] = sorted(
    m for m in ("keras_hub", "painless_tf", "keras_nlp") if m in sys.modules)
with open(out_path, "w") as f:
    json.dump(results, f)
"""


def _write_model_dir(folder, *, seed, train=True):
    """A tiny BERT classifier with its preprocessor, saved like finetune."""
    keras.utils.set_random_seed(seed)
    backbone = tiny.tiny_classifier(2).backbone
    classifier = keras_hub.models.BertTextClassifier(
        backbone=backbone,
        num_classes=2,
        preprocessor=keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer=tiny.tiny_tokenizer(), sequence_length=16
        ),
    )
    if train:
        rows = tiny.sentiment_rows(256, seed=seed)
        classifier.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        classifier.fit(
            [text for text, _ in rows],
            np.array([_LABELS.index(label) for _, label in rows]),
            epochs=4, batch_size=16, verbose=0,
        )
    os.makedirs(folder, exist_ok=True)
    models.save_classifier(classifier, os.path.join(folder, "model"))
    data.LabelVocab(_LABELS).to_json(os.path.join(folder, "labels.json"))
    return str(folder)


def _examples(path):
    table = data.read_table(path)
    vocab = data.LabelVocab(_LABELS)
    return data.Examples(
        texts=table.texts, labels=[vocab.encode(x) for x in table.labels],
        lines=table.lines, source=str(path),
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {
        "root": root,
        "model_dir": _write_model_dir(root / "run", seed=0),
        "test": tiny.write_csv(root / "test.csv", tiny.sentiment_rows(
            40, seed=1)),
        "validation": tiny.write_csv(root / "validation.csv",
                                     tiny.sentiment_rows(24, seed=2)),
    }


@pytest.fixture(scope="module")
def exported(files):
    report = export.export_model(
        files["model_dir"],
        options=export.ExportOptions(latency_calls=2, latency_batch_size=8),
        test=_examples(files["test"]),
        representative=_examples(files["validation"]),
    )
    return os.path.join(files["model_dir"], "export"), report


@pytest.fixture(scope="module")
def keras_probabilities(files):
    probabilities, names = export.load_predictor(files["model_dir"])(_TEXTS)
    assert names == _LABELS
    # The model must be decisive for argmax comparisons to mean anything.
    assert len(set(probabilities.argmax(axis=1).tolist())) == 2
    return probabilities


def test_export_writes_every_artifact_and_its_report(files, exported):
    export_dir, report = exported
    assert sorted(os.listdir(export_dir)) == [
        "README.md", "export_metadata.json", "export_report.json",
        "model_dynamic_int8.tflite", "model_float16.tflite",
        "model_float32.tflite", "model_int8.tflite", "saved_model",
    ]
    # Nothing left of the staging folder.
    # The export took the folder through its owner (.painless_tf/).
    assert sorted(os.listdir(files["model_dir"])) == [
        ".painless_tf", "export", "labels.json", "model"
    ]
    with open(os.path.join(export_dir, "export_report.json")) as f:
        assert json.load(f) == json.loads(json.dumps(report))
    rows = report["artifacts"]
    assert list(rows) == [
        "keras", "keras_int8", "saved_model", "tflite_float32",
        "tflite_float16", "tflite_dynamic_int8", "tflite_int8",
    ]
    assert report["test_examples"] == 40
    assert report["representative_examples"] == 24
    assert report["task"]["kind"] == "classification"
    for name, row in rows.items():
        if name != "keras_int8":
            assert row["size_bytes"] > 0, name
        assert 0.5 <= row["accuracy"] <= 1.0, (name, row)
        assert 0.0 < row["macro_f1"] <= 1.0, (name, row)
        for key in ("batch_1", "batch_8"):
            timing = row["latency_ms_per_example"][key]
            assert 0 < timing["mean"] <= timing["p95"] * 1.0001, (name, key)
    assert rows["keras"]["max_abs_prob_diff"] == 0.0
    assert rows["saved_model"]["max_abs_prob_diff"] < 1e-5
    assert rows["tflite_float32"]["max_abs_prob_diff"] < 1e-4
    for name in export.TFLITE_FILES:
        assert rows[name]["tokenization_agreement"] == 1.0, name
    assert rows["tflite_float32"]["max_abs_prob_diff_same_tokens"] < 1e-4
    # model.quantize("int8"): smaller in memory, same predictions.
    assert rows["keras_int8"]["weight_bytes"] < rows["keras"]["weight_bytes"]
    assert rows["keras_int8"]["max_abs_prob_diff"] < 0.05
    assert rows["keras_int8"]["argmax_agreement"] == 1.0
    ratios = report["ratios"]["tflite_int8_vs_tflite_float32"]
    assert set(ratios) == {
        "size_reduction", "latency_ratio_batch_1", "latency_ratio_batch_8"
    }
    table = export.format_report(report)
    assert all(f"| {name} |" in table for name in rows)


def test_artifacts_run_in_a_fresh_process_without_painless_tf(
    exported, keras_probabilities, tmp_path
):
    export_dir, _ = exported
    script = tmp_path / "serve.py"
    script.write_text(_FRESH_PROCESS_SCRIPT)
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(_TEXTS))
    out_path = tmp_path / "out.json"
    subprocess.run(
        [sys.executable, str(script), export_dir, str(texts_path),
         str(out_path)],
        check=True, cwd=tmp_path, capture_output=True, timeout=300,
    )
    results = json.loads(out_path.read_text())

    assert results.pop("modules") == []
    assert set(results) == {
        "saved_model", "tflite_float32", "tflite_float16",
        "tflite_dynamic_int8", "tflite_int8",
    }
    expected_ids = keras_probabilities.argmax(axis=1)
    for name, result in results.items():
        batch = np.array(result["batch"]["probabilities"])
        single = np.array(result["single"])
        assert batch.shape == single.shape == (len(_TEXTS), 2), name
        ids = np.array(result["batch"]["label_ids"])
        assert ids.tolist() == batch.argmax(axis=1).tolist(), name
        assert result["batch"]["labels"] == [_LABELS[i] for i in ids], name
        if name == "tflite_int8":
            # Full-integer quantization: the same class on most rows.
            assert np.mean(ids == expected_ids) >= 0.7, (batch,
                                                         keras_probabilities)
            continue
        tolerance = _TOLERANCE[name]
        np.testing.assert_allclose(batch, keras_probabilities, atol=tolerance,
                                   rtol=0, err_msg=name)
        # Batch 1 and batch N agree: padding to the longest row is inert.
        np.testing.assert_allclose(single, batch, atol=tolerance, rtol=0,
                                   err_msg=name)


def test_load_predictor_gives_the_same_output_for_every_artifact(
    files, exported, keras_probabilities
):
    export_dir, _ = exported
    paths = {"saved_model": os.path.join(export_dir, "saved_model")}
    paths.update({
        name: os.path.join(export_dir, file)
        for name, file in export.TFLITE_FILES.items()
    })
    for name, path in paths.items():
        predictor = export.load_predictor(path, batch_size=3)
        probabilities, names = predictor(_TEXTS)
        assert names == _LABELS and probabilities.dtype == np.float32
        if name == "tflite_int8":
            agree = np.mean(probabilities.argmax(1)
                            == keras_probabilities.argmax(1))
            assert agree >= 0.7, name
        else:
            np.testing.assert_allclose(
                probabilities, keras_probabilities, atol=_TOLERANCE[name],
                rtol=0, err_msg=name,
            )
        empty, _ = predictor([])
        assert empty.shape == (0, 2)
    # The preset folder alone is a Keras model dir too.
    preset = export.load_predictor(os.path.join(files["model_dir"], "model"))
    np.testing.assert_array_equal(preset(_TEXTS)[0], keras_probabilities)


@pytest.mark.slow
def test_sentence_pairs_export_matches_keras(tmp_path):
    model_dir = _write_model_dir(tmp_path / "pairs", seed=3, train=False)
    export.export_model(
        model_dir,
        options=export.ExportOptions(
            formats=("saved_model", "tflite_float32")),
        num_text_columns=2,
    )
    texts = ["good film", "", "bad " * 20, "the plot", "fun " * 30]
    pairs = ["bad acting", "great", "a", "", "dull " * 30]
    reference, _ = export.load_predictor(
        model_dir, num_text_columns=2)(texts, pairs)
    for path, tolerance in (("export/saved_model", 1e-5),
                            ("export/model_float32.tflite", 1e-4)):
        predictor = export.load_predictor(os.path.join(model_dir, path))
        assert predictor.num_text_columns == 2
        probabilities, _ = predictor(texts, pairs)
        np.testing.assert_allclose(probabilities, reference, atol=tolerance,
                                   rtol=0, err_msg=path)
        with pytest.raises(export.ExportError, match="Pass pairs"):
            predictor(texts)


def test_head_and_tail_cut_in_every_artifact(tmp_path):
    """A plan.json recording head+tail: the string .tflite graph cuts long
    texts as the Keras predictor does, token for token, and the metadata
    and README say so (the SavedModel's cut: tests/test_length.py)."""
    from painless_tf import hardware
    from painless_tf import plan as plan_lib
    import tensorflow as tf

    from painless_tf import truncation

    model_dir = _write_model_dir(tmp_path / "cut", seed=4, train=False)
    choice = plan_lib.choose_length("auto", [40], model_limit=16)
    plan_lib.make_plan(
        environment=hardware.Environment(), num_train_examples=1,
        precision="float32", length_choice=choice,
    ).to_json(os.path.join(model_dir, "plan.json"))
    words = [w for w, _ in tiny.sentiment_rows(12, seed=5)]
    texts = tuple([" ".join(["dull"] * 4 + ["bad"] * 10 + ["great"] * 10),
                   " ".join(words), " ".join(reversed(words)), *words[:5]])
    examples = data.Examples(texts=(texts,), labels=[1, 0] * 4,
                             lines=tuple(range(2, 10)), source="inline")
    report = export.export_model(
        model_dir, test=examples,
        options=export.ExportOptions(
            formats=("tflite_float32",), latency_calls=1))
    assert report["artifacts"]["tflite_float32"]["max_abs_prob_diff"] <= 1e-4
    # The string graph's ids equal keras-hub's, head+tail cut, on all rows.
    assert report["artifacts"]["tflite_float32"][
        "tokenization_agreement"] == 1.0
    folder = os.path.join(model_dir, "export")
    with open(os.path.join(folder, export.METADATA_FILE)) as f:
        assert json.load(f)["truncation"] == {
            "kind": "head+tail", "head_tokens": 4, "tail_tokens": 10}
    with open(os.path.join(folder, "README.md")) as f:
        assert "keeps its first 4 and last 10 tokens" in f.read()
    classifier, _ = export.reading._load_model_dir(model_dir)
    assert truncation.attached(classifier.preprocessor) == (
        truncation.Truncation("head+tail", 4))
    ids = tflite_graph._tflite_tokenize_fn(classifier, 1)(
        tf.constant(texts[:1]))["token_ids"].numpy()[0].tolist()
    vocab = tiny.VOCAB
    assert ids == [2, *[vocab.index("dull")] * 4,
                   *[vocab.index("great")] * 10, 3]
    reference, _ = export.load_predictor(model_dir)(list(texts))
    got, _ = export.load_predictor(
        os.path.join(folder, "model_float32.tflite"))(list(texts))
    np.testing.assert_allclose(got, reference, atol=1e-4)


def test_token_id_packer_files_record_the_cut(tmp_path):
    """RoBERTa's host packer (token-id .tflite files) reads the cut from
    its packing.json."""
    import families
    from painless_tf import pipeline
    from painless_tf import truncation
    from painless_tf.export import token_ids

    preset = families.write_preset("roberta", tmp_path / "model")
    classifier = models.load_classifier(preset, num_classes=2)
    cut = truncation.Truncation("head+tail", 4)
    truncation.attach(classifier.preprocessor, cut)
    folder = str(tmp_path / "tokenizer")
    token_ids.write_tokenizer(classifier, preset, folder, full_width=False)
    text = " ".join(families.corpus()[:4])
    packed = token_ids.load_host_packer(folder)([text])
    expected = pipeline.tokenize([text], classifier.preprocessor.tokenizer,
                                 max_sequence_length=16, truncation=cut)
    assert packed["token_ids"][0].tolist() == expected.token_ids.tolist()
    assert expected.full_lengths[0] > 16


@pytest.mark.parametrize("truncate", ["round_robin", "waterfall"])
def test_tflite_packing_equals_keras_hub_packing(truncate):
    classifier = tiny.tiny_classifier(2)
    classifier.preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer=tiny.tiny_tokenizer(), sequence_length=12,
        truncate=truncate,
    )
    rng = np.random.default_rng(0)
    words = tiny.VOCAB[5:]

    def text():
        return " ".join(rng.choice(words, rng.integers(0, 14)))

    firsts = [text() for _ in range(40)]
    seconds = [text() for _ in range(40)]
    for columns in ([firsts], [firsts, seconds]):
        tokenize = tflite_graph._tflite_tokenize_fn(classifier, len(columns))
        ours = tokenize(*[np.array(c, dtype=object) for c in columns])
        theirs = classifier.preprocessor(
            x=columns[0] if len(columns) == 1 else tuple(columns)
        )
        width = ours["token_ids"].shape[1]
        for key in ("token_ids", "segment_ids", "padding_mask"):
            full = np.asarray(theirs[key])
            assert not full[:, width:].any(), key
            np.testing.assert_array_equal(
                np.asarray(ours[key]), full[:, :width], err_msg=key
            )


@pytest.mark.parametrize("strip_accents, same", [
    # keras-hub lower-cases "café" but keeps the accent ([UNK] here); the
    # TFLite tokenizer strips it, like the original BERT tokenizer ("cafe").
    (False, [True, True, False, False, True]),
    # As for a Hugging Face folder (hf_folders.match_normalization): all
    # agree, "…" included (models.normalize_text).
    (True, [True, True, True, True, True]),
])
def test_tflite_tokenizer_agrees_with_keras_hub(strip_accents, same):
    classifier = keras_hub.models.BertTextClassifier(
        backbone=tiny.tiny_classifier(2).backbone,
        num_classes=2,
        preprocessor=keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer=keras_hub.tokenizers.BertTokenizer(
                vocabulary=tiny.VOCAB[:-1] + ["cafe"], lowercase=True,
                strip_accents=strip_accents),
            sequence_length=8,
        ),
    )
    examples = data.Examples(
        texts=(("a good film", "a CAFE", "a café", "Café", "good…film"),),
        labels=[0] * 5, lines=(2, 3, 4, 5, 6), source="inline",
    )
    assert measure._same_tokens(classifier, examples).tolist() == same


def test_int8_without_calibration_data_fails_before_writing(files):
    with pytest.raises(export.ExportError, match="--representative_data"):
        export.export_model(
            files["model_dir"],
            options=export.ExportOptions(formats=("tflite_int8",)),
        )
    assert not [n for n in os.listdir(files["model_dir"])
                if n.startswith(".export")]


def test_failed_export_leaves_the_previous_export(files, tmp_path,
                                                  monkeypatch):
    model_dir = str(tmp_path / "run")
    shutil.copytree(files["model_dir"], model_dir,
                    ignore=shutil.ignore_patterns("export"))
    options = export.ExportOptions(formats=("saved_model",))
    export.export_model(model_dir, options=options)
    before = sorted(os.listdir(os.path.join(model_dir, "export")))

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")

    # Both callers look the converter up in their own module: the float32
    # probe (convert) and each format's conversion (writer).
    monkeypatch.setattr(convert, "_convert_tflite", broken)
    monkeypatch.setattr(writer, "_convert_tflite", broken)
    # Nothing converts: the previous export stays as it was.
    with pytest.raises(export.ExportError, match="converter crashed"):
        export.export_model(
            model_dir, options=export.ExportOptions(
                formats=("tflite_float32",)),
        )
    assert sorted(os.listdir(os.path.join(model_dir, "export"))) == before
    assert sorted(os.listdir(model_dir)) == [
        ".painless_tf", "export", "labels.json", "model"]
    # One format fails: the others are written, the report says why.
    report = export.export_model(
        model_dir, options=export.ExportOptions(
            formats=("saved_model", "tflite_float32")),
    )
    assert "converter crashed" in report["skipped"]["tflite_float32"]
    assert "saved_model" in report["artifacts"]
    assert sorted(os.listdir(os.path.join(model_dir, "export"))) == before
    assert "skipped tflite_float32: RuntimeError: converter crashed" in (
        export.format_report(report))


def test_bad_paths_and_options_fail_in_one_line(files, exported, tmp_path):
    export_dir, _ = exported
    options = export.ExportOptions(formats=("saved_model",))
    cases = [
        (lambda: export.load_predictor(str(tmp_path)),
         "neither a trained model dir"),
        (lambda: export.ExportOptions(formats=("onnx",)),
         "--formats=onnx: each must be one of"),
        (lambda: export.load_predictor(
            os.path.join(export_dir, "model_float32.tflite"),
            quantize="int8"),
         "Keras model dirs only"),
        (lambda: export.export_model(str(tmp_path), options=options),
         "no trained model there"),
        # Multi-hot rows for a classifier: another task's labels.
        (lambda: export.export_model(
            files["model_dir"], options=options, test=data.Examples(
                texts=(("good", "bad"),), labels=[[1.0, 0.0], [0.0, 1.0]],
                lines=(2, 3), source="hot.csv")),
         r"labels of shape \[2, 2\] \(float32\); the model is a "
         "classification model and needs class ids"),
    ]
    lonely = tmp_path / "lonely.tflite"
    shutil.copy(os.path.join(export_dir, "model_float32.tflite"), lonely)
    cases.append((lambda: export.load_predictor(str(lonely)),
                  "no export_metadata.json beside it"))
    for call, message in cases:
        with pytest.raises(export.ExportError, match=message) as error:
            call()
        assert "\n" not in str(error.value)


def _run_app(*flags_):
    # A subprocess: apps/export.py and apps/finetune.py define flags of the
    # same names, which cannot live in one process.
    return subprocess.run(
        [sys.executable, "-m", "apps.export", *flags_],
        cwd=_ROOT, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
def test_app_exports_and_prints_the_table(files, tmp_path):
    model_dir = str(tmp_path / "run")
    shutil.copytree(files["model_dir"], model_dir,
                    ignore=shutil.ignore_patterns("export"))
    result = _run_app(
        f"--model_dir={model_dir}", f"--test_data={files['test']}",
        "--formats=saved_model,tflite_dynamic_int8", "--latency_calls=2",
        "--latency_batch_size=4",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| tflite_dynamic_int8 |" in result.stdout
    with open(os.path.join(model_dir, "export", "export_report.json")) as f:
        report = json.load(f)
    assert list(report["artifacts"]) == [
        "keras", "saved_model", "tflite_dynamic_int8"
    ]
    assert report["test_examples"] == 40


@pytest.mark.slow
def test_app_rejects_bad_flags_before_any_work(files, tmp_path):
    result = _run_app(f"--model_dir={files['model_dir']}",
                      "--formats=tflite_int8")
    assert result.returncode != 0
    # The fixture's model dir has no run.json to calibrate from.
    assert ("--formats includes tflite_int8, which calibrates on texts, and "
            "the model dir has no run.json") in result.stderr
    result = _run_app(f"--model_dir={tmp_path}")
    assert result.returncode != 0
    assert f"{tmp_path}/model/config.json not found" in result.stderr


def test_docstring_examples_run():
    # The package and each of its modules: doctest finds a function's
    # examples only in the module that defines it.
    modules = [export] + [
        importlib.import_module(f"{export.__name__}.{info.name}")
        for info in pkgutil.iter_modules(export.__path__)
    ]
    attempted = 0
    for module in modules:
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 0
