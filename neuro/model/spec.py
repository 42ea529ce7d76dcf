"""Model files: TOML with physical units, parsed and validated into a :class:`ModelGraph`.

Public API:

* :func:`load_model` (path) and :func:`loads_model` (text) -> :class:`~neuro.model.graph.ModelGraph`;
* :func:`model_from_dict` for an already parsed TOML document;
* :func:`dump_model` -> resolved TOML (every default filled in) that re-parses to the same
  canonical hash;
* :func:`parse_quantity`, :func:`parse_time`, :func:`parse_rate` for unit strings;
* :class:`ModelFileError`, the only exception these functions raise for bad input.

Units.  Quantities are strings of a number and a Brian2 unit: ``"10 ms"``, ``"0.01 s"``,
``"15 Hz"``, ``"2 kHz"``, compound units with ``*``, ``/`` and integer powers (``"1 s^-1"``).
Unit names are looked up among Brian2's unit names, never evaluated.  Times must carry a time unit
and rates a frequency unit; a bare number is refused with a hint.  Membrane potentials
(``v_th``, ``v_reset``, ``v_leak``, ``adapt_increment``) and weights are dimensionless, as in Norse
(threshold 1 by default): ``"1 mV"`` is refused.  Inside the graph times are seconds and rates hertz;
values are converted through decimal arithmetic, so ``"10 ms"``, ``"0.01 s"`` and ``"10000 us"``
give the same float.  Brian2 is imported on first use, not when this module is imported.

The model file format is documented in :data:`FORMAT_HELP` (and in the README).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
import sys
import tomllib
import warnings
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, DecimalException, localcontext
from pathlib import Path
from typing import Any

from neuro.model.graph import (
    CROSSCHECK_DEFAULTS,
    DATASETS,
    ENCODING_PARAMETERS,
    ENCODINGS,
    FORMATS,
    INIT_DISTS,
    INIT_PARAMETERS,
    LOSSES,
    LR_SCHEDULES,
    NEURON_TYPES,
    POPULATION_PARAMETERS,
    PROJECTION_KINDS,
    READOUTS,
    SIGNS,
    SURROGATES,
    CrosscheckSpec,
    DataSpec,
    Encoding,
    GraphError,
    Init,
    ModelGraph,
    Population,
    Projection,
    ReversibleSpec,
    TrainingSpec,
)
from neuro.rules import registry

__all__ = [
    "FORMAT_HELP",
    "POPULATION_DEFAULTS",
    "ModelFileError",
    "dump_model",
    "load_model",
    "loads_model",
    "model_from_dict",
    "parse_quantity",
    "parse_rate",
    "parse_time",
]

FORMAT_HELP = """\
[model]            name (required), description (one line), dt = "1 ms", duration (required),
                   output (the readout population; default: the only population nothing reads),
                   format (default storage format of the projections, "float32")
[populations.P]    type = LIF | LIFBox | AdaptiveLIF | LI | input, size (> 0), and per type:
                   tau_mem "10 ms", tau_syn "5 ms", v_th 1, v_reset 0, v_leak 0, refractory "0 ms",
                   tau_adapt "700 ms", adapt_increment 1.8, surrogate "superspike",
                   surrogate_scale 10 (potentials dimensionless, times with units)
[projections.J]    source, target, kind = dense | recurrent | one_to_one, init (a number, or
                   { dist = "normal", mean, std } / { dist = "uniform", low, high } /
                   { dist = "constant", value }), format, algebra [p, q, r] = [0, 0, 0],
                   grades = [0], delay "0 ms", rule = none | bptt | eprop | stdp_pair |
                   stdp_triplet | rstdp, bounds [low, high], sign = excitatory | inhibitory
[projections.J.rule_params]  the rule's parameters (each rule declares its keys: neuro.rules.registry)
[inputs.P]         encoding = poisson (rate | max_rate in Hz) | latency (t_max = duration - dt,
                   or tau for the RC law; threshold 0) | current (gain 1) | spike_times | raster
[data]             name = yinyang | randman | digits | poisson_scenario; other keys are passed
                   to the data set verbatim
[training]         epochs 1, batch_size 32, microbatch 8, seed 0, learning_rate 1e-3,
                   readout max_membrane | spike_count | first_spike, loss cross_entropy | none,
                   rate_regularisation 0
