"""Tests for painless_tf.models, on tiny models built here (no downloads)."""

import json
import os
import socket

import keras_hub
import numpy as np
import pytest
import requests
import safetensors.numpy
import tensorflow as tf

from painless_tf import models

_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    "the", "a", "movie", "film", "was", "is", "good", "bad", "great",
    "awful", "fun", "dull", "plot", "acting", "and", "not", "very", "hello",
    "world", ".", "!", "##s", "##ing",
]  # 30 tokens.
_HIDDEN, _HEADS, _LAYERS, _INTERMEDIATE, _MAX_LEN = 8, 2, 2, 16, 32
_TEXTS = ["The movie was good.", "A very dull plot!"]


def _tiny_classifier(num_classes=2, sequence_length=16):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(_VOCAB),
        num_layers=_LAYERS,
        num_heads=_HEADS,
        hidden_dim=_HIDDEN,
        intermediate_dim=_INTERMEDIATE,
        max_sequence_length=_MAX_LEN,
    )
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=_VOCAB),
        sequence_length=sequence_length,
    )
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, preprocessor=preprocessor, num_classes=num_classes
    )


def _hf_weights(rng, prefix="", norm=("weight", "bias")):
    """Random weights under the names keras-hub's HF BERT converter reads."""

    def w(*shape):
        return rng.standard_normal(shape).astype("float32")

    gamma, beta = norm
    h, inter = _HIDDEN, _INTERMEDIATE
    weights = {
        "embeddings.word_embeddings.weight": w(len(_VOCAB), h),
        "embeddings.position_embeddings.weight": w(_MAX_LEN, h),
        "embeddings.token_type_embeddings.weight": w(2, h),
        f"embeddings.LayerNorm.{gamma}": w(h),
        f"embeddings.LayerNorm.{beta}": w(h),
        "pooler.dense.weight": w(h, h),
        "pooler.dense.bias": w(h),
    }
    for i in range(_LAYERS):
        layer = f"encoder.layer.{i}."
        for name in ("self.query", "self.key", "self.value", "output.dense"):
            weights[f"{layer}attention.{name}.weight"] = w(h, h)
            weights[f"{layer}attention.{name}.bias"] = w(h)
        weights[f"{layer}attention.output.LayerNorm.{gamma}"] = w(h)
        weights[f"{layer}attention.output.LayerNorm.{beta}"] = w(h)
        # PyTorch Linear weights are (out, in).
        weights[f"{layer}intermediate.dense.weight"] = w(inter, h)
        weights[f"{layer}intermediate.dense.bias"] = w(inter)
        weights[f"{layer}output.dense.weight"] = w(h, inter)
        weights[f"{layer}output.dense.bias"] = w(h)
        weights[f"{layer}output.LayerNorm.{gamma}"] = w(h)
        weights[f"{layer}output.LayerNorm.{beta}"] = w(h)
    return {prefix + k: v for k, v in weights.items()}


def _write_hf_folder(folder, prefix="", norm=("weight", "bias")):
    os.makedirs(folder, exist_ok=True)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": len(_VOCAB),
        "hidden_size": _HIDDEN,
        "num_hidden_layers": _LAYERS,
        "num_attention_heads": _HEADS,
        "intermediate_size": _INTERMEDIATE,
        "max_position_embeddings": _MAX_LEN,
        "type_vocab_size": 2,
    }
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True}, f)
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(_VOCAB) + "\n")
    weights = _hf_weights(np.random.default_rng(0), prefix, norm)
    safetensors.numpy.save_file(
        weights, os.path.join(folder, "model.safetensors")
    )
    return str(folder), {k[len(prefix):]: v for k, v in weights.items()}


def _logits(classifier):
    # An eager call: `predict` would trace a function, seconds per test.
    return classifier(classifier.preprocessor(_TEXTS), training=False).numpy()


def _one_line(error):
    message = str(error)
    assert "\n" not in message
    return message


# === Local keras-hub preset folders ===


def test_saved_classifier_loads_back_with_its_head(tmp_path):
    classifier = _tiny_classifier(num_classes=3)
    expected = _logits(classifier)

    folder = models.save_classifier(classifier, tmp_path / "preset")
    loaded = models.load_classifier(folder, num_classes=3)

    assert folder == str(tmp_path / "preset")
    assert isinstance(loaded, keras_hub.models.BertTextClassifier)
    np.testing.assert_allclose(_logits(loaded), expected,
                               rtol=1e-5, atol=1e-6)
    # Only the finished preset is left beside it: no temporary folders.
    assert os.listdir(tmp_path) == ["preset"]


