"""The export's formats, its options, its error, and how one format fails.

`FORMATS` names what `export_model` can build, `TFLITE_FILES` and the other
names the files it writes into `<model_dir>/export/`, `SCORE_OUTPUTS` the
output that carries each task's scores; `ExportOptions` picks
the formats and sets the measurement; `ExportError` is what every part of
the export raises for a model dir, artifact or option it cannot take.
`_format_attempt` keeps one format's failure its own, both while it is built
(`writer`) and while it is loaded back (`measure`).
"""

import contextlib
import dataclasses
import os
import shutil

from absl import logging

from painless_tf import model_dir as model_dir_lib

FORMATS = (
    "saved_model",
    "tflite_float32",
    "tflite_float16",
    "tflite_dynamic_int8",
    "tflite_int8",
    "keras_int8",
)
TFLITE_FILES = {
    "tflite_float32": "model_float32.tflite",
    "tflite_float16": "model_float16.tflite",
    "tflite_dynamic_int8": "model_dynamic_int8.tflite",
    "tflite_int8": "model_int8.tflite",
}
EXPORT_DIR = model_dir_lib.EXPORT
SAVED_MODEL_DIR = "saved_model"
METADATA_FILE = "export_metadata.json"
REPORT_FILE = "export_report.json"
INPUT_NAMES = ("text", "text_pair")
# The output of every artifact that carries the model's scores, per task:
# class probabilities (softmax), label probabilities (sigmoid), or the
# value in the target's units.
SCORE_OUTPUTS = {
    "classification": "probabilities",
    "multi_label": "probabilities",
    "regression": "value",
}


class ExportError(ValueError):
    """A model dir, artifact or option that cannot be exported or loaded."""


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What `export_model` writes and how it measures it.

    Args:
        formats: tuple of str. Artifacts to build, from `FORMATS`.
        latency_batch_size: int. The batch size of the batched latency and
            of the accuracy runs (examples per call).
        latency_calls: int. Timed calls per artifact at batch size 1; the
            batched latency takes `max(3, latency_calls // 4)` calls.
        max_representative_examples: int. Texts, at most, that calibrate
            `tflite_int8` (one call each).
        max_test_examples: int or None. Test rows, at most, for the accuracy
            runs; None takes all.
        num_threads: int or None. Threads of the TFLite interpreters; None
            takes every core this process may use (TensorFlow's default).

    Examples:

    >>> ExportOptions(formats=("saved_model",)).latency_batch_size
    32
    """

    formats: tuple[str, ...] = FORMATS
    latency_batch_size: int = 32
    latency_calls: int = 40
    max_representative_examples: int = 200
    max_test_examples: int | None = None
    num_threads: int | None = None

    def __post_init__(self):
        formats = tuple(self.formats)
        object.__setattr__(self, "formats", formats)
        unknown = [f for f in formats if f not in FORMATS]
        if not formats or unknown or len(set(formats)) != len(formats):
            raise ExportError(
                f"--formats={','.join(formats)}: each must be one of "
                f"{', '.join(FORMATS)}, at least one, none twice. Pass e.g. "
                "--formats=saved_model,tflite_dynamic_int8."
            )
        for name in ("latency_batch_size", "latency_calls",
                     "max_representative_examples"):
            _check_positive(name, getattr(self, name))
        for name in ("max_test_examples", "num_threads"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))


@contextlib.contextmanager
def _format_attempt(name, skipped, path):
    """Runs one format's build; a failure becomes `skipped[name]` (its
    reason, one line) and its partial files are removed."""
    try:
        yield
    # Converters and kernels fail in many ways (ValueError, RuntimeError,
    # ConverterError, OpError): whatever it is, it is that format's alone.
    except Exception as error:  # noqa: BLE001
        skipped[name] = _first_line(error)
        logging.warning("export: %s failed: %s", name, skipped[name])
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)


def _first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text}"[:300]


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExportError(
            f"--{name} must be a positive integer. Received: {value!r}."
        )
