"""The typed model graph: populations, projections, encodings, data and training settings.

A :class:`ModelGraph` is what :mod:`neuro.model.spec` makes of a model file, and what the Norse builder
(:mod:`neuro.sim.network`), the Brian2 reference (:mod:`neuro.crosscheck.reference`), NIR exchange and the registry
consume.  It is plain, frozen data:

* every time is a float in **seconds**, every rate a float in **hertz** (SI, see DESIGN.md);
* membrane potentials (``v_th``, ``v_reset``, ``v_leak``, ``adapt_increment``) and weights are
  **dimensionless** (Norse convention: the default threshold is 1);
* populations are ordered inputs first, then in topological order of the feed-forward projections;
  projections are in topological order (ties broken by name), so iteration order does not depend on
  the order of the model file.

The graph checks its own invariants when it is built (:class:`GraphError`), so a graph built in code
is as trustworthy as one parsed from a file.  :meth:`ModelGraph.canonical_hash` is a sha256 over a
canonical JSON form (sorted keys, floats written with ``repr``): it does not change with key order,
whitespace or equivalent unit spellings in the model file.

This module imports no simulator (no Norse, no Brian2); the rule names come from the rule registry.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from neuro.rules import registry

__all__ = [
    "CROSSCHECK_DEFAULTS",
    "DATASETS",
    "DATASET_SHAPES",
    "ENCODINGS",
    "FORMATS",
    "GraphError",
    "Init",
    "ENCODING_PARAMETERS",
    "INIT_DISTS",
    "INIT_PARAMETERS",
    "LOSSES",
    "LR_SCHEDULES",
    "NEURON_TYPES",
    "POPULATION_PARAMETERS",
    "PROJECTION_KINDS",
    "READOUTS",
    "SIGNS",
    "SPIKING_TYPES",
    "SURROGATES",
    "CrosscheckSpec",
    "DataSpec",
    "Encoding",
    "ModelGraph",
    "Population",
    "Projection",
    "ReversibleSpec",
    "TrainingSpec",
]

#: Neuron models.  ``LIF``: leaky integrate-and-fire with an exponential synaptic current (Norse
#: ``LIF``); ``LIFBox``: LIF without synaptic current, input jumps the membrane (Norse ``LIFBox``);
#: ``AdaptiveLIF``: LIF whose threshold rises by ``adapt_increment`` per spike and relaxes back with
#: ``tau_adapt`` (Norse ``LSNN``); ``LI``: leaky integrator, never spikes (readout, Norse ``LI``);
#: ``input``: a spike (or current) source fed by the data set through its :class:`Encoding`.
NEURON_TYPES: tuple[str, ...] = ("LIF", "LIFBox", "AdaptiveLIF", "LI", "input")
#: Neuron types that emit spikes computed from a membrane potential.
SPIKING_TYPES: tuple[str, ...] = ("LIF", "LIFBox", "AdaptiveLIF")
#: Weight storage formats (names as in :mod:`neuro.numerics`).
FORMATS: tuple[str, ...] = (
    "float32",
    "float64",
    "posit8",
    "posit16",
    "posit32",
    "bposit16",
    "bposit32",
)
#: ``dense``: all-to-all between two different populations, weight (target, source);
#: ``recurrent``: all-to-all from a population to itself, acting one step later (Norse recurrent);
#: ``one_to_one``: neuron k to neuron k, weight (size,).
PROJECTION_KINDS: tuple[str, ...] = ("dense", "recurrent", "one_to_one")
#: Weight sign constraints.
SIGNS: tuple[str, ...] = ("excitatory", "inhibitory")
#: Initial weight distributions.
INIT_DISTS: tuple[str, ...] = ("constant", "normal", "uniform")
#: Input encodings (as in :mod:`neuro.data`): ``poisson`` (rate coding), ``latency`` (one spike
#: per channel, earlier for larger values), ``current`` (the feature value is injected as input
#: current every step), ``spike_times`` and ``raster`` (the data set provides the spikes).
ENCODINGS: tuple[str, ...] = ("poisson", "latency", "current", "spike_times", "raster")
#: Offline data sets (see :mod:`neuro.data`).
DATASETS: tuple[str, ...] = ("yinyang", "randman", "digits", "poisson_scenario")
#: (features, classes) of the data sets whose shapes are fixed.
DATASET_SHAPES: dict[str, tuple[int, int]] = {"yinyang": (4, 3), "digits": (64, 10)}
#: Readouts that turn the output population's activity into class scores.
READOUTS: tuple[str, ...] = ("max_membrane", "spike_count", "first_spike")
#: Losses; ``none`` for models that only run local (unsupervised) rules.
LOSSES: tuple[str, ...] = ("cross_entropy", "none")
#: Learning-rate schedules of the loss-based rules (over the run's update steps).
LR_SCHEDULES: tuple[str, ...] = ("cosine", "constant")
#: Surrogate derivatives of the spike threshold for gradient-based rules.
SURROGATES: tuple[str, ...] = ("superspike", "sigmoid", "triangle", "arctan")

#: Default cross-check tolerances (see :class:`CrosscheckSpec`).
CROSSCHECK_DEFAULTS: dict[str, float] = {
    "window": 2e-3,
    "min_gamma": 0.9,
    "rate_rtol": 0.1,
    "weight_atol": 1e-9,
}


class GraphError(ValueError):
    """A model graph violates an invariant (unknown endpoint, non-square recurrent weight, ...).

    Attributes:
        key: dotted path of the offending entry in model-file terms, e.g.
            ``"projections.hidden_out.target"`` or ``"model.dt"``.
        expected: what a valid value looks like.
        found: what was found.
        hint: how to fix it, or None.
    """

    def __init__(self, key: str, expected: str, found: str, hint: str | None = None) -> None:
        self.key, self.expected, self.found, self.hint = key, expected, found, hint
        message = f"{key}: expected {expected}, found {found}"
        if hint:
            message += f" (hint: {hint})"
        super().__init__(message)


def _nearest(word: object, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``word`` (difflib), or None."""
    if not isinstance(word, str):
        return None
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return close[0] if close else None


def _finite(value: Any, key: str) -> float:
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


