"""The reader: model files (TOML with physical units) -> a validated :class:`ModelGraph`.

:func:`load_model` (a path), :func:`loads_model` (text) and :func:`model_from_dict` (a parsed TOML
document) check every key against :mod:`neuro.model.schema` and the rule registry, fill in the
defaults, convert units (:mod:`neuro.model.units`) and build the graph; every problem is a
:class:`~neuro.model.errors.ModelFileError` naming the file, the key, what was expected and found,
and a hint.  Paths in the file (given weights, ``init = { file = ... }``) are relative to the model
file's folder (``base``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from neuro.model.encoding import ENCODING_PARAMETERS, ENCODINGS, Encoding
from neuro.model.errors import GraphError, ModelFileError, nearest
from neuro.model.graph import ModelGraph
from neuro.model.population import NEURON_TYPES, POPULATION_PARAMETERS, Population
from neuro.model.projection import FORMATS, PROJECTION_KINDS, SIGNS, Projection
from neuro.model.reversible import ReversibleSpec
from neuro.model.schema import (
    CROSSCHECK_KEYS,
    ENCODING_KEYS,
    MODEL_KEYS,
    POPULATION_DEFAULTS,
    PROJECTION_KEYS,
    TOP_LEVEL,
    TRAINING_KEYS,
)
from neuro.model.settings import DATASETS, CrosscheckSpec, DataSpec, TrainingSpec
from neuro.model.table import REQUIRED, Table, show, type_name
from neuro.model.units import format_quantity
from neuro.model.weights import INIT_DISTS, INIT_PARAMETERS, Init, check_weight_range
from neuro.model.writer import format_param
from neuro.rules import registry

__all__ = ["load_model", "loads_model", "model_from_dict"]


def loads_model(text: str, source: str = "<string>", base: str | Path | None = None) -> ModelGraph:
    """Parse a model file's text into a :class:`ModelGraph`.

    Args:
        text: TOML text.
        source: the name errors report (a file name).
        base: the folder relative paths in the file start from (default: the working directory).

    Raises:
        ModelFileError: invalid TOML, or a model that is not valid.
    """
    if not isinstance(text, str):
        raise ModelFileError(source, None, "TOML text (a str)", type_name(text))
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
    return model_from_dict(data, source, base)


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
            near = nearest(path.name, [p.name for p in path.parent.iterdir()])
            hint = f"did you mean {str(path.parent / near)!r}?" if near else None
        raise ModelFileError(str(path), None, "an existing model file", "no such file", hint) from None
    except UnicodeDecodeError as exc:
        raise ModelFileError(str(path), None, "UTF-8 text", f"undecodable bytes ({exc.reason})") from None
    except OSError as exc:
        raise ModelFileError(str(path), None, "a readable file", exc.strerror or str(exc)) from None
    return loads_model(text, str(path), path.parent)


def model_from_dict(
    data: Mapping[str, Any], source: str = "<dict>", base: str | Path | None = None
) -> ModelGraph:
    """Validate a parsed TOML document (nested dicts) and build the :class:`ModelGraph`; relative
    paths start from ``base`` (default: the working directory).

    Raises:
        ModelFileError: the document is not a valid model.
    """
    top = Table(source, data, "")
    for name in top.data:
        if not isinstance(name, str):
            raise ModelFileError(source, None, "string keys", show(name))
    model = top.sub("model", required=True)
    name = model.string("name")
    description = model.string("description", "")
    if "\n" in description or "\r" in description:
        raise model.error("description", "a single line", "a line break")
    dt = model.quantity("dt", "time", "1 ms", ">0")
    duration = model.quantity("duration", "time", REQUIRED, ">0")
    if not duration > dt:
        raise model.error(
            "duration",
            f"a duration longer than dt = {format_quantity(dt, 'time')}",
            show(model.data["duration"]),
            "dt is the time step, duration the time per sample",
        )
    output = model.string("output", None)
    default_format = model.choice("format", FORMATS, "float32")
    model.finish(MODEL_KEYS)

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
            projections[proj_name] = _read_projection(table, default_format, Path(base or "."))

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

    training_table = top.sub("training") or Table(source, {}, "training")
    training = {k: training_table.param(k, spec) for k, spec in TRAINING_KEYS.items()}
    training_table.finish(TRAINING_KEYS)

    cross_table = top.sub("crosscheck") or Table(source, {}, "crosscheck")
    crosscheck = {k: cross_table.param(k, spec) for k, spec in CROSSCHECK_KEYS.items()}
    cross_table.finish(CROSSCHECK_KEYS)
    reversible = None
    rev_table = top.sub("reversible")
    if rev_table is not None:
        reversible = ReversibleSpec(population=rev_table.string("population"),
                                    blocks=rev_table.integer("blocks", 2, low=1),
                                    weight_scale=rev_table.quantity("weight_scale", "number", 1.0, ">0"))
        rev_table.finish(("population", "blocks", "weight_scale"))
    top.finish(TOP_LEVEL)

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


def _read_population(table: Table, name: str) -> dict[str, Any]:
    ptype = table.choice("type", NEURON_TYPES)
    size = table.integer("size", low=1)
    out: dict[str, Any] = {"type": ptype, "size": size}
    for param in POPULATION_PARAMETERS[ptype]:
        out[param] = table.param(param, POPULATION_DEFAULTS[param])

    def elsewhere(key: str) -> str | None:
        owners = [t for t, ps in POPULATION_PARAMETERS.items() if key in ps]
        if owners:
            return f"{key} applies to {', '.join(owners)} populations, not {ptype}"
        if key in ("encoding", *ENCODING_KEYS):
            return f"put the input encoding under [inputs.{name}]"
        return None

    table.finish(["type", "size", *POPULATION_PARAMETERS[ptype]], elsewhere)
    return out


def _read_encoding(table: Table, name: str, dt: float, duration: float) -> dict[str, Any]:
    kind = table.choice("encoding", ENCODINGS)
    out: dict[str, Any] = {"kind": kind}
    if kind == "poisson":
        for key in ("rate", "max_rate"):
            if key in table.data:
                out[key] = table.param(key, ENCODING_KEYS[key])
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
            out["tau"] = table.param("tau", ENCODING_KEYS["tau"])
            if "t_max" in table.data:
                raise table.error("t_max", "t_max (linear latency) or tau (RC latency), not both", "both")
        else:
            # Default: a feature of 0 spikes in the last step, as in neuro.data.latency_encode.
            last_step = float(Decimal(repr(duration)) - Decimal(repr(dt)))
            has_max = "t_max" in table.data
            out["t_max"] = table.param("t_max", ENCODING_KEYS["t_max"]) if has_max else last_step
        out["threshold"] = table.param("threshold", ENCODING_KEYS["threshold"])
    elif kind == "current":
        out["gain"] = table.param("gain", ENCODING_KEYS["gain"])

    def elsewhere(key: str) -> str | None:
        owners = [e for e, ps in ENCODING_PARAMETERS.items() if key in ps]
        return f"{key} applies to {' and '.join(owners)} encoding, not {kind}" if owners else None

    table.finish(["encoding", *ENCODING_PARAMETERS[kind]], elsewhere)
    return out


def _read_projection(table: Table, default_format: str, base: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["source"] = table.string("source")
    out["target"] = table.string("target")
    out["kind"] = table.choice(
        "kind", PROJECTION_KINDS, "recurrent" if out["source"] == out["target"] else "dense"
    )
    out["init"] = _read_init(table, base)
    out["format"] = table.choice("format", FORMATS, default_format)
    out["algebra"] = _int_list(table, "algebra", [0, 0, 0], length=3)
    out["grades"] = _int_list(table, "grades", [0])
    out["delay"] = table.quantity("delay", "time", "0 ms", ">=0")
    rule = table.choice("rule", registry.names(), "none")
    out["rule"] = rule
    params = table.sub("rule_params") or Table(table.source, {}, table.path("rule_params"))
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
            raise table.error("bounds", "[low, high]", show(bounds))
        bounds = tuple(table.convert("bounds", b, "number") for b in bounds)
    out["bounds"] = bounds
    if declared.resolve is not None:
        try:
            declared.resolve(out["rule_params"], set(params.data), bounds)
        except registry.RuleKeyError as err:
            where = params if err.table == "rule_params" else table
            found = err.found or (show(where.data[err.key]) if err.key in where.data
                                  else "nothing (the key is missing)")
            expected = err.expected
            if "{value}" in expected:
                expected = expected.replace("{value}", format_param(err.value, schema.get(err.key)))
            raise where.error(err.key, expected, found, err.hint) from None
    out["sign"] = table.choice("sign", SIGNS, None)
    table.finish(PROJECTION_KEYS)
    try:
        check_weight_range(out["init"], bounds, out["sign"], table.path("init"))
    except GraphError as exc:
        raise ModelFileError(table.source, exc.key, exc.expected, exc.found, exc.hint) from None
    return out


def _int_list(table: Table, name: str, default: list[int], length: int | None = None) -> list:
    value = table.raw(name, default)
    expected = f"an array of {length} integers" if length else "an array of integers"
    if (
        not isinstance(value, list)
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
        or (length is not None and len(value) != length)
    ):
        raise table.error(name, expected, show(value))
    return value


def _read_init(table: Table, base: Path) -> Init:
    value = table.raw(
        "init", REQUIRED, 'initial weights: a number or { dist = "normal", mean = 0, std = 0.1 }'
    )
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Init("constant", value=table.convert("init", value, "number"))
    if not isinstance(value, dict):
        raise table.error(
            "init",
            'a number or a table such as { dist = "normal", mean = 0, std = 0.1 }',
            show(value),
            'uniform weights: { dist = "uniform", low = 0, high = 0.01 }; given weights: '
            '{ file = "W.safetensors", key = "w" }',
        )
    sub = Table(table.source, value, table.path("init"))
    implied = "constant" if "value" in value else "file" if "file" in value else REQUIRED
    dist = sub.choice("dist", INIT_DISTS, implied)

    def elsewhere(key: str) -> str | None:
        owners = [d for d, ps in INIT_PARAMETERS.items() if key in ps]
        return f"{key} belongs to dist {' or '.join(owners)}, not {dist}" if owners else None

    # Unknown keys first: a misspelt parameter is reported as such, not as a missing one.
    sub.used.update(INIT_PARAMETERS[dist])
    sub.finish(["dist", *INIT_PARAMETERS[dist]], elsewhere)
    if dist == "file":
        return _read_weights_file(sub, base)
    params = {k: sub.quantity(k, "number") for k in INIT_PARAMETERS[dist]}
    return Init(dist, **params)


def _read_weights_file(sub: Table, base: Path) -> Init:
    """``init = { file = "W.safetensors", key = "w", sha256 = "..." }``: the file relative to
    ``base``; ``sha256``, if given, must be that of the file (a resolved model file pins it)."""
    file = sub.string("file")
    key = sub.string("key", None)
    sha = sub.string("sha256", None)
    try:
        init = Init.from_file(base / file, key, sub.key)
    except GraphError as exc:
        raise ModelFileError(sub.source, exc.key, exc.expected, exc.found, exc.hint) from None
    if sha is not None and sha != init.sha256:
        raise sub.error("sha256", f"the sha256 of {init.file} ({init.sha256})", show(sha),
                        "the weights changed since the model file was written: remove sha256 to use them")
    return init


def _make_projection(name: str, fields: dict[str, Any]) -> Projection:
    fields = dict(fields)
    fields["algebra"] = tuple(fields["algebra"])
    fields["grades"] = tuple(fields["grades"])
    fields["rule_params"] = tuple(sorted(fields["rule_params"].items()))
    return Projection(name=name, **fields)
