"""Diehl & Cook (2015) unsupervised digits: the target-trace rule's closed form through the engine,
re-presentation of quiet samples, the model files, and (slow) a reduced training run."""

from __future__ import annotations

import math

import pytest
import torch

from neuro.engine import UpdateEngine
from neuro.numerics import POSIT32
from neuro.params import Bounds, ParamType
from neuro.rules.stdp import PairSTDP, PairSTDPParameters, pair_delta, stdp_pair_interval

F64 = torch.float64
DT = 1e-3


def _engine(w: torch.Tensor) -> UpdateEngine:
    group = {
        "params": [w],
        "format": POSIT32,
        "lr": 1.0,
        "type": ParamType(constraint=Bounds(-10.0, 10.0), storage="float64"),
    }
    return UpdateEngine([group])


@pytest.mark.parametrize("mu", [0.0, 1.0])
def test_target_trace_rule_matches_closed_form(mu):
    # pre 0 spikes at steps 0 and 2, pre 1 never; post spikes at steps 3 and 5 (nearest pairing:
    # the presynaptic trace is reset to 1 at a pre spike).  At a post spike each synapse changes by
    # a_plus (x_pre - x_tar) f+(w); at a pre spike by -a_minus x_post f-(w).
    p = PairSTDPParameters(20e-3, 10e-3, 0.05, 0.002, mu, 0.0, 1.0, "nearest", x_tar=0.4)
    d_pre, d_post = math.exp(-DT / p.tau_plus), math.exp(-DT / p.tau_minus)
    z_pre = torch.zeros(8, 1, 2, dtype=torch.bool)
    z_post = torch.zeros(8, 1, 1, dtype=torch.bool)
    z_pre[[0, 2], 0, 0] = True
    z_post[[3, 5], 0, 0] = True
    w0 = torch.tensor([[0.5, 0.25]], dtype=F64)
    f_plus = (1.0 - w0) ** mu
    ltp = torch.tensor([[d_pre**1 + d_pre**3 - 2 * 0.4, -2 * 0.4]], dtype=F64)
    want = p.a_plus * f_plus * ltp  # the pre spikes come before any post spike: no depression
    w = w0.clone()
    engine = _engine(w)
    rule = PairSTDP(p, DT)
    terms = rule.interval(engine, w, z_pre, z_post)
    engine.step()
    # the engine rounds the factors to posit32 (27 fraction bits near 1) and their product exactly
    assert torch.allclose(w - w0, want, rtol=1e-7, atol=0)
    assert torch.allclose(pair_delta(terms, p, w0), want, rtol=0, atol=1e-15)
    # a later pre spike is depressed by the post trace it finds
    z_pre2 = torch.zeros(2, 1, 2, dtype=torch.bool)
    z_pre2[1, 0, 1] = True
    terms2, _ = stdp_pair_interval(z_pre2, torch.zeros(2, 1, 1, dtype=torch.bool), rule.state, p, DT)
    x_post = d_post ** (8 - 5 + 1)  # last post spike at step 5 of the first interval, read at step 9
    f_minus = (w0[0, 1] / 1.0) ** mu
    assert math.isclose(
        float(pair_delta(terms2, p, w0)[0, 1]), -p.a_minus * x_post * float(f_minus), rel_tol=1e-12
    )
