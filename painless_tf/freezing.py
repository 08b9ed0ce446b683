"""Partial-layer training: freeze the lower encoder layers of a backbone.

`--trainable_layers=N` trains the top N encoder layers and the head; 0
trains the head only; `all` (the default) trains everything, embeddings
included, so `N` equal to the number of layers trains every encoder layer
but keeps the embeddings frozen. `--unfreeze=gradual` starts from
`--trainable_layers` (from the head alone when it is `all`) and unfreezes one
more layer per epoch from the top, then the embeddings (the gradual
unfreezing of ULMFiT, Howard & Ruder 2018).

A keras-hub backbone is split by its layers' order: the
`transformer_layer_<i>` layers (`f_net_layer_<i>`,
`disentangled_attention_encoder_layer_<i>`) are the encoder; layers before the first are
the embeddings; layers after the last one (BERT's `pooled_dense`) belong to
the head, with everything of the task model outside the backbone (dropout,
`logits`).

Why a frozen layer costs nothing:
- No backward pass: freezing sets `layer.trainable = False`, so its
  variables leave `trainable_variables` and the engine asks for no gradient
  of them. TensorFlow prunes from the traced step every gradient operation
  that no requested gradient needs, which below the lowest trainable layer
  is all of them (a head-only step of a 6-layer BERT measured as long as
  its forward pass alone).
- No optimizer state: the optimizer and the engine's gradient accumulators
  are built on `trainable_variables`, so frozen variables get no slots.

Gradual unfreezing changes the trainable set between epochs. The optimizer
is built once, on the union of the run's trainable sets (the last epoch's
set, which holds every earlier one): its variables, and so the checkpoint
layout, stay the same for the whole run, and a run resumed at any epoch
restores into the same structure. The slots of a layer not yet unfrozen stay
zero until it is (the optimizer updates only the variables it is given);
the peak memory is the last epoch's either way. The training step is traced
for a fixed trainable set, so the engine rebuilds its accumulators and
retraces when the set changes.
"""

import dataclasses
import re

import keras

ALL = "all"
UNFREEZE_MODES = ("none", "gradual")
# The encoder blocks of keras-hub's backbones: `transformer_layer_<i>` (BERT,
# DistilBERT, RoBERTa, XLM-R, RoFormer-v2), `f_net_layer_<i>` (FNet) and
# `disentangled_attention_encoder_layer_<i>` (DeBERTa-v3). ALBERT's one
# shared block (`group_0_inner_layer_0`) is every layer at once: not a
# stack of layers that can be frozen or given rates one by one.
_ENCODER_LAYER = re.compile(
    r"^(?:transformer|f_net|disentangled_attention_encoder)_layer_(\d+)$")