[crosscheck]       window "2 ms", min_gamma 0.9, rate_rtol 0.1, weight_atol 1e-9
"""


class ModelFileError(ValueError):
    """A model file (or model dict) is invalid.

    The message names the file, the key path (``populations.hidden.tau_mem``), what was expected,
    what was found and, where one helps, a hint (the nearest valid key, the unit to write).

    Attributes:
        source: the file name, or ``"<string>"`` / ``"<dict>"``.
        key: dotted key path, or None for errors that concern the whole file (TOML syntax).
        expected, found: what a valid value looks like, and what was there.
        hint: how to fix it, or None.
        line, column: 1-based position of a TOML syntax error, else None.
    """

    def __init__(
        self,
        source: str,
        key: str | None,
        expected: str,
        found: str,
        hint: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.source, self.key, self.expected, self.found = source, key, expected, found
        self.hint, self.line, self.column = hint, line, column
        where = source
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        if key:
            where += f": {key}"
        message = f"{where}: expected {expected}, found {found}"
        if hint:
            message += f"\n  hint: {hint}"
        super().__init__(message)


# --------------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------------

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY = re.compile(rf"\s*({_NUMBER})\s*(.*?)\s*", re.ASCII | re.DOTALL)
_FACTOR = re.compile(r"([A-Za-z_]\w*)\s*(?:(?:\*\*|\^)\s*\(?\s*([+-]?\d{1,2})\s*\)?)?", re.ASCII)
_MAX_TEXT = 200

#: Quantity kinds: the dimension a value must have (as a Brian2 unit name) and an example.
_KINDS = {"time": ("second", '"10 ms"'), "rate": ("hertz", '"15 Hz"'), "number": (None, "1.0")}


@functools.cache
def _unit_table() -> dict[str, tuple[Decimal, Any]]:
    """Brian2 unit name -> (SI factor as an exact decimal, Brian2 Dimension).  Imports Brian2."""
    # Importing Brian2 emits pyparsing deprecation warnings and replaces sys.excepthook with a
    # handler that writes debug logs for every uncaught error; we only want its unit tables.
    hook = sys.excepthook
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import brian2.units as units
            import brian2.units.allunits as allunits
            from brian2.units.fundamentalunits import Unit
    finally:
        sys.excepthook = hook

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
    name = _KINDS[kind][0]
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


class _QuantityError(Exception):
    """Internal: a unit string could not be read (expected, found, hint)."""

    def __init__(self, expected: str, found: str, hint: str | None = None) -> None:
        super().__init__(expected, found, hint)
        self.expected, self.found, self.hint = expected, found, hint


def _number_text(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(value)


def _unit_hint(kind: str, number: str) -> str:
    if kind == "time":
        return f'write it with a time unit, e.g. "{number} ms" or "{number} s"'
    if kind == "rate":
        return f'write it with a frequency unit, e.g. "{number} Hz"'
    return "write a plain number"


def _read_quantity(text: str, kind: str, key: str) -> float:
    """Parse ``text`` as a quantity of ``kind`` ("time", "rate" or "number"); SI float."""
    expected_desc = {
        "time": 'a time with a unit, e.g. "10 ms"',
        "rate": 'a frequency with a unit, e.g. "15 Hz"',
        "number": "a dimensionless number",
    }[kind]
    if len(text) > _MAX_TEXT:
        raise _QuantityError(expected_desc, f"a string of {len(text)} characters")
    text = text.replace("µ", "u").replace("μ", "u")
    m = _QUANTITY.fullmatch(text)
    if m is None:
        raise _QuantityError(expected_desc, repr(text), _unit_hint(kind, "10") if kind != "number" else None)
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
            raise _QuantityError(expected_desc, f"{text!r} (out of range)") from None
    if not math.isfinite(si) or (si == 0 and Decimal(number) != 0):
        raise _QuantityError(expected_desc, f"{text!r} (out of range)")
    wanted = _dimension(kind)
    if dim != wanted:
        if not unit_text:
            raise _QuantityError(expected_desc, f"{text!r} (no unit)", _unit_hint(kind, number))
        found = f"{text!r} ({_describe_dimension(dim)})"
        if kind == "number":
            hint = "write a plain number"
            if key.rsplit(".", 1)[-1] in ("v_th", "v_reset", "v_leak", "adapt_increment"):
                hint = (
                    "membrane potentials are dimensionless in neuro (Norse convention, threshold "
                    f"1 by default): write e.g. {key.rsplit('.', 1)[-1]} = {number}"
                )
            raise _QuantityError(expected_desc, found, hint)
        raise _QuantityError(expected_desc, found, _unit_hint(kind, number))
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
            raise _QuantityError(
                "a known unit (Brian2 unit names such as ms, s, us, Hz, kHz)",
                repr(part),
                f"did you mean {near[0]!r}?" if near else _unit_hint(kind, "10"),
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
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    try:
        return _read_quantity(text, kind, key)
    except _QuantityError as exc:
        raise ModelFileError("<string>", key, exc.expected, exc.found, exc.hint) from None


def parse_time(text: str) -> float:
    """``"10 ms"`` -> 0.01 (seconds).  Raises ModelFileError."""
    return parse_quantity(text, "time")


def parse_rate(text: str) -> float:
    """``"15 Hz"`` -> 15.0 (hertz).  Raises ModelFileError."""
    return parse_quantity(text, "rate")


# --------------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------------

#: A parameter: (kind, default, choices-or-constraint).  Kinds: "time", "rate", "number", "int",
#: "choice", "bool".  Constraints: ">0", ">=0" or None.
_Param = tuple[str, Any, Any]

#: Defaults of the neuron parameters (Norse defaults; AdaptiveLIF after Norse's LSNN).
POPULATION_DEFAULTS: dict[str, _Param] = {
    "tau_mem": ("time", "10 ms", ">0"),
    "tau_syn": ("time", "5 ms", ">0"),
    "v_th": ("number", 1.0, None),
    "v_reset": ("number", 0.0, None),
    "v_leak": ("number", 0.0, None),
    "refractory": ("time", "0 ms", ">=0"),
    "tau_adapt": ("time", "700 ms", ">0"),
    "adapt_increment": ("number", 1.8, ">=0"),
    "surrogate": ("choice", "superspike", SURROGATES),
    "surrogate_scale": ("number", 10.0, ">0"),
}

_TRAINING: dict[str, _Param] = {
    "epochs": ("int", 1, 1),
    "batch_size": ("int", 32, 1),
    "microbatch": ("int", 8, 1),
    "seed": ("int", 0, 0),
    "learning_rate": ("number", 1e-3, ">0"),
    "readout": ("choice", "max_membrane", READOUTS),
    "loss": ("choice", "cross_entropy", LOSSES),
    "rate_regularisation": ("number", 0.0, ">=0"),
    "lr_schedule": ("choice", "cosine", LR_SCHEDULES),
}

_CROSSCHECK: dict[str, _Param] = {
    "window": ("time", f"{CROSSCHECK_DEFAULTS['window'] * 1000:g} ms", ">0"),
    "min_gamma": ("number", CROSSCHECK_DEFAULTS["min_gamma"], ">0"),
    "rate_rtol": ("number", CROSSCHECK_DEFAULTS["rate_rtol"], ">=0"),
    "weight_atol": ("number", CROSSCHECK_DEFAULTS["weight_atol"], ">=0"),
}

_TOP_LEVEL = ("model", "populations", "projections", "inputs", "data", "training", "crosscheck", "reversible")
_MODEL_KEYS = ("name", "description", "dt", "duration", "output", "format")
_PROJECTION_KEYS = (
    "source", "target", "kind", "init", "format", "algebra", "grades", "delay", "rule",
    "rule_params", "bounds", "sign",
)  # fmt: skip

_REQUIRED = object()


def _type_name(value: Any) -> str:
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


def _show(value: Any) -> str:
    """Short TOML-ish rendering of a found value for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, int | float):
        text = _number_text(value) if not isinstance(value, int) or value < 10**30 else "a huge int"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = f"an array of {len(value)}"
    else:
        text = f"{value!s} ({_type_name(value)})"
    return text if len(text) <= 60 else text[:57] + "..."


