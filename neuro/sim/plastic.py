"""The closed plastic loop of a local-rule model: input spikes drive the neuron through the plastic
weights, the neuron's spikes drive the rule, the rule's contributions change the weights.

A local-rule model (:class:`LocalModel`) is one input population projecting onto one spiking
population (LIF or AdaptiveLIF) through a plastic projection (a local rule of the registry,
:func:`neuro.rules.registry.rules_of_kind`), optionally with a fixed recurrent projection on the target
(lateral inhibition).  Time is cut into update intervals of ``L`` steps: within an interval the
weights are constant, so the feed-forward currents of all ``L`` steps are one matrix product, the
neurons run :func:`neuro.neurons.lif_step_events` step by step (bool spikes, no reset kernels on
steps where no neuron fired), the rule computes its traces for the whole interval in closed form and
hands its contributions to the :class:`~neuro.engine.UpdateEngine`, and ``engine.step()`` rounds
ONCE per interval to the storage format and clamps to the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from neuro import neurons
from neuro.engine import UpdateEngine
from neuro.model.graph import ModelGraph
from neuro.rules import registry
from neuro.sim.network import Network

__all__ = ["ClosedLoop", "LocalModel", "LoopState"]

F64 = torch.float64


@dataclass
class LocalModel:
    """The pieces of a local-rule model graph: input population, target, plastic and lateral
    projections."""

    source: str
    target: str
    plastic: str
    lateral: str | None = None

    @classmethod
    def from_graph(cls, graph: ModelGraph) -> LocalModel:
        plastic = [n for n, p in graph.projections.items() if registry.get(p.rule).kind == "local"]
        if len(plastic) != 1:
            raise ValueError(
                f"{graph.name}: the local-rule trainer runs exactly one plastic projection, found {plastic}"
            )
        proj = graph.projections[plastic[0]]
        if graph.populations[proj.source].type != "input":
            raise ValueError(
                f"{graph.name}: plastic projection {proj.name} must start at an input population"
            )
        tgt = graph.populations[proj.target]
        if tgt.type not in ("LIF", "AdaptiveLIF"):
            raise ValueError(f"{graph.name}: target {tgt.name} must be LIF or AdaptiveLIF, got {tgt.type}")
        lateral = None
        for name, p in graph.projections.items():
            if name == proj.name:
                continue
            if p.source == p.target == tgt.name and p.rule == "none":
                lateral = name
            else:
                raise ValueError(
                    f"{graph.name}: projection {name} is not supported by the local-rule trainer "
                    "(only a fixed recurrent projection on the target, for lateral inhibition)"
                )
        return cls(proj.source, tgt.name, proj.name, lateral)


class LoopState(NamedTuple):
    """The closed loop's state between intervals: the target population's
    :mod:`neuro.neurons` state and its spikes of the last step, ``(B, M)`` bool (the lateral input)."""

    neuron: neurons.LIFState | neurons.AdaptiveLIFState
    spikes: torch.Tensor

    @property
    def theta(self) -> torch.Tensor:
        """Adaptive threshold offsets ``(B, M)`` (zeros for LIF)."""
        b = getattr(self.neuron, "b", None)
        return torch.zeros_like(self.neuron.v) if b is None else b


class ClosedLoop:
    """Input spikes -> LIF/AdaptiveLIF population through the plastic weights (+ lateral), with the
    rule learning once per update interval.

    Args:
        graph: the model graph; network: its :class:`~neuro.sim.network.Network` (weights live there);
        engine: the :class:`UpdateEngine` over the plastic weight (None: no learning);
        rule: the rule module (None: no learning).
    The neurons step in python-float parameters (``dt * tau_mem_inv`` formed in float64 whatever
    the network's dtype); the ``[data]`` option ``lateral_self = false`` keeps a neuron's own spikes
    out of its lateral input.
    """

    def __init__(self, graph: ModelGraph, network: Network, engine: UpdateEngine | None, rule=None):
        self.graph, self.network, self.engine, self.rule = graph, network, engine, rule
        self.model = LocalModel.from_graph(graph)
        self.pop = graph.populations[self.model.target]
        self.dt = graph.dt
        self.dtype = network.dtype
        self.weight = network.weights[self.model.plastic]
        self.params = neurons.neuron_parameters(self.pop, self.dt)
        options = graph.data.options if graph.data is not None else {}
        self.lateral_self = bool(options.get("lateral_self", True))
        self.state: LoopState | None = None
        self.spike_count = 0

    def reset(self, batch: int, theta: torch.Tensor | None = None) -> None:
        """Neuron state at rest (``theta``: ``(M,)`` adaptive thresholds carried over), rule traces 0."""
        m = self.pop.size
        neuron = neurons.initial_state(self.params, (batch, m), dtype=self.dtype)
        if theta is not None and isinstance(neuron, neurons.AdaptiveLIFState):
            neuron = neuron._replace(b=theta.to(self.dtype).expand(batch, m).clone())
        self.state = LoopState(neuron, torch.zeros(batch, m, dtype=torch.bool))
        if self.rule is not None:
            self.rule.reset(batch, self.graph.populations[self.model.source].size, m)

    @torch.no_grad()
    def run_interval(self, z_in: torch.Tensor, reward=None, learn: bool = True) -> torch.Tensor:
        """Simulate ``L`` steps with the current weights and (if ``learn``) hand the rule's
        contributions to the engine and step it once.

        Args:
            z_in: ``(L, B, N)`` bool input spikes.
            reward: for ``rstdp``, a callable ``(z_in, z_out) -> (L, B)`` dopamine release.
        Returns:
            ``(L, B, M)`` bool output spikes.
        """
        p, dt = self.params, self.dt
        w = self.weight.detach()
        current = z_in.to(self.dtype) @ w.T  # (L, B, M): weights constant within the interval
        w_lat = self.network.weights[self.model.lateral].detach() if self.model.lateral else None
        if w_lat is not None and not self.lateral_self:
            w_lat = w_lat * (1 - torch.eye(w_lat.shape[0], dtype=w_lat.dtype))  # others only
        out = torch.zeros(current.shape, dtype=torch.bool)
        neuron, last = self.state
        fired = bool(last.any())
        for t in range(current.shape[0]):
            c = current[t]
            if w_lat is not None and fired:
                c = c + last.to(self.dtype) @ w_lat.T  # recurrent: last step's spikes (none: skipped)
            spikes, neuron = neurons.lif_step_events(c, neuron, p, dt)
            fired = spikes is not None
            if fired:
                out[t] = spikes
                last = spikes
        self.state = LoopState(neuron, last if fired else torch.zeros_like(last))
        self.spike_count += int(out.sum())
        if learn and self.rule is not None:
            r = reward(z_in, out) if reward is not None else None  # dopamine (L, B), for rules that read it
            self.rule.interval(self.engine, self.weight, z_in, out, reward=r)
            self.engine.step()
        return out
