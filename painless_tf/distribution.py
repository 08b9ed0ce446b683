"""Distribution: the `tf.distribute` strategy, and every Keras/TF workaround.

Everything `tf.distribute`-specific that the training engine needs lives
behind the few functions of this module, so that `engine.py` reads as a plain
accumulating training step. Each workaround names the upstream issue and the
versions it was checked against (TensorFlow 2.21.0, Keras 3.15.1).

What breaks upstream when the pieces are used together, and where it is
handled here:

- `optimizer.gradient_accumulation_steps` calls `merge_call` inside a
  `cond` under `MirroredStrategy` (keras-team/keras#20582). The engine keeps
  its accumulators itself and applies the update once, in cross-replica
  context, with `apply_gradients`.
- `LossScaleOptimizer.apply` refuses cross-replica context; its
  backend-agnostic branch does exactly what is needed there:
  `apply_gradients`.
- `compile(jit_compile=True)` under any strategy compiles `strategy.run`
  itself and fails; only the per-replica step is compiled (engine.py).
- Keras' first-batch symbolic build reduces the distributed batch with
  `strategy.reduce("MEAN")`, which fails on bool tensors ("AddN" on bool),
  on dict inputs under multi-worker, and on scalar logs
  (tensorflow/tensorflow#72388): `symbolic_build` builds from the first
  replica's local batch instead.
- On one replica Keras' `TFOptimizer` all-reduces the gradients through
  `ReplicaContext.all_reduce`, a `tf.custom_gradient` whose gradient
  function TensorFlow registers process-wide for good when traced; it held
  every weight and slot of a finished trainer in memory (a leak of the kind
  reported in tensorflow/tensorflow#61791 and keras-team/tf-keras#286):
  `apply_gradients` skips that sum of one.
"""

import contextlib
import json
import os
import re

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")


