"""Weight normalisation for unsupervised STDP networks (Diehl & Cook 2015 style): each postsynaptic
neuron's incoming weights are rescaled to a fixed sum (or Euclidean norm).  The rescaled weights
reach the engine as a contribution ``target - w`` (the engine then rounds once and clamps), never by
writing the weight.  (Adaptive thresholds are the AdaptiveLIF neuron of :mod:`neuro.neurons`;
lateral inhibition is a fixed recurrent projection on the target population.)

Shapes: weights ``(M, N)`` (post, pre).
"""

from __future__ import annotations

import torch

__all__ = ["normalised_weights", "normalisation_contribute"]


def normalised_weights(w: torch.Tensor, total: float, norm: str = "sum", eps: float = 1e-12) -> torch.Tensor:
    """``w`` with every row (incoming weights of one postsynaptic neuron) rescaled so that its
    ``norm`` equals ``total`` (float64; rows of norm 0 are left unchanged).

    ``norm="sum"``: the sum of the row (Diehl & Cook 2015); ``"euclidean"``: its L2 norm, so that a
    neuron's drive ``w . x`` is ``total |x| cos(w, x)`` and the competition ranks by direction."""
    w64 = w.detach().to(torch.float64)
    if norm == "sum":
        s = w64.sum(-1, keepdim=True)
    elif norm == "euclidean":
        s = w64.norm(dim=-1, keepdim=True)
    else:
        raise ValueError(f"normalised_weights: norm must be 'sum' or 'euclidean', got {norm!r}")
    return torch.where(s.abs() > eps, w64 * (total / s.clamp(min=eps)), w64)


def normalisation_contribute(engine, weight: torch.Tensor, total: float, norm: str = "sum") -> None:
    """Hand ``normalised_weights(w, total, norm) - w`` to ``engine`` (call ``engine.step()`` after)."""
    engine.accumulate(weight, normalised_weights(weight, total, norm) - weight.detach().to(torch.float64))
