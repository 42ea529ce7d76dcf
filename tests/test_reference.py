"""Brian2 reference vs our simulation: the acceptance criteria of issue 6.

Default run: shortened models (0.3-2 s of simulated time).  ``-m slow``: full-size runs (the Song
2000 model with 1000 inputs, the cython target).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from neuro.crosscheck.fidelity import crosscheck
from neuro.model.spec import load_model
from neuro.rules import TRIPLET_PARAMETER_SETS


def _ff():
    return load_model("models/crosscheck_ff.toml")


def _single_layer(tau_mem: float | None = None):
    """crosscheck_ff's first layer alone (Poisson -> 60 LIF)."""
    g = _ff()
    hidden = g.populations["hidden"]
    if tau_mem is not None:
        hidden = dataclasses.replace(hidden, tau_mem=tau_mem)
    pops = {"inputs": g.populations["inputs"], "hidden": hidden}
    return dataclasses.replace(
        g, populations=pops, projections={"in_hidden": g.projections["in_hidden"]}, output="hidden"
    )


def _song(n_inputs: int, duration: float):
    """Song 2000 scaled to n_inputs (weights, bounds and STDP amplitudes scaled by 1000/n)."""
    g = load_model("models/song2000_stdp.toml")
    s = 1000 / n_inputs
    pops = dict(g.populations)
    pops["inputs"] = dataclasses.replace(pops["inputs"], size=n_inputs)
    pj = g.projections["synapses"]
    prm = dict(pj.rule_params)
    prm["a_plus"] *= s
    prm["a_minus"] *= s
    g_max = pj.bounds[1]
    pj = dataclasses.replace(
        pj,
        init=dataclasses.replace(pj.init, high=g_max * s),
        bounds=(0.0, g_max * s),
        rule_params=tuple(sorted(prm.items())),
    )
    return dataclasses.replace(g, populations=pops, projections={"synapses": pj}, duration=duration)


@pytest.mark.parametrize("model", ["crosscheck_ff", "crosscheck_recurrent"])
def test_criterion1_float64_euler_is_bit_identical(model):
    g = load_model(f"models/{model}.toml")
    r = crosscheck(g, None, duration=0.5)
    assert r["n_spikes_ours"] > 300
    assert r["count_equality"] == 1.0
    assert r["match_0"] == 1.0
    assert r["max_abs_dv"] <= 1e-13
    assert r["passed"]


def test_reference_returns_runresult_structures():
    from neuro.crosscheck.inputs import make_inputs
    from neuro.crosscheck.reference import simulate_brian2
    from neuro.sim.network import Network

    g = dataclasses.replace(load_model("models/crosscheck_recurrent.toml"), duration=0.05)
    net = Network(g, seed=0, dtype=torch.float64)
    x = make_inputs(g, 0, batch=2)
    ref = simulate_brian2(g, x, dict(net.weights))
    with torch.no_grad():
        ours = net(x, record=True)
    assert set(ref.spikes) == set(ours.spikes) and set(ref.voltages) == set(ours.voltages)
    for k in ours.spikes:
        assert ref.spikes[k].shape == ours.spikes[k].shape
        assert torch.equal(ref.spikes[k], ours.spikes[k])  # two batch elements, two Brian2 runs
    assert ref.readout.shape == ours.readout.shape
    assert torch.equal(ref.weights["exc_exc"], net.weights["exc_exc"].detach())


def test_criterion2_float32_vs_brian2_float64():
    r = crosscheck(_ff(), None, dtype=torch.float32)
    assert r["n_spikes_ref"] > 1000
    assert 1.0 - r["match_0"] <= 1e-3
    assert r["match_1"] == 1.0
    assert r["gamma_1ms"] >= 0.999


@pytest.mark.parametrize("seed", [0, 11, 23])
def test_criterion3_euler_vs_exact_statistical(seed):
    # crosscheck_ff's first layer as shipped (tau_mem 10 ms, 2 ms refractory), 2 s, three seeds of
    # weights and inputs, at dt = 0.05 ms (the issue allows dt <= 0.1 ms).  Measured: Gamma(2 ms)
    # 0.984-0.987, rate difference <= 0.3%, mean |dt| 0.07-0.08 ms.  At dt = 0.1 ms the margin is
    # too thin to test (Gamma 0.966-0.981 over these seeds, with tau_mem 20 ms too): Euler's error
    # shrinks with dt / tau_mem, and a longer run does not raise Gamma (it is not sampling noise).
    r = crosscheck(_single_layer(), None, method="exact", dt=5e-5, duration=2.0, seed=seed, figure=False)
    assert r["n_spikes_ref"] > 2000
    assert r["gamma_2ms"] >= 0.97
    assert r["rate_diff"] <= 0.02
    assert r["mean_abs_dt_ms"] <= 0.2


# Pair STDP runs through our training code (closed loop, rule module, exact engine): the engine
# rounds each contribution's factors to posit32 (the quire format of float64 storage), ~2**-26
# relative, so the weights agree with Brian2's float64 to ~1e-10 rather than to float64's last bit
# (1e-12 held for the per-event copy of pair STDP this replaced, which bypassed the engine).
ENGINE_ATOL = 1e-9


