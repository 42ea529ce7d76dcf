"""Surrogate-gradient backpropagation through time, applied through the update engine.

The gradient of a loss with respect to a dense projection's weight is
``dL/dW[m, n] = sum_{t, b} delta[t, b, m] * pre[t, b, n]`` where ``delta`` is the gradient of the
loss with respect to the synaptic current the projection injects at step ``t`` and ``pre`` the
presynaptic activity it read.  Autograd gives ``delta`` (the ``.grad`` of each tracked current);
instead of letting a float matmul reduce it, the rule hands both factors to the engine, whose quire
sums the ``T x B`` products exactly: the update does not depend on how samples are batched, ordered
or spread over workers.
"""

from __future__ import annotations

import math

import torch

from neuro.rules.registry import Rule, register

__all__ = ["readout_scores", "classification_loss", "bptt_contribute", "plan_terms", "READOUTS"]

READOUTS = ("max_membrane", "spike_count", "first_spike")


def readout_scores(readout: torch.Tensor, kind: str = "max_membrane") -> torch.Tensor:
    """Class scores ``(B, C)`` from an output sequence ``(T, B, C)``.

    ``max_membrane``: maximum over time of the readout membrane; ``spike_count``: number of spikes;
    ``first_spike``: spikes weighted by how early they come, ``sum_t z_t (T - t) / T`` (the earliest
    spiking unit scores highest; differentiable through the surrogate).
    """
    if kind == "max_membrane":
        return readout.max(dim=0).values
    if kind == "spike_count":
        return readout.sum(dim=0)
    if kind == "first_spike":
        steps = readout.shape[0]
        weight = (steps - torch.arange(steps, device=readout.device, dtype=readout.dtype)) / steps
        return (readout * weight[:, None, None]).sum(dim=0)
    raise ValueError(f"readout_scores: unknown readout {kind!r}; choose one of {READOUTS}")


def classification_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    spikes: dict[str, torch.Tensor] | None = None,
    rate_regularisation: float = 0.0,
) -> torch.Tensor:
    """Summed (not averaged) cross-entropy of ``scores`` (B, C) against ``labels`` (B,), plus
    ``rate_regularisation * sum over samples and populations of mean(spikes)**2`` when asked.

    The sum keeps every sample's gradient independent of the batch it shares; the caller scales by
    ``1 / global batch`` exactly in the engine.
    """
    loss = torch.nn.functional.cross_entropy(scores, labels, reduction="sum")
    if rate_regularisation and spikes:
        for z in spikes.values():
            per_sample = z.mean(dim=(0, 2))  # (B,) firing probability per step and neuron
            loss = loss + rate_regularisation * (per_sample**2).sum()
    return loss


def bptt_contribute(engine, network, result, projections: list[str], scale: float,
                    spiking_sources: set[str]) -> None:
    """Hand the engine ``scale * sum_{t,b} delta^T pre`` for each projection (after ``backward``).

    Args:
        engine: the :class:`~neuro.engine.UpdateEngine` holding the network's weights.
        network: the :class:`~neuro.sim.network.Network` that produced ``result`` with ``track=True``.
        projections: names of the projections trained by this rule.
        scale: factor of every product, e.g. ``-1 / global_batch`` (a weight change is minus the
            gradient); rounded to the engine's format, so prefer powers of two.
        spiking_sources: projections whose presynaptic activity is 0/1 spikes (passed as bool, the
            quire's exact spike path).
    """
    for name in projections:
        currents = result.currents.get(name)
        if isinstance(currents, torch.Tensor):  # (T, B, M) on the network's fast path
            delta = currents.grad
        elif currents and all(c.grad is not None for c in currents):  # T tensors (B, M)
            delta = torch.stack([c.grad for c in currents])
        else:
            delta = None
        if delta is None:
            raise ValueError(f"bptt: projection {name} has no error signal; call loss.backward() on a "
                             "run made with track=True first")
        pre = result.pre[name]  # (T, B, N)
        weight = network.weights[name]
        post2 = delta.reshape(-1, delta.shape[-1])
        pre2 = pre.reshape(-1, pre.shape[-1])
        if name in spiking_sources:
            pre2 = pre2 > 0
        if weight.dim() == 1:  # one_to_one: elementwise products, exact for spike inputs
            engine.accumulate(weight, (post2 * pre2.to(post2.dtype)) * scale)
        else:
            engine.accumulate_outer(weight, post2, pre2, scale)


#: Tensors of ``(B, n)`` that autograd keeps per population and time step (measured: 4.0).
SAVED_PER_NEURON_STEP = 4


def plan_terms(graph, *, batch: int, steps: int, mode: str, segment: int | None, dtype_bytes: int):
    """Memory-plan terms of BPTT (bytes): the activations autograd keeps, all ``T`` steps
    (``mode="bptt"``) or one checkpoint segment plus the states at segment boundaries
    (``"bptt_checkpoint"``, ``ceil(T / S) x 3 B n d``).  Returns ``(components, notes)``."""
    neurons = sum(p.size for p in graph.populations.values() if p.type != "input")
    per_step = SAVED_PER_NEURON_STEP * batch * neurons * dtype_bytes
    if mode == "bptt":
        return {"saved_activations": steps * per_step}, []
    boundaries = math.ceil(steps / segment) * 3 * batch * neurons * dtype_bytes
    return {"saved_activations": min(segment, steps) * per_step + boundaries}, []


register(Rule("bptt", "surrogate-gradient backpropagation through time", "loss", mode="bptt",
              plan=plan_terms))
