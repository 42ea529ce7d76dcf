"""The typed model graph: invariants, order, helpers, canonical form and hash."""

from __future__ import annotations

import dataclasses
import json

import pytest

from neuro.model.graph import (
    DataSpec,
    Encoding,
    GraphError,
    Init,
    ModelGraph,
    Population,
    Projection,
    TrainingSpec,
)
from neuro.model.spec import loads_model


def lif(name: str, size: int, **kw) -> Population:
    params = dict(
        tau_mem=0.01, tau_syn=0.005, v_th=1.0, v_reset=0.0, v_leak=0.0, refractory=0.0,
        surrogate="superspike", surrogate_scale=10.0,
    )  # fmt: skip
    params.update(kw)
    return Population(name, "LIF", size, **params)


def li(name: str, size: int) -> Population:
    return Population(name, "LI", size, tau_mem=0.01, tau_syn=0.005, v_leak=0.0)


def dense(name: str, source: str, target: str, **kw) -> Projection:
    kind = kw.pop("kind", "dense")
    return Projection(name, source, target, kind, Init("normal", mean=0.0, std=0.1), **kw)


def build(pops=None, projs=None, **kw) -> ModelGraph:
    pops = pops or [Population("x", "input", 4), lif("h", 8), li("y", 3)]
    projs = projs or [dense("xh", "x", "h"), dense("hy", "h", "y")]
    args = dict(
        name="m", description="test", dt=1e-3, duration=0.02,
        populations={p.name: p for p in pops}, projections={p.name: p for p in projs},
        output="y", encodings={"x": Encoding("x", "poisson", max_rate=100.0)},
    )  # fmt: skip
    args.update(kw)
    return ModelGraph(**args)


def test_helpers():
    g = build(projs=[dense("xh", "x", "h"), dense("hh", "h", "h", kind="recurrent"),
                     dense("hy", "h", "y")])  # fmt: skip
    assert [p.name for p in g.inputs()] == ["x"]
    assert [p.name for p in g.outputs()] == ["y"]
    assert g.is_recurrent and not build().is_recurrent
    assert g.steps == 20
    assert [p.name for p in g.incoming("h")] == ["xh", "hh"]
    assert [p.name for p in g.outgoing("h")] == ["hh", "hy"]
    assert g.weight_shape("xh") == (8, 4) and g.weight_shape("hh") == (8, 8)
    assert g.populations["h"].spiking and not g.populations["y"].spiking
    assert g.delay_steps("xh") == 0


def test_topological_order_does_not_depend_on_declaration_order():
    pops = [li("y", 3), lif("b", 5), lif("a", 5), Population("x", "input", 4)]
    projs = [dense("by", "b", "y"), dense("ab", "a", "b"), dense("xa", "x", "a"),
             dense("aa", "a", "a", kind="recurrent"), dense("ay", "a", "y")]  # fmt: skip
    g1 = build(pops, projs)
    g2 = build(pops[::-1], projs[::-1])
    assert list(g1.populations) == list(g2.populations) == ["x", "a", "b", "y"]
    assert list(g1.projections) == list(g2.projections) == ["xa", "aa", "ab", "ay", "by"]
    assert g1.canonical_hash() == g2.canonical_hash() and g1 == g2 and hash(g1) == hash(g2)


def test_weight_shape_with_blades_and_one_to_one():
    g = build(
        pops=[Population("x", "input", 4), lif("h", 4), li("y", 3)],
        projs=[dense("xh", "x", "h", kind="one_to_one"),
               dense("hy", "h", "y", algebra=(3, 0, 0), grades=(2, 0))],
    )  # fmt: skip
    assert g.weight_shape("xh") == (4,)
    assert g.projections["hy"].grades == (0, 2)
    assert g.projections["hy"].n_components == 1 + 3
    assert g.weight_shape("hy") == (3, 4, 4)


