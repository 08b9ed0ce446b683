"""One worker of the multi-worker equivalence test (run as a subprocess).

Usage: python tests/multiworker_worker.py OUT.npz [single]
With TF_CONFIG set, trains under MultiWorkerMirroredStrategy; with `single`,
on one device with the same global batch. Saves the final weights.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tiny  # noqa: E402
from painless_tf import distribution  # noqa: E402
from painless_tf.engine import Trainer  # noqa: E402

GLOBAL_BATCH = 8


def main(out, mode):
    if mode == "single":
        strategy, k = distribution.make_strategy("default"), 4
    else:
        # Created first: collective ops must be configured at startup.
        strategy, k = distribution.make_strategy("multi_worker_mirrored"), 2
    keras.utils.set_random_seed(7)
    x, y, w = tiny.token_batch(32)
    dataset = tiny.dataset(x, y, w, GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    dataset = dataset.with_options(options)
    with strategy.scope():
        trainer = Trainer(tiny.tiny_classifier(dropout=0.0),
                          accumulation_steps=k)
        trainer.compile(optimizer=tiny.optimizer("adamw"),
                        weighted_metrics=["sparse_categorical_accuracy"])
    history = trainer.fit(dataset, epochs=2, verbose=0)
    np.savez(out, *tiny.weights_of(trainer.model),
             loss=np.array(history.history["loss"]),
             iterations=int(trainer.optimizer.iterations.numpy()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "worker")
