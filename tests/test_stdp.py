"""STDP rules: closed-form traces, hand-computed weight changes, bounds, batch-split bit identity,
triplet rule against a direct Pfister-Gerstner implementation, reward-modulated STDP."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuro.engine import UpdateEngine
from neuro.engine.params import Bounds, ParamType
from neuro.numerics import POSIT32
from neuro.rules import (
    TRIPLET_PARAMETER_SETS,
    PairSTDP,
    PairSTDPParameters,
    RSTDPParameters,
    TripletSTDP,
    TripletSTDPParameters,
    decay_factor,
    pair_delta,
    pair_init,
    pair_window,
    rstdp_init,
    rstdp_interval,
    stdp_pair_interval,
    stdp_triplet_interval,
    trace_interval,
    triplet_delta,
    triplet_init,
    triplet_window,
)
from neuro.rules.homeostasis import (
    normalisation_contribute,
)

F64 = torch.float64
DT = 1e-3


def _engine(w: torch.Tensor, lo=-10.0, hi=10.0, storage="float64"):
    return UpdateEngine(
        [
            {
                "params": [w],
                "format": POSIT32,
                "lr": 1.0,
                "type": ParamType(constraint=Bounds(lo, hi), storage=storage),
            }
        ]
    )


def _train(length, batch, n, times):
    z = torch.zeros(length, batch, n, dtype=torch.bool)
    for t, b, i in times:
        z[t, b, i] = True
    return z


# ------------------------------------------------------------------------------------------ traces
def test_trace_closed_form_matches_exponentials():
    tau = 20e-3
    d = decay_factor(DT, tau)
    assert d == math.exp(-DT / tau)
    spikes = [3, 10, 11, 40]
    z = _train(60, 1, 1, [(t, 0, 0) for t in spikes])
    x0 = torch.tensor([[0.5]], dtype=F64)
    x = trace_interval(z, x0, d)[:, 0, 0]
    for t in range(60):
        want = 0.5 * math.exp(-(t + 1) * DT / tau) + sum(
            math.exp(-(t - s) * DT / tau) for s in spikes if s <= t
        )
        assert x[t].item() == pytest.approx(want, rel=1e-13, abs=1e-15)


def test_trace_long_interval_blocks_and_nearest():
    d = decay_factor(1e-4, 5e-3)  # decay**-L overflows without blocking for L = 20000
    z = torch.zeros(20000, 1, dtype=torch.bool)
    z[0] = z[19990] = True
    x = trace_interval(z, torch.zeros(1, dtype=F64), d)
    assert torch.isfinite(x).all()
    assert x[-1].item() == pytest.approx(d**9 + d**19999, rel=1e-12)
    zn = _train(10, 1, 1, [(2, 0, 0), (4, 0, 0)])
    xn = trace_interval(zn, torch.tensor([[0.7]], dtype=F64), 0.5, nearest=True)[:, 0, 0]
    assert xn.tolist() == pytest.approx([0.35, 0.175, 1, 0.5, 1, 0.5, 0.25, 0.125, 0.0625, 0.03125])


def test_interval_equals_step_by_step():
    torch.manual_seed(0)
    p = PairSTDPParameters(a_plus=0.01, a_minus=0.012)
    zp = torch.rand(50, 2, 5) < 0.1
    zq = torch.rand(50, 2, 3) < 0.1
    terms, state = stdp_pair_interval(zp, zq, pair_init(2, 5, 3), p, DT)
    s = pair_init(2, 5, 3)
    for t in range(50):
        step_terms, s = stdp_pair_interval(zp[t : t + 1], zq[t : t + 1], s, p, DT)
        torch.testing.assert_close(step_terms.x_pre[0], terms.x_pre[t], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(step_terms.x_post[0], terms.x_post[t], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(s.x_pre, state.x_pre, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------ hand-computed
@pytest.mark.parametrize("lag", [-7, -1, 0, 1, 5])
def test_single_pair_through_engine(lag):
    p = PairSTDPParameters(a_plus=0.01, a_minus=0.0105, tau_plus=20e-3, tau_minus=30e-3)
    t_pre, t_post = 20, 20 + lag
    w = torch.zeros(1, 1, dtype=F64)
    eng = _engine(w)
    rule = PairSTDP(p, DT)
    rule.interval(eng, w, _train(40, 1, 1, [(t_pre, 0, 0)]), _train(40, 1, 1, [(t_post, 0, 0)]))
    eng.step()
    if lag >= 0:  # same-step pair: LTP only (Brian2: pre pathway before post pathway)
        want = 0.01 * math.exp(-lag * DT / 20e-3)
    else:
        want = -0.0105 * math.exp(lag * DT / 30e-3)
    assert w.item() == pytest.approx(want, rel=1e-8)
    assert pair_window(torch.tensor([lag * DT], dtype=F64), p).item() == pytest.approx(want, rel=1e-12)


def test_short_train_all_to_all_and_nearest():
    # pre at 0, 2; post at 3, 4 (steps of 1 ms, tau 10 ms, a+ = 1, a- = 2)
    p = PairSTDPParameters(tau_plus=10e-3, tau_minus=10e-3, a_plus=1.0, a_minus=2.0)
    e = math.exp(-0.1)
    zp, zq = _train(6, 1, 1, [(0, 0, 0), (2, 0, 0)]), _train(6, 1, 1, [(3, 0, 0), (4, 0, 0)])
    terms, _ = stdp_pair_interval(zp, zq, pair_init(1, 1, 1), p, DT)
    # all-to-all: every pre before every post: (e^3 + e^1) + (e^4 + e^2); no post before pre
    assert pair_delta(terms, p).item() == pytest.approx(e**3 + e + e**4 + e**2, rel=1e-13)
    terms, _ = stdp_pair_interval(zp, zq, pair_init(1, 1, 1), p._replace(pairing="nearest"), DT)
    # nearest spike: each post pairs with the latest pre only (step 2)
    assert pair_delta(terms, p).item() == pytest.approx(e + e**2, rel=1e-13)
    # a post before a pre: post 1, pre 4 -> -2 e^3
    terms, _ = stdp_pair_interval(
        _train(6, 1, 1, [(4, 0, 0)]), _train(6, 1, 1, [(1, 0, 0)]), pair_init(1, 1, 1), p, DT
    )
    assert pair_delta(terms, p).item() == pytest.approx(-2 * e**3, rel=1e-13)


def _brian2_pair(zp, zq, p, w, dt):
    """Event-driven pair STDP in Brian2's order (on_pre before on_post, no clipping)."""
    apre = torch.zeros(zp.shape[1], dtype=F64)
    apost = torch.zeros(zq.shape[1], dtype=F64)
    w = w.clone().to(F64)
    dp, dm = math.exp(-dt / p.tau_plus), math.exp(-dt / p.tau_minus)
    for t in range(zp.shape[0]):
        apre *= dp
        apost *= dm
        pre, post = zp[t].to(F64), zq[t].to(F64)
        apre += pre  # on_pre: Apre += 1; w -= a_minus * Apost
        w -= p.a_minus * torch.outer(torch.ones_like(apost), pre) * apost[:, None]
        apost += post  # on_post: Apost += 1; w += a_plus * Apre
        w += p.a_plus * post[:, None] * apre[None, :]
    return w


