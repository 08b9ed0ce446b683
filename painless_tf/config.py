"""What the user asks for: `RunConfig`, one field per flag.

Each field carries its flag's help text and kind in its metadata;
`painless_tf.flags` defines the command-line flags from these fields and
builds a `RunConfig` from the parsed values, so a field, its flag and its
help are written once. `"auto"` leaves the decision to the plan
(`plan.make_plan`).
"""

import dataclasses

from painless_tf import freezing
from painless_tf import lr_finder
from painless_tf import optimization
from painless_tf import truncation as truncation_lib
from painless_tf.plan import AUTO
from painless_tf.plan import PRECISIONS
from painless_tf.plan import STRATEGIES
from painless_tf.plan.selection_choice import CLASS_WEIGHTS
from painless_tf.plan.selection_choice import TASK_SELECTION_METRICS

# Updates of the LR range test behind learning_rate="auto".
DEFAULT_RANGE_TEST_STEPS = lr_finder.RangeTestOptions().num_steps


def _flag(group, kind, help, **options):
    """Field metadata: the flag's group ("data" or "plan"), its absl kind
    ("string", "integer", "float", "bool", "enum", "list") and help."""
    return {"flag": {"group": group, "kind": kind, "help": help, **options}}


def _field(default, group, kind, help, **options):
    return dataclasses.field(
        default=default, metadata=_flag(group, kind, help, **options))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What the user asked for; every field but `model_dir` is a flag of
    `apps/finetune.py` of the same name (see its help), and the
    distillation fields are flags of `apps/compress.py`.

    Examples:
    >>> RunConfig(epochs=2).epochs
    2
    >>> [f.name for f in dataclasses.fields(RunConfig)][:2]
    ['model', 'train_data']
    """

    # === Model and data ===
    model: str = _field(
        "default", "data", "string",
        "keras-hub preset name, kaggle:// or hf:// handle, local keras-hub "
        "preset folder or local Hugging Face folder; 'default' is "
        "all-MiniLM-L6-v2 from the offline assets.")
    train_data: str | None = _field(
        None, "data", "string",
        "CSV, TSV or JSONL file (optionally .gz/.bz2) of labelled texts. "
        "Default: the Rotten Tomatoes snippets.")
    validation_data: str | None = _field(
        None, "data", "string", "Validation file.")
    test_data: str | None = _field(None, "data", "string", "Test file.")
    split: tuple[float, ...] = _field(
        (0.8, 0.1, 0.1), "data", "list",
        "Train/validation/test fractions used to split --train_data when "
        "--validation_data/--test_data are not given (by a hash of the "
        "text, so duplicates stay together).", parse=float)
    text_columns: tuple[str, ...] = _field(
        ("text",), "data", "list",
        "One text column, or two for sentence-pair tasks.")
    label_column: str = _field("label", "data", "string", "Label column.")
    task: str = _field(
        AUTO, "data", "enum",
        "auto: multi_label for a label column of lists (JSON lists, or "
        "split by --label_delimiter), regression for numbers (any "
        "non-integer, or more than 20 distinct integers), else "
        "classification.",
        choices=[AUTO, "classification", "multi_label", "regression"])
    label_delimiter: str | None = _field(
        None, "data", "string",
        "Splits each label cell into a set of labels, e.g. ',' for "
        "'sports,politics' (multi-label).")
    file_format: str | None = _field(
        None, "data", "enum", "File format; default: from the file extension.",
        choices=["csv", "tsv", "jsonl"])
    encoding: str = _field(
        "utf-8", "data", "string", "Text encoding of the files.")
    skip_bad_rows: bool = _field(
        False, "data", "bool",
        "Skip and count malformed rows instead of stopping at the first.")
    tfds: str | None = _field(
        None, "data", "string",
        "TensorFlow Datasets name, e.g. glue/sst2, already prepared in "
        "--tfds_data_dir.")
    tfds_data_dir: str | None = _field(
        None, "data", "string", "TFDS data_dir.")
    # Defined by each app, with its own default and help.
    model_dir: str = "runs/demo"

    # === The plan: every decision, "auto" by default ===
    epochs: int = _field(3, "plan", "integer", "Passes over the training data.")
    min_updates: int = _field(
        0, "plan", "integer",
        "Small-data recipe: more epochs (up to 20) until the run makes at "
        "least this many optimizer updates; 0 keeps --epochs.",
        lower_bound=0)
    global_batch_size: int | str = _field(
        AUTO, "plan", "string",
        "Examples per optimizer update, over all replicas and micro-batches "
        "(auto: 32).")
    learning_rate: float | str = _field(
        AUTO, "plan", "string",
        "Peak learning rate (auto: an LR range test on the real model and "
        "data, see --lr_range_test_steps).")
    lr_range_test_steps: int = _field(
        DEFAULT_RANGE_TEST_STEPS, "plan", "integer",
        "Updates of the LR range test behind --learning_rate=auto (0: the "
        "recipe's 3e-5 x sqrt(global_batch_size / 32) instead).",
        lower_bound=0)
    warmup_fraction: float = _field(
        0.1, "plan", "float",
        "Share of the updates spent warming the learning rate up.",
        lower_bound=0.0, upper_bound=0.99)
    weight_decay: float | str = _field(
        AUTO, "plan", "string",
        "Decoupled weight decay (auto: the optimizer's recipe value, 0.01 "
        "for AdamW).")
    layer_decay: float | str = _field(
        AUTO, "plan", "string",
        "Layer-wise learning-rate decay: each encoder layer trains at this "
        "times the rate of the layer above, the head at the schedule's "
        "(auto: 1, one rate; 0.9 is AutoGluon's).")
    weight_averaging: str = _field(
        AUTO, "plan", "enum",
        "What the end of training keeps: none (the best checkpoint), soup "
        "(a greedy soup of the 3 best checkpoints where it validates "
        "better) or ema (a moving average of the weights where it "
        "validates better; auto: none).",
        choices=[AUTO, "none", "soup", "ema"])
    dropout: float | None = _field(
        None, "plan", "float",
        "Dropout before the classifier head (default: the preset's, 0.1 "
        "for BERT).", lower_bound=0.0, upper_bound=0.95)
    trainable_layers: int | str = _field(
        freezing.ALL, "plan", "string",
        "Train only the top N encoder layers and the head (0: the head "
        "only); 'all' trains every layer, embeddings included.")
    unfreeze: str = _field(
        "none", "plan", "enum",
        "gradual: one more layer trains each epoch, from the top, starting "
        "from --trainable_layers (from the head alone when 'all').",
        choices=list(freezing.UNFREEZE_MODES))
    max_sequence_length: int | str = _field(
        AUTO, "plan", "string",
        "Tokens per example at most (auto: the shortest multiple of 8 that "
        "holds 99% of the training texts, up to the model's limit).")
    truncation: str = _field(
        AUTO, "plan", "enum",
        "How a longer text is cut (auto: head+tail, the first L/4 tokens "
        "and the last ones; sentence pairs: round robin).",
        choices=list(truncation_lib.CHOICES))
    seed: int = _field(0, "plan", "integer",
                       "Seed of data order and initialization.")
    strategy: str = _field(
        AUTO, "plan", "enum", "tf.distribute strategy (auto: from the hardware).",
        choices=[AUTO, *STRATEGIES])
    precision: str = _field(
        AUTO, "plan", "enum",
        "Dtype policy (auto: by rule on GPU/TPU, by measurement on CPU).",
        choices=[AUTO, *PRECISIONS])
    xla: bool | str = _field(
        AUTO, "plan", "enum",
        "XLA-compile the per-replica step (auto: on for GPU/TPU).",
        choices=[AUTO, "true", "false"])
    fused_update: bool | str = _field(
        AUTO, "plan", "enum",
        "XLA-compile the optimizer update as one function (auto: on one "
        "device; false saves its extra copy of the weights and slots).",
        choices=[AUTO, "true", "false"])
    micro_batch_size: int | str = _field(
        AUTO, "plan", "string",
        "Examples per replica per forward/backward pass (auto: the largest "
        "that fits).")
    tpu: str | None = _field(
        None, "plan", "string", "TPU name or address; 'local' on a TPU VM.")
    optimizer: str = _field(
        "adamw", "plan", "enum",
        "Optimizer; each gets the warmup/decay schedule, weight-decay "
        "exclusions and global clip norm, with its own default peak learning "
        "rate and weight decay (see plan.json).",
        choices=list(optimization.OPTIMIZERS))
    momentum: float | str = _field(
        AUTO, "plan", "string",
        "Momentum of --optimizer=sgd (auto: 0.9) or rmsprop (auto: 0).",
        parse="number_or_auto")
    nesterov: bool = _field(
        False, "plan", "bool", "Nesterov momentum (--optimizer=sgd only).")
    class_weights: str = _field(
        AUTO, "plan", "enum",
        "Weight each training example's loss by its class: balanced is "
        "n / (K x count) (auto: balanced when the largest class has more "
        "than 3x the examples of the smallest, else none).",
        choices=list(CLASS_WEIGHTS))
    selection_metric: str = _field(
        AUTO, "plan", "enum",
        "Validation metric whose best value picks the weights kept (auto: "
        "macro_f1 when the classes are skewed, else accuracy; the loss for "
        "multi_label and regression, which also log binary_accuracy and mae).",
        choices=list(dict.fromkeys(
            m for ms in TASK_SELECTION_METRICS.values() for m in ms)))
    eval_every_updates: int | str = _field(
        AUTO, "plan", "string",
        "Also validate every N updates within epochs; 0: at epoch ends only "
        "(auto: 4 times per epoch on epochs of more than 1,000 updates).")
    early_stopping_patience: int | str = _field(
        AUTO, "plan", "string",
        "Stop after this many validations without improvement of "
        "--selection_metric; 0: never (auto: 2).")

    # === Distillation: a student run of apps/compress.py (its flags) ===
    student_layers: str | None = _field(
        None, "distill", "string",
        "Unset: a plain fine-tuning run. Else the run trains a student of "
        "the fine-tuned --model (the teacher) that keeps these of its "
        "encoder layers: every_other, a count N (spread evenly, the top "
        "one kept) or indices like 0,2,5.")
    distill_temperature: float = _field(
        2.0, "distill", "float",
        "Temperature of the teacher's and the student's softmax in the "
        "soft-label term (scaled by its square).", lower_bound=0.01)
    distill_alpha: float = _field(
        0.5, "distill", "float",
        "Share of the soft-label term in the student's loss; the rest is "
        "the cross-entropy with the true label.",
        lower_bound=0.0, upper_bound=1.0)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(
                f"--epochs must be >= 1. Received: --epochs={self.epochs}"
            )
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(
                f"--dropout={self.dropout!r} must be in [0, 1). Pass e.g. "
                "--dropout=0.1."
            )
        if self.lr_range_test_steps and self.lr_range_test_steps < 3:
            raise ValueError(
                f"--lr_range_test_steps={self.lr_range_test_steps} is too "
                "few to read a curve. Pass 3 or more "
                f"({DEFAULT_RANGE_TEST_STEPS} by default), or 0 for the "
                "recipe's rate."
            )
        if self.tfds and self.train_data:
            raise ValueError(
                "--tfds and --train_data both name the training data. "
                "Pass only one of them."
            )


def flag_fields(group):
    """The fields of `group` ("data", "plan" or "distill") that are flags,
    in order."""
    return [f for f in dataclasses.fields(RunConfig)
            if f.metadata.get("flag", {}).get("group") == group]
