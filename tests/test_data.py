"""Tests for painless_tf.data: reading, validation, label vocabulary, split."""

import bz2
import doctest
import gzip
import importlib
import json
import os
import pkgutil

import numpy as np
import pytest

from painless_tf import data
from painless_tf.data import DataError
from painless_tf.data import LabelVocab
from painless_tf.data import RawTable
from painless_tf.data import load_splits
from painless_tf.data import read_table
from painless_tf.data import rotten_tomatoes_table
from painless_tf.data import tfds_table


def _write(tmp_path, name, content, encoding="utf-8"):
    path = tmp_path / name
    raw = content if isinstance(content, bytes) else content.encode(encoding)
    if name.endswith(".bz2"):
        raw = bz2.compress(raw)
    elif name.endswith(".gz"):
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def _error(fn, *fragments):
    """Runs fn, expects a one-line DataError holding every fragment."""
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def _table(texts, labels, source="inline", columns=("text",)):
    if isinstance(texts[0], str):
        texts = (texts,)
    return RawTable(
        source=source,
        text_columns=columns,
        label_column="label",
        texts=texts,
        labels=labels,
        lines=range(2, 2 + len(labels)),
    )


# === Formats ===


def test_csv_quoting_crlf_and_start_lines(tmp_path):
    path = _write(
        tmp_path,
        "train.csv",
        'text,label,extra\r\n'
        'plain,pos,x\r\n'
        '"with, comma and ""quotes""",neg,y\r\n'
        '"two\nlines",pos,z\r\n'
        '\r\n'
        'last, neg ,w\r\n',
    )
    table = read_table(path)
    assert table.texts == (
        ("plain", 'with, comma and "quotes"', "two\nlines", "last"),
    )
    assert table.labels == ("pos", "neg", "pos", "neg")
    # The multi-line row starts on line 4; the blank line 6 is skipped.
    assert table.lines == (2, 3, 4, 7)
    assert table.source == str(path)
    assert table.bad_rows.count == 0 and table.warnings == ()


def test_tsv(tmp_path):
    content = "label\ttext\n1\ta, b, c\n0\tit 's \"fine\"\n"
    path = _write(tmp_path, "dev.tsv", content)
    table = read_table(path)
    assert table.texts == (("a, b, c", 'it \'s "fine"'),)
    assert table.labels == ("1", "0")


def test_jsonl_values_and_json_extension(tmp_path):
    lines = [
        {"text": "a", "label": 1},
        {"text": "b", "label": 2.0},
        {"text": "c", "label": " pos "},
        {"text": "d", "label": True, "other": [1]},
    ]
    content = "\n".join(json.dumps(x) for x in lines) + "\n\n"
    for name in ("train.jsonl", "train.json"):
        table = read_table(_write(tmp_path, name, content))
        assert table.texts == (("a", "b", "c", "d"),)
        assert table.labels == ("1", "2", "pos", "true")
        assert table.lines == (1, 2, 3, 4)


@pytest.mark.parametrize("name", ["a.csv.bz2", "a.csv.gz", "a.jsonl.gz"])
def test_compressed(tmp_path, name):
    if "jsonl" in name:
        content = (
            '{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}'
        )
    else:
        content = "text,label\ngood,pos\nbad,neg\n"
    table = read_table(_write(tmp_path, name, content))
    assert table.texts == (("good", "bad"),)
    assert table.labels == ("pos", "neg")


def test_file_format_flag_and_unknown_extension(tmp_path):
    path = _write(tmp_path, "train.txt", "text\tlabel\ngood\tpos\n")
    _error(lambda: read_table(path), "train.txt", "'.txt'", "--file_format=")
    assert read_table(path, file_format="tsv").labels == ("pos",)
    _error(
        lambda: read_table(path, file_format="xls"), "--file_format", "'xls'"
    )


