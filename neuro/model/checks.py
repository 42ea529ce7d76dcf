"""Value checks of the typed graph pieces; each raises :class:`~neuro.model.errors.GraphError`
naming the key in model-file terms."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from neuro.model.errors import GraphError, did_you_mean

__all__ = [
    "check_choice",
    "check_int",
    "check_name",
    "finite",
    "json_value",
    "whole_steps",
]


def finite(value: Any, key: str) -> float:
    """Return ``value`` as a finite float with -0.0 folded to 0.0, or raise GraphError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GraphError(key, "a number", repr(value))
    try:
        out = float(value)
    except OverflowError:
        raise GraphError(key, "a number within float range", repr(value)) from None
    if not math.isfinite(out):
        raise GraphError(key, "a finite number", repr(value))
    return out + 0.0


def check_choice(value: Any, choices: Iterable[str], key: str) -> None:
    """GraphError unless ``value`` is one of ``choices`` (hint: an alias or the nearest spelling)."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise GraphError(key, f"one of {', '.join(choices)}", repr(value), did_you_mean(value, choices, 0.5))


def check_int(value: Any, low: int, key: str) -> int:
    """``value`` if it is an int (not a bool) >= ``low``, else GraphError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise GraphError(key, f"an integer >= {low}", repr(value))
    return value


def check_name(name: Any, key: str) -> None:
    """GraphError unless ``name`` is an ASCII identifier (population and projection names)."""
    if not (isinstance(name, str) and name.isidentifier() and name.isascii()):
        raise GraphError(
            key,
            "a name made of ASCII letters, digits and underscores, not starting with a digit",
            repr(name),
        )


def json_value(value: Any, key: str) -> Any:
    """Check that ``value`` is a JSON-able tree of str/int/float/bool/list/dict with str keys."""
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return finite(value, key)
    if isinstance(value, list | tuple):
        return [json_value(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise GraphError(key, "string keys", repr(k))
            out[k] = json_value(v, f"{key}.{k}")
        return out
    raise GraphError(key, "a string, number, boolean, array or table", repr(value))


def _steps(value: float, dt: float) -> int | None:
    """``value / dt`` if it is a whole number of steps (to 1e-9 relative), else None."""
    ratio = value / dt
    if not math.isfinite(ratio):
        return None
    n = round(ratio)
    return n if abs(ratio - n) <= 1e-9 * max(1.0, abs(ratio)) else None


def whole_steps(value: float, dt: float, key: str) -> None:
    """GraphError unless ``value`` seconds is a whole number of steps of ``dt`` seconds."""
    if _steps(value, dt) is None:
        ratio = value / dt
        hint = f"use a multiple of dt, e.g. {round(ratio) * dt!r} s" if math.isfinite(ratio) else None
        raise GraphError(
            key,
            f"a whole number of time steps (dt = {dt!r} s)",
            f"{value!r} s = {ratio:.6g} steps",
            hint,
        )
