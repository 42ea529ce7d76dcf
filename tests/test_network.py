"""neuro.sim.network: Norse's arithmetic bit for bit (the shared neuron steps against Norse's own),
shapes, recurrent lag, delays, fast path = step path."""

from __future__ import annotations

import warnings

import pytest
import torch

from neuro import neurons
from neuro.model.spec import loads_model
from neuro.neurons import SURROGATES, spike_fn
from neuro.sim.network import Network

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from norse.torch.functional.leaky_integrator import LIParameters, LIState, li_feed_forward_step
    from norse.torch.functional.lif import LIFFeedForwardState, LIFParameters, lif_feed_forward_step

F64 = torch.float64


def tiny(projections_extra: str = "", delay: str = "0 ms", tau_syn: str = "5 ms") -> str:
    """A 5-input -> 7-LIF -> 3-LI model file, float64 weights."""
    return f"""
[model]
name = "tiny"
dt = "1 ms"
duration = "30 ms"
output = "out"
format = "float64"

[populations.inp]
type = "input"
size = 5

[populations.hid]
type = "LIF"
size = 7
tau_mem = "10 ms"
tau_syn = "{tau_syn}"
v_th = 1.0
v_reset = 0.0

[populations.out]
type = "LI"
size = 3
tau_mem = "20 ms"
tau_syn = "5 ms"

[inputs.inp]
encoding = "current"

[projections.inp_hid]
source = "inp"
target = "hid"
init = {{ dist = "normal", mean = 0.5, std = 1.0 }}
delay = "{delay}"
rule = "bptt"

[projections.hid_out]
source = "hid"
target = "out"
init = {{ dist = "normal", mean = 0.0, std = 1.0 }}
rule = "bptt"
{projections_extra}
"""


RECURRENT = """
[projections.hid_hid]
source = "hid"
target = "hid"
kind = "recurrent"
init = { dist = "normal", mean = 0.0, std = 0.5 }
rule = "bptt"
"""