def test_utf8_bom_is_accepted(tmp_path):
    content = b"\xef\xbb\xbftext,label\ncaf\xc3\xa9,pos\n"
    path = _write(tmp_path, "train.csv", content)
    table = read_table(path)
    assert table.text_columns == ("text",)
    assert table.texts == (("café",),)


def test_other_encoding(tmp_path):
    path = _write(tmp_path, "train.csv", "text,label\ncafé,pos\n", "latin-1")
    assert read_table(path, encoding="latin-1").texts == (("café",),)
    _error(lambda: read_table(path, encoding="nope"), "--encoding='nope'")


def test_sentence_pairs(tmp_path):
    path = _write(
        tmp_path,
        "pairs.csv",
        "premise,hypothesis,label\n"
        "a cat sits,an animal sits,entail\n"
        "a dog runs,nobody moves,contra\n"
        "a dog runs, ,contra\n",
    )
    columns = ("premise", "hypothesis")
    _error(
        lambda: read_table(path, text_columns=columns),
        "pairs.csv line 4",
        "text column 'hypothesis' is empty (only whitespace)",
    )
    table = read_table(path, text_columns=columns, skip_bad_rows=True)
    assert table.texts == (
        ("a cat sits", "a dog runs"),
        ("an animal sits", "nobody moves"),
    )
    splits = load_splits(train=table, split=(1.0, 0.0, 0.0))
    assert splits.train.num_text_columns == 2
    assert splits.train.texts == table.texts
    np.testing.assert_array_equal(splits.train.labels, [1, 0])
    assert splits.vocab.names == ("contra", "entail")


# === Label vocabulary ===


def test_vocab_infers_strings_and_integers():
    assert LabelVocab.from_labels(["pos", "neg", "pos"]).names == ("neg", "pos")
    numeric = LabelVocab.from_labels(["10", "2", " 02 ", "-1"])
    assert numeric.names == ("-1", "2", "10")
    assert numeric.encode("02") == 1 and numeric.encode(10) == 2
    # One non-integer makes every label a string, sorted as strings.
    assert LabelVocab.from_labels(["10", "2", "x"]).names == ("10", "2", "x")


def test_vocab_num_classes():
    vocab = LabelVocab.from_labels(["0", "2"], num_classes=4)
    assert vocab.names == ("0", "1", "2", "3")
    _error(
        lambda: LabelVocab.from_labels(
            ["0", "5"], num_classes=3, source="a.csv"
        ),
        "a.csv",
        "label 5 is outside [0, 3)",
        "`num_classes`=6",
    )
    _error(
        lambda: LabelVocab.from_labels(["a", "b"], num_classes=3),
        "`num_classes`=3",
        "2 distinct labels (a, b)",
    )
    _error(
        lambda: LabelVocab.from_labels(["a", "b"], num_classes=1),
        "num_classes=1",
    )


def test_vocab_encode_unseen_names_where():
    vocab = LabelVocab(["neg", "pos"])
    _error(
        lambda: vocab.encode("neutral", where="dev.csv line 9"),
        "dev.csv line 9: label 'neutral' is not one of the 2 training labels",
    )
    with pytest.raises(ValueError, match="distinct"):
        LabelVocab(["a", "a"])


def test_vocab_json_round_trip(tmp_path):
    vocab = LabelVocab(["négatif", "positif", "10"])
    path = tmp_path / "labels.json"
    vocab.to_json(path)
    vocab.to_json(path)  # Overwriting goes through os.replace too.
    assert os.listdir(tmp_path) == ["labels.json"]  # No temp file left.
    assert json.loads(path.read_text("utf-8")) == {
        "names": ["négatif", "positif", "10"]
    }
    loaded = LabelVocab.from_json(path)
    assert loaded == vocab and loaded.names == vocab.names and len(loaded) == 3
    path.write_text('{"names": ["a", "a"]}')
    _error(lambda: LabelVocab.from_json(path), "labels.json", "not a label")
    path.write_text("[1, 2")
    _error(lambda: LabelVocab.from_json(path), "labels.json", "cannot read")


