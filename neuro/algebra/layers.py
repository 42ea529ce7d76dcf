"""Equivariant layers on multivector features.

``GradeLinear`` is the linear map of CGENN / GATr: it mixes channels separately in every grade,
with one real weight per (output channel, input channel, grade). Because versors (rotors, motors)
act on each grade separately and linearly, ``layer(R x R~) == R layer(x) R~`` for every rotor
``R`` of the algebra.

Feeding a Norse population: a spiking layer wants one real input current per neuron. The grade-0
part of each output channel is invariant under rotors, so ``GradeLinear.scalar_current(y)``
(shape ``(..., out_features)``) can be fed directly as the input current of ``out_features``
neurons, e.g. ``LIFCell()(layer.scalar_current(layer(x)), state)`` with ``x`` of shape
``(batch, in_features, 2**n)``; time-major inputs ``(time, batch, in_features, 2**n)`` work the
same because every leading axis is a batch axis.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from neuro.algebra.clifford import Algebra

__all__ = ["GradeLinear"]


class GradeLinear(nn.Module):
    """Grade-wise equivariant linear map ``y[..., o, :] = sum_i sum_k w[o, i, k] <x[..., i, :]>_k``.

    Args:
        algebra: the Clifford algebra of the features (``dim = 2**n`` coefficients).
        in_features: number of input multivector channels.
        out_features: number of output multivector channels.
        grades: the grades the weight may act on (default: all, ``0 .. n``). Input components
            of other grades are dropped, so the output only holds these grades.
        bias: add a learnable grade-0 bias per output channel (rotor-invariant, so the layer
            stays equivariant). Requires grade 0 in ``grades``.

    Parameters:
        weight: ``(out_features, in_features, len(grades))``; ``weight[o, i, g]`` scales grade
            ``grades[g]``.
        bias: ``(out_features,)`` or ``None``.

    Shapes:
        input ``(..., in_features, 2**n)`` -> output ``(..., out_features, 2**n)``.
    """

    def __init__(
        self,
        algebra: Algebra,
        in_features: int,
        out_features: int,
        grades: Iterable[int] | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(algebra, Algebra):
            raise TypeError(f"GradeLinear: algebra must be an Algebra, got {type(algebra)!r}")
        if in_features < 1 or out_features < 1:
            raise ValueError(
                "GradeLinear: in_features and out_features must be >= 1, "
                f"got {in_features} and {out_features}"
            )
        chosen = list(range(algebra.n + 1)) if grades is None else sorted(set(grades))
        if not chosen or any(not isinstance(k, int) or not 0 <= k <= algebra.n for k in chosen):
            raise ValueError(
                f"GradeLinear: grades must be a non-empty set of ints in [0, {algebra.n}] for "
                f"{algebra!r}, got {grades!r}"
            )
        if bias and 0 not in chosen:
            raise ValueError("GradeLinear: bias=True needs grade 0 in grades")
        self.algebra = algebra
        self.in_features = in_features
        self.out_features = out_features
        self.grades: tuple[int, ...] = tuple(chosen)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, len(chosen)))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        # For every blade, the column of `weight` it uses, or len(chosen) (a zero column).
        column = torch.full((algebra.dim,), len(chosen), dtype=torch.long)
        for g, k in enumerate(chosen):
            column[algebra.grades == k] = g
        self.register_buffer("blade_column", column, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights ~ U(-1/sqrt(in), 1/sqrt(in)) (as ``nn.Linear``), bias zero."""
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def blade_weight(self) -> torch.Tensor:
        """The weight expanded per blade: ``(out_features, in_features, 2**n)``; the columns of
        grades outside ``grades`` are zero."""
        padded = torch.cat([self.weight, self.weight.new_zeros(*self.weight.shape[:2], 1)], -1)
        return padded[..., self.blade_column]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features, 2**n) -> (..., out_features, 2**n)``."""
        expected = (self.in_features, self.algebra.dim)
        if x.ndim < 2 or tuple(x.shape[-2:]) != expected:
            raise ValueError(
                f"GradeLinear: expected input of shape (..., {expected[0]}, {expected[1]}) "
                f"(in_features, 2**{self.algebra.n}), got shape {tuple(x.shape)}"
            )
        w = self.blade_weight().to(x.dtype)
        y = torch.einsum("...ib,oib->...ob", x, w)
        if self.bias is not None:
            y = y.clone()
            y[..., 0] = y[..., 0] + self.bias.to(x.dtype)
        return y

    def scalar_current(self, y: torch.Tensor) -> torch.Tensor:
        """Grade-0 (rotor-invariant) part per output channel, the input current of a spiking
        population: ``(..., out_features, 2**n) -> (..., out_features)``."""
        expected = (self.out_features, self.algebra.dim)
        if y.ndim < 2 or tuple(y.shape[-2:]) != expected:
            raise ValueError(
                f"GradeLinear.scalar_current: expected shape (..., {expected[0]}, {expected[1]}), "
                f"got shape {tuple(y.shape)}"
            )
        return y[..., 0]

    def extra_repr(self) -> str:
        return (
            f"{self.algebra!r}, in_features={self.in_features}, "
            f"out_features={self.out_features}, grades={self.grades}, "
            f"bias={self.bias is not None}"
        )
