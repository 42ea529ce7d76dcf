"""Every bundled model that Brian2 can express is cross-checked against Brian2 (short runs)."""

from __future__ import annotations

import dataclasses
import glob
import os

import pytest
import torch

from neuro.crosscheck.fidelity import crosscheck
from neuro.crosscheck.inputs import make_inputs
from neuro.crosscheck.local import crosscheck_local
from neuro.crosscheck.reference import supported_rules
from neuro.model.spec import load_model
from neuro.rules import registry

MODELS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "models", "*.toml")))


def _expressible(graph) -> bool:
    return all(p.rule in supported_rules() for p in graph.projections.values())


@pytest.mark.parametrize("path", MODELS, ids=[os.path.basename(p)[:-5] for p in MODELS])
def test_bundled_model_matches_brian2(path):
    graph = load_model(path)
    if graph.reversible is not None:
        pytest.skip(f"{graph.name}: the Brian2 reference does not generate reversible blocks")
    if not _expressible(graph):
        pytest.skip(
            f"{graph.name}: rules {sorted({p.rule for p in graph.projections.values()})} "
            f"are not all expressible in the Brian2 reference ({supported_rules()})"
        )
    if any(registry.get(p.rule).kind == "local" for p in graph.projections.values()):
        # our closed loop (rule module + exact engine, weights stepped every dt; Diehl & Cook with
        # its lateral inhibition) against Brian2's per-event synapses, 1000-3000 steps, rewards from
        # a fixed random train (the distal-reward protocol rewards 1-3 s after its events: see
        # tests/test_reference.py for a run with it).  The engine rounds each contribution's factors
        # to posit32 (its quire format for float64 storage, ~2**-26 relative per event), so the
        # weights agree to 1e-9, or to 1e-8 of the largest change where weights move by more than
        # 0.1 (Diehl & Cook: amplitudes 0.01, weights up to 1); an error of the rule or the loop is
        # the size of an event, >= 1e-4 of it.
        duration = 1.0 if graph.dt >= 1e-3 else 0.3
        steps = round(duration / graph.dt)
        reward = (torch.rand(steps, generator=torch.Generator().manual_seed(3)) < 0.02).double() * 0.5
        r = crosscheck_local(graph, duration=duration, reward=reward)
        assert r["spikes_equal"] and r["n_spikes_ref"] > 0, r
        assert r["max_weight_change"] > 1e-3, r  # the rule really changed the weights
        tol = max(1e-9, 1e-8 * r["max_weight_change"])
        assert r["max_abs_dw"] <= tol and r["max_abs_dw_replay"] <= tol, r
        assert r["compared_share"] > 0.5, r
        return
    graph = dataclasses.replace(graph, duration=min(graph.duration, 0.2))
    inputs = None
    if not any(e.spiking for e in graph.encodings.values()):
        # untrained weights are too weak for currents in [0, gain) to drive yinyang's hidden layer: a
        # silent run compares nothing (and fails), so drive it 4x harder
        inputs = {k: 4.0 * v for k, v in make_inputs(graph, graph.training.seed).items()}
    report = crosscheck(graph, None, inputs=inputs, figure=False)
    assert report["n_spikes_ours"] > 0, report
    # Same discrete model in float64 on both sides: identical spikes and membranes (criterion 1).
    assert report["passed"], report
    assert report["match_0"] == 1.0 and report["count_equality"] == 1.0
    assert report["max_abs_dv"] <= 1e-13
    assert report["max_abs_dw"] is None  # fixed weights: nothing learns outside the local rules


def test_at_least_the_core_models_are_expressible():
    names = {load_model(p).name for p in MODELS if _expressible(load_model(p))}
    assert {
        "crosscheck_ff",
        "crosscheck_recurrent",
        "song2000_stdp",
        "yinyang_bptt",
        "digits_bptt",
        "distal_reward",
        "triplet_stdp",
    } <= names


