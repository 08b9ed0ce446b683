"""Converting the TFLite graph to .tflite files, quantized or not.

float32; float16 weights; dynamic-range int8 weights; full-integer int8,
calibrated on representative texts through TF Text's kernels. And the
float32 probe that finds whether the graph needs a fixed sequence length.
"""

import os
import tempfile
import warnings

import tensorflow as tf
import tensorflow_text as tf_text

from painless_tf.export.formats import INPUT_NAMES
from painless_tf.export.predictors import _tflite_predict_fn


def _convert_tflite(source, name, calibration, host=None):
    """The .tflite file `name` of the graph in `source`; `calibration`:
    examples for `tflite_int8`; `host`: the packer of a token-id graph
    (`token_ids.host_packer`), None for one that takes strings."""
    converter = tf.lite.TFLiteConverter.from_saved_model(source)
    # The tokenizer's ops are TF Text's TFLite custom ops.
    converter.allow_custom_ops = True
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if name != "tflite_float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if name == "tflite_float16":
        converter.target_spec.supported_types = [tf.float16]
    if name == "tflite_int8":
        # One text per calibration call: no padding, so the ranges come from
        # real activations, not from attention-mask fill values.
        columns = calibration.texts

        def representative_dataset():
            for row in zip(*columns):
                if host is not None:
                    yield host([row[0]], [row[1]] if len(row) > 1 else None)
                    continue
                yield {
                    INPUT_NAMES[i]: tf.constant([text])
                    for i, text in enumerate(row)
                }

        converter.representative_dataset = representative_dataset
        _register_tf_text_ops_for_calibration(converter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def _probe_float32(source, num_text_columns, host=None,
                   output="probabilities"):
    """`(content, static)`: the float32 TFLite model of `source` (None if
    it does not convert or run), and whether it has ops that neither TFLite
    nor TF Text has a kernel for (they became custom ops, which fail when
    the graph first runs). Failures are left to the formats' own attempts,
    which report them. `output`: the graph's score output
    (`SCORE_OUTPUTS`)."""
    try:
        content = _convert_tflite(source, "tflite_float32", None, host=host)
    except Exception:  # noqa: BLE001
        return None, False
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "probe.tflite")
        with open(path, "wb") as f:
            f.write(content)
        try:
            predict = _tflite_predict_fn(path, num_threads=1, host=host,
                                         output=output)
            predict(["a b"], ["c"] if num_text_columns == 2 else None)
        except Exception as error:  # noqa: BLE001
            return None, "unresolved custom op" in str(error)
    return content, False


def _register_tf_text_ops_for_calibration(converter):
    # Calibration runs the model in a TFLite interpreter, which needs the TF
    # Text kernels; TF 2.21 exposes no public setting for that, only this
    # attribute read by `TFLiteConverter._calibrate_quantize_model`.
    converter.target_spec._experimental_custom_op_registerers = list(
        tf_text.tflite_registrar.SELECT_TFTEXT_OPS
    )
