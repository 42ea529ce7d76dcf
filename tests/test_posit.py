"""Oracle tests for neuro.numerics posit / b-posit formats.

Two oracles: SoftPosit 0.3.4.4 (posit<n,2> via ``posit_2``, legacy ``posit8`` es=0, ``posit16``
es=1, ``posit32`` es=2) and the exact Fraction reference in ``numerics_oracle.py`` (any n, es, rs),
which is itself checked against SoftPosit here.
"""

from __future__ import annotations

import math
import random
import struct
from fractions import Fraction

import pytest
import softposit
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuro.numerics import (
    BPOSIT16,
    BPOSIT32,
    NAMED_FORMATS,
    POSIT8,
    POSIT16,
    POSIT32,
    PositFormat,
)

try:  # tests/ is on sys.path under pytest's default (rootdir-less, no __init__.py) import mode
    from numerics_oracle import RefPosit, floor_log2, sp_legacy, sp_px2_decode, sp_px2_encode
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.numerics_oracle import RefPosit, floor_log2, sp_legacy, sp_px2_decode, sp_px2_encode

F64 = torch.float64
I64 = torch.int64


# ---------------------------------------------------------------------- helpers
def enc(fmt: PositFormat, xs) -> list[int]:
    return fmt.encode(torch.tensor(list(xs), dtype=F64)).tolist()


def dec(fmt: PositFormat, ps) -> list[float]:
    return fmt.decode(torch.tensor(list(ps), dtype=I64)).tolist()


def same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def check_lists(label: str, inputs, got, want, eq=None) -> None:
    """Assert got == want elementwise, reporting the first mismatches with their inputs."""
    eq = eq or (lambda a, b: a == b)
    assert len(got) == len(want) == len(inputs)
    bad = [(i, g, w) for i, g, w in zip(inputs, got, want) if not eq(g, w)]
    assert not bad, f"{label}: {len(bad)} mismatches (input, got, expected), first: {bad[:8]}"


def midpoint_probes(ref: RefPosit) -> list[float]:
    """Every positive rounding midpoint and its two neighbouring doubles, both signs."""
    out = []
    for p in range(1, ref.maxpos_bits):
        m = ref.midpoint(p)
        fm = float(m)
        assert fm == m, f"midpoint {m} of {ref} is not a double"
        for x in (fm, math.nextafter(fm, math.inf), math.nextafter(fm, -math.inf)):
            out.append(x)
            out.append(-x)
    return out


def signed(fmt: PositFormat, bits: int) -> int:
    return bits - (1 << fmt.nbits) if bits >> (fmt.nbits - 1) else bits


# ---------------------------------------------------------------------- constants & API
def test_named_constants():
    assert (POSIT8.nbits, POSIT8.es, POSIT8.rs) == (8, 2, None)
    assert (POSIT16.nbits, POSIT16.es, POSIT16.rs) == (16, 2, None)
    assert (POSIT32.nbits, POSIT32.es, POSIT32.rs) == (32, 2, None)
    assert (BPOSIT16.nbits, BPOSIT16.es, BPOSIT16.rs) == (16, 5, 6)
    assert (BPOSIT32.nbits, BPOSIT32.es, BPOSIT32.rs) == (32, 5, 6)
    for f in (POSIT8, POSIT16, POSIT32, BPOSIT16, BPOSIT32):
        assert f.nar == 1 << (f.nbits - 1)
        assert isinstance(f.maxpos, float) and isinstance(f.minpos, float)
    for name, f in NAMED_FORMATS.items():
        if f is not None:
            assert isinstance(f, PositFormat), name
    assert NAMED_FORMATS["posit16"] is POSIT16
    assert NAMED_FORMATS["bposit32"] is BPOSIT32


@pytest.mark.parametrize("n", [8, 16, 32])
def test_posit_standard_maxpos_minpos(n):
    fmt = PositFormat(n, 2)
    assert fmt.maxpos == 2.0 ** (4 * (n - 2))
    assert fmt.minpos == 2.0 ** (-4 * (n - 2))


