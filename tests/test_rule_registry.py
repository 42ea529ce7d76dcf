"""The rule registry: one declaration per rule, read by the model files, the loop and the plan.

The worked example of neuro/rules/README.md: a rule registered from inside a test is written into a
model file and trains end to end, through the engine, like a bundled rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neuro.model.spec import ModelFileError, loads_model
from neuro.rules import registry
from neuro.rules.registry import Rule, RuleKeyError
from neuro.training import train

SONG = (Path(__file__).resolve().parent.parent / "models" / "song2000_stdp.toml").read_text()


class Oja:
    """Hebbian learning with Oja's decay: dw = eta (sum_t y x - (sum_t y) w) per interval."""

    def __init__(self, eta: float):
        self.eta = eta
        self.intervals = 0

    def reset(self, batch: int, n_pre: int, n_post: int) -> None:
        pass

    def interval(self, contributions, weight, z_pre, z_post, reward=None):
        self.intervals += 1
        post = z_post.reshape(-1, z_post.shape[-1]).double() * self.eta
        contributions.accumulate_events(weight, post, z_pre.reshape(-1, z_pre.shape[-1]))
        contributions.accumulate(weight, -post.sum(0)[:, None] * weight.detach().double())


BUILT: list[Oja] = []


def _build(graph, name):
    BUILT.append(Oja(graph.projections[name].params["eta"]))
    return BUILT[-1]


@pytest.fixture
def oja():
    rule = registry.register(Rule("oja_test", "Hebbian learning with Oja's decay", "local", mode="local",
                                  spiking_target=True, keys={"eta": ("number", 1e-3, ">0")}, build=_build,
                                  brian2_note="a test rule"))
    yield rule
    registry.unregister("oja_test")


def _model(rule_lines: str) -> str:
    text = SONG.replace('duration = "100 s"', 'duration = "0.3 s"')
    start = text.index("rule = ")
    end = text.index("\n[", text.index("[projections.synapses.rule_params]"))
    return text[:start] + rule_lines + text[end:]


def test_a_rule_registered_in_a_test_trains_end_to_end(oja, tmp_path):
    graph = loads_model(_model('rule = "oja_test"\n\n[projections.synapses.rule_params]\neta = 2e-4\n'))
    assert graph.projections["synapses"].params == {"eta": 2e-4}
    before = BUILT.copy()
    result = train(graph, progress=False, out_dir=tmp_path)
    rule = BUILT[-1]
    assert rule not in before and rule.intervals == 30  # 0.3 s in 10 ms update intervals
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["rule"] == "oja_test" and metrics["mode"] == "local"
    w = result.network.weights["synapses"].detach()
    from neuro.sim.network import Network

    w0 = Network(graph, seed=graph.training.seed, dtype=w.dtype).weights["synapses"].detach()
    assert not torch.equal(w, w0)  # it learned ...
    assert float(w.min()) >= 0.0 and float(w.max()) <= 0.03  # ... inside the projection's bounds
    again = train(graph, progress=False)
    assert again.metrics["weights_sha256"] == result.metrics["weights_sha256"]


def test_a_registered_rules_keys_are_checked_in_model_files(oja):
    with pytest.raises(ModelFileError) as err:
        loads_model(_model('rule = "oja_test"\n\n[projections.synapses.rule_params]\netta = 2e-4\n'))
    assert err.value.key.endswith("rule_params.etta") and "eta" in (err.value.hint or "")
    with pytest.raises(ModelFileError, match="> 0"):
        loads_model(_model('rule = "oja_test"\n\n[projections.synapses.rule_params]\neta = -1.0\n'))
    default = loads_model(_model('rule = "oja_test"\n'))
    assert default.projections["synapses"].params == {"eta": 1e-3}


def test_unknown_rule_names_the_registered_ones():
    with pytest.raises(ModelFileError) as err:
        loads_model(_model('rule = "stdp_pairs"\n'))
    assert "stdp_pair" in str(err.value)
    with pytest.raises(ValueError, match="did you mean 'stdp_pair'"):
        registry.get("stdp_pairs")


def test_declarations_are_checked_when_registered():
    with pytest.raises(ValueError, match="kind"):
        Rule("x", "x", "hebbian")
    with pytest.raises(ValueError, match="build"):
        Rule("x", "x", "local", mode="local", brian2_note="-")
    with pytest.raises(ValueError, match="brian2_note"):
        Rule("x", "x", "local", mode="local", build=_build)
    with pytest.raises(ValueError, match="registered already"):
        registry.register(Rule("stdp_pair", "another", "fixed"))


def test_the_builtin_rules_and_their_counterparts():
    assert set(registry.names()) >= {"none", "bptt", "eprop", "ottt", "stdp_pair", "stdp_triplet", "rstdp"}
    assert set(registry.rules_of_kind("local")) == {"stdp_pair", "stdp_triplet", "rstdp"}
    for name in registry.rules_of_kind("local"):
        rule = registry.get(name)
        assert rule.brian2 is not None and rule.build is not None
    for name in ("bptt", "eprop", "ottt"):
        assert registry.get(name).plan is not None
    pair = registry.get("stdp_pair")
    assert pair.values({"mode": "multiplicative"}, (0.0, 1.0))["mu"] == 1.0  # mu follows mode
    with pytest.raises(RuleKeyError) as err:
        pair.values({"mode": "multiplicative"}, None)
    assert err.value.key == "bounds" and err.value.table == "projection"