def test_nodes_are_frozen_values():
    g = build()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.dt = 2e-3
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.populations["h"].size = 3


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: build(projs=[dense("xh", "x", "hidden"), dense("hy", "h", "y")]),
         "projections.xh.target"),
        (lambda: build(projs=[dense("xh", "x", "h"), dense("hy", "h", "y", kind="recurrent")]),
         "projections.hy.target"),
        (lambda: build(projs=[dense("xh", "x", "h"), dense("hh", "h", "h")]), "projections.hh.kind"),
        (lambda: build(projs=[dense("xh", "x", "h", kind="one_to_one"), dense("hy", "h", "y")]),
         "projections.xh.kind"),
        (lambda: build(projs=[dense("xh", "x", "h"), dense("hy", "h", "y"), dense("yh", "y", "h")]),
         "projections.yh.source"),
        (lambda: build(output="z"), "model.output"),
        (lambda: build(output="x"), "model.output"),
        (lambda: build(encodings={}), "inputs.x"),
        (lambda: build(duration=1e-3), "model.duration"),
        (lambda: build(dt=0.0), "model.dt"),
        (lambda: build(dt=float("nan")), "model.dt"),
        (lambda: build(projs=[dense("xh", "x", "h", delay=1.5e-3), dense("hy", "h", "y")]),
         "projections.xh.delay"),
        (lambda: build(projs=[dense("xh", "h", "x"), dense("hy", "h", "y")]),
         "projections.xh.target"),
        (lambda: build(data=DataSpec("digits")), "populations.x.size"),
        (lambda: build(pops=[Population("x", "input", 4), lif("h", 8), li("y", 2)],
                       data=DataSpec("yinyang")), "populations.y.size"),
        (lambda: build(training=TrainingSpec(readout="spike_count")), "training.readout"),
        (lambda: lif("h", 0), "populations.h.size"),
        (lambda: lif("h", 2, v_reset=1.0), "populations.h.v_reset"),
        (lambda: lif("h", 2, tau_adapt=0.1), "populations.h.tau_adapt"),
        (lambda: Population("h", "LIF", 2), "populations.h.tau_mem"),
        (lambda: dense("p", "a", "b", format="posit12"), "projections.p.format"),
        (lambda: dense("p", "a", "b", grades=(0, 1)), "projections.p.grades"),
        (lambda: dense("p", "a", "b", bounds=(1.0, 0.0)), "projections.p.bounds"),
        (lambda: Encoding("x", "poisson", rate=1.0, max_rate=2.0), "inputs.x"),
        (lambda: Encoding("x", "latency", t_max=0.01, threshold=0.0, gain=1.0), "inputs.x.gain"),
        (lambda: TrainingSpec(batch_size=12, microbatch=8), "training.batch_size"),
        (lambda: DataSpec("mnist"), "data.name"),
        (lambda: DataSpec("digits", {"when": object()}), "data.when"),
    ],
)  # fmt: skip
def test_invariants_are_checked_at_build_time(make, key):
    with pytest.raises(GraphError) as info:
        make()
    assert info.value.key == key, str(info.value)
    assert str(info.value).startswith(f"{key}: expected ")


def test_feed_forward_cycle_is_refused():
    pops = [Population("x", "input", 4), lif("a", 3), lif("b", 3), li("y", 3)]
    projs = [dense("xa", "x", "a"), dense("ab", "a", "b"), dense("ba", "b", "a"),
             dense("by", "b", "y")]  # fmt: skip
    with pytest.raises(GraphError, match="cycle through populations a, b"):
        build(pops, projs)


def test_with_format_and_with_training():
    g = build()
    p16 = g.with_format("posit16")
    assert {p.format for p in p16.projections.values()} == {"posit16"}
    assert p16.canonical_hash() != g.canonical_hash()
    assert p16.with_format("float32") == g
    assert g.with_training(epochs=3).training.epochs == 3
    with pytest.raises(GraphError):
        g.with_format("float16")


def test_from_dict_round_trip_and_refusal():
    g = build(data=DataSpec("poisson_scenario", {"n": 3, "rates": [1.5, 2], "opt": {"a": True}}))
    d = json.loads(json.dumps(g.to_dict()))
    assert ModelGraph.from_dict(d) == g
    del d["training"]
    with pytest.raises(GraphError):
        ModelGraph.from_dict(d)


BASE = """
[model]
name = "h"
description = "hash test"
dt = "{dt}"
duration = "{duration}"

[populations.x]
type = "input"
size = 2

[populations.y]
type = "LIF"
size = 2
tau_mem = "{tau}"

[inputs.x]
encoding = "poisson"
rate = "{rate}"

[projections.xy]
source = "x"
target = "y"
init = {{ dist = "uniform", low = 0.0, high = 0.5 }}
"""


def test_canonical_hash_ignores_spelling_order_and_whitespace():
    a = loads_model(BASE.format(dt="1 ms", duration="20 ms", tau="10 ms", rate="15 Hz"))
    b = loads_model(BASE.format(dt="0.001 s", duration="0.02 s", tau="10000 us",
                                rate="0.015 kHz"))  # fmt: skip
    # reorder tables and keys, add comments and blank lines, default values spelt out
    blocks = BASE.strip().split("\n\n")
    shuffled = "\n\n\n".join(reversed(blocks)).replace("size = 2\n", "size = 2  # two\n")
    shuffled = shuffled.replace('type = "LIF"', 'v_th = 1.0\ntype = "LIF"\nrefractory = "0 s"')
    c = loads_model(shuffled.format(dt="1ms", duration="20ms", tau="10ms", rate="15Hz"))
    assert a.canonical_hash() == b.canonical_hash() == c.canonical_hash()
    assert len(a.canonical_hash()) == 64
    d = loads_model(BASE.format(dt="1 ms", duration="20 ms", tau="11 ms", rate="15 Hz"))
    assert d.canonical_hash() != a.canonical_hash()


def test_canonical_json_uses_si_floats_and_sorted_keys():
    g = loads_model(BASE.format(dt="1 ms", duration="20 ms", tau="10 ms", rate="15 Hz"))
    text = g.canonical_json()
    assert '"tau_mem":0.01' in text and '"dt":0.001' in text and '"rate":15.0' in text
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
