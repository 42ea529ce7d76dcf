"""A model with a ``[reversible]`` stack on the fixed-point grid, trained by exact recomputation.

:class:`ReversibleNetwork` runs a graph ``input -> LIF population (2 width) -> reversible blocks ->
LI readout`` (:class:`neuro.model.graph.ReversibleSpec`) on the fixed-point grid of
:mod:`neuro.sim.reversible`: the LIF population and every block sublayer use its ``lif_fixed_step``, the
readout :func:`neuro.sim.reversible.li_step`; the class score is the readout membrane's maximum over time.

Training (:class:`_Streaming`): the forward pass keeps, besides the LIF / LI states of the current
step, only the side records of every layer and step (spike bit, two leak bits per neuron-step, the
pre-reset membrane at spikes: :func:`side_bytes_per_step`).  The backward pass walks time backwards:
it rebuilds the step's inputs from the input buffer, every layer's activity and previous state
bottom-up from the stored bits, re-runs the step under autograd and back-propagates through it.  The
error ``dL/dc`` of each projection's current and its presynaptic activity go to the update engine
``chunk`` steps at a time (``accumulate_outer``, exact), like :mod:`neuro.training.online`'s BPTT; without
an engine the weight gradients are returned instead, equal bit for bit to ordinary autograd through
:meth:`ReversibleNetwork.reference_scores` (tests/test_train_reversible.py).
"""

from __future__ import annotations

import math

import torch

from neuro.model.graph import ModelGraph
from neuro.sim.reversible import (
    W_FRAC,
    W_LIMIT,
    X_FRAC,
    LIFFixedParameters,
    block_step,
    check_range,
    li_inverse,
    li_record,
    li_step,
    lif_fixed_inverse,
    lif_fixed_step,
    quantize,
    side_record,
)

__all__ = ["ReversibleNetwork", "side_bytes_per_step", "CHUNK"]

_F64 = torch.float64
#: Time steps of error signals handed to the engine per ``accumulate_outer`` call.
CHUNK = 8


def side_bytes_per_step(batch: int, sizes: list[int], spikes: int) -> int:
    """Side-record bytes of one step: 3 packed bits per LIF neuron (spike, membrane leak, current
    leak), 2 per LI neuron, plus a 4-byte pre-reset membrane per spike.

    Args:
        sizes: neurons per layer, LIF layers first, the LI readout last.
        spikes: spikes in the step (all layers, whole batch).
    """
    lif = sum(3 * math.ceil(batch * n / 8) for n in sizes[:-1])
    return lif + 2 * math.ceil(batch * sizes[-1] / 8) + 4 * spikes


def _fixed(graph: ModelGraph, name: str) -> LIFFixedParameters:
    pop = graph.populations[name]
    kw = dict(v_th=pop.v_th, v_reset=pop.v_reset) if pop.type == "LIF" else {}
    return LIFFixedParameters(
        tau_syn_inv=1.0 / pop.tau_syn, tau_mem_inv=1.0 / pop.tau_mem, v_leak=pop.v_leak, dt=graph.dt, **kw
    )


