"""Posit<n, es> and bounded-regime b-posit formats, vectorized over torch tensors.

A posit pattern of ``n`` bits holds a sign bit, a regime (a run of ``m`` equal bits ended by the
opposite bit or by the end of the word; ``k = m - 1`` for a run of ones, ``-m`` for zeros), ``es``
exponent bits (bits cut off by the word's end count as 0) and a fraction.  Its value is
``(1 + f) * 2**(k * 2**es + e)``; negative values are the two's complement of the magnitude's
pattern; ``0...0`` is zero and ``10...0`` is NaR (not a real).

A *b-posit* (bounded posit) caps the regime run at ``rs`` bits: a run that reaches ``rs`` has no
terminating bit.  The 2026 b-posit paper uses ``rs = 6, es = 5``.

Rounding is round-to-nearest, ties-to-even, on the bit string: where exponent bits are cut off, the
rounding point is the ``(n+1)``-bit posit between two neighbours, as in the 2022 Posit Standard and
SoftPosit.  Non-zero values never round to zero and never overflow to NaR: they saturate at
``+-minpos`` / ``+-maxpos``.  NaN and infinities encode as NaR.

Every pattern is an int64 in ``[0, 2**n)``.  All routines are element-wise torch code (no Python
loop over elements) and work on any device.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch

from neuro.numerics.posit_tables import binade_tables, key_table, magic_table, top16_tables
from neuro.numerics.threads import single_threaded

__all__ = ["PositFormat", "POSIT8", "POSIT16", "POSIT32", "BPOSIT16", "BPOSIT32"]

_BODY_BITS = 62  # width of the unrounded magnitude string built by the encoder
_BLOCK = 1 << 16  # elements per block of the CPU rounding loop
_SIG_BITS = 53  # significands handed to the rounding core lie in [2**52, 2**53)
_KEY_MAX_FRACTION = 4  # formats with at most this many fraction bits encode through one lookup


def _floor_log2(x: Fraction) -> int:
    """floor(log2(x)) of a positive rational, exactly."""
    b = x.numerator.bit_length() - x.denominator.bit_length()
    return b if Fraction(2) ** b <= x else b - 1


def _ceil_log2(x: Fraction) -> int:
    """ceil(log2(x)) of a positive rational, exactly."""
    b = _floor_log2(x)
    return b if Fraction(2) ** b == x else b + 1


def _bit_length(x: torch.Tensor) -> torch.Tensor:
    """Number of significant bits of non-negative int64 values below 2**53 (0 for 0)."""
    return torch.frexp(x.to(torch.float64))[1].to(torch.int64)


class PositFormat:
    """A posit format ``posit<nbits, es>``, optionally with the regime bounded to ``rs`` bits.

    Args:
        nbits: word size, 2..32.
        es: exponent field size, 0..5.
        rs: maximum regime run length (b-posit), 1..nbits-1; ``None`` for standard posits.
        name: optional display name (``"posit16"``).
    """

    def __init__(self, nbits: int, es: int, rs: int | None = None, name: str | None = None):
        if not isinstance(nbits, int) or not 2 <= nbits <= 32:
            raise ValueError(f"PositFormat: nbits must be an int in 2..32, got {nbits!r}")
        if not isinstance(es, int) or not 0 <= es <= 5:
            raise ValueError(f"PositFormat: es must be an int in 0..5, got {es!r}")
        if rs is not None and (not isinstance(rs, int) or not 1 <= rs <= nbits - 1):
            raise ValueError(
                f"PositFormat: rs (regime bound) must be None or an int in 1..{nbits - 1} "
                f"for nbits={nbits}, got {rs!r}"
            )
        self.nbits = nbits
        self.es = es
        self.rs = rs
        self.regime_cap = nbits - 1 if rs is None else min(rs, nbits - 1)
        self._decode_tables: dict[torch.device, torch.Tensor] = {}
        self.name = name or (f"posit{nbits}_es{es}" if rs is None else f"bposit{nbits}_es{es}_rs{rs}")
        self.maxpos_exact = self._value_of(self.maxpos_bits)
        self.minpos_exact = self._value_of(1)
        self.maxpos = float(self.maxpos_exact)
        self.minpos = float(self.minpos_exact)
        self.max_scale = _floor_log2(self.maxpos_exact)
        self.min_scale = _floor_log2(self.minpos_exact)
        # Exponent of the lowest bit any value can hold.  Moving up from minpos, each pattern
        # gains at most as many fraction bits as it gains scale, so minpos's last bit is lowest.
        self.ulp_min = self._ulp_exponent(1)

    # ----------------------------------------------------------------------------- identity
    def _key(self) -> tuple[int, int, int | None]:
        return (self.nbits, self.es, None if self.rs is None or self.rs >= self.nbits - 1 else self.rs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PositFormat) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        rs = "" if self.rs is None else f", rs={self.rs}"
        return f"PositFormat({self.nbits}, {self.es}{rs})  # {self.name}"

    # ----------------------------------------------------------------------------- constants
    @property
    def nar(self) -> int:
        """Bit pattern of NaR (``1 << (nbits - 1)``)."""
        return 1 << (self.nbits - 1)

    @property
    def maxpos_bits(self) -> int:
        return (1 << (self.nbits - 1)) - 1

    @property
    def is_bounded(self) -> bool:
        return self.rs is not None and self.rs < self.nbits - 1

    @property
    def fits_float32(self) -> bool:
        """True when every value of the format is exactly representable as a float32."""
        return self.max_fraction_bits <= 23 and self.ulp_min >= -149 and self.max_scale <= 127

    @property
    def max_fraction_bits(self) -> int:
        """Most fraction bits any pattern holds (the shortest regime is min(2, cap) bits)."""
        return max(0, self.nbits - 1 - min(2, self.regime_cap) - self.es)

    @functools.cached_property
    def quire_integer_bits(self) -> int:
        """Integer bits of the standard-layout quire: enough for maxpos**2 (its top carry aside)."""
        return _ceil_log2(self.maxpos_exact**2)

    @property
    def quire_top_bit(self) -> int:
        """A quire sum of this format is NaR once ``|sum| >= 2**quire_top_bit`` (the integer bits
        plus the 31 carry-guard bits)."""
        return self.quire_integer_bits + 31

    @property
    def max_significand_bits(self) -> int:
        """Significant bits of the widest value (fraction bits plus the hidden bit)."""
        return self.max_fraction_bits + 1

    @property
    def quire_fraction_bits(self) -> int:
        """Fraction bits of the quire: the lowest bit of any product of two values, ``-2*ulp_min``."""
        return -2 * self.ulp_min

    @property
    def quire_bits(self) -> int:
        """Width of the format's quire: 1 sign + 31 carry + integer + fraction bits.

        For standard posits (es=2) this is the 2022 standard's ``16 * nbits``.  For b-posits it is
        sized so that every product of two values is exact (808 bits for b-posit16, 8 more than
        the paper's 800-bit quire, which drops the lowest bits of products of tiny values).
        """
        return 1 + 31 + self.quire_integer_bits + self.quire_fraction_bits

    # ----------------------------------------------------------------------------- scalar helpers
    def _fields(self, pattern: int) -> tuple[int, int, int, int]:
        """(k, e, frac, frac_bits) of a positive pattern, in pure Python (used for constants)."""
        body_bits = self.nbits - 1
        first = (pattern >> (body_bits - 1)) & 1
        run = 0
        while run < body_bits and ((pattern >> (body_bits - 1 - run)) & 1) == first:
            run += 1
        run = min(run, self.regime_cap)
        k = run - 1 if first else -run
        rest = body_bits - run - (1 if run < self.regime_cap else 0)
        rest = max(rest, 0)
        tail = pattern & ((1 << rest) - 1)
        if rest >= self.es:
            e, frac_bits = tail >> (rest - self.es), rest - self.es
            frac = tail & ((1 << frac_bits) - 1)
        else:
            e, frac_bits, frac = tail << (self.es - rest), 0, 0
        return k, e, frac, frac_bits

    def _value_of(self, pattern: int) -> Fraction:
        k, e, frac, fb = self._fields(pattern)
        return Fraction((1 << fb) + frac, 1 << fb) * Fraction(2) ** ((k << self.es) + e)

    def _ulp_exponent(self, pattern: int) -> int:
        k, e, _, fb = self._fields(pattern)
        return (k << self.es) + e - fb

    # ----------------------------------------------------------------------------- validation
    def _check_float(self, x: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x, dtype=torch.float64)
        if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise ValueError(
                f"{self.name}.{what}: expected a floating-point tensor (float32 or float64), "
                f"got dtype {x.dtype}; convert with .double() first"
            )
        return x.to(torch.float64)

    def _check_float_dtype(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """Like :meth:`_check_float` but keeps the float dtype (converted block by block later)."""
        if not isinstance(x, torch.Tensor):
            return torch.as_tensor(x, dtype=torch.float64)
        if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            return self._check_float(x, what)  # raises
        return x

    def _check_bits(self, bits: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(bits, torch.Tensor):
            bits = torch.as_tensor(bits, dtype=torch.int64)
        if bits.dtype.is_floating_point or bits.dtype == torch.bool or bits.is_complex():
            raise ValueError(
                f"{self.name}.{what}: expected an integer tensor of bit patterns, got dtype {bits.dtype}"
            )
        return bits.to(torch.int64) & ((1 << self.nbits) - 1)

    # ----------------------------------------------------------------------------- encoding
    @single_threaded
    def round_parts(
        self, neg: torch.Tensor, scale: torch.Tensor, sig: torch.Tensor, sticky: torch.Tensor
    ) -> torch.Tensor:
        """Round a non-zero value given as parts to a bit pattern (the core of every encoder).

        The value is ``(-1)**neg * sig * 2**(scale - 52)`` plus, when ``sticky``, a positive
        amount below the last bit of ``sig``.  ``sig`` is int64 in ``[2**52, 2**53)``, ``scale``
        int64 (any range: out-of-range values saturate), ``neg`` and ``sticky`` bool.  Returns
        int64 patterns.
        """
        es, cap, n = self.es, self.regime_cap, self.nbits
        too_big = scale > self.max_scale
        too_small = scale < self.min_scale
        scale = scale.clamp(self.min_scale, self.max_scale)
        k = torch.div(scale, 1 << es, rounding_mode="floor")
        e = scale - k * (1 << es)
        run = torch.where(k >= 0, k + 1, -k)
        terminated = run < cap
        term = terminated.to(torch.int64)
        reg_len = run + term
        one = torch.ones_like(run)
        regime = torch.where(k >= 0, ((one << run) - 1) << term, term)
        body = regime << (_BODY_BITS - reg_len)
        free = _BODY_BITS - reg_len - es  # bits left for the fraction, >= 25
        if es:
            body = body | (e << free)
        frac = sig - (1 << (_SIG_BITS - 1))
        drop = (_SIG_BITS - 1) - free
        left = frac << (-drop).clamp(min=0)
        dropc = drop.clamp(min=0)
        right = frac >> dropc
        sticky = sticky | ((frac & ((one << dropc) - 1)) != 0)
        body = body | torch.where(drop > 0, right, left)
        shift = _BODY_BITS - (n - 1)
        out = body >> shift
        rem = body & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        round_up = (rem > half) | ((rem == half) & (sticky | ((out & 1) == 1)))
        out = (out + round_up.to(torch.int64)).clamp(1, self.maxpos_bits)
        out = torch.where(too_big, torch.full_like(out, self.maxpos_bits), out)
        out = torch.where(too_small, torch.ones_like(out), out)
        return torch.where(neg, ((1 << n) - out) & ((1 << n) - 1), out)

    def _encode_keyed(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` of float64 ``x`` through :func:`~neuro.numerics.posit_tables.key_table`: six
        integer passes and one lookup."""
        table = key_table(self, x.device)
        low = 51 - self.max_fraction_bits
        xi = x.view(torch.int64)
        key = xi >> (low - 1)
        key &= table.numel() - 2
        sticky = xi & ((1 << low) - 1)
        sticky += (1 << low) - 1  # carries into bit `low` when any low bit is set
        sticky >>= low
        key += sticky
        return torch.take(table, key)

    def rounds_in_float32(self, x: torch.Tensor) -> bool:
        """Whether :meth:`quantize_block` rounds a block of ``x`` in float32 (``x`` not float64 and
        at most 21 fraction bits; see :func:`~neuro.numerics.posit_tables.magic_table`)."""
        return x.dtype != torch.float64 and self.max_fraction_bits <= 21

    def quantize_block(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``quantize`` of a 1-D block (any float dtype), written into the float64 ``out`` if given
        (and returned).  Without ``out`` the result is float32 where every value of the format
        is a float32 (:attr:`fits_float32`) and ``x`` is not float64, float64 otherwise."""
        single = self.rounds_in_float32(x)
        if single:
            x32 = x if x.dtype == torch.float32 else x.to(torch.float32)
            magic = magic_table(self, x.device, single=True)
            idx = x32.view(torch.int32) & 0x7FFFFFFF
            idx -= 1  # (|x| - 1) >> 23 + 1: 0 for zero, the binade + 1 except at powers of two
            idx >>= 23
            idx += 1
            c = torch.index_select(magic, 0, idx)
            q = x32 + c
            if out is None and not self.fits_float32:
                out = torch.empty(x.shape, dtype=torch.float64, device=x.device)
            out = torch.sub(q, c, out=out if out is not None else q)
        else:
            x64 = x if x.dtype == torch.float64 else x.to(torch.float64)
            magic = magic_table(self, x.device)
            idx = x64.view(torch.int64) & ((1 << 63) - 1)
            idx -= 1
            idx >>= 52
            idx += 1
            c = torch.index_select(magic, 0, idx)
            out = torch.add(x64, c, out=out)
            out -= c
        if math.isnan(float(c.sum())):  # some elements need the general path
            bad = torch.isnan(c)
            out[bad] = self._round_block(x[bad].to(torch.float64), want_bits=False).to(out.dtype)
        return out

    @single_threaded
    def quantize_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """``out.copy_(quantize(x))`` for a contiguous float ``x`` and a contiguous float64 ``out``
        of the same number of elements, without temporaries the size of ``x``."""
        flat, dest = x.reshape(-1), out.view(-1)
        step = _BLOCK if x.device.type == "cpu" else max(1, flat.numel())
        for start in range(0, flat.numel(), step):
            self.quantize_block(flat[start : start + step], dest[start : start + step])

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_float_dtype(x, "quantize").contiguous()
        out = torch.empty(x.shape, dtype=torch.float64, device=x.device)
        self.quantize_into(x, out)
        return out

    @single_threaded
    def _round_fast(self, x: torch.Tensor, want_bits: bool) -> torch.Tensor:
        """Shared body of :meth:`encode` (``want_bits``) and :meth:`quantize` (float64 values).

        Large CPU tensors are processed in cache-sized blocks: the ~20 element-wise passes then
        run from cache instead of memory (3-5x faster for 10**7 elements).
        """
        x = self._check_float(x, "encode" if want_bits else "quantize").contiguous()
        if want_bits and self.max_fraction_bits <= _KEY_MAX_FRACTION:
            block = self._encode_keyed
        else:
            block = functools.partial(self._round_block, want_bits=want_bits)
        if x.device.type == "cpu" and x.numel() > _BLOCK:
            flat = x.reshape(-1)
            out = torch.empty(flat.shape, dtype=torch.int64 if want_bits else torch.float64)
            for start in range(0, flat.numel(), _BLOCK):
                out[start : start + _BLOCK] = block(flat[start : start + _BLOCK])
            return out.reshape(x.shape)
        return block(x)

    def _round_block(self, x: torch.Tensor, want_bits: bool) -> torch.Tensor:
        packed_t, special_t = binade_tables(self, x.device)
        xi = x.view(torch.int64)
        biased = (xi >> 52) & 0x7FF
        packed = torch.take(packed_t, biased)
        sh = packed >> 40
        base = packed & ((1 << 38) - 1)
        mant = xi & ((1 << 52) - 1)
        odd = (base + (mant >> sh)) & 1
        half_m1 = (torch.bitwise_left_shift(1, sh) >> 1) - 1
        slow = ((packed >> 38) & 1).bool()
        any_slow = bool(slow.any())
        if want_bits:
            out = base + ((mant + half_m1 + odd) >> sh)
            if any_slow:
                ones = torch.ones(int(slow.sum()), dtype=torch.int64, device=x.device)
                out[slow] = self.round_parts(
                    ~ones.bool(), biased[slow] - 1023, (mant[slow] | (1 << 52)), ~ones.bool()
                )
            neg = xi >> 63  # -1 for negative values, 0 otherwise
            out = ((out ^ neg) - neg) & ((1 << self.nbits) - 1)
            return out * ((xi << 1) != 0)  # +-0 -> 0
        magnitude = xi & ((1 << 63) - 1)
        val = (((magnitude + half_m1 + odd) >> sh) << sh).view(torch.float64)
        val = torch.where(sh == 62, torch.take(special_t, biased), val)
        if any_slow:
            val[slow] = self.decode(self.encode_exact(x[slow].abs()))
        val = torch.where(xi < 0, -val, val)
        return torch.where((xi << 1) == 0, 0.0, val)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Round float values to bit patterns.

        Args:
            x: float tensor (float32 or float64), any shape.
        Returns:
            int64 tensor of the same shape, patterns in ``[0, 2**nbits)``.
        """
        return self._round_fast(x, want_bits=True)

    @single_threaded
    def encode_exact(self, x: torch.Tensor) -> torch.Tensor:
        """Reference encoder: every element through :meth:`round_parts` (slower, same result)."""
        x = self._check_float(x, "encode")
        finite = torch.isfinite(x)
        zero = x == 0
        a = torch.where(finite & ~zero, x.abs(), torch.ones_like(x))
        mant, ex = torch.frexp(a)
        sig = (mant * float(1 << _SIG_BITS)).to(torch.int64)
        scale = ex.to(torch.int64) - 1
        bits = self.round_parts(x < 0, scale, sig, torch.zeros_like(zero))
        bits = torch.where(zero, torch.zeros_like(bits), bits)
        return torch.where(finite, bits, torch.full_like(bits, self.nar))

    # ----------------------------------------------------------------------------- decoding
    @single_threaded
    def decompose(self, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact integer form of patterns: ``value == sig * 2**exp``.

        Returns:
            ``(sig, exp, is_nar)``: int64 signed significands (``|sig| < 2**(nbits-2)``, 0 for zero
            and NaR), int64 exponents, bool NaR mask; all of the shape of ``bits``.
        """
        bits = self._check_bits(bits, "decompose")
        n, es, cap = self.nbits, self.es, self.regime_cap
        body_bits = n - 1
        is_nar = bits == self.nar
        is_zero = bits == 0
        neg = (bits >> (n - 1)) & 1 == 1
        mag = torch.where(neg, (1 << n) - bits, bits) & ((1 << body_bits) - 1)
        first = (mag >> (body_bits - 1)) & 1
        lead = torch.where(first == 1, ~mag & ((1 << body_bits) - 1), mag)
        run = (body_bits - _bit_length(lead)).clamp(max=cap)
        k = torch.where(first == 1, run - 1, -run)
        rest = (body_bits - run - (run < cap).to(torch.int64)).clamp(min=0)
        one = torch.ones_like(rest)
        tail = mag & ((one << rest) - 1)
        has_exp = rest >= es
        frac_bits = (rest - es).clamp(min=0)
        e = torch.where(has_exp, tail >> frac_bits, tail << (es - rest).clamp(min=0))
        frac = torch.where(has_exp, tail & ((one << frac_bits) - 1), torch.zeros_like(tail))
        sig = (one << frac_bits) | frac
        exp = k * (1 << es) + e - frac_bits
        special = is_nar | is_zero
        sig = torch.where(special, torch.zeros_like(sig), torch.where(neg, -sig, sig))
        exp = torch.where(special, torch.zeros_like(exp), exp)
        return sig, exp, is_nar

    @single_threaded
    def decode(self, bits: torch.Tensor) -> torch.Tensor:
        """Values of bit patterns as float64 (exact; NaR -> nan).  Same shape as ``bits``."""
        bits = self._check_bits(bits, "decode")
        if self.nbits > 16:
            if bits.device.type != "cpu" or bits.numel() <= _BLOCK:
                return self._decode_wide(bits)
            flat = bits.reshape(-1)
            out = torch.empty(flat.shape, dtype=torch.float64)
            for start in range(0, flat.numel(), _BLOCK):
                out[start : start + _BLOCK] = self._decode_wide(flat[start : start + _BLOCK])
            return out.reshape(bits.shape)
        table = self._decode_tables.get(bits.device)  # all 2**nbits values
        if table is None:
            table = self._decode_general(torch.arange(1 << self.nbits, device=bits.device))
            self._decode_tables[bits.device] = table
        return torch.take(table, bits)

    def _decode_wide(self, bits: torch.Tensor) -> torch.Tensor:
        """Decode for formats wider than 16 bits: a 2**16-entry table keyed by the top bits of the
        magnitude gives the fraction mask and scale; long regimes fall back to the general path."""
        n = self.nbits
        mask_t, unit_t = top16_tables(self, bits.device)
        sign = -((bits >> (n - 1)) & 1)  # -1 for negative patterns, else 0
        mag = ((bits ^ sign) - sign) & ((1 << (n - 1)) - 1)
        top = mag >> (n - 17)
        low = torch.take(mask_t, top)
        value = ((mag & low) + low + 1).to(torch.float64) * torch.take(unit_t, top)
        value = torch.where(sign < 0, -value, value)
        odd = low < 0
        if bool(odd.any()):
            value[odd] = self._decode_general(bits[odd])
        return value

    def _decode_general(self, bits: torch.Tensor) -> torch.Tensor:
        sig, exp, is_nar = self.decompose(bits)
        power = ((exp + 1023) << 52).view(torch.float64)  # 2**exp, exact: |exp| < 1000 here
        value = sig.to(torch.float64) * power
        return torch.where(is_nar, torch.full_like(value, float("nan")), value)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``: the nearest value of the format, as float64 (NaR -> nan)."""
        return self._quantize(x)


POSIT8 = PositFormat(8, 2, name="posit8")
POSIT16 = PositFormat(16, 2, name="posit16")
POSIT32 = PositFormat(32, 2, name="posit32")
BPOSIT16 = PositFormat(16, 5, rs=6, name="bposit16")
BPOSIT32 = PositFormat(32, 5, rs=6, name="bposit32")