# === Bad input: one-line errors naming file, line, column ===


@pytest.mark.parametrize("name", ["train.csv", "train.jsonl"])
def test_empty_file(tmp_path, name):
    _error(lambda: read_table(_write(tmp_path, name, " \n\n")), name, "empty")
    # Skipping bad rows does not hide file-level problems.
    path = _write(tmp_path, name, "")
    _error(lambda: read_table(path, skip_bad_rows=True), name, "empty")


def test_header_without_data(tmp_path):
    path = _write(tmp_path, "train.csv", "text,label\n\n")
    _error(
        lambda: read_table(path), "train.csv", "header row (line 1", "no data"
    )


def test_missing_columns_list_columns_found(tmp_path):
    path = _write(tmp_path, "train.csv", "Text,sentiment\ngood,pos\n")
    _error(
        lambda: read_table(path),
        "train.csv line 1",
        "no column 'text'",
        "'Text', 'sentiment'",
        "--text_columns=Text",
    )
    _error(
        lambda: read_table(path, text_columns=["Text"], skip_bad_rows=True),
        "no column 'label'",
        "--label_column",
    )
    jsonl = _write(tmp_path, "t.jsonl", '{"text": "a", "y": 1}\n')
    _error(lambda: read_table(jsonl), "t.jsonl line 1", "no key 'label'", "'y'")


def test_wrong_field_count(tmp_path):
    content = "text,label\ngood,pos\nfine, really,pos\n"
    path = _write(tmp_path, "train.csv", content)
    _error(
        lambda: read_table(path),
        "train.csv line 3: 3 fields but the header has 2",
        "Quote fields",
        "--skip_bad_rows",
    )


def test_unterminated_quote_names_start_line(tmp_path):
    path = _write(
        tmp_path,
        "train.csv",
        'text,label\ngood,pos\n"never closed,neg\nok,pos\n',
    )
    message = _error(lambda: read_table(path), "train.csv line 3", "closing")
    # Not a row-level problem: skipping does not apply.
    assert _error(lambda: read_table(path, skip_bad_rows=True)) == message
    stray = _write(tmp_path, "stray.csv", 'text,label\n"a"b,pos\n')
    _error(lambda: read_table(stray), "stray.csv line 2", "malformed CSV")


def test_non_utf8_gives_offset_line_and_encoding_flag(tmp_path):
    content = b"text,label\ngood,pos\ncaf\xe9,neg\n"
    for name in ("train.csv", "train.csv.bz2"):
        path = _write(tmp_path, name, content)
        for skip in (False, True):
            _error(
                lambda: read_table(path, skip_bad_rows=skip),
                f"{name} line 3",
                "b'\\xe9'",
                "byte offset 23",
                "--encoding=latin-1",
            )


def test_empty_and_whitespace_text(tmp_path):
    path = _write(tmp_path, "train.csv", "text,label\ngood,pos\n,neg\n")
    _error(
        lambda: read_table(path),
        "train.csv line 3: text column 'text' is empty. Fill it in or pass "
        "--skip_bad_rows.",
    )
    path = _write(tmp_path, "train.csv", 'text,label\n"  \t ",neg\n')
    _error(lambda: read_table(path), "line 2", "empty (only whitespace)")
    path = _write(tmp_path, "t.jsonl", '{"text": null, "label": 1}\n')
    _error(lambda: read_table(path), "t.jsonl line 1", "'text' is empty")
    path = _write(tmp_path, "t.jsonl", '{"text": 5, "label": 1}\n')
    _error(lambda: read_table(path), "t.jsonl line 1", "not a string")


_GOOD_JSON = '{"text": "a", "label": 1}\n'


