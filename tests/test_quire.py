"""Oracle tests for neuro.numerics.Quire: exact accumulation against a Fraction reference.

Every expected value is computed from the exact reference in ``numerics_oracle.py``: inputs are
rounded one by one to the format (``RefPosit.round``), products and sums are exact Fractions, and
the read-out is the reference's correctly rounded encode of the exact sum.  SoftPosit's
``quire_2(16)`` is a second oracle for posit<16,2>.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction
from unittest import mock

import pytest
import softposit
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuro.numerics import BPOSIT16, BPOSIT32, POSIT8, POSIT16, POSIT32, PositFormat, Quire
from neuro.numerics import outer as outer_module

try:  # tests/ is on sys.path under pytest's default import mode
    from numerics_oracle import RefPosit, limbs_of, limbs_values, pow2
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.numerics_oracle import RefPosit, limbs_of, limbs_values, pow2

F64 = torch.float64
I64 = torch.int64


# ---------------------------------------------------------------------- helpers
def ref_of(fmt: PositFormat) -> RefPosit:
    return RefPosit(fmt.nbits, fmt.es, fmt.rs)


def t64(x) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


def flat(t: torch.Tensor) -> list:
    return t.reshape(-1).tolist()


def exact_float(v: Fraction | None) -> float:
    """IEEE double nearest to v (ties to even; overflow -> inf); None (NaR) -> nan."""
    if v is None:
        return math.nan
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def check_quire(q: Quire, ref: RefPosit, sums: list[Fraction | None], label: str = "") -> None:
    """to_bits, to_float, nar and the exact limb value of every accumulator vs the reference."""
    want_bits = [ref.nar if s is None else ref.encode(s) for s in sums]
    got_bits = flat(q.to_bits())
    bad = [(i, g, w, s) for i, (g, w, s) in enumerate(zip(got_bits, want_bits, sums)) if g != w]
    assert not bad, f"{label} to_bits (index, got, expected, exact sum): {bad[:6]}"
    got_f = flat(q.to_float())
    want_f = [exact_float(s) for s in sums]
    bad = [
        (i, g, w, s)
        for i, (g, w, s) in enumerate(zip(got_f, want_f, sums))
        if not (g == w or (math.isnan(g) and math.isnan(w)))
    ]
    assert not bad, f"{label} to_float (index, got, expected, exact sum): {bad[:6]}"
    assert flat(q.nar) == [s is None for s in sums], label
    vals = limbs_values(q.limbs, q.offset)
    bad = [(i, v, s) for i, (v, s) in enumerate(zip(vals, sums)) if s is not None and v != s]
    assert not bad, f"{label} limb value (index, got, exact): {bad[:6]}"
    check_normalized(q)


def check_normalized(q: Quire) -> None:
    """The documented normal form: low limbs in [0, 2**32), the top limb signed 32-bit."""
    limbs = q.limbs
    assert limbs.dtype == I64 and tuple(limbs.shape[:-1]) == tuple(q.shape)
    if limbs.shape[-1]:
        low, top = limbs[..., :-1], limbs[..., -1]
        assert bool(((low >= 0) & (low < 2**32)).all()), "low limbs not in [0, 2**32)"
        assert bool(((top >= -(2**31)) & (top < 2**31)).all()), "top limb not signed 32-bit"


def rounded(ref: RefPosit, xs: list[float]) -> list[Fraction | None]:
    return [ref.round(x) for x in xs]


def mul(*vs: Fraction | None) -> Fraction | None:
    out = Fraction(1)
    for v in vs:
        if v is None:
            return None
        out *= v
    return out


def add_all(vs) -> Fraction | None:
    total = Fraction(0)
    for v in vs:
        if v is None:
            return None
        total += v
    return total


# ---------------------------------------------------------------------- strategies
Q_FORMATS = [
    POSIT8,
    POSIT16,
    POSIT32,
    BPOSIT16,
    BPOSIT32,
    PositFormat(6, 1),
    PositFormat(10, 3, rs=3),
    PositFormat(12, 0),
]


@st.composite
def mixed_value(draw, ref: RefPosit):
    """Mixed magnitudes: anywhere in (and beyond) the range, format values, edges, zero."""
    kind = draw(st.integers(0, 5))
    lo = math.floor(math.log2(float(ref.minpos))) - 3
    hi = math.ceil(math.log2(float(ref.maxpos))) + 3
    if kind == 0:
        x = math.ldexp(draw(st.floats(1.0, 2.0, exclude_max=True)), draw(st.integers(lo, hi)))
    elif kind == 1:
        x = float(ref.decode(draw(st.integers(1, ref.maxpos_bits))))
    elif kind == 2:
        x = float(draw(st.sampled_from([ref.minpos, ref.maxpos, Fraction(1)])))
    elif kind == 3:
        x = 0.0
    elif kind == 4:  # tiny
        x = math.ldexp(draw(st.floats(1.0, 2.0, exclude_max=True)), draw(st.integers(lo, lo + 12)))
    else:  # moderate
        x = draw(st.floats(-4.0, 4.0))
    return -x if draw(st.booleans()) else x


@st.composite
def term_lists(draw, ref: RefPosit, count: int, arity: int):
    """`count` tuples of `arity` values; some are repeated with one factor negated (cancellation)."""
    terms = [tuple(draw(mixed_value(ref)) for _ in range(arity)) for _ in range(count)]
    if count and draw(st.booleans()):
        for i in draw(st.lists(st.integers(0, count - 1), max_size=count)):
            t = terms[i]
            terms.append((-t[0],) + t[1:])
    draw(st.randoms(use_true_random=False)).shuffle(terms)
    return terms


QSET = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------- hypothesis: exact sums
@QSET
@given(st.data())
def test_hyp_add(data):
    fmt = data.draw(st.sampled_from(Q_FORMATS), label="fmt")
    ref = ref_of(fmt)
    shape = data.draw(st.sampled_from([(), (3,), (2, 2)]), label="shape")
    size = math.prod(shape)
    k = data.draw(st.integers(1, 12), label="K")
    cols = [[t[0] for t in data.draw(term_lists(ref, k, 1))] for _ in range(size)]
    kk = min(len(c) for c in cols)
    cols = [c[:kk] for c in cols]
    x = torch.tensor([[c[i] for c in cols] for i in range(kk)], dtype=F64).reshape(kk, *shape)
    q = Quire(fmt, shape)
    q.add(x)
    sums = [add_all(rounded(ref, c)) for c in cols]
    check_quire(q, ref, sums, f"{fmt!r} add")
    # a second add of the same terms (as one-row tensors) doubles every sum
    for i in range(kk):
        q.add(x[i])
    check_quire(q, ref, [2 * s for s in sums], f"{fmt!r} add twice")


@QSET
@given(st.data())
def test_hyp_fma(data):
    fmt = data.draw(st.sampled_from(Q_FORMATS), label="fmt")
    ref = ref_of(fmt)
    m = data.draw(st.integers(1, 3), label="M")
    terms = [data.draw(term_lists(ref, data.draw(st.integers(1, 10)), 2)) for _ in range(m)]
    k = min(len(t) for t in terms)
    a = torch.tensor([[terms[j][i][0] for j in range(m)] for i in range(k)], dtype=F64)
    b = torch.tensor([[terms[j][i][1] for j in range(m)] for i in range(k)], dtype=F64)
    q = Quire(fmt, (m,))
    q.fma(a, b)
    sums = [
        add_all(mul(ref.round(terms[j][i][0]), ref.round(terms[j][i][1])) for i in range(k)) for j in range(m)
    ]
    check_quire(q, ref, sums, f"{fmt!r} fma")
    # broadcast: one b row for all k
    q.clear()
    q.fma(a, b[0])
    sums = [
        add_all(mul(ref.round(terms[j][i][0]), ref.round(terms[j][0][1])) for i in range(k)) for j in range(m)
    ]
    check_quire(q, ref, sums, f"{fmt!r} fma broadcast")


@QSET
@given(st.data())
def test_hyp_add_outer(data):
    fmt = data.draw(st.sampled_from(Q_FORMATS), label="fmt")
    ref = ref_of(fmt)
    k = data.draw(st.integers(1, 8), label="K")
    m = data.draw(st.integers(1, 3), label="M")
    n = data.draw(st.integers(1, 3), label="N")
    post = [[data.draw(mixed_value(ref)) for _ in range(m)] for _ in range(k)]
    pre = [[data.draw(mixed_value(ref)) for _ in range(n)] for _ in range(k)]
    if data.draw(st.booleans(), label="cancel"):  # append the negated rows: exact sum is 0
        post = post + [[-v for v in row] for row in post]
        pre = pre + pre
        k *= 2
    scale_kind = data.draw(st.sampled_from(["none", "scalar", "rows"]), label="scale")
    if scale_kind == "none":
        scale, sc = None, [Fraction(1)] * k
    elif scale_kind == "scalar":
        s = data.draw(mixed_value(ref))
        scale, sc = s, [ref.round(s)] * k
    else:
        ss = [data.draw(mixed_value(ref)) for _ in range(k)]
        scale, sc = t64(ss).reshape(k, 1), [ref.round(s) for s in ss]
    rpost = [rounded(ref, row) for row in post]
    rpre = [rounded(ref, row) for row in pre]
    q = Quire(fmt, (m, n))
    q.add_outer(t64(post), t64(pre), scale=scale)
    sums = [
        add_all(mul(sc[i], rpost[i][a], rpre[i][b]) for i in range(k)) for a in range(m) for b in range(n)
    ]
    # Three-factor products can exceed the quire's range (b-posit16: maxpos**3 ~ 2**573 against
    # 2**415): a final exact sum at or past 2**(quire_integer_bits + 31) must read as NaR.
    top = pow2(fmt.quire_integer_bits + 31)
    sums = [None if s is not None and abs(s) >= top else s for s in sums]
    check_quire(q, ref, sums, f"{fmt!r} add_outer scale={scale_kind}")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hyp_add_outer_tiny_outliers(data):
    """Long reductions whose factors hold a few values far below the rest: add_outer takes one
    dense GEMM over the bits above a cut and the sparse path for the bits below; exact vs
    Fractions.  The sparse path's planned cost is drawn small, so the cuts land anywhere (down
    to nearly every value going the sparse way)."""
    fmt = data.draw(
        st.sampled_from([POSIT16, BPOSIT16, POSIT32, PositFormat(12, 2), PositFormat(14, 3, rs=5)])
    )
    ref = ref_of(fmt)
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    k, m, n = data.draw(st.integers(128, 192), label="K"), 16, 16
    rng = random.Random(data.draw(st.integers(0, 2**32), label="seed"))
    rows = [[rng.uniform(-2.0, 2.0) for _ in range(m + n)] for _ in range(k)]
    lo = max(math.floor(math.log2(float(ref.minpos))), -120 if dtype == torch.float32 else -1000)
    for col in (rng.randrange(m), m + rng.randrange(n)):  # one far below the bulk in each factor
        e = data.draw(st.integers(lo, max(lo, -24)), label="exponent")
        rows[rng.randrange(k)][col] = math.ldexp(rng.uniform(-2, 2), e)
    for _ in range(data.draw(st.integers(0, 8), label="more outliers")):
        e = data.draw(st.integers(lo, -8), label="exponent")
        rows[rng.randrange(k)][rng.randrange(m + n)] = math.ldexp(rng.uniform(-2, 2), e)
    if data.draw(st.booleans(), label="cancel"):  # negated copies of some rows: exact cancellation
        rows += [[-v for v in row[:m]] + row[m:] for row in rows[: k // 3]]
    both = torch.tensor(rows, dtype=F64).to(dtype)
    post, pre = both[:, :m].contiguous(), both[:, m:].contiguous()
    rpost = [rounded(ref, row) for row in post.double().tolist()]
    rpre = [rounded(ref, row) for row in pre.double().tolist()]
    q = Quire(fmt, (m, n))
    cost = data.draw(st.sampled_from([0, 1, 10]), label="sparse cost")
    plans, real_plan = [], outer_module._plan_split

    def spy(*args):
        plans.append(real_plan(*args))
        return plans[-1]

    held = data.draw(st.sampled_from([1, 100, 1 << 22]), label="sparse products held")
    with (
        mock.patch.object(outer_module, "_SPARSE_COST", cost),
        mock.patch.object(outer_module, "_SPARSE_ELEMS", held),
        mock.patch.object(outer_module, "_plan_split", spy),
    ):
        q.add_outer(post, pre)
    assert plans and plans[0] is not None, "add_outer did not split off the outliers"
    # exact sums with Python integers: every rounded value is a multiple of 2**-dmax
    dmax = max(v.denominator for row in rpost + rpre for v in row)
    ia = [[int(v * dmax) for v in row] for row in rpost]
    ib = [[int(v * dmax) for v in row] for row in rpre]
    sums = [
        Fraction(sum(x[a] * y[b] for x, y in zip(ia, ib)), dmax * dmax) for a in range(m) for b in range(n)
    ]
    check_quire(q, ref, sums, f"{fmt!r} {dtype} K={len(rows)} outliers")


@pytest.mark.parametrize("scale", [-0.125, 0.375, -3.0e-5])
def test_scaled_add_outer_window_is_minimal(scale):
    """A scaled add_outer widens an empty quire only to the window its values need (the planned
    memory of training assumes it): the window equals the trimmed one."""
    g = torch.Generator().manual_seed(1)
    q = Quire(BPOSIT32, (7, 5))
    q.add_outer(
        torch.rand(40, 7, generator=g, dtype=torch.float64) - 0.5,
        torch.rand(40, 5, generator=g, dtype=torch.float64),
        scale=scale,
    )
    width = q.limbs.shape[-1]
    q.trim()
    assert q.limbs.shape[-1] == width


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hyp_add_outer_scalar_scales_accumulate(data):
    """Several add_outer calls with one scale each (the engine's STDP / learning-rate form, which
    scales an exact scratch sum by round(scale)), onto the same quire: exact vs Fractions,
    including cancellation of earlier content and scales far from 1."""
    fmt = data.draw(st.sampled_from([POSIT16, BPOSIT16, POSIT8, POSIT32, PositFormat(10, 3, rs=3)]))
    ref = ref_of(fmt)
    k, m, n = data.draw(st.integers(1, 160), label="K"), 5, 6
    rng = random.Random(data.draw(st.integers(0, 2**32), label="seed"))
    q = Quire(fmt, (m, n))
    exact: list[Fraction | None] = [Fraction(0)] * (m * n)
    post = [[rng.uniform(-3, 3) * 2.0 ** rng.randrange(-30, 4) for _ in range(m)] for _ in range(k)]
    pre = [
        [float(rng.random() < 0.3) if data.draw(st.booleans()) else rng.random() for _ in range(n)]
        for _ in range(k)
    ]
    for _ in range(data.draw(st.integers(1, 3), label="calls")):
        s = data.draw(mixed_value(ref), label="scale")
        if s == 0 or not math.isfinite(s):
            s = 1.0
        sign = data.draw(st.sampled_from([1, -1]), label="sign")
        q.add_outer(t64(post) * sign, t64(pre), scale=s)
        rs = ref.round(s)
        rpost = [rounded(ref, [v * sign for v in row]) for row in post]
        rpre = [rounded(ref, row) for row in pre]
        for a in range(m):
            for b in range(n):
                v = exact[a * n + b]
                if v is not None:  # each call ends normalised: a sum past the top is NaR, sticky
                    v += rs * sum(r[a] * p[b] for r, p in zip(rpost, rpre))
                    exact[a * n + b] = None if abs(v) >= pow2(fmt.quire_integer_bits + 31) else v
    check_quire(q, ref, exact, f"{fmt!r} K={k} scaled calls")


@QSET
@given(st.data())
def test_hyp_merge_and_partitions(data):
    """Any permutation / partition of the same terms, merged, gives the same exact state."""
    fmt = data.draw(st.sampled_from(Q_FORMATS), label="fmt")
    ref = ref_of(fmt)
    terms = data.draw(term_lists(ref, data.draw(st.integers(1, 16)), 2))
    rnd = data.draw(st.randoms(use_true_random=False))
    exact = add_all(mul(ref.round(a), ref.round(b)) for a, b in terms)

    def run(order, parts):
        qs = [Quire(fmt, (1,)) for _ in range(parts)]
        for i in order:
            qs[rnd.randrange(parts)].fma(t64([terms[i][0]]), t64([terms[i][1]]))
        total = qs[0]
        for other in qs[1:]:
            total.merge(other)
        return total

    states = []
    for parts in (1, 2, 5):
        order = list(range(len(terms)))
        rnd.shuffle(order)
        q = run(order, parts)
        check_quire(q, ref, [exact], f"{fmt!r} partition into {parts}")
        states.append((flat(q.to_bits()), limbs_values(q.limbs, q.offset)))
    one = Quire(fmt, (1,))  # everything in one batched call
    one.fma(t64([[a] for a, _ in terms]), t64([[b] for _, b in terms]))
    states.append((flat(one.to_bits()), limbs_values(one.limbs, one.offset)))
    assert all(s == states[0] for s in states)


# ---------------------------------------------------------------------- deterministic read-out
def test_to_bits_ties_to_even_and_sticky():
    # posit16 has 11 fraction bits at 1.0: the midpoint above 1 is 1 + 2**-12
    q = Quire(POSIT16, (4,))
    q.add(t64([1.0, 1.0, 1.0, 1.0 + 2**-11]))
    q.add(t64([2**-12, 2**-12, 3 * 2**-12, 2**-12]))
    q.add(t64([0.0, 2**-40, 0.0, 0.0]))
    assert flat(q.to_bits()) == [0x4000, 0x4001, 0x4002, 0x4002]
    # the same for the quire of float64 read-out: 1 + 2**-53 is a tie, + 2**-100 breaks it
    q = Quire(POSIT32, (2,))
    q.add(t64([1.0, 1.0]))
    q.add(t64([2**-53, 2**-53]))
    q.add(t64([0.0, 2**-100]))
    assert flat(q.to_float()) == [1.0, 1.0 + 2**-52]


def test_products_below_minpos_are_kept_and_round_to_minpos():
    for fmt in (POSIT8, POSIT16, BPOSIT16):
        ref = ref_of(fmt)
        q = Quire(fmt, (3,))
        tiny = fmt.minpos
        q.fma(t64([tiny, -tiny, tiny]), t64([tiny, tiny, 0.0]))
        assert flat(q.to_bits()) == [1, (1 << fmt.nbits) - 1, 0]
        assert flat(q.to_float()) == [float(ref.minpos**2), -float(ref.minpos**2), 0.0]
        big = fmt.maxpos
        q = Quire(fmt, (2,))
        q.fma(t64([big, -big]), t64([big, big]))
        assert flat(q.to_bits()) == [fmt.nar - 1, fmt.nar + 1]  # saturates, not NaR
        assert flat(q.to_float()) == [float(ref.maxpos**2), -float(ref.maxpos**2)]


def test_cancellation_of_huge_terms_keeps_tiny_ones():
    for fmt in (POSIT16, POSIT32, BPOSIT16, BPOSIT32):
        ref = ref_of(fmt)
        big, tiny = fmt.maxpos, fmt.minpos
        q = Quire(fmt, ())
        q.fma(t64([big, tiny, -big, 3.0]), t64([big, tiny, big, 0.0]))
        assert int(q.to_bits()) == 1  # minpos**2 rounds up to minpos
        assert float(q.to_float()) == float(ref.minpos**2)
        assert limbs_values(q.limbs.reshape(1, -1), q.offset) == [ref.minpos**2]


def test_large_k_add_outer_exact():
    """Long reductions (chunked GEMMs): wide-range posit16 values and 0/1 spike trains."""
    rng = random.Random(7)
    for fmt, k, m, n in ((POSIT16, 2000, 4, 4), (BPOSIT16, 1500, 3, 3), (POSIT32, 1000, 3, 3)):
        ref = ref_of(fmt)
        # exact format values (never NaR): round() is the identity on them
        post = [
            [
                ref.decode(rng.randrange(ref.nar + 1, ref.nar + (1 << fmt.nbits)) % (1 << fmt.nbits))
                for _ in range(m)
            ]
            for _ in range(k)
        ]
        pre = [[Fraction(rng.random() < 0.2) for _ in range(n)] for _ in range(k)]  # spikes
        scale = ref.decode(rng.randrange(1, ref.maxpos_bits))
        q = Quire(fmt, (m, n))
        q.add_outer(
            t64([[float(v) for v in r] for r in post]),
            t64([[float(v) for v in r] for r in pre]),
            scale=float(scale),
        )
        sums = [scale * sum(post[i][a] for i in range(k) if pre[i][b]) for a in range(m) for b in range(n)]
        check_quire(q, ref, sums, f"{fmt!r} K={k} spikes")
        pre = [
            [
                ref.decode(rng.randrange(ref.nar + 1, ref.nar + (1 << fmt.nbits)) % (1 << fmt.nbits))
                for _ in range(n)
            ]
            for _ in range(k)
        ]
        q = Quire(fmt, (m, n))
        q.add_outer(t64([[float(v) for v in r] for r in post]), t64([[float(v) for v in r] for r in pre]))
        sums = [sum(post[i][a] * pre[i][b] for i in range(k)) for a in range(m) for b in range(n)]
        check_quire(q, ref, sums, f"{fmt!r} K={k} dense")


@pytest.mark.slow
def test_very_large_k_add_outer_exact():
    rng = random.Random(70)
    fmt, ref, k, m, n = BPOSIT16, ref_of(BPOSIT16), 70_000, 3, 2
    post = [
        [ref.decode(rng.randrange(1, ref.maxpos_bits)) * rng.choice((1, -1)) for _ in range(m)]
        for _ in range(k)
    ]
    pre = [[ref.decode(rng.randrange(1, ref.maxpos_bits)) for _ in range(n)] for _ in range(k)]
    q = Quire(fmt, (m, n))
    q.add_outer(t64([[float(v) for v in r] for r in post]), t64([[float(v) for v in r] for r in pre]))
    sums = [sum(post[i][a] * pre[i][b] for i in range(k)) for a in range(m) for b in range(n)]
    check_quire(q, ref, sums, "bposit16 K=70000")


# ---------------------------------------------------------------------- SoftPosit quire_2
def _sp_quire_dot(a: list[float], b: list[float], n: int) -> int:
    q = softposit.quire_2(n)
    for x, y in zip(a, b):
        q.qma(softposit.posit_2(float(x), n), softposit.posit_2(float(y), n))
    return q.toPosit().v.v >> (32 - n)


def _is_tie(ref: RefPosit, s: Fraction) -> bool:
    """Is |s| a rounding midpoint of the format (where SoftPosit's pX2 FMA is unreliable)?"""
    a = abs(s)
    if a == 0 or a <= ref.minpos or a >= ref.maxpos:
        return False
    p = ref.encode(a)
    return any(0 < c < ref.maxpos_bits and ref.midpoint(c) == a for c in (p - 1, p))


def test_agrees_with_softposit_quire_2():
    n = 16
    ref = RefPosit(n, 2)
    rng = random.Random(16)
    rows, ties = 400, 0
    a_all, b_all, sums = [], [], []
    for r in range(rows):
        k = rng.randint(1, 24)
        if r % 4 == 0:  # moderate magnitudes: lots of carries and cancellation
            a = [rng.uniform(-8, 8) for _ in range(k)]
        else:  # mixed magnitudes over the whole range
            a = [rng.choice((1, -1)) * 2.0 ** rng.uniform(-56, 56) for _ in range(k)]
        b = [rng.choice((1, -1)) * 2.0 ** rng.uniform(-30, 30) for _ in range(k)]
        if r % 3 == 0:  # exact cancellation of a prefix
            a = a + [-x for x in a[: k // 2]]
            b = b + b[: k // 2]
        a_all.append(a)
        b_all.append(b)
        sums.append(sum(ref.round(x) * ref.round(y) for x, y in zip(a, b)))
    kmax = max(len(a) for a in a_all)
    pad = lambda rows_: [r + [0.0] * (kmax - len(r)) for r in rows_]  # noqa: E731
    q = Quire(POSIT16, (rows,))
    q.fma(t64(pad(a_all)).T.contiguous(), t64(pad(b_all)).T.contiguous())
    ours = flat(q.to_bits())
    assert ours == [ref.encode(s) for s in sums]
    mismatches = []
    for a, b, s, got in zip(a_all, b_all, sums, ours):
        if _is_tie(ref, s):
            ties += 1
            continue
        want = _sp_quire_dot(a, b, n)
        if got != want:
            mismatches.append((a, b, got, want))
    assert not mismatches, f"{len(mismatches)} rows differ from SoftPosit quire_2: {mismatches[:3]}"
    assert ties < rows // 4


# ---------------------------------------------------------------------- state: limbs, NaR, clear
def test_limbs_docstring_and_from_limbs_roundtrip():
    fmt, ref = POSIT16, ref_of(POSIT16)
    q = Quire(fmt, (2, 3))
    xs = [[1.5, -(2.0**-50), 3e10], [0.0, -7.25, 2.0**50]]
    q.add(t64(xs))
    want = [ref.round(x) for row in xs for x in row]
    assert limbs_values(q.limbs, q.offset) == want  # value == sum limbs[i] * 2**(32*(offset+i))
    r = Quire.from_limbs(fmt, q.limbs.clone(), q.offset)
    assert r.shape == q.shape
    assert torch.equal(r.to_bits(), q.to_bits())
    assert limbs_values(r.limbs, r.offset) == want
    r.add(t64(xs))  # the restored quire keeps accumulating
    assert limbs_values(r.limbs, r.offset) == [2 * v for v in want]
    assert limbs_values(q.limbs, q.offset) == want  # the original is untouched


def test_from_limbs_accepts_unnormalized_sums_of_limbs():
    """All-reduce adds limb tensors elementwise: the sum must restore to the exact total."""
    fmt, ref = BPOSIT16, ref_of(BPOSIT16)
    rng = random.Random(3)
    parts, totals = [], [Fraction(0)] * 6
    for _ in range(5):
        q = Quire(fmt, (6,))
        xs = [rng.choice((1, -1)) * 2.0 ** rng.uniform(-190, 190) for _ in range(6)]
        q.add(t64(xs))
        totals = [t + ref.round(x) for t, x in zip(totals, xs)]
        parts.append((q.limbs.clone(), q.offset))
    lo = min(o for _, o in parts)
    hi = max(o + t.shape[-1] for t, o in parts) + 1
    acc = torch.zeros(6, hi - lo, dtype=I64)
    for t, o in parts:
        acc[:, o - lo : o - lo + t.shape[-1]] += t
    r = Quire.from_limbs(fmt, acc, lo)
    check_quire(r, ref, totals, "from_limbs(sum of limbs)")
    # deliberately messy digits: every limb negative or above 2**32, same value
    messy = acc.clone()
    messy[:, :-1] += 1 << 33
    messy[:, 1:] -= 2
    assert limbs_values(messy, lo) == totals
    check_quire(Quire.from_limbs(fmt, messy, lo), ref, totals, "from_limbs(messy)")


def test_clear():
    q = Quire(POSIT16, (3,))
    q.add(t64([1.0, math.nan, -5.0]))
    q.clear()
    assert flat(q.to_bits()) == [0, 0, 0] and flat(q.nar) == [False] * 3
    assert flat(q.to_float()) == [0.0, 0.0, 0.0]
    assert limbs_values(q.limbs, q.offset) == [0, 0, 0]
    q.add(t64([2.0, 3.0, 4.0]))
    assert flat(q.to_float()) == [2.0, 3.0, 4.0]


def test_nar_is_sticky():
    fmt = POSIT16
    q = Quire(fmt, (3,))
    q.add(t64([1.0, math.nan, 2.0]))
    assert flat(q.nar) == [False, True, False]
    for _ in range(3):
        q.add(t64([1.0, 1.0, 1.0]))
        q.fma(t64([2.0, -4.0, 1.0]), t64([1.0, 1.0, 1.0]))
    bits = flat(q.to_bits())
    assert bits[1] == fmt.nar  # 1 + 3 * (1 + 2) = 10 and 2 + 3 * (1 + 1) = 8 elsewhere
    assert bits[0] == int(fmt.encode(t64(10.0))) and bits[2] == int(fmt.encode(t64(8.0)))
    f = flat(q.to_float())
    assert math.isnan(f[1]) and f[0] == 10.0 and f[2] == 8.0
    # merging a NaR quire poisons the target element; +-inf are NaR too
    other = Quire(fmt, (3,))
    other.fma(t64([1.0, 1.0, math.inf]), t64([1.0, 1.0, 0.0]))
    q.merge(other)
    assert flat(q.nar) == [False, True, True]
    q.clear()
    assert flat(q.nar) == [False] * 3


def test_nar_in_add_outer_and_scale():
    q = Quire(POSIT16, (2, 3))
    post = t64([[1.0, 2.0], [math.nan, 0.0]])
    pre = t64([[1.0, 0.0, 1.0], [0.0, -math.inf, 0.0]])
    q.add_outer(post, pre)
    # round(nan) = NaR, and NaR times anything (0 too) is NaR: row 0 via post, column 1 via pre
    assert q.nar.tolist() == [[True, True, True], [False, True, False]]
    q2 = Quire(POSIT16, (2, 3))
    q2.add_outer(t64([[1.0, 2.0]]), t64([[1.0, 1.0, 1.0]]), scale=math.nan)
    assert bool(q2.nar.all())


def _top(fmt: PositFormat) -> int:
    """log2 of the quire's range for standard posits: 1 sign + 31 carry + (8n-16) integer bits."""
    return 8 * fmt.nbits - 16 + 31


@pytest.mark.parametrize("fmt", [POSIT8, POSIT16, POSIT32], ids=repr)
def test_overflow_past_carry_bits_is_nar(fmt):
    ref = ref_of(fmt)
    top = _top(fmt)
    mp2 = ref.maxpos**2  # 2**(8n-16)
    lsb = ref.minpos**2
    offset = math.floor(math.log2(lsb) / 32) - 1  # limbs down to the quire's LSB and below
    length = -(-(top + 2 - 32 * offset) // 32) + 1  # up past the sign of +-2**top
    near = [pow2(top) - mp2, pow2(top) - mp2 - lsb, -pow2(top) + mp2, -pow2(top) + mp2 + lsb]
    limbs = torch.tensor(limbs_of(near, offset, length), dtype=I64)
    q = Quire.from_limbs(fmt, limbs, offset)
    assert flat(q.nar) == [False] * 4
    assert flat(q.to_bits()) == [fmt.nar - 1, fmt.nar - 1, fmt.nar + 1, fmt.nar + 1]
    assert limbs_values(q.limbs, q.offset) == near
    # one more maxpos**2 of the right sign reaches 2**top (overflow) or stays just inside
    mp = fmt.maxpos
    q.fma(t64([mp, mp, -mp, -mp]), t64([mp, mp, mp, mp]))
    nar = flat(q.nar)
    assert nar[0] and not nar[1], "2**top must be NaR, 2**top - lsb must not"
    assert not nar[3], "-2**top + lsb must not be NaR"
    assert limbs_values(q.limbs, q.offset)[1] == pow2(top) - lsb
    assert limbs_values(q.limbs, q.offset)[3] == -pow2(top) + lsb
    # ... NaR stays NaR when the excess is taken away again; the negative side overflows too
    q.fma(t64([-mp, -mp, -mp, -mp]), t64([mp, mp, mp, mp]))
    nar = flat(q.nar)
    assert nar[0], "NaR must be sticky"
    assert not nar[1]
    assert limbs_values(q.limbs, q.offset)[1] == pow2(top) - lsb - mp2
    assert nar[2], "-2**top - maxpos**2 must be NaR"
    assert nar[3], "-2**top + lsb - maxpos**2 must be NaR"
    assert flat(q.to_bits()) == [fmt.nar, fmt.nar - 1, fmt.nar, fmt.nar]


def test_overflow_by_many_additions_is_nar():
    """2**31 products maxpos**2 overflow posit8's quire (2**79): 2**12 products, then merges."""
    fmt = POSIT8
    q = Quire(fmt, ())
    big = torch.full((1 << 12,), fmt.maxpos, dtype=F64)
    q.fma(big, big)  # 2**12 * 2**48 = 2**60
    for _ in range(19):  # doubling by merging a copy: 2**79 after 19 doublings
        q.merge(Quire.from_limbs(fmt, q.limbs.clone(), q.offset))
    assert bool(q.nar)
    r = Quire(fmt, ())
    r.fma(big, big)
    for _ in range(18):  # 2**78: still fine
        r.merge(Quire.from_limbs(fmt, r.limbs.clone(), r.offset))
    assert not bool(r.nar)
    assert limbs_values(r.limbs.reshape(1, -1), r.offset) == [pow2(78)]


# ---------------------------------------------------------------------- errors
def test_errors_name_the_problem():
    q = Quire(POSIT16, (3, 4))
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        q.add_outer(torch.zeros(5, 3, dtype=F64), torch.zeros(6, 4, dtype=F64))  # K mismatch
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        q.add_outer(torch.zeros(5, 2, dtype=F64), torch.zeros(5, 4, dtype=F64))  # M mismatch
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        q.add_outer(torch.zeros(5, 3, dtype=F64), torch.zeros(5, 5, dtype=F64))  # N mismatch
    with pytest.raises(ValueError, match="dtype"):
        q.add(torch.zeros(3, 4, dtype=I64))
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        q.add(torch.zeros(3, 5, dtype=F64))
    with pytest.raises(ValueError):
        q.fma(torch.zeros(2, 3, dtype=F64), torch.zeros(3, 4, dtype=F64))
    with pytest.raises(ValueError):
        q.merge(Quire(POSIT8, (3, 4)))
    with pytest.raises(ValueError):
        q.merge(Quire(POSIT16, (4, 3)))
    with pytest.raises(ValueError, match="PositFormat"):
        Quire("posit16", (3,))
    with pytest.raises(ValueError, match="int64"):
        Quire.from_limbs(POSIT16, torch.zeros(3, 2, dtype=F64), 0)
    q1 = Quire(POSIT16, (3,))
    with pytest.raises(ValueError):
        q1.add_outer(torch.zeros(2, 3, dtype=F64), torch.zeros(2, 1, dtype=F64))


# ---------------------------------------------------------------------- to_float
def test_to_float_correctly_rounded_normal_range():
    """Ties to even, sticky bits far below, and overflow to inf (posit<32,5>: range 2**+-960)."""
    fmt = PositFormat(32, 5)
    ref = ref_of(fmt)
    cases = [
        [(1.0, 1.0), (2.0**-53, 1.0)],  # tie -> even (1.0)
        [(1.0, 1.0), (2.0**-53, 1.0), (2.0**-500, 2.0**-500)],  # sticky 2**-1000 breaks the tie
        [(1.0, 1.0), (-(2.0**-54), 1.0), (-(2.0**-500), 2.0**-500)],  # just below 1 - 2**-54
        [(2.0**511, 2.0**511), (2.0**511, 2.0**511)],  # 2**1023
        [(2.0**600, 2.0**600)],  # 2**1200 -> inf
        [(-(2.0**600), 2.0**600)],  # -> -inf
        [(2.0**-500, 2.0**-520)],  # 2**-1020, normal
    ]
    q = Quire(fmt, (len(cases),))
    for j, terms in enumerate(cases):
        for a, b in terms:
            x = torch.zeros(len(cases), dtype=F64)
            y = torch.zeros(len(cases), dtype=F64)
            x[j], y[j] = a, b
            q.fma(x, y)
    sums = [sum(ref.round(a) * ref.round(b) for a, b in terms) for terms in cases]
    got = flat(q.to_float())
    assert got == [exact_float(s) for s in sums]
    assert got[:3] == [1.0, 1.0 + 2**-52, 1.0 - 2**-53]


def test_to_float_subnormal_results():
    """Products of tiny posit<32,5> values land in float64's subnormal range (2**-1074..2**-1022)."""
    fmt = PositFormat(32, 5)
    ref = ref_of(fmt)
    cases = [
        [(2.0**-524, 2.0**-524)],  # 2**-1048, exactly representable
        [(2.0**-500, 2.0**-523)],  # 2**-1023
        # 2**-1056 + half an ulp (2**-1075) + 2**-1120: must round up (no double rounding)
        [(2.0**-528, 2.0**-528), (2.0**-538, 2.0**-537), (2.0**-560, 2.0**-560)],
        [(2.0**-538, 2.0**-538)],  # 2**-1076 < half the smallest subnormal: 0
    ]
    q = Quire(fmt, (len(cases),))
    for j, terms in enumerate(cases):
        for a, b in terms:
            x = torch.zeros(len(cases), dtype=F64)
            y = torch.zeros(len(cases), dtype=F64)
            x[j], y[j] = a, b
            q.fma(x, y)
    sums = [sum(ref.round(a) * ref.round(b) for a, b in terms) for terms in cases]
    want = [exact_float(s) for s in sums]
    assert want[:3] == [2.0**-1048, 2.0**-1023, 2.0**-1056 + 2.0**-1074] and want[3] == 0.0
    assert flat(q.to_float()) == want


# ---------------------------------------------------------------------- shapes and inputs
def test_fma_broadcast_outer_and_float32_inputs():
    fmt, ref = POSIT16, ref_of(POSIT16)
    rng = random.Random(11)
    k, m, n = 4, 3, 2
    a = [[[rng.uniform(-100, 100)] for _ in range(m)] for _ in range(k)]  # (K, M, 1)
    b = [[[rng.uniform(-1, 1) for _ in range(n)]] for _ in range(k)]  # (K, 1, N)
    q = Quire(fmt, (m, n))
    q.fma(t64(a), t64(b))
    sums = [
        sum(ref.round(a[i][r][0]) * ref.round(b[i][0][c]) for i in range(k))
        for r in range(m)
        for c in range(n)
    ]
    check_quire(q, ref, sums, "fma (K,M,1) x (K,1,N)")
    # the same through add_outer, and float32 inputs give the same state as float64 ones
    post = t64([[a[i][r][0] for r in range(m)] for i in range(k)]).float()
    pre = t64([[b[i][0][c] for c in range(n)] for i in range(k)]).float()
    q32 = Quire(fmt, (m, n))
    q32.add_outer(post, pre)
    sums32 = [
        sum(ref.round(float(post[i, r])) * ref.round(float(pre[i, c])) for i in range(k))
        for r in range(m)
        for c in range(n)
    ]
    check_quire(q32, ref, sums32, "add_outer float32")
    q64 = Quire(fmt, (m, n))
    q64.add_outer(post.double(), pre.double())
    assert limbs_values(q64.limbs, q64.offset) == limbs_values(q32.limbs, q32.offset)


def test_add_outer_per_element_scale_and_1d_inputs():
    fmt, ref = BPOSIT16, ref_of(BPOSIT16)
    rng = random.Random(12)
    k, m, n = 5, 3, 4
    post = [[rng.uniform(-3, 3) * 10.0 ** rng.randint(-40, 40) for _ in range(m)] for _ in range(k)]
    pre = [[float(rng.random() < 0.5) for _ in range(n)] for _ in range(k)]
    scale = [[rng.uniform(0, 1) * 2.0 ** rng.randint(-60, 0) for _ in range(m)] for _ in range(k)]
    q = Quire(fmt, (m, n))
    q.add_outer(t64(post), t64(pre), scale=t64(scale))  # scale (K, M), like post
    sums = [
        sum(ref.round(scale[i][r]) * ref.round(post[i][r]) * ref.round(pre[i][c]) for i in range(k))
        for r in range(m)
        for c in range(n)
    ]
    check_quire(q, ref, sums, "add_outer scale (K, M)")
    q1 = Quire(fmt, (m, n))
    for i in range(k):  # K = 1 calls with 1-d vectors
        q1.add_outer(t64(post[i]), t64(pre[i]), scale=t64(scale[i]))
    assert limbs_values(q1.limbs, q1.offset) == limbs_values(q.limbs, q.offset)
    q0 = Quire(fmt, (m, n))
    q0.add_outer(torch.zeros(0, m, dtype=F64), torch.zeros(0, n, dtype=F64))  # K = 0: nothing
    assert flat(q0.to_bits()) == [0] * (m * n)


def test_merge_with_itself_doubles():
    fmt, ref = POSIT32, ref_of(POSIT32)
    q = Quire(fmt, (2,))
    q.add(t64([3.5e20, -1e-30]))
    q.merge(q)
    check_quire(q, ref, [2 * ref.round(3.5e20), 2 * ref.round(-1e-30)], "merge(self)")


def test_empty_and_zero_quires():
    for fmt in (POSIT8, BPOSIT32):
        q = Quire(fmt, (2, 3))
        assert flat(q.to_bits()) == [0] * 6 and flat(q.to_float()) == [0.0] * 6
        assert flat(q.nar) == [False] * 6
        r = Quire.from_limbs(fmt, q.limbs, q.offset)
        assert flat(r.to_bits()) == [0] * 6
        q.add(t64([[0.0, -0.0, 0.0], [0.0, 0.0, -0.0]]))
        assert flat(q.to_bits()) == [0] * 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_quire_matches_reference():
    fmt, ref = BPOSIT16, ref_of(BPOSIT16)
    rng = random.Random(99)
    k, m, n = 600, 4, 5
    post = [[rng.choice((1, -1)) * 2.0 ** rng.uniform(-100, 100) for _ in range(m)] for _ in range(k)]
    pre = [[float(rng.random() < 0.3) * 2.0 ** rng.randint(-20, 20) for _ in range(n)] for _ in range(k)]
    q = Quire(fmt, (m, n), device="cuda")
    q.add_outer(t64(post).cuda(), t64(pre).cuda(), scale=0.001)
    s = ref.round(0.001)
    rpost = [rounded(ref, r) for r in post]
    rpre = [rounded(ref, r) for r in pre]
    sums = [s * sum(rpost[i][a] * rpre[i][b] for i in range(k)) for a in range(m) for b in range(n)]
    assert q.limbs.device.type == "cuda"
    check_quire(q, ref, sums, "cuda add_outer")


def test_trim_of_empty_and_zero_quires_is_canonical():
    q = Quire(POSIT16, (3,))
    q.trim()  # no limbs at all
    assert q.limbs.shape == (3, 0) and q.offset == 0
    q.add(torch.tensor([1.0, -2.0, 0.5], dtype=F64))
    q.add(torch.tensor([-1.0, 2.0, -0.5], dtype=F64))
    q.trim()  # exact cancellation: the canonical zero
    assert q.limbs.shape == (3, 0) and q.offset == 0
    assert torch.equal(q.to_bits(), torch.zeros(3, dtype=torch.int64))


def test_gemm_threads_inside_one_thread():
    """The quire's GEMMs get torch's thread count back inside its one-thread pipeline, unless the
    machine is oversubscribed; the count is restored afterwards."""
    from neuro.numerics.threads import CORES, gemm_threads, one_thread

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    before = 2
    with mock.patch("os.getloadavg", return_value=(0.0, 0.0, 0.0)):
        with one_thread():
            assert torch.get_num_threads() == 1
            with gemm_threads():
                assert torch.get_num_threads() == before
            assert torch.get_num_threads() == 1
    with mock.patch("os.getloadavg", return_value=(CORES + 1.0, 0.0, 0.0)):
        with gemm_threads():
            assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    torch.set_num_threads(saved)
