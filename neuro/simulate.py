"""Fast and plastic simulation loops with Norse's LIF arithmetic.

* :func:`simulate_lif_events` -- event-driven simulation of one LIF layer driven by sparse spike
  inputs: the synaptic input of a block of steps is a sparse x dense product that touches only the
  weight rows of presynaptic neurons that spiked; the membrane loop then runs on preallocated
  buffers with in-place operations.  Same per-step arithmetic as ``neuro.network.lif_step``
  (input added before the membrane update, strict ``>`` threshold, reset to ``v_reset``); only the
  order in which simultaneous synaptic inputs are summed differs from a dense matmul (ulp level).
* :func:`simulate_stdp` -- our side of the plasticity cross-check: the network's neuron steps with
  weights that change during the run under pair STDP (Brian2's convention: per-neuron traces
  decayed by ``exp(-dt/tau)`` each step, the presynaptic pathway before the postsynaptic one, the
  step's current computed with the weights before that step's updates).
"""

from __future__ import annotations

import math

import torch

from neuro.graph import ModelGraph
from neuro.network import Network, RunResult, _norse

__all__ = ["simulate_lif_events", "simulate_stdp", "PlasticResult"]


def simulate_lif_events(
    spikes: torch.Tensor,
    weight: torch.Tensor,
    *,
    dt: float,
    tau_mem: float,
    tau_syn: float,
    v_th: float = 1.0,
    v_reset: float = 0.0,
    v_leak: float = 0.0,
    dtype: torch.dtype = torch.float32,
    block: int = 2048,
    record_v: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run a layer of LIF neurons on sparse input spikes, event-driven.

    Args:
        spikes: input spikes ``(T, B, N)`` (0/1, any dtype, or bool).
        weight: ``(M, N)`` weights (target, source), like ``Network.weights``.
        dt, tau_mem, tau_syn: seconds.
        v_th, v_reset, v_leak: dimensionless potentials.
        dtype: arithmetic dtype (float32 or float64).
        block: steps whose input currents are formed in one sparse product.
        record_v: also return the membrane potentials ``(T, B, M)``.
    Returns:
        ``(z, v)``: output spikes ``(T, B, M)`` as bool, and potentials or None.
    """
    steps, batch, n_in = spikes.shape
    m = weight.shape[0]
    wt = weight.detach().to(dtype).T.contiguous()  # (N, M): row n = what input n adds
    # The constants exactly as Norse forms them: python float times a 0-dim tensor of `dtype`.
    tau_mem_inv = torch.tensor(1.0 / tau_mem, dtype=dtype)
    tau_syn_inv = torch.tensor(1.0 / tau_syn, dtype=dtype)
    c_mem = float(dt * tau_mem_inv)
    c_syn = float(-dt * tau_syn_inv)
    vl = torch.tensor(v_leak, dtype=dtype)
    v = torch.full((batch, m), v_leak, dtype=dtype)
    i = torch.zeros(batch, m, dtype=dtype)
    tmp = torch.empty_like(v)
    z = torch.zeros(steps, batch, m, dtype=torch.bool)
    vrec = torch.empty(steps, batch, m, dtype=dtype) if record_v else None
    flat = spikes.reshape(steps * batch, n_in)
    for t0 in range(0, steps, block):
        t1 = min(steps, t0 + block)
        chunk = flat[t0 * batch:t1 * batch]
        rows, cols = torch.nonzero(chunk, as_tuple=True)
        x = torch.zeros((t1 - t0) * batch, m, dtype=dtype)
        if len(rows):
            x.index_add_(0, rows, wt.index_select(0, cols))  # only the active rows of W^T
        x = x.view(t1 - t0, batch, m)
        for t in range(t1 - t0):
            i.add_(x[t])  # i' = i + x
            torch.sub(vl, v, out=tmp)
            tmp.add_(i).mul_(c_mem)
            v.add_(tmp)  # v' = v + dt/tau_mem ((v_leak - v) + i')
            torch.mul(i, c_syn, out=tmp)
            i.add_(tmp)  # i = i' + (-dt/tau_syn) i'
            zt = z[t0 + t]
            torch.gt(v, v_th, out=zt)
            v.masked_fill_(zt, v_reset)
            if vrec is not None:
                vrec[t0 + t] = v
    return z, vrec


class PlasticResult(RunResult):
    """:class:`RunResult` with the final ``weights`` (projection -> tensor)."""

    def __init__(self, readout, spikes, voltages, weights):
        super().__init__(readout=readout, spikes=spikes, voltages=voltages)
        self.weights = weights


def simulate_stdp(graph: ModelGraph, inputs: dict[str, torch.Tensor] | torch.Tensor,
                  weights: dict[str, torch.Tensor], *, dtype: torch.dtype = torch.float64) -> PlasticResult:
    """Run the graph step by step with pair-STDP projections learning during the run.

    The neuron updates are :class:`neuro.network.Network`'s own (LIF, LIFBox, AdaptiveLIF,
    refractoriness); each projection's current is ``pre @ W.T`` with the weights of the start of
    the step.  ``stdp_pair`` projections then apply, in this order: traces decayed by
    ``exp(-dt/tau)``; presynaptic spikes (as delivered, delays applied): ``apre += a_plus`` and
    ``W[:, pre] = clip(W[:, pre] + apost)``; postsynaptic spikes: ``apost -= a_minus`` and
    ``W[post, :] = clip(W[post, :] + apre)`` (additive; multiplicative scales by ``w - low`` and
    ``high - w``).  Batch size 1.

    Args:
        graph: model graph (LI targets cannot be plastic).
        inputs: ``(T, 1, n)`` per input population (or one tensor).
        weights: initial weights per projection.
        dtype: arithmetic dtype.
    Returns:
        :class:`PlasticResult` with spikes, voltages ``(T, 1, n)`` and final weights.
    """
    for p in graph.projections.values():
        if p.rule in ("stdp_triplet", "rstdp"):
            raise ValueError(f"simulate_stdp: projection {p.name}: rule {p.rule} is not pair STDP")
    net = Network(graph, dtype=dtype)
    if isinstance(inputs, torch.Tensor):
        inputs = {graph.inputs()[0].name: inputs}
    steps, batch = next(iter(inputs.values())).shape[:2]
    if batch != 1:
        raise ValueError("simulate_stdp: batch size 1 only (each trial learns on its own)")
    w = {k: weights[k].detach().to(dtype).clone() for k in graph.projections}
    history = {k: list(v.to(dtype).unbind(0)) for k, v in inputs.items()}
    order = [p for p in graph.populations.values() if p.type != "input"]
    states = {}
    for pop in order:
        states[pop.name] = net._initial_state(pop, batch)
        history[pop.name] = []
    volts = {pop.name: [] for pop in order}
    traces = {}
    for name, p in graph.projections.items():
        if p.rule == "stdp_pair":
            prm = p.params
            src, tgt = graph.populations[p.source].size, graph.populations[p.target].size
            lo, hi = p.bounds if p.bounds is not None else (-math.inf, math.inf)
            traces[name] = dict(
                apre=torch.zeros(src, dtype=dtype), apost=torch.zeros(tgt, dtype=dtype),
                dpre=math.exp(-graph.dt / prm["tau_plus"]), dpost=math.exp(-graph.dt / prm["tau_minus"]),
                a_plus=float(prm["a_plus"]), a_minus=float(prm["a_minus"]), lo=lo, hi=hi,
                mult=prm.get("mode", "additive") == "multiplicative",
            )
    zeros = {name: torch.zeros(batch, graph.populations[p.source].size, dtype=dtype)
             for name, p in graph.projections.items()}
    _, _, leaky_integrator = _norse()
    for t in range(steps):
        delivered = {}
        for pop in order:
            total = torch.zeros(batch, pop.size, dtype=dtype)
            for proj in graph.incoming(pop.name):
                lag = net._lag[proj.name]
                src = history[proj.source]
                pre = src[t - lag] if 0 <= t - lag < len(src) else zeros[proj.name]
                delivered[proj.name] = pre
                ww = w[proj.name]
                total = total + (pre * ww if proj.kind == "one_to_one" else pre @ ww.T)
            prm = net._params[pop.name]
            if pop.type == "LI":
                out, states[pop.name] = leaky_integrator.li_feed_forward_step(total, states[pop.name], prm,
                                                                              graph.dt)
                v = out
            else:
                out, v = net._spiking_step(pop, total, states, prm, graph.dt)
            history[pop.name].append(out)
            volts[pop.name].append(v)
        for name, tr in traces.items():
            proj = graph.projections[name]
            ww = w[name]
            tr["apre"].mul_(tr["dpre"])
            tr["apost"].mul_(tr["dpost"])
            pre = delivered[name][0] > 0
            if bool(pre.any()):
                tr["apre"][pre] += tr["a_plus"]
                cols = ww[:, pre]
                ap = tr["apost"][:, None]
                cols = cols + (ap * (cols - tr["lo"]) if tr["mult"] else ap)
                ww[:, pre] = cols.clamp(tr["lo"], tr["hi"])
            post = history[proj.target][t][0] > 0
            if bool(post.any()):
                tr["apost"][post] -= tr["a_minus"]
                rows = ww[post, :]
                ap = tr["apre"][None, :]
                rows = rows + (ap * (tr["hi"] - rows) if tr["mult"] else ap)
                ww[post, :] = rows.clamp(tr["lo"], tr["hi"])
    spikes = {k: torch.stack(v) for k, v in history.items()
              if k in inputs or graph.populations[k].type != "LI"}
    voltages = {k: torch.stack(v) for k, v in volts.items()}
    readout = torch.stack(history[graph.output])
    return PlasticResult(readout, spikes, voltages, w)
