"""Layer-wise learning-rate decay: lower layers take smaller steps.

With decay `d` < 1 and `L` encoder layers (`freezing.layer_groups`), the
head (pooler, classifier) trains at the schedule's rate, the top encoder
layer at `d` times it, the one below at `d**2`, ..., the bottom one at
`d**L` and the embeddings at `d**(L + 1)`: ELECTRA's and AutoGluon's rule
(Clark et al. 2020, appendix; Sun et al. 2019 measured 0.95 best for
BERT-base). Lower layers hold the general features pretraining learned;
smaller steps there forget less of them.

`multipliers` maps each trainable variable's path to its factor;
`optimization.make_optimizer(..., rate_multipliers=...)` applies them to
the step and to the decoupled weight decay of every optimizer, per
variable, in the same update (so accumulation, replicas, mixed precision
and XLA stay exact: the engine hands the optimizer one gradient per
update, and the factor is a constant of the traced update).

    factors = layer_decay.multipliers(classifier, 0.9)
"""

from painless_tf import freezing


def multipliers(classifier, decay: float) -> dict:
    """{variable path: learning-rate factor} for every trainable variable.

    Args:
        classifier: keras.Model. A keras-hub task model with a backbone of
            stacked encoder layers.
        decay: float in (0, 1]. 1 gives every variable the factor 1.

    Returns:
        dict of str to float; a variable of no group (none in keras-hub's
        text classifiers) is left out and keeps the factor 1.

    Raises:
        ValueError: for a decay outside (0, 1], or a model without a stack
            of encoder layers (ALBERT shares one block between all its
            layers).

    Examples:
    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=10,
    ...     num_layers=2, num_heads=1, hidden_dim=2, intermediate_dim=4)
    >>> classifier = keras_hub.models.BertTextClassifier(backbone,
    ...     num_classes=2, preprocessor=None)
    >>> factors = multipliers(classifier, 0.5)
    >>> [factors[p] for p in ("logits/kernel", "pooled_dense/bias",
    ...  "transformer_layer_1/feedforward_output_dense/kernel",
    ...  "transformer_layer_0/self_attention_layer/query/bias",
    ...  "token_embedding/embeddings")]
    [1.0, 1.0, 0.5, 0.25, 0.125]
    """
    if isinstance(decay, bool) or not 0 < float(decay) <= 1:
        raise ValueError(
            f"`layer_decay` must be in (0, 1]. Received: layer_decay={decay!r}")
    decay = float(decay)
    try:
        groups = freezing.layer_groups(classifier)
    except ValueError:
        raise ValueError(
            f"`layer_decay` needs a backbone with a stack of encoder layers; "
            f"{type(classifier).__name__} has none (ALBERT shares one block "
            f"between all its layers). Received: layer_decay={decay!r}"
        ) from None
    depth = len(groups.encoder)
    factors = {}

    def assign(layers, factor):
        for layer in layers:
            for variable in layer.trainable_variables:
                factors.setdefault(variable.path, factor)

    assign(groups.head, 1.0)
    for index, layer in enumerate(groups.encoder):
        assign([layer], decay ** (depth - index))
    assign(groups.embeddings, decay ** (depth + 1))
    return factors


def describe(factors: dict, decay: float) -> str:
    """One line for the plan's reason, e.g. 'head 1, top layer 0.9, ...'.

    Examples:
    >>> describe({"a": 1.0, "b": 0.9, "c": 0.81}, 0.9)
    'x0.9 per layer down: head 1, top encoder layer 0.9, embeddings 0.81'
    """
    lowest = min(factors.values(), default=1.0)
    return (f"x{decay:g} per layer down: head 1, top encoder layer "
            f"{decay:g}, embeddings {lowest:.3g}")