def test_pair_stdp_target_trace_matches_brian2():
    """Diehl & Cook's target trace (a post spike adds a_plus (x_pre - x_tar)) in the Brian2
    reference equals our closed loop: Song 2000 with x_tar = 0.3 over 0.3 s."""
    from neuro.model.graph import ModelGraph

    d = load_model(os.path.join(os.path.dirname(__file__), "..", "models", "song2000_stdp.toml")).to_dict()
    d["projections"]["synapses"]["rule_params"]["x_tar"] = 0.3
    r = crosscheck_local(ModelGraph.from_dict(d), duration=0.3)
    assert r["spikes_equal"] and r["n_spikes_ref"] > 0, r
    assert r["max_weight_change"] > 1e-5, r
    assert r["max_abs_dw"] <= 1e-9, r  # as for the other local rules (float64, per-event vs per-step)


def _model_dict(name: str) -> dict:
    return load_model(os.path.join(os.path.dirname(__file__), "..", "models", f"{name}.toml")).to_dict()


@pytest.mark.parametrize(
    "changes",
    [
        {"mode": "power_law", "mu": 0.5},
        {"mode": "multiplicative", "mu": 1.0, "pairing": "nearest"},  # a graph checks mu against mode
        {"x_tar": 0.2},
    ],
    ids=["power_law", "multiplicative_nearest", "x_tar"],
)
def test_crosscheck_of_pair_stdp_variants_with_wide_bounds(changes):
    """``neuro crosscheck`` of pair STDP (our closed loop, rule module and engine) follows the Brian2
    reference for every weight dependence and pairing, also with bounds other than [0, g] (u = (w -
    low) / (high - low)): the same rasters, and the weights to 1e-9 on the synapses without a
    same-step pre/post pair (the engine rounds contribution factors to posit32)."""
    from neuro.model.graph import ModelGraph

    d = _model_dict("song2000_stdp")
    proj = d["projections"]["synapses"]
    proj["rule_params"].update(changes)
    proj["bounds"] = [-0.01, 0.05]
    report = crosscheck(ModelGraph.from_dict(d), None, duration=0.3, figure=False)
    assert report["passed"] and report["match_0"] == 1.0 and report["spikes_equal"], report
    assert report["max_abs_dw"] <= 1e-9 and report["compared_share"] > 0.9, report
    assert report["checks"]["weights_changed"]["value"] > 1e-3, report


def test_crosscheck_routes_every_local_rule_to_the_closed_loop(tmp_path):
    """``crosscheck`` of a pair, triplet or reward-modulated model runs our rule module and engine
    against Brian2, scores it against the model's tolerances and draws the plasticity overlay; a
    reward model gets a seeded probe dopamine train, so its weights change within the short run.  A
    graph the training loop cannot train with a local rule is refused, pair STDP included."""
    from neuro.model.graph import ModelGraph

    for name in ("song2000_stdp", "triplet_stdp", "distal_reward"):
        graph = load_model(os.path.join(os.path.dirname(__file__), "..", "models", f"{name}.toml"))
        report = crosscheck(graph, tmp_path / name, duration=None if name != "song2000_stdp" else 0.3)
        assert report["passed"], report  # the default duration: the first second
        assert report["spikes_equal"] and report["checks"]["weights_changed"]["ok"], report
        assert report["max_abs_dw"] <= 1e-9
        assert (tmp_path / name / "fidelity.json").exists() and (tmp_path / name / "overlay.png").exists()
    for name in ("triplet_stdp", "song2000_stdp"):
        d = _model_dict(name)
        d["populations"]["extra"] = {**d["populations"][d["output"]], "name": "extra"}
        d["projections"]["more"] = {**d["projections"]["synapses"], "name": "more", "target": "extra"}
        with pytest.raises(ValueError, match="local-rule models only"):
            crosscheck(ModelGraph.from_dict(d), None, duration=0.1)
    triplet = load_model(os.path.join(os.path.dirname(__file__), "..", "models", "triplet_stdp.toml"))
    for option in ({"storage": "posit16"}, {"method": "exact"}, {"dtype": torch.float32}):
        with pytest.raises(ValueError, match=r"drop method \(--method\), storage \(--format\) and dtype"):
            crosscheck(triplet, None, **option)
