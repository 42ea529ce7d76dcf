"""Clifford algebras Cl(p, q, r) over torch tensors.

A multivector of an algebra with ``n = p + q + r`` basis vectors is a tensor of shape
``(..., 2**n)``: the last axis holds one real coefficient per basis blade, every leading axis is a
batch axis. Every operation broadcasts over the leading axes and works for any floating dtype
(float32, float64, ...) on any device; the precomputed tables are built once per algebra on the
CPU and copied lazily to each (device, dtype) pair that asks for them.

Basis vectors
    ``e1 .. en`` (stored 0-based: blade index tuples use ``0 .. n-1``). ``e_i**2 = +1`` for the
    first ``p`` vectors, ``-1`` for the next ``q`` and ``0`` for the last ``r`` (the degenerate,
    "projective" directions). So ``Algebra(3, 0, 1)`` is 3D projective geometric algebra with the
    null vector ``e4`` *last* (some libraries, e.g. kingdon, put it first as ``e0``).

Blade order
    Sorted by grade, then lexicographically by the (increasing) basis indices. For n = 3::

        index:  0   1    2    3    4     5     6     7
        blade:  1   e1   e2   e3   e12   e13   e23   e123

    ``Algebra.blades`` lists the index tuples in this order (``()``, ``(0,)``, ``(1,)``, ...,
    ``(0, 1)``, ...), ``Algebra.blade_names`` the 1-based names (``"1"``, ``"e1"``, ``"e12"``).
    A blade is the product of its basis vectors in increasing order (``e12 = e1 e2``).

Products
    The geometric product of two basis blades is a signed basis blade (the sign collects the
    swaps needed to sort the concatenated indices and the squares of repeated vectors; it is 0
    when a null vector repeats). That table is built once as an index + sign pair of shape
    ``(dim, dim)``: for output blade ``k`` and right blade ``j`` the only left blade that
    contributes is ``i = k XOR j`` (XOR of the blade bit masks). ``gp(a, b)`` therefore builds the
    left-multiplication matrix ``L(a)[..., k, j] = a[..., i(k, j)] * sign(i(k, j), j)`` by a gather
    and multiplies it with ``b``: O(dim**2) work and memory per product, no (dim, dim, dim) tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import combinations

import torch

__all__ = ["Algebra"]

GradeSpec = int | Iterable[int]


def _reorder_sign(a: int, b: int) -> int:
    """Sign of moving the basis vectors of bit mask ``b`` past those of ``a`` (canonical order)."""
    a >>= 1
    swaps = 0
    while a:
        swaps += bin(a & b).count("1")
        a >>= 1
    return -1 if swaps & 1 else 1


def _sqrt0(z: torch.Tensor) -> torch.Tensor:
    """Complex square root whose gradient at exactly 0 is taken as 0 instead of infinity.

    Every place that takes such a root feeds an even function of it, and where its argument is
    exactly 0 the argument is stationary (or identically 0, e.g. null directions), so the true
    derivative of the final result through this root is 0 there.
    """
    zero = z == 0
    return torch.where(zero, torch.zeros_like(z), torch.sqrt(torch.where(zero, 1, z)))


def _shc(x: torch.Tensor) -> torch.Tensor:
    """sinh(x) / x for real or complex ``x``, with its Taylor series near 0."""
    small = x.abs() < 0.05
    safe = torch.where(small, torch.ones_like(x), x)
    x2 = x * x
    series = 1 + x2 / 6 * (1 + x2 / 20 * (1 + x2 / 42 * (1 + x2 / 72)))
    return torch.where(small, series, torch.sinh(safe) / safe)


class Algebra:
    """The Clifford algebra Cl(p, q, r) acting on ``(..., 2**n)`` coefficient tensors.

    Args:
        p: number of basis vectors squaring to +1 (they come first).
        q: number of basis vectors squaring to -1 (next).
        r: number of basis vectors squaring to 0 (last).

    Attributes:
        n: number of basis vectors ``p + q + r``.
        dim: number of blades ``2**n`` (size of a multivector's last axis).
        signature: tuple of the squares of ``e1 .. en`` (+1, -1 or 0).
        blades: blade index tuples (0-based basis indices) in storage order.
        blade_names: ``"1"``, ``"e1"``, ..., ``"e12"``, ... (1-based) in storage order.
        grades: LongTensor ``(dim,)``, the grade of each blade.
    """

    def __init__(self, p: int, q: int = 0, r: int = 0) -> None:
        for name, value in (("p", p), ("q", q), ("r", r)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Algebra: {name} must be a non-negative int, got {value!r}")
        n = p + q + r
        if n > 10:
            raise ValueError(f"Algebra: at most 10 basis vectors are supported, got p+q+r = {n}")
        self.p, self.q, self.r, self.n = p, q, r, n
        self.dim = 2**n
        self.signature: tuple[int, ...] = (1,) * p + (-1,) * q + (0,) * r

        blades = [c for k in range(n + 1) for c in combinations(range(n), k)]
        self.blades: list[tuple[int, ...]] = blades
        sep = "" if n < 10 else "_"
        self.blade_names: list[str] = [
            "1" if not b else "e" + sep.join(str(i + 1) for i in b) for b in blades
        ]
        self.grades: torch.Tensor = torch.tensor([len(b) for b in blades], dtype=torch.long)
        masks = [sum(1 << i for i in b) for b in blades]
        position = {m: idx for idx, m in enumerate(masks)}

        # Signed Cayley table in "index + sign" form, one entry per (output k, right factor j).
        left = torch.empty(self.dim, self.dim, dtype=torch.long)
        gp_sign = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        op_sign = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        lc_sign = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        for k, mk in enumerate(masks):
            for j, mj in enumerate(masks):
                mi = mk ^ mj
                i = position[mi]
                left[k, j] = i
                sign = _reorder_sign(mi, mj)
                common = mi & mj
                for v in range(n):
                    if common >> v & 1:
                        sign *= self.signature[v]
                gp_sign[k, j] = sign
                if common == 0:
                    op_sign[k, j] = sign
                if mi & mj == mi:  # left blade inside the right one: grade l - k
                    lc_sign[k, j] = sign
        self._left_index = left
        self._signs = {"gp": gp_sign, "op": op_sign, "lc": lc_sign}
        g = self.grades
        self._reverse_sign = torch.where((g * (g - 1) // 2) % 2 == 1, -1.0, 1.0).double()
        self._involute_sign = torch.where(g % 2 == 1, -1.0, 1.0).double()
        self._cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        return f"Algebra(p={self.p}, q={self.q}, r={self.r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Algebra) and (self.p, self.q, self.r) == (
            other.p,
            other.q,
            other.r,
        )

    def __hash__(self) -> int:
        return hash(("Algebra", self.p, self.q, self.r))

    def _table(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.device, like.dtype)
        table = self._cache.get(key)
        if table is None:
            if name == "index":
                table = self._left_index.to(like.device)
            elif name == "reverse":
                table = self._reverse_sign.to(device=like.device, dtype=like.dtype)
            elif name == "involute":
                table = self._involute_sign.to(device=like.device, dtype=like.dtype)
            else:
                table = self._signs[name].to(device=like.device, dtype=like.dtype)
            self._cache[key] = table
        return table

    def check(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Validate that ``x`` is a floating tensor of shape ``(..., dim)``; return it.

        Raises:
            ValueError: if the last dimension is not ``2**n`` (message names both shapes).
            TypeError: if ``x`` is not a floating-point tensor.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self!r}: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{self!r}: {name} must have shape (..., {self.dim}) (2**{self.n} blades), "
                f"got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{self!r}: {name} must be a floating-point tensor, got {x.dtype}")
        return x

    def _grade_set(self, k: GradeSpec) -> list[int]:
        ks = [k] if isinstance(k, int) else list(k)
        for g in ks:
            if not isinstance(g, int) or not 0 <= g <= self.n:
                raise ValueError(f"{self!r}: grades must be ints in [0, {self.n}], got {k!r}")
        return ks

    def grade_mask(self, k: GradeSpec) -> torch.Tensor:
        """Bool tensor ``(dim,)``: True on the blades whose grade is ``k`` (or in ``k``)."""
        ks = self._grade_set(k)
        return torch.isin(self.grades, torch.tensor(ks, dtype=torch.long))

    def grade_indices(self, k: GradeSpec) -> torch.Tensor:
        """LongTensor of the storage positions of the blades of grade ``k`` (or in ``k``)."""
        return torch.nonzero(self.grade_mask(k)).flatten()

    def from_grade(self, values: torch.Tensor, k: int) -> torch.Tensor:
        """Embed grade-``k`` coefficients ``(..., comb(n, k))`` into multivectors ``(..., dim)``.

        The coefficients are in storage order of the grade-``k`` blades (e.g. for vectors
        ``e1 .. en``; for bivectors of n = 3 ``e12, e13, e23``).
        """
        idx = self.grade_indices(k)
        if values.ndim == 0 or values.shape[-1] != idx.numel():
            raise ValueError(
                f"{self!r}: grade-{k} values must have shape (..., {idx.numel()}), "
                f"got shape {tuple(values.shape)}"
            )
        out = values.new_zeros(*values.shape[:-1], self.dim)
        out[..., idx.to(values.device)] = values
        return out

    def components(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The grade-``k`` coefficients of ``x``: ``(..., dim) -> (..., comb(n, k))``."""
        self.check(x)
        return x[..., self.grade_indices(k).to(x.device)]

    def scalar(self, x: torch.Tensor) -> torch.Tensor:
        """Grade-0 coefficient: ``(..., dim) -> (...)``."""
        return self.check(x)[..., 0]

    def pseudoscalar(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """The unit pseudoscalar ``e1 e2 ... en`` as a ``(dim,)`` multivector."""
        out = torch.zeros(self.dim, dtype=dtype, device=device)
        out[-1] = 1
        return out

    # ---------------------------------------------------------------- products
    def _product(self, name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.check(a, "a")
        self.check(b, "b")
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
        index = self._table("index", a)
        sign = self._table(name, a)
        left = a[..., index] * sign  # (..., dim, dim): L(a)[k, j]
        return torch.matmul(left, b.unsqueeze(-1)).squeeze(-1)

    def gp(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Geometric product ``a b``. ``(..., dim) x (..., dim) -> (broadcast(...), dim)``."""
        return self._product("gp", a, b)

    def outer(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Outer (wedge) product ``a ^ b``: blade pairs with no common basis vector."""
        return self._product("op", a, b)

    def inner(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Left contraction ``a _| b``: grade ``l - k`` part of the product of a grade-k blade
        of ``a`` with a grade-l blade of ``b`` (zero when k > l)."""
        return self._product("lc", a, b)

    def sandwich(self, R: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``R x R~`` (the action of a rotor/versor ``R`` on ``x``); shapes broadcast."""
        return self.gp(self.gp(R, x), self.reverse(R))

    # ------------------------------------------------------------- involutions
    def grade(self, x: torch.Tensor, k: GradeSpec) -> torch.Tensor:
        """Grade projection ``<x>_k`` (``k`` an int or an iterable of ints); same shape."""
        self.check(x)
        return x * self.grade_mask(k).to(device=x.device, dtype=x.dtype)

    def reverse(self, x: torch.Tensor) -> torch.Tensor:
        """Reversion ``x~``: grade k is multiplied by ``(-1)**(k (k-1) / 2)``; same shape."""
        return self.check(x) * self._table("reverse", x)

    def involute(self, x: torch.Tensor) -> torch.Tensor:
        """Grade involution: grade k is multiplied by ``(-1)**k``; same shape."""
        return self.check(x) * self._table("involute", x)

    def conjugate(self, x: torch.Tensor) -> torch.Tensor:
        """Clifford conjugate (reverse of the grade involution); same shape."""
        return self.reverse(self.involute(x))

    # ------------------------------------------------------------------- norms
    def norm_sq(self, x: torch.Tensor) -> torch.Tensor:
        """Signed squared norm ``<x x~>_0``: ``(..., dim) -> (...)``.

        Computed directly as ``sum_b x_b**2 * <b b~>_0`` (no full product).
        """
        self.check(x)
        # gp table row k = 0, column j = b holds the sign of b b; times the reversion sign of b.
        sign = self._table("gp", x)[0] * self._table("reverse", x)
        return (x * x * sign).sum(-1)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """``sqrt(|<x x~>_0|)``: ``(..., dim) -> (...)``."""
        return self.norm_sq(x).abs().sqrt()

    # ---------------------------------------------------------------- rotors
    def exp(self, B: torch.Tensor) -> torch.Tensor:
        """Exponential of a bivector ``B`` (only its grade-2 part is used): ``(..., dim)``.

        What is computed:

        * ``n <= 5`` (every bivector, simple or not, any signature, degenerate included): an exact
          closed form. ``B**2 = s + 2 W`` with the scalar ``s = <B**2>_0`` and the 4-vector
          ``W = <B**2>_4 / 2``; ``W`` commutes with ``B`` and (for n <= 5) ``W**2 = w`` is a
          scalar. Let ``l1, l2`` be the roots of ``x**2 - s x + w`` (the squares of the two
          commuting simple parts of the invariant decomposition of Roelfs & De Keninck) and
          ``a_i = sqrt(l_i)`` (complex where needed). Evaluating the even and odd exponential
          series in the commutative ring spanned by ``1, W`` gives::

              exp(B) = cosh(a1) cosh(a2) + shc(a1) shc(a2) W
                       + (A + G W) B,
              A = (shc(a1 + a2) + shc(a1 - a2)) / 2,
              G = (cosh(a1) shc(a2) - shc(a1) cosh(a2)) / (l1 - l2)
                = (shc(a1 + a2) - shc(a1 - a2)) / (2 a1 a2),

          with ``shc(x) = sinh(x) / x``. ``G`` uses the first form when ``l1, l2`` are well
          separated, the second when they are close, and a bivariate Taylor series when both
          are small, so no case divides by ~0. For a simple bivector (``W = 0``) this is
          ``cos(|B|) + sin(|B|) B/|B|`` (``B**2 < 0``), ``cosh``/``sinh`` (``B**2 > 0``) or
          ``1 + B`` (``B**2 = 0``).
        * ``n >= 6``: entries whose ``B**2`` is a scalar (simple bivectors, up to rounding) use
          the closed form above with ``W = 0``; if any entry is not simple, the whole batch is
          also computed by scaling and squaring: ``B / 2**m`` with an l1 coefficient norm
          <= 1/2, a 24-term Taylor series, then ``m`` squarings (float64-accurate), and the
          non-simple entries take that value.
        """
        self.check(B, "B")
        B = self.grade(B, 2)
        if self.n < 2:
            return B + self._one(B)
        B2 = self.gp(B, B)
        s = B2[..., 0]
        if self.n <= 3:
            return self._exp_closed(B, s, torch.zeros_like(B), torch.zeros_like(s))
        if self.n <= 5:
            W = self.grade(B2, 4) / 2
            return self._exp_closed(B, s, W, self.gp(W, W)[..., 0])
        W0 = torch.zeros_like(B)
        closed = self._exp_closed(B, s, W0, torch.zeros_like(s))
        rest = B2.clone()
        rest[..., 0] = 0
        scale = B.abs().sum(-1) ** 2
        nonsimple = rest.abs().amax(-1) > 1e-12 * scale.clamp_min(1e-300)
        if not bool(nonsimple.any()):
            return closed
        series = self._exp_taylor_scaled(B)
        return torch.where(nonsimple.unsqueeze(-1), series, closed)

    def _one(self, like: torch.Tensor) -> torch.Tensor:
        one = torch.zeros_like(like)
        one[..., 0] = 1
        return one

    def _exp_closed(
        self, B: torch.Tensor, s: torch.Tensor, W: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        cdtype = torch.complex128 if B.dtype == torch.float64 else torch.complex64
        sc, wc = s.to(cdtype), w.to(cdtype)
        root = _sqrt0(sc * sc - 4 * wc)
        r1, r2 = (sc + root) / 2, (sc - root) / 2
        big = torch.where(r1.abs() >= r2.abs(), r1, r2)
        big_safe = torch.where(big == 0, torch.ones_like(big), big)
        small = torch.where(big == 0, torch.zeros_like(big), wc / big_safe)
        l1, l2 = big, small
        a1, a2 = _sqrt0(l1), _sqrt0(l2)
        ch1, ch2 = torch.cosh(a1), torch.cosh(a2)
        sh1, sh2 = _shc(a1), _shc(a2)
        A = (_shc(a1 + a2) + _shc(a1 - a2)) / 2
        G = self._g(l1, l2, a1, a2, ch1, ch2, sh1, sh2)
        real = B.dtype
        c0 = (ch1 * ch2).real.to(real)
        cW = (sh1 * sh2).real.to(real)
        cB = A.real.to(real)
        cWB = G.real.to(real)
        WB = self.gp(W, B)
        out = cW[..., None] * W + cB[..., None] * B + cWB[..., None] * WB
        out[..., 0] = out[..., 0] + c0
        return out

    @staticmethod
    def _g(
        l1: torch.Tensor,
        l2: torch.Tensor,
        a1: torch.Tensor,
        a2: torch.Tensor,
        ch1: torch.Tensor,
        ch2: torch.Tensor,
        sh1: torch.Tensor,
        sh2: torch.Tensor,
    ) -> torch.Tensor:
        """G(l1, l2) = (C(l1) S(l2) - S(l1) C(l2)) / (l1 - l2), evaluated without cancellation.

        ``C(l) = cosh(sqrt l)``, ``S(l) = shc(sqrt l)``; G is an entire symmetric function.
        """
        one = torch.ones_like(l1)
        mag = torch.maximum(l1.abs(), l2.abs())
        diff = l1 - l2
        prod = a1 * a2
        use_series = mag < 1.0
        use_sep = (~use_series) & (diff.abs() >= 0.5 * mag)
        use_close = (~use_series) & (~use_sep)
        sep = (ch1 * sh2 - sh1 * ch2) / torch.where(use_sep, diff, one)
        close = (_shc(a1 + a2) - _shc(a1 - a2)) / (2 * torch.where(use_close, prod, one))
        # G = 2 * S[x, y] with x = (a1 + a2)**2, y = (a1 - a2)**2 and S(x) = sum x**m / (2m+1)!;
        # S[x, y] = sum_{m>=1} h_{m-1}(x, y) / (2m+1)!, h_k the complete homogeneous polynomial.
        x = torch.where(use_series, (a1 + a2) ** 2, 0 * one)
        y = torch.where(use_series, (a1 - a2) ** 2, 0 * one)
        h = one.clone()  # h_0
        ypow = one.clone()
        series = torch.zeros_like(l1)
        for m in range(1, 20):
            series = series + h / float(math.factorial(2 * m + 1))
            ypow = ypow * y
            h = x * h + ypow  # h_m
        series = 2 * series
        return torch.where(use_series, series, torch.where(use_sep, sep, close))

    def _exp_taylor_scaled(self, B: torch.Tensor, terms: int = 24) -> torch.Tensor:
        l1 = B.abs().sum(-1).amax() if B.numel() else torch.zeros((), dtype=B.dtype)
        m = max(0, math.ceil(math.log2(float(l1) / 0.5))) if float(l1) > 0.5 else 0
        X = B / 2**m
        one = self._one(B)
        out = one.clone()
        term = one.clone()
        for k in range(1, terms + 1):
            term = self.gp(term, X) / k
            out = out + term
        for _ in range(m):
            out = self.gp(out, out)
        return out

    def is_rotor(self, R: torch.Tensor, atol: float = 1e-10) -> torch.Tensor:
        """Bool ``(...)``: ``R`` is even and ``R R~ = 1`` to ``atol`` (max-abs coefficient)."""
        self.check(R, "R")
        odd = self.grade(R, [k for k in range(1, self.n + 1, 2)])
        err = self.gp(R, self.reverse(R)) - self._one(R)
        return (err.abs().amax(-1) <= atol) & (odd.abs().amax(-1) <= atol)

    def random_rotor(
        self,
        generator: torch.Generator | None = None,
        batch: int | Sequence[int] = (),
        *,
        scale: float = 1.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """``exp`` of a random bivector with i.i.d. N(0, scale**2) coefficients.

        Args:
            generator: torch RNG (CPU) for reproducibility; ``None`` uses the global one.
            batch: leading shape, an int or a sequence of ints.
        Returns:
            ``(*batch, dim)`` rotors (motors in degenerate algebras) with ``R R~ = 1``.
        """
        shape = (batch,) if isinstance(batch, int) else tuple(batch)
        idx = self.grade_indices(2)
        coeffs = torch.randn(*shape, idx.numel(), generator=generator, dtype=dtype) * scale
        return self.exp(self.from_grade(coeffs, 2)).to(device)