@pytest.mark.parametrize(
    "name,content,why",
    [
        ("a.csv", "text,label\ngood,pos\nbad,\n", "is empty"),
        ("a.csv", "text,label\ngood,pos\nbad,NaN\n", "is NaN"),
        ("a.jsonl", _GOOD_JSON * 2 + '{"text":"b","label":NaN}', "NaN"),
        ("a.jsonl", _GOOD_JSON * 2 + '{"text":"b","label":null}', "empty"),
        # A number such as 0.5 is a regression target now (test_tasks.py);
        # an object is no label.
        ("a.jsonl", _GOOD_JSON * 2 + '{"text":"b","label":{"x":1}}',
         "an object"),
    ],
)
def test_empty_or_nan_label(tmp_path, name, content, why):
    path = _write(tmp_path, name, content)
    _error(
        lambda: read_table(path), f"{name} line 3", "label column 'label'", why
    )


def test_jsonl_not_object_or_invalid(tmp_path):
    path = _write(tmp_path, "t.jsonl", '{"text":"a","label":1}\n["a", 1]\n')
    _error(lambda: read_table(path), "t.jsonl line 2", "expected a JSON object")
    path = _write(tmp_path, "t.jsonl", '{"text":"a","label":1}\n{"text":"b",')
    _error(lambda: read_table(path), "t.jsonl line 2", "invalid JSON at column")
    path = _write(tmp_path, "t.json", '[\n  {"text": "a", "label": 1}\n]\n')
    _error(lambda: read_table(path), "t.json", "JSON array", "jq")


def test_duplicated_header_mid_file(tmp_path):
    path = _write(
        tmp_path, "train.csv", "text,label\ngood,pos\n text , label\nbad,neg\n"
    )
    _error(lambda: read_table(path), "train.csv line 3", "repeats the header")


def test_long_text_is_truncated_and_counted(tmp_path):
    long_text = "é" * 30  # 60 bytes in UTF-8.
    path = _write(
        tmp_path,
        "train.csv",
        f"text,label\n{long_text},pos\nshort,neg\n{long_text}x,pos\n",
    )
    table = read_table(path, max_text_bytes=25)
    # Cut on a character boundary: 12 two-byte characters.
    assert table.texts[0] == ("é" * 12, "short", "é" * 12)
    (warning,) = table.warnings
    assert "2 texts longer than 25 bytes" in warning
    assert "line 2, column 'text'" in warning and "`max_text_bytes`" in warning
    _error(lambda: read_table(path, max_text_bytes=0), "`max_text_bytes`")


def test_missing_and_corrupt_files(tmp_path):
    missing = tmp_path / "nope.csv"
    _error(lambda: read_table(missing), "nope.csv", "no such file")
    path = tmp_path / "train.csv.bz2"
    path.write_bytes(b"not bzip2 at all")
    _error(lambda: read_table(path), "train.csv.bz2", "bz2 data is corrupt")


def test_bad_column_arguments(tmp_path):
    path = _write(tmp_path, "train.csv", "text,label\ngood,pos\n")
    _error(lambda: read_table(path, text_columns="abc"), "no column 'abc'")
    three = ("a", "b", "c")
    _error(lambda: read_table(path, text_columns=three), "--text_columns")
    same = "--label_column='text'"
    _error(lambda: read_table(path, label_column="text"), same)


def test_skip_bad_rows_counts_and_quotes_first_five(tmp_path):
    path = _write(
        tmp_path,
        "train.csv",
        "text,label\n"
        "good,pos\n"  # 2
        "three,fields,pos\n"  # 3: field count
        ",neg\n"  # 4: empty text
        "bad,\n"  # 5: empty label
        "text,label\n"  # 6: repeated header
        "meh,nan\n"  # 7: NaN label
        "  ,pos\n"  # 8: whitespace text
        "fine,neg\n",  # 9
    )
    table = read_table(path, skip_bad_rows=True)
    assert table.texts == (("good", "fine"),)
    assert table.lines == (2, 9)
    assert table.bad_rows.count == 6
    assert len(table.bad_rows.examples) == 5
    assert table.bad_rows.examples[0] == (
        f"{path}:3: 3 fields but the header has 2"
    )
    assert [e.split(":")[1] for e in table.bad_rows.examples] == [
        "3", "4", "5", "6", "7"
    ]
    (warning,) = table.warnings
    assert "skipped 6 bad rows" in warning
    jsonl = _write(
        tmp_path,
        "t.jsonl",
        '{"text":"a","label":1}\n[1]\n{bad\n{"text":"b","label":0}\n',
    )
    table = read_table(jsonl, skip_bad_rows=True)
    assert table.lines == (1, 4) and table.bad_rows.count == 2
    all_bad = _write(tmp_path, "all.csv", "text,label\n,pos\n,neg\n")
    _error(lambda: read_table(all_bad, skip_bad_rows=True), "all 2 rows")