def test_criterion4_stdp_song_scaled_weights_match():
    g = _song(200, 1.0)
    r = crosscheck(g, None)
    assert r["n_spikes_ref"] > 25  # the plastic weights drive the neuron
    assert r["match_0"] == 1.0 and r["spikes_equal"]
    assert r["max_abs_dw"] is not None and r["max_abs_dw"] <= ENGINE_ATOL
    assert r["compared_share"] > 0.8  # the synapses without a same-step pre/post pair
    assert r["passed"]


def test_criterion4_weights_really_change():
    from neuro.crosscheck.local import crosscheck_local

    g = _song(200, 0.5)
    rec = crosscheck_local(g, record=True)["record"]
    dw = (rec["w_ours"] - rec["w0"]).abs()  # our closed loop's learning, as training runs it
    assert dw.max() > 2.5 * g.projections["synapses"].params["a_plus"]  # several STDP steps on a synapse
    assert (dw > 0).float().mean() > 0.9


@pytest.mark.parametrize("storage", ["posit16", "bposit16"])
def test_criterion5_posit_storage_metrics(storage):
    r = crosscheck(_ff(), None, storage=storage, duration=0.5)
    # Reported, not bounded by the issue; the rounding of the weights moves few spikes by > 1 step.
    print(storage, {k: r[k] for k in ("match_0", "match_1", "gamma_1ms", "gamma_2ms", "rate_diff")})
    assert r["settings"]["storage"] == storage
    assert r["match_1"] >= 0.95 and r["gamma_2ms"] >= 0.95


@pytest.mark.slow
def test_criterion4_song_full_size():
    # The first second (the cross-check's default for plastic models).  Not 10 s: a synapse with a
    # pre and a post spike in one step at a bound ends up to one event apart (Brian2 clips between
    # the two events, the engine once per step), and by 1.9 s such a difference moves a spike.
    r = crosscheck(_song(1000, 10.0), None, duration=1.0)
    assert r["max_abs_dw"] <= ENGINE_ATOL and r["match_0"] == 1.0 and r["passed"]


@pytest.mark.slow
def test_cython_target_without_fast_math_is_bit_identical(tmp_path):
    r = crosscheck(_ff(), None, target="cython", duration=0.5)
    assert r["match_0"] == 1.0 and r["max_abs_dv"] <= 1e-13


@pytest.mark.slow
def test_criterion1_full_duration_both_models():
    for name in ("crosscheck_ff", "crosscheck_recurrent"):
        r = crosscheck(load_model(f"models/{name}.toml"), None)
        assert r["match_0"] == 1.0 and r["max_abs_dv"] <= 1e-13


# ---------------------------------------------------------------------- local rules (issue 5)
def _with_rule(rule: str, **params):
    """models/triplet_stdp.toml (200 Poisson -> 1 LIF) with another plastic rule."""
    g = load_model("models/triplet_stdp.toml")
    pj = dataclasses.replace(g.projections["synapses"], rule=rule, rule_params=tuple(sorted(params.items())))
    return dataclasses.replace(g, projections={"synapses": pj})


_PAIR = dict(tau_plus=0.02, tau_minus=0.02, a_plus=0.02, a_minus=0.021)


@pytest.mark.parametrize(
    "rule, params",
    [
        ("stdp_triplet", TRIPLET_PARAMETER_SETS["visual_cortex_nearest"]._asdict()),
        ("stdp_triplet", TRIPLET_PARAMETER_SETS["hippocampal_all_to_all"]._asdict()),
        ("stdp_pair", dict(_PAIR, mode="power_law", mu=0.5, pairing="nearest")),
        ("stdp_pair", dict(_PAIR, mode="multiplicative", mu=1.0, pairing="all_to_all")),
    ],
)
def test_local_rules_match_brian2(rule, params):
    from neuro.crosscheck.local import crosscheck_local

    r = crosscheck_local(_with_rule(rule, **params), duration=0.3)
    assert r["spikes_equal"] and r["n_spikes_ref"] >= 3, r
    assert r["max_weight_change"] > 1e-3, r
    # the synapses without a same-step pre/post pair (there a weight-dependent rule reads the step's
    # starting weight on our side, the weight after the pre event on Brian2's, and Brian2 clips
    # between the two events)
    assert r["max_abs_dw"] <= ENGINE_ATOL and r["compared_share"] > 0.5, r
    if params.get("mu", 0.0) == 0.0:  # additive rules: the interval replay agrees too
        assert r["max_abs_dw_replay"] <= ENGINE_ATOL and r["inside_bounds"] > 0.5, r


@pytest.mark.slow
def test_distal_reward_protocol_matches_brian2():
    from neuro.crosscheck.local import crosscheck_local

    # the model's reward protocol driven by our output spikes, with shorter delays (0.1-0.3 s) and
    # a wider window (20 ms) so that a few-second run sees rewards
    g = load_model("models/distal_reward.toml")
    opts = {**g.data.options, "reward_delay": ["100 ms", "300 ms"], "reward_window": "20 ms"}
    r = crosscheck_local(dataclasses.replace(g, data=dataclasses.replace(g.data, options=opts)), duration=4.0)
    assert r["rewards"] > 0 and r["spikes_equal"], r
    assert r["max_abs_dw"] <= ENGINE_ATOL and r["max_abs_dw_replay"] <= ENGINE_ATOL, r
