"""Memory: the probe that finds the largest micro-batch that fits a device.

On a GPU, running out of memory raises `tf.errors.ResourceExhaustedError`
(some XLA out-of-memory errors come as internal errors and are translated),
so the plan can search the micro-batch by trying: `plan.make_plan` calls
this probe with candidate sizes (binary search over powers of two) and
caches the answer per device, model, precision and length. On a CPU, where
running out of memory kills the process instead, the plan estimates.
"""

import functools
import gc
import time

class MicroBatchProbe:
    """`plan.FitsProbe` that trains one update of the real model.

    An out-of-memory error raises `tf.errors.ResourceExhaustedError`, which
    `plan.make_plan` counts as "does not fit". Every call is recorded.

    Args:
        model_path: str. keras-hub preset folder.
        simulate_oom_above: int or None. Raise a simulated OOM for larger
            micro-batches instead of training (dry run on CPU).
        make_trainer: callable or None. `model, xla -> compiled
            engine.Trainer` with the run's update (`trainers.make_trainer`
            with the run's optimizer settings); None: AdamW with its
            defaults.

    Examples:
    >>> probe = MicroBatchProbe("unused", simulate_oom_above=0)
    >>> probe.calls
    []
    """

    def __init__(self, model_path, *, simulate_oom_above=None,
                 make_trainer=None):
        self.model_path = model_path
        self.make_trainer = make_trainer
        self.simulate_oom_above = simulate_oom_above
        self.calls = []

    def __call__(self, micro_batch_size, *, precision, xla,
                 max_sequence_length):
        import tensorflow as tf

        start = time.perf_counter()
        call = {"micro_batch_size": int(micro_batch_size),
                "precision": precision, "xla": bool(xla),
                "max_sequence_length": int(max_sequence_length)}
        self.calls.append(call)
        try:
            if (self.simulate_oom_above is not None
                    and micro_batch_size > self.simulate_oom_above):
                raise tf.errors.ResourceExhaustedError(
                    None, None, "simulated out-of-memory (dry run)")
            self._train_once(micro_batch_size, precision, xla,
                             max_sequence_length)
            call["fits"] = True
            return True
        except (tf.errors.ResourceExhaustedError,
                tf.errors.InternalError, tf.errors.UnknownError) as e:
            message = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            call.update(fits=False, error=message)
            if isinstance(e, tf.errors.ResourceExhaustedError) or (
                "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e)
            ):
                # XLA reports some OOMs as internal errors; the plan only
                # knows ResourceExhaustedError.
                raise tf.errors.ResourceExhaustedError(None, None, message)
            raise
        finally:
            call["seconds"] = time.perf_counter() - start
            _release()

    def _train_once(self, micro, precision, xla, length):
        import keras_hub
        import numpy as np

        from painless_tf import trainers
        from painless_tf import precision as precision_lib

        precision_lib.set_policy(precision)
        try:
            # Random weights take the memory trained ones do, without
            # reading them from disk for every probe.
            classifier = keras_hub.models.TextClassifier.from_preset(
                self.model_path, load_weights=False, num_classes=2,
                preprocessor=None)
            build = self.make_trainer or functools.partial(
                trainers.make_trainer, learning_rate=1e-5)
            trainer = build(classifier, xla=xla)
            rng = np.random.default_rng(0)
            vocabulary = classifier.backbone.vocabulary_size
            x = {
                "token_ids": rng.integers(
                    5, vocabulary, (micro, length)).astype("int32"),
                "segment_ids": np.zeros((micro, length), "int32"),
                "padding_mask": np.ones((micro, length), "int32"),
            }
            y = np.zeros((micro,), "int32")
            # The second update runs with the optimizer's slots allocated.
            for _ in range(2):
                logs = trainer.train_on_batch(x, y, return_dict=True)
            float(np.asarray(logs["loss"]))
        finally:
            precision_lib.set_policy("float32")


def _release():
    import keras

    keras.backend.clear_session()
    gc.collect()
