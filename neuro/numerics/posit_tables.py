"""Lookup tables of the posit encoder, decoder and fast rounding paths (built once per format and
device, from the exact encoder; cached).  :class:`~neuro.numerics.posit.PositFormat` uses them."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from neuro.numerics.posit import PositFormat

__all__ = ["binade_tables", "key_table", "magic_table", "top16_tables"]


@functools.cache
def key_table(fmt: PositFormat, device: torch.device) -> torch.Tensor:
    """Encoder table for formats with few fraction bits (``F = max_fraction_bits``), indexed by
    ``key = 2 * (float64 bits >> L) + sticky`` over the sign, exponent and top ``F + 1``
    mantissa bits (``L = 51 - F``), ``sticky`` = any of the ``L`` lower bits set.

    Every rounding boundary of the format (a midpoint between neighbours, on the bit string)
    has at most ``F + 1`` fraction bits, so the key decides the pattern; zero, subnormals,
    saturation and NaR are entries like any other.  Built from :meth:`PositFormat.encode_exact` at
    both ends of each key's interval, which must agree (checked: rounding is monotone).
    ``2**(14 + F)`` int64 entries (1 MiB for posit8).
    """
    low = 51 - fmt.max_fraction_bits
    per_row = 1 << (53 - low)  # keys per float64 exponent: top mantissa bits and sticky
    lo = max(1, fmt.min_scale - 1 + 1023)  # rows outside [lo, hi] saturate
    hi = min(2046, fmt.max_scale + 1 + 1023)
    rows = torch.tensor([0, *range(lo, hi + 1), 2047], dtype=torch.int64)
    keys = torch.arange(per_row, dtype=torch.int64)
    grid = (rows[:, None] << 52) | ((keys >> 1) << low)
    sticky = keys & 1
    first = fmt.encode_exact((grid | sticky).view(torch.float64))
    last = fmt.encode_exact((grid | sticky * ((1 << low) - 1)).view(torch.float64))
    if not torch.equal(first, last):
        raise AssertionError(f"{fmt.name}: a rounding boundary falls inside an encoder key")
    pos = torch.empty(2048, per_row, dtype=torch.int64)
    pos[1:lo] = 1
    pos[hi + 1 : 2047] = fmt.maxpos_bits
    pos[rows] = first
    neg = ((1 << fmt.nbits) - pos) & ((1 << fmt.nbits) - 1)
    table = torch.cat([pos.reshape(-1), neg.reshape(-1)]).to(device)
    return table


@functools.cache
def binade_tables(fmt: PositFormat, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables indexed by the biased float64 exponent (0..2047) for the fast rounding path.

    In a binade ``[2**s, 2**(s+1))`` whose exponent field is complete (and whose successor's
    is too), the format is a grid of ``F(s)`` fraction bits on which consecutive patterns step
    by one: rounding is round-to-nearest-even of the float's 52-bit mantissa at
    ``sh = 52 - F`` bits, and the pattern is ``base(s)`` plus the rounded fraction (a carry
    lands on the next pattern).  ``packed`` holds ``base | slow << 38 | sh << 40``; ``slow``
    marks binades near minpos/maxpos (cut exponent bits, bounded regimes) that go through
    :meth:`PositFormat.round_parts`.  Zero, subnormals, out-of-range values, inf and NaN get a
    constant pattern through ``sh = 62``.  ``special`` is the float value for those.
    """

    def binade(s: int) -> tuple[bool, int, int]:
        if not fmt.min_scale < s < fmt.max_scale:
            return False, 0, 0
        k, e = divmod(s, 1 << fmt.es)
        run = k + 1 if k >= 0 else -k
        term = 1 if run < fmt.regime_cap else 0
        avail = fmt.nbits - 1 - run - term
        if avail < fmt.es:
            return False, 0, 0
        f = avail - fmt.es
        regime = ((1 << run) - 1) << term if k >= 0 else term
        return True, f, (regime << avail) | (e << f)

    packed, special = [], []
    for biased in range(2048):
        s = biased - 1023
        if biased == 2047:
            packed.append(fmt.nar | 62 << 40)
            special.append(float("nan"))
        elif biased == 0 or s < fmt.min_scale:
            packed.append(1 | 62 << 40)  # subnormals and tiny values -> minpos (0 -> 0 below)
            special.append(fmt.minpos)
        elif s > fmt.max_scale:
            packed.append(fmt.maxpos_bits | 62 << 40)
            special.append(fmt.maxpos)
        else:
            ok, f, base = binade(s)
            ok_next, _, base_next = binade(s + 1)
            if ok and s + 1 < fmt.max_scale and not (ok_next and base_next == base + (1 << f)):
                ok = False  # a carry out of this binade would not land on 2**(s+1)
            packed.append(base | (0 if ok else 1) << 38 | (52 - f) << 40)
            special.append(0.0)
    tables = (
        torch.tensor(packed, dtype=torch.int64, device=device),
        torch.tensor(special, dtype=torch.float64, device=device),
    )
    return tables


