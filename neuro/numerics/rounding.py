"""Rounding exact quire sums once to a storage format: nearest-even or stochastic.

A storage is a :class:`~neuro.numerics.PositFormat` or ``"float32"`` / ``"float64"``
(:mod:`neuro.numerics.formats`).  :func:`round_quire` is the definition (an exact quire read once);
:func:`round_sum_nearest` rounds ``w + q`` for a float64 ``w`` with a rounding test that leaves
the exact path to the few entries near a rounding boundary; :mod:`neuro.numerics.fast_rounding`
decides most entries of ``w + lr * S`` straight from the limbs.  Every function is element-wise
(vectorised torch code, no Python loop over elements).
"""

from __future__ import annotations

import functools

import torch

from neuro.numerics.posit import PositFormat
from neuro.numerics.quire import Quire

__all__ = ["ROUNDINGS", "next_value", "round_nearest", "round_quire", "round_sum_nearest"]

#: The rounding modes of a step: to nearest (ties to even) or stochastic.
ROUNDINGS: tuple[str, ...] = ("nearest", "stochastic")


def _minus(q: Quire, c: torch.Tensor) -> Quire:
    """``q - c`` exactly (``c`` float64 of q's shape)."""
    r = q.clone()
    r.merge(Quire.from_float64(q.fmt, -c))
    return r


# ----------------------------------------------------------------------------- neighbours
def next_value(x: torch.Tensor, storage: PositFormat | str, direction: torch.Tensor) -> torch.Tensor:
    """The storage value next to ``x`` (float64 values of ``storage``) in ``direction`` (-1, 0, +1).

    Posits saturate at +-maxpos (the pattern after maxpos is NaR); direction 0 returns ``x``.
    IEEE storage uses ``nextafter`` in that precision.
    """
    direction = direction.to(torch.int64)
    if isinstance(storage, PositFormat):
        n = storage.nbits
        bits = storage.encode(x)
        signed = torch.where(bits >= 1 << (n - 1), bits - (1 << n), bits)
        stepped = (signed + direction).clamp(-storage.maxpos_bits, storage.maxpos_bits)
        stepped = torch.where(bits == storage.nar, bits, stepped & ((1 << n) - 1))
        return storage.decode(stepped)
    dtype = torch.float32 if storage == "float32" else torch.float64
    xs = x.to(dtype)
    inf = torch.full_like(xs, float("inf"))
    up = torch.nextafter(xs, inf)
    down = torch.nextafter(xs, -inf)
    out = torch.where(direction > 0, up, torch.where(direction < 0, down, xs))
    return out.to(torch.float64)


# ----------------------------------------------------------------------------- rounding
def round_nearest(q: Quire, storage: PositFormat | str) -> torch.Tensor:
    """``q``'s exact values rounded once, to nearest (ties to even), to ``storage``; float64 of
    ``q.shape`` (NaR -> NaN).  Posits saturate at +-maxpos and never round a non-zero value to 0."""
    if isinstance(storage, PositFormat):
        if storage == q.fmt:
            bits = q.to_bits()
        else:
            # Same integer, read with the storage format's rounding.  A value beyond that format's
            # quire range reads as NaR there: it would saturate, so give it +-maxpos.
            other = Quire.from_limbs(storage, q.limbs, q.offset, q.nar)
            bits = other.to_bits()
            false_nar = (bits == storage.nar) & ~q.nar
            if bool(false_nar.any()):
                n = storage.nbits
                sat = torch.where(q.sign() < 0, (1 << n) - storage.maxpos_bits, storage.maxpos_bits)
                bits = torch.where(false_nar, sat, bits)
        return storage.decode(bits)
    v64 = q.to_float()
    if storage == "float64":
        return v64
    # float32: rounding the nearest float64 again is a double rounding.  It differs from rounding the
    # exact value only when v64 is exactly a float32 midpoint; there the exact remainder decides.
    c0 = v64.to(torch.float32)
    finite = torch.isfinite(c0)
    toward = torch.where(v64 > c0.to(torch.float64), 1, -1)
    inf = torch.full_like(c0, float("inf"))
    nb = torch.where(toward > 0, torch.nextafter(c0, inf), torch.nextafter(c0, -inf))
    mid = (c0.to(torch.float64) + nb.to(torch.float64)) / 2
    at_mid = finite & torch.isfinite(nb) & (v64 == mid) & (v64 != c0.to(torch.float64))
    out = c0.to(torch.float64)
    if bool(at_mid.any()):
        s = _minus(q, v64).sign()  # sign of exact - midpoint
        even_c0 = (c0.view(torch.int32) & 1) == 0
        pick_nb = (s == toward) | ((s == 0) & ~even_c0)
        out = torch.where(at_mid & pick_nb, nb.to(torch.float64), out)
    return torch.where(q.nar, torch.full_like(out, float("nan")), out)


