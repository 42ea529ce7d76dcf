"""Quantities with Brian2's unit names: ``"10 ms"`` -> 0.01 (seconds), and back.

Quantities are strings of a number and a Brian2 unit: ``"10 ms"``, ``"0.01 s"``, ``"15 Hz"``,
``"2 kHz"``, compound units with ``*``, ``/`` and integer powers (``"1 s^-1"``).  Unit names are
looked up among Brian2's unit names, never evaluated.  Times must carry a time unit and rates a
frequency unit; a bare number is refused with a hint (``10`` -> write ``"10 ms"``).  Membrane
potentials (``v_th``, ``v_reset``, ``v_leak``, ``adapt_increment``) and weights are dimensionless,
as in Norse (threshold 1 by default): ``"1 mV"`` is refused.  Values are converted through decimal
arithmetic, so ``"10 ms"``, ``"0.01 s"`` and ``"10000 us"`` give the same float, and
:func:`format_quantity` writes a float that parses back to exactly the same float.  Brian2 is
imported on first use, not when this module is imported.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import sys
import warnings
from decimal import Decimal, DecimalException, localcontext
from typing import Any

from neuro.model.errors import ModelFileError

__all__ = [
    "EXPECTED",
    "KINDS",
    "QuantityError",
    "format_quantity",
    "import_brian2",
    "number_text",
    "parse_quantity",
    "parse_rate",
    "parse_time",
    "read_quantity",
    "unit_hint",
]

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY = re.compile(rf"\s*({_NUMBER})\s*(.*?)\s*", re.ASCII | re.DOTALL)
_FACTOR = re.compile(r"([A-Za-z_]\w*)\s*(?:(?:\*\*|\^)\s*\(?\s*([+-]?\d{1,2})\s*\)?)?", re.ASCII)
_MAX_TEXT = 200

#: Quantity kinds: the dimension a value must have (as a Brian2 unit name) and an example.
KINDS: dict[str, tuple[str | None, str]] = {
    "time": ("second", '"10 ms"'),
    "rate": ("hertz", '"15 Hz"'),
    "number": (None, "1.0"),
}
#: What a value of each kind looks like, for error messages.
EXPECTED: dict[str, str] = {
    "time": 'a time with a unit, e.g. "10 ms"',
    "rate": 'a frequency with a unit, e.g. "15 Hz"',
    "number": "a dimensionless number",
}
_POTENTIALS = ("v_th", "v_reset", "v_leak", "adapt_increment")


@functools.cache
def import_brian2() -> Any:
    """Import Brian2 quietly (no pyparsing deprecation warnings) and keep the interpreter's
    ``sys.excepthook``, which Brian2 replaces with a handler that writes a debug log for every
    uncaught error.  Returns the ``brian2`` module."""
    hook = sys.excepthook
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import brian2
            import brian2.units.allunits  # noqa: F401  (the unit tables)
    finally:
        sys.excepthook = hook
    return brian2


@functools.cache
def _unit_table() -> dict[str, tuple[Decimal, Any]]:
    """Brian2 unit name -> (SI factor as an exact decimal, Brian2 Dimension).  Imports Brian2."""
    brian2 = import_brian2()
    units, allunits, Unit = brian2.units, brian2.units.allunits, brian2.units.fundamentalunits.Unit
    table: dict[str, tuple[Decimal, Any]] = {}
    for module in (allunits, units):
        for name, unit in vars(module).items():
            if isinstance(unit, Unit):
                table.setdefault(name, (Decimal(repr(float(unit))), unit.dim))
    for unit in allunits.all_units:
        table.setdefault(str(unit), (Decimal(repr(float(unit))), unit.dim))
    return table


def _dimension(kind: str) -> Any:
    _unit_table()  # imports Brian2 quietly
    name = KINDS[kind][0]
    if name is None:
        from brian2.units.fundamentalunits import DIMENSIONLESS

        return DIMENSIONLESS
    return _unit_table()[name][1]


def _describe_dimension(dim: Any) -> str:
    import brian2.units as u
    from brian2.units.fundamentalunits import get_unit

    names = {
        u.second.dim: "a time",
        u.hertz.dim: "a frequency",
        u.volt.dim: "a voltage",
        u.amp.dim: "a current",
        u.siemens.dim: "a conductance",
        u.ohm.dim: "a resistance",
        u.farad.dim: "a capacitance",
        u.metre.dim: "a length",
        u.kilogram.dim: "a mass",
    }
    if dim in names:
        return names[dim]
    return f"a quantity in {get_unit(dim)}"


class QuantityError(Exception):
    """A unit string could not be read; the caller names the file and key (expected, found, hint)."""

    def __init__(self, expected: str, found: str, hint: str | None = None) -> None:
        super().__init__(expected, found, hint)
        self.expected, self.found, self.hint = expected, found, hint


def number_text(value: float) -> str:
    """A number as a model file writes it (ints without a decimal point, floats with ``repr``)."""
    return str(value) if isinstance(value, int) else repr(value)


def unit_hint(kind: str, number: str) -> str:
    """How to write ``number`` as a quantity of ``kind`` (``"10"`` -> ``'"10 ms"'`` for a time)."""
    if kind == "time":
        return f'write it with a time unit, e.g. "{number} ms" or "{number} s"'
    if kind == "rate":
        return f'write it with a frequency unit, e.g. "{number} Hz"'
    return "write a plain number"


def read_quantity(text: str, kind: str, key: str) -> float:
    """Parse ``text`` as a quantity of ``kind`` ("time", "rate" or "number"); SI float.

    Raises:
        QuantityError: not a quantity of that kind (``key``, a dotted key path, picks the hint).
    """
    expected_desc = EXPECTED[kind]
    if len(text) > _MAX_TEXT:
        raise QuantityError(expected_desc, f"a string of {len(text)} characters")
    text = text.replace("µ", "u").replace("μ", "u")
    m = _QUANTITY.fullmatch(text)
    if m is None:
        raise QuantityError(expected_desc, repr(text), unit_hint(kind, "10") if kind != "number" else None)
    number, unit_text = m.group(1), m.group(2)
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.Emax, ctx.Emin = 10**6, -(10**6)
        try:
            value = Decimal(number)
            dim = _dimension("number")
            if unit_text:
                factor, dim = _parse_unit(unit_text, kind)
                value = value * factor
            si = float(value)
        except DecimalException:
            raise QuantityError(expected_desc, f"{text!r} (out of range)") from None
    if not math.isfinite(si) or (si == 0 and Decimal(number) != 0):
        raise QuantityError(expected_desc, f"{text!r} (out of range)")
    wanted = _dimension(kind)
    if dim != wanted:
        if not unit_text:
            raise QuantityError(expected_desc, f"{text!r} (no unit)", unit_hint(kind, number))
        found = f"{text!r} ({_describe_dimension(dim)})"
        if kind == "number":
            hint = "write a plain number"
            name = key.rsplit(".", 1)[-1]
            if name in _POTENTIALS:
                hint = (
                    "membrane potentials are dimensionless in neuro (Norse convention, threshold "
                    f"1 by default): write e.g. {name} = {number}"
                )
            raise QuantityError(expected_desc, found, hint)
        raise QuantityError(expected_desc, found, unit_hint(kind, number))
    return si + 0.0


def _parse_unit(text: str, kind: str) -> tuple[Decimal, Any]:
    """``ms``, ``mV/ms``, ``s^-1``, ``kHz * ms``: (SI factor, dimension)."""
    table = _unit_table()
    parts = re.split(r"\s*(?<!\*)([*/])(?!\*)\s*", text)
    if parts[0] == "" and len(parts) > 1:  # "15 /s"
        parts = parts[1:]
    else:
        parts = ["*", *parts]
    factor = Decimal(1)
    dim = _dimension("number")
    sign = 1
    for i, part in enumerate(parts):
        if i % 2 == 0:
            sign = 1 if part == "*" else -1
            continue
        m = _FACTOR.fullmatch(part)
        if m is None or m.group(1) not in table:
            name = m.group(1) if m else part
            wanted = _dimension(kind) if kind != "number" else None
            names = [n for n, (_, d) in table.items() if wanted is None or d == wanted]
            near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            raise QuantityError(
                "a known unit (Brian2 unit names such as ms, s, us, Hz, kHz)",
                repr(part),
                f"did you mean {near[0]!r}?" if near else unit_hint(kind, "10"),
            )
        unit_factor, unit_dim = table[m.group(1)]
        power = sign * int(m.group(2) or 1)
        factor *= unit_factor**power
        dim = dim * unit_dim**power
    return factor, dim


def parse_quantity(text: str, kind: str, key: str = "value") -> float:
    """Parse a unit string into an SI float.

    Args:
        text: e.g. ``"10 ms"``, ``"15 Hz"``, ``"0.5"``.
        kind: ``"time"`` (returns seconds), ``"rate"`` (hertz) or ``"number"`` (dimensionless).
        key: name used in error messages.

    Raises:
        ModelFileError: the text is not a quantity of that kind.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    try:
        return read_quantity(text, kind, key)
    except QuantityError as exc:
        raise ModelFileError("<string>", key, exc.expected, exc.found, exc.hint) from None


def parse_time(text: str) -> float:
    """``"10 ms"`` -> 0.01 (seconds).  Raises ModelFileError."""
    return parse_quantity(text, "time")


def parse_rate(text: str) -> float:
    """``"15 Hz"`` -> 15.0 (hertz).  Raises ModelFileError."""
    return parse_quantity(text, "rate")


def _decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def format_quantity(value: float, kind: str) -> str:
    """An SI float as a unit string that parses back to exactly the same float: rates in Hz,
    times in s (>= 1 s), ms (>= 1 ms, and 0) or us."""
    exact = Decimal(repr(value))
    if kind == "rate":
        return f"{_decimal_text(exact)} Hz"
    magnitude = abs(value)
    if magnitude >= 1:
        return f"{_decimal_text(exact)} s"
    if magnitude >= 1e-3 or magnitude == 0:
        return f"{_decimal_text(exact.scaleb(3))} ms"
    return f"{_decimal_text(exact.scaleb(6))} us"