@dataclasses.dataclass(frozen=True)
class FreezeOptions:
    """Which layers train, and whether more unfreeze as epochs pass.

    Args:
        trainable_layers: int | str. "all" (everything, embeddings
            included), or N >= 0: the top N encoder layers and the head (0:
            the head only). A string of digits is read as N.
        unfreeze: str. "none" (the same layers every epoch) or "gradual"
            (one more layer per epoch from the top, starting from
            `trainable_layers`, or from the head alone when it is "all").

    Examples:
    >>> FreezeOptions(trainable_layers="2").trainable_layers
    2
    >>> FreezeOptions(unfreeze="gradual").stages(num_layers=2, epochs=4)
    (0, 1, 2, 'all')
    """

    trainable_layers: int | str = ALL
    unfreeze: str = "none"

    def __post_init__(self):
        value = self.trainable_layers
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if value != ALL and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ValueError(
                f"--trainable_layers={self.trainable_layers!r} must be 'all' "
                "or an integer >= 0 (0: the head only). Pass e.g. "
                "--trainable_layers=2."
            )
        object.__setattr__(self, "trainable_layers", value)
        if self.unfreeze not in UNFREEZE_MODES:
            raise ValueError(
                f"--unfreeze={self.unfreeze!r} must be one of "
                f"{', '.join(UNFREEZE_MODES)}. Pass --unfreeze=gradual or "
                "drop it."
            )

    @property
    def partial(self) -> bool:
        """Whether any layer is ever frozen."""
        return self.trainable_layers != ALL or self.unfreeze == "gradual"

    def check(self, num_layers: int, *, model: str = "the model") -> None:
        """Raises ValueError when `trainable_layers` exceeds `num_layers`.

        Args:
            num_layers: int. Encoder layers of the backbone.
            model: str. The `--model` value, for the message.

        Examples:
        >>> FreezeOptions(trainable_layers=6).check(6)
        """
        if self.trainable_layers != ALL and self.trainable_layers > num_layers:
            raise ValueError(
                f"--trainable_layers={self.trainable_layers} exceeds the "
                f"{num_layers} encoder layers of {model}. Pass "
                f"--trainable_layers between 0 and {num_layers}, or 'all'."
            )

    def stages(self, *, num_layers: int, epochs: int) -> tuple:
        """The trainable encoder layers of each epoch: ints, or "all".

        Args:
            num_layers: int. Encoder layers of the backbone.
            epochs: int. Epochs of the run.

        Returns:
            A tuple of `epochs` values, each a number of top encoder layers
            trained with the head, or "all" (embeddings too).

        Examples:
        >>> FreezeOptions(trainable_layers=1, unfreeze="gradual").stages(
        ...     num_layers=4, epochs=3)
        (1, 2, 3)
        """
        self.check(num_layers)
        if self.unfreeze == "none":
            return (self.trainable_layers,) * epochs
        start = 0 if self.trainable_layers == ALL else self.trainable_layers
        # One past the last encoder layer unfreezes the embeddings: "all".
        return tuple(
            start + epoch if start + epoch <= num_layers else ALL
            for epoch in range(epochs)
        )

    @property
    def first_stage(self):
        """The trainable encoder layers of the first epoch.

        Examples:
        >>> FreezeOptions(unfreeze="gradual").first_stage
        0
        """
        if self.unfreeze == "gradual" and self.trainable_layers == ALL:
            return 0
        return self.trainable_layers


def widest(stages):
    """The largest trainable set among `stages`: what the optimizer of a
    run is built on (see the module docstring).

    Examples:
    >>> widest((0, 1, 2)), widest((2, "all"))
    (2, 'all')
    """
    return ALL if ALL in stages else max(stages)


def schedule(classifier: keras.Model, options: FreezeOptions, *,
             epochs: int) -> tuple:
    """`options.stages` for this classifier's number of encoder layers.

    With nothing frozen it is `("all",) * epochs` for any model, BERT-like
    or not.

    Examples:
    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=10,
    ...     num_layers=2, num_heads=1, hidden_dim=2, intermediate_dim=4)
    >>> classifier = keras_hub.models.BertTextClassifier(backbone,
    ...     num_classes=2, preprocessor=None)
    >>> schedule(classifier, FreezeOptions(unfreeze="gradual"), epochs=4)
    (0, 1, 2, 'all')
    """
    if not options.partial:
        return (ALL,) * epochs
    num_layers = len(layer_groups(classifier).encoder)
    return options.stages(num_layers=num_layers, epochs=epochs)


@dataclasses.dataclass(frozen=True)
class LayerGroups:
    """A classifier's layers split into embeddings, encoder and head.

    Args:
        embeddings: tuple[keras.Layer, ...]. Backbone layers below the
            first encoder layer.
        encoder: tuple[keras.Layer, ...]. `transformer_layer_<i>`, bottom
            first.
        head: tuple[keras.Layer, ...]. Backbone layers above the last
            encoder layer, and the task's own layers.

    Examples:
    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=10,
    ...     num_layers=2, num_heads=1, hidden_dim=2, intermediate_dim=4)
    >>> classifier = keras_hub.models.BertTextClassifier(backbone,
    ...     num_classes=2, preprocessor=None)
    >>> [layer.name for layer in layer_groups(classifier).encoder]
    ['transformer_layer_0', 'transformer_layer_1']
    """

    embeddings: tuple
    encoder: tuple
    head: tuple


