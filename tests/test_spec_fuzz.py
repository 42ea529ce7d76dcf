"""Fuzzing the model-file parser: whatever comes in, only ModelFileError comes out."""

from __future__ import annotations

import copy
import datetime
import tomllib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuro.model.graph import ModelGraph
from neuro.model.spec import ModelFileError, dump_model, loads_model, model_from_dict

MODELS = sorted((Path(__file__).resolve().parent.parent / "models").glob("*.toml"))
TEXTS = [p.read_text() for p in MODELS]
DOCS = [tomllib.loads(t) for t in TEXTS]

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

KEYS = [
    "model", "populations", "projections", "inputs", "data", "training", "crosscheck", "name",
    "description", "dt", "duration", "output", "format", "type", "size", "tau_mem", "tau_syn",
    "v_th", "v_reset", "v_leak", "refractory", "tau_adapt", "adapt_increment", "surrogate",
    "surrogate_scale", "source", "target", "kind", "init", "dist", "mean", "std", "low", "high",
    "value", "algebra", "grades", "delay", "rule", "rule_params", "bounds", "sign", "encoding",
    "rate", "max_rate", "t_max", "tau", "threshold", "gain", "epochs", "batch_size", "microbatch",
    "seed", "learning_rate", "readout", "loss", "tau_plus", "a_plus", "hidden", "out", "inp",
    "file", "key", "sha256",
]  # fmt: skip
WORDS = [
    "LIF", "LIFBox", "AdaptiveLIF", "LI", "input", "dense", "recurrent", "one_to_one", "normal",
    "uniform", "constant", "float32", "posit16", "bposit16", "posit8", "bptt", "stdp_pair",
    "poisson", "latency", "current", "yinyang", "digits", "hidden", "out", "inp", "excitatory",
    "10 ms", "0.01 s", "1 ms", "15 Hz", "1 mV", "10", "-1 ms", "0 ms", "1e400 s", "nan", "ms",
    "1/0", "1 s^-1", "2 kHz*ms", "None", "", "file", "W.safetensors", "W.npy", "/dev/null.npy",
]  # fmt: skip

scalars = st.one_of(
    st.sampled_from(WORDS),
    st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.just(datetime.date(2024, 1, 1)),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)


def check(call, *args):
    """Run the parser; a graph or a ModelFileError are the only acceptable outcomes."""
    try:
        graph = call(*args)
    except ModelFileError as err:
        assert str(err)
        return None
    assert isinstance(graph, ModelGraph)
    # Whatever parses must also survive the canonical form and the round trip.
    assert loads_model(dump_model(graph)).canonical_hash() == graph.canonical_hash()
    return graph


@FUZZ
@given(st.text(max_size=300))
def test_random_text(text):
    check(loads_model, text)


@FUZZ
@given(st.dictionaries(keys, values, max_size=8))
def test_random_dicts(doc):
    check(model_from_dict, doc)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@FUZZ
@given(st.data())
def test_mutated_bundled_models(data):
    doc = copy.deepcopy(data.draw(st.sampled_from(DOCS)))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = data.draw(values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(keys)] = data.draw(values)
    check(model_from_dict, doc)


@FUZZ
@given(st.data())
def test_mutated_model_text(data):
    text = data.draw(st.sampled_from(TEXTS))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 6)))
        text = text[:i] + data.draw(st.text(max_size=6)) + text[j:]
    check(loads_model, text)