# === Splits ===


def _many(n=600, duplicates=0):
    texts = [f"review number {i}" for i in range(n)]
    labels = ["pos" if i % 3 else "neg" for i in range(n)]
    # Duplicates (some with other whitespace) keep their original's label.
    for i in range(duplicates):
        texts.append(f"review  number {i} " if i % 2 else f"review number {i}")
        labels.append(labels[i])
    return _table(texts, labels, source="many.csv")


def test_split_is_deterministic_and_keeps_duplicates_together():
    table = _many(duplicates=200)
    first = load_splits(train=table)
    again = load_splits(train=table)
    other_seed = load_splits(train=table, seed=1)
    for name in ("train", "validation", "test"):
        a, b = getattr(first, name), getattr(again, name)
        assert a.lines == b.lines and a.texts == b.texts
        np.testing.assert_array_equal(a.labels, b.labels)
    assert first.train.lines != other_seed.train.lines
    sizes = [len(first.train), len(first.validation), len(first.test)]
    assert sum(sizes) == len(table)
    assert 0.7 < sizes[0] / len(table) < 0.9 and min(sizes) > 30
    where = {}
    for name in ("train", "validation", "test"):
        for text in getattr(first, name).texts[0]:
            where.setdefault(" ".join(text.split()), set()).add(name)
    assert all(len(names) == 1 for names in where.values())
    assert first.train.labels.dtype == np.int32
    assert not first.train.labels.flags.writeable
    # Rows keep their file order within a split.
    assert list(first.train.lines) == sorted(first.train.lines)


def test_validation_and_test_files(tmp_path):
    train = _write(tmp_path, "train.csv", "text,label\na,pos\nb,neg\nc,pos\n")
    dev = _write(tmp_path, "dev.csv", "text,label\nd,neg\n")
    test = _write(tmp_path, "test.csv", "text,label\ne,pos\nf,neutral\n")
    _error(
        lambda: load_splits(train=train, validation=dev, test=test),
        "test.csv line 3",
        "label 'neutral' is not one of the 2 training labels",
    )
    test = _write(tmp_path, "test.csv", "text,label\ne,pos\n")
    splits = load_splits(train=train, validation=dev, test=test)
    assert splits.train.texts == (("a", "b", "c"),)  # Nothing split off.
    assert splits.validation.source == str(dev)
    np.testing.assert_array_equal(splits.validation.labels, [0])
    np.testing.assert_array_equal(splits.test.labels, [1])
    # With a validation file only, the test split comes out of train.
    table = _many()
    only_dev = load_splits(train=table, validation=_table(["x"], ["neg"]))
    assert len(only_dev.validation) == 1
    assert len(only_dev.train) + len(only_dev.test) == len(table)
    assert 0.8 < len(only_dev.train) / len(table) < 0.95


def test_one_training_class_is_an_error():
    _error(
        lambda: load_splits(train=_table(["a", "b"], ["pos", "pos"], "t.csv")),
        "t.csv",
        "every row has label 'pos'",
        "at least 2 classes",
    )


