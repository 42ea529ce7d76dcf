"""Online rules: forward = Network, exact readout gradient, e-prop/OTTT vs BPTT direction,
checkpointed BPTT = plain BPTT contributions, train_online smoke run."""

from __future__ import annotations

import pytest
import torch

from neuro.network import Network, spike_fn
from neuro.rules.online import OnlineLearner, surrogate_derivative
from neuro.spec import load_model, loads_model
from neuro.train_online import CheckpointedBPTT, train_online
from tests.test_plan import model_text

F64 = torch.float64


class Collect:
    """A stand-in engine summing contributions in float64 (to compare with autograd)."""

    def __init__(self):
        self.sums = {}

    def accumulate_outer(self, w, post, pre, scale):
        self.sums[id(w)] = self.sums.get(id(w), 0) + scale * (post.to(F64).T @ pre.to(F64))

    def accumulate(self, w, delta):
        self.sums[id(w)] = self.sums.get(id(w), 0) + delta.to(F64)


def _graph(**kw):
    return loads_model(model_text(**kw)).with_format("float64")


def _data(g, steps=20, batch=4):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(steps, batch, g.inputs()[0].size, generator=gen, dtype=F64) * 3
    return x, torch.randint(0, 3, (batch,), generator=gen)


@pytest.mark.parametrize("kind", ["superspike", "sigmoid", "triangle", "arctan"])
def test_surrogate_derivative_matches_spike_fn(kind):
    x = torch.linspace(-1, 1, 101, dtype=F64, requires_grad=True)
    spike_fn(x, kind, 5.0).sum().backward()
    assert torch.equal(x.grad, surrogate_derivative(x.detach(), kind, 5.0))


@pytest.mark.parametrize("hidden,recurrent", [("LIF", False), ("AdaptiveLIF", True), ("LIFBox", False)])
def test_forward_equals_network(hidden, recurrent):
    g = _graph(n=12, hidden_type=hidden, recurrent=recurrent)
    net = Network(g, seed=1, dtype=F64)
    x, _ = _data(g)
    learner = OnlineLearner(g, dict(net.weights), batch=4, dtype=F64, learn=False)
    scores, _ = learner.run(x)
    ref = net(x).readout.max(0).values
    assert torch.allclose(scores, ref, atol=1e-12, rtol=0)


def _bptt_grads(g, net, x, labels):
    out = net(x).readout
    steps = x.shape[0]
    loss = -torch.log_softmax(out, -1).gather(2, labels.expand(steps, -1)[..., None]).sum()
    loss.backward()
    return {n: w.grad.clone() for n, w in net.weights.items()}


@pytest.mark.parametrize("rule", ["eprop", "ottt"])
def test_readout_gradient_exact_hidden_aligned(rule):
    g = _graph(n=16)
    net = Network(g, seed=1, dtype=F64)
    x, labels = _data(g)
    grads = _bptt_grads(g, net, x, labels)
    eng = Collect()
    OnlineLearner(g, dict(net.weights), batch=4, rule=rule, dtype=F64).run(x, labels, eng, 1.0)
    w_out, w_in = net.weights["h_out"], net.weights["in_h"]
    assert torch.allclose(eng.sums[id(w_out)], grads["h_out"], atol=1e-10)
    cos = torch.nn.functional.cosine_similarity(eng.sums[id(w_in)].flatten(), grads["in_h"].flatten(), 0)
    assert cos > 0.8


def test_eprop_adaptive_recurrent_contributes_every_projection():
    g = _graph(n=16, hidden_type="AdaptiveLIF", recurrent=True)
    net = Network(g, seed=1, dtype=F64)
    x, labels = _data(g)
    grads = _bptt_grads(g, net, x, labels)
    eng = Collect()
    learner = OnlineLearner(g, dict(net.weights), batch=4, rule="eprop", dtype=F64)
    learner.run(x, labels, eng, 1.0)
    assert learner.ea["in_h"].shape == (4, 16, 4)
    for name, w in net.weights.items():
        got = eng.sums[id(w)]
        assert torch.isfinite(got).all()
        cos = torch.nn.functional.cosine_similarity(got.flatten(), grads[name].flatten(), 0)
        assert cos > 0.3, (name, float(cos))


def test_checkpointed_bptt_equals_plain_bptt():
    g = loads_model(model_text(n=16, recurrent=True, rule="bptt")).with_format("float64")
    x, labels = _data(g, steps=23)
    sums = []
    for segment in (None, 5):
        net = Network(g, seed=1, dtype=F64)
        eng = Collect()
        scores = CheckpointedBPTT(g, net, segment=segment).run(x, eng, list(g.projections), 1.0)
        torch.nn.functional.cross_entropy(scores, labels, reduction="sum").backward()
        sums.append([eng.sums[id(net.weights[n])] for n in g.projections])
    for a, b in zip(*sums):
        assert torch.equal(a, b)
    # and it is the gradient autograd gives for the same (max-membrane) loss through Network
    net = Network(g, seed=1, dtype=F64)
    torch.nn.functional.cross_entropy(net(x).readout.max(0).values, labels, reduction="sum").backward()
    for name, got in zip(g.projections, sums[0]):
        assert torch.allclose(got, net.weights[name].grad, atol=1e-9)


def test_train_online_smoke(tmp_path):
    g = load_model("models/yinyang_eprop.toml").with_training(epochs=1, batch_size=16)
    result = train_online(g, max_train=64, progress=False, out_dir=tmp_path)
    m = result.metrics
    assert m["mode"] == "eprop" and 0.0 <= m["test_accuracy"] <= 1.0
    assert (tmp_path / "metrics.json").exists()
    res = train_online(g, max_train=32, progress=False, mode="bptt_checkpoint", segment=8)
    assert res.metrics["segment"] == 8