def test_other_num_classes_gets_a_new_head_on_the_same_backbone(tmp_path):
    classifier = _tiny_classifier(num_classes=2)
    folder = models.save_classifier(classifier, tmp_path / "preset")

    loaded = models.load_classifier(folder, num_classes=5, dropout=0.3)

    assert _logits(loaded).shape == (2, 5)
    assert loaded.output_dropout.rate == 0.3
    for a, b in zip(classifier.backbone.get_weights(),
                    loaded.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_backbone_only_preset_folder_loads(tmp_path):
    classifier = _tiny_classifier()
    folder = str(tmp_path / "backbone_preset")
    classifier.backbone.save_to_preset(folder)
    classifier.preprocessor.tokenizer.save_to_preset(folder)

    loaded = models.load_classifier(folder, num_classes=2,
                                    sequence_length=12)

    assert loaded.preprocessor.sequence_length == 12
    assert loaded.preprocessor(_TEXTS)["token_ids"].shape == (2, 12)
    np.testing.assert_array_equal(
        loaded.backbone.get_layer("token_embedding").embeddings.numpy(),
        classifier.backbone.get_layer("token_embedding").embeddings.numpy(),
    )


def test_save_classifier_replaces_a_preset_and_refuses_other_folders(
        tmp_path):
    first = _tiny_classifier(num_classes=2)
    second = _tiny_classifier(num_classes=4)
    folder = models.save_classifier(first, tmp_path / "preset")

    models.save_classifier(second, folder)

    reloaded = models.load_classifier(folder, num_classes=4)
    assert _logits(reloaded).shape == (2, 4)
    assert os.listdir(tmp_path) == ["preset"]

    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    with pytest.raises(models.ModelError, match="refusing to overwrite"):
        models.save_classifier(first, precious)
    assert os.listdir(precious) == ["todo.txt"]


def test_load_tokenizer_from_a_preset_folder(tmp_path):
    folder = models.save_classifier(_tiny_classifier(), tmp_path / "preset")

    tokenizer = models.load_tokenizer(folder)

    assert isinstance(tokenizer, keras_hub.models.BertTokenizer)
    assert tokenizer.token_to_id("movie") == _VOCAB.index("movie")


def test_sequence_length_beyond_the_position_table_is_refused(tmp_path):
    folder = models.save_classifier(_tiny_classifier(), tmp_path / "preset")

    with pytest.raises(models.ModelError) as info:
        models.load_classifier(folder, num_classes=2, sequence_length=64)

    assert _one_line(info.value) == (
        f"--max_sequence_length=64 exceeds the max_sequence_length of "
        f"--model={folder} ({_MAX_LEN}). Pass --max_sequence_length={_MAX_LEN} "
        "or less."
    )


# === Local Hugging Face folders ===


@pytest.mark.parametrize(
    "prefix, norm",
    [("", ("weight", "bias")), ("bert.", ("gamma", "beta"))],
    ids=["sentence_transformers_names", "bert_prefix_gamma_beta"],
)
def test_hugging_face_folder_is_converted(tmp_path, prefix, norm):
    folder, weights = _write_hf_folder(tmp_path / "hf", prefix, norm)

    classifier = models.load_classifier(folder, num_classes=3,
                                        sequence_length=10)

    backbone = classifier.backbone
    assert isinstance(classifier, keras_hub.models.BertTextClassifier)
    np.testing.assert_array_equal(
        backbone.get_layer("token_embedding").embeddings.numpy(),
        weights["embeddings.word_embeddings.weight"],
    )
    query = backbone.get_layer("transformer_layer_1")._self_attention_layer
    np.testing.assert_array_equal(
        query.query_dense.kernel.numpy(),
        weights["encoder.layer.1.attention.self.query.weight"].T.reshape(
            _HIDDEN, _HEADS, _HIDDEN // _HEADS),
    )
    np.testing.assert_array_equal(
        backbone.get_layer("embeddings_layer_norm").gamma.numpy(),
        weights[f"embeddings.LayerNorm.{norm[0]}"],
    )
    token_ids = classifier.preprocessor(["HELLO World"])["token_ids"]
    assert token_ids.shape == (1, 10)
    # do_lower_case=True: upper-case input maps to the lower-case vocabulary.
    assert list(token_ids[0, :4].numpy()) == [
        _VOCAB.index(t) for t in ("[CLS]", "hello", "world", "[SEP]")
    ]
    assert _logits(classifier).shape == (2, 3)


def test_load_tokenizer_from_a_hugging_face_folder(tmp_path):
    folder, _ = _write_hf_folder(tmp_path / "hf")

    tokenizer = models.load_tokenizer(folder)

    assert tokenizer.token_to_id("film") == _VOCAB.index("film")


@pytest.mark.parametrize("strip_accents, expected", [
    (None, True),  # Hugging Face: follows do_lower_case
    (False, False),
])
def test_hugging_face_accent_stripping_is_kept(tmp_path, strip_accents,
                                              expected):
    folder, _ = _write_hf_folder(tmp_path / "hf")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "strip_accents": strip_accents}, f)

    tokenizer = models.load_tokenizer(folder)
    classifier = models.load_classifier(folder, num_classes=2)

    assert tokenizer.strip_accents is expected
    assert classifier.preprocessor.tokenizer.strip_accents is expected
    film = tokenizer(models.normalize_text(tokenizer, tf.constant("FÍLM")))
    assert (np.asarray(film).tolist() == [_VOCAB.index("film")]) is expected


