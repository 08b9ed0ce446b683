"""One fine-tuning run: config -> data -> plan -> model -> fit -> outputs.

`apps/finetune.py` wires these functions in order; each can be used alone.
Everything that can be wrong with the input (files, columns, labels, model
path, flags) is found by `prepare`, before anything is written to the model
dir and before the first training step.
"""

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time

import keras
import numpy as np

from painless_tf import assets
from painless_tf import data
from painless_tf import distribution
from painless_tf import engine
from painless_tf import hardware
from painless_tf import models
from painless_tf import optimization
from painless_tf import pipeline
from painless_tf import plan as plan_lib
from painless_tf import precision

AUTO = plan_lib.AUTO


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What the user asked for; every field is a flag of `apps/finetune.py`.

    `"auto"` leaves the decision to the plan. See `apps/finetune.py` for the
    meaning of each field.
    """

    model: str = "default"
    train_data: str | None = None
    validation_data: str | None = None
    test_data: str | None = None
    split: tuple[float, ...] = (0.8, 0.1, 0.1)
    text_columns: tuple[str, ...] = ("text",)
    label_column: str = "label"
    file_format: str | None = None
    encoding: str = "utf-8"
    skip_bad_rows: bool = False
    tfds: str | None = None
    tfds_data_dir: str | None = None
    model_dir: str = "runs/demo"
    epochs: int = 3
    global_batch_size: int | str = AUTO
    learning_rate: float | str = AUTO
    max_sequence_length: int | str = AUTO
    seed: int = 0
    strategy: str = AUTO
    precision: str = AUTO
    xla: bool | str = AUTO
    micro_batch_size: int | str = AUTO
    tpu: str | None = None
    optimizer: str = "adamw"

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(
                f"--epochs must be >= 1. Received: --epochs={self.epochs}"
            )
        if self.tfds and self.train_data:
            raise ValueError(
                "--tfds and --train_data both name the training data. "
                "Pass only one of them."
            )


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Everything validated and decided before training starts."""

    config: RunConfig
    splits: data.Splits
    tokenized: dict  # split name -> pipeline.TokenizedExamples
    plan: plan_lib.Plan
    environment: hardware.Environment
    model_path: str


def load_data(config):
    """Reads and validates the labelled data named by `config`."""
    read = dict(
        text_columns=config.text_columns,
        label_column=config.label_column,
        file_format=config.file_format,
        encoding=config.encoding,
        skip_bad_rows=config.skip_bad_rows,
    )
    if config.tfds:
        tables = {
            name: data.tfds_table(
                config.tfds,
                data_dir=config.tfds_data_dir,
                split=name,
                text_columns=config.text_columns
                if config.text_columns != ("text",)
                else None,
                label_column=config.label_column,
                skip_bad_rows=config.skip_bad_rows,
            )
            for name in ("train",)
        }
        train = tables["train"]
    elif config.train_data:
        train = config.train_data
    else:
        train = data.rotten_tomatoes_table(assets.default_data_file())
    splits = data.load_splits(
        train=train,
        validation=config.validation_data,
        test=config.test_data,
        split=config.split,
        seed=config.seed,
        **{k: v for k, v in read.items()},
    )
    for warning in splits.warnings:
        logging.warning("%s", warning)
    return splits


def prepare(config, *, environment=None):
    """Validates the input, tokenizes it once and decides the plan.

    Writes nothing. Raises `data.DataError`, `models.ModelError`,
    `plan.PlanError` or `ValueError` with a one-line message.
    """
    environment = environment or hardware.detect_environment(tpu=config.tpu)
    splits = load_data(config)
    model_path = (
        assets.default_model_dir() if config.model == "default" else config.model
    )
    tokenizer = models.load_tokenizer(model_path)
    info = models.describe(model_path)
    if config.max_sequence_length == AUTO:
        max_length = min(
            plan_lib.DEFAULT_MAX_SEQUENCE_LENGTH,
            info.max_sequence_length or plan_lib.DEFAULT_MAX_SEQUENCE_LENGTH,
        )
    else:
        max_length = int(config.max_sequence_length)
        if info.max_sequence_length and max_length > info.max_sequence_length:
            raise ValueError(
                f"--max_sequence_length={max_length} exceeds what "
                f"--model={config.model} supports "
                f"({info.max_sequence_length}). Pass "
                f"--max_sequence_length={info.max_sequence_length} or less."
            )
    tokenized = {
        name: pipeline.tokenize(
            getattr(splits, name), tokenizer, max_sequence_length=max_length
        )
        for name in ("train", "validation", "test")
    }
    lengths = tokenized["train"].lengths

    def decide(**extra):
        return plan_lib.make_plan(
            environment=environment,
            num_train_examples=len(splits.train),
            epochs=config.epochs,
            global_batch_size=config.global_batch_size,
            learning_rate=config.learning_rate,
            precision=config.precision,
            xla=config.xla,
            micro_batch_size=config.micro_batch_size,
            strategy=config.strategy,
            max_sequence_length=config.max_sequence_length,
            model_max_sequence_length=info.max_sequence_length,
            model_params=info.num_params,
            model_dims=_dims(info),
            seed=config.seed,
            precision_probe=probe,
            probe_key=_probe_key(model_path, max_length),
            **extra,
        )

    probe = None
    if environment.platform == "cpu" and config.precision == AUTO:
        probe = _precision_probe(model_path, len(splits.vocab), tokenized["train"])
    first = decide()
    buckets = pipeline.choose_buckets(
        lengths,
        max_sequence_length=max_length,
        global_batch_size=first.global_batch_size,
    )
    steps = pipeline.steps_per_epoch(
        lengths, global_batch_size=first.global_batch_size, buckets=buckets
    )
    plan = decide(bucket_boundaries=buckets, steps_per_epoch=steps)
    return Prepared(
        config=config,
        splits=splits,
        tokenized=tokenized,
        plan=plan,
        environment=environment,
        model_path=model_path,
    )


