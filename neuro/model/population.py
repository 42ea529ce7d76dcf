"""A population: a group of identical neurons of one type, and the neuron vocabulary."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from neuro import neurons
from neuro.model.checks import check_choice, check_int, check_name, finite
from neuro.model.errors import GraphError

__all__ = ["NEURON_TYPES", "POPULATION_PARAMETERS", "SPIKING_TYPES", "SURROGATES", "Population"]

#: Population types: the neuron models of :mod:`neuro.neurons` (``LIF``, ``LIFBox``, ``AdaptiveLIF``,
#: ``LI``; their step functions live there) and ``input``, a spike (or current) source fed by the data
#: set through its encoding.
NEURON_TYPES: tuple[str, ...] = (*neurons.NEURON_TYPES, "input")
#: Neuron types that emit spikes computed from a membrane potential (:mod:`neuro.neurons`).
SPIKING_TYPES: tuple[str, ...] = neurons.SPIKING_TYPES
#: Surrogate derivatives of the spike threshold (:mod:`neuro.neurons`).
SURROGATES: tuple[str, ...] = neurons.SURROGATES

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
        check_name(self.name, "populations")
        key = f"populations.{self.name}"
        check_choice(self.type, NEURON_TYPES, f"{key}.type")
        check_int(self.size, 1, f"{key}.size")
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
                check_choice(value, SURROGATES, fkey)
                continue
            value = finite(value, fkey)
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