def test_bposit_known_values():
    # b-posit paper: Fmin = n - 1 - rs - es
    for fmt, fmin, lo, hi in (
        (BPOSIT16, 4, 1.693e-58, 6.081e57),
        (BPOSIT32, 20, 1.593e-58, 6.277e57),
    ):
        assert fmt.minpos == pytest.approx(lo, rel=1e-3)
        assert fmt.maxpos == pytest.approx(hi, rel=1e-3)
        assert fmt.minpos == (1 + 2.0**-fmin) * 2.0**-192
        assert fmt.maxpos == (2 - 2.0**-fmin) * 2.0**191
        assert dec(fmt, [1, fmt.nar - 1, fmt.nar + 1, (1 << fmt.nbits) - 1]) == [
            fmt.minpos,
            fmt.maxpos,
            -fmt.maxpos,
            -fmt.minpos,
        ]


def test_output_dtypes_and_shapes():
    x = torch.tensor([[1.0, -2.5, 0.0], [3e-5, float("nan"), 7.0]], dtype=F64)
    for fmt in (POSIT8, POSIT16, POSIT32, BPOSIT16, BPOSIT32):
        b = fmt.encode(x)
        assert b.dtype == I64 and b.shape == x.shape
        assert int(b.min()) >= 0 and int(b.max()) < (1 << fmt.nbits)
        d = fmt.decode(b)
        assert d.dtype == F64 and d.shape == x.shape
        q = fmt.quantize(x)
        assert q.dtype == F64 and torch.equal(q.nan_to_num(7.5), d.nan_to_num(7.5))
        assert fmt.encode(torch.tensor(1.0, dtype=F64)).shape == ()
        assert fmt.encode(torch.zeros(0, 3, dtype=F64)).shape == (0, 3)


# ---------------------------------------------------------------------- oracle self-check
@pytest.mark.parametrize("n", [4, 6, 8, 10, 12])
def test_oracle_matches_softposit_px2(n):
    """The Fraction reference agrees with SoftPosit posit_2 (decode; encode at all midpoints)."""
    ref = RefPosit(n, 2)
    pats = range(1 << n)
    check_lists(
        "oracle decode",
        pats,
        [ref.decode_float(p) for p in pats],
        [sp_px2_decode(p, n) for p in pats],
        same_float,
    )
    xs = midpoint_probes(ref)
    check_lists("oracle encode", xs, [ref.encode(x) for x in xs], [sp_px2_encode(x, n) for x in xs])


@pytest.mark.parametrize("n,es,rs", [(8, 2, None), (9, 0, None), (10, 3, 4), (12, 5, 6), (7, 1, 2)])
def test_oracle_encode_brackets(n, es, rs):
    """Oracle self-check: round(x) = p iff x lies between p's midpoints (ties to even)."""
    ref = RefPosit(n, es, rs)
    rng = random.Random(n * 100 + es)
    for p in range(1, ref.maxpos_bits + 1):
        lo = ref.midpoint(p - 1) if p > 1 else 0
        hi = ref.midpoint(p) if p < ref.maxpos_bits else ref.maxpos * 4
        for _ in range(3):
            t = lo + (hi - lo) * rng.random()
            if t != 0:
                assert ref.encode(t) == p
        for edge in (lo, hi):
            if edge == 0 or edge == ref.maxpos * 4:
                continue
            got = ref.encode(edge)
            assert got in (p, p - 1, p + 1)
            if got != p:  # a tie goes to the even neighbour
                assert got % 2 == 0 and p % 2 == 1


# ---------------------------------------------------------------------- posit<n,2> vs SoftPosit
PX2_NS = [8, 10, 12, 16]


@pytest.mark.parametrize("n", PX2_NS)
def test_px2_decode_exhaustive(n):
    fmt = PositFormat(n, 2)
    pats = list(range(1 << n))
    want = [sp_px2_decode(p, n) for p in pats]
    check_lists(f"posit<{n},2> decode", pats, dec(fmt, pats), want, same_float)
    assert math.isnan(dec(fmt, [fmt.nar])[0])


@pytest.mark.parametrize("n", PX2_NS)
def test_px2_roundtrip_exhaustive(n):
    fmt = PositFormat(n, 2)
    pats = torch.arange(1 << n, dtype=I64)
    back = fmt.encode(fmt.decode(pats))
    bad = (back != pats).nonzero().flatten().tolist()
    assert not bad, f"posit<{n},2> encode(decode(p)) != p for p in {bad[:10]}"


