"""`DataError`, the one-line error for mistakes in the data, and the helpers
that quote values and other errors inside its messages.
"""


class DataError(ValueError):
    """A mistake in the user's data or data flags, described in one line.

    The message names the file, line and column where they apply, the bad
    value, and what to do about it.

    Examples:

    >>> from painless_tf.data import LabelVocab
    >>> try:
    ...     LabelVocab(["neg", "pos"]).encode("neutral", where="dev.csv line 3")
    ... except DataError as e:
    ...     print(e)
    dev.csv line 3: label 'neutral' is not one of the 2 training labels
    (neg, pos). Fix the label, or add training rows that use it.
    """


def _preview(names, limit=10):
    shown = ", ".join(str(n) for n in list(names)[:limit])
    return shown + (", ..." if len(names) > limit else "")


def _one_line(error):
    lines = str(error).strip().splitlines()
    # The line is embedded in a sentence of ours: drop its own end.
    return lines[0].rstrip(" :.") if lines else type(error).__name__
