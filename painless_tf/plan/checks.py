"""Value checks and flag-text parsing shared by the plan's decisions.

`AUTO` (the value of every flag the plan may decide by itself), `PlanError`,
and the helpers that check a value, read it from a flag's text, or write it
as a message shows it. Every other module of `painless_tf.plan` imports from
here; this one imports none of them.
"""

import math

AUTO = "auto"


class PlanError(ValueError):
    """A plan argument, or a pair of them, that cannot work.

    The message is one line naming the flag(s), the bad value and the fix.

    Examples:
    >>> issubclass(PlanError, ValueError)
    True
    """


def _bool_or_auto(value, flag):
    """A boolean flag's value: True, False or AUTO, from bools or strings."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value == AUTO or isinstance(value, bool):
        return value
    raise PlanError(
        f"--{flag}={value!r} must be true, false or auto. Pass --{flag}=auto."
    )


def _positive_int(value, flag):
    # String flags that also take "auto" deliver numbers as text.
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(
            f"--{flag}={value!r} must be a positive integer. Pass --{flag}=1 or more."
        )
    return value


def _non_negative_int(value, flag):
    # String flags that also take "auto" deliver numbers as text.
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlanError(
            f"--{flag}={value!r} must be auto or an integer >= 0. Pass "
            f"--{flag}=auto."
        )
    return value


def _positive_float(value, flag, example):
    number = None
    if isinstance(value, str):
        # String flags that also take "auto" deliver numbers as text.
        number = _parse_float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    if number is None or not (math.isfinite(number) and number > 0):
        raise PlanError(
            f"--{flag}={value!r} must be a positive number or 'auto'. "
            f"Pass e.g. --{flag}={example}."
        )
    return number


def _parse_float(text):
    try:
        return float(text)
    except ValueError:
        return None


def _check_flag_choice(flag, value, choices):
    if value not in choices:
        raise PlanError(
            f"--{flag}={value!r} is not one of auto, {', '.join(choices)}. "
            "Pass one of those."
        )


def _check_choice(name, value, choices):
    if value not in choices:
        raise PlanError(
            f"`{name}` must be one of {choices}. Received: {name}={value!r}"
        )


def _check_boundaries(boundaries, max_sequence_length):
    previous = 0
    for boundary in boundaries:
        if isinstance(boundary, bool) or not isinstance(boundary, int) or not (
            previous < boundary <= max_sequence_length
        ):
            raise PlanError(
                f"bucket boundaries {list(boundaries)} must be increasing "
                f"integers in [1, max_sequence_length={max_sequence_length}]. "
                "Fix the boundaries or raise --max_sequence_length."
            )
        previous = boundary


def _short(rate):
    """A rate as people write it: 3e-5, 1.2e-4."""
    mantissa, exponent = f"{rate:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _format_flag(value):
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _format_value(value):
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_format_value(v) for v in value) or "-"
    return str(value)