def test_matches_brian2_order_on_random_trains():
    torch.manual_seed(3)
    p = PairSTDPParameters(a_plus=0.01, a_minus=0.0105)
    zp = torch.rand(300, 1, 8) < 0.05
    zq = torch.rand(300, 1, 4) < 0.05
    terms, _ = stdp_pair_interval(zp, zq, pair_init(1, 8, 4), p, DT)
    w0 = torch.zeros(4, 8, dtype=F64)
    torch.testing.assert_close(
        pair_delta(terms, p), _brian2_pair(zp[:, 0], zq[:, 0], p, w0, DT), rtol=1e-12, atol=1e-15
    )


def test_soft_bounds_and_power_law():
    p = PairSTDPParameters(a_plus=0.1, a_minus=0.1, mu=1.0, w_min=0.0, w_max=1.0)
    zp, zq = _train(3, 1, 2, [(0, 0, 0), (0, 0, 1)]), _train(3, 1, 1, [(0, 0, 0)])
    w = torch.tensor([[0.25, 0.75]], dtype=F64)
    eng = _engine(w, 0.0, 1.0)
    PairSTDP(p, DT).interval(eng, w, zp, zq)
    eng.step()
    assert w[0].tolist() == pytest.approx([0.25 + 0.1 * 0.75, 0.75 + 0.1 * 0.25], rel=1e-8)
    w2 = torch.tensor([[0.25, 0.75]], dtype=F64)
    terms, _ = stdp_pair_interval(zp, zq, pair_init(1, 2, 1), p._replace(mu=0.5), DT)
    assert pair_delta(terms, p._replace(mu=0.5), w2)[0].tolist() == pytest.approx(
        [0.1 * 0.75**0.5, 0.1 * 0.25**0.5]
    )


