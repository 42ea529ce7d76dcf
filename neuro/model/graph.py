"""The typed model graph: populations, projections, encodings, data and training settings.

A :class:`ModelGraph` is what :mod:`neuro.model.spec` makes of a model file, and what the Norse
builder (:mod:`neuro.sim.network`), the Brian2 reference (:mod:`neuro.crosscheck.reference`), NIR
exchange and the registry consume.  It is plain, frozen data:

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
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from neuro.model.checks import check_choice, finite, whole_steps
from neuro.model.encoding import ENCODING_PARAMETERS, ENCODINGS, Encoding
from neuro.model.errors import GraphError, nearest
from neuro.model.population import NEURON_TYPES, POPULATION_PARAMETERS, SPIKING_TYPES, SURROGATES, Population
from neuro.model.projection import FORMATS, PROJECTION_KINDS, SIGNS, Projection
from neuro.model.reversible import ReversibleSpec
from neuro.model.settings import (
    CROSSCHECK_DEFAULTS,
    DATASET_SHAPES,
    DATASETS,
    LOSSES,
    LR_SCHEDULES,
    READOUTS,
    CrosscheckSpec,
    DataSpec,
    TrainingSpec,
)
from neuro.model.weights import INIT_DISTS, INIT_PARAMETERS, Init
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
        cycle = _cycle({n for n, d in indegree.items() if d > 0}, projections)
        chain = " -> ".join([cycle[0].source, *(p.target for p in cycle)])
        position = {name: i for i, name in enumerate(projections)}
        closing = max(cycle, key=lambda p: position[p.name])  # the last one the model declares
        raise GraphError(
            f"projections.{closing.name}",
            "feed-forward projections without cycles",
            f"a cycle through populations {', '.join(p.source for p in cycle)}: {chain} "
            f"(projections {', '.join(p.name for p in cycle)})",
            "cycles between two populations are not supported yet; only a recurrent projection "
            "(a population to itself) may close a loop",
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


def _weight_shape(proj: Projection, pops: Mapping[str, Population]) -> tuple[int, ...]:
    """See :meth:`ModelGraph.weight_shape`."""
    tgt, src = pops[proj.target].size, pops[proj.source].size
    shape: tuple[int, ...] = (tgt,) if proj.kind == "one_to_one" else (tgt, src)
    if proj.algebra != (0, 0, 0) or proj.grades != (0,):
        shape += (proj.n_components,)
    return shape


def _check_given_shape(proj: Projection, pops: Mapping[str, Population]) -> None:
    """GraphError unless given weights (``init = { file = ... }``) have the projection's shape."""
    key = f"projections.{proj.name}.init"
    wanted, shape = _weight_shape(proj, pops), proj.init.shape(key)
    if shape == wanted:
        return
    layout = (f"(size,) = ({wanted[0]},) for one_to_one" if proj.kind == "one_to_one" else
              f"(target {proj.target}, source {proj.source}) = {wanted[:2]}, like torch.nn.Linear")
    hint = "save the tensor with that shape"
    if len(shape) == len(wanted) >= 2 and (shape[1], shape[0], *shape[2:]) == wanted:
        hint = "the tensor looks transposed: weights are (target, source); save W.T"
    elif math.prod(shape) == math.prod(wanted):
        hint = f"reshape it to {wanted} before saving"
    raise GraphError(key, f"weights of shape {wanted}: {layout}", f"shape {shape} in {proj.init.label}", hint)


def _cycle(stuck: set[str], projections: Mapping[str, Projection]) -> list[Projection]:
    """One cycle of feed-forward projections among ``stuck`` (the populations a topological sort
    could not place, each fed by another of them), in order from its first population by name."""
    into = {
        name: min((p for p in projections.values()
                   if p.kind != "recurrent" and p.target == name and p.source in stuck), key=lambda p: p.name)
        for name in stuck
    }
    node, seen, back = min(stuck), {}, []
    while node not in seen:  # walk backwards until a population repeats
        seen[node] = len(back)
        back.append(into[node])
        node = into[node].source
    cycle = back[seen[node]:][::-1]
    start = min(range(len(cycle)), key=lambda i: cycle[i].source)
    return cycle[start:] + cycle[:start]


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
        dt = finite(self.dt, "model.dt")
        duration = finite(self.duration, "model.duration")
        if dt <= 0:
            raise GraphError("model.dt", "a time step > 0", f"{dt!r} s")
        if not duration > dt:
            raise GraphError("model.duration", f"a duration longer than dt = {dt!r} s", f"{duration!r} s")
        whole_steps(duration, dt, "model.duration")
        object.__setattr__(self, "dt", dt)
        object.__setattr__(self, "duration", duration)

        pops, projs = dict(self.populations), dict(self.projections)
        for name, pop in pops.items():
            if not isinstance(pop, Population) or pop.name != name:
                raise GraphError(f"populations.{name}", f"a Population named {name!r}", repr(pop))
            if pop.refractory is not None:
                whole_steps(pop.refractory, dt, f"populations.{name}.refractory")
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
                near = nearest(name, pops)
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
        whole_steps(proj.delay, dt, f"{key}.delay")
        if proj.init.dist == "file":
            _check_given_shape(proj, pops)

    def _check_output(self, pops: Mapping[str, Population]) -> None:
        if not isinstance(self.output, str) or self.output not in pops:
            near = nearest(self.output, pops)
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
                near = nearest(name, inputs)
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
        return _weight_shape(self.projections[projection], self.populations)

    def delay_steps(self, projection: str) -> int:
        """A projection's delay in time steps."""
        return round(self.projections[projection].delay / self.dt)

    def with_format(self, fmt: str) -> ModelGraph:
        """The same graph with every projection stored in format ``fmt`` (one of FORMATS)."""
        check_choice(fmt, FORMATS, "format")
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