def _check_choice(value: Any, choices: Iterable[str], key: str) -> None:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        near = _nearest(value, choices)
        hint = f"did you mean {near!r}?" if near else None
        raise GraphError(key, f"one of {', '.join(choices)}", repr(value), hint)


def _check_int(value: Any, low: int, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise GraphError(key, f"an integer >= {low}", repr(value))
    return value


def _check_name(name: Any, key: str) -> None:
    if not (isinstance(name, str) and name.isidentifier() and name.isascii()):
        raise GraphError(
            key,
            "a name made of ASCII letters, digits and underscores, not starting with a digit",
            repr(name),
        )


def _json_value(value: Any, key: str) -> Any:
    """Check that ``value`` is a JSON-able tree of str/int/float/bool/list/dict with str keys."""
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return _finite(value, key)
    if isinstance(value, list | tuple):
        return [_json_value(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise GraphError(key, "string keys", repr(k))
            out[k] = _json_value(v, f"{key}.{k}")
        return out
    raise GraphError(key, "a string, number, boolean, array or table", repr(value))


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _steps(value: float, dt: float) -> int | None:
    """``value / dt`` if it is a whole number of steps (to 1e-9 relative), else None."""
    ratio = value / dt
    if not math.isfinite(ratio):
        return None
    n = round(ratio)
    return n if abs(ratio - n) <= 1e-9 * max(1.0, abs(ratio)) else None


def _whole_steps(value: float, dt: float, key: str) -> None:
    if _steps(value, dt) is None:
        ratio = value / dt
        hint = f"use a multiple of dt, e.g. {round(ratio) * dt!r} s" if math.isfinite(ratio) else None
        raise GraphError(
            key,
            f"a whole number of time steps (dt = {dt!r} s)",
            f"{value!r} s = {ratio:.6g} steps",
            hint,
        )


# --------------------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------------------

#: Which optional neuron parameters each neuron type has (the others are None).
POPULATION_PARAMETERS: dict[str, tuple[str, ...]] = {
    "LIF": (
        "tau_mem", "tau_syn", "v_th", "v_reset", "v_leak", "refractory",
        "surrogate", "surrogate_scale",
    ),
    "LIFBox": (
        "tau_mem", "v_th", "v_reset", "v_leak", "refractory", "surrogate", "surrogate_scale",
    ),
    "AdaptiveLIF": (
        "tau_mem", "tau_syn", "v_th", "v_reset", "v_leak", "refractory", "tau_adapt",
        "adapt_increment", "surrogate", "surrogate_scale",
    ),
    "LI": ("tau_mem", "tau_syn", "v_leak"),
    "input": (),
}  # fmt: skip


@dataclass(frozen=True)
class Population:
    """A group of ``size`` identical neurons.

    Parameters that a neuron type does not have are ``None`` (for example ``tau_syn`` of ``LIFBox``,
    every neuron parameter of ``input``); see :data:`POPULATION_PARAMETERS`.

    Attributes:
        name: identifier, unique in the graph.
        type: one of :data:`NEURON_TYPES`.
        size: number of neurons (> 0).
        tau_mem: membrane time constant, seconds (> 0).
        tau_syn: synaptic current time constant, seconds (> 0; LIF, AdaptiveLIF, LI).
        v_th: spike threshold, dimensionless (spiking types).
        v_reset: potential after a spike, dimensionless, below ``v_th`` (spiking types).
        v_leak: resting potential, dimensionless (all but ``input``).
        refractory: refractory period, seconds (>= 0, spiking types).
        tau_adapt: threshold adaptation time constant, seconds (> 0, AdaptiveLIF).
        adapt_increment: threshold rise per spike, dimensionless (>= 0, AdaptiveLIF).
        surrogate: surrogate derivative of the threshold for gradient rules (spiking types), one
            of :data:`SURROGATES`.
        surrogate_scale: steepness of the surrogate per unit of membrane potential (> 0).
    """

    name: str
    type: str
    size: int
    tau_mem: float | None = None
    tau_syn: float | None = None
    v_th: float | None = None
    v_reset: float | None = None
    v_leak: float | None = None
    refractory: float | None = None
    tau_adapt: float | None = None
    adapt_increment: float | None = None
    surrogate: str | None = None
    surrogate_scale: float | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "populations")
        key = f"populations.{self.name}"
        _check_choice(self.type, NEURON_TYPES, f"{key}.type")
        _check_int(self.size, 1, f"{key}.size")
        allowed = POPULATION_PARAMETERS[self.type]
        for f in dataclasses.fields(self)[3:]:
            value = getattr(self, f.name)
            fkey = f"{key}.{f.name}"
            if f.name not in allowed:
                if value is not None:
                    raise GraphError(
                        fkey,
                        f"no {f.name} for a {self.type} population",
                        repr(value),
                        f"{f.name} belongs to "
                        + ", ".join(t for t, ps in POPULATION_PARAMETERS.items() if f.name in ps),
                    )
                continue
            if value is None:
                raise GraphError(fkey, f"a value (required for {self.type})", "None")
            if f.name == "surrogate":
                _check_choice(value, SURROGATES, fkey)
                continue
            value = _finite(value, fkey)
            object.__setattr__(self, f.name, value)
            if f.name in ("tau_mem", "tau_syn", "tau_adapt", "surrogate_scale") and value <= 0:
                raise GraphError(fkey, "a value > 0", repr(value))
            if f.name in ("refractory", "adapt_increment") and value < 0:
                raise GraphError(fkey, "a value >= 0", repr(value))
        if self.v_th is not None and self.v_reset >= self.v_th:
            raise GraphError(f"{key}.v_reset", f"a value below v_th = {self.v_th!r}", repr(self.v_reset))

    @property
    def spiking(self) -> bool:
        """True for neurons that emit spikes from a threshold (LIF, LIFBox, AdaptiveLIF)."""
        return self.type in SPIKING_TYPES

    @property
    def parameters(self) -> dict[str, float | str]:
        """The neuron parameters this type has (times in seconds), in declaration order."""
        return {k: getattr(self, k) for k in POPULATION_PARAMETERS[self.type]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: name, type, size and the parameters of this type."""
        return {"name": self.name, "type": self.type, "size": self.size, **self.parameters}


#: The parameters of each initial weight distribution.
INIT_PARAMETERS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "normal": ("mean", "std"),
    "uniform": ("low", "high"),
}


@dataclass(frozen=True)
class Init:
    """Initial weight distribution of a projection (dimensionless weights).

    ``constant``: every weight is ``value``; ``normal``: N(``mean``, ``std``^2) with std >= 0;
    ``uniform``: U[``low``, ``high``) with low < high.  Unused parameters are ``None``.
    """

    dist: str
    value: float | None = None
    mean: float | None = None
    std: float | None = None
    low: float | None = None
    high: float | None = None

    def check(self, key: str) -> None:
        """Validate, reporting errors under ``key`` (e.g. ``projections.p.init``)."""
        _check_choice(self.dist, INIT_DISTS, f"{key}.dist")
        wanted = INIT_PARAMETERS[self.dist]
        for name in ("value", "mean", "std", "low", "high"):
            value = getattr(self, name)
            if name not in wanted:
                if value is not None:
                    raise GraphError(
                        f"{key}.{name}",
                        f"only {', '.join(wanted)} for dist {self.dist!r}",
                        repr(value),
                    )
                continue
            if value is None:
                raise GraphError(f"{key}.{name}", f"a number (dist {self.dist!r} needs it)", "None")
            object.__setattr__(self, name, _finite(value, f"{key}.{name}"))
        if self.dist == "normal" and self.std < 0:
            raise GraphError(f"{key}.std", "a value >= 0", repr(self.std))
        if self.dist == "uniform" and not self.low < self.high:
            raise GraphError(f"{key}.high", f"a value above low = {self.low!r}", repr(self.high))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``dist`` and its parameters."""
        return {"dist": self.dist, **{k: getattr(self, k) for k in INIT_PARAMETERS[self.dist]}}


@dataclass(frozen=True)
class Projection:
    """Weighted connections from ``source`` to ``target``.

    Attributes:
        name: identifier, unique in the graph.
        source, target: population names.
        kind: one of :data:`PROJECTION_KINDS`.
        init: initial weights (:class:`Init`).
        format: weight storage format, one of :data:`FORMATS`.
        algebra: signature (p, q, r) of the Clifford algebra Cl(p,q,r) the weights live in;
            (0, 0, 0) means ordinary real (scalar) weights.
        grades: the grades each weight may hold, sorted, each in 0..p+q+r.
        delay: synaptic delay, seconds (a whole number of time steps).
        rule: learning rule, a name in :mod:`neuro.rules.registry` (``none`` keeps the weights fixed).
        rule_params: the rule's parameters (times in seconds), as (key, value) pairs sorted by key.
        bounds: (low, high) clip range of the weights after each update, or None.
        sign: ``"excitatory"`` (weights >= 0), ``"inhibitory"`` (weights <= 0) or None.
    """

    name: str
    source: str
    target: str
    kind: str
    init: Init
    format: str = "float32"
    algebra: tuple[int, int, int] = (0, 0, 0)
    grades: tuple[int, ...] = (0,)
    delay: float = 0.0
    rule: str = "none"
    rule_params: tuple[tuple[str, float | str | bool], ...] = ()
    bounds: tuple[float, float] | None = None
    sign: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "projections")
        key = f"projections.{self.name}"
        for end in ("source", "target"):
            if not isinstance(getattr(self, end), str):
                raise GraphError(f"{key}.{end}", "a population name", repr(getattr(self, end)))
        _check_choice(self.kind, PROJECTION_KINDS, f"{key}.kind")
        _check_choice(self.format, FORMATS, f"{key}.format")
        _check_choice(self.rule, registry.names(), f"{key}.rule")
        if not isinstance(self.init, Init):
            raise GraphError(f"{key}.init", "an Init", repr(self.init))
        self.init.check(f"{key}.init")
        algebra = tuple(self.algebra)
        if len(algebra) != 3:
            raise GraphError(f"{key}.algebra", "three integers [p, q, r]", repr(self.algebra))
        for a in algebra:
            _check_int(a, 0, f"{key}.algebra")
        object.__setattr__(self, "algebra", algebra)
        n = sum(algebra)
        grades = tuple(self.grades)
        if not grades:
            raise GraphError(f"{key}.grades", "a non-empty list of grades", "[]")
        for g in grades:
            if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g <= n:
                raise GraphError(
                    f"{key}.grades",
                    f"grades in 0..{n} (algebra Cl{algebra})",
                    repr(list(grades)),
                    "grade k needs an algebra with at least k basis vectors: p + q + r >= k",
                )
        if len(set(grades)) != len(grades):
            raise GraphError(f"{key}.grades", "distinct grades", repr(list(grades)))
        object.__setattr__(self, "grades", tuple(sorted(grades)))
        delay = _finite(self.delay, f"{key}.delay")
        if delay < 0:
            raise GraphError(f"{key}.delay", "a delay >= 0", repr(delay))
        object.__setattr__(self, "delay", delay)
        params = []
        for item in self.rule_params:
            pkey, value = item
            if not isinstance(pkey, str):
                raise GraphError(f"{key}.rule_params", "string keys", repr(pkey))
            if not isinstance(value, str | bool):
                value = _finite(value, f"{key}.rule_params.{pkey}")
            params.append((pkey, value))
        if self.bounds is not None:
            if len(tuple(self.bounds)) != 2:
                raise GraphError(f"{key}.bounds", "[low, high]", repr(self.bounds))
            lo, hi = (_finite(b, f"{key}.bounds") for b in self.bounds)
            if not lo < hi:
                raise GraphError(f"{key}.bounds", "[low, high] with low < high", repr([lo, hi]))
            object.__setattr__(self, "bounds", (lo, hi))
        if self.sign is not None:
            _check_choice(self.sign, SIGNS, f"{key}.sign")
            if self.bounds is not None:
                lo, hi = self.bounds
                if self.sign == "excitatory" and hi <= 0:
                    raise GraphError(
                        f"{key}.bounds",
                        "bounds that allow positive (excitatory) weights",
                        repr([lo, hi]),
                    )
                if self.sign == "inhibitory" and lo >= 0:
                    raise GraphError(
                        f"{key}.bounds",
                        "bounds that allow negative (inhibitory) weights",
                        repr([lo, hi]),
                    )
        object.__setattr__(self, "rule_params", tuple(sorted(self._rule_values(dict(params), key).items())))

    def _rule_values(self, given: dict, key: str) -> dict:
        """The rule's parameters with its declared defaults filled in and its cross-key checks run
        (:meth:`neuro.rules.registry.Rule.values`), so a graph built in code is resolved like one
        read from a model file."""
        try:
            return registry.get(self.rule).values(given, self.bounds)
        except registry.RuleKeyError as err:
            where = f"{key}.{err.key}" if err.table == "projection" else f"{key}.rule_params.{err.key}"
            found = err.found or repr(given.get(err.key))
            raise GraphError(where, err.expected.replace("{value}", repr(err.value)), found, err.hint) from None
        except ValueError as err:
            raise GraphError(f"{key}.rule_params", f"the keys of rule {self.rule!r}", str(err)) from None

    @property
    def n_components(self) -> int:
        """Number of blade coefficients per weight: sum of C(p+q+r, g) over the grades."""
        n = sum(self.algebra)
        return sum(math.comb(n, g) for g in self.grades)

    @property
    def params(self) -> dict[str, float | str | bool]:
        """The rule parameters as a dict (times in seconds)."""
        return dict(self.rule_params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form of every attribute."""
        return {
            "name": self.name,
            "source": self.source,
            "target": self.target,
            "kind": self.kind,
            "init": self.init.to_dict(),
            "format": self.format,
            "algebra": list(self.algebra),
            "grades": list(self.grades),
            "delay": self.delay,
            "rule": self.rule,
            "rule_params": dict(self.rule_params),
            "bounds": None if self.bounds is None else list(self.bounds),
            "sign": self.sign,
        }


#: The parameters of each encoding.
ENCODING_PARAMETERS: dict[str, tuple[str, ...]] = {
    "poisson": ("rate", "max_rate"),
    "latency": ("t_max", "tau", "threshold"),
    "current": ("gain",),
    "spike_times": (),
    "raster": (),
}


@dataclass(frozen=True)
class Encoding:
    """How the data set's features drive an ``input`` population (see :mod:`neuro.data`).

    Features are scaled to [0, 1] by the data set.

    * ``poisson``: each channel fires a Poisson train at ``rate`` hertz (fixed; the features are
      ignored) or at ``feature * max_rate`` hertz; exactly one of the two is set.
    * ``latency``: one spike per channel, larger features earlier.  Linear law (``t_max`` set):
      ``t = t_max * (1 - feature)``; RC law (``tau`` set): ``t = tau * ln(f / (f - threshold))``.
      Exactly one of ``t_max``, ``tau`` is set (seconds).  Features ``<= threshold`` never spike.
    * ``current``: ``gain * feature`` is added to the target's input every time step; no spikes.
    * ``spike_times``: each feature is a spike time as a fraction of the sample duration.
    * ``raster``: the data set's samples already are (time, feature) spike rasters.

    Parameters an encoding does not use are ``None``.
    """

    population: str
    kind: str
    rate: float | None = None
    max_rate: float | None = None
    t_max: float | None = None
    tau: float | None = None
    threshold: float | None = None
    gain: float | None = None

    def __post_init__(self) -> None:
        _check_name(self.population, "inputs")
        key = f"inputs.{self.population}"
        _check_choice(self.kind, ENCODINGS, f"{key}.encoding")
        wanted = ENCODING_PARAMETERS[self.kind]
        for f in dataclasses.fields(self)[2:]:
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name not in wanted:
                raise GraphError(
                    f"{key}.{f.name}",
                    f"only {', '.join(wanted) or 'no parameters'} for {self.kind} encoding",
                    repr(value),
                )
            object.__setattr__(self, f.name, _finite(value, f"{key}.{f.name}"))
        if self.kind == "poisson":
            if (self.rate is None) == (self.max_rate is None):
                raise GraphError(
                    key,
                    "exactly one of rate, max_rate for poisson encoding",
                    "both" if self.rate is not None else "neither",
                    "rate: fixed rate for every channel; max_rate: rate of a feature equal to 1",
                )
            name = "rate" if self.rate is not None else "max_rate"
            if getattr(self, name) <= 0:
                raise GraphError(f"{key}.{name}", "a rate > 0 Hz", repr(getattr(self, name)))
        elif self.kind == "latency":
            if (self.t_max is None) == (self.tau is None):
                raise GraphError(
                    key,
                    "exactly one of t_max (linear law), tau (RC law) for latency encoding",
                    "both" if self.tau is not None else "neither",
                )
            if self.threshold is None:
                raise GraphError(f"{key}.threshold", "a number", "None")
            name = "t_max" if self.t_max is not None else "tau"
            if getattr(self, name) <= 0:
                raise GraphError(f"{key}.{name}", "a time > 0", repr(getattr(self, name)))
            if self.tau is not None and self.threshold <= 0:
                raise GraphError(
                    f"{key}.threshold",
                    "a threshold > 0 for the RC latency law (tau)",
                    repr(self.threshold),
                )
        elif self.kind == "current" and self.gain is None:
            raise GraphError(f"{key}.gain", "a number (current encoding needs it)", "None")

    @property
    def spiking(self) -> bool:
        """True if the population emits spikes (every encoding but ``current``)."""
        return self.kind != "current"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: population, kind and the parameters that are set."""
        return _drop_none(dataclasses.asdict(self))


@dataclass(frozen=True)
class DataSpec:
    """The offline data set: a name from :data:`DATASETS` and options passed to it verbatim.

    Options are JSON-able values (strings, numbers, booleans, arrays, tables); in a model file they
    are the other keys of the ``[data]`` table, and errors name them ``data.KEY``.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice(self.name, DATASETS, "data.name")
        if not isinstance(self.options, Mapping):
            raise GraphError("data.options", "a table", repr(self.options))
        object.__setattr__(self, "options", _json_value(self.options, "data"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"name": self.name, "options": json.loads(json.dumps(self.options))}


@dataclass(frozen=True)
class TrainingSpec:
    """Training settings.

    Attributes:
        epochs: passes over the training set (>= 1).
        batch_size: samples per update; a multiple of ``microbatch``.
        microbatch: fixed number of samples per forward pass (bitwise reproducibility across
            workers, see DESIGN.md).
        seed: root of every random stream (>= 0).
        learning_rate: step size of the loss-based rules (> 0).
        readout: one of :data:`READOUTS`, applied to the output population.
        loss: one of :data:`LOSSES`.
        rate_regularisation: weight of the firing-rate penalty in the loss (>= 0).
        lr_schedule: one of :data:`LR_SCHEDULES` (``cosine``: from ``learning_rate`` down to 0 over
            the run; ``constant``).
    """

    epochs: int = 1
    batch_size: int = 32
    microbatch: int = 8
    seed: int = 0
    learning_rate: float = 1e-3
    readout: str = "max_membrane"
    loss: str = "cross_entropy"
    rate_regularisation: float = 0.0
    lr_schedule: str = "cosine"

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 1), ("microbatch", 1), ("seed", 0)):
            _check_int(getattr(self, name), low, f"training.{name}")
        if self.batch_size % self.microbatch:
            raise GraphError(
                "training.batch_size",
                f"a multiple of microbatch = {self.microbatch}",
                repr(self.batch_size),
                "the global batch is split into microbatches of a fixed shape (DESIGN.md)",
            )
        lr = _finite(self.learning_rate, "training.learning_rate")
        if lr <= 0:
            raise GraphError("training.learning_rate", "a value > 0", repr(lr))
        object.__setattr__(self, "learning_rate", lr)
        reg = _finite(self.rate_regularisation, "training.rate_regularisation")
        if reg < 0:
            raise GraphError("training.rate_regularisation", "a value >= 0", repr(reg))
        object.__setattr__(self, "rate_regularisation", reg)
        _check_choice(self.readout, READOUTS, "training.readout")
        _check_choice(self.loss, LOSSES, "training.loss")
        _check_choice(self.lr_schedule, LR_SCHEDULES, "training.lr_schedule")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CrosscheckSpec:
    """Tolerances for the Norse vs Brian2 cross-check.

    Attributes:
        window: coincidence window for spike matching, seconds (> 0).
        min_gamma: smallest acceptable coincidence factor Gamma, in (0, 1].
        rate_rtol: largest acceptable relative firing-rate difference (>= 0).
        weight_atol: largest acceptable absolute weight difference after plasticity (>= 0).
    """

    window: float = CROSSCHECK_DEFAULTS["window"]
    min_gamma: float = CROSSCHECK_DEFAULTS["min_gamma"]
    rate_rtol: float = CROSSCHECK_DEFAULTS["rate_rtol"]
    weight_atol: float = CROSSCHECK_DEFAULTS["weight_atol"]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            key = f"crosscheck.{f.name}"
            value = _finite(getattr(self, f.name), key)
            object.__setattr__(self, f.name, value)
            if f.name == "window" and value <= 0:
                raise GraphError(key, "a time > 0", repr(value))
            if f.name == "min_gamma" and not 0 < value <= 1:
                raise GraphError(key, "a value in (0, 1]", repr(value))
            if value < 0:
                raise GraphError(key, "a value >= 0", repr(value))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


#: Bits of the fixed-point decays of reversible blocks (``neuro.sim.reversible``): a decay ``1 - dt/tau``
#: is rounded to ``n / 2**REVERSIBLE_DECAY_BITS`` and must lie in (1/2, 1) (one stored bit per step).
REVERSIBLE_DECAY_BITS = 8
#: Fraction bits of membranes in reversible blocks: v_th, v_reset, v_leak must be multiples of 2**-24.
REVERSIBLE_V_FRAC = 24
#: Largest half-width of a reversible block (the fixed-point projection stays exact below it).
REVERSIBLE_MAX_WIDTH = 512


def fixed_decay(dt: float, tau: float, key: str, bits: int = REVERSIBLE_DECAY_BITS) -> int:
    """Numerator ``n`` of the fixed-point decay ``n / 2**bits ~ 1 - dt / tau``; GraphError unless
    the decay lies in (1/2, 1), where inverting the leak needs one stored bit per neuron-step."""
    num = round((1.0 - dt / tau) * 2**bits)
    if not 2 ** (bits - 1) < num < 2**bits:
        raise GraphError(key, f"a time constant > 2 dt = {2 * dt!r} s (a reversible block's decay "
                         f"1 - dt/tau must round to a value in (1/2, 1) with {bits} bits)",
                         f"{tau!r} s (decay {num}/{2**bits})")
    return num


@dataclass(frozen=True)
class ReversibleSpec:
    """Reversible spiking blocks (:mod:`neuro.sim.reversible`) after a LIF population.

    The spikes of ``population`` (``size`` = 2 x width, a LIF population fed by an input) are split into
    halves ``(x1, x2)`` and pass through ``blocks`` RevNet blocks, each two LIF sublayers of ``width``
    neurons with the population's parameters (``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``); projections
    leaving ``population`` read the top block's activity ``(y1, y2)``.  Block weights start
    ~ N(0, weight_scale**2 / width).  Trained by ``neuro train`` in mode ``reversible``.
    """

    population: str
    blocks: int = 2
    weight_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_int(self.blocks, 1, "reversible.blocks")
        scale = _finite(self.weight_scale, "reversible.weight_scale")
        if scale <= 0:
            raise GraphError("reversible.weight_scale", "a value > 0", repr(scale))
        object.__setattr__(self, "weight_scale", scale)

    def check(self, pops: Mapping[str, Population], projs: Mapping[str, Projection], dt: float,
              output: str) -> None:
        """The graph invariants a reversible stack needs (GraphError naming the key otherwise)."""
        key = "reversible.population"
        pop = pops.get(self.population)
        if pop is None:
            near = _nearest(self.population, pops)
            raise GraphError(key, "the name of a population", repr(self.population),
                             near and f"did you mean {near!r}?")
        where = f"populations.{pop.name}"
        if pop.type != "LIF":
            raise GraphError(f"{where}.type", "LIF (reversible blocks are LIF sublayers)", repr(pop.type))
        if pop.size % 2 or pop.size // 2 > REVERSIBLE_MAX_WIDTH:
            raise GraphError(f"{where}.size", f"an even size <= {2 * REVERSIBLE_MAX_WIDTH} (halves x1, x2 "
                             "of a reversible stack)", repr(pop.size))
        if pop.refractory:
            raise GraphError(f"{where}.refractory", "0 in a reversible stack", repr(pop.refractory))
        for name in ("v_th", "v_reset", "v_leak"):
            value = getattr(pop, name)
            if value * 2**REVERSIBLE_V_FRAC != round(value * 2**REVERSIBLE_V_FRAC):
                raise GraphError(f"{where}.{name}",
                                 f"a multiple of 2**-{REVERSIBLE_V_FRAC} (exact fixed point)", repr(value))
        fixed_decay(dt, pop.tau_mem, f"{where}.tau_mem")
        fixed_decay(dt, pop.tau_syn, f"{where}.tau_syn")
        incoming = [p for p in projs.values() if p.target == pop.name]
        if len(incoming) != 1 or pops[incoming[0].source].type != "input" or incoming[0].kind != "dense":
            raise GraphError(key, "a LIF population fed by one dense projection from an input",
                             f"{pop.name!r} with incoming {[p.name for p in incoming]}")
        outgoing = [p for p in projs.values() if p.source == pop.name]
        out = pops[output]
        if [p.target for p in outgoing] != [output] or outgoing[0].kind != "dense" or out.type != "LI":
            raise GraphError(key, f"a population read by one dense projection to the LI output {output!r}",
                             f"outgoing {[p.name for p in outgoing]}")
        fixed_decay(dt, out.tau_mem, f"populations.{output}.tau_mem")
        fixed_decay(dt, out.tau_syn, f"populations.{output}.tau_syn")
        if out.v_leak * 2**REVERSIBLE_V_FRAC != round(out.v_leak * 2**REVERSIBLE_V_FRAC):
            raise GraphError(f"populations.{output}.v_leak", f"a multiple of 2**-{REVERSIBLE_V_FRAC}",
                             repr(out.v_leak))
        for proj in [*incoming, *outgoing]:
            if proj.rule != "bptt" or proj.delay or proj.n_components != 1:
                raise GraphError(f"projections.{proj.name}", "a scalar, undelayed projection with rule "
                                 "'bptt' (trained through the reversible backward)", repr(proj.rule))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# The graph
# --------------------------------------------------------------------------------------------------


def _topological(
    populations: Mapping[str, Population], projections: Mapping[str, Projection]
) -> tuple[list[str], list[str]]:
    """Order populations and projections along the feed-forward edges; ties broken by name.

    Inputs come first.  Recurrent projections act one step later and do not constrain the order;
    they follow the feed-forward projections into their population.  Raises GraphError on a cycle
    of feed-forward projections.
    """
    indegree = {name: 0 for name in populations}
    edges: dict[str, list[str]] = {name: [] for name in populations}
    for proj in projections.values():
        if proj.kind != "recurrent":
            edges[proj.source].append(proj.target)
            indegree[proj.target] += 1

    def tie(name: str) -> tuple[bool, str]:
        return (populations[name].type != "input", name)

    ready = sorted((n for n, d in indegree.items() if d == 0), key=tie)
    order: list[str] = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for target in edges[name]:
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
        ready.sort(key=tie)
    if len(order) != len(populations):
        stuck = sorted(n for n, d in indegree.items() if d > 0)
        loop = sorted(
            p.name
            for p in projections.values()
            if p.kind != "recurrent" and p.source in stuck and p.target in stuck
        )
        raise GraphError(
            f"projections.{loop[0]}",
            "feed-forward projections without cycles",
            f"a cycle through populations {', '.join(stuck)} (projections {', '.join(loop)})",
            "only a recurrent projection (a population to itself) may close a loop",
        )
    rank = {name: i for i, name in enumerate(order)}
    proj_order = sorted(
        projections,
        key=lambda p: (
            rank[projections[p].target],
            projections[p].kind == "recurrent",
            rank[projections[p].source],
            p,
        ),
    )
    return order, proj_order


@dataclass(frozen=True)
class ModelGraph:
    """A whole model: time grid, populations, projections, encodings, data and training.

    Attributes:
        name: model name (used for output folders and reports).
        description: one line, shown by ``neuro models``.
        dt: simulation time step, seconds (> 0).
        duration: simulated time per sample, seconds (a whole number of steps, > dt).
        populations: name -> :class:`Population`, inputs first, then topological order.
        projections: name -> :class:`Projection`, topological order.
        output: name of the output (readout) population.
        encodings: input population name -> :class:`Encoding`; one per ``input`` population.
        data: the data set, or None for models that need none.
        training: :class:`TrainingSpec`.
        crosscheck: :class:`CrosscheckSpec`.
        reversible: :class:`ReversibleSpec` (reversible blocks after a LIF population), or None.

    Treat the dicts as read-only: the graph is a value (``hash`` and ``==`` follow the canonical
    form).  Raises :class:`GraphError` when an invariant does not hold.
    """

    name: str
    description: str
    dt: float
    duration: float
    populations: dict[str, Population]
    projections: dict[str, Projection]
    output: str
    encodings: dict[str, Encoding] = field(default_factory=dict)
    data: DataSpec | None = None
    training: TrainingSpec = field(default_factory=TrainingSpec)
    crosscheck: CrosscheckSpec = field(default_factory=CrosscheckSpec)
    reversible: ReversibleSpec | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise GraphError("model.name", "a non-empty string", repr(self.name))
        if not isinstance(self.description, str) or "\n" in self.description:
            raise GraphError("model.description", "a single line of text", repr(self.description))
        dt = _finite(self.dt, "model.dt")
        duration = _finite(self.duration, "model.duration")
        if dt <= 0:
            raise GraphError("model.dt", "a time step > 0", f"{dt!r} s")
        if not duration > dt:
            raise GraphError("model.duration", f"a duration longer than dt = {dt!r} s", f"{duration!r} s")
        _whole_steps(duration, dt, "model.duration")
        object.__setattr__(self, "dt", dt)
        object.__setattr__(self, "duration", duration)

        pops, projs = dict(self.populations), dict(self.projections)
        for name, pop in pops.items():
            if not isinstance(pop, Population) or pop.name != name:
                raise GraphError(f"populations.{name}", f"a Population named {name!r}", repr(pop))
            if pop.refractory is not None:
                _whole_steps(pop.refractory, dt, f"populations.{name}.refractory")
        for name, proj in projs.items():
            if not isinstance(proj, Projection) or proj.name != name:
                raise GraphError(f"projections.{name}", f"a Projection named {name!r}", repr(proj))
        if not pops:
            raise GraphError("populations", "at least one population", "none")
        for name in sorted(set(pops) & set(projs)):
            raise GraphError(
                f"projections.{name}",
                "a name not used by a population",
                repr(name),
                "populations and projections share one namespace",
            )
        for proj in projs.values():
            self._check_projection(proj, pops, dt)
        self._check_output(pops)
        encodings = self._check_encodings(pops, projs, duration)
        self._check_data(pops)
        if self.reversible is not None:
            self.reversible.check(pops, projs, dt, self.output)

        pop_order, proj_order = _topological(pops, projs)
        object.__setattr__(self, "populations", {n: pops[n] for n in pop_order})
        object.__setattr__(self, "projections", {n: projs[n] for n in proj_order})
        object.__setattr__(self, "encodings", {n: encodings[n] for n in pop_order if n in encodings})

    def named_inputs(self, inputs) -> dict:
        """``inputs`` as input population name -> tensor; a single tensor (anything but a mapping)
        stands for the graph's only input population (ValueError when it has several)."""
        if isinstance(inputs, Mapping):
            return inputs
        ins = self.inputs()
        if len(ins) != 1:
            raise ValueError(f"{self.name}: {len(ins)} input populations; pass a dict of inputs")
        return {ins[0].name: inputs}

    def require_plain(self, what: str) -> None:
        """Raise ValueError when ``what`` (a command or function) would run this graph without its
        ``[reversible]`` blocks, which only :mod:`neuro.training.reversible` runs."""
        if self.reversible is not None:
            raise ValueError(
                f"{what}: model {self.name!r} has a [reversible] section, which {what} does not run "
                "(it would silently use the plain graph); train and evaluate it with `neuro train` "
                "(mode reversible)"
            )

    @staticmethod
    def _check_projection(proj: Projection, pops: Mapping[str, Population], dt: float) -> None:
        key = f"projections.{proj.name}"
        for end in ("source", "target"):
            name = getattr(proj, end)
            if name not in pops:
                near = _nearest(name, pops)
                raise GraphError(
                    f"{key}.{end}",
                    f"a population name ({', '.join(pops)})",
                    repr(name),
                    f"did you mean {near!r}?" if near else "declare it under [populations]",
                )
        src, tgt = pops[proj.source], pops[proj.target]
        if tgt.type == "input":
            raise GraphError(
                f"{key}.target",
                "a non-input population",
                f"{tgt.name!r} (type input)",
                "input populations receive no synapses",
            )
        if src.type == "LI":
            raise GraphError(
                f"{key}.source",
                "a population that spikes",
                f"{src.name!r} (type LI, a leaky integrator that never spikes)",
            )
        if proj.kind == "recurrent":
            if src.name != tgt.name or src.size != tgt.size:
                raise GraphError(
                    f"{key}.target",
                    f"the source population {src.name!r} (a recurrent weight is square: a "
                    "population to itself)",
                    repr(tgt.name),
                    'use kind = "dense" between different populations',
                )
        elif src.name == tgt.name:
            raise GraphError(f"{key}.kind", '"recurrent" for a population to itself', repr(proj.kind))
        if proj.kind == "one_to_one" and src.size != tgt.size:
            raise GraphError(
                f"{key}.kind",
                "equal source and target sizes for one_to_one",
                f"{src.name!r} size {src.size} -> {tgt.name!r} size {tgt.size}",
                'use kind = "dense"',
            )
        if registry.get(proj.rule).spiking_target and not tgt.spiking:
            raise GraphError(
                f"{key}.rule",
                f"a spiking target for rule {proj.rule}",
                f"{tgt.name!r} of type {tgt.type}",
            )
        _whole_steps(proj.delay, dt, f"{key}.delay")

    def _check_output(self, pops: Mapping[str, Population]) -> None:
        if not isinstance(self.output, str) or self.output not in pops:
            near = _nearest(self.output, pops)
            raise GraphError(
                "model.output",
                f"a population name ({', '.join(pops)})",
                repr(self.output),
                f"did you mean {near!r}?" if near else None,
            )
        out = pops[self.output]
        if out.type == "input":
            raise GraphError("model.output", "a non-input population", repr(self.output))
        if self.training.readout in ("spike_count", "first_spike") and not out.spiking:
            raise GraphError(
                "training.readout",
                f"a readout for a {out.type} output (max_membrane)",
                repr(self.training.readout),
                f"{self.training.readout} needs a spiking output population",
            )

    def _check_encodings(
        self,
        pops: Mapping[str, Population],
        projs: Mapping[str, Projection],
        duration: float,
    ) -> dict[str, Encoding]:
        encodings = dict(self.encodings)
        for name, enc in encodings.items():
            if not isinstance(enc, Encoding) or enc.population != name:
                raise GraphError(f"inputs.{name}", f"an Encoding of {name!r}", repr(enc))
            if name not in pops or pops[name].type != "input":
                inputs = [n for n, p in pops.items() if p.type == "input"]
                near = _nearest(name, inputs)
                raise GraphError(
                    f"inputs.{name}",
                    f"an input population ({', '.join(inputs) or 'none'})",
                    repr(name),
                    f"did you mean {near!r}?" if near else None,
                )
            if enc.kind == "latency" and enc.t_max > duration:
                raise GraphError(
                    f"inputs.{name}.t_max",
                    f"a time <= duration = {duration!r} s",
                    f"{enc.t_max!r} s",
                )
        for name, pop in pops.items():
            if pop.type == "input" and name not in encodings:
                raise GraphError(
                    f"inputs.{name}",
                    "an encoding for every input population",
                    "none",
                    f'add [inputs.{name}] with encoding = "poisson"',
                )
        for proj in projs.values():
            enc = encodings.get(proj.source)
            if enc is not None and not enc.spiking and registry.get(proj.rule).spiking_target:
                raise GraphError(
                    f"projections.{proj.name}.rule",
                    "a rule that needs no presynaptic spikes",
                    f"{proj.rule} from current-encoded input {proj.source!r}",
                )
        return encodings

    def _check_data(self, pops: Mapping[str, Population]) -> None:
        if self.data is None or self.data.name not in DATASET_SHAPES:
            return
        features, classes = DATASET_SHAPES[self.data.name]
        for pop in pops.values():
            if pop.type == "input" and pop.size != features:
                raise GraphError(
                    f"populations.{pop.name}.size",
                    f"{features} (the {self.data.name} data set has {features} features)",
                    repr(pop.size),
                )
        out = pops[self.output]
        if self.training.loss == "cross_entropy" and out.size != classes:
            raise GraphError(
                f"populations.{out.name}.size",
                f"{classes} (the {self.data.name} data set has {classes} classes)",
                repr(out.size),
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelGraph):
            return NotImplemented
        return self.canonical_json() == other.canonical_json()

    def __hash__(self) -> int:
        return int(self.canonical_hash()[:16], 16)

    # ---------------------------------------------------------------- queries

    @property
    def steps(self) -> int:
        """Number of time steps per sample, ``duration / dt``."""
        return round(self.duration / self.dt)

    @property
    def is_recurrent(self) -> bool:
        """True if any projection is recurrent."""
        return any(p.kind == "recurrent" for p in self.projections.values())

    def inputs(self) -> tuple[Population, ...]:
        """The ``input`` populations, in graph order."""
        return tuple(p for p in self.populations.values() if p.type == "input")

    def outputs(self) -> tuple[Population, ...]:
        """The output population(s) the readout and the loss act on."""
        return (self.populations[self.output],)

    def incoming(self, population: str) -> tuple[Projection, ...]:
        """Projections whose target is ``population``, in graph order."""
        return tuple(p for p in self.projections.values() if p.target == population)

    def outgoing(self, population: str) -> tuple[Projection, ...]:
        """Projections whose source is ``population``, in graph order."""
        return tuple(p for p in self.projections.values() if p.source == population)

    def weight_shape(self, projection: str) -> tuple[int, ...]:
        """Shape of a projection's weight tensor.

        ``(target.size, source.size)`` for dense and recurrent projections (like
        ``torch.nn.Linear``), ``(size,)`` for one_to_one; with a trailing axis of
        :attr:`Projection.n_components` blade coefficients unless the weights are plain scalars
        (algebra (0, 0, 0), grades (0,)).
        """
        proj = self.projections[projection]
        tgt, src = self.populations[proj.target].size, self.populations[proj.source].size
        shape: tuple[int, ...] = (tgt,) if proj.kind == "one_to_one" else (tgt, src)
        if proj.algebra != (0, 0, 0) or proj.grades != (0,):
            shape += (proj.n_components,)
        return shape

    def delay_steps(self, projection: str) -> int:
        """A projection's delay in time steps."""
        return round(self.projections[projection].delay / self.dt)

    def with_format(self, fmt: str) -> ModelGraph:
        """The same graph with every projection stored in format ``fmt`` (one of FORMATS)."""
        _check_choice(fmt, FORMATS, "format")
        projs = {n: dataclasses.replace(p, format=fmt) for n, p in self.projections.items()}
        return dataclasses.replace(self, projections=projs)

    def with_training(self, **changes: Any) -> ModelGraph:
        """The same graph with some :class:`TrainingSpec` fields replaced (e.g. ``epochs=3``)."""
        return dataclasses.replace(self, training=dataclasses.replace(self.training, **changes))

    # ---------------------------------------------------------------- canonical form

    def to_dict(self) -> dict[str, Any]:
        """Canonical JSON-able form: SI floats, every default filled in."""
        return {
            "name": self.name,
            "description": self.description,
            "dt": self.dt,
            "duration": self.duration,
            "output": self.output,
            "populations": {n: p.to_dict() for n, p in self.populations.items()},
            "projections": {n: p.to_dict() for n, p in self.projections.items()},
            "encodings": {n: e.to_dict() for n, e in self.encodings.items()},
            "data": None if self.data is None else self.data.to_dict(),
            "training": self.training.to_dict(),
            "crosscheck": self.crosscheck.to_dict(),
            **({"reversible": self.reversible.to_dict()} if self.reversible is not None else {}),
        }

    def canonical_json(self) -> str:
        """:meth:`to_dict` as compact ASCII JSON with sorted keys; floats written with ``repr``."""
        return json.dumps(
            self.to_dict(),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        )

    def canonical_hash(self) -> str:
        """sha256 (64 hex digits) of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode("ascii")).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelGraph:
        """Rebuild a graph from :meth:`to_dict` output (for example read back from JSON).

        Raises GraphError if ``data`` is not such a form.
        """
        try:
            pops = {n: Population(**p) for n, p in data["populations"].items()}
            projs = {}
            for n, p in data["projections"].items():
                p = dict(p)
                p["init"] = Init(**p["init"])
                p["algebra"] = tuple(p["algebra"])
                p["grades"] = tuple(p["grades"])
                p["rule_params"] = tuple(sorted(p["rule_params"].items()))
                p["bounds"] = None if p["bounds"] is None else tuple(p["bounds"])
                projs[n] = Projection(**p)
            return cls(
                name=data["name"],
                description=data["description"],
                dt=data["dt"],
                duration=data["duration"],
                populations=pops,
                projections=projs,
                output=data["output"],
                encodings={n: Encoding(**e) for n, e in data["encodings"].items()},
                data=None if data["data"] is None else DataSpec(**data["data"]),
                training=TrainingSpec(**data["training"]),
                crosscheck=CrosscheckSpec(**data["crosscheck"]),
                reversible=ReversibleSpec(**data["reversible"]) if data.get("reversible") else None,
            )
        except GraphError:
            raise
        except (KeyError, TypeError, AttributeError) as exc:
            raise GraphError("model", "a dict made by ModelGraph.to_dict", repr(exc)) from None
