"""Exact helpers around :class:`~neuro.numerics.Quire`: load float64 values, scale by a posit,
round once to a storage format (nearest-even or stochastic), and a counter-based random stream.

Everything here is integer arithmetic on quire limbs except where a float64 result is returned, and
every function is element-wise (vectorised torch code, no Python loop over elements).
"""

from __future__ import annotations

import functools

import torch

from neuro.numerics import PositFormat, Quire

__all__ = [
    "quire_from_float64",
    "scale_quire",
    "round_quire",
    "next_value",
    "counter_uniform",
    "stream_key",
    "quire_sign",
    "round_sum_nearest",
]

_LIMB = 32
_MASK = (1 << _LIMB) - 1
_U64 = (1 << 64) - 1


# ----------------------------------------------------------------------------- exact loading
def quire_from_float64(fmt: PositFormat, x: torch.Tensor) -> Quire:
    """A quire of shape ``x.shape`` holding the float64 values ``x`` *exactly*.

    Unlike ``Quire.add`` (which first rounds its input to ``fmt``) any finite float64 value is kept
    bit for bit: ``x = sig * 2**e`` with a 53-bit integer ``sig`` is scattered into 32-bit limbs.
    NaN and infinities become NaR.  ``fmt`` only names the quire's format (for later rounding).
    """
    x = x.to(torch.float64)
    shape = x.shape
    flat = x.reshape(-1)
    finite = torch.isfinite(flat)
    nar = ~finite
    flat = torch.where(finite, flat, torch.zeros((), dtype=torch.float64, device=flat.device))
    mant, ex = torch.frexp(flat)
    sig = (mant * float(1 << 53)).to(torch.int64)  # exact: |mant| in [0.5, 1) has 53 bits
    exp = ex.to(torch.int64) - 53
    nonzero = sig != 0
    if not bool(nonzero.any()):
        q = Quire(fmt, shape, device=x.device)
        if bool(nar.any()):
            q = Quire.from_limbs(
                fmt, torch.zeros(*shape, 1, dtype=torch.int64, device=x.device), 0, nar.reshape(shape)
            )
        return q
    lo = int(exp[nonzero].min())
    hi = int(exp[nonzero].max()) + 53
    off = lo // _LIMB
    length = -(-hi // _LIMB) - off + 2
    pos = torch.where(nonzero, exp - _LIMB * off, torch.zeros_like(exp))
    j = pos // _LIMB
    b = pos % _LIMB
    mag = sig.abs()
    one = torch.ones_like(b)
    low = (mag & ((one << (_LIMB - b)) - 1)) << b  # < 2**32
    rest = mag >> (_LIMB - b)  # < 2**53
    limbs = torch.zeros(flat.numel(), length, dtype=torch.int64, device=x.device)
    limbs.scatter_add_(1, j.unsqueeze(1), low.unsqueeze(1))
    limbs.scatter_add_(1, (j + 1).unsqueeze(1), (rest & _MASK).unsqueeze(1))
    limbs.scatter_add_(1, (j + 2).unsqueeze(1), (rest >> _LIMB).unsqueeze(1))
    limbs = torch.where((sig < 0).unsqueeze(1), -limbs, limbs)
    return Quire.from_limbs(fmt, limbs.reshape(*shape, length), off, nar.reshape(shape))


def scale_quire(q: Quire, sig: int, exp: int) -> Quire:
    """A new quire holding ``q * sig * 2**exp`` exactly (``|sig| < 2**30``, e.g. a posit's significand).

    The normalised limbs (each below 2**32 in magnitude) are multiplied by the integer ``sig``
    (products below 2**62, so int64 is exact), then shifted by ``exp`` bits: whole limbs move the
    window's offset, the remaining ``b < 32`` bits split each limb into a part that stays and a part
    that carries into the next limb.  NaR entries stay NaR.
    """
    sig, exp = int(sig), int(exp)
    if abs(sig) >= 1 << 30:
        raise ValueError(f"scale_quire: |sig| must be below 2**30, got {sig}")
    limbs = q.limbs
    nar = q.nar
    length = limbs.shape[-1]
    if length == 0 or sig == 0:
        out = Quire(q.fmt, q.shape, device=q.device)
        if bool(nar.any()):
            out = Quire.from_limbs(
                q.fmt, torch.zeros(*q.shape, 1, dtype=torch.int64, device=q.device), 0, nar
            )
        return out
    whole, b = divmod(exp, _LIMB)
    prod = limbs * sig
    if b:
        out = torch.zeros(*q.shape, length + 1, dtype=torch.int64, device=q.device)
        out[..., :length] += (prod & ((1 << (_LIMB - b)) - 1)) << b
        out[..., 1:] += prod >> (_LIMB - b)
    else:
        out = prod
    return Quire.from_limbs(q.fmt, out, q.offset + whole, nar)


def quire_sign(q: Quire) -> torch.Tensor:
    """Exact sign (-1, 0, +1; int64) of every accumulator (NaR reads as 0)."""
    limbs = q.limbs
    if limbs.shape[-1] == 0:
        return torch.zeros(q.shape, dtype=torch.int64, device=q.device)
    neg = limbs[..., -1] < 0
    nonzero = (limbs != 0).any(-1) & ~q.nar
    return torch.where(neg, -1, torch.where(nonzero, 1, 0)).to(torch.int64)


def _minus(q: Quire, c: torch.Tensor) -> Quire:
    """``q - c`` exactly (``c`` float64 of q's shape)."""
    r = q.clone()
    r.merge(quire_from_float64(q.fmt, -c))
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
def _nearest(q: Quire, storage: PositFormat | str) -> torch.Tensor:
    """``q``'s exact values rounded once, to nearest (ties to even), to ``storage``; float64 out."""
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
                sat = torch.where(quire_sign(q) < 0, (1 << n) - storage.maxpos_bits, storage.maxpos_bits)
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
        s = quire_sign(_minus(q, v64))  # sign of exact - midpoint
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
    c = _nearest(q, storage)
    if rounding == "nearest":
        return c
    if rounding != "stochastic":
        raise ValueError(f"round_quire: rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    if uniform is None or uniform.shape != q.shape:
        raise ValueError("round_quire: stochastic rounding needs uniform numbers of the quire's shape")
    cf = torch.where(torch.isfinite(c), c, torch.zeros_like(c))
    rq = _minus(q, cf)
    direction = quire_sign(rq)
    r = rq.to_float()
    nb = next_value(cf, storage, direction)
    gap = (nb - cf).abs()
    moved = gap > 0
    p_nb = torch.where(moved, r.abs() / torch.where(moved, gap, torch.ones_like(gap)), torch.zeros_like(r))
    # P(result = nb) = |x - c| / gap when x lies between c and nb.
    out = torch.where(moved & (uniform < p_nb), nb, cf)
    return torch.where(torch.isfinite(c), out, c)


# ----------------------------------------------------------------------------- random stream
def _mix64(z: int) -> int:
    """SplitMix64 finaliser on a Python int (mod 2**64)."""
    z &= _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return z ^ (z >> 31)


def stream_key(*parts: int) -> int:
    """A 64-bit key from integers (e.g. seed, step, parameter index), order-sensitive."""
    key = 0x6A09E667F3BCC909
    for p in parts:
        key = _mix64(key ^ _mix64(int(p) & _U64))
    return key


def _to_i64(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def counter_uniform(
    key: int,
    shape: tuple[int, ...] | torch.Size,
    device=None,
    start: int = 0,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Counter-based uniform numbers in [0, 1): element ``i`` (row-major) is ``f(key, start + i)``;
    with ``index`` (long, of ``shape``), element ``j`` is ``f(key, start + index[j])`` -- the numbers
    of scattered elements, equal to those of the whole tensor at the same places.

    ``f`` is SplitMix64 of ``key + (i + 1) * golden``: the same (key, shape) gives the same numbers on
    any machine and in any order of calls; float64 with 53 random bits.
    """
    n = 1
    for s in shape:
        n *= int(s)
    gamma = _to_i64(0x9E3779B97F4A7C15)
    if index is not None:
        i = index.to(device=device, dtype=torch.int64).reshape(-1) + (start + 1)
    else:
        i = torch.arange(start + 1, start + n + 1, dtype=torch.int64, device=device)
    z = i * gamma + _to_i64(key)  # wraps mod 2**64
    z = (z ^ _srl(z, 30)) * _to_i64(0xBF58476D1CE4E5B9)
    z = (z ^ _srl(z, 27)) * _to_i64(0x94D049BB133111EB)
    z = z ^ _srl(z, 31)
    return (_srl(z, 11).to(torch.float64) * 2.0**-53).reshape(tuple(shape))


# ----------------------------------------------------------------------------- fast w + q
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
        total = quire_from_float64(fmt, w)
        total.merge(Quire.from_limbs(fmt, q.limbs, q.offset, q.nar))
        return _nearest(total, storage)
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
    sub.merge(quire_from_float64(fmt, w.reshape(-1)[sel]))
    out = c.clone().reshape(-1)
    out[bad.reshape(-1)] = _nearest(sub, storage)
    return out.reshape(c.shape)
