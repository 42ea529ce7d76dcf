"""Fast, provably exact rounding of ``w + lr * S`` for most entries (an engine step's common case).

A quire holds ``S`` exactly in int64 limbs; reading it to float64 exactly (``Quire.to_float``) costs
dozens of passes. Here ``S`` is read *approximately*, with a rigorous error bound, in a few passes:
the top limb columns that are pure sign extension for every entry of a block are folded away, the
top two remaining columns are joined into one exact int64 (``head``) and the next column is added
in float64. Then ``x = w + lr * S`` lies in ``[s - r, s + r]`` (``s`` the float64 sum, ``r`` the
bound), and since rounding to a storage format is monotone, an entry whose ``s - r`` and ``s + r``
round to the same storage value ``c`` rounds to ``c`` exactly (Ziv's rounding test). The remaining
entries (those within ``r`` of a rounding boundary: ~2**-30 of them for random data, plus entries
near 0 when ``w`` is 0) are left to the exact path. Stochastic rounding takes the same route: the
exact nearest value and the side of ``x`` are decided as above, and the draw ``u < p`` is decided
when ``u`` lies outside the bounds on ``p``. Every decided entry has exactly the bits of the exact
path (tests/test_engine.py checks both against each other).

:func:`round_entries` rounds chosen entries to float storage in the compiled kernel instead (exact
integer arithmetic on the limbs, ``quire_step_entries`` in ``neuro/_kernels/quire.c``).
"""

from __future__ import annotations

import math

import torch

from neuro.numerics.kernels import compiled_kernels
from neuro.numerics.posit import PositFormat
from neuro.numerics.quire import Quire
from neuro.numerics.rounding import next_value

__all__ = ["estimate_limbs", "estimate_float", "round_nearest_fast", "round_stochastic_fast", "round_entries"]

_LIMB = 32
_B = float(2**_LIMB)
_SAFE = 900  # |log2| of the float64 magnitudes the bounds below assume (normal numbers, no overflow)


def _two_sum_err(a: torch.Tensor, b, s: torch.Tensor) -> torch.Tensor:
    """The exact error ``a + b - s`` of ``s = fl(a + b)`` (Knuth's TwoSum)."""
    bb = s - a
    return (a - (s - bb)) + (b - bb)


def _split(x):
    """Veltkamp's split of float64 ``x`` into two 26-bit halves (``x = hi + lo`` exactly)."""
    t = x * 134217729.0  # 2**27 + 1
    hi = t - (t - x)
    return hi, x - hi