def layer_groups(classifier: keras.Model) -> LayerGroups:
    """Splits a keras-hub task model's layers (see the module docstring).

    Args:
        classifier: keras.Model. A keras-hub task with a `backbone`, e.g. a
            `BertTextClassifier`.

    Raises:
        ValueError: when the backbone has no `transformer_layer_<i>` layers.

    Examples:
    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=10,
    ...     num_layers=1, num_heads=1, hidden_dim=2, intermediate_dim=4)
    >>> classifier = keras_hub.models.BertTextClassifier(backbone,
    ...     num_classes=2, preprocessor=None)
    >>> [layer.name for layer in layer_groups(classifier).head]
    ['pooled_dense', 'classifier_dropout', 'logits']
    """
    backbone = getattr(classifier, "backbone", None)
    if backbone is None:
        raise ValueError(
            f"--trainable_layers needs a keras-hub task model with a "
            f"backbone; {type(classifier).__name__} has none. Drop "
            "--trainable_layers and --unfreeze."
        )
    layers = [layer for layer in backbone.layers if not _is_input(layer)]
    positions = {
        i: int(match.group(1))
        for i, layer in enumerate(layers)
        if (match := _ENCODER_LAYER.match(layer.name))
    }
    if not positions:
        raise ValueError(
            f"--trainable_layers needs a backbone with a stack of encoder "
            f"layers (transformer_layer_<i>); {type(backbone).__name__} has "
            "none. Drop --trainable_layers and --unfreeze."
        )
    first, last = min(positions), max(positions)
    encoder = [layers[i] for i in sorted(positions, key=positions.get)]
    head = layers[last + 1:] + [
        layer
        for layer in classifier.layers
        if layer is not backbone and not _is_input(layer)
    ]
    return LayerGroups(
        embeddings=tuple(layers[:first]),
        encoder=tuple(encoder),
        head=tuple(head),
    )


def set_trainable(classifier: keras.Model, trainable_layers) -> str:
    """Freezes all but the top `trainable_layers` encoder layers and the head.

    Call it before `compile` and before the optimizer is built; calling it
    again between epochs (gradual unfreezing) needs the optimizer built on
    the union of the sets (see the module docstring).

    Args:
        classifier: keras.Model. A keras-hub task with a `backbone`.
        trainable_layers: int | str. "all", or the number of top encoder
            layers to train with the head.

    Returns:
        One line saying what trains, e.g. "top 1 of 2 encoder layers and the
        head (41% of the weights)".

    Examples:
    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=10,
    ...     num_layers=2, num_heads=1, hidden_dim=2, intermediate_dim=4)
    >>> classifier = keras_hub.models.BertTextClassifier(backbone,
    ...     num_classes=2, preprocessor=None)
    >>> _ = set_trainable(classifier, 0)
    >>> sorted({v.path.split("/")[0] for v in classifier.trainable_variables})
    ['logits', 'pooled_dense']
    """
    trainable_layers = FreezeOptions(trainable_layers).trainable_layers
    groups = layer_groups(classifier)
    num_layers = len(groups.encoder)
    FreezeOptions(trainable_layers).check(num_layers)
    everything = trainable_layers == ALL
    # A layer is frozen through its own flag, never through a parent's:
    # a frozen parent would hide the trainable layers inside it.
    classifier.trainable = True
    classifier.backbone.trainable = True
    for layer in groups.embeddings:
        layer.trainable = everything
    for index, layer in enumerate(groups.encoder):
        layer.trainable = everything or index >= num_layers - trainable_layers
    for layer in groups.head:
        layer.trainable = True
    return describe(classifier, trainable_layers)


def describe(classifier: keras.Model, trainable_layers) -> str:
    """One line saying which layers train and their share of the weights.

    Examples:
    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=10,
    ...     num_layers=2, num_heads=1, hidden_dim=2, intermediate_dim=4)
    >>> classifier = keras_hub.models.BertTextClassifier(backbone,
    ...     num_classes=2, preprocessor=None)
    >>> describe(classifier, "all")
    'every layer (100% of the weights)'
    """
    total = sum(_size(v) for v in classifier.weights)
    trained = sum(_size(v) for v in classifier.trainable_variables)
    share = f"{100 * trained / max(total, 1):.0f}% of the weights"
    if trainable_layers == ALL:
        return f"every layer ({share})"
    num_layers = len(layer_groups(classifier).encoder)
    frozen = num_layers - trainable_layers
    frozen_layers = (
        f" and {frozen} encoder layer{'s' if frozen > 1 else ''}"
        if frozen else ""
    )
    trained = (
        "the head only" if trainable_layers == 0 else
        f"top {trainable_layers} of {num_layers} encoder layers and the head"
    )
    return f"{trained}; embeddings{frozen_layers} frozen ({share})"


def _is_input(layer):
    return isinstance(layer, keras.layers.InputLayer)


def _size(variable):
    size = 1
    for dim in variable.shape:
        size *= int(dim)
    return size
