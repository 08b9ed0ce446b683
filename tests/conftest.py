"""Test set-up shared by every test file.

Two logical CPU devices are configured before TensorFlow starts, so that
`tf.distribute.MirroredStrategy` has two replicas on a one-CPU machine. The
global dtype policy and the random seeds are reset around each test.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Deterministic kernels make "resumed == uninterrupted" and "2 replicas == 1"
# comparable to 1e-6 on the CPU.
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:
    # Already initialized by an earlier import in this process.
    pass


@pytest.fixture(autouse=True)
def _reset_policy_and_seeds():
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")

