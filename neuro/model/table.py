"""One TOML table being read: typed getters that record which keys were used, so that
:meth:`Table.finish` can refuse the others with a hint (an alias, the owner of the key, the
nearest spelling)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from neuro.model.errors import ModelFileError, did_you_mean, suggest
from neuro.model.schema import Param
from neuro.model.units import EXPECTED, QuantityError, number_text, read_quantity, unit_hint

__all__ = ["REQUIRED", "Table", "show", "type_name"]

#: Default of a key that must be given.
REQUIRED = object()


def type_name(value: Any) -> str:
    """``"a number"``, ``"a string"``, ``"a table"``, ... for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def show(value: Any) -> str:
    """Short TOML-ish rendering of a found value for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, int | float):
        text = number_text(value) if not isinstance(value, int) or value < 10**30 else "a huge int"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = f"an array of {len(value)}"
    else:
        text = f"{value!s} ({type_name(value)})"
    return text if len(text) <= 60 else text[:57] + "..."


class Table:
    """One TOML table being read: typed getters that record which keys were used."""

    def __init__(self, source: str, data: Any, key: str) -> None:
        if not isinstance(data, dict):
            raise ModelFileError(source, key or None, "a table", show(data))
        self.source, self.data, self.key = source, data, key
        self.used: set[str] = set()

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def error(self, name: str, expected: str, found: str, hint: str | None = None) -> Exception:
        return ModelFileError(self.source, self.path(name), expected, found, hint)

    def raw(self, name: str, default: Any = REQUIRED, expected: str = "a value") -> Any:
        self.used.add(name)
        if name in self.data:
            return self.data[name]
        if default is REQUIRED:
            written = [k for k in self.data if k not in self.used and suggest(k, [name]) == name]
            hint = f"rename {written[0]!r} to {name!r}" if written else None
            raise self.error(name, expected, "nothing (the key is missing)", hint)
        return default

    def quantity(self, name: str, kind: str, default: Any = REQUIRED, check: Any = None) -> float:
        value = self.raw(name, default, EXPECTED[kind])
        return self.convert(name, value, kind, check)

    def convert(self, name: str, value: Any, kind: str, check: Any = None) -> float:
        if isinstance(value, str):
            try:
                out = read_quantity(value, kind, self.path(name))
            except QuantityError as exc:
                raise self.error(name, exc.expected, exc.found, exc.hint) from None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if kind != "number":
                raise self.error(
                    name,
                    EXPECTED[kind],
                    f"{show(value)} (a bare number, no unit)",
                    unit_hint(kind, number_text(value)),
                )
            try:
                out = float(value) + 0.0
            except OverflowError:
                out = math.inf
            if not math.isfinite(out):
                raise self.error(name, "a finite number", show(value))
        else:
            raise self.error(name, EXPECTED[kind], type_name(value))
        if check == ">0" and not out > 0:
            raise self.error(name, "a value > 0", show(value))
        if check == ">=0" and not out >= 0:
            raise self.error(name, "a value >= 0", show(value))
        return out

    def integer(self, name: str, default: Any = REQUIRED, low: int | None = None) -> int:
        value = self.raw(name, default, "an integer")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, "an integer", show(value))
        if low is not None and value < low:
            raise self.error(name, f"an integer >= {low}", show(value))
        return value

    def string(self, name: str, default: Any = REQUIRED) -> str:
        value = self.raw(name, default, "a string")
        if value is not None and not isinstance(value, str):
            raise self.error(name, "a string", show(value))
        return value

    def choice(self, name: str, choices: Iterable[str], default: Any = REQUIRED) -> str:
        choices = tuple(choices)
        expected = "one of " + ", ".join(choices)
        value = self.raw(name, default, expected)
        if value is None or (isinstance(value, str) and value in choices):
            return value
        hint = did_you_mean(value, choices)
        raise self.error(name, expected, show(value), hint)

    def boolean(self, name: str, default: Any = REQUIRED) -> bool:
        value = self.raw(name, default, "true or false")
        if not isinstance(value, bool):
            raise self.error(name, "true or false", show(value))
        return value

    def sub(self, name: str, required: bool = False) -> Table | None:
        value = self.raw(name, REQUIRED if required else None, "a table")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(name, "a table", show(value))
        return Table(self.source, value, self.path(name))

    def param(self, name: str, spec: Param) -> Any:
        """Read a schema parameter (see :data:`POPULATION_DEFAULTS`), filling in the default."""
        kind, default, extra = spec
        if name not in self.data and kind in ("time", "rate", "number") and not isinstance(default, str):
            self.used.add(name)  # a default given in SI units (the rule registry's), used as it is
            return default
        if kind == "choice":
            return self.choice(name, extra, default)
        if kind == "int":
            return self.integer(name, default, extra)
        if kind == "bool":
            return self.boolean(name, default)
        return self.quantity(name, kind, default, extra)

    def finish(self, valid: Iterable[str], elsewhere: Callable[[str], str | None] | None = None):
        """Refuse keys that were not read.  The hint: a valid key the name is an alias of, else
        ``elsewhere(name)`` (e.g. the table the key belongs in), else the nearest valid key."""
        valid = list(valid)
        for name in self.data:
            if name in self.used:
                continue
            hint = did_you_mean(name, valid, spelling=False)
            if hint is None and elsewhere is not None:
                hint = elsewhere(name)
            if hint is None:
                hint = did_you_mean(str(name), valid)
            expected = "one of the keys " + ", ".join(valid) if valid else "no keys here"
            raise self.error(name, expected, f"unknown key {name!r}", hint)
