"""What `run.prepare` measures before the plan exists, made as the run
will train: the CPU precision probe's batch and model, the trainer factory
every probe shares (the run's optimizer, decay and momentum), the key of
the probe cache, and the model's dimensions for the cost estimates.
"""

import functools
import hashlib
import os

from painless_tf import models
from painless_tf import pipeline
from painless_tf import plan as plan_lib
from painless_tf import precision
from painless_tf import trainers

AUTO = plan_lib.AUTO


def dims(info):
    dims = (info.hidden_dim, info.num_layers, info.intermediate_dim,
            info.num_heads)
    return plan_lib.ModelDims(*dims) if all(dims) else None


def probe_key(model_path, max_length):
    digest = hashlib.sha256(os.path.abspath(model_path).encode()).hexdigest()
    return f"{os.path.basename(os.path.normpath(model_path))}-{digest[:8]}-{max_length}"


def probe_trainer(config):
    """`model -> trainer` for the probes that run before the plan exists:
    the run's optimizer, decay and momentum (the update they time or try)."""
    def auto_none(value):
        return None if value == AUTO else value

    return functools.partial(
        trainers.make_trainer,
        learning_rate=1e-5,
        optimizer=config.optimizer,
        weight_decay=auto_none(config.weight_decay),
        momentum=auto_none(config.momentum),
        nesterov=config.nesterov,
        layer_decay=auto_none(config.layer_decay),
    )


def precision_probe(model_path, num_classes, tokenized, make_trainer):
    """Times a few real updates of the model under each policy."""
    buckets = pipeline.choose_buckets(
        tokenized.lengths, max_sequence_length=tokenized.max_sequence_length
    )
    batch_size = min(32, tokenized.num_examples)
    dataset = pipeline.make_dataset(
        tokenized, global_batch_size=batch_size, buckets=buckets, training=True
    )
    x, y, _ = next(iter(dataset))
    return precision.cpu_precision_probe(
        lambda: models.load_classifier(model_path, num_classes=num_classes),
        (x, y),
        make_trainer=make_trainer,
    )