@pytest.mark.parametrize("n", PX2_NS)
def test_px2_midpoints_exhaustive(n):
    fmt = PositFormat(n, 2)
    ref = RefPosit(n, 2)
    # The midpoints themselves cross-checked with SoftPosit's (n+1)-bit decode.
    for p in range(1, ref.maxpos_bits, max(1, ref.maxpos_bits // 257)):
        assert ref.midpoint(p) == sp_px2_decode(2 * p + 1, n + 1)
    xs = midpoint_probes(ref)
    want = [sp_px2_encode(x, n) for x in xs]
    check_lists(f"posit<{n},2> encode at midpoints", xs, enc(fmt, xs), want)


@pytest.mark.parametrize("n,es", [(8, 0), (16, 1)])
def test_legacy_softposit_exhaustive(n, es):
    """SoftPosit's legacy posit8 (es=0) and posit16 (es=1): decode, round trip, every midpoint."""
    fmt = PositFormat(n, es)
    ref = RefPosit(n, es)
    sp_enc, sp_dec = sp_legacy(n)
    pats = list(range(1 << n))
    check_lists(f"posit<{n},{es}> decode", pats, dec(fmt, pats), [sp_dec(p) for p in pats], same_float)
    t = torch.tensor(pats, dtype=I64)
    assert torch.equal(fmt.encode(fmt.decode(t)), t)
    xs = midpoint_probes(ref)
    check_lists(f"posit<{n},{es}> midpoints", xs, enc(fmt, xs), [sp_enc(x) for x in xs])


def _random_doubles(rng: random.Random, count: int, lo_exp: int, hi_exp: int) -> list[float]:
    """Doubles with random 52-bit mantissas, exponents uniform in [lo_exp, hi_exp], random signs."""
    out = []
    for _ in range(count):
        e = rng.randint(lo_exp, hi_exp)
        m = rng.getrandbits(52)
        bits = ((e + 1023) << 52) | m | (rng.getrandbits(1) << 63)
        out.append(struct.unpack("<d", struct.pack("<Q", bits))[0])
    return out


def _posit32_check(count: int, seed: int) -> None:
    rng = random.Random(seed)
    sp_enc, sp_dec = sp_legacy(32)
    # random doubles over and beyond the posit32 range (2**-120 .. 2**120)
    xs = _random_doubles(rng, count, -126, 126)
    # midpoints between random neighbours (geometric ones too) and their neighbouring doubles
    ref = RefPosit(32, 2)
    for _ in range(count // 20):
        p = rng.randrange(1, ref.maxpos_bits)
        m = float(ref.midpoint(p))
        xs += [m, -m, math.nextafter(m, math.inf), math.nextafter(m, 0.0)]
    check_lists("posit32 encode", xs, enc(POSIT32, xs), [sp_enc(x) for x in xs])
    pats = (
        [rng.getrandbits(32) for _ in range(count)]
        + list(range(64))
        + [(1 << 32) - i for i in range(1, 64)]
        + [(1 << 31) + d for d in range(-64, 64)]
    )
    check_lists("posit32 decode", pats, dec(POSIT32, pats), [sp_dec(p) for p in pats], same_float)


def test_posit32_random_vs_softposit():
    _posit32_check(100_000, seed=32)


@pytest.mark.slow
def test_posit32_random_vs_softposit_1e6():
    _posit32_check(1_000_000, seed=3232)


# ---------------------------------------------------------------------- saturation & specials
ALL_FORMATS = [
    POSIT8,
    POSIT16,
    POSIT32,
    BPOSIT16,
    BPOSIT32,
    PositFormat(8, 0),
    PositFormat(16, 1),
    PositFormat(5, 3, rs=2),
    PositFormat(20, 5),
    PositFormat(2, 0),
    PositFormat(3, 1),
]


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=repr)
def test_saturation_and_specials(fmt):
    n = fmt.nbits
    maxp, minp = (1 << (n - 1)) - 1, 1
    neg = lambda p: (-p) & ((1 << n) - 1)  # noqa: E731
    huge = [
        fmt.maxpos * 1.0000001,
        fmt.maxpos * 2,
        fmt.maxpos * 1e30,
        1e300,
        1.7976931348623157e308,
    ]
    tiny = [
        fmt.minpos * 0.9999999,
        fmt.minpos / 2,
        fmt.minpos * 1e-30,
        1e-300,
        5e-324,
        2.2250738585072014e-308,
        math.nextafter(fmt.minpos, 0.0),
        fmt.minpos * 0.75,
        fmt.minpos * 0.5000001,
    ]
    # the power of two at or below minpos (a b-posit minpos is not a power of two)
    low = math.ldexp(0.5, math.frexp(fmt.minpos)[1])
    tiny += [low, math.nextafter(low, math.inf), math.nextafter(low, 0.0)]
    assert enc(fmt, huge) == [maxp] * len(huge)
    assert enc(fmt, [-x for x in huge]) == [neg(maxp)] * len(huge)
    assert enc(fmt, tiny) == [minp] * len(tiny)
    assert enc(fmt, [-x for x in tiny]) == [neg(minp)] * len(tiny)
    assert enc(fmt, [math.nan, math.inf, -math.inf, -math.nan]) == [fmt.nar] * 4
    assert enc(fmt, [0.0, -0.0]) == [0, 0]
    assert enc(fmt, [fmt.maxpos, -fmt.maxpos, fmt.minpos, -fmt.minpos]) == [
        maxp,
        neg(maxp),
        minp,
        neg(minp),
    ]
    assert dec(fmt, [maxp, minp, 0]) == [fmt.maxpos, fmt.minpos, 0.0]
    q = fmt.quantize(torch.tensor([math.nan, math.inf, 0.0, -0.0], dtype=F64)).tolist()
    assert math.isnan(q[0]) and math.isnan(q[1]) and q[2] == 0 and q[3] == 0


@pytest.mark.parametrize(
    "fmt", [POSIT8, POSIT16, POSIT32, BPOSIT16, BPOSIT32, PositFormat(12, 3, rs=4)], ids=repr
)
def test_float32_input_equals_float64(fmt):
    g = torch.Generator().manual_seed(fmt.nbits * 7 + fmt.es)
    bits = torch.randint(0, 1 << 32, (50_000,), generator=g, dtype=I64)
    bits = torch.where(bits >= (1 << 31), bits - (1 << 32), bits).to(torch.int32)
    x32 = bits.view(torch.float32)  # every float32 class: normals, subnormals, inf, nan
    x32 = torch.cat([x32, torch.tensor([0.0, -0.0, 1.0, -1.0, 3.4028235e38, 1e-45, -1e-45])])
    a = fmt.encode(x32)
    b = fmt.encode(x32.to(F64))
    assert a.dtype == I64
    bad = (a != b).nonzero().flatten()[:8].tolist()
    assert not bad, [(float(x32[i]), int(a[i]), int(b[i])) for i in bad]


# ---------------------------------------------------------------------- b-posits (Fraction oracle)
BPOSIT_SMALL = [PositFormat(n, 5, rs=6) for n in (8, 10, 12)]


@pytest.mark.parametrize("fmt", BPOSIT_SMALL + [BPOSIT16], ids=repr)
def test_bposit_decode_exhaustive(fmt):
    ref = RefPosit(fmt.nbits, 5, 6)
    pats = list(range(1 << fmt.nbits))
    check_lists(f"{fmt!r} decode", pats, dec(fmt, pats), [ref.decode_float(p) for p in pats], same_float)
    t = torch.tensor(pats, dtype=I64)
    assert torch.equal(fmt.encode(fmt.decode(t)), t)


@pytest.mark.parametrize("fmt", BPOSIT_SMALL + [BPOSIT16], ids=repr)
def test_bposit_midpoints_exhaustive(fmt):
    ref = RefPosit(fmt.nbits, 5, 6)
    xs = midpoint_probes(ref)
    check_lists(f"{fmt!r} midpoints", xs, enc(fmt, xs), [ref.encode(x) for x in xs])


def test_bposit16_midpoints_are_arithmetic():
    """es=5, rs=6, n=16 never cuts exponent bits off: midpoints are arithmetic means."""
    ref = RefPosit(16, 5, 6)
    for p in range(1, ref.maxpos_bits):
        assert ref.midpoint(p) == (ref.decode(p) + ref.decode(p + 1)) / 2


def test_bposit32_random_vs_oracle():
    ref = RefPosit(32, 5, 6)
    rng = random.Random(5)
    pats = (
        [rng.getrandbits(32) for _ in range(20_000)]
        + list(range(40))
        + [(1 << 31) + d for d in range(-40, 40)]
    )
    check_lists(
        "bposit32 decode",
        pats,
        dec(BPOSIT32, pats),
        [ref.decode_float(p) for p in pats],
        same_float,
    )
    xs = _random_doubles(rng, 20_000, -200, 200)
    for _ in range(2_000):
        p = rng.randrange(1, ref.maxpos_bits)
        m = float(ref.midpoint(p))
        xs += [m, -m, math.nextafter(m, math.inf), math.nextafter(m, 0.0)]
    check_lists("bposit32 encode", xs, enc(BPOSIT32, xs), [ref.encode(x) for x in xs])


# ---------------------------------------------------------------------- cut binades
CUT_FORMATS = [
    POSIT8,
    PositFormat(6, 2),
    PositFormat(5, 3),
    PositFormat(10, 2),  # more fraction bits than the one-lookup encoder takes: general path
    POSIT16,
    PositFormat(8, 5, rs=6),
    PositFormat(10, 5, rs=6),
    PositFormat(9, 4, rs=5),
]


def cut_binade_probes(ref: RefPosit, rng: random.Random) -> list[float]:
    """Doubles in every binade [2**s, 2**(s+1)) holding at most one value of the format (exponent
    bits cut off by the word's end), and one binade past each end: the binade's ends, every
    rounding threshold inside it with its neighbouring doubles, and random doubles; both signs."""
    values = sorted(ref.decode(p) for p in range(1, ref.maxpos_bits + 1))
    lo, hi = floor_log2(values[0]) - 1, floor_log2(values[-1]) + 1
    counts: dict[int, int] = {}
    for v in values:
        counts[floor_log2(v)] = counts.get(floor_log2(v), 0) + 1
    cut = [s for s in range(lo, hi + 1) if counts.get(s, 0) <= 1]
    edges = [ref.midpoint(p) for p in range(1, ref.maxpos_bits)]
    out = []
    for s in cut:
        start, stop = math.ldexp(1.0, s), math.ldexp(1.0, s + 1)
        xs = [start, math.nextafter(start, 0.0), math.nextafter(start, math.inf), math.nextafter(stop, 0.0)]
        for m in edges:
            if floor_log2(m) == s:
                fm = float(m)
                xs += [fm, math.nextafter(fm, 0.0), math.nextafter(fm, math.inf)]
        xs += [math.ldexp(1.0 + rng.random(), s) for _ in range(16)]
        out += xs + [-x for x in xs]
    return out


@pytest.mark.parametrize("fmt", CUT_FORMATS, ids=repr)
def test_cut_binades(fmt):
    """Binades whose exponent bits the format cuts (beyond ~2**+-16 for posit8): encode and
    quantize against the Fraction oracle, and against SoftPosit for posit<n,2>."""
    ref = RefPosit(fmt.nbits, fmt.es, fmt.rs)
    xs = cut_binade_probes(ref, random.Random(fmt.nbits * 64 + fmt.es))
    assert len(xs) > 3 * 40  # some binade inside the range is cut (2 are past its ends)
    want = [ref.encode(x) for x in xs]
    check_lists(f"{fmt!r} cut binades", xs, enc(fmt, xs), want)
    if fmt.es == 2 and fmt.rs is None:
        check_lists(f"{fmt!r} cut binades vs SoftPosit", xs, want, [sp_px2_encode(x, fmt.nbits) for x in xs])
    q = fmt.quantize(torch.tensor(xs, dtype=F64)).tolist()
    check_lists(f"{fmt!r} cut binades quantize", xs, q, [float(ref.decode(w)) for w in want])


@pytest.mark.parametrize(
    "fmt", [POSIT8, PositFormat(6, 2), PositFormat(5, 3), PositFormat(7, 4, rs=3)], ids=repr
)
def test_one_lookup_encoder_random_bits(fmt):
    """The one-lookup encoder of small formats equals the exact encoder on every float64 class
    (random 64-bit patterns: normals of all exponents, subnormals, zeros, infinities, NaNs)."""
    assert fmt.max_fraction_bits <= 4  # takes the one-lookup path
    g = torch.Generator().manual_seed(fmt.nbits)
    bits = torch.randint(-(1 << 63), (1 << 63) - 1, (200_000,), generator=g, dtype=I64)
    near = torch.randint(-64, 64, (200_000,), generator=g, dtype=I64)  # exponents near the range
    bits = torch.cat([bits, (bits & ~(0x7FF << 52)) | ((near + 1023) << 52)])
    x = bits.view(F64)
    assert torch.equal(fmt.encode(x), fmt.encode_exact(x))


@pytest.mark.parametrize(
    "n", [*range(2, 10), pytest.param(10, marks=pytest.mark.slow), pytest.param(11, marks=pytest.mark.slow)]
)
def test_small_generic_formats_exhaustive(n):
    """Every (es, rs) for small n: decode, decompose and every midpoint vs the oracle."""
    for es in range(6):
        for rs in [None] + list(range(1, n)):
            fmt = PositFormat(n, es, rs)
            ref = RefPosit(n, es, rs)
            pats = list(range(1 << n))
            check_lists(
                f"{fmt!r} decode",
                pats,
                dec(fmt, pats),
                [ref.decode_float(p) for p in pats],
                same_float,
            )
            sig, ex, nar = fmt.decompose(torch.tensor(pats, dtype=I64))
            for p, s, e, isn in zip(pats, sig.tolist(), ex.tolist(), nar.tolist()):
                assert isn == (p == ref.nar), (fmt, p)
                if not isn:
                    v = ref.decode(p)
                    assert Fraction(s) * Fraction(2) ** e == v, (fmt, p, s, e, v)
            if n >= 3:
                xs = midpoint_probes(ref)
                check_lists(f"{fmt!r} midpoints", xs, enc(fmt, xs), [ref.encode(x) for x in xs])


@pytest.mark.parametrize("fmt", [POSIT16, BPOSIT16, PositFormat(16, 1), PositFormat(16, 0)], ids=repr)
def test_decompose_exhaustive(fmt):
    ref = RefPosit(fmt.nbits, fmt.es, fmt.rs)
    pats = list(range(1 << fmt.nbits))
    sig, ex, nar = fmt.decompose(torch.tensor(pats, dtype=I64))
    assert sig.dtype == I64 and ex.dtype == I64 and nar.dtype == torch.bool
    assert nar.nonzero().flatten().tolist() == [fmt.nar]
    for p, s, e in zip(pats, sig.tolist(), ex.tolist()):
        if p == fmt.nar:
            continue
        assert Fraction(s) * (Fraction(2) ** e) == ref.decode(p), (p, s, e)


def test_rs_at_least_body_is_plain_posit():
    a, b = PositFormat(10, 2), PositFormat(10, 2, rs=9)
    pats = torch.arange(1 << 10, dtype=I64)
    assert torch.equal(a.decode(pats).nan_to_num(3.0), b.decode(pats).nan_to_num(3.0))


# ---------------------------------------------------------------------- hypothesis properties
@st.composite
def formats(draw):
    n = draw(st.integers(3, 20))
    es = draw(st.integers(0, 5))
    rs = draw(st.one_of(st.none(), st.integers(2, n - 1)))
    return PositFormat(n, es, rs), RefPosit(n, es, rs)


@st.composite
def values_for(draw, ref: RefPosit):
    """A double near the format's range: random, a format value, a midpoint or its neighbour."""
    kind = draw(st.integers(0, 4))
    lo = math.floor(math.log2(float(ref.minpos))) - 4
    hi = math.ceil(math.log2(float(ref.maxpos))) + 4
    if kind == 0:
        m = draw(st.floats(1.0, 2.0, exclude_max=True))
        x = math.ldexp(m, draw(st.integers(lo, hi)))
    elif kind == 1:
        x = draw(st.floats(allow_nan=False, allow_infinity=False))
    elif kind == 4:  # around the saturation edges
        edge = float(draw(st.sampled_from([ref.minpos, ref.maxpos])))
        x = edge * draw(st.floats(0.25, 4.0))
    else:
        p = draw(st.integers(1, ref.maxpos_bits - 1))  # n >= 3: at least 3 positive patterns
        x = float(ref.midpoint(p)) if kind == 2 else float(ref.decode(p))
        if draw(st.booleans()):
            x = math.nextafter(x, draw(st.sampled_from([math.inf, -math.inf])))
    return -x if draw(st.booleans()) else x


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.data())
def test_hyp_encode_matches_fraction_reference(data):
    fmt, ref = data.draw(formats())
    xs = data.draw(st.lists(values_for(ref), min_size=1, max_size=20))
    check_lists(repr(fmt), xs, enc(fmt, xs), [ref.encode(x) for x in xs])
    q = fmt.quantize(torch.tensor(xs, dtype=F64)).tolist()
    check_lists(repr(fmt) + " quantize", xs, q, [float(ref.round(x)) for x in xs])


@SETTINGS
@given(st.data())
def test_hyp_encode_monotone(data):
    fmt, ref = data.draw(formats())
    xs = sorted(data.draw(st.lists(values_for(ref), min_size=2, max_size=30)))
    codes = [signed(fmt, b) for b in enc(fmt, xs)]
    assert codes == sorted(codes), list(zip(xs, codes))


@SETTINGS
@given(st.data())
def test_hyp_quantize_idempotent(data):
    fmt, ref = data.draw(formats())
    x = torch.tensor(data.draw(st.lists(values_for(ref), min_size=1, max_size=30)), dtype=F64)
    q1 = fmt.quantize(x)
    assert torch.equal(fmt.quantize(q1), q1)
    assert torch.equal(fmt.encode(q1), fmt.encode(x))
    assert torch.equal(fmt.encode(-x), (-fmt.encode(x)) & ((1 << fmt.nbits) - 1))  # symmetric


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_hyp_named_formats_nearest(x):
    for fmt in (POSIT8, POSIT16, POSIT32, BPOSIT16, BPOSIT32):
        ref = RefPosit(fmt.nbits, fmt.es, fmt.rs)
        assert enc(fmt, [x]) == [ref.encode(x)], (fmt, x)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "args,word",
    [
        ((1, 2), "nbits"),
        ((33, 2), "nbits"),
        ((0, 2), "nbits"),
        ((16, 6), "es"),
        ((16, -1), "es"),
        ((16, 5, 0), "rs"),
    ],
)
def test_bad_format_raises(args, word):
    with pytest.raises(ValueError, match=word):
        PositFormat(*args)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_encode_rejects_non_float(dtype):
    with pytest.raises(ValueError, match="dtype"):
        POSIT16.encode(torch.ones(3, dtype=dtype))


