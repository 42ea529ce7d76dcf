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
import time
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

from neuro.model.graph import ModelGraph
from neuro.sim.network import Network, spike_fn
from neuro.rules.online import ONLINE_RULES, OnlineLearner, check_online_graph
from neuro.train.loop import (
    TrainResult,
    _dtype_for,
    build_engine,
    fit,
    prepare_run,
    write_outputs,
)

__all__ = ["MODES", "train_online", "preallocate_quires", "CheckpointedBPTT", "online_mode_of"]

MODES = ("eprop", "ottt", "bptt_checkpoint")
#: Quire window (absolute limb indices [lo, hi), 32 bits per limb) allocated up front for a
#: 32-bit quire format (bposit32 / posit32): measured on Yin-Yang training, contributions of
#: surrogate-gradient, e-prop and OTTT updates occupy limbs -5..2 (bits 2**-160 .. 2**96, headroom
#: for carries included).  A contribution outside the window widens it (never truncates).
QUIRE_WINDOW = (-5, 3)


def preallocate_quires(engine, window: tuple[int, int] = QUIRE_WINDOW) -> None:
    """Allocate every parameter's quire limbs ``[lo, hi)`` now, as :mod:`neuro.train.plan` assumes."""
    for p in engine.parameters():
        engine.reserve_window(p, window)


def online_mode_of(graph: ModelGraph) -> str | None:
    """The online mode a graph's projection rules select (``"eprop"`` / ``"ottt"``), else None."""
    rules = {p.rule for p in graph.projections.values()} & set(ONLINE_RULES)
    if len(rules) > 1:
        raise ValueError(f"{graph.name}: mixes online rules {sorted(rules)}; use one")
    return rules.pop() if rules else None


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


def train_online(
    graph: ModelGraph,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    max_train: int | None = None,
    mode: str | None = None,
    segment: int | None = None,
    lr_schedule: str | None = None,
) -> TrainResult:
    """Train ``graph`` in a memory-bounded mode; same metrics and outputs as :func:`neuro.train.loop.train`.

    Args:
        graph: the model graph; its projection rule selects the mode (``"eprop"``, ``"ottt"``)
            unless ``mode`` is given.
        epochs, seed, out_dir, progress, max_train, lr_schedule: as in :func:`neuro.train.loop.train`.
        mode: ``"eprop"``, ``"ottt"`` or ``"bptt_checkpoint"`` (projections with rule ``eprop`` or
            ``bptt`` are trained).
        segment: steps per checkpoint segment for ``bptt_checkpoint`` (default ``ceil(sqrt(T))``).
    """
    from neuro.rules.bptt import classification_loss

    t0 = time.perf_counter()
    spec = graph.training
    mode = mode or online_mode_of(graph) or "bptt_checkpoint"
    if mode not in MODES:
        raise ValueError(f"{graph.name}: mode must be one of {MODES}, got {mode!r}")
    if spec.readout != "max_membrane":
        raise ValueError(
            f"{graph.name}: training.readout = {spec.readout!r}: the online and checkpointed "
            "modes train the max_membrane readout of an LI output"
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = prepare_run(graph, epochs, seed, lr_schedule, max_train, t0)
        network = Network(graph, seed=run.seed, dtype=_dtype_for(graph))
        rules = ("eprop", "ottt", "bptt")
        trained = network.plastic(rules)
        rule_name = next(p.rule for p in graph.projections.values() if p.rule in rules)
        engine = build_engine(graph, network, rule=rule_name, seed=run.seed)
        preallocate_quires(engine)
        feedback = dict(graph.projections[trained[0]].rule_params).get("feedback", "symmetric")
        scale = -1.0 / spec.batch_size
        if mode in ONLINE_RULES:
            learner = OnlineLearner(
                graph,
                dict(network.weights),
                batch=spec.microbatch,
                rule=mode,
                trained=trained,
                feedback=feedback,
                dtype=network.dtype,
                seed=run.seed,
            )

            @torch.no_grad()
            def microbatch(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
                return learner.run(x, labels, engine, scale)
        else:
            learner = CheckpointedBPTT(graph, network, segment=segment or math.ceil(math.sqrt(graph.steps)))

            def microbatch(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
                scores = learner.run(x, engine, trained, scale)
                loss = classification_loss(scores, labels)
                loss.backward()
                for w in network.weights.values():
                    w.grad = None
                return scores.detach(), float(loss.detach())

        extra = {"mode": mode} if mode != "bptt_checkpoint" else {"mode": mode, "segment": learner.segment}
        metrics = fit(graph, network, engine, run, microbatch, progress=progress, label=mode, **extra)
        if out_dir is not None:
            write_outputs(Path(out_dir), graph, network, metrics, run.test_set)
        return TrainResult(metrics=metrics, network=network, history=metrics["history"])
    finally:
        torch.set_num_threads(threads)
