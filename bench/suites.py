"""The configurations of each benchmark suite (see `bench/run.py`).

A configuration is a JSON-ready dict, a "spec", naming a `kind` of
`bench/workloads.py` and its settings; `bench/run.py` adds the warm-up and
timed updates, the global batch and the seed, and runs each distinct spec
once in its own process.
"""

SUITES = ("quick", "cpu", "engine", "pipeline", "freezing", "peer")
# The peer config (Hugging Face `Trainer`, see bench/hf_peer.py) trains with
# painless_tf's recipe where it can: AdamW, weight decay 0.01, gradient
# clipping at norm 1.0, a linear warm-up over 10% of the updates then linear
# decay, 3 epochs, 128 tokens at most. Its rate is the usual 5e-5 (painless
# takes its own from the LR range test); speed does not depend on it.
# Data order and initialization of every config (and of the split the peer's
# exported rows come from).
SEED = 0
PEER_RECIPE = {"learning_rate": 5e-5, "weight_decay": 0.01, "clip_norm": 1.0,
               "warmup_fraction": 0.1, "epochs": 3, "max_length": 128}


def suite_specs(suite, *, model_path, train_data, hand_picked_length,
                time_to_accuracy=None, peer=None):
    """The configurations of one suite, by section.

    Args:
        suite: str. One of `SUITES`.
        model_path: str. The model every configuration loads.
        train_data: str or None. Labelled file; None for Rotten Tomatoes.
        hand_picked_length: int. Sequence length of the hand-picked config.
        time_to_accuracy: dict or None. `{"target", "eval_every",
            "max_updates"}` for the cpu section's keras-hub default and
            painless configs; for the peer suite, both train the
            recipe's epochs and report the test accuracy.
        peer: dict or None. The peer suite's `{"data_dir", "num_labels",
            "python"}` (the exported rows, the peer interpreter) or
            `{"skipped": reason}`.

    Returns:
        dict `{section: {config name: spec}}`; specs lack the `warmup`,
        `updates`, `global_batch_size` and `seed` the runner adds.

    Examples:
    >>> specs = suite_specs("quick", model_path="m", train_data="t.csv",
    ...                     hand_picked_length=32)
    >>> sorted(specs), len(specs["engine"])
    (['cpu', 'engine', 'freezing', 'pipeline'], 8)
    """
    common = {"model_path": model_path, "train_data": train_data}
    default = {**common, "kind": "keras_hub", "precision": "float32"}
    sections = {}
    if suite in ("cpu", "quick"):
        sections["cpu"] = {
            "keras_hub_default": dict(default),
            "keras_hub_hand_picked": {
                **default, "precision": "mixed_bfloat16",
                "sequence_length": hand_picked_length,
            },
            "keras_builtin_accumulation": {
                **default, "precision": "mixed_bfloat16",
                "sequence_length": hand_picked_length,
                "accumulation_steps": 4,
            },
            "painless": {**common, "kind": "painless"},
        }
        if time_to_accuracy:
            cpu = sections["cpu"]
            cpu["painless"]["time_to_accuracy"] = dict(time_to_accuracy)
            # The ratio's target is 1/3: once keras-hub's default has trained
            # 3x painless's time to the target without reaching it, the
            # ratio is proven, and the rest (an hour here) would only say
            # by how much.
            cpu["keras_hub_default"]["time_to_accuracy"] = dict(
                time_to_accuracy, give_up_factor=3.0,
                give_up_relative_to="painless")
    if suite == "peer":
        hf = {**common, **PEER_RECIPE, **(peer or {}), "kind": "hf_trainer"}
        painless = {**common, "kind": "painless"}
        if time_to_accuracy:
            full = dict(time_to_accuracy, full_epochs=True)
            hf["time_to_accuracy"] = dict(full)
            painless["time_to_accuracy"] = dict(full)
        sections["peer"] = {"hf_trainer": hf, "painless": painless}
    if suite in ("engine", "quick"):
        engine = {}
        for precision, tag in (("float32", "float32"), ("auto", "plan")):
            base = {**common, "kind": "engine", "precision": precision}
            engine[f"painless_k1_{tag}"] = {
                **base, "engine": "painless", "accumulation_steps": 1,
                "feed_batch": "global"}
            engine[f"painless_k4_{tag}"] = {
                **base, "engine": "painless", "accumulation_steps": 4,
                "feed_batch": "global"}
            engine[f"keras_k4_{tag}"] = {
                **base, "engine": "keras", "accumulation_steps": 4,
                "feed_batch": "micro"}
        for precision, tag in (("float32", "float32"), ("auto", "plan")):
            # One plain step of b: the micro-batch's own speed and memory,
            # which k=4 x b cannot beat whatever the engine does.
            engine[f"painless_b_{tag}"] = {
                **common, "kind": "engine", "precision": precision,
                "engine": "painless", "accumulation_steps": 1,
                "feed_batch": "micro"}
        sections["engine"] = engine
    if suite in ("pipeline", "quick"):
        sections["pipeline"] = {
            "keras_hub_default": dict(default),
            "our_pipeline": {**common, "kind": "pipeline"},
            "starvation": {**common, "kind": "starvation", "rounds": 2},
        }
    if suite in ("freezing", "quick"):
        # Partial-layer training's speed: the same painless run training the
        # head only, the top 2 or 4 encoder layers, or everything. The rate
        # is the recipe's (no range test: speed does not depend on it).
        sections["freezing"] = {
            f"layers_{layers}": {
                **common, "kind": "painless", "trainable_layers": layers,
                "lr_range_test_steps": 0}
            # The quick suite's tiny model has 2 layers.
            for layers in (("0", "2", "4", "all") if suite == "freezing"
                           else ("0", "all"))
        }
    return sections


def skipped(spec):
    """`{"skipped": reason}`, the result of a spec the run gives no process
    (the peer without an interpreter), else None.

    Examples:
    >>> skipped({"kind": "hf_trainer", "skipped": "no torch"})
    {'skipped': 'no torch'}
    """
    if "skipped" in spec:
        return {"skipped": spec["skipped"]}
    return None


def complete(spec, *, warmup, updates, global_batch_size, seed=SEED):
    """A spec with the run's settings, ready for `bench/workloads.py`.

    Args:
        spec: dict. From `suite_specs`.
        warmup: int. Untimed updates.
        updates: int. Timed updates.
        global_batch_size: int. Examples per update.
        seed: int. Data order and initialization.

    Returns:
        A new dict; an engine spec's `feed_batch` ("global" or "micro")
        becomes a number of rows per train call.

    Examples:
    >>> spec = suite_specs("engine", model_path="m", train_data=None,
    ...                    hand_picked_length=128)["engine"]["keras_k4_plan"]
    >>> complete(spec, warmup=3, updates=12, global_batch_size=32)["feed_batch"]
    8
    """
    spec = dict(spec, warmup=warmup, updates=updates,
                global_batch_size=global_batch_size, seed=seed)
    feed = spec.get("feed_batch")
    if feed == "global":
        spec["feed_batch"] = global_batch_size
    elif feed == "micro":
        # b = global / 4: Keras accumulates k calls of b, the batch-b
        # reference trains on b alone.
        spec["feed_batch"] = global_batch_size // 4
    return spec