# ------------------------------------------------------------------------------------------ bounds
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    a=st.floats(1e-3, 0.5),
    ratio=st.floats(0.5, 2.0),
    storage=st.sampled_from(["float32", "posit8", "bposit16"]),
    mu=st.sampled_from([0.0, 1.0]),
)
def test_bounds_respected(seed, a, ratio, storage, mu):
    g = torch.Generator().manual_seed(seed)
    lo, hi = 0.0, 0.04
    w = (torch.rand(3, 6, generator=g, dtype=F64) * hi).to(torch.float32 if storage != "bposit16" else F64)
    eng = _engine(w, lo, hi, storage)
    rule = PairSTDP(PairSTDPParameters(a_plus=a * hi, a_minus=a * ratio * hi, mu=mu, w_max=hi), DT)
    for _ in range(5):
        zp = torch.rand(20, 2, 6, generator=g) < 0.3
        zq = torch.rand(20, 2, 3, generator=g) < 0.3
        rule.interval(eng, w, zp, zq)
        eng.step()
        assert float(w.min()) >= lo and float(w.max()) <= hi


# ---------------------------------------------------------------------------------- batch splits
@pytest.mark.parametrize("rule_kind", ["pair", "pair_mult", "triplet"])
def test_identical_bits_for_any_batch_split(rule_kind):
    torch.manual_seed(11)
    zp = torch.rand(100, 6, 20) < 0.05
    zq = torch.rand(100, 6, 5) < 0.05
    w_init = torch.rand(5, 20) * 0.5

    def make():
        if rule_kind == "pair":
            return PairSTDP(PairSTDPParameters(a_plus=0.0123, a_minus=0.0131), DT)
        if rule_kind == "pair_mult":
            return PairSTDP(PairSTDPParameters(a_plus=0.0123, a_minus=0.0131, mu=1.0), DT)
        return TripletSTDP(TRIPLET_PARAMETER_SETS["hippocampal_all_to_all"], DT)

    results = []
    for split in ([6], [1] * 6, [2, 4], [3, 3], [5, 1]):
        w = w_init.clone()
        eng = _engine(w, 0.0, 1.0, "float32")
        order = list(range(len(split)))[::-1]  # pieces handed over in reverse order too
        bounds = [sum(split[:i]) for i in range(len(split) + 1)]
        for k in order:
            rule = make()
            rule.interval(eng, w, zp[:, bounds[k] : bounds[k + 1]], zq[:, bounds[k] : bounds[k + 1]])
        eng.step()
        results.append(w.clone())
    for r in results[1:]:
        assert torch.equal(r.view(torch.int32), results[0].view(torch.int32))