class _Table:
    """One TOML table being read: typed getters that record which keys were used."""

    def __init__(self, source: str, data: Any, key: str) -> None:
        if not isinstance(data, dict):
            raise ModelFileError(source, key or None, "a table", _show(data))
        self.source, self.data, self.key = source, data, key
        self.used: set[str] = set()

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def error(self, name: str, expected: str, found: str, hint: str | None = None) -> Exception:
        return ModelFileError(self.source, self.path(name), expected, found, hint)

    def raw(self, name: str, default: Any = _REQUIRED, expected: str = "a value") -> Any:
        self.used.add(name)
        if name in self.data:
            return self.data[name]
        if default is _REQUIRED:
            raise self.error(name, expected, "nothing (the key is missing)")
        return default

    def quantity(self, name: str, kind: str, default: Any = _REQUIRED, check: Any = None) -> float:
        value = self.raw(name, default, _KINDS_EXPECTED[kind])
        return self.convert(name, value, kind, check)

    def convert(self, name: str, value: Any, kind: str, check: Any = None) -> float:
        if isinstance(value, str):
            try:
                out = _read_quantity(value, kind, self.path(name))
            except _QuantityError as exc:
                raise self.error(name, exc.expected, exc.found, exc.hint) from None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if kind != "number":
                raise self.error(
                    name,
                    _KINDS_EXPECTED[kind],
                    f"{_show(value)} (a bare number, no unit)",
                    _unit_hint(kind, _number_text(value)),
                )
            try:
                out = float(value) + 0.0
            except OverflowError:
                out = math.inf
            if not math.isfinite(out):
                raise self.error(name, "a finite number", _show(value))
        else:
            raise self.error(name, _KINDS_EXPECTED[kind], _type_name(value))
        if check == ">0" and not out > 0:
            raise self.error(name, "a value > 0", _show(value))
        if check == ">=0" and not out >= 0:
            raise self.error(name, "a value >= 0", _show(value))
        return out

    def integer(self, name: str, default: Any = _REQUIRED, low: int | None = None) -> int:
        value = self.raw(name, default, "an integer")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, "an integer", _show(value))
        if low is not None and value < low:
            raise self.error(name, f"an integer >= {low}", _show(value))
        return value

    def string(self, name: str, default: Any = _REQUIRED) -> str:
        value = self.raw(name, default, "a string")
        if value is not None and not isinstance(value, str):
            raise self.error(name, "a string", _show(value))
        return value

    def choice(self, name: str, choices: Iterable[str], default: Any = _REQUIRED) -> str:
        choices = tuple(choices)
        expected = "one of " + ", ".join(choices)
        value = self.raw(name, default, expected)
        if value is None or (isinstance(value, str) and value in choices):
            return value
        near = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
        hint = f"did you mean {near[0]!r}?" if near else None
        raise self.error(name, expected, _show(value), hint)

    def boolean(self, name: str, default: Any = _REQUIRED) -> bool:
        value = self.raw(name, default, "true or false")
        if not isinstance(value, bool):
            raise self.error(name, "true or false", _show(value))
        return value

    def sub(self, name: str, required: bool = False) -> _Table | None:
        value = self.raw(name, _REQUIRED if required else None, "a table")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(name, "a table", _show(value))
        return _Table(self.source, value, self.path(name))

    def param(self, name: str, spec: _Param) -> Any:
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
        """Refuse keys that were not read, naming the nearest valid key."""
        valid = list(valid)
        for name in self.data:
            if name in self.used:
                continue
            hint = elsewhere(name) if elsewhere else None
            if hint is None:
                near = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}?" if near else None
            expected = "one of the keys " + ", ".join(valid) if valid else "no keys here"
            raise self.error(name, expected, f"unknown key {name!r}", hint)


