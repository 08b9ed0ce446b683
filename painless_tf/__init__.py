"""painless_tf: fully automatic fine-tuning of BERT-family models on Keras 3.

One public entry per concern; see the README's "How it works" for the order
in which a batch meets them.
"""

from painless_tf.checkpointing import CheckpointManager
from painless_tf.data import DataError
from painless_tf.data import LabelVocab
from painless_tf.data import load_splits
from painless_tf.data import read_table
from painless_tf.distribution import make_strategy
from painless_tf.engine import Trainer
from painless_tf.evaluation import classification_report
from painless_tf.export import export_model
from painless_tf.export import load_predictor
from painless_tf.flops import peak_flops
from painless_tf.flops import training_flops_per_token
from painless_tf.hardware import detect_environment
from painless_tf.models import load_classifier
from painless_tf.models import load_tokenizer
from painless_tf.models import save_classifier
from painless_tf.monitoring import default_callbacks
from painless_tf.optimization import WarmupLinearDecay
from painless_tf.optimization import make_optimizer
from painless_tf.pipeline import make_dataset
from painless_tf.pipeline import tokenize
from painless_tf.plan import Plan
from painless_tf.plan import make_plan
from painless_tf.precision import set_policy
from painless_tf.report import write_report

__all__ = [
    "CheckpointManager",
    "DataError",
    "LabelVocab",
    "Plan",
    "Trainer",
    "classification_report",
    "default_callbacks",
    "export_model",
    "load_predictor",
    "peak_flops",
    "training_flops_per_token",
    "write_report",
    "WarmupLinearDecay",
    "detect_environment",
    "load_classifier",
    "load_splits",
    "load_tokenizer",
    "make_dataset",
    "make_optimizer",
    "make_plan",
    "make_strategy",
    "read_table",
    "save_classifier",
    "set_policy",
    "tokenize",
]
