"""Fidelity metrics on hand-computed cases, the crosscheck output files, and the fast LIF loop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from neuro.crosscheck.fidelity import coincidence_factor, fidelity_metrics, match_pairs, spike_trains


def _raster(steps, trains):
    r = torch.zeros(steps, 1, len(trains))
    for n, ts in enumerate(trains):
        r[ts, 0, n] = 1.0
    return r


def test_match_pairs_one_to_one_greedy():
    a = np.array([10, 20, 30])
    b = np.array([11, 12, 29, 50])
    assert match_pairs(a, b, 0).tolist() == []
    assert match_pairs(a, b, 1).tolist() == [-1, 1]  # 10-11, 30-29; 20 has no partner within 1
    assert match_pairs(a, b, 10).tolist() == [-1, 8, 1]  # 10-11, 20-12, 30-29
    assert match_pairs(np.array([5, 6]), np.array([5]), 2).tolist() == [0]  # one-to-one


def test_gamma_hand_computed():
    # One neuron, 1000 steps, window 2 steps.  ours: 4 spikes, ref: 5 spikes, 3 coincidences.
    ours = [np.array([100, 300, 500, 900])]
    ref = [np.array([101, 302, 497, 700, 800])]
    # nu = 4/1000 per step; <Nc> = 2*nu*2*5 = 0.08; norm = 1 - 2*nu*2 = 0.984
    expected = (2 - 0.08) / (0.5 * 9) / 0.984  # 497 is 3 steps off: only 2 coincidences
    assert coincidence_factor(ours, ref, 2, 1000) == pytest.approx(expected, rel=1e-12)
    expected3 = (3 - 2 * (4 / 1000) * 3 * 5) / (0.5 * 9) / (1 - 2 * (4 / 1000) * 3)
    assert coincidence_factor(ours, ref, 3, 1000) == pytest.approx(expected3, rel=1e-12)
    # identical trains give exactly 1; silent neurons are skipped
    assert coincidence_factor(ours + [np.array([])], ours + [np.array([])], 2, 1000) == pytest.approx(1.0)
    assert coincidence_factor([np.array([])], [np.array([])], 2, 1000) == 1.0


def test_fidelity_metrics_hand_case():
    dt = 1e-4
    ours = {"p": _raster(1000, [[100, 300, 500], [50]])}
    ref = {"p": _raster(1000, [[100, 301, 502], [60]])}
    m = fidelity_metrics(ours, ref, dt, window=2e-3,
                         volts_ours={"p": torch.zeros(3, 1, 2)}, volts_ref={"p": torch.full((3, 1, 2), 0.25)},
                         weights_ours={"w": torch.ones(2)}, weights_ref={"w": torch.tensor([1.0, 1.5])})
    assert m["count_equality"] == 1.0
    assert m["match_0"] == pytest.approx(2 * 1 / 8)
    assert m["match_1"] == pytest.approx(2 * 2 / 8)
    assert m["match_2"] == pytest.approx(2 * 3 / 8)
    # window 2 ms = 20 steps: all 4 pairs, |dt| = 0, 1, 2, 10 steps -> 13/4 steps = 0.325 ms
    assert m["mean_abs_dt_ms"] == pytest.approx(0.325)
    assert m["max_abs_dv"] == 0.25 and m["max_abs_dw"] == 0.5
    assert m["rate_diff"] == 0.0
    assert m["n_spikes_ours"] == m["n_spikes_ref"] == 4
    m2 = fidelity_metrics({"p": _raster(100, [[1, 2]])}, {"p": _raster(100, [[1, 2, 3, 4]])}, dt)
    assert m2["rate_diff"] == pytest.approx(0.5) and m2["count_equality"] == 0.0


def test_spike_trains_layout():
    r = torch.zeros(5, 2, 3)
    r[1, 1, 2] = 1
    r[4, 0, 0] = 1
    trains = spike_trains(r)
    assert len(trains) == 6 and trains[0].tolist() == [4] and trains[5].tolist() == [1]


def test_event_driven_lif_matches_network():
    from neuro.data import poisson_trains
    from neuro.model.spec import loads_model
    from neuro.sim.network import Network
    from neuro.sim.simulate import simulate_lif_events

    g = loads_model("""
[model]
name = "ev"
dt = "0.1 ms"
duration = "200 ms"
output = "lif"
[populations.inputs]
type = "input"
size = 300
[populations.lif]
type = "LIF"
size = 50
tau_mem = "10 ms"
tau_syn = "5 ms"
[inputs.inputs]
encoding = "poisson"
rate = "20 Hz"
[projections.w]
source = "inputs"
target = "lif"
init = { dist = "normal", mean = 0.04, std = 0.03 }
[training]
loss = "none"
batch_size = 2
microbatch = 1
readout = "spike_count"
""")
    for dtype in (torch.float64, torch.float32):
        net = Network(g, seed=1, dtype=dtype)
        x = poisson_trains(300, 20.0, g.duration, g.dt, 4, batch=2, dtype=dtype)
        with torch.no_grad():
            ref = net(x, record=True)
        z, v = simulate_lif_events(x, net.weights["w"], dt=g.dt, tau_mem=0.01, tau_syn=0.005, dtype=dtype,
                                   block=333, record_v=True)
        assert ref.spikes["lif"].sum() > 50
        assert torch.equal(z.to(dtype), ref.spikes["lif"])
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert (v - ref.voltages["lif"]).abs().max() <= tol


def test_crosscheck_writes_json_and_overlay(tmp_path):
    import dataclasses

    from neuro.crosscheck.fidelity import crosscheck
    from neuro.model.spec import load_model

    g = load_model("models/crosscheck_ff.toml")
    r = crosscheck(g, tmp_path, duration=0.3)
    data = json.loads((tmp_path / "fidelity.json").read_text())
    assert (tmp_path / "overlay.png").stat().st_size > 10_000
    for key in ("count_equality", "match_0", "match_1", "match_2", "mean_abs_dt_ms", "gamma_1ms",
                "gamma_2ms", "max_abs_dv", "max_abs_dw", "rate_diff", "passed", "tolerances"):
        assert key in data
    assert data["passed"] is True and r["passed"] is True
    assert data["tolerances"]["min_gamma"] == 0.999
    # an unreachable tolerance fails: Euler at dt = 1 ms vs Brian2's exact integration
    strict = dataclasses.replace(g, crosscheck=dataclasses.replace(g.crosscheck, min_gamma=1.0))
    bad = crosscheck(strict, None, method="exact", dt=1e-3, duration=0.3)
    assert bad["passed"] is False and not math.isnan(bad["gamma_window"])


def test_storage_is_any_storage_format_of_the_numerics():
    """``storage`` takes the names of :data:`neuro.numerics.formats.STORAGE_FORMATS` (IEEE and posit);
    anything else is refused before a simulation runs."""
    from neuro.crosscheck.fidelity import crosscheck
    from neuro.model.spec import load_model

    g = load_model("models/crosscheck_ff.toml")
    with pytest.raises(ValueError, match="crosscheck: storage must be"):
        crosscheck(g, None, storage="posit12")
    r = crosscheck(g, None, storage="float32", duration=0.05, figure=False)
    assert r["settings"]["storage"] == "float32" and r["n_spikes_ours"] > 0 and r["match_1"] >= 0.95
