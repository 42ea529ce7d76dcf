"""The spike non-linearity and its one surrogate family.

Forward: the Heaviside step ``H(x) = [x > 0]`` (strict, as Norse's ``heaviside``), with ``x`` the
membrane's distance above threshold (dimensionless).  Backward: ``dH/dx`` is replaced by a
pseudo-derivative ``psi(x)`` of peak 1 at ``x = 0`` whose width is set by ``scale`` (per unit of
membrane potential):

* ``superspike`` (Zenke & Ganguli 2018): ``1 / (scale |x| + 1)^2``
* ``sigmoid``: ``4 sigmoid(scale x) (1 - sigmoid(scale x))``, the derivative of ``sigmoid(scale x)``
  normalised to peak 1
* ``triangle``: ``max(0, 1 - scale |x|)``
* ``arctan``: ``1 / (1 + (pi scale x)^2)``

:func:`surrogate_derivative` is the one place these formulas are written: the autograd backward of
:func:`spike_fn` calls it, and online rules (e-prop, OTTT) use it as their ``psi``.  Unlike Norse
1.1.0's ``super`` surrogate, the scale is honoured (Norse ignores ``alpha`` there, and its default
alpha=100 makes the other surrogates explode).
"""

from __future__ import annotations

import math

import torch

__all__ = ["SURROGATES", "heaviside", "surrogate_derivative", "spike_fn", "SpikeFunction"]

#: Surrogate derivatives of the spike threshold, by name.
SURROGATES: tuple[str, ...] = ("superspike", "sigmoid", "triangle", "arctan")


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """Spikes ``x > 0`` as a bool tensor of ``x``'s shape (strict threshold, Norse's)."""
    return x > 0


def surrogate_derivative(x: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    """The pseudo-derivative ``psi(x)`` of the surrogate ``kind`` with steepness ``scale``
    (``x``: distance above threshold, any shape; returns a tensor of the same shape and dtype)."""
    s = float(scale)
    if kind == "superspike":
        return 1.0 / (s * x.abs() + 1.0) ** 2
    if kind == "sigmoid":
        sig = torch.sigmoid(s * x)
        return 4.0 * sig * (1.0 - sig)
    if kind == "triangle":
        return (1.0 - s * x.abs()).clamp(min=0.0)
    if kind == "arctan":
        return 1.0 / (1.0 + (math.pi * s * x) ** 2)
    raise ValueError(f"surrogate_derivative: unknown surrogate {kind!r}; choose one of {SURROGATES}")


class SpikeFunction(torch.autograd.Function):
    """``H(x)`` forward as ``x.dtype`` (0/1); backward ``grad * surrogate_derivative(x, kind, scale)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kind, ctx.scale = kind, scale
        return heaviside(x).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * surrogate_derivative(x, ctx.kind, ctx.scale), None, None


def spike_fn(x: torch.Tensor, kind: str = "superspike", scale: float = 10.0) -> torch.Tensor:
    """Spikes ``H(x)`` (0/1 in ``x.dtype``) with the surrogate gradient ``kind`` of steepness ``scale``."""
    if kind not in SURROGATES:
        raise ValueError(f"spike_fn: unknown surrogate {kind!r}; choose one of {SURROGATES}")
    return SpikeFunction.apply(x, kind, float(scale))