# --------------------------------------------------------------------------------------- triplet
def _pfister_gerstner_direct(zp, zq, p: TripletSTDPParameters, dt):
    """Pfister & Gerstner 2006 eqs. (1)-(4), one synapse per (post, pre), stepped event by event."""
    n, m = zp.shape[1], zq.shape[1]
    r1 = [0.0] * n
    r2 = [0.0] * n
    o1 = [0.0] * m
    o2 = [0.0] * m
    w = [[0.0] * n for _ in range(m)]
    near = p.pairing == "nearest"
    for t in range(zp.shape[0]):
        r1 = [x * math.exp(-dt / p.tau_plus) for x in r1]
        r2 = [x * math.exp(-dt / p.tau_x) for x in r2]
        o1 = [x * math.exp(-dt / p.tau_minus) for x in o1]
        o2 = [x * math.exp(-dt / p.tau_y) for x in o2]
        for j in range(n):  # presynaptic spikes first: depression with r2(t-), then r1, r2 update
            if zp[t, j]:
                for i in range(m):
                    w[i][j] -= o1[i] * (p.a2_minus + p.a3_minus * r2[j])
                r1[j] = 1.0 if near else r1[j] + 1
                r2[j] = 1.0 if near else r2[j] + 1
        for i in range(m):  # then postsynaptic spikes: potentiation with o2(t-), then o1, o2 update
            if zq[t, i]:
                for j in range(n):
                    w[i][j] += r1[j] * (p.a2_plus + p.a3_plus * o2[i])
                o1[i] = 1.0 if near else o1[i] + 1
                o2[i] = 1.0 if near else o2[i] + 1
    return torch.tensor(w, dtype=F64)


@pytest.mark.parametrize("name", sorted(TRIPLET_PARAMETER_SETS))
def test_triplet_against_direct_equations(name):
    p = TRIPLET_PARAMETER_SETS[name]
    torch.manual_seed(5)
    zp = torch.rand(400, 1, 4) < 0.04
    zq = torch.rand(400, 1, 3) < 0.04
    zq[100, 0, 0] = zp[100, 0, 0] = True  # a same-step pair
    terms, _ = stdp_triplet_interval(zp, zq, triplet_init(1, 4, 3), p, DT)
    want = _pfister_gerstner_direct(zp[:, 0], zq[:, 0], p, DT)
    torch.testing.assert_close(triplet_delta(terms, p), want, rtol=1e-11, atol=1e-15)
    w = torch.zeros(3, 4, dtype=F64)
    eng = _engine(w)
    TripletSTDP(p, DT).interval(eng, w, zp, zq)
    eng.step()
    # posit32 contributions (~1e-8 relative each) summed exactly; LTP and LTD nearly cancel
    torch.testing.assert_close(w, want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    "name", ["visual_cortex_all_to_all", "visual_cortex_minimal", "visual_cortex_nearest"]
)
def test_triplet_frequency_dependence(name):
    # Sjostrom et al. 2001, reproduced by Pfister & Gerstner 2006 (Table 3 sets): 15 pairings at
    # +-10 ms.  At 0.1 Hz pre-before-post gives no LTP and post-before-pre LTD; at 50 Hz both
    # potentiate (a pair rule gives the same LTP at every rate and can never turn post-pre to LTP).
    p = TRIPLET_PARAMETER_SETS[name]
    lags = torch.tensor([-10e-3, 10e-3])
    dw = {f: triplet_window(lags, p, rate_hz=f, pairs=15, dt=1e-3) for f in (0.1, 10.0, 50.0)}
    assert dw[0.1][0] < 0 and abs(dw[0.1][1]) < 1e-3 * abs(dw[0.1][0])
    assert dw[10.0][0] < 0 < dw[10.0][1]
    assert dw[50.0][0] > 0 and dw[50.0][1] > 0


def _repeated(p, pre, post, reps=60, period=1000):
    """Weight change of ``reps`` repetitions (1 Hz at dt 1 ms) of a pattern (spike times in ms)."""
    zp = torch.zeros(reps * period, 1, 1, dtype=torch.bool)
    zq = torch.zeros_like(zp)
    for r in range(reps):
        zp[[r * period + 20 + t for t in pre], 0, 0] = True
        zq[[r * period + 20 + t for t in post], 0, 0] = True
    terms, _ = stdp_triplet_interval(zp, zq, triplet_init(1, 1, 1), p, DT)
    return float(triplet_delta(terms, p))