def _dims(info):
    dims = (info.hidden_dim, info.num_layers, info.intermediate_dim,
            info.num_heads)
    return plan_lib.ModelDims(*dims) if all(dims) else None


def _probe_key(model_path, max_length):
    digest = hashlib.sha256(os.path.abspath(model_path).encode()).hexdigest()
    return f"{os.path.basename(os.path.normpath(model_path))}-{digest[:8]}-{max_length}"


def _precision_probe(model_path, num_classes, tokenized):
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
    )


def build_trainer(prepared, strategy):
    """Builds the classifier and its compiled `Trainer` under `strategy`."""
    plan = prepared.plan
    precision.set_policy(plan.precision)
    keras.utils.set_random_seed(plan.seed)
    with strategy.scope():
        classifier = models.load_classifier(
            prepared.model_path,
            num_classes=len(prepared.splits.vocab),
            sequence_length=plan.max_sequence_length,
        )
        trainer = engine.Trainer(
            classifier, accumulation_steps=plan.accumulation_steps, xla=plan.xla
        )
        trainer.compile(
            optimizer=optimization.make_optimizer(
                plan.optimizer,
                learning_rate=plan.learning_rate,
                warmup_steps=plan.warmup_steps,
                total_steps=plan.total_updates,
                weight_decay=plan.weight_decay,
                clip_norm=plan.clip_norm,
            ),
            weighted_metrics=[
                keras.metrics.SparseCategoricalAccuracy(name="accuracy")
            ],
        )
    return trainer


def datasets(prepared, *, start_epoch=0, start_batch=0, worker=(1, 0)):
    """The training dataset (all remaining epochs chained) and eval sets."""
    plan = prepared.plan
    num_workers, worker_index = worker
    train = pipeline.make_dataset(
        prepared.tokenized["train"],
        global_batch_size=plan.global_batch_size,
        buckets=plan.bucket_boundaries,
        training=True,
        seed=plan.seed,
        epoch=start_epoch,
        epochs=plan.epochs - start_epoch,
        start_batch=start_batch,
        num_workers=num_workers,
        worker_index=worker_index,
    )
    evaluation = {
        name: pipeline.make_dataset(
            prepared.tokenized[name],
            global_batch_size=plan.global_batch_size,
            buckets=plan.bucket_boundaries,
            training=False,
            num_workers=num_workers,
            worker_index=worker_index,
        )
        for name in ("validation", "test")
    }
    return train, evaluation


def predict_ids(trainer, prepared, split):
    """Class probabilities for a split, in the input order."""
    plan = prepared.plan
    tokenized = prepared.tokenized[split]
    batch_plan = pipeline.plan_batches(
        tokenized.lengths,
        global_batch_size=plan.global_batch_size,
        buckets=plan.bucket_boundaries,
        training=False,
    )
    dataset = pipeline.make_dataset(
        tokenized,
        global_batch_size=plan.global_batch_size,
        buckets=plan.bucket_boundaries,
        training=False,
    ).map(lambda x, y, w: x)
    logits = trainer.predict(dataset, verbose=0)
    logits = pipeline.restore_order(logits, batch_plan)
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


def write_json(path, payload):
    """Writes JSON atomically: a temporary file, fsync, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def accuracy(probabilities, labels):
    return float(np.mean(np.argmax(probabilities, axis=-1) == labels))


class Clock:
    """Wall time since the run started."""

    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self):
        return time.perf_counter() - self.start


def fit_and_save(prepared, *, clock=None, callbacks=(), verbose="auto"):
    """Trains as planned, evaluates, and writes the model dir.

    Returns the metrics written to `metrics.json`.
    """
    clock = clock or Clock()
    config, plan = prepared.config, prepared.plan
    print(plan.table(), flush=True)
    os.makedirs(config.model_dir, exist_ok=True)
    plan.to_json(os.path.join(config.model_dir, "plan.json"))
    prepared.splits.vocab.to_json(os.path.join(config.model_dir, "labels.json"))

    strategy = distribution.make_strategy(plan.strategy, tpu=config.tpu)
    trainer = build_trainer(prepared, strategy)
    train, evaluation = datasets(prepared)
    fit_start = time.perf_counter()
    history = trainer.fit(
        train,
        validation_data=evaluation["validation"],
        epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        callbacks=list(callbacks),
        verbose=verbose,
    )
    fit_seconds = time.perf_counter() - fit_start

    metrics = {
        "validation_accuracy": float(history.history["val_accuracy"][-1]),
        "epochs": plan.epochs,
        "global_batch_size": plan.global_batch_size,
        "train_examples": len(prepared.splits.train),
        "train_examples_per_sec": len(prepared.splits.train)
        * plan.epochs
        / fit_seconds,
        "fit_seconds": fit_seconds,
        "optimizer_updates": int(trainer.optimizer.iterations.numpy()),
    }
    probabilities = predict_ids(trainer, prepared, "test")
    metrics["test_accuracy"] = accuracy(
        probabilities, prepared.splits.test.labels
    )
    models.save_classifier(
        trainer.model, os.path.join(config.model_dir, "model")
    )
    metrics["wall_seconds"] = clock.seconds()
    write_json(os.path.join(config.model_dir, "metrics.json"), metrics)
    return metrics
