"""The writer: :func:`dump_model` turns a graph back into a resolved model file.

Every default is filled in, times and rates are written with units that parse back to exactly the
same floats, and ``loads_model(dump_model(g)).canonical_hash() == g.canonical_hash()``.  Given
weights are written with their absolute (resolved) path and their sha256,
``init = { dist = "file", file = "/abs/W.safetensors", key = "w", sha256 = "..." }``: the resolved
file can be stored anywhere (a run folder, a registry version) and still names the same weights,
and reading it refuses weights that changed since.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from neuro.model.encoding import ENCODING_PARAMETERS
from neuro.model.graph import ModelGraph
from neuro.model.schema import CROSSCHECK_KEYS, ENCODING_KEYS, POPULATION_DEFAULTS, Param
from neuro.model.units import format_quantity
from neuro.rules import registry

__all__ = ["dump_model", "format_param"]

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


def format_param(value: Any, spec: Param | None) -> str:
    """A value as a model file writes it (times and rates as unit strings, see ``spec``'s kind)."""
    if spec is not None and spec[0] in ("time", "rate") and isinstance(value, float):
        return _toml_string(format_quantity(value, spec[0]))
    return _toml_value(value)


def dump_model(graph: ModelGraph) -> str:
    """The resolved model file of ``graph``: every default filled in, times and rates with units.

    ``loads_model(dump_model(g)).canonical_hash() == g.canonical_hash()`` for every graph, read
    from any folder: given weights are written with their absolute path and pinned by their sha256
    (reading the file again refuses weights that changed since).
    """
    lines = [
        "# Resolved model file (all defaults filled in), written by neuro.model.writer.dump_model.",
        f"# canonical hash: {graph.canonical_hash()}",
        "",
        "[model]",
        f"name = {_toml_string(graph.name)}",
        f"description = {_toml_string(graph.description)}",
        f"dt = {_toml_string(format_quantity(graph.dt, 'time'))}",
        f"duration = {_toml_string(format_quantity(graph.duration, 'time'))}",
        f"output = {_toml_string(graph.output)}",
    ]
    for pop in graph.populations.values():
        lines += ["", f"[populations.{_toml_key(pop.name)}]"]
        lines.append(f"type = {_toml_string(pop.type)}")
        lines.append(f"size = {pop.size}")
        for key, value in pop.parameters.items():
            lines.append(f"{key} = {format_param(value, POPULATION_DEFAULTS[key])}")
    for proj in graph.projections.values():
        lines += ["", f"[projections.{_toml_key(proj.name)}]"]
        lines.append(f"source = {_toml_string(proj.source)}")
        lines.append(f"target = {_toml_string(proj.target)}")
        lines.append(f"kind = {_toml_string(proj.kind)}")
        lines.append(f"init = {_toml_value(proj.init.to_dict())}")
        lines.append(f"format = {_toml_string(proj.format)}")
        lines.append(f"algebra = {_toml_value(list(proj.algebra))}")
        lines.append(f"grades = {_toml_value(list(proj.grades))}")
        lines.append(f"delay = {_toml_string(format_quantity(proj.delay, 'time'))}")
        lines.append(f"rule = {_toml_string(proj.rule)}")
        if proj.bounds is not None:
            lines.append(f"bounds = {_toml_value(list(proj.bounds))}")
        if proj.sign is not None:
            lines.append(f"sign = {_toml_string(proj.sign)}")
        if proj.rule_params:
            schema = registry.get(proj.rule).keys
            lines += ["", f"[projections.{_toml_key(proj.name)}.rule_params]"]
            for key, value in proj.rule_params:
                lines.append(f"{_toml_key(key)} = {format_param(value, schema.get(key))}")
    for enc in graph.encodings.values():
        lines += ["", f"[inputs.{_toml_key(enc.population)}]"]
        lines.append(f"encoding = {_toml_string(enc.kind)}")
        for key in ENCODING_PARAMETERS[enc.kind]:
            value = getattr(enc, key)
            if value is not None:
                lines.append(f"{key} = {format_param(value, ENCODING_KEYS[key])}")
    if graph.data is not None:
        lines += ["", "[data]", f"name = {_toml_string(graph.data.name)}"]
        for key, value in graph.data.options.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    lines += ["", "[training]"]
    for key, value in graph.training.to_dict().items():
        lines.append(f"{key} = {_toml_value(value)}")
    lines += ["", "[crosscheck]"]
    for key, value in graph.crosscheck.to_dict().items():
        lines.append(f"{key} = {format_param(value, CROSSCHECK_KEYS[key])}")
    if graph.reversible is not None:
        rev = graph.reversible
        lines += ["", "[reversible]", f"population = {_toml_string(rev.population)}",
                  f"blocks = {rev.blocks}", f"weight_scale = {rev.weight_scale!r}"]
    return "\n".join(lines) + "\n"
