"""`TensorBoardLogger`: the sink that writes TensorBoard scalars.

It writes with `tf.summary` file writers directly rather than through
`keras.callbacks.TensorBoard`: it writes at the interval closes (see
`painless_tf.monitoring.callback`) on the update axis, without the Keras
callback's per-batch log conversion, graph tracing or profiler hooks; it
can write the monitors' values, which never reach Keras' batch logs; and it
needs no `tensorboard` package to write (only to view:
`pip install tensorboard`).
"""

import os

import tensorflow as tf

from painless_tf.monitoring.interval import _DEFAULT_LOG_EVERY_STEPS
from painless_tf.monitoring.records import _NOT_SCALARS
from painless_tf.monitoring.records import _number
from painless_tf.monitoring.sinks import _Sink


class TensorBoardLogger(_Sink):
    """Writes TensorBoard scalars for the loss, metrics and monitors.

    Under `log_dir/train`: every interval's mean loss and metrics and the
    monitors' values (tags as in `history.json`), and each epoch's
    training metrics as `epoch_<name>`. Under `log_dir/validation`: each
    epoch's validation metrics as `epoch_<name>`, so train and validation
    curves overlay. Every scalar's step is the number of steps (updates)
    done since `fit` began.

    Args:
        log_dir: str. E.g. `<model_dir>/tensorboard`.
        monitors: sequence of monitors (listed before this callback in
            `fit`) whose values to write.
        log_every_steps: int. Steps per interval.

    Examples:
    >>> import os, tempfile
    >>> import keras
    >>> import numpy as np
    >>> log_dir = tempfile.mkdtemp()
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> _ = model.fit(np.ones((16, 2)), np.ones((16,)), batch_size=4,
    ...               epochs=1, verbose=0,
    ...               callbacks=[TensorBoardLogger(log_dir, log_every_steps=2)])
    >>> sorted(os.listdir(log_dir))
    ['train']
    """

    def __init__(
        self,
        log_dir: str,
        *,
        monitors=(),
        log_every_steps: int = _DEFAULT_LOG_EVERY_STEPS,
        initial_step: int = 0,
    ):
        super().__init__(
            monitors=monitors, log_every_steps=log_every_steps,
            initial_step=initial_step,
        )
        self.log_dir = os.fspath(log_dir)
        self._writers = {}

    def _writer(self, name):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(
                os.path.join(self.log_dir, name)
            )
        return self._writers[name]

    def _scalars(self, run, values, step, prefix=""):
        metadata = _scalar_metadata()
        with self._writer(run).as_default():
            for key, value in values.items():
                if key in _NOT_SCALARS:
                    continue
                number = _number(value) if value is not None else None
                if number is not None:
                    tf.summary.write(
                        prefix + key,
                        tf.constant(number, tf.float32),
                        step=step,
                        metadata=metadata,
                    )

    def _on_interval(self, interval):
        self._scalars("train", self._interval_record(interval), interval.stop)

    def _on_epoch_end(self, epoch, logs):
        record = self._epoch_record(epoch, logs)
        train = {k: v for k, v in record.items() if not k.startswith("val_")}
        validation = {
            k[len("val_"):]: v for k, v in record.items() if k.startswith("val_")
        }
        self._scalars("train", train, self._step, prefix="epoch_")
        if validation:
            self._scalars("validation", validation, self._step, prefix="epoch_")
        for writer in self._writers.values():
            writer.flush()

    def _on_train_end(self, logs):
        # Flushed, not closed: the next fit of a run writes on.
        for writer in self._writers.values():
            writer.flush()


def _scalar_metadata():
    """What `tf.summary.scalar` attaches, built without TensorBoard.

    `tf.summary.scalar` lives in the `tensorboard` package, which TensorFlow
    does not install; `tf.summary.write` with the scalars plugin's metadata
    writes the same event, and TensorBoard shows it as a scalar.
    """
    return tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(
            plugin_name="scalars"
        ),
        data_class=1,  # DATA_CLASS_SCALAR in tensorflow/core summary.proto
    )
