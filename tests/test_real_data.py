"""The converters of `bench/real_data.py` on tiny files shaped like each
source (no network: the wheels are never fetched here)."""

import csv
import doctest
import io
import json
import os
import zipfile

import pytest

from bench import real_data
from painless_tf import assets
from painless_tf.data import read_table

_BY_NAME = {s.name: s for s in real_data.SETS}


def _write_tab(path, rows):
    # Orange's three header lines, then category<TAB>text.
    lines = ["Category\tText", "d\tstring", "class\t", ""]
    lines += [f"{label}\t{text}" for label, text in rows]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _write_zipped_csv(folder, name, header, rows):
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    with zipfile.ZipFile(os.path.join(folder, f"{name}.zip"), "w") as archive:
        archive.writestr(f"{name}.csv", text.getvalue())


def test_orange_tab_keeps_the_official_split_and_drops_empty_texts(tmp_path):
    _write_tab(tmp_path / "reuters-r8-train.tab",
               [("earn", "champion products approves stock split"),
                ("acq", "computer terminal systems completes sale"),
                ("grain", "")])
    _write_tab(tmp_path / "reuters-r8-test.tab",
               [("crude", "opec may cut output")])
    real_set = _BY_NAME["reuters-r8"]
    rows = real_set.read(str(tmp_path))
    assert rows == {
        "train": [
            {"text": "champion products approves stock split",
             "label": "earn"},
            {"text": "computer terminal systems completes sale",
             "label": "acq"},
        ],
        "test": [{"text": "opec may cut output", "label": "crude"}],
    }
    out = tmp_path / "out"
    paths = real_data.write(real_set, rows, str(out))
    assert [os.path.basename(p) for p in paths] == [
        "reuters-r8.train.jsonl", "reuters-r8.test.jsonl"]
    # painless_tf reads the written file with its default columns.
    table = read_table(paths[0])
    assert table.texts == (("champion products approves stock split",
                            "computer terminal systems completes sale"),)
    assert table.labels == ("earn", "acq")
    stats = real_data.statistics_of(real_set, rows)
    assert stats["splits"] == {"train": 2, "test": 1}
    assert stats["rows"] == 3
    assert stats["labels"]["counts"] == {"acq": 1, "crude": 1, "earn": 1}


def test_news_articles_are_labelled_by_outlet_with_title_first(tmp_path):
    header = ["article_id", "publish_date", "article_source_link", "title",
              "subtitle", "text"]
    _write_zipped_csv(tmp_path, "NewsArticles", header, [
        ["1", "2017/2/7", "http://abcnews.go.com/Politics/a?id=1",
         "DeVos Confirmed", "", 'The Senate "voted",\nsplit evenly.'],
        ["2", "2017/2/8", "http://www.bbc.co.uk/news/world-1",
         "A title", "A subtitle", "Body text."],
        ["3", "2017/2/9", "http://www.cnn.com/2017/x", "No body", "", " "],
    ])
    rows = _BY_NAME["news-articles"].read(str(tmp_path))
    assert rows == [
        {"text": 'DeVos Confirmed\nThe Senate "voted",\nsplit evenly.',
         "label": "abcnews.go.com"},
        {"text": "A title\nA subtitle\nBody text.", "label": "bbc.co.uk"},
    ]


def test_health_tweets_take_the_account_before_the_last_hyphen(tmp_path):
    _write_zipped_csv(tmp_path, "healthtweets", ["source_id", "text"], [
        ["KaiserHealthNews-585978391360221184", "Insurers cut rates"],
        ["reuters_health-1", " Flu season http://reut.rs/x "],
        ["goodhealth-2", ""],
    ])
    rows = _BY_NAME["health-tweets"].read(str(tmp_path))
    assert rows == [
        {"text": "Insurers cut rates", "label": "KaiserHealthNews"},
        {"text": "Flu season http://reut.rs/x", "label": "reuters_health"},
    ]
    stats = real_data.statistics_of(_BY_NAME["health-tweets"], rows)
    assert stats["labels"]["largest_to_smallest"] == 1.0


def test_lee_pairs_are_the_upper_triangle_of_the_matrix(tmp_path):
    docs, sims = tmp_path / "docs", tmp_path / "sims"
    docs.mkdir()
    sims.mkdir()
    # Latin-1, as in the wheel: 0xA3 is the pound sign.
    (docs / "lee.cor").write_bytes(
        b"AMP shelved a \xa3400 million plan.\nRain fell.\n\nFire spread.")
    (sims / "similarities0-1.txt").write_text(
        "1\t0.3\t0.24\n0\t1\t0.28\n0\t0\t1\n")
    real_set = _BY_NAME["lee-similarity"]
    rows = real_set.read(str(docs), str(sims))
    assert rows == [
        {"text": "AMP shelved a \u00a3400 million plan.",
         "text_pair": "Rain fell.", "label": 0.3},
        {"text": "AMP shelved a \u00a3400 million plan.",
         "text_pair": "Fire spread.", "label": 0.24},
        {"text": "Rain fell.", "text_pair": "Fire spread.", "label": 0.28},
    ]
    stats = real_data.statistics_of(real_set, rows)
    # Words of a pair count both texts.
    assert stats["words"]["max"] == 8
    assert stats["labels"]["max"] == 0.3
    out = real_data.write(real_set, rows, str(tmp_path / "out"))
    with open(out[0], encoding="utf-8") as f:
        assert json.loads(f.readline()) == rows[0]


def test_lee_refuses_a_matrix_of_another_size(tmp_path):
    (tmp_path / "lee.cor").write_text("One.\nTwo.\n")
    (tmp_path / "similarities0-1.txt").write_text("1\n")
    with pytest.raises(assets.AssetError, match="2 documents"):
        _BY_NAME["lee-similarity"].read(str(tmp_path), str(tmp_path))


def test_write_refuses_an_empty_split(tmp_path):
    with pytest.raises(assets.AssetError, match="gave no rows"):
        real_data.write(_BY_NAME["20newsgroups"],
                        {"train": [{"text": "a", "label": "b"}], "test": []},
                        str(tmp_path))
    assert not os.listdir(tmp_path)


def test_set_names_and_asset_folders_do_not_collide():
    names = [s.name for s in real_data.SETS]
    assert len(names) == len(set(names))
    # Two assets under one folder name with other files would overwrite
    # each other in the cache.
    folders = {}
    for real_set in real_data.SETS:
        for asset in (real_set.asset, *real_set.extra_assets):
            assert folders.setdefault(asset.name, asset) == asset


def test_docstring_examples_run():
    result = doctest.testmod(real_data)
    assert result.failed == 0 and result.attempted > 0
