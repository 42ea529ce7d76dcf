"""Parameter types: what a trainable tensor may hold, and in which number format it is stored.

A :class:`ParamType` says

* ``algebra``: the Clifford algebra of the values (``None``: plain real numbers). A multivector-valued
  parameter has a trailing axis of ``2**n`` coefficients in the algebra's blade order; a plain
  parameter has none. ``Algebra(0)`` (Cl(0), one blade) is the same thing as a plain scalar with a
  trailing axis of size 1, and the engine treats both identically.
* ``grades``: the grades the values may hold; every other coefficient is exactly 0 after each update.
* ``constraint``: ``None``; ``"rotor"`` (each multivector is a unit element of the even
  subalgebra, ``R R~ = 1``); :class:`Bounds` ``(lo, hi)`` (every coefficient clamped, e.g. weight
  bounds); :class:`Sign` (Dale's law: ``"excitatory"`` values are >= 0, ``"inhibitory"`` <= 0).
* ``storage``: the number format of the stored values: ``"float32"``, ``"float64"`` or a
  :class:`~neuro.numerics.PositFormat` (``None``: the format of the parameter's engine group).

Plain SNN weights are the trivial case ``ParamType()``: scalars, grade 0, float32 storage chosen by
the engine group's format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from neuro.algebra import Algebra
from neuro.numerics.formats import Storage, resolve_storage, storage_from_json, storage_name, storage_to_json

__all__ = ["Bounds", "Sign", "ParamType"]


@dataclass(frozen=True)
class Bounds:
    """Clamp every stored coefficient to ``[lo, hi]`` (same unit as the parameter).

    If ``lo``/``hi`` are not values of the storage format, the clamp uses the nearest format values
    *inside* the interval, so bounds are never violated by rounding.
    """

    lo: float
    hi: float

    def __post_init__(self) -> None:
        lo, hi = float(self.lo), float(self.hi)
        if not (math.isfinite(lo) or lo == -math.inf) or not (math.isfinite(hi) or hi == math.inf):
            raise ValueError(f"Bounds: lo and hi must be numbers (lo may be -inf, hi +inf), got {self}")
        if not lo <= hi:
            raise ValueError(f"Bounds: need lo <= hi, got lo={lo}, hi={hi}")


@dataclass(frozen=True)
class Sign:
    """Dale's law: ``"excitatory"`` parameters stay >= 0, ``"inhibitory"`` ones <= 0."""

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ("excitatory", "inhibitory"):
            raise ValueError(f"Sign: kind must be 'excitatory' or 'inhibitory', got {self.kind!r}")


class ParamType:
    """The declared type of a trainable parameter (see the module docstring).

    Args:
        algebra: Clifford algebra of the values, or ``None`` for plain reals.
        grades: grades the values may hold (default ``(0,)``; for ``constraint="rotor"`` the default
            is every even grade). Plain reals only hold grade 0.
        constraint: ``None``, ``"rotor"``, a :class:`Bounds` or a :class:`Sign`.
        storage: ``"float32"``, ``"float64"``, ``torch.float32``, a PositFormat, a format name
            (``"posit16"``) or ``None`` (use the engine group's format).
    """

    def __init__(
        self,
        algebra: Algebra | None = None,
        grades: tuple[int, ...] | list[int] | None = None,
        constraint: str | Bounds | Sign | None = None,
        storage: Any = None,
    ) -> None:
        if algebra is not None and not isinstance(algebra, Algebra):
            raise ValueError(f"ParamType: algebra must be an Algebra or None, got {type(algebra).__name__}")
        self.algebra = algebra
        n = 0 if algebra is None else algebra.n
        if constraint is not None and constraint != "rotor" and not isinstance(constraint, Bounds | Sign):
            raise ValueError(
                "ParamType: constraint must be None, 'rotor', Bounds(lo, hi) or Sign(kind), "
                f"got {constraint!r}"
            )
        if constraint == "rotor" and algebra is None:
            raise ValueError("ParamType: constraint='rotor' needs an algebra (e.g. Algebra(3))")
        if grades is None:
            grades = tuple(range(0, n + 1, 2)) if constraint == "rotor" else (0,)
        grades = tuple(sorted(set(int(g) for g in grades)))
        if not grades or any(g < 0 or g > n for g in grades):
            raise ValueError(f"ParamType: grades must be a non-empty subset of 0..{n}, got {grades}")
        if constraint == "rotor":
            if 0 not in grades or any(g % 2 for g in grades):
                raise ValueError(
                    f"ParamType: a rotor holds even grades including 0 (e.g. (0, 2)), got grades {grades}"
                )
        self.grades: tuple[int, ...] = grades
        self.constraint = constraint
        self.storage: Storage | None = resolve_storage(storage)
        self.dim = 1 if algebra is None else algebra.dim
        if algebra is None:
            self.mask = torch.ones(1, dtype=torch.bool)
            self.blade_grades = torch.zeros(1, dtype=torch.long)
        else:
            self.mask = algebra.grade_mask(list(grades))
            self.blade_grades = algebra.grades.clone()
        self.full = bool(self.mask.all())

    # ------------------------------------------------------------------ helpers
    @property
    def is_multivector(self) -> bool:
        """True when values carry a trailing axis of ``2**n`` coefficients (``algebra`` given)."""
        return self.algebra is not None

    def value_view(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` viewed as ``(..., dim)`` coefficients (a plain tensor gets a trailing axis of 1)."""
        return x.unsqueeze(-1) if self.algebra is None else x

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Zero the coefficients outside ``grades`` (exactly); ``x`` is ``(..., dim)``."""
        if self.full:
            return x
        return torch.where(self.mask.to(x.device), x, torch.zeros((), dtype=x.dtype, device=x.device))

    def check_shape(self, x: torch.Tensor, name: str) -> None:
        """Raise ValueError if a multivector parameter's trailing axis is not ``2**n``."""
        if self.algebra is not None and (x.dim() == 0 or x.shape[-1] != self.dim):
            raise ValueError(
                f"{name}: a parameter of type {self} must have a trailing axis of {self.dim} "
                f"(2**{self.algebra.n}) coefficients, got shape {tuple(x.shape)}"
            )

    def to_json(self) -> dict:
        """JSON-able description (inverse: :meth:`from_json`)."""
        alg = None if self.algebra is None else [self.algebra.p, self.algebra.q, self.algebra.r]
        c = self.constraint
        if isinstance(c, Bounds):
            cj: Any = {"bounds": [float(c.lo), float(c.hi)]}
        elif isinstance(c, Sign):
            cj = {"sign": c.kind}
        else:
            cj = c
        return {"algebra": alg, "grades": list(self.grades), "constraint": cj,
                "storage": storage_to_json(self.storage)}

    @classmethod
    def from_json(cls, obj: dict) -> ParamType:
        alg = None if obj["algebra"] is None else Algebra(*obj["algebra"])
        c = obj["constraint"]
        if isinstance(c, dict):
            c = Bounds(*c["bounds"]) if "bounds" in c else Sign(c["sign"])
        return cls(alg, obj["grades"], c, storage_from_json(obj["storage"]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamType) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(repr(self.to_json()))

    def __repr__(self) -> str:
        alg = "R" if self.algebra is None else f"Cl{self.algebra.p, self.algebra.q, self.algebra.r}"
        st = "group format" if self.storage is None else storage_name(self.storage)
        return f"ParamType({alg}, grades={self.grades}, constraint={self.constraint!r}, storage={st})"