def test_normalize_text_splits_compatibility_characters_like_bert():
    tokenizer = keras_hub.tokenizers.BertTokenizer(
        vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "...",
                    "a"],
        lowercase=True,
    )
    # Alone, keras-hub splits first and case-folds "…" into one "..." token.
    assert np.asarray(tokenizer(tf.constant("a…"))).tolist() == [7, 6]
    normalized = models.normalize_text(tokenizer, tf.constant("a…"))
    assert np.asarray(tokenizer(normalized)).tolist() == [7, 5, 5, 5]
    cased = keras_hub.tokenizers.BertTokenizer(
        vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])
    assert models.normalize_text(cased, tf.constant("a…")).numpy() == (
        "a…".encode())


def test_default_uses_the_fetched_minilm_folder(tmp_path, monkeypatch):
    folder, _ = _write_hf_folder(tmp_path / "minilm")
    monkeypatch.setattr(models.assets, "default_model_dir", lambda: folder)

    classifier = models.load_classifier("default", num_classes=2)

    assert classifier.backbone.hidden_dim == _HIDDEN


def test_hugging_face_folder_without_safetensors_is_refused(tmp_path):
    folder, _ = _write_hf_folder(tmp_path / "hf")
    os.rename(os.path.join(folder, "model.safetensors"),
              os.path.join(folder, "pytorch_model.bin"))

    with pytest.raises(models.ModelError, match="no model.safetensors"):
        models.load_classifier(folder, num_classes=2)


def test_saved_converted_model_round_trips(tmp_path):
    hf_folder, _ = _write_hf_folder(tmp_path / "hf")
    classifier = models.load_classifier(hf_folder, num_classes=2)
    expected = _logits(classifier)

    preset = models.save_classifier(classifier, tmp_path / "preset")

    loaded = models.load_classifier(preset, num_classes=2)
    np.testing.assert_allclose(_logits(loaded), expected,
                               rtol=1e-5, atol=1e-6)


# === User mistakes ===


def test_missing_folder_is_named(tmp_path):
    missing = str(tmp_path / "no_such_model")

    with pytest.raises(models.ModelError) as info:
        models.load_classifier(missing, num_classes=2)

    assert _one_line(info.value).startswith(
        f"--model={missing}: folder not found."
    )


def test_folder_without_config_is_named(tmp_path):
    with pytest.raises(models.ModelError) as info:
        models.load_classifier(str(tmp_path), num_classes=2)

    assert f"{tmp_path} has no config.json" in _one_line(info.value)


def test_broken_config_json_gives_line_and_column(tmp_path):
    (tmp_path / "config.json").write_text('{\n  "model_type": bert\n}')

    with pytest.raises(models.ModelError) as info:
        models.load_classifier(str(tmp_path), num_classes=2)

    assert _one_line(info.value).startswith(
        f"{tmp_path / 'config.json'} line 2 column 17: invalid JSON"
    )


def test_misspelled_preset_name_suggests_the_right_one():
    with pytest.raises(models.ModelError) as info:
        models.load_classifier("bert_tiny_en_uncasd", num_classes=2)

    assert "Did you mean bert_tiny_en_uncased" in _one_line(info.value)


@pytest.mark.parametrize("kwargs, flag", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 2, "sequence_length": 0}, "--max_sequence_length=0"),
    ({"num_classes": 2, "dropout": 1.5}, "--dropout=1.5"),
])
def test_bad_arguments_are_named(kwargs, flag):
    with pytest.raises(models.ModelError, match=flag):
        models.load_classifier("unused", **kwargs)


# === Hubs out of reach ===


