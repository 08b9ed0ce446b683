"""The configurations of each benchmark suite (see `bench/run.py`).

A configuration is a JSON-ready dict, a "spec", naming a `kind` of
`bench/workloads.py` and its settings; `bench/run.py` adds the warm-up and
timed updates, the global batch and the seed, and runs each distinct spec
once in its own process.
"""

SUITES = ("quick", "cpu", "engine", "pipeline")


def suite_specs(suite, *, model_path, train_data, hand_picked_length,
                time_to_accuracy=None):
    """The configurations of one suite, by section.

    Args:
        suite: str. One of `SUITES`.
        model_path: str. The model every configuration loads.
        train_data: str or None. Labelled file; None for Rotten Tomatoes.
        hand_picked_length: int. Sequence length of the hand-picked config.
        time_to_accuracy: dict or None. `{"target", "eval_every",
            "max_updates"}` for the cpu section's keras-hub default and
            painless configs.

    Returns:
        dict `{section: {config name: spec}}`; specs lack the `warmup`,
        `updates`, `global_batch_size` and `seed` the runner adds.

    Examples:
    >>> specs = suite_specs("quick", model_path="m", train_data="t.csv",
    ...                     hand_picked_length=32)
    >>> sorted(specs), len(specs["engine"])
    (['cpu', 'engine', 'pipeline'], 7)
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
            for name in ("keras_hub_default", "painless"):
                sections["cpu"][name]["time_to_accuracy"] = time_to_accuracy
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
        engine["painless_b_float32"] = {
            **common, "kind": "engine", "precision": "float32",
            "engine": "painless", "accumulation_steps": 1,
            "feed_batch": "micro"}
        sections["engine"] = engine
    if suite in ("pipeline", "quick"):
        sections["pipeline"] = {
            "keras_hub_default": dict(default),
            "our_pipeline": {**common, "kind": "pipeline"},
            "starvation": {**common, "kind": "starvation", "rounds": 2},
        }
    return sections


def complete(spec, *, warmup, updates, global_batch_size, seed=0):
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
