"""Homeostasis for unsupervised STDP networks (Diehl & Cook 2015 style).

* Adaptive thresholds: ``theta <- exp(-dt/tau_theta) theta + theta_plus z`` per neuron; the
  neuron fires when ``v > v_th + theta``.  Pure step function on NamedTuples.
* Weight normalisation: each postsynaptic neuron's incoming weights are rescaled to a fixed sum
  (or Euclidean norm).
  The rescaled weights reach the engine as a contribution ``target - w`` (the engine then rounds
  once and clamps), never by writing the weight.
* Lateral inhibition (winner-take-all): every spike inhibits the *other* neurons of the layer by a
  fixed current, the effect of Diehl & Cook's 1:1 inhibitory population without simulating it.

Shapes: spikes and thresholds ``(B, M)``; weights ``(M, N)`` (post, pre).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "AdaptiveThresholdParameters",
    "adaptive_threshold_step",
    "normalised_weights",
    "normalisation_contribute",
    "lateral_inhibition",
]


class AdaptiveThresholdParameters(NamedTuple):
    """``theta_plus``: threshold increase per spike (potential units); ``tau_theta``: decay (s)."""

    theta_plus: float = 0.05
    tau_theta: float = 1e4


def adaptive_threshold_step(
    z: torch.Tensor, theta: torch.Tensor, p: AdaptiveThresholdParameters, dt: float
) -> torch.Tensor:
    """New thresholds ``exp(-dt/tau_theta) * theta + theta_plus * z`` (``(B, M)``)."""
    return theta * math.exp(-dt / p.tau_theta) + p.theta_plus * z.to(theta.dtype)


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


def lateral_inhibition(z: torch.Tensor, strength: float, include_self: bool = False) -> torch.Tensor:
    """Inhibitory current ``-strength * (number of spikes of the other neurons)`` (``(B, M)``).

    Args:
        z: ``(B, M)`` spikes of the layer (previous step).
        strength: current jump per inhibiting spike (>= 0, potential units).
        include_self: also inhibit the spiking neuron itself.
    """
    zf = z.to(torch.float64) if not z.dtype.is_floating_point else z
    total = zf.sum(-1, keepdim=True)
    return -strength * (total.expand_as(zf) if include_self else total - zf)
