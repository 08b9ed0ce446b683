"""Weight averaging: a greedy soup of the best checkpoints.

`selection` writes the weights of every validation improvement into
`checkpoints/best/` and keeps the last three: the run's three best
validations. At the end of training, `greedy_soup` starts from the best
one and adds the next best while the validation metric of the uniform
average improves (the greedy soup of Wortsman et al. 2022; AutoGluon's text
default averages its top 3 checkpoints). The model keeps the soup when it
beats the best checkpoint alone, else the best checkpoint; metrics.json
says which and why.

The soup is made from the checkpoints on disk, in a fixed order, by the
deterministic validation: a run killed while it cooks makes the same soup
when it is run again.

    summary = soup.greedy_soup(classifier, best_manager, criterion, evaluate)
"""

import numpy as np

from painless_tf import faults


def average(weight_lists):
    """The uniform average of several `model.get_weights()` lists; integer
    weights (seed states, counters) are taken from the first.

    Examples:
    >>> a = [np.array([1.0, 3.0]), np.array([5], "int64")]
    >>> b = [np.array([3.0, 5.0]), np.array([9], "int64")]
    >>> [w.tolist() for w in average([a, b])]
    [[2.0, 4.0], [5]]
    """
    first = weight_lists[0]
    out = []
    for index, weight in enumerate(first):
        if np.issubdtype(weight.dtype, np.floating):
            stacked = np.stack([w[index].astype("float64")
                                for w in weight_lists])
            out.append(stacked.mean(axis=0).astype(weight.dtype))
        else:
            out.append(weight)
    return out


def greedy_soup(model, manager, criterion, evaluate):
    """Sets `model` to the greedy soup of `manager`'s checkpoints (or to
    the best one) and returns the metrics.json entries.

    Args:
        model: keras.Model whose weights `manager` restores.
        manager: checkpointing.CheckpointManager of the best checkpoints;
            each one's position carries the selection record of its
            validation (`selection.Record.to_dict()`, its `best_value`).
        criterion: selection.Criterion (`monitor`, `mode`, `better`).
        evaluate: `() -> float`, the validation metric of the model's
            current weights.

    Returns:
        dict: `soup_ingredients` (the updates averaged, best first),
        `soup_value`, `soup_kept` (True when the soup beat the best
        checkpoint) and `soup_reason`. Empty without checkpoints.
    """
    candidates = []
    for folder in manager.complete():
        updates = int(folder.rsplit("-", 1)[-1])
        position = manager.restore_latest(updates=updates)
        value = (position.selection or {}).get("best_value")
        if value is None:
            continue
        candidates.append((value, updates, model.get_weights()))
    if not candidates:
        return {}
    reverse = criterion.mode == "max"
    candidates.sort(key=lambda c: (c[0] if reverse else -c[0], -c[1]),
                    reverse=True)
    _, best_updates, best_weights = candidates[0]
    model.set_weights(best_weights)
    faults.maybe_kill("soup")
    best_value = evaluate()
    ingredients, kept_weights = [best_updates], [best_weights]
    value = best_value
    for _, updates, weights in candidates[1:]:
        model.set_weights(average(kept_weights + [weights]))
        faults.maybe_kill("soup")
        tried = evaluate()
        if criterion.better(tried, value):
            ingredients.append(updates)
            kept_weights.append(weights)
            value = tried
    model.set_weights(average(kept_weights))
    kept = len(ingredients) > 1
    name = criterion.monitor
    reason = (
        f"the average of updates {', '.join(map(str, ingredients))} has "
        f"{name} {value:.4f}, better than the best checkpoint's "
        f"{best_value:.4f}" if kept else
        f"no average of the {len(candidates)} best checkpoints beat the "
        f"best one's {name} {best_value:.4f}: it is kept")
    return {"soup_ingredients": ingredients, "soup_value": float(value),
            "soup_kept": kept, "soup_reason": reason}
