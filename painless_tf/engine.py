"""The training engine: one exact, accumulating optimizer update per step.

What a "step" is, once for the whole project: **a step is one optimizer
update.** It consumes one global batch, which every replica splits into
`accumulation_steps` micro-batches. `fit(steps_per_epoch=...)`, the progress
bar, `on_train_batch_end`, `optimizer.iterations`, learning-rate schedules,
weight decay, checkpoints and logs all count these updates. A micro-batch is
never a step.

The update is exact: it equals the update of one big batch made of the same
examples, whatever the split.

- Each micro-batch adds the gradient of its *sum* of weighted per-example
  losses (over rows, or over tokens for token-level losses) to replica-local
  accumulators, and adds its sum of weights to a weight accumulator.
- The update divides the summed gradient by the summed weight of the whole
  global batch. That is the gradient of the weighted mean over every real
  example, so uneven micro-batches, zero-weight padding rows and
  token-averaged losses all weigh what they would in one big batch (no mean
  of means).
- Global-norm clipping, weight decay and the loss-scale check see the full
  gradient once per update (`distribution.apply_gradients`).

On one device the update is compiled with XLA as one function
(`fused_update`), and with one micro-batch per update the gradient goes to it
directly, without the accumulators: the same arithmetic in fewer passes over
memory (1.11x faster updates of the default model on the 2-core AMD EPYC of
docs/benchmarks.md, 2026-11-28).

A micro-batch loss is divided by the micro-batch size (a constant) before
differentiation, so loss scaling and float16 see gradients of a per-example
mean's magnitude, not of a sum; the constant is multiplied back at the update.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from painless_tf import distribution


class Trainer(keras.Model):
    """Wraps a Keras model with an exact accumulating, distributed train step.

    The wrapped model keeps its own identity (save it, export it, call it);
    the `Trainer` shares its weights and adds a `fit` whose every step is one
    optimizer update over `accumulation_steps` micro-batches per replica, with
    mixed precision, loss scaling, any `tf.distribute` strategy and an
    XLA-compiled per-replica step. Outputs are cast to float32, so logits and
    loss are float32 under a mixed policy.

    Create it, and call `compile`, under the strategy's scope. A
    `tf.data.Dataset` of raw strings given to `fit`, `evaluate` or `predict`
    goes through the keras-hub model's preprocessor first.

    Args:
        model: keras.Model. Any Keras model, e.g. a keras-hub
            `BertTextClassifier`.
        accumulation_steps: int. Micro-batches per replica per update; the
            per-replica batch must hold `accumulation_steps` micro-batches.
        xla: bool. Compile the per-replica micro-step (forward, backward,
            accumulate) with XLA.
        fused_update: bool or "auto". Compile the optimizer update (unscale,
            finite check, clipping, the optimizer's own math, resetting the
            accumulators) with XLA, which fuses its elementwise passes over
            every weight into a few loops. "auto" fuses on one device (the
            default strategy or `OneDeviceStrategy`, `distribution.
            fusable_update`); a multi-replica update runs unfused.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Examples:
    >>> import numpy as np
    >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> trainer = Trainer(inner, accumulation_steps=2)
    >>> trainer.compile(optimizer="sgd",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x = np.ones((8, 3), "float32"); y = np.zeros((8,), "int32")
    >>> history = trainer.fit(x, y, batch_size=4, epochs=1, verbose=0)
    >>> int(trainer.optimizer.iterations.numpy())
    2
    """

    def __init__(self, model, *, accumulation_steps=1, xla=False,
                 fused_update="auto", **kwargs):
        if int(accumulation_steps) < 1:
            raise ValueError(
                "`accumulation_steps` must be an integer >= 1. "
                f"Received: accumulation_steps={accumulation_steps}"
            )
        kwargs.setdefault("name", f"painless_{model.name}")
        super().__init__(**kwargs)
        self.model = model
        self.accumulation_steps = int(accumulation_steps)
        self.xla = bool(xla)
        if fused_update not in (True, False, "auto"):
            raise ValueError(
                "`fused_update` must be True, False or \"auto\". "
                f"Received: fused_update={fused_update!r}"
            )
        self.fused_update = fused_update
        self.per_example_loss = None
        self._accumulators = None
        self._accumulated_variables = None
        self._normalizer = None
        self._direct = False

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        """`keras.Model.fit`; a `tf.data.Dataset` of raw strings first goes
        through the keras-hub model's preprocessor, as `Task.fit` does.

        An optimizer's moving average of the weights (`use_ema`) stays in
        the optimizer: Keras 3.15.1's `fit` ends by writing it into the
        weights (`finalize_variable_values`), so training in several `fit`
        calls (an epoch per call, a resumed run) would differ from one
        call. `ema.keep_better` puts it in at the end of a run.
        """
        with _average_kept_in(self.optimizer):
            return super().fit(
                self._preprocessed(x), y, *args,
                validation_data=self._preprocessed(validation_data), **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate`, preprocessing raw strings like `fit`."""
        return super().evaluate(self._preprocessed(x), y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`, preprocessing raw strings like `fit`."""
        return super().predict(self._preprocessed(x), *args, **kwargs)

    def _preprocessed(self, data):
        preprocess = getattr(self.model, "preprocess_samples", None)
        if (
            preprocess is None
            or getattr(self.model, "preprocessor", None) is None
            or not isinstance(data, tf.data.Dataset)
            or not any(spec.dtype == tf.string for spec in
                       tf.nest.flatten(data.element_spec))
        ):
            return data
        return data.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE
                        ).prefetch(tf.data.AUTOTUNE)

    def call(self, inputs, training=False):
        outputs = self.model(_model_inputs(self.model, inputs),
                             training=training)
        return tf.nest.map_structure(lambda t: ops.cast(t, "float32"), outputs)

    def compile(
        self,
        optimizer="adamw",
        loss=None,
        metrics=None,
        weighted_metrics=None,
        **kwargs,
    ):
        """Configures the model for training.

        Args:
            optimizer: str or keras.optimizers.Optimizer. Wrapped in a
                `LossScaleOptimizer` when the global policy is
                `mixed_float16` (and not wrapped already).
            loss: keras.losses.Loss or callable or None. Must give one loss
                per example (or per token): a `keras.losses.Loss` instance is
                used through its unreduced `call`; a plain function
                `loss(y_true, y_pred)` must return unreduced values. Defaults
                to sparse categorical cross-entropy on logits.
            metrics: list. Keras metrics, as in `keras.Model.compile`.
            weighted_metrics: list. Keras metrics weighted by sample weight
                (padding rows have weight 0; prefer these).
            **kwargs: other `keras.Model.compile` arguments, except
                `jit_compile` (use `xla=` on the `Trainer`) and
                `steps_per_execution` (a step is one update).
        """
        for name, harmless in (("jit_compile", (None, False, "auto")),
                               ("steps_per_execution", (None, 1))):
            value = kwargs.pop(name, None)
            # `True == 1` in Python: compare identities for booleans.
            if not any(value is h or (type(value) is type(h) and value == h)
                       for h in harmless):
                raise ValueError(
                    f"`{name}` is not supported by painless_tf.Trainer: "
                    "the whole-model compile breaks under tf.distribute. "
                    "Pass `xla=True` to the Trainer to compile the "
                    "per-replica step instead."
                )
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        optimizer = keras.optimizers.get(optimizer)
        if keras.mixed_precision.global_policy().name == "mixed_float16" and (
            not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        ):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        self.per_example_loss = loss
        super().compile(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            weighted_metrics=weighted_metrics,
            jit_compile=False,
            steps_per_execution=1,
            **kwargs,
        )

    # === Per-replica pieces ===

    def _unreduced_loss(self, y, y_pred):
        if isinstance(self.per_example_loss, keras.losses.Loss):
            return self.per_example_loss.call(y, y_pred)
        return self.per_example_loss(y, y_pred)

    def _trainable_changed(self):
        return self._accumulated_variables != tuple(
            id(v) for v in self.trainable_variables
        )

    def _ensure_accumulators(self):
        # One accumulator per trainable variable, matched by position: a
        # layer frozen or unfrozen since they were made (gradual unfreezing,
        # freezing.py) needs a new set, and the step a new trace.
        if (self._accumulators is not None and not self._trainable_changed()
                and (not self._accumulators) == self._direct):
            return
        self._accumulated_variables = tuple(
            id(v) for v in self.trainable_variables
        )
        with self.distribute_strategy.scope():
            # The direct path (see `make_train_function`) needs none.
            self._accumulators = [] if self._direct else [
                distribution.create_accumulator(v, f"accumulator_{i}")
                for i, v in enumerate(self.trainable_variables)
            ]
            if hasattr(self, "nonfinite_updates"):
                return
            self._weight_accumulator = distribution.create_accumulator(
                tf.zeros(()), "accumulated_weight"
            )
            self.nonfinite_updates = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="nonfinite_updates",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

    def _micro_step(self, x, y, sample_weight, micro_batch_size):
        """Forward, backward and accumulate one micro-batch on one replica.

        Returns the micro-batch's loss and weight sums and predictions, and
        its gradients on the direct path (which accumulates nothing), else
        None.
        """
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            per_example = ops.cast(self._unreduced_loss(y, y_pred), "float32")
            weight = _broadcast_weight(sample_weight, per_example)
            loss_sum = ops.sum(per_example * weight)
            weight_sum = ops.sum(weight)
            # Dividing by a constant keeps the magnitudes of a mean; the
            # update multiplies it back (see the module docstring).
            objective = loss_sum / micro_batch_size
            if self.losses:
                # Regularization enters each micro-batch in proportion to
                # its weight, so the update sees it exactly once.
                objective += ops.sum(self.losses) * (
                    weight_sum / micro_batch_size
                )
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                objective = self.optimizer.scale_loss(objective)
        grads = tape.gradient(objective, self.trainable_variables)
        if self._direct:
            # One micro-batch on one device: its gradient is the update's,
            # and goes straight to the fused update (no accumulator pass).
            return loss_sum, weight_sum, y_pred, [
                None if g is None else tf.convert_to_tensor(g) for g in grads
            ]
        for accumulator, grad in zip(self._accumulators, grads):
            if grad is None:
                continue
            # Replica-local (ON_READ) variables take no `scatter_add`: an
            # embedding's sparse gradient is made dense here, once per
            # micro-batch.
            accumulator.assign_add(
                ops.cast(tf.convert_to_tensor(grad), "float32")
            )
        self._weight_accumulator.assign_add(weight_sum)
        return loss_sum, weight_sum, y_pred, None

    def _replica_train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        k = self.accumulation_steps
        rows = _num_rows(y)
        if sample_weight is None:
            sample_weight = tf.ones([rows], dtype="float32")
        sample_weight = ops.cast(sample_weight, "float32")
        micro = -(-rows // k)  # ceil: the last micro-batch may be uneven
        if isinstance(rows, int) and rows % k == 0:
            index = None
        else:
            # Pad to k equal micro-batches with zero-weight copies of real
            # rows (copies, not zeros: an all-masked row can give NaN).
            index = tf.range(k * micro) % rows
            real = ops.cast(tf.range(k * micro) < rows, "float32")
            x, y = (tf.nest.map_structure(lambda t: tf.gather(t, index), d)
                    for d in (x, y))
            sample_weight = tf.gather(sample_weight, index)
            sample_weight *= _broadcast_weight(real, sample_weight)
        if self._normalizer is None:
            # Fixed at the first trace, shared by every micro-step and the
            # update: any constant is exact, a micro-batch size keeps the
            # magnitudes of a mean.
            self._normalizer = float(micro) if isinstance(micro, int) else 1.0
        micro_batch_size = self._normalizer

        def micro_slice(t, i):
            return t[i * micro:(i + 1) * micro]

        loss_total = tf.zeros((), "float32")
        weight_total = tf.zeros((), "float32")
        predictions = []
        for i in range(k):
            # A Python loop: k is small and static, and each call is one
            # compiled micro-step with static shapes.
            xs, ys, ws = tf.nest.map_structure(
                lambda t: micro_slice(t, i), (x, y, sample_weight)
            )
            loss_sum, weight_sum, y_pred, grads = self._compiled_micro_step(
                xs, ys, ws, micro_batch_size
            )
            loss_total += loss_sum
            weight_total += weight_sum
            predictions.append(y_pred)
        y_pred = tf.nest.map_structure(
            lambda *parts: tf.concat(parts, axis=0), *predictions
        )
        if index is not None:
            y_pred = tf.nest.map_structure(lambda t: t[:rows], y_pred)
            x, y, sample_weight = tf.nest.map_structure(
                lambda t: t[:rows], (x, y, sample_weight)
            )
        mean = tf.math.divide_no_nan(loss_total, weight_total)
        # A non-finite loss is not averaged into the epoch's loss: the update
        # is skipped and counted instead (see `_apply_update`).
        finite = tf.math.is_finite(mean)
        distribution.loss_tracker(self).update_state(
            tf.where(finite, mean, 0.0),
            sample_weight=tf.where(finite, weight_total, 0.0),
        )
        self.compute_metrics(x, y, y_pred, sample_weight)
        return (grads, weight_total) if self._direct else None

    def _apply_update(self, grads=None, weight=None):
        """Cross-replica: one optimizer update from the accumulated sums.

        `grads` and `weight` are given instead on the direct path (one
        micro-batch on one device, see `make_train_function`).
        """
        if grads is None:
            weight = self._weight_accumulator.read_value()
            grads = [a.read_value() for a in self._accumulators]
        else:
            grads = [
                tf.zeros_like(v) if g is None else g
                for g, v in zip(grads, self.trainable_variables)
            ]
        # Undo the per-micro-batch constant: the micro-batch size was the
        # same for every micro-batch and replica of this update.
        scale = tf.math.divide_no_nan(self._normalizer, weight)
        grads = [ops.cast(g, "float32") * scale for g in grads]
        finite = tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(g)) for g in grads]
        )
        self.nonfinite_updates.assign_add(tf.cast(~finite, "int64"))

        def apply():
            distribution.apply_gradients(
                self.optimizer, grads, self.trainable_variables
            )

        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            apply()  # skips a non-finite update itself and lowers the scale
        else:
            # float32 / bfloat16: a non-finite update is skipped too, and
            # counted; `checkpointing.NanGuard` decides what to do about it.
            tf.cond(finite, apply, lambda: None)
        if self._direct:
            return
        for accumulator in self._accumulators:
            accumulator.assign(tf.zeros_like(accumulator))
        self._weight_accumulator.assign(tf.zeros(()))

    # === Keras hooks ===

    def make_train_function(self, force=False):
        if (self.train_function is not None and not force
                and not self._trainable_changed()):
            return self.train_function
        strategy = self.distribute_strategy
        fused = self.fused_update
        if fused == "auto":
            fused = distribution.fusable_update(strategy)
        # The update is memory-bound: it streams every weight, its gradient
        # and the optimizer's slots. Fused, that is one pass; without
        # accumulation (the direct path) the accumulators' three passes
        # (add, read, reset) and their memory go too.
        self._direct = bool(fused) and self.accumulation_steps == 1
        self._ensure_accumulators()
        # Every function here runs without autograph, as Keras's own train
        # step does: the steps' control flow is explicit (`tf.cond`, a static
        # Python loop), and converting the model's code cost seconds of
        # every trace (autograph's AST passes were about 10 of the 96
        # profiled seconds of a tiny model's run, 2026-12-02).
        self._compiled_micro_step = tf.function(
            self._micro_step, jit_compile=self.xla, reduce_retracing=True,
            autograph=False,
        )
        apply_update = (
            tf.function(self._apply_update, jit_compile=True,
                        autograph=False)
            if fused else self._apply_update
        )

        @tf.function(reduce_retracing=True, autograph=False)
        def update_on_data(data):
            direct = strategy.run(self._replica_train_step, args=(data,))
            if direct is None:
                apply_update()
            else:
                apply_update(*direct)
            return self.get_metrics_result()

        @tf.function(reduce_retracing=True, autograph=False)
        def update_on_iterator(iterator):
            # `next` inside the function: the input pipeline's prefetch
            # overlaps with the step.
            return update_on_data(next(iterator))

        self.train_function = _iterator_or_batches(
            update_on_iterator, update_on_data
        )
        return self.train_function

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        strategy = self.distribute_strategy
        predict = tf.function(
            lambda x: self(x, training=False),
            jit_compile=self.xla,
            reduce_retracing=True,
            autograph=False,
        )

        def replica_step(data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            y_pred = predict(x)
            per_example = ops.cast(self._unreduced_loss(y, y_pred), "float32")
            if sample_weight is None:
                sample_weight = tf.ones([_num_rows(y)], "float32")
            weight = _broadcast_weight(
                ops.cast(sample_weight, "float32"), per_example
            )
            weight_sum = ops.sum(weight)
            distribution.loss_tracker(self).update_state(
                tf.math.divide_no_nan(ops.sum(per_example * weight),
                                      weight_sum),
                sample_weight=weight_sum,
            )
            self.compute_metrics(x, y, y_pred, sample_weight)

        @tf.function(reduce_retracing=True, autograph=False)
        def test_on_data(data):
            strategy.run(replica_step, args=(data,))
            return self.get_metrics_result()

        @tf.function(reduce_retracing=True, autograph=False)
        def test_on_iterator(iterator):
            return test_on_data(next(iterator))

        self.test_function = _iterator_or_batches(test_on_iterator, test_on_data)
        return self.test_function

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15.1 hook, replaced: see `distribution.symbolic_build`.
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = next(it)
                break
        if data_batch is not None:
            distribution.symbolic_build(self, data_batch)

    def get_config(self):
        return {
            "model": keras.saving.serialize_keras_object(self.model),
            "accumulation_steps": self.accumulation_steps,
            "xla": self.xla,
            "fused_update": self.fused_update,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"]
        )
        return cls(**config)


@contextlib.contextmanager
def _average_kept_in(optimizer):
    """Within, `optimizer.finalize_variable_values` leaves the weights as
    they are (see `Trainer.fit`)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not getattr(inner, "use_ema", False):
        yield
        return
    optimizer.finalize_variable_values = lambda var_list: None
    try:
        yield
    finally:
        del optimizer.finalize_variable_values


def _iterator_or_batches(on_iterator, on_data):
    """Keras passes a (distributed) iterator from `fit`/`evaluate`, and a
    Python iterable of one batch from `train_on_batch`/`test_on_batch`.

    A batch's first call traces `on_data` for any length (`_any_length`),
    as `fit` on a bucketed dataset does: otherwise `reduce_retracing`
    traces the first length exactly and again at the second (about 7 s each
    for MiniLM-L6 on a 2-core CPU), which the LR range test's batches of
    several lengths paid on every run."""

    def function(iterator):
        if isinstance(
            iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)
        ):
            return on_iterator(iterator)
        logs = None
        for data in iterator:
            if not function.traced_any_length:
                function.traced_any_length = True
                spec = _any_length(data)
                if spec is not None:
                    on_data.get_concrete_function(spec)
            logs = on_data(data)
        return logs

    function.traced_any_length = False
    return function


def _any_length(data):
    """`data`'s specs with every axis after the first unknown, or None when
    it holds something other than arrays, tensors and None.

    Examples:
    >>> import numpy as np
    >>> _any_length(({"ids": np.zeros((4, 8), "int32")}, np.zeros(4), None))
    ({'ids': TensorSpec(shape=(4, None), dtype=tf.int32, name=None)}, \
TensorSpec(shape=(4,), dtype=tf.float64, name=None), None)
    """
    leaves = tf.nest.flatten(data)
    if not all(v is None or isinstance(v, (np.ndarray, tf.Tensor))
               for v in leaves):
        return None
    return tf.nest.map_structure(
        lambda v: None if v is None else tf.TensorSpec(
            list(v.shape[:1]) + [None] * (len(v.shape) - 1),
            tf.as_dtype(v.dtype)),
        data)


def _num_rows(y):
    first = tf.nest.flatten(y)[0]
    static = first.shape[0]
    return static if static is not None else tf.shape(first)[0]


def _broadcast_weight(sample_weight, values):
    """Sample weights shaped like the unreduced loss values."""
    weight = ops.cast(sample_weight, "float32")
    while len(weight.shape) < len(values.shape):
        weight = ops.expand_dims(weight, -1)
    return ops.broadcast_to(weight, ops.shape(values))


def _model_inputs(model, inputs):
    """`inputs` without the keys the model does not take.

    The pipeline's batches carry `token_ids`, `segment_ids` and
    `padding_mask`; a functional model whose inputs are fewer (RoFormer-v2
    takes no padding mask) would match a larger dict by position, in sorted
    key order, and read the padding mask as its segment ids.
    """
    names = getattr(model, "input", None)
    if not isinstance(inputs, dict) or not isinstance(names, dict):
        return inputs
    if set(inputs) <= set(names):
        return inputs
    return {k: v for k, v in inputs.items() if k in names}