@pytest.fixture
def offline(monkeypatch):
    """No hub answers; any download attempt is recorded, never sent."""
    attempts = []

    def kaggle_download(handle, path=None, **kwargs):
        attempts.append(("kaggle", handle, path))
        raise requests.exceptions.ConnectionError(
            "Failed to resolve 'api.kaggle.com'"
        )

    def hf_download(*args, **kwargs):
        attempts.append(("hf", args, kwargs))
        raise AssertionError("the hub must not be asked when it is down")

    def hf_snapshot(repo_id, local_files_only=False, **kwargs):
        assert local_files_only
        raise FileNotFoundError(f"{repo_id} is not in the local cache")

    import huggingface_hub
    import kagglehub

    monkeypatch.setattr(models, "_can_connect", lambda *a: False)
    monkeypatch.setattr(kagglehub, "model_download", kaggle_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hf_snapshot)
    return attempts


@pytest.mark.parametrize("model, hub", [
    ("bert_tiny_en_uncased", "Kaggle"),
    ("kaggle://keras/bert/keras/bert_tiny_en_uncased/3", "Kaggle"),
    ("hf://google-bert/bert-base-uncased", "Hugging Face"),
])
def test_unreachable_hub_fails_with_one_line(offline, model, hub):
    with pytest.raises(models.ModelError) as info:
        models.load_classifier(model, num_classes=2)

    assert _one_line(info.value) == (
        f"--model={model} needs a download from {hub}, which is "
        "unreachable. Pass a local keras-hub preset folder (saved with "
        "save_to_preset) or a local Hugging Face folder instead."
    )
    # Neither hub client is asked: offline they retry or hang for minutes.
    assert offline == []


def test_unreachable_hub_also_fails_for_the_tokenizer(offline):
    with pytest.raises(models.ModelError, match="unreachable"):
        models.load_tokenizer("bert_tiny_en_uncased")


def test_cached_hugging_face_snapshot_is_used_offline(offline, tmp_path,
                                                      monkeypatch):
    folder, _ = _write_hf_folder(tmp_path / "snapshot")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, local_files_only: folder)

    classifier = models.load_classifier("hf://org/tiny-bert", num_classes=2)

    assert classifier.backbone.num_layers == _LAYERS
    assert offline == []


@pytest.mark.parametrize("model", [
    "bert_tiny_en_uncased",
    "kaggle://keras/bert/keras/bert_tiny_en_uncased/3",
])
def test_cached_kaggle_preset_is_used_offline(offline, tmp_path, monkeypatch,
                                              model):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    cached = tmp_path / "kagglehub/models/keras/bert/keras"
    models.save_classifier(_tiny_classifier(),
                           cached / "bert_tiny_en_uncased" / "3")

    classifier = models.load_classifier(model, num_classes=2)

    assert classifier.backbone.hidden_dim == _HIDDEN
    assert offline == []


def test_unversioned_kaggle_handle_needs_the_hub(offline, tmp_path,
                                                 monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    cached = tmp_path / "kagglehub/models/keras/bert/keras"
    models.save_classifier(_tiny_classifier(),
                           cached / "bert_tiny_en_uncased" / "3")

    with pytest.raises(models.ModelError, match="unreachable"):
        models.load_classifier(
            "kaggle://keras/bert/keras/bert_tiny_en_uncased", num_classes=2
        )


def test_connection_error_during_download_is_reported_as_offline(
        offline, monkeypatch):
    # The probe passes, but the download itself fails.
    monkeypatch.setattr(models, "_can_connect", lambda *a: True)

    with pytest.raises(models.ModelError, match="needs a download from Kaggle"):
        models.load_classifier("bert_tiny_en_uncased", num_classes=2)

    assert [a[0] for a in offline] == ["kaggle"]


def test_reachability_probe_on_local_sockets():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        assert models._can_connect("127.0.0.1", port, 2.0)
    finally:
        server.close()
    assert not models._can_connect("127.0.0.1", port, 2.0)


def test_docstring_examples_run(tmp_path, monkeypatch):
    import doctest
    import tempfile

    # The examples write into tempfile.mkdtemp(): keep that inside tmp_path.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    results = doctest.testmod(models, optionflags=doctest.ELLIPSIS)

    assert results.attempted >= 15
    assert results.failed == 0


def test_keras_nlp_names_still_work(tmp_path):
    """Code written against keras_nlp gets the same classes and presets."""
    import keras_nlp

    import tiny

    preset = tiny.write_preset(tmp_path / "preset")
    assert keras_nlp.models.BertTextClassifier is (
        keras_hub.models.BertTextClassifier
    )
    classifier = keras_nlp.models.BertTextClassifier.from_preset(preset)
    assert classifier.predict(["good fun"], verbose=0).shape == (1, 2)
