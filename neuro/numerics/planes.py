"""Exact values cut into digit planes: the integer pieces a float64 sum or GEMM adds exactly.

A tensor of exact values (posit values, or products of two) is written as
``sum_p digits_p * 2**(lo + width * p)`` with integer digits of at most ``width`` bits.  Float64
adds integers below 2**53 exactly, so a sum (or matrix product) of planes is exact when ``width``
plus the bits of the number of terms stays within 53; the quire folds such results into its limbs.
"""

from __future__ import annotations

import torch

from neuro.numerics.posit import PositFormat
from neuro.numerics.threads import single_threaded

__all__ = ["EXACT_BITS", "bit_length", "IntPlanes", "FloatPlanes", "as_factor", "products"]

EXACT_BITS = 53  # float64 holds every integer below 2**53 exactly


def bit_length(x: torch.Tensor) -> torch.Tensor:
    """Exact bit length of non-negative int64 values (any size below 2**63)."""
    bl = torch.frexp(x.to(torch.float64))[1].to(torch.int64)  # may be one too high after rounding
    too_high = (bl > 0) & ((x >> (bl - 1).clamp(min=0)) == 0)
    return bl - too_high.to(torch.int64)


class IntPlanes:
    """A tensor of exact values ``sig * 2**exp`` cut into digit planes of ``width`` bits.

    ``value == sum_p digits(p) * 2**(lo + width * p)`` with integer digits ``|d| < 2**width``.
    """

    def __init__(self, sig: torch.Tensor, exp: torch.Tensor):
        self.neg = sig < 0
        self.mag = sig.abs()
        nonzero = self.mag != 0
        self.empty = not bool(nonzero.any())
        if self.empty:
            self.lo, self.hi = 0, 0
            return
        top = exp + bit_length(self.mag)
        self.exp = exp
        self.lo = int(exp[nonzero].min())
        self.hi = int(top[nonzero].max())

    @property
    def range_bits(self) -> int:
        return self.hi - self.lo

    @property
    def numel(self) -> int:
        return self.mag.numel()

    @single_threaded
    def planes(self, width: int) -> list[tuple[int, torch.Tensor]]:
        """Non-empty planes as ``(exponent, float64 digits)``, lowest first."""
        if self.empty:
            return []
        out = []
        mask = (1 << width) - 1
        count = -(-self.range_bits // width)
        for p in range(count):
            base = self.lo + width * p
            s = self.exp - base
            up = s.clamp(0, width)
            down = (-s).clamp(0, 63)
            kept = self.mag & ((torch.ones_like(up) << (width - up)) - 1)
            digit = torch.where(s >= 0, kept << up, (self.mag >> down) & mask)
            if not bool(digit.any()):
                continue
            digit = torch.where(self.neg, -digit, digit)
            out.append((base, digit.to(torch.float64)))
        return out


class FloatPlanes:
    """A float64 tensor of exact values with at most ``sig_bits`` significant bits each, cut into
    digit planes: ``value == sum_p digits(p) * 2**(lo + width * p)``, ``|digit| <= 2**width``.

    Digits are computed with float arithmetic that is exact here: scaling by powers of two,
    ``floor``, and subtractions whose result is representable.
    """

    def __init__(self, values: torch.Tensor, sig_bits: int):
        self.values = values
        mag = values.abs()
        top = mag.amax() if values.numel() else torch.zeros((), dtype=values.dtype)
        self.empty = not bool(top > 0)
        if self.empty:
            self.lo, self.hi = 0, 0
            return
        smallest = torch.where(mag > 0, mag, torch.inf).amin()
        self.hi = int(torch.frexp(top)[1])  # |value| < 2**hi
        self.lo = int(torch.frexp(smallest)[1]) - sig_bits  # every set bit is at or above lo

    @property
    def range_bits(self) -> int:
        return self.hi - self.lo

    @property
    def numel(self) -> int:
        return self.values.numel()

    @single_threaded
    def planes(self, width: int) -> list[tuple[int, torch.Tensor]]:
        if self.empty:
            return []
        if self.range_bits > 1000:  # the scaled values would overflow float64: go through ints
            mant, ex = torch.frexp(self.values)
            sig = (mant * 2.0**EXACT_BITS).to(torch.int64)
            return IntPlanes(sig, ex.to(torch.int64) - EXACT_BITS).planes(width)
        scaled = self.values
        shift = -self.lo
        while shift:  # scale by 2**-lo in steps that cannot overflow 2**+-1023
            step = max(-1000, min(1000, shift))
            scaled = scaled * 2.0**step
            shift -= step
        count = -(-self.range_bits // width)
        if count == 1:
            return [(self.lo, scaled)]
        out = []
        step = float(2.0**width)
        rest = scaled
        for p in range(count - 1):
            upper = torch.floor(rest / step)
            digit = rest - upper * step
            if bool(digit.any()):
                out.append((self.lo + width * p, digit))
            rest = upper
        if bool(rest.any()):
            out.append((self.lo + width * (count - 1), rest))
        return out


def as_factor(x, device: torch.device, what: str) -> torch.Tensor:
    """Validate a quire input: a float tensor, or a bool tensor (0/1 events, exact), on ``device``."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=torch.float64)
    if not (x.dtype.is_floating_point or x.dtype == torch.bool):
        raise ValueError(
            f"Quire.{what}: expected a floating-point (or bool 0/1) tensor, got dtype {x.dtype}"
        )
    return x.to(device)


def _quantized(fmt: PositFormat, x: torch.Tensor, tail: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(round(x) as float64 with NaR -> 0, NaR mask over the last `tail` dims, sig bits)``.

    Bool tensors are event trains: exactly 0/1, no rounding needed (1 significant bit).
    """
    tail_shape = x.shape[x.dim() - tail :]
    if x.dtype == torch.bool:
        return x.to(torch.float64), torch.zeros(tail_shape, dtype=torch.bool, device=x.device), 1
    q = fmt.quantize(x)
    nar = torch.isnan(q.reshape(-1, *tail_shape).sum(0))
    if bool(nar.any()):
        q = torch.nan_to_num(q, nan=0.0)
    return q, nar, fmt.max_significand_bits


@single_threaded
def products(
    fmt: PositFormat, a: torch.Tensor, b: torch.Tensor | None, tail: int
) -> tuple[IntPlanes | FloatPlanes, torch.Tensor]:
    """Exact ``round(a) * round(b)`` (or ``round(a)``) as digit planes, and the NaR mask over the
    last ``tail`` dims.

    Float64 holds the products exactly when the two significands have at most 53 bits
    together and the products stay inside float64's exponent range (every named format but
    posit32); otherwise they go through integer significands.
    """
    qa, nar, bits_a = _quantized(fmt, a, tail)
    if b is None:
        return FloatPlanes(qa, bits_a), nar
    qb, nar_b, bits_b = _quantized(fmt, b, tail)
    nar = nar | nar_b
    if bits_a + bits_b <= EXACT_BITS and 2 * fmt.max_scale < 1000 and 2 * fmt.ulp_min > -1000:
        return FloatPlanes(qa * qb, bits_a + bits_b), nar
    shape = torch.broadcast_shapes(qa.shape, qb.shape)
    sa, ea, _ = fmt.decompose(fmt.encode(qa).expand(shape))
    sb, eb, _ = fmt.decompose(fmt.encode(qb).expand(shape))
    return IntPlanes(sa * sb, ea + eb), nar
