"""The event path: ``Quire.add_outer_events`` (terms one by one for sparse spike rows) and the
engine's step over only the entries those terms reached.  Both must give exactly the bits of the
dense path (``add_outer`` and a step over every entry), which the Fraction oracle pins."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neuro.engine.engine as engine_module
from neuro.engine import Bounds, ParamType, Sign, UpdateEngine
from neuro.engine.step import step_entries
from neuro.numerics import BPOSIT16, BPOSIT32, POSIT8, POSIT16, PositFormat, Quire, counter_uniform
from neuro.numerics import kernels as kernels_module
from neuro.rules import PairSTDP, PairSTDPParameters

try:  # tests/ is on sys.path under pytest's default import mode
    from numerics_oracle import limbs_values
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.numerics_oracle import limbs_values

F64 = torch.float64
FORMATS = {"posit8": POSIT8, "posit16": POSIT16, "bposit16": BPOSIT16, "bposit32": BPOSIT32}


def _spike_rows(g, k, m, n, p_post, p_pre, amp=1e-3):
    """Rows of STDP shape: spikes x amplitude on one side, traces (wide range, zeros) on the other."""
    post = torch.zeros(k, m, dtype=F64)
    pre = torch.zeros(k, n, dtype=F64)
    ltp = torch.rand(k, generator=g) < 0.5
    spikes_post = (torch.rand(k, m, generator=g) < p_post).to(F64) * amp
    spikes_pre = (torch.rand(k, n, generator=g) < p_pre).to(F64) * -amp * 1.05
    traces_pre = torch.rand(k, n, generator=g, dtype=F64) ** 12 * (torch.rand(k, n, generator=g) < 0.9)
    traces_post = torch.rand(k, m, generator=g, dtype=F64) ** 12
    post[ltp], pre[ltp] = spikes_post[ltp], traces_pre[ltp]
    post[~ltp], pre[~ltp] = traces_post[~ltp], spikes_pre[~ltp]
    return post, pre


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(sorted(FORMATS)),
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 9),
    m=st.integers(1, 12),
    n=st.integers(1, 12),
    calls=st.integers(1, 3),
    boolean=st.booleans(),
    compiled=st.booleans(),
)
def test_events_equal_the_dense_outer_product_and_the_fraction_sum(
    fmt, seed, k, m, n, calls, boolean, compiled
):
    """Same limbs (after trim, a canonical form) as ``add_outer``, and the exact Fraction sum, with
    the compiled kernel (neuro/_kernels/quire.c) and with the torch path."""
    saved = kernels_module.ENABLED
    kernels_module.ENABLED = compiled
    try:
        _check_events(FORMATS[fmt], seed, k, m, n, calls, boolean)
    finally:
        kernels_module.ENABLED = saved


def _check_events(fmt, seed, k, m, n, calls, boolean):
    g = torch.Generator().manual_seed(seed)
    dense, events = Quire(fmt, (m, n)), Quire(fmt, (m, n))
    exact = [Fraction(0)] * (m * n)
    for _ in range(calls):
        post, pre = _spike_rows(g, k, m, n, 0.3, 0.3, amp=float(torch.rand(1, generator=g)) * 4)
        if boolean:  # a bool spike train as the sparse side
            post = torch.rand(k, m, generator=g) < 0.2
        dense.add_outer(post, pre)
        assert events.add_outer_events(post, pre, budget=10**9) is not None
        qa = fmt.quantize(post.to(F64)).tolist()
        qb = fmt.quantize(pre).tolist()
        for i in range(m):
            for j in range(n):
                exact[i * n + j] += sum(Fraction(qa[t][i]) * Fraction(qb[t][j]) for t in range(k))
    dense.trim()
    events.trim()
    assert events.offset == dense.offset and torch.equal(events.limbs, dense.limbs)
    assert limbs_values(events.limbs, events.offset) == exact
    assert torch.equal(events.to_bits(), dense.to_bits())


def test_events_report_their_rows_and_columns_and_respect_the_budget():
    post = torch.zeros(4, 5, dtype=F64)
    pre = torch.rand(4, 7, dtype=F64) + 0.5
    post[0, 3] = post[2, 1] = 0.25  # two post spikes: LTP rows 3 and 1
    pre2 = torch.zeros(4, 7, dtype=F64)
    pre2[1, 6] = -0.5
    q = Quire(POSIT16, (5, 7))
    post, pre = torch.cat([post, torch.rand(4, 5, dtype=F64)]), torch.cat([pre, pre2])
    rows, cols = q.add_outer_events(post, pre, budget=19)
    assert sorted(rows.tolist()) == [1, 3] and cols.tolist() == [6]
    dense = Quire(POSIT16, (5, 7))
    dense.add_outer(post, pre)
    assert torch.equal(q.to_bits(), dense.to_bits())
    assert {i for i, j in (q.to_float() != 0).nonzero().tolist() if j != 6} == {1, 3}
    # 2 rows x 7 + 1 column x 5 = 19 terms: over a budget of 18, nothing is added
    q2 = Quire(POSIT16, (5, 7))
    assert q2.add_outer_events(post, pre, budget=18) is None
    assert q2.limbs.numel() == 0


def test_events_decline_non_finite_inputs_and_take_the_widest_significands():
    q = Quire(POSIT16, (3, 4))
    post = torch.zeros(2, 3, dtype=F64)
    post[0, 1] = 1.0
    pre = torch.ones(2, 4, dtype=F64)
    pre[0, 2] = float("inf")
    assert q.add_outer_events(post, pre, budget=100) is None
    assert q.limbs.numel() == 0 and not bool(q.nar.any())
    widest = Quire(PositFormat(32, 0), (3, 4))  # 30-bit significands: 60-bit products
    big = torch.full((2, 4), 1.0 - 2.0**-29, dtype=F64)
    assert widest.add_outer_events(post * (1.0 - 2.0**-29), big, budget=100) is not None
    dense = Quire(PositFormat(32, 0), (3, 4))
    dense.add_outer(post * (1.0 - 2.0**-29), big)
    assert torch.equal(widest.to_float(), dense.to_float()) and float(widest.to_float()[1, 0]) != 0
    with pytest.raises(ValueError, match="quire shape"):
        q.add_outer_events(post, torch.ones(2, 5, dtype=F64))


@pytest.mark.parametrize("length", [1, 2, 5])
def test_compiled_carry_pass_equals_the_torch_one(length, monkeypatch):
    """``Quire.normalize`` through the C kernel and through torch: same limbs, same widening when a
    top limb leaves the signed 32-bit range, same NaR on overflow."""
    g = torch.Generator().manual_seed(length)
    raw = torch.randint(-(1 << 40), 1 << 40, (50, 7, length), generator=g, dtype=torch.int64)
    raw[0, 0, -1] = (1 << 62) - 5  # forces a wider window
    results = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels_module, "ENABLED", compiled)
        q = Quire.from_limbs(BPOSIT32, raw, -2)  # a copy of the raw limbs, normalised
        results.append((q.offset, q.limbs, limbs_values(q.limbs, q.offset)))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])
    assert results[0][2] == limbs_values(raw, -2)  # the values are the raw limbs' values
    assert results[0][1].shape[-1] > length


def test_take_and_clear_at():
    g = torch.Generator().manual_seed(3)
    q = Quire(BPOSIT32, (6, 5))
    q.add_outer(torch.randn(3, 6, generator=g, dtype=F64), torch.randn(3, 5, generator=g, dtype=F64))
    full = q.to_float().reshape(-1)
    index = torch.tensor([29, 0, 7, 7])
    part = q.take(index)
    assert part.shape == (4,) and torch.equal(part.to_float(), full[index])
    q.clear_at(torch.tensor([0, 7, 29]))
    left = q.to_float().reshape(-1)
    assert torch.equal(left[[0, 7, 29]], torch.zeros(3, dtype=F64))
    keep = torch.ones(30, dtype=torch.bool)
    keep[[0, 7, 29]] = False
    assert torch.equal(left[keep], full[keep])
    empty = Quire(POSIT16, (2, 2))
    assert empty.take(torch.tensor([1, 2])).to_float().tolist() == [0.0, 0.0]


def test_counter_uniform_at_scattered_indices_equals_the_whole_stream():
    whole = counter_uniform(12345, (7, 11), start=5)
    index = torch.tensor([0, 76, 13, 13, 40])
    assert torch.equal(counter_uniform(12345, (5,), start=5, index=index), whole.reshape(-1)[index])


# ----------------------------------------------------------------------------- engine


def _stdp_run(dense: bool, storage, rounding, constraint, fmt, *, tamper=None, steps=12, seed=0):
    """Pair STDP on random trains; ``dense``: the events path switched off (the reference)."""
    g = torch.Generator().manual_seed(seed)
    m, n = 40, 120
    dtype = torch.float64 if storage in ("float64", BPOSIT32) else torch.float32
    w = (torch.rand(m, n, generator=g, dtype=F64) * 0.8 + 0.1).to(dtype)
    eng = UpdateEngine(
        [w],
        format=fmt,
        lr=0.75,
        rounding=rounding,
        seed=7,
        type=ParamType(constraint=constraint, storage=storage),
    )
    quire, counts = eng._slots[0].quire, {"events": 0, "entries": []}
    stepped = engine_module.step_entries
    if dense:
        quire.add_outer_events = lambda *a, **k: None
    else:
        added = quire.add_outer_events

        def add(*a, **k):
            hit = added(*a, **k)
            counts["events"] += hit is not None
            return hit

        def step(slot, index, seed):
            counts["entries"].append(index.numel())
            return stepped(slot, index, seed)

        quire.add_outer_events, engine_module.step_entries = add, step
    rule = PairSTDP(PairSTDPParameters(a_plus=0.02, a_minus=0.021), 1e-3)
    try:
        for s in range(steps):
            rate = 0.005 if s % 4 else 0.05  # every 4th interval too busy for the event path
            z_pre = torch.rand(8, 1, n, generator=g) < rate
            z_post = torch.rand(8, 1, m, generator=g) < rate
            if tamper is not None and s == steps // 2:
                tamper(w)
            rule.interval(eng, w, z_pre, z_post)
            eng.step()
    finally:
        engine_module.step_entries = stepped
    return w, counts


@pytest.mark.parametrize(
    "storage,rounding,constraint",
    [
        ("float32", "nearest", Bounds(0.0, 1.0)),
        ("float32", "stochastic", Bounds(0.0, 1.0)),
        ("float64", "nearest", None),
        ("float64", "stochastic", Sign("excitatory")),
        (POSIT16, "nearest", Bounds(0.0, 1.0)),  # posit storage: the torch rounding of the entries
        (BPOSIT32, "stochastic", None),
    ],
)
@pytest.mark.parametrize("compiled", [True, False])
def test_engine_event_path_gives_the_dense_paths_bits(storage, rounding, constraint, compiled, monkeypatch):
    monkeypatch.setattr(kernels_module, "ENABLED", compiled)
    for fmt in (BPOSIT32, POSIT16):
        ref, _ = _stdp_run(True, storage, rounding, constraint, fmt)
        got, counts = _stdp_run(False, storage, rounding, constraint, fmt)
        assert torch.equal(ref, got), (storage, rounding, constraint, fmt)
        assert counts["events"] >= 6  # both paths were taken
        assert 6 <= len(counts["entries"]) < 12


def test_engine_steps_every_entry_once_a_weight_left_its_type_from_outside():
    """The event step skips entries that cannot change; a weight set outside its bounds, or to -0,
    from outside the engine would change under a dense step (clamped, -0 -> +0), so that step
    visits every entry."""
    _, counts = _stdp_run(False, "float32", "nearest", Bounds(0.0, 1.0), BPOSIT32)
    assert counts["entries"] and max(counts["entries"]) < 40 * 120 / 4

    def outside(w):
        w.data[0, 0] = 1.5

    def negative_zero(w):
        w.data[1, 1] = -0.0

    def between_posits(w):
        w.data[2, 2] = 0.3  # not a posit16 value: a dense step rounds it
        w.data[3, 3] = 1e-30  # far below posit16's minpos: a dense step rounds it up

    for tamper in (outside, negative_zero):
        ref, _ = _stdp_run(True, "float32", "nearest", Bounds(0.0, 1.0), BPOSIT32, tamper=tamper)
        got, tampered = _stdp_run(False, "float32", "nearest", Bounds(0.0, 1.0), BPOSIT32, tamper=tamper)
        assert torch.equal(ref, got)
        assert ref[0, 0] <= 1.0 and not torch.signbit(ref[1, 1])
        assert len(tampered["entries"]) < len(counts["entries"])
    ref, _ = _stdp_run(True, POSIT16, "nearest", None, BPOSIT32, tamper=between_posits)
    got, tampered = _stdp_run(False, POSIT16, "nearest", None, BPOSIT32, tamper=between_posits)
    assert torch.equal(ref, got) and torch.equal(POSIT16.quantize(got), got.double())  # storage values
    assert len(tampered["entries"]) < len(_stdp_run(False, POSIT16, "nearest", None, BPOSIT32)[1]["entries"])


def test_a_nan_contribution_next_to_events_still_raises_and_leaves_the_weight():
    """Events, then one contribution with a NaN (it takes the dense path and marks NaR): the step
    must see it although most contributions went the event way."""
    w = torch.full((20, 40), 0.5)
    eng = UpdateEngine([w], format=POSIT16, type=ParamType(storage="float32"))
    post = torch.zeros(1, 20, dtype=F64)
    post[0, 3] = 0.25
    eng.accumulate_events(w, post, torch.rand(1, 40, dtype=F64))
    assert bool(eng._slots[0].event_rows[3]) and not eng._slots[0].dense
    eng.accumulate_events(w, post, torch.full((1, 40), float("nan"), dtype=F64))
    before = w.clone()
    with pytest.raises(FloatingPointError, match="NaR"):
        eng.step()
    assert torch.equal(w, before)


def _step_both_ways(w0, deltas, lr, storage, constraint=None):
    """``w0`` after one event step (every entry) with the compiled rounding and with the torch one."""
    results = []
    for compiled in (True, False):
        saved = kernels_module.ENABLED
        kernels_module.ENABLED = compiled
        try:
            w = w0.clone()
            eng = UpdateEngine(
                [w], format=BPOSIT32, lr=lr, type=ParamType(storage=storage, constraint=constraint)
            )
            for d in deltas:
                eng.accumulate(w, d)
            slot = eng._slots[0]
            step_entries(slot, torch.arange(w.numel()), eng.seed)
            assert slot.step == 1 and not bool(slot.quire.limbs.any())
            results.append(w)
        finally:
            kernels_module.ENABLED = saved
    return results


@pytest.mark.parametrize("storage", ["float32", "float64"])
def test_compiled_step_rounds_ties_to_even_and_cancellations_to_plus_zero(storage):
    ulp = 2.0**-23 if storage == "float32" else 2.0**-52
    dtype = torch.float32 if storage == "float32" else torch.float64
    w0 = torch.tensor([[1.0, 1.0 + ulp, 1.0, 1.0, 0.5, 0.0, -0.75]], dtype=dtype)
    tiny = 2.0**-90
    first = torch.tensor([[ulp / 2, ulp / 2, -ulp / 4, ulp / 2, -0.5, 0.0, 0.25]], dtype=F64)
    second = torch.tensor([[0.0, 0.0, 0.0, tiny, 0.0, 0.0, 0.5]], dtype=F64)
    got, ref = _step_both_ways(w0, [first, second], 1.0, storage)
    assert torch.equal(got, ref)
    expect = [1.0, 1.0 + 2 * ulp, 1.0, 1.0 + ulp, 0.0, 0.0, 0.0]  # ties to even; tiny breaks a tie
    assert got[0].tolist() == expect and not torch.signbit(got).any()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    storage=st.sampled_from(["float32", "float64"]),
    lr=st.sampled_from([1.0, 0.75, 3e-3, 2.0**-40, 0.0]),
    spread=st.integers(0, 200),
    bounded=st.booleans(),
)
def test_compiled_step_equals_the_torch_rounding(seed, storage, lr, spread, bounded):
    """Random weights and sums of contributions spread over ``spread`` binades (cancellations,
    near-ties, results that underflow or overflow the storage and go back to the torch path)."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float32 if storage == "float32" else torch.float64
    w0 = (
        torch.randn(6, 9, generator=g, dtype=F64) * torch.exp2(torch.randint(-30, 4, (6, 9), generator=g))
    ).to(dtype)
    w0[0, :3] = 0.0
    deltas = []
    for _ in range(3):
        scale = torch.exp2(torch.randint(-spread - 10, spread // 4 + 1, (6, 9), generator=g).double())
        deltas.append(torch.randn(6, 9, generator=g, dtype=F64) * scale)
    deltas.append(-deltas[0] * (torch.rand(6, 9, generator=g) < 0.3))  # exact cancellations
    constraint = Bounds(-0.5, 0.5) if bounded else None
    got, ref = _step_both_ways(w0, deltas, lr, storage, constraint)
    assert torch.equal(got, ref)
