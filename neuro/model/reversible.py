"""Reversible spiking blocks after a LIF population (``[reversible]``) and their fixed-point grid."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from neuro.model.checks import check_int, finite
from neuro.model.errors import GraphError, nearest
from neuro.model.population import Population
from neuro.model.projection import Projection

__all__ = [
    "REVERSIBLE_DECAY_BITS",
    "REVERSIBLE_MAX_WIDTH",
    "REVERSIBLE_V_FRAC",
    "REVERSIBLE_W_FRAC",
    "REVERSIBLE_X_FRAC",
    "ReversibleSpec",
    "fixed_decay",
]

#: Bits of the fixed-point decays of reversible blocks (``neuro.sim.reversible``): a decay ``1 - dt/tau``
#: is rounded to ``n / 2**REVERSIBLE_DECAY_BITS`` and must lie in (1/2, 1) (one stored bit per step).
REVERSIBLE_DECAY_BITS = 8
#: Fraction bits of the activations x1, x2 of reversible blocks (and of the stack input after rounding).
REVERSIBLE_X_FRAC = 8
#: Fraction bits of the weights of reversible blocks as used in the forward pass.
REVERSIBLE_W_FRAC = 16
#: Fraction bits of membranes in reversible blocks (X + W fraction bits: exact products): v_th,
#: v_reset, v_leak must be multiples of 2**-24.
REVERSIBLE_V_FRAC = REVERSIBLE_X_FRAC + REVERSIBLE_W_FRAC
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
        check_int(self.blocks, 1, "reversible.blocks")
        scale = finite(self.weight_scale, "reversible.weight_scale")
        if scale <= 0:
            raise GraphError("reversible.weight_scale", "a value > 0", repr(scale))
        object.__setattr__(self, "weight_scale", scale)

    def check(self, pops: Mapping[str, Population], projs: Mapping[str, Projection], dt: float,
              output: str) -> None:
        """The graph invariants a reversible stack needs (GraphError naming the key otherwise)."""
        key = "reversible.population"
        pop = pops.get(self.population)
        if pop is None:
            near = nearest(self.population, pops)
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
