"""Every bundled model that Brian2 can express is cross-checked against Brian2 (short runs)."""

from __future__ import annotations

import glob
import os

import pytest

from neuro.fidelity import crosscheck
from neuro.reference import SUPPORTED_RULES
from neuro.spec import load_model

MODELS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "models", "*.toml")))


def _expressible(graph) -> bool:
    return all(p.rule in SUPPORTED_RULES for p in graph.projections.values())


@pytest.mark.parametrize("path", MODELS, ids=[os.path.basename(p)[:-5] for p in MODELS])
def test_bundled_model_matches_brian2(path):
    graph = load_model(path)
    if not _expressible(graph):
        pytest.skip(f"{graph.name}: rules {sorted({p.rule for p in graph.projections.values()})} "
                    f"are not all expressible in the Brian2 reference ({SUPPORTED_RULES})")
    report = crosscheck(graph, None, duration=min(graph.duration, 0.2), figure=False)
    # Same discrete model in float64 on both sides: identical spikes and membranes (criterion 1).
    assert report["passed"], report
    assert report["match_0"] == 1.0 and report["count_equality"] == 1.0
    assert report["max_abs_dv"] <= 1e-13
    if report.get("max_abs_dw") is not None:
        assert report["max_abs_dw"] <= 1e-12


def test_at_least_the_core_models_are_expressible():
    names = {load_model(p).name for p in MODELS if _expressible(load_model(p))}
    assert {"crosscheck_ff", "crosscheck_recurrent", "song2000_stdp", "yinyang_bptt", "digits_bptt"} <= names