def make_strategy(name="default", *, tpu=None, devices=None):
    """Creates the `tf.distribute.Strategy` named by a plan.

    Args:
        name: str. One of `"default"` (one device), `"mirrored"` (all local
            GPUs, or `devices`), `"multi_worker_mirrored"` (workers from
            `TF_CONFIG`), `"tpu"`.
        tpu: str or None. TPU name or address for `"tpu"` (`"local"` on a
            TPU VM); None lets the resolver find it (Colab).
        devices: list of str or None. Devices for `"mirrored"`, e.g.
            `["/cpu:0", "/cpu:1"]` for logical CPU devices.

    Returns:
        A `tf.distribute.Strategy`.

    Examples:
    >>> make_strategy("default").num_replicas_in_sync
    1
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker_mirrored":
        timeout = float(os.environ.get("PAINLESS_TF_COLLECTIVE_TIMEOUT", 60))
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=timeout
        )
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=options
        )
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        f"`strategy` must be one of {', '.join(STRATEGIES)}. "
        f"Received: strategy={name!r}"
    )


def is_tpu_strategy(strategy):
    """Whether `strategy` is a `TPUStrategy` (any version)."""
    return isinstance(strategy, tf.distribute.TPUStrategy)


def create_accumulator(variable, name):
    """A replica-local float32 zero variable shaped like `variable`.

    Each replica adds its own gradients to its own copy (`ON_READ`); a read in
    cross-replica context returns the sum over all replicas (and all workers),
    which is exactly the all-reduce the update needs, done once per update
    rather than once per micro-batch.
    """
    return tf.Variable(
        tf.zeros(variable.shape, dtype=tf.float32),
        trainable=False,
        name=name,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM,
    )


def fusable_update(strategy):
    """Whether the optimizer update may be compiled with XLA as one function.

    True on one device: the default strategy and `OneDeviceStrategy`. A
    mirrored, multi-worker or TPU update runs in cross-replica context,
    where Keras updates each copy of a variable through
    `strategy.extended.update`, which an XLA function cannot hold.

    Examples:
    >>> fusable_update(tf.distribute.get_strategy())
    True
    """
    return not isinstance(
        strategy,
        (
            tf.distribute.MirroredStrategy,
            tf.distribute.MultiWorkerMirroredStrategy,
            tf.distribute.TPUStrategy,
        ),
    )


def apply_gradients(optimizer, grads, variables):
    """Applies already all-reduced gradients in cross-replica context.

    Keras' `TFOptimizer` skips its own all-reduce outside a replica context
    and updates each mirrored copy with `extended.update`, so the gradients
    passed here are applied exactly once. Global-norm clipping (the
    optimizer's `global_clipnorm`) therefore sees the true global gradient,
    not a per-replica one.

    With a `LossScaleOptimizer`, the gradients are still scaled: a
    non-finite value anywhere skips the whole update, halves the scale and
    leaves every weight and the step counter untouched.
    """
    with _no_one_replica_all_reduce(optimizer):
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            # Keras 3.15.1: `LossScaleOptimizer.apply` raises in
            # cross-replica context (`_tf_apply`); `_common_apply` is its
            # backend-agnostic path (finite check, unscale, inner apply, grow
            # or shrink the scale), and in cross-replica context it needs no
            # `merge_call`.
            optimizer._common_apply(grads, trainable_variables=variables)
        else:
            optimizer.apply(grads, variables)


@contextlib.contextmanager
def _no_one_replica_all_reduce(optimizer):
    """Skips Keras' gradient all-reduce where there is one replica.

    On the default strategy (and `OneDeviceStrategy`) there is always a
    replica context, so Keras 3.15.1's `TFOptimizer._all_reduce_sum_gradients`
    all-reduces the gradients over the one replica: a sum of one, but
    `ReplicaContext.all_reduce` is a `tf.custom_gradient`, and in a traced
    function TensorFlow 2.21 registers each one's gradient function in its
    process-wide gradient registry, for good. That function holds the traced
    graph, the graph holds the captured variable handles, and so every
    weight and optimizer slot of a trainer stayed in memory after the
    trainer was gone (the LR range test's and the probes' trainers through
    the whole run). `tests/test_engine.py`,
    `test_a_deleted_trainer_frees_its_variables`, checks that none stays.
    With more than one replica the all-reduce runs as before (the engine
    applies in cross-replica context, where Keras makes none).
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync != 1:
        yield
        return
    inner = getattr(optimizer, "inner_optimizer", None)
    patched = [o for o in (optimizer, inner) if o is not None]
    for o in patched:
        o._all_reduce_sum_gradients = _unchanged
    try:
        yield
    finally:
        for o in patched:
            del o._all_reduce_sum_gradients


def _unchanged(grads_and_vars):
    return grads_and_vars


def loss_tracker(model):
    """The compiled model's "loss" `Mean` metric.

    Keras 3.15.1 keeps it in `Trainer._loss_tracker` and offers no public
    accessor; `model.metrics[0]` is the same object when compiled with a loss.
    """
    return model._loss_tracker


def symbolic_build(model, distributed_batch):
    """Builds the model, metrics and optimizer from one replica's batch.

    Replaces Keras 3.15.1's `_maybe_symbolic_build`, whose
    `strategy.reduce("MEAN", batch)` fails on bool/int masks and on dict
    inputs under `MultiWorkerMirroredStrategy` (tensorflow/tensorflow#72388).
    Only shapes and dtypes matter here, so the first local replica's batch
    serves as well as a mean.

    Builds only what is unbuilt. Keras 3.15.1 traces the whole model
    symbolically again whenever a layer is unbuilt, and a keras-hub
    preprocessor and its tokenizer never are (they hold no weights and are
    not part of the step), so every `train_on_batch` and `test_on_batch`
    call, one per update and probe batch of the LR range test and the
    precision probe, paid a symbolic pass of the model (about 0.2 s on
    MiniLM-L6; `docs/benchmarks.md`, "Time to the first step").
    """
    if _built(model):
        return
    strategy = model.distribute_strategy
    local = tf.nest.map_structure(
        lambda v: strategy.experimental_local_results(v)[0]
        if isinstance(v, tf.distribute.DistributedValues)
        else v,
        distributed_batch,
    )
    with strategy.scope():
        model._symbolic_build(data_batch=local)


def _built(model):
    """Whether Keras' symbolic build would build nothing: every layer outside
    a keras-hub preprocessor, the compiled metrics and loss, and the
    optimizer are built."""
    inner = getattr(model, "model", None)
    preprocessor = getattr(inner, "preprocessor", None)
    skip = ({id(layer) for layer in preprocessor._flatten_layers()}
            if preprocessor is not None else set())
    if not all(layer.built for layer in model._flatten_layers()
               if id(layer) not in skip):
        return False
    parts = (getattr(model, name, None)
             for name in ("_compile_metrics", "_compile_loss", "optimizer"))
    return all(part is None or part.built for part in parts)


def distribute_batches(strategy, make_slice):
    """Feeds each replica its slice of every planned global batch.

    Args:
        strategy: tf.distribute.Strategy.
        make_slice: callable `(num_slices, slice_index) -> tf.data.Dataset`
            yielding rows `[i*B/n, (i+1)*B/n)` of each global batch of B
            (`pipeline.make_dataset(num_workers=n, worker_index=i)`).

    Returns:
        For one worker, the whole-batch dataset (`fit` splits it across the
        local replicas); for several workers, a distributed dataset in which
        each worker reads only its own replicas' slices, so the union over
        workers is exactly each planned global batch.
    """
    if strategy.extended._in_multi_worker_mode():
        # tf.distribute has no public "is multi-worker"; checked against
        # TensorFlow 2.21.0.

        def dataset_fn(context):
            local = context.num_replicas_in_sync // context.num_input_pipelines
            slices = [
                make_slice(
                    context.num_replicas_in_sync,
                    context.input_pipeline_id * local + i,
                )
                for i in range(local)
            ]
            if local == 1:
                return slices[0]
            # Replica i of this worker takes every local-th element.
            return tf.data.Dataset.choose_from_datasets(
                slices, tf.data.Dataset.range(local).repeat()
            )

        return strategy.distribute_datasets_from_function(dataset_fn)
    return make_slice(1, 0)


def is_chief(environment):
    """Whether this process writes the model dir (worker 0 / the chief)."""
    return environment.worker_index == 0


class WorkerLostError(RuntimeError):
    """A multi-worker job lost a worker; the message names it."""


# What a collective raises when a peer dies: the coordination service's
# missed heartbeats ("unhealthy"), a reset connection, or the collective
# timeout of `make_strategy` (checked with TensorFlow 2.21.0: a killed worker
# stops its peers with UnavailableError within ~10 s).
_PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
)
_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


