"""Exact reference for posits and b-posits, shared by test_posit.py and test_quire.py.

Everything here is plain Python integers and :class:`fractions.Fraction`; it does not import
:mod:`neuro`.  The reference is written from the definitions (Posit Standard 2022; b-posit paper,
arXiv 2603.01615) and is itself checked against SoftPosit in ``test_posit.py``.

Bit-string model (positive x; negatives are the two's complement of the magnitude's pattern):

* sign bit 0, then the *body* of ``n - 1`` bits: regime, ``es`` exponent bits, fraction.
* regime: a run of ``m`` equal bits, ended by the opposite bit, or not ended when the run reaches
  the cap (``rs`` for b-posits, the end of the body otherwise).  k = m - 1 for a run of 1s, -m for
  a run of 0s.  Exponent bits cut off by the end of the word count as 0.
* value = (1 + f) * 2**(k * 2**es + e).
* encode: write x's infinite bit string and round it to n bits, nearest, ties to even on the bit
  string; results clamp to [minpos, maxpos] (never 0, never NaR).  NaN/inf -> NaR.
"""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = [
    "RefPosit",
    "floor_log2",
    "to_fraction",
    "fraction_to_float",
    "sp_px2_decode",
    "sp_px2_encode",
    "sp_legacy",
]

HALF = Fraction(1, 2)


def floor_log2(a: Fraction) -> int:
    """floor(log2(a)) for a rational a > 0, exactly."""
    if a <= 0:
        raise ValueError("floor_log2 needs a > 0")
    num, den = a.numerator, a.denominator
    s = num.bit_length() - den.bit_length()
    # 2**s <= a ?
    if s >= 0:
        if num < den << s:
            s -= 1
    else:
        if num << -s < den:
            s -= 1
    return s


def pow2(s: int) -> Fraction:
    return Fraction(1 << s) if s >= 0 else Fraction(1, 1 << -s)