class ReversibleNetwork:
    """The weights and fixed-point arithmetic of a graph with a ``[reversible]`` section.

    Attributes:
        weights: name -> weight tensor (model dtype): the two projections (as in the graph) and
            ``{population}.block{b}.f`` / ``.g`` ``(width, width)`` for each block, in step order.
        width: neurons per half; ``sizes``: neurons of each layer (LIF population, 2 per block, readout).
    """

    def __init__(self, graph: ModelGraph, *, seed: int | None = None, dtype: torch.dtype = torch.float32):
        from neuro.sim.network import Network

        spec = graph.reversible
        if spec is None:
            raise ValueError(f"{graph.name}: no [reversible] section; train it with another mode")
        self.graph, self.dtype = graph, dtype
        seed = graph.training.seed if seed is None else seed
        plain = Network(graph, seed=seed, dtype=dtype).weights
        (self.p_in,) = (p.name for p in graph.incoming(spec.population))
        (self.p_out,) = (p.name for p in graph.outgoing(spec.population))
        pop = graph.populations[spec.population]
        self.width = width = pop.size // 2
        gen = torch.Generator().manual_seed(seed + 1)
        self.weights: dict[str, torch.Tensor] = {self.p_in: plain[self.p_in].detach().clone()}
        for b in range(spec.blocks):
            for half in ("f", "g"):
                w = torch.randn(width, width, generator=gen, dtype=_F64) * (spec.weight_scale / width**0.5)
                self.weights[f"{spec.population}.block{b}.{half}"] = w.clamp(-W_LIMIT, W_LIMIT).to(dtype)
        self.weights[self.p_out] = plain[self.p_out].detach().clone()
        self.lif, self.li = _fixed(graph, spec.population), _fixed(graph, graph.output)
        self.surrogate = (pop.surrogate or "superspike", pop.surrogate_scale or 10.0)
        self.blocks = spec.blocks
        self.sizes = [pop.size] + [width] * (2 * spec.blocks) + [graph.populations[graph.output].size]

    def quantized(self) -> list[torch.Tensor]:
        """Every weight clamped to ``|w| <= W_LIMIT`` and rounded to ``2**-W_FRAC`` in float64."""
        return [quantize(w.to(_F64).clamp(-W_LIMIT, W_LIMIT), W_FRAC) for w in self.weights.values()]

    def zero_state(self, batch: int) -> list[torch.Tensor]:
        """``[v, i]`` of the LIF population, ``[vF, iF, vG, iG]`` per block, ``[v, i]`` of the readout."""
        out = []
        for n, p in (
            [(self.sizes[0], self.lif)]
            + [(self.width, self.lif)] * (2 * self.blocks)
            + [(self.sizes[-1], self.li)]
        ):
            out += [torch.full((batch, n), p.v_leak, dtype=_F64), torch.zeros(batch, n, dtype=_F64)]
        return out

    def step(self, u, state, wq):
        """One time step.  ``u``: input ``(B, n_in)`` on the activity grid.  Returns ``(new_state, v_out,
        aux)``; ``aux`` = per layer ``(pre, c, record ingredients)`` for the side records and the engine."""
        sur, sc = self.surrogate
        z, v, i, v_dec, i_new, c = lif_fixed_step(u, wq[0], state[0], state[1], self.lif, sur, sc)
        new, aux = [v, i], [(u, c, (state[0], z, v_dec, i_new))]
        x1, x2 = z[:, : self.width], z[:, self.width :]
        for b in range(self.blocks):
            old = tuple(state[2 + 4 * b : 6 + 4 * b])
            y1, y2, st, ((zf, vfd, ifn, cf), (zg, vgd, ign, cg)) = block_step(
                x1, x2, old, wq[1 + 2 * b], wq[2 + 2 * b], self.lif, sur, sc
            )
            aux += [(x2, cf, (old[0], zf, vfd, ifn)), (y1, cg, (old[2], zg, vgd, ign))]
            new += list(st)
            x1, x2 = y1, y2
        top = torch.cat([x1, x2], dim=1)
        v_out, i_out, i_new, c = li_step(top, wq[-1], state[-2], state[-1], self.li)
        aux.append((top, c, (state[-2], i_new)))
        return new + [v_out, i_out], v_out, aux

    def records(self, aux) -> list:
        """Side records of one step (one per layer)."""
        recs = [side_record(vb, z, vd, inew, self.lif) for _, _, (vb, z, vd, inew) in aux[:-1]]
        return recs + [li_record(*aux[-1][2], self.li)]

    def inverse(self, u, state, wq, recs):
        """The state before a step, rebuilt exactly from the state after it, its input ``u`` and its
        side records ``recs``.  Returns ``(prev, acts)``: the previous state and each block's input
        ``(x1, x2)``, then the top activity ``(y1, y2)``."""
        z, v, i = lif_fixed_inverse(u, wq[0], state[0], state[1], recs[0], self.lif)
        prev, acts = [v, i], []
        x1, x2 = z[:, : self.width], z[:, self.width :]
        for b in range(self.blocks):
            acts.append((x1, x2))
            vf, i_f, vg, ig = state[2 + 4 * b : 6 + 4 * b]
            zf, vf0, if0 = lif_fixed_inverse(x2, wq[1 + 2 * b], vf, i_f, recs[1 + 2 * b], self.lif)
            y1 = x1 + zf
            zg, vg0, ig0 = lif_fixed_inverse(y1, wq[2 + 2 * b], vg, ig, recs[2 + 2 * b], self.lif)
            prev += [vf0, if0, vg0, ig0]
            x1, x2 = y1, x2 + zg
        acts.append((x1, x2))
        v_out, i_out = li_inverse(torch.cat([x1, x2], dim=1), wq[-1], state[-2], state[-1], recs[-1], self.li)
        return prev + [v_out, i_out], acts

    def backward_step(self, u, prev, acts, leaves, g_out, gstate, engine: bool):
        """Back-propagate one step, layer by layer from the readout down (each layer's local graph is
        freed before the next is built).  ``g_out``: gradient of the readout membrane; ``gstate``: of the
        state after the step (or None at the last step).  Returns ``(g_prev, grads, pres)``: gradients
        of the previous state, and per weight (step order) ``dL/dc`` (``engine``) or ``dL/dW`` and the
        presynaptic activity."""
        sur, sc = self.surrogate
        grads, pres = [None] * len(leaves), [None] * len(leaves)
        g_prev = [None] * len(prev)

        def local(outs, gouts, ins, c, j):
            gs = torch.autograd.grad(outs, [*ins, c if engine else leaves[j]], gouts, allow_unused=True)
            grads[j] = gs[-1]
            return gs[:-1]

        with torch.enable_grad():
            x1, x2 = (a.detach().requires_grad_() for a in acts[-1])
            v, i = (s.detach().requires_grad_() for s in prev[-2:])
            v_new, i_dec, _, c = li_step(torch.cat([x1, x2], dim=1), leaves[-1], v, i, self.li)
            outs, gouts = [v_new], [g_out]
            if gstate is not None:
                outs, gouts = [v_new, v_new, i_dec], [g_out, *gstate[-2:]]
            g1, g2, g_prev[-2], g_prev[-1] = local(outs, gouts, [x1, x2, v, i], c, len(leaves) - 1)
            pres[-1] = torch.cat(acts[-1], dim=1)
            for b in reversed(range(self.blocks)):
                x1, x2 = (a.detach().requires_grad_() for a in acts[b])
                old = [s.detach().requires_grad_() for s in prev[2 + 4 * b : 6 + 4 * b]]
                y1, y2, st, ((_, _, _, cf), (_, _, _, cg)) = block_step(
                    x1, x2, tuple(old), leaves[1 + 2 * b], leaves[2 + 2 * b], self.lif, sur, sc
                )
                outs, gouts = [y1, y2], [g1, g2]
                if gstate is not None:
                    outs, gouts = outs + list(st), gouts + gstate[2 + 4 * b : 6 + 4 * b]
                gs = torch.autograd.grad(
                    outs,
                    [x1, x2, *old] + ([cf, cg] if engine else leaves[1 + 2 * b : 3 + 2 * b]),
                    gouts,
                    allow_unused=True,
                )
                g1, g2 = gs[0], gs[1]
                g_prev[2 + 4 * b : 6 + 4 * b] = gs[2:6]
                grads[1 + 2 * b], grads[2 + 2 * b] = gs[6], gs[7]
                pres[1 + 2 * b] = acts[b][1]
                pres[2 + 2 * b] = y1.detach()
            v, i = (s.detach().requires_grad_() for s in prev[:2])
            z, v_new, i_dec, _, _, c = lif_fixed_step(u, leaves[0], v, i, self.lif, sur, sc)
            outs, gouts = [z[:, : self.width], z[:, self.width :]], [g1, g2]
            if gstate is not None:
                outs, gouts = outs + [v_new, i_dec], gouts + gstate[:2]
            g_prev[0], g_prev[1] = local(outs, gouts, [v, i], c, 0)
            pres[0] = u
        g_prev = [g if g is not None else torch.zeros_like(s) for g, s in zip(g_prev, prev)]
        return g_prev, grads, pres

    @property
    def device(self) -> torch.device:
        """Where the weights live (CPU: the fixed-point arithmetic runs in float64 on the CPU)."""
        return next(iter(self.weights.values())).device

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: max-membrane scores ``(B, K)`` of inputs ``x (T, B, n_in)`` (nothing stored)."""
        wq = self.quantized()
        state = self.zero_state(x.shape[1])
        best = None
        for t in range(x.shape[0]):
            state, v_out, _ = self.step(quantize(x[t].to(_F64), X_FRAC), state, wq)
            best = v_out if best is None else torch.maximum(best, v_out)
        return best

    def reference_scores(self, x: torch.Tensor, leaves: list[torch.Tensor]) -> torch.Tensor:
        """The same arithmetic under ordinary autograd (every activation stored): scores whose
        gradients with respect to ``leaves`` (float64 weights) are the reference of the tests."""
        wq = [quantize(w.clamp(-W_LIMIT, W_LIMIT), W_FRAC) for w in leaves]
        state = self.zero_state(x.shape[1])
        best = None
        for t in range(x.shape[0]):
            state, v_out, _ = self.step(quantize(x[t].to(_F64), X_FRAC), state, wq)
            best = v_out if best is None else torch.where(v_out > best, v_out, best)
        return best

    def train_scores(self, x, engine=None, scale: float = 1.0, leaves=None, chunk: int = CHUNK):
        """Differentiable max-membrane scores ``(B, K)``; ``backward`` on a loss of them runs the
        reversible backward and hands ``scale * dL/dW`` to ``engine`` (or, with ``leaves``, float64
        weights requiring grad and no engine, fills their ``.grad``)."""
        if leaves is None:
            wq = [w.detach() for w in self.quantized()]
            dummy = torch.zeros((), requires_grad=True)
            return _Streaming.apply(self, x, engine, scale, chunk, dummy, *wq)
        wq = [quantize(w.clamp(-W_LIMIT, W_LIMIT), W_FRAC) for w in leaves]
        return _Streaming.apply(self, x, None, scale, chunk, None, *wq)


class _Streaming(torch.autograd.Function):
    """Forward storing only side records; backward by exact inversion, one step at a time."""

    @staticmethod
    def forward(ctx, net, x, engine, scale, chunk, dummy, *wq):
        batch = x.shape[1]
        state = net.zero_state(batch)
        best, arg = None, torch.zeros(batch, net.sizes[-1], dtype=torch.int64)
        side = []
        for t in range(x.shape[0]):
            state, v_out, aux = net.step(quantize(x[t].to(_F64), X_FRAC), state, wq)
            side.append(net.records(aux))
            check_range(aux[-1][0], aux[-1][0], state)
            if best is None:
                best = v_out
            else:
                better = v_out > best
                best = torch.where(better, v_out, best)
                arg.masked_fill_(better, t)
            del aux
        ctx.net, ctx.engine, ctx.scale, ctx.chunk = net, engine, scale, chunk
        ctx.state, ctx.side, ctx.arg = state, side, arg
        ctx.save_for_backward(x, *wq)
        net.last_side_bytes = sum(r.nbytes() for step in side for r in step)
        return best

    @staticmethod
    def backward(ctx, g_scores):
        net, engine, scale, chunk = ctx.net, ctx.engine, ctx.scale, ctx.chunk
        x, *wq = ctx.saved_tensors
        state, side, arg = ctx.state, ctx.side, ctx.arg
        ctx.state = ctx.side = None
        steps, batch = x.shape[:2]
        names = list(net.weights)
        leaves = [w.detach().requires_grad_() for w in wq]
        gw: list[torch.Tensor | None] = [None] * len(wq)
        bufs = None
        if engine is not None:  # signal buffers, allocated once: chunk x B rows of (delta, pre)
            bufs = [
                (
                    torch.empty(chunk * batch, w.shape[0], dtype=_F64),
                    torch.empty(chunk * batch, w.shape[1], dtype=_F64),
                )
                for w in wq
            ]
        gstate = None
        filled = 0
        for t in reversed(range(steps)):
            u = quantize(x[t].to(_F64), X_FRAC)
            prev, acts = net.inverse(u, state, wq, side.pop())
            g_out = torch.where(arg == t, g_scores, 0.0)
            gstate, extra, pres = net.backward_step(u, prev, acts, leaves, g_out, gstate, engine is not None)
            if engine is None:
                for j, g in enumerate(extra):
                    if g is not None:
                        gw[j] = g if gw[j] is None else gw[j] + g
            else:
                rows = slice(filled * batch, (filled + 1) * batch)
                for (dbuf, pbuf), pre, g in zip(bufs, pres, extra):
                    dbuf[rows] = 0.0 if g is None else g
                    pbuf[rows] = pre
                filled += 1
                if filled == chunk or t == 0:
                    for name, (dbuf, pbuf) in zip(names, bufs):
                        engine.accumulate_outer(
                            net.weights[name], dbuf[: filled * batch], pbuf[: filled * batch], scale
                        )
                    filled = 0
            state = prev
            del acts, extra, pres
        none = (None,) * 6
        if engine is not None:
            return (*none, *([None] * len(wq)))
        return (*none, *gw)
