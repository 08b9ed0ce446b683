"""`tfds_table`: reading a TFDS data set already prepared in a data
directory (nothing is downloaded), with its `ClassLabel` names.
"""

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from painless_tf.data.columns import _check_columns
from painless_tf.data.errors import DataError
from painless_tf.data.errors import _one_line
from painless_tf.data.rows import _RowCollector
from painless_tf.data.rows import _check_max_text_bytes
from painless_tf.data.tables import RawTable


def tfds_table(
    name: str,
    *,
    data_dir=None,
    split: str = "train",
    text_columns: Sequence[str] | None = None,
    label_column: str = "label",
    skip_bad_rows: bool = False,
    max_text_bytes: int = 1_000_000,
) -> RawTable:
    """Reads a TFDS data set that is already prepared in `data_dir`.

    Nothing is downloaded. Label names come from the label's `ClassLabel`
    feature when it has one (and fix the label ids); examples whose label is
    outside the classes (GLUE marks unlabelled test examples with -1) are bad
    rows.

    Args:
        name: str. The TFDS name, e.g. `"glue/sst2"` or `"imdb_reviews"`.
        data_dir: str, path-like or None. Where the data set was prepared;
            None for the TFDS default (`~/tensorflow_datasets` or
            `$TFDS_DATA_DIR`).
        split: str. The TFDS split, e.g. `"train"` or `"validation[:50%]"`.
        text_columns: sequence of str, or None. The 1 or 2 text features;
            None to use the data set's `Text` features when there are 1 or 2.
        label_column: str. The label feature.
        skip_bad_rows: bool. Skip and count bad examples instead of raising.
        max_text_bytes: int. Longer texts (in UTF-8 bytes) are truncated.

    Returns:
        A `RawTable` whose `lines` are 1-based example numbers.

    Examples:

    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=4):
    ...     table = tfds_table("imdb_reviews", split="test")
    >>> len(table), table.text_columns, table.label_names
    (4, ('text',), ('neg', 'pos'))
    """
    # Imported here: it takes seconds and pulls in TensorFlow, which reading
    # files does not need.
    import tensorflow_datasets as tfds

    _check_max_text_bytes(max_text_bytes)
    source = f"{name}[{split}]"
    try:
        dataset, info = tfds.load(
            name, split=split, data_dir=data_dir, download=False, with_info=True
        )
    except tfds.core.DatasetNotFoundError:
        raise DataError(
            f"TFDS has no dataset named {name!r}. Check the name (e.g. "
            "'glue/sst2', 'imdb_reviews')."
        ) from None
    except AssertionError:
        # TFDS asserts that the data exists when asked not to download it.
        root = data_dir or tfds.builder(name, data_dir=data_dir).data_dir_root
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in {os.fspath(root)}; "
            "prepare it on a machine with internet (tfds build) and pass "
            "--tfds_data_dir"
        ) from None
    except ValueError as e:
        raise DataError(
            f"TFDS dataset {name!r}, split {split!r}: {_one_line(e)}. Check "
            "the dataset name, config and split."
        ) from None

    features = info.features
    found = ", ".join(features.keys())
    if text_columns is None:
        text_columns = [
            key
            for key, feature in features.items()
            if isinstance(feature, tfds.features.Text)
        ]
        if len(text_columns) not in (1, 2):
            raise DataError(
                f"{source}: cannot tell the text features apart (features: "
                f"{found}). Pass --text_columns with 1 or 2 of them."
            )
    text_columns = _check_columns(text_columns, label_column)
    for column, flag in [(c, "--text_columns") for c in text_columns] + [
        (label_column, "--label_column")
    ]:
        if column not in features:
            raise DataError(
                f"{source}: no feature {column!r} (features: {found}). Pass "
                f"{flag} with one of them."
            )
    label_feature = features[label_column]
    label_names = None
    if isinstance(label_feature, tfds.features.ClassLabel):
        label_names = tuple(label_feature.names)

    rows = _RowCollector(
        source,
        text_columns,
        label_column,
        skip_bad_rows,
        max_text_bytes,
        row_name="example",
    )
    for number, example in enumerate(tfds.as_numpy(dataset), start=1):
        texts = [_tfds_string(example[c]) for c in text_columns]
        label = example[label_column]
        if label_names is None:
            rows.add(number, texts, _tfds_string(label))
        elif 0 <= int(label) < len(label_names):
            rows.add(number, texts, label_names[int(label)])
        else:
            rows.bad(
                number,
                f"label {int(label)} is outside the {len(label_names)} classes"
                " (TFDS marks unlabelled examples with -1)",
                "Use a split with labels",
            )
    if not rows.num_rows:
        raise DataError(f"{source}: the split is empty. Pass another --split.")
    table = rows.table()
    return dataclasses.replace(table, label_names=label_names)


def _tfds_string(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)