def currents(steps: int = 30, batch: int = 4, n: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(steps, batch, n, generator=g, dtype=F64) * 3.0


def _norse_lif(p: neurons.LIFParameters) -> LIFParameters:
    return LIFParameters(tau_syn_inv=p.tau_syn_inv, tau_mem_inv=p.tau_mem_inv, v_leak=p.v_leak, v_th=p.v_th,
                         v_reset=p.v_reset, method="heaviside")


def test_shared_lif_step_is_norse_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    kw = dict(dtype=F64)
    p = neurons.LIFParameters(tau_syn_inv=torch.tensor(1 / 5e-3, **kw),
                              tau_mem_inv=torch.tensor(1 / 12e-3, **kw), v_leak=torch.tensor(0.1, **kw),
                              v_th=torch.tensor(0.9, **kw), v_reset=torch.tensor(-0.2, **kw))
    ours = neurons.LIFState(v=torch.zeros(16, 9, **kw), i=torch.zeros(16, 9, **kw))
    theirs = LIFFeedForwardState(v=ours.v, i=ours.i)
    spikes = 0
    for _ in range(300):
        x = torch.randn(16, 9, generator=g, dtype=F64) * 2.0
        z1, ours = neurons.lif_step(x, ours, p, 1e-3)
        z2, theirs = lif_feed_forward_step(x, theirs, _norse_lif(p), 1e-3)
        assert torch.equal(z1, z2)
        assert torch.equal(ours.v, theirs.v) and torch.equal(ours.i, theirs.i)
        spikes += int(z1.sum())
    assert spikes > 100  # the comparison covered resets, not just sub-threshold decay


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_shared_li_step_is_norse_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(2)
    p = neurons.LIParameters(tau_syn_inv=torch.tensor(1 / 5e-3, dtype=dtype),
                             tau_mem_inv=torch.tensor(1 / 20e-3, dtype=dtype),
                             v_leak=torch.tensor(0.3, dtype=dtype))
    ours = neurons.LIState(v=torch.zeros(8, 5, dtype=dtype), i=torch.zeros(8, 5, dtype=dtype))
    theirs = LIState(v=ours.v, i=ours.i)
    for _ in range(100):
        x = torch.randn(8, 5, generator=g, dtype=dtype)
        v1, ours = neurons.li_step(x, ours, p, 1e-3)
        v2, theirs = li_feed_forward_step(x, theirs, LIParameters(*p), 1e-3)
        assert torch.equal(v1, v2) and torch.equal(ours.i, theirs.i)


@pytest.mark.parametrize("kind", SURROGATES)
def test_surrogate_scale_is_honoured(kind):
    x = torch.tensor([-0.3, -0.05, 0.0, 0.05, 0.3], dtype=F64, requires_grad=True)
    z = spike_fn(x, kind, 10.0)
    assert torch.equal(z, (x > 0).to(F64))  # strict threshold like Norse
    (g10,) = torch.autograd.grad(z.sum(), x)
    (g2,) = torch.autograd.grad(spike_fn(x, kind, 2.0).sum(), x)
    assert float(g10[2]) == pytest.approx(1.0)  # peak 1 at the threshold
    assert bool((g10 <= 1.0 + 1e-12).all()) and bool((g10 >= 0).all())
    assert float(g2[0]) > float(g10[0])  # a smaller scale is a wider surrogate
    with pytest.raises(ValueError, match="unknown surrogate"):
        spike_fn(x, "super")


def _norse_reference(net: Network, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiny model run with Norse's own step functions: (hidden spikes, readout)."""
    w1, w2 = net.weights["inp_hid"].detach(), net.weights["hid_out"].detach()
    p_hid, p_out = _norse_lif(net.neuron_params["hid"]), LIParameters(*net.neuron_params["out"])
    b = x.shape[1]
    s1 = LIFFeedForwardState(v=torch.zeros(b, 7, dtype=F64), i=torch.zeros(b, 7, dtype=F64))
    s2 = LIState(v=torch.zeros(b, 3, dtype=F64), i=torch.zeros(b, 3, dtype=F64))
    zs, vs = [], []
    for t in range(x.shape[0]):
        z, s1 = lif_feed_forward_step(x[t] @ w1.T, s1, p_hid, 1e-3)
        v, s2 = li_feed_forward_step(z @ w2.T, s2, p_out, 1e-3)
        zs.append(z)
        vs.append(v)
    return torch.stack(zs), torch.stack(vs)


def test_network_equals_norse_step_functions_and_shapes():
    graph = loads_model(tiny())
    net = Network(graph, dtype=F64)
    x = currents()
    with torch.no_grad():
        step = net(x, record=True, stepwise=True)
        fast = net(x, record=True)
    z_ref, v_ref = _norse_reference(net, x)
    assert torch.equal(step.spikes["hid"], z_ref)
    assert torch.equal(step.readout, v_ref)  # LI readout = Norse's li_feed_forward_step
    assert 0 < float(z_ref.mean()) < 0.5
    # the fast path (one matmul per projection for all steps) gives the same numbers
    assert torch.equal(fast.spikes["hid"], z_ref)
    torch.testing.assert_close(fast.readout, v_ref, rtol=1e-13, atol=1e-13)
    assert fast.readout.shape == (30, 4, 3)
    assert set(fast.spikes) == {"inp", "hid"}
    assert fast.voltages["hid"].shape == (30, 4, 7) and fast.voltages["out"].shape == (30, 4, 3)
    assert torch.equal(fast.voltages["out"], fast.readout)
    with pytest.raises(ValueError, match=r"\(T=30, B=4, 5\)"):
        net(x[:, :, :4])


def test_recurrent_projection_acts_one_step_later():
    # tau_syn = dt: a current jump lasts exactly one step, so each drive gives exactly one spike
    graph = loads_model(tiny(projections_extra=RECURRENT, tau_syn="1 ms"))
    net = Network(graph, dtype=F64)
    with torch.no_grad():
        net.weights["inp_hid"].zero_()
        net.weights["inp_hid"][0, 0] = 20.0  # one input step drives hidden neuron 0 over threshold
        net.weights["hid_hid"].zero_()
        net.weights["hid_hid"][1, 0] = 20.0  # neuron 0 -> neuron 1
    x = torch.zeros(10, 1, 5, dtype=F64)
    x[2, 0, 0] = 1.0
    for stepwise in (False, True):
        with torch.no_grad():
            r = net(x, stepwise=stepwise)
        z = r.spikes["hid"][:, 0]
        assert torch.nonzero(z[:, 0]).flatten().tolist() == [2]  # same step as its input
        assert torch.nonzero(z[:, 1]).flatten().tolist() == [3]  # one step after neuron 0
        assert float(z[:, 2:].sum()) == 0
    # tracked presynaptic activity of the recurrent projection is the spike train shifted by one
    r = net(x, track=True)
    assert torch.equal(r.pre["hid_hid"][1:], r.spikes["hid"][:-1])
    assert float(r.pre["hid_hid"][0].abs().sum()) == 0


def test_recurrent_fast_path_equals_step_path():
    graph = loads_model(tiny(projections_extra=RECURRENT))
    net = Network(graph, dtype=F64)
    x = currents(seed=3)
    with torch.no_grad():
        a, b = net(x), net(x, stepwise=True)
    assert torch.equal(a.spikes["hid"], b.spikes["hid"])
    torch.testing.assert_close(a.readout, b.readout, rtol=1e-13, atol=1e-13)
    assert float(a.spikes["hid"].sum()) > 0


@pytest.mark.parametrize("stepwise", [False, True])
def test_delay_shifts_the_response(stepwise):
    x = currents(steps=30, seed=5)
    x[20:] = 0.0
    runs = {}
    for d in (0, 3):
        graph = loads_model(tiny(delay=f"{d} ms"))
        assert graph.delay_steps("inp_hid") == d
        net = Network(graph, seed=7, dtype=F64)
        with torch.no_grad():
            runs[d] = net(x, stepwise=stepwise, record=True)
    z0, z3 = runs[0].spikes["hid"], runs[3].spikes["hid"]
    assert float(z0.sum()) > 0
    assert float(z3[:3].sum()) == 0  # nothing arrives during the delay
    assert torch.equal(z3[3:], z0[:-3])  # the same response, 3 steps later
    assert torch.equal(runs[3].voltages["hid"][3:], runs[0].voltages["hid"][:-3])


def test_track_gives_error_signals_and_no_weight_grad():
    graph = loads_model(tiny(projections_extra=RECURRENT))
    net = Network(graph, dtype=F64)
    r = net(currents(), track=True)
    r.readout.max(0).values.sum().backward()
    assert isinstance(r.currents["inp_hid"], torch.Tensor) and r.currents["inp_hid"].grad.shape == (30, 4, 7)
    assert isinstance(r.currents["hid_hid"], list) and len(r.currents["hid_hid"]) == 30
    assert r.pre["inp_hid"].shape == (30, 4, 5) and r.pre["hid_hid"].shape == (30, 4, 7)
    assert all(w.grad is None for w in net.weights.values())  # error signals go to the engine instead
    assert float(r.currents["hid_out"].grad.abs().sum()) > 0