_KINDS_EXPECTED = {
    "time": 'a time with a unit, e.g. "10 ms"',
    "rate": 'a frequency with a unit, e.g. "15 Hz"',
    "number": "a dimensionless number",
}


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def loads_model(text: str, source: str = "<string>") -> ModelGraph:
    """Parse a model file's text into a :class:`ModelGraph`.

    Args:
        text: TOML text.
        source: the name errors report (a file name).

    Raises:
        ModelFileError: invalid TOML, or a model that is not valid.
    """
    if not isinstance(text, str):
        raise ModelFileError(source, None, "TOML text (a str)", _type_name(text))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = column = None
        if m:
            line, column = int(m.group(1)), int(m.group(2))
            message = message[: m.start()].strip()
        elif "end of document" in message:
            lines = text.splitlines() or [""]
            line, column = len(lines), len(lines[-1]) + 1
        raise ModelFileError(
            source, None, "valid TOML", message, "see https://toml.io for the syntax", line, column
        ) from None
    return model_from_dict(data, source)


def load_model(path: str | Path) -> ModelGraph:
    """Read and parse a model file (UTF-8 TOML).

    Raises:
        ModelFileError: the file cannot be read, is not valid TOML, or the model is not valid.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        hint = None
        if path.parent.is_dir():
            near = difflib.get_close_matches(path.name, [p.name for p in path.parent.iterdir()], 1)
            hint = f"did you mean {str(path.parent / near[0])!r}?" if near else None
        raise ModelFileError(str(path), None, "an existing model file", "no such file", hint) from None
    except UnicodeDecodeError as exc:
        raise ModelFileError(str(path), None, "UTF-8 text", f"undecodable bytes ({exc.reason})") from None
    except OSError as exc:
        raise ModelFileError(str(path), None, "a readable file", exc.strerror or str(exc)) from None
    return loads_model(text, str(path))


def model_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> ModelGraph:
    """Validate a parsed TOML document (nested dicts) and build the :class:`ModelGraph`.

    Raises:
        ModelFileError: the document is not a valid model.
    """
    top = _Table(source, data, "")
    for name in top.data:
        if not isinstance(name, str):
            raise ModelFileError(source, None, "string keys", _show(name))
    model = top.sub("model", required=True)
    name = model.string("name")
    description = model.string("description", "")
    if "\n" in description or "\r" in description:
        raise model.error("description", "a single line", "a line break")
    dt = model.quantity("dt", "time", "1 ms", ">0")
    duration = model.quantity("duration", "time", _REQUIRED, ">0")
    if not duration > dt:
        raise model.error(
            "duration",
            f"a duration longer than dt = {_format_quantity(dt, 'time')}",
            _show(model.data["duration"]),
            "dt is the time step, duration the time per sample",
        )
    output = model.string("output", None)
    default_format = model.choice("format", FORMATS, "float32")
    model.finish(_MODEL_KEYS)

    pops_table = top.sub("populations", required=True)
    populations = {}
    for pop_name in pops_table.data:
        pops_table.used.add(pop_name)
        populations[pop_name] = _read_population(pops_table.sub(pop_name), pop_name)

    projections = {}
    proj_table = top.sub("projections")
    if proj_table is not None:
        for proj_name in proj_table.data:
            proj_table.used.add(proj_name)
            table = proj_table.sub(proj_name)
            projections[proj_name] = _read_projection(table, proj_name, default_format)

    encodings = {}
    inputs_table = top.sub("inputs")
    if inputs_table is not None:
        for pop_name in inputs_table.data:
            inputs_table.used.add(pop_name)
            encodings[pop_name] = _read_encoding(inputs_table.sub(pop_name), pop_name, dt, duration)

    dataspec = None
    data_table = top.sub("data")
    if data_table is not None:
        data_name = data_table.choice("name", DATASETS)
        options = {k: v for k, v in data_table.data.items() if k != "name"}
        dataspec = (data_name, options)

    training_table = top.sub("training") or _Table(source, {}, "training")
    training = {k: training_table.param(k, spec) for k, spec in _TRAINING.items()}
    training_table.finish(_TRAINING)

    cross_table = top.sub("crosscheck") or _Table(source, {}, "crosscheck")
    crosscheck = {k: cross_table.param(k, spec) for k, spec in _CROSSCHECK.items()}
    cross_table.finish(_CROSSCHECK)
    reversible = None
    rev_table = top.sub("reversible")
    if rev_table is not None:
        reversible = ReversibleSpec(population=rev_table.string("population"),
                                    blocks=rev_table.integer("blocks", 2, low=1),
                                    weight_scale=rev_table.quantity("weight_scale", "number", 1.0, ">0"))
        rev_table.finish(("population", "blocks", "weight_scale"))
    top.finish(_TOP_LEVEL)

    candidates = None
    if output is None:
        read = {p["source"] for p in projections.values() if p["kind"] != "recurrent"}
        candidates = [n for n, p in populations.items() if p["type"] != "input" and n not in read]
        output = candidates[0] if len(candidates) == 1 else ""

    try:
        return ModelGraph(
            name=name,
            description=description,
            dt=dt,
            duration=duration,
            populations={k: Population(name=k, **v) for k, v in populations.items()},
            projections={k: _make_projection(k, v) for k, v in projections.items()},
            output=output,
            encodings={k: Encoding(population=k, **v) for k, v in encodings.items()},
            data=None if dataspec is None else DataSpec(*dataspec),
            training=TrainingSpec(**training),
            crosscheck=CrosscheckSpec(**crosscheck),
            reversible=reversible,
        )
    except GraphError as exc:
        if exc.key == "model.output" and candidates is not None and len(candidates) != 1:
            raise ModelFileError(
                source,
                "model.output",
                "the name of the output (readout) population",
                f"no output key, and {len(candidates)} populations that nothing reads from"
                + (f" ({', '.join(candidates)})" if candidates else ""),
                'name it under [model], e.g. output = "readout"',
            ) from None
        raise ModelFileError(source, exc.key, exc.expected, exc.found, exc.hint) from None


def _read_population(table: _Table, name: str) -> dict[str, Any]:
    ptype = table.choice("type", NEURON_TYPES)
    size = table.integer("size", low=1)
    out: dict[str, Any] = {"type": ptype, "size": size}
    for param in POPULATION_PARAMETERS[ptype]:
        out[param] = table.param(param, POPULATION_DEFAULTS[param])

    def elsewhere(key: str) -> str | None:
        owners = [t for t, ps in POPULATION_PARAMETERS.items() if key in ps]
        if owners:
            return f"{key} applies to {', '.join(owners)} populations, not {ptype}"
        if key in _ENCODING_KEYS:
            return f"put the input encoding under [inputs.{name}]"
        return None

    table.finish(["type", "size", *POPULATION_PARAMETERS[ptype]], elsewhere)
    return out


_ENCODING_KEYS = ("encoding", "rate", "max_rate", "t_max", "tau", "threshold", "gain")


_ENCODING_KINDS: dict[str, _Param] = {
    "rate": ("rate", None, ">0"),
    "max_rate": ("rate", None, ">0"),
    "t_max": ("time", None, ">0"),
    "tau": ("time", None, ">0"),
    "threshold": ("number", 0.0, None),
    "gain": ("number", 1.0, None),
}


def _read_encoding(table: _Table, name: str, dt: float, duration: float) -> dict[str, Any]:
    kind = table.choice("encoding", ENCODINGS)
    out: dict[str, Any] = {"kind": kind}
    if kind == "poisson":
        for key in ("rate", "max_rate"):
            if key in table.data:
                out[key] = table.quantity(key, "rate", check=">0")
        if len(out) != 2:
            raise ModelFileError(
                table.source,
                table.key,
                "exactly one of rate, max_rate for poisson encoding",
                "both" if len(out) == 3 else "neither",
                'rate = "15 Hz": every channel at a fixed rate; max_rate = "100 Hz": a channel '
                "with feature value 1 fires at max_rate",
            )
    elif kind == "latency":
        if "tau" in table.data:
            out["tau"] = table.quantity("tau", "time", check=">0")
            if "t_max" in table.data:
                raise table.error("t_max", "t_max (linear latency) or tau (RC latency), not both", "both")
        else:
            # Default: a feature of 0 spikes in the last step, as in neuro.data.latency_encode.
            last_step = float(Decimal(repr(duration)) - Decimal(repr(dt)))
            has_max = "t_max" in table.data
            out["t_max"] = table.quantity("t_max", "time", check=">0") if has_max else last_step
        out["threshold"] = table.quantity("threshold", "number", 0.0)
    elif kind == "current":
        out["gain"] = table.quantity("gain", "number", 1.0)

    def elsewhere(key: str) -> str | None:
        owners = [e for e, ps in ENCODING_PARAMETERS.items() if key in ps]
        return f"{key} applies to {' and '.join(owners)} encoding, not {kind}" if owners else None

    table.finish(["encoding", *ENCODING_PARAMETERS[kind]], elsewhere)
    return out


def _read_projection(table: _Table, name: str, default_format: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["source"] = table.string("source")
    out["target"] = table.string("target")
    out["kind"] = table.choice(
        "kind", PROJECTION_KINDS, "recurrent" if out["source"] == out["target"] else "dense"
    )
    out["init"] = _read_init(table)
    out["format"] = table.choice("format", FORMATS, default_format)
    out["algebra"] = _int_list(table, "algebra", [0, 0, 0], length=3)
    out["grades"] = _int_list(table, "grades", [0])
    out["delay"] = table.quantity("delay", "time", "0 ms", ">=0")
    rule = table.choice("rule", registry.names(), "none")
    out["rule"] = rule
    params = table.sub("rule_params") or _Table(table.source, {}, table.path("rule_params"))
    declared = registry.get(rule)
    schema = declared.keys
    out["rule_params"] = {k: params.param(k, spec) for k, spec in schema.items()}

    def rule_hint(key: str) -> str | None:
        if not schema:
            return f"rule {rule!r} takes no parameters"
        owners = [r for r in registry.names() if key in registry.get(r).keys]
        return f"{key} is a parameter of {', '.join(owners)}, not {rule}" if owners else None

    params.finish(schema, rule_hint)
    bounds = table.raw("bounds", None)
    if bounds is not None:
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise table.error("bounds", "[low, high]", _show(bounds))
        bounds = tuple(table.convert("bounds", b, "number") for b in bounds)
    out["bounds"] = bounds
    if declared.resolve is not None:
        try:
            declared.resolve(out["rule_params"], set(params.data), bounds)
        except registry.RuleKeyError as err:
            where = params if err.table == "rule_params" else table
            found = err.found or (_show(where.data[err.key]) if err.key in where.data
                                  else "nothing (the key is missing)")
            expected = err.expected
            if "{value}" in expected:
                expected = expected.replace("{value}", _format_param(err.value, schema.get(err.key)))
            raise where.error(err.key, expected, found, err.hint) from None
    out["sign"] = table.choice("sign", SIGNS, None)
    table.finish(_PROJECTION_KEYS)
    return out


def _int_list(table: _Table, name: str, default: list[int], length: int | None = None) -> list:
    value = table.raw(name, default)
    expected = f"an array of {length} integers" if length else "an array of integers"
    if (
        not isinstance(value, list)
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
        or (length is not None and len(value) != length)
    ):
        raise table.error(name, expected, _show(value))
    return value


def _read_init(table: _Table) -> Init:
    value = table.raw(
        "init", _REQUIRED, 'initial weights: a number or { dist = "normal", mean = 0, std = 0.1 }'
    )
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Init("constant", value=table.convert("init", value, "number"))
    if not isinstance(value, dict):
        raise table.error(
            "init",
            'a number or a table such as { dist = "normal", mean = 0, std = 0.1 }',
            _show(value),
            'uniform weights: { dist = "uniform", low = 0, high = 0.01 }',
        )
    sub = _Table(table.source, value, table.path("init"))
    dist = sub.choice("dist", INIT_DISTS, "constant" if "value" in value else _REQUIRED)

    def elsewhere(key: str) -> str | None:
        owners = [d for d, ps in INIT_PARAMETERS.items() if key in ps]
        return f"{key} belongs to dist {' or '.join(owners)}, not {dist}" if owners else None

    # Unknown keys first: a misspelt parameter is reported as such, not as a missing one.
    sub.used.update(INIT_PARAMETERS[dist])
    sub.finish(["dist", *INIT_PARAMETERS[dist]], elsewhere)
    params = {k: sub.quantity(k, "number") for k in INIT_PARAMETERS[dist]}
    return Init(dist, **params)


def _make_projection(name: str, fields: dict[str, Any]) -> Projection:
    fields = dict(fields)
    fields["algebra"] = tuple(fields["algebra"])
    fields["grades"] = tuple(fields["grades"])
    fields["rule_params"] = tuple(sorted(fields["rule_params"].items()))
    return Projection(name=name, **fields)


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # JSON escapes are valid TOML basic-string escapes; DEL must be escaped in TOML, not in JSON.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _decimal_text(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _format_quantity(value: float, kind: str) -> str:
    """An SI float as a unit string that parses back to exactly the same float."""
    exact = Decimal(repr(value))
    if kind == "rate":
        return f"{_decimal_text(exact)} Hz"
    magnitude = abs(value)
    if magnitude >= 1:
        return f"{_decimal_text(exact)} s"
    if magnitude >= 1e-3 or magnitude == 0:
        return f"{_decimal_text(exact.scaleb(3))} ms"
    return f"{_decimal_text(exact.scaleb(6))} us"


def _format_param(value: Any, spec: _Param | None) -> str:
    if spec is not None and spec[0] in ("time", "rate") and isinstance(value, float):
        return _toml_string(_format_quantity(value, spec[0]))
    return _toml_value(value)


def dump_model(graph: ModelGraph) -> str:
    """The resolved model file of ``graph``: every default filled in, times and rates with units.

    ``loads_model(dump_model(g)).canonical_hash() == g.canonical_hash()`` for every graph.
    """
    lines = [
        "# Resolved model file (all defaults filled in), written by neuro.model.spec.dump_model.",
        f"# canonical hash: {graph.canonical_hash()}",
        "",
        "[model]",
        f"name = {_toml_string(graph.name)}",
        f"description = {_toml_string(graph.description)}",
        f"dt = {_toml_string(_format_quantity(graph.dt, 'time'))}",
        f"duration = {_toml_string(_format_quantity(graph.duration, 'time'))}",
        f"output = {_toml_string(graph.output)}",
    ]
    for pop in graph.populations.values():
        lines += ["", f"[populations.{_toml_key(pop.name)}]"]
        lines.append(f"type = {_toml_string(pop.type)}")
        lines.append(f"size = {pop.size}")
        for key, value in pop.parameters.items():
            lines.append(f"{key} = {_format_param(value, POPULATION_DEFAULTS[key])}")
    for proj in graph.projections.values():
        lines += ["", f"[projections.{_toml_key(proj.name)}]"]
        lines.append(f"source = {_toml_string(proj.source)}")
        lines.append(f"target = {_toml_string(proj.target)}")
        lines.append(f"kind = {_toml_string(proj.kind)}")
        lines.append(f"init = {_toml_value(proj.init.to_dict())}")
        lines.append(f"format = {_toml_string(proj.format)}")
        lines.append(f"algebra = {_toml_value(list(proj.algebra))}")
        lines.append(f"grades = {_toml_value(list(proj.grades))}")
        lines.append(f"delay = {_toml_string(_format_quantity(proj.delay, 'time'))}")
        lines.append(f"rule = {_toml_string(proj.rule)}")
        if proj.bounds is not None:
            lines.append(f"bounds = {_toml_value(list(proj.bounds))}")
        if proj.sign is not None:
            lines.append(f"sign = {_toml_string(proj.sign)}")
        if proj.rule_params:
            schema = registry.get(proj.rule).keys
            lines += ["", f"[projections.{_toml_key(proj.name)}.rule_params]"]
            for key, value in proj.rule_params:
                lines.append(f"{_toml_key(key)} = {_format_param(value, schema.get(key))}")
    for enc in graph.encodings.values():
        lines += ["", f"[inputs.{_toml_key(enc.population)}]"]
        lines.append(f"encoding = {_toml_string(enc.kind)}")
        for key in ENCODING_PARAMETERS[enc.kind]:
            value = getattr(enc, key)
            if value is not None:
                lines.append(f"{key} = {_format_param(value, _ENCODING_KINDS[key])}")
    if graph.data is not None:
        lines += ["", "[data]", f"name = {_toml_string(graph.data.name)}"]
        for key, value in graph.data.options.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    lines += ["", "[training]"]
    for key, value in graph.training.to_dict().items():
        lines.append(f"{key} = {_toml_value(value)}")
    lines += ["", "[crosscheck]"]
    for key, value in graph.crosscheck.to_dict().items():
        lines.append(f"{key} = {_format_param(value, _CROSSCHECK[key])}")
    if graph.reversible is not None:
        rev = graph.reversible
        lines += ["", "[reversible]", f"population = {_toml_string(rev.population)}",
                  f"blocks = {rev.blocks}", f"weight_scale = {rev.weight_scale!r}"]
    return "\n".join(lines) + "\n"