def test_decode_rejects_float():
    with pytest.raises(ValueError, match="dtype"):
        POSIT16.decode(torch.ones(3, dtype=F64))


def test_softposit_signatures():
    """Pin the SoftPosit calling conventions the oracles rely on."""
    assert softposit.posit_2(1.5, 16).v.v >> 16 == 0x4400
    assert float(softposit.posit_2(bits=0x4400, x=16)) == 1.5
    assert softposit.posit8(1.0).v.v == 0x40 and softposit.posit16(1.0).v.v == 0x4000
    assert softposit.posit32(1.0).v.v == 0x40000000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fmt", [POSIT16, BPOSIT16, PositFormat(16, 1)], ids=repr)
def test_cuda_matches_cpu_exhaustive(fmt):
    pats = torch.arange(1 << fmt.nbits, dtype=I64)
    cpu = fmt.decode(pats)
    gpu = fmt.decode(pats.cuda())
    assert gpu.device.type == "cuda"
    assert torch.equal(gpu.cpu().nan_to_num(0.5), cpu.nan_to_num(0.5))
    xs = torch.tensor(midpoint_probes(RefPosit(fmt.nbits, fmt.es, fmt.rs)), dtype=F64)
    assert torch.equal(fmt.encode(xs.cuda()).cpu(), fmt.encode(xs))