def test_integer_labels_and_num_classes():
    table = _table(["a", "b", "c", "d"], ["0", "2", "0", "2"], "t.csv")
    splits = load_splits(train=table, split=(1.0, 0.0, 0.0), num_classes=3)
    assert splits.vocab.names == ("0", "1", "2")
    np.testing.assert_array_equal(splits.train.labels, [0, 2, 0, 2])
    inferred = load_splits(train=table, split=(1.0, 0.0, 0.0))
    np.testing.assert_array_equal(inferred.train.labels, [0, 1, 0, 1])
    assert any("`num_classes`" in w for w in inferred.warnings)
    bad = _table(["a", "b", "c"], ["0", "1", "3"], "t.csv")
    _error(
        lambda: load_splits(train=bad, num_classes=3),
        "t.csv line 4",
        "label 3 is outside [0, 3)",
    )


def test_bad_split_arguments():
    table = _many(30)
    _error(lambda: load_splits(train=table, split=(0.8, 0.1)), "--split")
    _error(lambda: load_splits(train=table, split=(0.8, 0.3, 0.1)), "--split")
    _error(lambda: load_splits(train=42), "`train` must be a file path")


# === Rotten Tomatoes layout and TFDS ===


def test_rotten_tomatoes_layout(tmp_path):
    path = _write(
        tmp_path,
        "rt.csv.bz2",
        "category,text,movie_name,has_plot_and_reviews\n"
        "plot,,m,False\n"  # Plot rows without text are dropped, not errors.
        'fresh,"Warm, funny.",m,True\n'
        "rotten,Tedious.,m,True\n"
        "plot,Story.,m,True\n",
    )
    table = rotten_tomatoes_table(path)
    assert table.texts == (("Warm, funny.", "Tedious."),)
    assert table.labels == ("fresh", "rotten") and table.lines == (3, 4)
    assert table.label_names == ("fresh", "rotten")
    wrong = _write(tmp_path, "wrong.csv", "category,text\nplot,x\n")
    _error(lambda: rotten_tomatoes_table(wrong), "wrong.csv", "'fresh'")


def test_tfds_mock_data_and_class_label_names(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        table = tfds_table("glue/sst2", data_dir=tmp_path, split="validation")
    assert table.text_columns == ("sentence",)
    assert table.label_names == ("negative", "positive")
    assert len(table) == 6 and table.lines == (1, 2, 3, 4, 5, 6)
    assert set(table.labels) <= {"negative", "positive"}
    assert all(isinstance(t, str) and t.strip() for t in table.texts[0])
    splits = load_splits(train=table, validation=table, test=table)
    assert splits.vocab.names == ("negative", "positive")
    expected = [table.label_names.index(x) for x in table.labels]
    np.testing.assert_array_equal(splits.train.labels, expected)


def test_tfds_not_prepared_or_unknown(tmp_path):
    _error(
        lambda: tfds_table("glue/sst2", data_dir=tmp_path),
        f"TFDS dataset 'glue/sst2' is not prepared in {tmp_path}",
        "tfds build",
        "--tfds_data_dir",
    )
    _error(lambda: tfds_table("no_such_dataset_xyz"), "no_such_dataset_xyz")


def test_docstring_examples_run():
    # `doctest.testmod` only looks at what a module defines itself, not at
    # what it imports, so run it on every submodule of the package.
    attempted = 0
    for info in pkgutil.iter_modules(data.__path__):
        module = importlib.import_module(f"{data.__name__}.{info.name}")
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 15


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_nul_byte_is_corruption_named_by_file_and_line(tmp_path, suffix):
    path = tmp_path / f"train{suffix}"
    if suffix == ".csv":
        path.write_bytes(b"text,label\ngood film,pos\nbad\x00 film,neg\n")
        line = 3
    else:
        path.write_bytes(b'{"text": "good", "label": "pos"}\n'
                         b'{"text": "bad\x00", "label": "neg"}\n')
        line = 2
    with pytest.raises(DataError) as error:
        read_table(str(path), text_columns=["text"], label_column="label",
                   skip_bad_rows=True)
    message = str(error.value)
    assert f"{path} line {line}: a NUL byte" in message
    assert "\n" not in message
