"""The bundled model files: they load, describe themselves in one line, and round-trip."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest

from neuro.model.graph import ModelGraph
from neuro.model.spec import dump_model, load_model, loads_model

MODELS = sorted((Path(__file__).resolve().parent.parent / "models").glob("*.toml"))
NAMES = [p.stem for p in MODELS]


def test_the_three_first_models_are_shipped():
    assert {"yinyang_bptt", "digits_bptt", "song2000_stdp"} <= set(NAMES)


@pytest.mark.parametrize("path", MODELS, ids=NAMES)
def test_model_loads_and_describes_itself(path):
    graph = load_model(path)
    assert graph.name == path.stem
    assert graph.description.strip() and "\n" not in graph.description
    assert len(graph.description) <= 100
    assert graph.inputs() and graph.outputs()


@pytest.mark.parametrize("path", MODELS, ids=NAMES)
def test_dump_round_trips_to_the_same_hash_and_text(path):
    graph = load_model(path)
    text = dump_model(graph)
    again = loads_model(text, "<dump>")
    assert again.canonical_hash() == graph.canonical_hash()
    assert again == graph
    assert dump_model(again) == text
    # the resolved file spells out every default
    resolved = tomllib.loads(text)
    for proj in resolved["projections"].values():
        assert {"kind", "format", "algebra", "grades", "delay", "rule", "init"} <= set(proj)
    assert set(resolved["training"]) >= {"epochs", "batch_size", "microbatch", "seed"}


@pytest.mark.parametrize("path", MODELS, ids=NAMES)
def test_to_dict_json_round_trip(path):
    graph = load_model(path)
    back = ModelGraph.from_dict(json.loads(graph.canonical_json()))
    assert back.canonical_hash() == graph.canonical_hash()


def test_yinyang_bptt():
    g = load_model(MODELS[NAMES.index("yinyang_bptt")])
    (inp,) = g.inputs()
    assert inp.size == 4 and g.encodings[inp.name].kind in ("current", "latency")
    assert [p.type for p in g.populations.values()] == ["input", "LIF", "LI"]
    hidden = next(p for p in g.populations.values() if p.type == "LIF")
    assert 100 <= hidden.size <= 200
    assert g.outputs()[0].type == "LI" and g.outputs()[0].size == 3
    assert {p.rule for p in g.projections.values()} == {"bptt"}
    assert {p.format for p in g.projections.values()} == {"float32"}
    assert g.data.name == "yinyang" and g.training.loss == "cross_entropy"


def test_digits_bptt():
    g = load_model(MODELS[NAMES.index("digits_bptt")])
    (inp,) = g.inputs()
    enc = g.encodings[inp.name]
    assert inp.size == 64
    assert (enc.kind == "poisson" and enc.max_rate > 0) or (enc.kind == "current" and enc.gain > 0)
    assert g.outputs()[0].type == "LI" and g.outputs()[0].size == 10
    assert {p.rule for p in g.projections.values()} == {"bptt"}
    assert g.data.name == "digits"


def test_song2000_stdp():
    g = load_model(MODELS[NAMES.index("song2000_stdp")])
    (inp,) = g.inputs()
    assert inp.size == 1000
    assert g.encodings[inp.name].kind == "poisson" and g.encodings[inp.name].rate == 15.0
    (out,) = g.outputs()
    assert out.type == "LIF" and out.size == 1
    (proj,) = g.projections.values()
    params = proj.params
    assert proj.rule == "stdp_pair" and params["mode"] == "additive"
    assert params["tau_plus"] == params["tau_minus"] == 0.02
    assert math.isclose(params["a_minus"] / params["a_plus"], 1.05)
    low, g_max = proj.bounds
    assert low == 0.0 and g_max > 0 and proj.sign == "excitatory"
    assert proj.init.dist == "uniform" and proj.init.low >= 0 and proj.init.high <= g_max
    assert g.duration >= 10.0
    assert g.training.loss == "none"