def _times(x: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(p, inexact)``: ``p = fl(x * factor)`` and where that product was rounded (Dekker; None:
    nowhere, ``factor`` is a power of two)."""
    p = x * factor
    if math.frexp(factor)[0] in (0.5, -0.5):  # exact in the normal range
        return p, None
    xh, xl = _split(x)
    fh, fl = _split(factor)
    err = ((xh * fh - p) + xh * fl + xl * fh) + xl * fl
    return p, err != 0


def estimate_limbs(limbs: torch.Tensor, offset: int, lr: float, top_bit: int):
    """``(v, rv)``: float64 ``v`` near ``lr * S`` with ``|v - lr * S| <= rv`` (``rv = 0`` where ``v`` is
    exact, which includes ``S = 0``), for the quire values ``S`` of ``limbs``.

    ``limbs``: normalised int64 ``(n, L)`` (top limb signed), ``S = sum limbs[:, i] 2**(32 (offset +
    i))``; ``lr``: a float64 number with at most 30 significant bits. Returns None when the
    block's magnitudes leave the range where the bounds hold (float64 underflow or overflow, or a
    scaled sum that could reach the quire's NaR range ``2**top_bit``).
    """
    n, length = limbs.shape
    if length == 0 or lr == 0.0:
        zero = torch.zeros(n, dtype=torch.float64, device=limbs.device)
        return zero, zero
    top = length - 1
    head = limbs[:, top]
    while top >= 1:  # join the column below; drop the upper one while every entry fits 32 bits
        joined = torch.add(limbs[:, top - 1], head, alpha=1 << _LIMB)  # exact: |head| < 2**31
        top -= 1
        head = joined
        lo, hi = torch.aminmax(joined)
        if not (top >= 1 and int(lo) >= -(1 << 31) and int(hi) < 1 << 31):
            break
    unit = _LIMB * (offset + top)  # S = head * 2**unit + lower, 0 <= lower < 2**unit
    log_lr = math.frexp(abs(lr))[1]
    if unit - 2 * _LIMB + log_lr < -_SAFE or unit + 64 + log_lr > min(_SAFE, top_bit - 2):
        return None
    # Sum in units of 2**unit (a head of -1 and a large next column cancel without error), then
    # one rounding for lr. Roundings: head to float64 (only when |head| >= 2**53, then |head| <= 2|v|),
    # the sums and the product: each <= 2**-53 |v|; every one is detected, so exact entries get rv = 0.
    v = head.to(torch.float64)
    inexact = v.to(torch.int64) != head  # the conversion rounded (2**63 overflows: != head too)
    tail = None
    if top >= 1:
        nxt = limbs[:, top - 1].to(torch.float64).mul_(2.0**-_LIMB)
        vs = v + nxt
        inexact |= _two_sum_err(v, nxt, vs) != 0
        v = vs
    if top >= 2:  # columns further down: in [0, 2**(unit - 32)), added as half of that
        below = (limbs[:, : top - 1] != 0).any(1)
        v.add_(below, alpha=2.0 ** (-_LIMB - 1))  # exact: |v| < 2**63, half-unit step 2**-33
        inexact |= below
        tail = below.to(torch.float64).mul_(abs(lr) * 2.0 ** (unit - _LIMB - 1) * (1 + 2.0**-50))
    v, rounded = _times(v, lr * 2.0**unit)
    if rounded is not None:
        inexact |= rounded
    rv = v.abs().mul_(2.0**-50).mul_(inexact)
    return v, rv if tail is None else rv.add_(tail)


def estimate_float(d: torch.Tensor, lr: float):
    """``(v, rv)`` as :func:`estimate_limbs` for ``lr * d`` (float64 ``d``), or None when a product may
    leave float64's normal range."""
    a = d.abs()
    nz = a[a != 0]
    if nz.numel() and (float(nz.min()) * abs(lr) < 2.0**-_SAFE or float(nz.max()) * abs(lr) > 2.0**_SAFE):
        return None
    v, rounded = _times(d, lr)
    rv = v.abs().mul_(2.0**-52)
    if rounded is None:
        rv.zero_()
    else:
        rv.mul_(rounded)
    return v.add_(0.0), rv  # + 0.0: no negative zero (an exact 0 reads as +0)


def _interval(w: torch.Tensor, v: torch.Tensor, rv: torch.Tensor):
    """``(s, e, y, rr)``: ``s = fl(w + v)`` with ``w + v = s + e`` exactly (TwoSum); ``y``: ``s``
    rounded to odd with ``e`` (the float64 next to ``s`` towards ``e`` when ``e != 0`` and ``s`` is
    even), so that where ``v`` is exact (``rv = 0``) ``y`` rounds to any coarser format (float32,
    posits) exactly as ``x = w + lr * S`` does; ``rr``: a radius such that ``[y - rr, y + rr]``
    (computed in float64) holds ``x`` (0 where ``rv = 0``)."""
    s = w + v
    e = _two_sum_err(w, v, s)
    bits = s.view(torch.int64)
    step = ((e.view(torch.int64) ^ bits) >> 63) | 1  # +1: away from 0 (e and s of one sign), -1: towards
    step.mul_((e != 0) & ((bits & 1) == 0))
    y = step.add_(bits).view(torch.float64)
    rr = e.abs().add_(rv).add_(s.abs(), alpha=2.0**-50)  # slack: the step to y, roundings of rr, y +- rr
    return s, e, y, rr.mul_(rv != 0)


def _round_nearest(x: torch.Tensor, storage: PositFormat | str) -> torch.Tensor:
    if isinstance(storage, PositFormat):
        return storage.quantize(x)
    return x.to(torch.float32)


def _nearest(y, rr, s, storage, top_bit):
    lo = _round_nearest(y - rr, storage)
    hi = _round_nearest(y + rr, storage)
    if isinstance(storage, PositFormat):
        ok = lo == hi  # NaR never compares equal
        c = lo
    else:
        ok = (lo.view(torch.int32) == hi.view(torch.int32)) & (lo.abs() < float("inf"))  # -0 != +0
        c = lo.to(torch.float64)
    ok &= s.abs() < 2.0 ** min(top_bit - 2, 1000)  # far from the quire's NaR range (the exact path's)
    return c, ok


def round_nearest_fast(
    w: torch.Tensor, v: torch.Tensor, rv: torch.Tensor, storage: PositFormat | str, top_bit: int
):
    """``(c, ok)``: ``c = round_nearest(w + lr * S)`` (float64) wherever ``ok``; see the module doc.

    ``w`` float64 storage values, ``(v, rv)`` from :func:`estimate_limbs` / :func:`estimate_float`,
    ``top_bit``: the exact path's quire range; float64 storage is never decided here.
    """
    if storage == "float64":
        return w, torch.zeros_like(w, dtype=torch.bool)
    s, e, y, rr = _interval(w, v, rv)
    return _nearest(y, rr, s, storage, top_bit)


def round_stochastic_fast(
    w: torch.Tensor,
    v: torch.Tensor,
    rv: torch.Tensor,
    storage: PositFormat | str,
    top_bit: int,
    uniform: torch.Tensor,
):
    """``(out, ok)`` as :func:`round_nearest_fast` for stochastic rounding with ``uniform`` (same
    bits as ``round_quire(..., "stochastic", uniform)``: the exact remainder ``x - c``, read
    to float64, over the gap to the neighbour on its side is the probability of moving there)."""
    if storage == "float64":
        return w, torch.zeros_like(w, dtype=torch.bool)
    s, e, y, rr = _interval(w, v, rv)
    c, ok = _nearest(y, rr, s, storage, top_bit)
    d1 = s - c
    e1 = _two_sum_err(s, -c, d1)
    a = d1 + (e1 + e)  # x - c up to rv and two roundings
    delta = rv + (d1.abs() + a.abs()) * 2.0**-50
    side = torch.sign(a) * (a.abs() > delta)
    exact = (rv == 0) & (d1 == 0) & (e1 == 0) & (e == 0)  # x == c
    nb = next_value(c, storage, side)
    gap = (nb - c).abs()
    moved = gap > 0
    ga = torch.where(moved, gap, torch.ones_like(gap))
    p_lo = (a.abs() - delta) / ga * (1 - 2.0**-50)
    p_hi = (a.abs() + delta) / ga * (1 + 2.0**-50)
    take = moved & (uniform < p_lo)
    keep = (uniform >= p_hi) | ~moved
    normal = a.abs() - delta > 2.0**-_SAFE  # remainders near underflow go to the exact path
    decided = exact | ((side != 0) & (take | keep) & normal)
    # Side unknown (x at or near c): c stays if u is above the bound on p for either neighbour.
    near = ok & (side == 0) & ~exact
    if bool(near.any()):
        i = near.nonzero().squeeze(1)
        ci = c[i]
        one = torch.ones_like(i)
        up, down = next_value(ci, storage, one), next_value(ci, storage, -one)
        gaps = torch.stack([(up - ci).abs(), (down - ci).abs()])
        gmin = torch.where(gaps > 0, gaps, torch.full_like(gaps, float("inf"))).amin(0)
        decided[i] = uniform[i] >= (a[i].abs() + delta[i]) / gmin * (1 + 2.0**-50)
    return torch.where(take & ~exact, nb, c), ok & decided


def round_entries(
    q: Quire, index: torch.Tensor, lr: tuple[int, int], w: torch.Tensor, lo: float, hi: float
) -> torch.Tensor | None:
    """Nearest rounding of ``w + sig * 2**exp * S`` (``lr = (sig, exp)``) at flat entries ``index``
    to ``w``'s IEEE storage (float32 or float64, C-contiguous, flat entries as the quire's),
    clamped to ``[lo, hi]`` and written into ``w``; the decided entries' accumulators are zeroed.

    Exact integer arithmetic in the compiled kernel, straight from the limbs (pending carries
    allowed).  Returns the entries left undecided (results that would be subnormal or overflow,
    or sums too wide for the kernel's buffers: round them with
    :func:`~neuro.numerics.rounding.round_sum_nearest`), or None, with nothing done, when the
    compiled kernel is unavailable or ``q`` is not on the CPU.
    """
    kernel = compiled_kernels() if q.device.type == "cpu" else None
    if kernel is None:
        return None
    sig, exp = lr
    limbs = q.writable_limbs()
    left = torch.empty_like(index)
    count = kernel.quire_step_entries(
        index.data_ptr(), index.numel(), limbs.data_ptr(), limbs.shape[-1], q.offset,
        sig, exp, w.data_ptr(), int(w.dtype == torch.float64), lo, hi, left.data_ptr(),
    )  # fmt: skip
    return left[:count]