def round_quire(
    q: Quire,
    storage: PositFormat | str,
    rounding: str = "nearest",
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Round every exact accumulator of ``q`` ONCE to ``storage``; float64 tensor of ``q.shape``.

    Args:
        q: the exact values.
        storage: a PositFormat, ``"float32"`` or ``"float64"``.
        rounding: ``"nearest"`` (ties to even; posits saturate at +-maxpos and never round a non-zero
            value to 0) or ``"stochastic"``: with ``lo <= x <= hi`` the two storage values around the
            exact ``x``, return ``hi`` with probability ``(x - lo) / (hi - lo)`` decided by
            ``uniform``. Exact values are returned unchanged; the probability is the exact remainder
            read to float64 precision. Stochastic rounding may give 0 for ``|x| < minpos``.
        uniform: float64 numbers in [0, 1) of ``q.shape`` (required for ``"stochastic"``).
    NaR entries give NaN.
    """
    c = round_nearest(q, storage)
    if rounding == "nearest":
        return c
    if rounding != "stochastic":
        raise ValueError(f"round_quire: rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if uniform is None or uniform.shape != q.shape:
        raise ValueError("round_quire: stochastic rounding needs uniform numbers of the quire's shape")
    cf = torch.where(torch.isfinite(c), c, torch.zeros_like(c))
    rq = _minus(q, cf)
    direction = rq.sign()
    r = rq.to_float()
    nb = next_value(cf, storage, direction)
    gap = (nb - cf).abs()
    moved = gap > 0
    p_nb = torch.where(moved, r.abs() / torch.where(moved, gap, torch.ones_like(gap)), torch.zeros_like(r))
    # P(result = nb) = |x - c| / gap when x lies between c and nb.
    out = torch.where(moved & (uniform < p_nb), nb, cf)
    return torch.where(torch.isfinite(c), out, c)


# ----------------------------------------------------------------------------- w + q
@functools.cache
def _wider(fmt: PositFormat) -> PositFormat:
    """The (n+1)-bit format whose extra patterns are ``fmt``'s rounding points (one instance per
    format, so its decode tables are built once)."""
    return PositFormat(fmt.nbits + 1, fmt.es, fmt.rs)


def _boundaries(c: torch.Tensor, storage: PositFormat | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rounding boundaries ``(lo, hi)`` around storage values ``c``: nearest rounding gives ``c`` for
    every x strictly inside ``(lo, hi)``. Posits: the (n+1)-bit posits between neighbours (the
    standard's rounding points); saturation ends are infinite, minpos's interval starts at 0 and
    0's is empty (only 0 itself rounds to 0). IEEE: arithmetic midpoints (exact in float64)."""
    inf = torch.full_like(c, float("inf"))
    if isinstance(storage, PositFormat):
        n = storage.nbits
        wide = _wider(storage)
        bits = storage.encode(c)
        p = torch.where(bits >= 1 << (n - 1), bits - (1 << n), bits)
        lo = wide.decode((2 * p - 1) & ((1 << (n + 1)) - 1))
        hi = wide.decode((2 * p + 1) & ((1 << (n + 1)) - 1))
        zero = torch.zeros_like(c)
        lo = torch.where(p == -storage.maxpos_bits, -inf, torch.where((p == 1) | (p == 0), zero, lo))
        hi = torch.where(p == storage.maxpos_bits, inf, torch.where((p == -1) | (p == 0), zero, hi))
        return lo, hi
    dtype = torch.float32 if storage == "float32" else torch.float64
    cs = c.to(dtype)
    up = torch.nextafter(cs, torch.full_like(cs, float("inf"))).to(torch.float64)
    down = torch.nextafter(cs, torch.full_like(cs, -float("inf"))).to(torch.float64)
    return (c + down) / 2, (c + up) / 2


def round_sum_nearest(w: torch.Tensor, q: Quire, storage: PositFormat | str) -> torch.Tensor:
    """``round_nearest(w + q)`` for float64 ``w`` and an exact quire ``q`` of the same shape.

    The result is exactly what rounding the exact sum once gives (as ``round_quire`` on a quire
    holding ``w + q``), computed faster with a rounding test (Ziv): ``v`` = ``q`` read to the nearest
    float64 (error <= 2**-53 |v|), ``s + e = w + v`` exactly (TwoSum), so the exact sum lies within
    ``r = |e| + 2**-53 |v|`` of ``s``. Where ``[s - r, s + r]`` lies strictly inside the rounding
    interval of ``c = round(s)``, ``c`` is the answer; the few other entries (within ``r`` of a
    rounding boundary, probability ~2**-40 for random data) are rounded from the exact quire sum.
    32-bit posit storage (no 33-bit format to find its rounding points) always takes the exact path.
    """
    fmt = q.fmt
    if isinstance(storage, PositFormat) and storage.quire_integer_bits > fmt.quire_integer_bits:
        fmt = storage  # exact fallbacks below need a quire range that holds every storage value
    if isinstance(storage, PositFormat) and storage.nbits >= 32:  # no (n+1)-bit format to test against
        total = Quire.from_float64(fmt, w)
        total.merge(Quire.from_limbs(fmt, q.limbs, q.offset, q.nar))
        return round_nearest(total, storage)
    v = q.to_float()
    s = w + v
    bb = s - w
    e = (w - (s - bb)) + (v - bb)
    r = e.abs() + v.abs() * 2.0**-53
    if isinstance(storage, PositFormat):
        c = storage.quantize(s)
    elif storage == "float32":
        c = s.to(torch.float32).to(torch.float64)
    else:
        c = s
    lo, hi = _boundaries(c, storage)
    ok = ((s - r) > lo) & ((s + r) < hi) & torch.isfinite(s)
    if storage == "float64":
        ok = ok & (r == 0)
    ok = ok | ((r == 0) & (c == s))  # q == 0 exactly: the sum is w itself
    if bool(ok.all()):
        return c
    bad = ~ok
    flat_limbs = q.limbs.reshape(-1, q.limbs.shape[-1])
    sel = bad.reshape(-1)
    sub = Quire.from_limbs(fmt, flat_limbs[sel], q.offset, q.nar.reshape(-1)[sel])
    sub.merge(Quire.from_float64(fmt, w.reshape(-1)[sel]))
    out = c.clone().reshape(-1)
    out[bad.reshape(-1)] = round_nearest(sub, storage)
    return out.reshape(c.shape)