@functools.cache
def magic_table(fmt: PositFormat, device: torch.device, single: bool = False) -> torch.Tensor:
    """Rounding constants for :meth:`PositFormat.quantize_block`, indexed by
    ``((|x|_bits - 1) >> m) + 1``
    (``m`` = 52 mantissa bits for float64, 23 for float32 when ``single``).

    Index 0 holds exact zero, index ``i >= 1`` the interval ``(2**(s-1), 2**s]`` with
    ``s = i - bias`` (a power of two shares the index of the binade below it).  Where that
    binade ``[2**(s-1), 2**s)`` is a fast binade of :func:`binade_tables` with ``F >= 1``
    fraction bits (so ties-to-even on the fraction is ties-to-even on the pattern) and
    ``2**s`` is a value of the format, ``C = 1.5 * 2**(s - 1 - F + m)``: ``(x + C) - C`` is
    then ``x`` rounded to a multiple of ``2**(s - 1 - F)`` by the float unit's own
    round-to-nearest-even, for either sign (``|x| <= 2**s <= C / 3`` needs ``F <= m - 2``).
    Every other entry (subnormals, saturation, slow binades, inf/NaN, binades the float type
    cannot round at) is NaN and sends the offending elements to :meth:`PositFormat._round_block`.
    """
    packed = binade_tables(fmt, torch.device("cpu"))[0].tolist()
    powers = torch.tensor(
        [2.0 ** (i - 1023) if -1074 <= i - 1023 < 1024 else 1.0 for i in range(2049)], dtype=torch.float64
    )
    exact = (fmt.decode(fmt.encode_exact(powers)) == powers).tolist()
    mbits, bias, size, dtype = (
        (23, 127, 257, torch.float32) if single else (52, 1023, 2049, torch.float64)
    )
    table = [0.0] + [float("nan")] * (size - 1)
    for i in range(2, size - 1):
        s = i - bias  # the entry covers (2**(s-1), 2**s]
        word = packed[s - 1 + 1023]
        sh, slow = word >> 40, (word >> 38) & 1
        f = 52 - sh
        if sh >= 62 or slow or not 1 <= f <= mbits - 2 or not exact[s + 1023]:
            continue
        c_exp = s - 1 - f + mbits
        if single and not -126 <= c_exp <= 127:
            continue
        table[i] = 1.5 * 2.0**c_exp
    out = torch.tensor(table, dtype=dtype, device=device)
    return out


@functools.cache
def top16_tables(fmt: PositFormat, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For formats wider than 16 bits: per value of the top 16 bits of the magnitude's body,
    ``low_mask`` (the fraction field's mask, -1 where the regime and exponent do not end within
    those 16 bits) and ``unit`` (the weight ``2**(scale - F)`` of the fraction's last bit)."""
    rest = fmt.nbits - 1 - 16  # body bits below the top 16
    masks, units = [], []
    for top in range(1 << 16):
        first = top >> 15
        run = 0
        while run < 16 and ((top >> (15 - run)) & 1) == first:
            run += 1
        run = min(run, fmt.regime_cap)
        term = 1 if run < fmt.regime_cap else 0
        head = run + term + fmt.es  # regime, terminator and exponent bits
        if top == 0 or head > 16 or (run == 16 and run < fmt.regime_cap):
            masks.append(-1)
            units.append(0.0)
            continue
        k = run - 1 if first else -run
        e = (top >> (16 - head)) & ((1 << fmt.es) - 1) if fmt.es else 0
        frac_bits = 16 - head + rest
        masks.append((1 << frac_bits) - 1)
        units.append(2.0 ** ((k << fmt.es) + e - frac_bits))
    tables = (
        torch.tensor(masks, dtype=torch.int64, device=device),
        torch.tensor(units, dtype=torch.float64, device=device),
    )
    return tables