def worker_lost(error, environment, *, checkpoint_dir):
    """The `WorkerLostError` for a collective's `error`, else None.

    Args:
        error: the exception `fit` raised.
        environment: `hardware.Environment`; None unless several workers.
        checkpoint_dir: str. Where the completed checkpoints are.

    Returns:
        A `WorkerLostError` naming the lost worker (its index and address
        from `TF_CONFIG`) or None when `error` is not a lost peer.

    Examples:
    >>> from painless_tf.hardware import Environment
    >>> env = Environment(platform="cpu", num_workers=2, worker_index=0)
    >>> error = tf.errors.UnavailableError(None, None, "The following "
    ...     "tasks are unhealthy: /job:worker/replica:0/task:1")
    >>> str(worker_lost(error, env, checkpoint_dir="ckpt")).split(";")[0]
    'worker 0 of 2: lost worker 1 (tasks are unhealthy)'
    """
    if environment.num_workers < 2 or not isinstance(error, _PEER_ERRORS):
        return None
    text = str(error)
    me = environment.worker_index
    others = sorted({
        int(index) for job, index in _TASK.findall(text)
        if job in ("worker", "chief") and int(index) != me
    })
    addresses = _worker_addresses()
    if others:
        who = ", ".join(
            f"worker {i}" + (f" at {addresses[i]}" if i < len(addresses)
                             else "")
            for i in others
        )
    else:
        who = "a peer"
    if "unhealthy" in text:
        reason = "tasks are unhealthy"
    elif "Connection reset" in text or "Socket closed" in text:
        reason = "connection reset"
    elif isinstance(error, tf.errors.DeadlineExceededError):
        reason = "collective timed out"
    else:
        reason = type(error).__name__
    return WorkerLostError(
        f"worker {me} of {environment.num_workers}: lost {who} ({reason}); "
        f"stopping. Completed checkpoints stay in {checkpoint_dir}: start "
        "all workers again with the same command to resume."
    )


def _worker_addresses():
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}"))["cluster"]
    except (ValueError, KeyError, TypeError):
        return []
    return list(cluster.get("chief", [])) + list(cluster.get("worker", []))
