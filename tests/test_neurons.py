"""neuro.neurons: one source for every simulator's neurons; closed forms of each neuron type; the
three step flavours agree."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuro import neurons
from neuro.model.graph import ModelGraph
from neuro.model.spec import load_model, loads_model
from neuro.neurons import lif as lif_module
from neuro.rules.online import OnlineLearner
from neuro.sim.checkpointed import CheckpointedBPTT
from neuro.sim.network import Network
from neuro.sim.plastic import ClosedLoop
from neuro.sim.simulate import simulate_lif_events
from neuro.training.protocols import poisson_chunk
from tests.test_online import Collect
from tests.test_plan import model_text

F64 = torch.float64

def _classifier(rule: str = "bptt", hidden: str = "LIF") -> ModelGraph:
    """inp (4 currents) -> h (12 neurons of type ``hidden``) -> out (3 LI), float64."""
    return loads_model(model_text(n=12, hidden_type=hidden, rule=rule)).with_format("float64")


def _currents(g: ModelGraph, batch: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(g.steps, batch, g.inputs()[0].size, generator=gen, dtype=F64) * 3.0
    return x, torch.randint(0, 3, (batch,), generator=gen)


def _song(duration: float = 0.2) -> ModelGraph:
    d = load_model("models/song2000_stdp.toml").to_dict()
    d["duration"] = duration
    return ModelGraph.from_dict(d).with_format("float64")


# ---------------------------------------------------------------------------------------------------
# (a) the single source: one parameter changed in the shared step changes every simulator


def _network(stepwise: bool):
    def run():
        g = _classifier()
        x, _ = _currents(g)
        with torch.no_grad():
            r = Network(g, seed=1, dtype=F64)(x, stepwise=stepwise)
        return torch.cat([r.readout.flatten(), r.spikes["h"].flatten()])

    return run


def _closed_loop():
    g = _song()
    loop = ClosedLoop(g, Network(g, seed=0, dtype=F64), None, None)
    z = poisson_chunk(15.0, 1000, g.steps, g.dt, 0, 0, 0).unsqueeze(1)
    loop.reset(1)
    out = torch.cat([loop.run_interval(z[s : s + 100], learn=False) for s in range(0, g.steps, 100)])
    assert int(out.sum()) > 3
    return out


def _online(rule: str):
    def run():
        g = _classifier(rule=rule)
        net = Network(g, seed=1, dtype=F64)
        x, labels = _currents(g)
        eng = Collect()
        learner = OnlineLearner(g, dict(net.weights), batch=4, rule=rule, dtype=F64)
        scores, _ = learner.run(x, labels, eng, 1.0)
        return torch.cat([scores.flatten(), *(eng.sums[id(w)].flatten() for w in net.weights.values())])

    return run


def _checkpointed():
    g = _classifier()
    net = Network(g, seed=1, dtype=F64)
    x, _ = _currents(g)
    return CheckpointedBPTT(g, net, segment=7).run(x).detach()


def _event_fallback():
    g = _song()
    pop = g.populations["neuron"]
    x = poisson_chunk(15.0, 1000, g.steps, g.dt, 0, 0, 0).unsqueeze(1)
    w = Network(g, seed=0, dtype=F64).weights["synapses"]
    z, v = simulate_lif_events(x, w, dt=g.dt, tau_mem=pop.tau_mem, tau_syn=pop.tau_syn, v_th=pop.v_th,
                               v_reset=pop.v_reset, v_leak=pop.v_leak, dtype=F64, record_v=True,
                               backend="torch")
    return torch.cat([z.flatten().double(), v.flatten()])


SIMULATORS = {
    "network_layers": _network(stepwise=False),
    "network_stepwise": _network(stepwise=True),
    "closed_loop": _closed_loop,
    "online_eprop": _online("eprop"),
    "online_ottt": _online("ottt"),
    "checkpointed_bptt": _checkpointed,
    "event_torch_fallback": _event_fallback,
}


@pytest.mark.parametrize("name", list(SIMULATORS))
def test_one_parameter_of_the_shared_step_changes_every_simulator(name, monkeypatch):
    run = SIMULATORS[name]
    before = run()
    original = lif_module.integrate
    calls = []

    def slower_membrane(current, v, i, p, dt):  # tau_mem 25 % longer, in the one shared Euler step
        calls.append(1)
        return original(current, v, i, p._replace(tau_mem_inv=p.tau_mem_inv * 0.8), dt)

    monkeypatch.setattr(lif_module, "integrate", slower_membrane)
    after = run()
    assert calls, f"{name} never called neuro.neurons.lif.integrate"
    assert before.shape == after.shape and not torch.equal(before, after), name
    monkeypatch.undo()
    assert torch.equal(run(), before)  # and nothing else made the difference


# ---------------------------------------------------------------------------------------------------
# (b) closed forms


def _decays(tau_mem: float, tau_syn: float, dt: float) -> tuple[float, float]:
    return 1.0 - dt / tau_mem, 1.0 - dt / tau_syn


@settings(max_examples=40, deadline=None)
@given(tau_mem=st.floats(2e-3, 50e-3), tau_syn=st.floats(1e-3, 30e-3), jump=st.floats(-3.0, 3.0),
       v_leak=st.floats(-1.0, 1.0))
def test_li_impulse_response(tau_mem, tau_syn, jump, v_leak):
    dt = 1e-3
    a, s = _decays(tau_mem, tau_syn, dt)
    if abs(a - s) < 1e-3:
        return
    p = neurons.LIParameters(tau_syn_inv=1 / tau_syn, tau_mem_inv=1 / tau_mem, v_leak=v_leak)
    state = neurons.initial_state(p, (1, 1), dtype=F64)
    vs = []
    for t in range(60):
        v, state = neurons.li_step(torch.full((1, 1), jump if t == 0 else 0.0, dtype=F64), state, p, dt)
        vs.append(float(v))
    # v(t) - v_leak = (1 - a) I sum_k a^(t-k) s^k = (1 - a) I (a^(t+1) - s^(t+1)) / (a - s)
    want = [v_leak + (1 - a) * jump * (a ** (t + 1) - s ** (t + 1)) / (a - s) for t in range(60)]
    assert vs == pytest.approx(want, rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(tau_mem=st.floats(2e-3, 50e-3), drive=st.floats(0.0, 0.9), v0=st.floats(-0.5, 0.5))
def test_lif_subthreshold_response_to_constant_drive(tau_mem, drive, v0):
    # LIFBox (no synaptic current): v(t) = v_inf + (v0 - v_inf) a^(t+1), v_inf = v_leak + I < v_th
    dt = 1e-3
    a = 1.0 - dt / tau_mem
    p = neurons.LIFBoxParameters(tau_mem_inv=1 / tau_mem, v_leak=0.05, v_th=1.0)
    state = neurons.LIFBoxState(torch.full((1, 3), v0, dtype=F64))
    v_inf = 0.05 + drive
    for t in range(80):
        z, state = neurons.lif_step(torch.full((1, 3), drive, dtype=F64), state, p, dt)
        assert not bool(z.any())
        assert float(state.v[0, 0]) == pytest.approx(v_inf + (v0 - v_inf) * a ** (t + 1), rel=1e-9, abs=1e-12)


def test_lif_below_threshold_is_the_leaky_integrator():
    # a LIF neuron that never reaches threshold integrates exactly like LI
    g = torch.Generator().manual_seed(3)
    li = neurons.LIParameters(tau_syn_inv=200.0, tau_mem_inv=100.0, v_leak=0.1)
    lif = neurons.LIFParameters(tau_syn_inv=200.0, tau_mem_inv=100.0, v_leak=0.1, v_th=1e9)
    s_li, s_lif = neurons.initial_state(li, (5, 4), dtype=F64), neurons.initial_state(lif, (5, 4), dtype=F64)
    for _ in range(50):
        x = torch.randn(5, 4, generator=g, dtype=F64)
        v, s_li = neurons.li_step(x, s_li, li, 1e-3)
        z, s_lif = neurons.lif_step(x, s_lif, lif, 1e-3)
        assert not bool(z.any()) and torch.equal(s_lif.v, v) and torch.equal(s_lif.i, s_li.i)


STEPS = (neurons.lif_step, neurons.lif_step_psi, neurons.lif_step_events)


def _spikes(step, current, state, p, dt):
    """``(spikes (B, n) float, state)`` of any of the three step flavours."""
    out = step(current, state, p, dt)
    z, new = out[0], out[-1]
    return (torch.zeros_like(new.v) if z is None else z.to(new.v.dtype)), new


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("rho_reset", [1, 3, 6])
def test_refractory_period_blocks_spikes(step, rho_reset):
    # a drive that fires every step without refractoriness fires every rho_reset + 1 steps with it,
    # and the membrane stays at v_reset in between
    p = neurons.LIFBoxParameters(tau_mem_inv=500.0, v_th=1.0, v_reset=0.2, rho_reset=rho_reset)
    state = neurons.initial_state(p, (1, 2), dtype=F64)
    fired = []
    for _ in range(30):
        z, state = _spikes(step, torch.full((1, 2), 50.0, dtype=F64), state, p, 1e-3)
        fired.append(bool(z[0, 0]))
        if not fired[-1]:
            assert float(state.v[0, 0]) == 0.2
    assert [t for t, f in enumerate(fired) if f] == list(range(0, 30, rho_reset + 1))


@pytest.mark.parametrize("step", STEPS)
def test_adaptive_threshold_decays_and_jumps_only_on_emitted_spikes(step):
    dt, tau_adapt, inc = 1e-3, 20e-3, 0.25
    p = neurons.AdaptiveLIFParameters(tau_syn_inv=1e3, tau_mem_inv=1e3, tau_adapt=tau_adapt,
                                      adapt_increment=inc, rho_reset=4)
    state = neurons.initial_state(p, (1, 1), dtype=F64)
    emitted, b = [], []
    for t in range(40):
        drive = 30.0 if t < 12 else 0.0  # strong enough to spike whenever not refractory
        z, state = _spikes(step, torch.full((1, 1), drive, dtype=F64), state, p, dt)
        if bool(z[0, 0]):
            emitted.append(t)
        b.append(float(state.b[0, 0]))
    assert emitted == [0, 5, 10]  # blocked steps neither spike nor raise the threshold
    rho = math.exp(-dt / tau_adapt)
    for t in range(40):
        want = sum(inc * rho ** (t - k) for k in emitted if k <= t)
        assert b[t] == pytest.approx(want, rel=1e-12)


SPIKING = [
    ("LIF", neurons.LIFParameters, neurons.LIFState),
    ("LIFBox", neurons.LIFBoxParameters, neurons.LIFBoxState),
    ("AdaptiveLIF", neurons.AdaptiveLIFParameters, neurons.AdaptiveLIFState),
]


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(range(3)), rho_reset=st.integers(0, 3), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, F64]), tensors=st.booleans())
def test_the_three_flavours_give_the_same_spikes_and_states(kind, rho_reset, seed, dtype, tensors):
    _, params, _ = SPIKING[kind]
    num = (lambda x: torch.tensor(x, dtype=dtype)) if tensors else float
    fields = dict(tau_mem_inv=num(1 / 8e-3), v_leak=num(0.1), v_th=num(1.0), v_reset=num(-0.1),
                  rho_reset=rho_reset, surrogate="arctan", scale=3.0)
    if kind != 1:
        fields["tau_syn_inv"] = num(1 / 4e-3)
    p = params(**fields)
    gen = torch.Generator().manual_seed(seed)
    states = [neurons.initial_state(p, (3, 7), dtype=dtype) for _ in STEPS]
    n_spikes = 0
    for _ in range(60):
        x = (torch.rand(3, 7, generator=gen, dtype=F64) * 2.5 - 0.3).to(dtype)
        outs = [_spikes(step, x, s, p, 1e-3) for step, s in zip(STEPS, states)]
        states = [new for _, new in outs]
        for z, new in outs[1:]:
            assert torch.equal(z, outs[0][0])
            for a, b in zip(new, outs[0][1]):
                assert (a is None and b is None) or torch.equal(a, b)
        n_spikes += int(outs[0][0].sum())
    assert n_spikes > 0


def test_psi_is_the_surrogate_gradient_of_the_step():
    p = neurons.LIFParameters(v_th=0.5, surrogate="sigmoid", scale=4.0)
    x = torch.linspace(-1, 2, 31, dtype=F64)[None]
    state = neurons.initial_state(p, x.shape, dtype=F64)
    current = x.clone().requires_grad_(True)
    z, _ = neurons.lif_step(current, state, p, 1e-3)
    (grad,) = torch.autograd.grad(z.sum(), current)
    z2, psi, _ = neurons.lif_step_psi(x, state, p, 1e-3)
    assert torch.equal(z.detach(), z2)
    # dz/dI = psi(v' - v_th) dv'/dI with dv'/dI = dt tau_mem_inv
    assert torch.allclose(grad, psi * 1e-3 * 100.0, rtol=1e-12, atol=0)


def test_network_and_closed_loop_agree_on_adaptive_refractory_neurons():
    # the AdaptiveLIF + refractoriness semantics (a blocked neuron neither spikes nor raises its
    # threshold, as in Brian2) is one piece of code for both simulators; the drive is strong enough
    # to cross the threshold during refractory steps (the Network used to raise it there)
    d = load_model("models/song2000_stdp.toml").to_dict()
    d["duration"] = 0.3
    pop = d["populations"]["neuron"]
    pop.update(type="AdaptiveLIF", size=4, refractory=2e-3, tau_adapt=30e-3, adapt_increment=0.05)
    g = ModelGraph.from_dict(d).with_format("float64")
    net = Network(g, seed=0, dtype=F64)
    with torch.no_grad():
        net.weights["synapses"].mul_(300.0)
    z = poisson_chunk(15.0, 1000, g.steps, g.dt, 0, 0, 0).unsqueeze(1)
    with torch.no_grad():
        want = net(z.double()).spikes["neuron"] > 0
    loop = ClosedLoop(g, net, None, None)
    loop.reset(1)
    got = torch.cat([loop.run_interval(z[s : s + 50], learn=False) for s in range(0, g.steps, 50)])
    assert int(want.sum()) == 4 * math.ceil(g.steps / 21)  # every neuron fires whenever it may
    assert torch.equal(got, want)


def test_parameters_from_a_population_description():
    g = _classifier(hidden="AdaptiveLIF")
    h = dataclasses.replace(g.populations["h"], refractory=3e-3, surrogate="triangle")
    p = neurons.neuron_parameters(h, g.dt)
    assert isinstance(p, neurons.AdaptiveLIFParameters)
    assert p.rho_reset == 3 and p.surrogate == "triangle" and p.scale == 10.0 and p.tau_adapt == h.tau_adapt
    assert p.tau_mem_inv == 1.0 / h.tau_mem and p.v_th == h.v_th
    t = neurons.neuron_parameters(g.populations["out"], g.dt, dtype=torch.float32)
    assert isinstance(t, neurons.LIParameters) and t.tau_mem_inv.dtype == torch.float32
    assert set(neurons.SPIKING_TYPES) < set(neurons.NEURON_TYPES)