@pytest.mark.parametrize("name", ["hippocampal_all_to_all", "hippocampal_minimal", "hippocampal_nearest"])
def test_triplet_asymmetry_hippocampal(name):
    # Wang et al. 2005 (fitted by the Table 4 sets): post-pre-post (5 ms / 5 ms) potentiates strongly,
    # pre-post-pre barely changes the weight, although both contain the same two pairs (+5 ms and
    # -5 ms), for which a pair rule predicts the same change.
    p = TRIPLET_PARAMETER_SETS[name]
    post_pre_post = _repeated(p, pre=[5], post=[0, 10])
    pre_post_pre = _repeated(p, pre=[0, 10], post=[5])
    pairs = _repeated(p, pre=[0], post=[5]) + _repeated(p, pre=[5], post=[0])
    assert post_pre_post > 5 * abs(pre_post_pre) > 0
    assert post_pre_post > pairs > pre_post_pre


def test_triplet_state_carries_over_intervals():
    p = TripletSTDPParameters()
    torch.manual_seed(2)
    zp = torch.rand(200, 1, 3) < 0.05
    zq = torch.rand(200, 1, 2) < 0.05
    whole, _ = stdp_triplet_interval(zp, zq, triplet_init(1, 3, 2), p, DT)
    a, s = stdp_triplet_interval(zp[:70], zq[:70], triplet_init(1, 3, 2), p, DT)
    b, _ = stdp_triplet_interval(zp[70:], zq[70:], s, p, DT)
    torch.testing.assert_close(
        triplet_delta(a, p) + triplet_delta(b, p), triplet_delta(whole, p), rtol=1e-10, atol=1e-15
    )


# ---------------------------------------------------------------------------------- reward STDP
def test_rstdp_against_step_loop():
    torch.manual_seed(9)
    p = RSTDPParameters(tau_eligibility=50e-3, tau_reward=20e-3, a_plus=1.0, a_minus=1.5)
    L, B, N, M = 120, 2, 5, 2
    zp = torch.rand(L, B, N) < 0.08
    zq = torch.rand(L, B, M) < 0.08
    reward = (torch.rand(L, B) < 0.05).to(F64) * 0.5
    w = torch.zeros(M, N, dtype=F64)
    eng = _engine(w)
    state = rstdp_init(B, N, M)
    state = rstdp_interval(eng, w, zp[:60], zq[:60], reward[:60], state, p, DT)
    state = rstdp_interval(eng, w, zp[60:], zq[60:], reward[60:], state, p, DT)
    eng.step()
    # direct loop: traces, eligibility c += stdp events, d += reward, dw = dt d c
    xp = torch.zeros(B, N, dtype=F64)
    xq = torch.zeros(B, M, dtype=F64)
    c = torch.zeros(B, M, N, dtype=F64)
    d = torch.zeros(B, dtype=F64)
    dw = torch.zeros(M, N, dtype=F64)
    for t in range(L):
        xp = xp * math.exp(-DT / p.tau_plus) + zp[t].to(F64)
        xq_before = xq * math.exp(-DT / p.tau_minus)
        xq = xq_before + zq[t].to(F64)
        c = (
            c * math.exp(-DT / p.tau_eligibility)
            + p.a_plus * zq[t].to(F64)[:, :, None] * xp[:, None, :]
            - p.a_minus * xq_before[:, :, None] * zp[t].to(F64)[:, None, :]
        )
        d = d * math.exp(-DT / p.tau_reward) + reward[t]
        dw += DT * (d[:, None, None] * c).sum(0)
    torch.testing.assert_close(w, dw, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(state.eligibility, c, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------- homeostasis
def test_weight_normalisation_through_the_engine():
    w = torch.tensor([[1.0, 3.0], [2.0, 2.0]], dtype=torch.float32)
    eng = _engine(w, 0.0, 10.0, "float32")
    normalisation_contribute(eng, w, 2.0)
    eng.step()
    assert w.tolist() == [[0.5, 1.5], [1.0, 1.0]]
