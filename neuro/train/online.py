"""Training loops for the memory-bounded modes: online e-prop / OTTT and segment-checkpointed BPTT.

* ``eprop`` / ``ottt``: :class:`neuro.rules.online.OnlineLearner` runs each microbatch step by step
  and hands the engine its contributions online; memory does not depend on ``T``.
* ``bptt_checkpoint``: surrogate-gradient BPTT where the time loop is cut into segments of
  ``segment`` steps, each run under ``torch.utils.checkpoint`` (non-reentrant): only the states at
  segment boundaries are kept, a segment's activations are recomputed during the backward pass.
  Memory ~ ``T / segment`` boundary states + one segment of activations (``segment ~ sqrt(T)``
  minimises it).  Error signals reach the engine through :class:`_Project`, whose backward hands
  ``(delta (B, M), pre (B, N))`` of every step to ``accumulate_outer``: the same exact sum as
  :func:`neuro.rules.bptt.bptt_contribute`.

Every mode allocates its buffers up front (:func:`preallocate_quires` widens each quire to the
window :mod:`neuro.train.plan` assumed) and runs in :func:`neuro.train.loop.fit`, the loop BPTT uses, so
metrics and output files look like those of ``neuro train``.  All modes train the model's own
objective, the cross-entropy of the max-membrane readout.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from neuro.model.graph import ModelGraph
from neuro.rules.online import OnlineLearner, check_online_graph
from neuro.sim.network import Network, spike_fn
from neuro.train.bptt import NetworkDriver

__all__ = ["OnlineDriver", "preallocate_quires", "CheckpointedBPTT"]

#: Quire window (absolute limb indices [lo, hi), 32 bits per limb) allocated up front for a
#: 32-bit quire format (bposit32 / posit32): measured on Yin-Yang training, contributions of
#: surrogate-gradient, e-prop and OTTT updates occupy limbs -5..2 (bits 2**-160 .. 2**96, headroom
#: for carries included).  A contribution outside the window widens it (never truncates).
QUIRE_WINDOW = (-5, 3)


def preallocate_quires(engine, window: tuple[int, int] = QUIRE_WINDOW) -> None:
    """Allocate every parameter's quire limbs ``[lo, hi)`` now, as :mod:`neuro.train.plan` assumes."""
    for p in engine.parameters():
        engine.reserve_window(p, window)


class _Project(torch.autograd.Function):
    """``c = pre @ W^T`` whose backward hands ``(dL/dc, pre)`` to the engine (exact sum) instead of
    computing ``W.grad``.  ``pre`` is saved through ``save_for_backward`` so checkpointing can drop
    and recompute it."""

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
        graph, network: the graph and the :class:`Network` holding the weights (its arithmetic:
            ``lif_step`` / Norse LI, same order).
        segment: steps per checkpointed segment; ``None`` or ``>= T``: plain BPTT (every step's
            activations kept).
    """

    def __init__(self, graph: ModelGraph, network: Network, *, segment: int | None = None) -> None:
        check_online_graph(graph)
        self.graph, self.network, self.segment = graph, network, segment
        self.order = [p for p in graph.populations.values() if p.type != "input"]
        self.input = graph.inputs()[0].name
        self.trained: list[str] = []
        self.engine = None
        self.scale = 1.0

    def _init_state(self, batch: int):
        kw = dict(dtype=self.network.dtype)
        state = []
        for pop in self.order:
            z = torch.zeros(batch, pop.size, **kw)
            state += [z + pop.v_leak, z.clone(), z.clone(), z.clone()]  # v, i, b (adaptive), out
        return state

    def _step(self, x_t, state):
        graph, net = self.graph, self.network
        new = []
        outs = {self.input: x_t}
        prev = {pop.name: state[4 * k + 3] for k, pop in enumerate(self.order)}
        dt = graph.dt
        for k, pop in enumerate(self.order):
            v, i, b, _ = state[4 * k : 4 * k + 4]
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
                total = torch.zeros_like(v)
            tsi = 1.0 / pop.tau_syn if pop.tau_syn else 0.0
            tmi = 1.0 / pop.tau_mem
            if pop.type == "LI":
                i_jump = i + total
                v_new = v + dt * tmi * ((pop.v_leak - v) + i_jump)
                new += [v_new, i_jump + (-dt * tsi * i_jump), b, v_new]
                outs[pop.name] = v_new
                continue
            i_new = (torch.zeros_like(i) if pop.type == "LIFBox" else i) + total
            v_dec = v + dt * tmi * ((pop.v_leak - v) + i_new)
            i_dec = i_new + (-dt * tsi * i_new)
            th = pop.v_th + b if pop.type == "AdaptiveLIF" else pop.v_th
            z = spike_fn(
                v_dec - th,
                pop.surrogate or "superspike",
                pop.surrogate_scale if pop.surrogate_scale is not None else 10.0,
            )
            v_next = (1 - z) * v_dec + z * pop.v_reset
            if pop.type == "AdaptiveLIF":
                b = b * math.exp(-dt / pop.tau_adapt) + pop.adapt_increment * z
            new += [v_next, i_dec, b, z]
            outs[pop.name] = z
        return new

    def _segment(self, x_seg, running, *state):
        state = list(state)
        k_out = 4 * (len(self.order) - 1) + 3
        for t in range(x_seg.shape[0]):
            state = self._step(x_seg[t], state)
            running = torch.maximum(running, state[k_out])
        return (running, *state)

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
                running, *state = checkpoint(self._segment, x_seg, running, *state, use_reentrant=False)
            else:
                running, *state = self._segment(x_seg, running, *state)
        return running


class OnlineDriver(NetworkDriver):
    """Modes ``eprop`` and ``ottt``: :class:`~neuro.rules.online.OnlineLearner` runs each microbatch
    step by step and hands the engine its contributions online (memory does not grow with ``T``).
    Every loss-based projection is trained; e-prop's ``feedback`` is the first one's."""

    preallocate = True

    def __init__(self, graph, run, *, mode: str) -> None:
        super().__init__(graph, run)
        if graph.training.readout != "max_membrane":
            raise ValueError(f"{graph.name}: training.readout = {graph.training.readout!r}: the online "
                             "modes train the max_membrane readout of an LI output")
        self.mode = mode
        feedback = self.graph.projections[self.trained[0]].params.get("feedback", "symmetric") \
            if self.trained else "symmetric"
        self.learner = OnlineLearner(graph, dict(self.network.weights), batch=graph.training.microbatch,
                                     rule=mode, trained=self.trained, feedback=feedback, dtype=self.dtype,
                                     seed=run.seed)

    @torch.no_grad()
    def microbatch(self, x, labels, engine, scale):
        return self.learner.run(x, labels, engine, scale)