def to_fraction(x) -> Fraction | None:
    """float/int/Fraction -> Fraction; NaN and +-inf -> None (NaR)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, int):
        return Fraction(x)
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return None
    return Fraction(x)


def fraction_to_float(v: Fraction | None) -> float:
    """Correctly rounded (nearest, ties to even) float64 of an exact rational; None -> nan.

    Python's int / int true division is correctly rounded, and so is float(Fraction).
    """
    if v is None:
        return math.nan
    return float(v)


class RefPosit:
    """Exact reference for PositFormat(nbits, es, rs)."""

    def __init__(self, nbits: int, es: int, rs: int | None = None):
        if not 2 <= nbits <= 64:
            raise ValueError(nbits)
        self.nbits = nbits
        self.es = es
        self.rs = rs
        self.body = nbits - 1
        self.mask = (1 << nbits) - 1
        self.nar = 1 << (nbits - 1)
        self.maxpos_bits = (1 << (nbits - 1)) - 1
        self.minpos_bits = 1
        # longest regime run
        self.cap = self.body if rs is None else min(rs, self.body)
        self.kmax = self.cap - 1
        # a run of `body` zeros is the zero pattern, so with no cap the longest 0-run is body - 1
        self.kmin = -self.cap if self.cap < self.body else -(self.body - 1)
        self.useed_log2 = 1 << es

    def __repr__(self):
        return f"RefPosit({self.nbits}, {self.es}, rs={self.rs})"

    # ----------------------------------------------------------------- decode
    def decode(self, bits: int) -> Fraction | None:
        """Exact value of a bit pattern (taken mod 2**nbits); NaR -> None."""
        bits &= self.mask
        if bits == 0:
            return Fraction(0)
        if bits == self.nar:
            return None
        neg = bits >> (self.nbits - 1)
        if neg:
            bits = (-bits) & self.mask
        body = self.body
        pos = body - 1  # index of the next body bit to read, from the top
        first = (bits >> pos) & 1
        m = 0
        while m < self.cap and ((bits >> pos) & 1) == first:
            m += 1
            pos -= 1
        used = m + (1 if m < self.cap else 0)  # terminator consumed only below the cap
        k = m - 1 if first else -m
        remaining = body - used
        rest = bits & ((1 << remaining) - 1) if remaining > 0 else 0
        es = self.es
        if remaining >= es:
            fbits = remaining - es
            e = rest >> fbits
            f = rest & ((1 << fbits) - 1)
        else:
            fbits = 0
            e = rest << (es - remaining)
            f = 0
        scale = k * self.useed_log2 + e
        val = (1 + Fraction(f, 1 << fbits)) * pow2(scale)
        return -val if neg else val

    def decode_float(self, bits: int) -> float:
        return fraction_to_float(self.decode(bits))

    def fields(self, bits: int) -> tuple[int, int]:
        """(sig, exp) with value == sig * 2**exp, sig an odd integer (or 0); NaR -> ValueError."""
        v = self.decode(bits)
        if v is None:
            raise ValueError("NaR")
        if v == 0:
            return 0, 0
        num, den = v.numerator, v.denominator
        exp = -(den.bit_length() - 1)  # den is a power of two
        tz = (num & -num).bit_length() - 1
        return num >> tz, exp + tz

    # ----------------------------------------------------------------- encode
    def encode(self, x) -> int:
        """Pattern of round(x): nearest, ties to even on the bit string, saturating."""
        v = to_fraction(x)
        if v is None:
            return self.nar
        if v == 0:
            return 0
        p = self._encode_pos(abs(v))
        return (-p) & self.mask if v < 0 else p

    def _encode_pos(self, a: Fraction) -> int:
        s = floor_log2(a)
        es = self.es
        k = s >> es
        e = s - (k << es)
        if k > self.kmax:
            return self.maxpos_bits
        if k < self.kmin:
            return self.minpos_bits
        if k >= 0:
            run = k + 1
            regime = (1 << run) - 1
            term = 0
        else:
            run = -k
            regime = 0
            term = 1
        if run < self.cap:
            regime = (regime << 1) | term
            lr = run + 1
        else:
            lr = run
        prefix = (regime << es) | e
        length = lr + es
        frac = a / pow2(s) - 1  # in [0, 1)
        string = (prefix + frac) * pow2(self.body - length)
        p = math.floor(string)
        rem = string - p
        if rem > HALF or (rem == HALF and p & 1):
            p += 1
        return min(max(p, self.minpos_bits), self.maxpos_bits)

    def round(self, x) -> Fraction | None:
        """Exact value of round(x) (None for NaR)."""
        return self.decode(self.encode(x))

    # ----------------------------------------------------------------- helpers
    @property
    def maxpos(self) -> Fraction:
        return self.decode(self.maxpos_bits)

    @property
    def minpos(self) -> Fraction:
        return self.decode(self.minpos_bits)

    def wider(self) -> RefPosit:
        return RefPosit(self.nbits + 1, self.es, self.rs)

    def midpoint(self, p: int) -> Fraction:
        """Rounding boundary between positive patterns p and p + 1 (the (n+1)-bit pattern 2p+1)."""
        if not 0 < p < self.maxpos_bits:
            raise ValueError(p)
        return self.wider().decode(2 * p + 1)

    def signed(self, bits: int) -> int:
        """Pattern as a signed nbits-bit integer (posits order like these)."""
        bits &= self.mask
        return bits - (1 << self.nbits) if bits >> (self.nbits - 1) else bits


# --------------------------------------------------------------------- SoftPosit adapters
def sp_px2_decode(bits: int, n: int) -> float:
    """SoftPosit posit<n,2> value of an n-bit pattern (NaR -> nan, SoftPosit says inf)."""
    import softposit

    v = float(softposit.posit_2(bits=bits, x=n))
    return math.nan if math.isinf(v) else v


def sp_px2_encode(x: float, n: int) -> int:
    """SoftPosit posit<n,2> n-bit pattern of a float (x must be a float, not an int)."""
    import softposit

    return softposit.posit_2(float(x), n).v.v >> (32 - n)


def sp_legacy(n: int):
    """(encode, decode) for SoftPosit's legacy posit8 (es=0), posit16 (es=1), posit32 (es=2)."""
    import softposit

    cls = {8: softposit.posit8, 16: softposit.posit16, 32: softposit.posit32}[n]

    def enc(x: float) -> int:
        return cls(float(x)).v.v

    def dec(bits: int) -> float:
        v = float(cls(bits=bits))
        return math.nan if math.isinf(v) else v

    return enc, dec


# --------------------------------------------------------------------- quire limbs
LIMB_BITS = 32


def limbs_value(limbs, offset: int) -> Fraction:
    """Exact value of one accumulator's limbs: sum_i limbs[i] * 2**(32 * (offset + i))."""
    total = 0
    for i, d in enumerate(limbs):
        total += int(d) << (LIMB_BITS * i)
    return Fraction(total) * pow2(LIMB_BITS * offset)


def limbs_values(limbs_tensor, offset: int) -> list[Fraction]:
    """Exact values of every accumulator of a (*shape, L) limb tensor, flattened (row-major)."""
    L = limbs_tensor.shape[-1]
    rows = limbs_tensor.reshape(-1, L).tolist() if L else [[] for _ in range(_numel(limbs_tensor))]
    return [limbs_value(r, offset) for r in rows]


def _numel(t) -> int:
    n = 1
    for s in t.shape[:-1]:
        n *= s
    return n


def limbs_of(values: list[Fraction], offset: int, length: int) -> list[list[int]]:
    """Normalised limbs (low limbs in [0, 2**32), top limb signed 32-bit) of exact values.

    Each value times 2**(-32 * offset) must be an integer that fits the window.
    """
    out = []
    for v in values:
        scaled = v * pow2(-LIMB_BITS * offset)
        if scaled.denominator != 1:
            raise ValueError(f"{v} is not a multiple of 2**(32*{offset})")
        i = scaled.numerator
        row = []
        for _ in range(length - 1):
            row.append(i & 0xFFFFFFFF)
            i >>= LIMB_BITS  # floor shift: two's complement digits for negatives
        if not -(1 << 31) <= i < (1 << 31):
            raise ValueError(f"{v} does not fit {length} limbs")
        row.append(i)
        out.append(row)
    return out
