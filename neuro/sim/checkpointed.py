"""Surrogate-gradient BPTT checkpointed in time, with error signals handed to the engine.

The time loop is cut into segments of ``segment`` steps, each run under ``torch.utils.checkpoint``
(non-reentrant): only the states at segment boundaries are kept, a segment's activations are
recomputed during the backward pass.  Memory ~ ``T / segment`` boundary states + one segment of
activations (``segment ~ sqrt(T)`` minimises it).  Error signals reach the engine through
:class:`_Project`, whose backward hands ``(delta (B, M), pre (B, N))`` of every step to
``accumulate_outer``: the same exact sum as :func:`neuro.rules.bptt.bptt_contribute`.  Neurons step
with :func:`neuro.neurons.lif_step` / :func:`neuro.neurons.li_step` in python-float parameters.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from neuro import neurons
from neuro.model.graph import ModelGraph
from neuro.rules.online import check_online_graph
from neuro.sim.network import Network

__all__ = ["CheckpointedBPTT"]


class _Project(torch.autograd.Function):
    """``c = pre @ W^T`` whose backward hands ``(dL/dc, pre)`` to the engine (exact sum) instead of
    computing ``W.grad``.  ``pre`` is saved through ``save_for_backward`` so checkpointing can drop
    and recompute it.  Call as ``_Project.apply(pre, weight, engine, scale, spiking)`` (``engine``
    None: no contribution; ``spiking``: ``pre`` is 0/1, handed over as bool)."""

    @staticmethod
    def forward(ctx, pre, weight, engine, scale, spiking):
        ctx.save_for_backward(pre)
        ctx.weight = weight  # a parameter (kept alive anyway); the engine needs the same object
        ctx.engine, ctx.scale, ctx.spiking = engine, scale, spiking
        return pre @ weight.detach().T

    @staticmethod
    def backward(ctx, grad):
        (pre,) = ctx.saved_tensors
        weight = ctx.weight
        if ctx.engine is not None:
            ctx.engine.accumulate_outer(weight, grad, pre > 0 if ctx.spiking else pre, ctx.scale)
        grad_pre = grad @ weight.detach() if ctx.needs_input_grad[0] else None
        return grad_pre, None, None, None, None


class CheckpointedBPTT:
    """Surrogate-gradient BPTT over a feed-forward / self-recurrent graph, checkpointed in time.

    Args:
        graph, network: the graph and the :class:`Network` holding the weights.
        segment: steps per checkpointed segment; ``None`` or ``>= T``: plain BPTT (every step's
            activations kept).
    """

    def __init__(self, graph: ModelGraph, network: Network, *, segment: int | None = None) -> None:
        check_online_graph(graph)
        self.graph, self.network, self.segment = graph, network, segment
        self.order = [p for p in graph.populations.values() if p.type != "input"]
        self.params = {pop.name: neurons.neuron_parameters(pop, graph.dt) for pop in self.order}
        self.input = graph.inputs()[0].name
        self.trained: list[str] = []
        self.engine = None
        self.scale = 1.0

    def _init_state(self, batch: int) -> list:
        """Per population: its neuron state and its output of the last step ``(B, n)``."""
        dtype = self.network.dtype
        return [(neurons.initial_state(self.params[pop.name], (batch, pop.size), dtype=dtype),
                 torch.zeros(batch, pop.size, dtype=dtype)) for pop in self.order]

    def _step(self, x_t: torch.Tensor, state: list) -> list:
        graph, net = self.graph, self.network
        new = []
        outs = {self.input: x_t}
        prev = {pop.name: state[k][1] for k, pop in enumerate(self.order)}
        for k, pop in enumerate(self.order):
            neuron = state[k][0]
            total = None
            for proj in graph.incoming(pop.name):
                pre = prev[proj.source] if proj.kind == "recurrent" else outs[proj.source]
                w = net.weights[proj.name]
                spiking = proj.source != self.input
                if proj.name in self.trained:
                    c = _Project.apply(pre, w, self.engine, self.scale, spiking)
                else:
                    c = _Project.apply(pre, w, None, 1.0, spiking)
                total = c if total is None else total + c
            if total is None:
                total = torch.zeros_like(neuron.v)
            p = self.params[pop.name]
            if pop.type == "LI":
                out, neuron = neurons.li_step(total, neuron, p, graph.dt)
            else:
                out, neuron = neurons.lif_step(total, neuron, p, graph.dt)
            new.append((neuron, out))
            outs[pop.name] = out
        return new

    def _segment(self, x_seg, running, state):
        for t in range(x_seg.shape[0]):
            state = self._step(x_seg[t], state)
            running = torch.maximum(running, state[-1][1])
        return running, state

    def run(
        self, x: torch.Tensor, engine=None, trained: list[str] | None = None, scale: float = 1.0
    ) -> torch.Tensor:
        """Forward ``x (T, B, n_in)``; returns the max-membrane scores ``(B, K)`` (differentiable:
        call ``backward`` on a loss of them to hand the engine ``scale * dL/dW``)."""
        self.engine, self.trained, self.scale = engine, list(trained or []), scale
        steps, batch = x.shape[:2]
        state = self._init_state(batch)
        for w in self.network.weights.values():
            w.requires_grad_(True)
        k = self.graph.populations[self.graph.output].size
        running = torch.full((batch, k), -math.inf, dtype=self.network.dtype)
        seg = steps if not self.segment else min(self.segment, steps)
        for t0 in range(0, steps, seg):
            x_seg = x[t0 : t0 + seg]
            if seg < steps:
                running, state = checkpoint(self._segment, x_seg, running, state, use_reentrant=False)
            else:
                running, state = self._segment(x_seg, running, state)
        return running
