"""The compiled event-driven LIF kernel (neuro/_kernels/lif_events.c) against neuro.sim.network.Network."""

from __future__ import annotations

import warnings

import pytest
import torch

from neuro import _kernels
from neuro.model.spec import loads_model
from neuro.sim import simulate as sim
from neuro.sim.network import Network
from neuro.sim.simulate import simulate_lif_events

MODEL = """
[model]
name = "kernel"
dt = "0.1 ms"
duration = "{duration} s"
output = "lif"
[populations.inputs]
type = "input"
size = {n_in}
[populations.lif]
type = "LIF"
size = {m}
tau_mem = "10 ms"
tau_syn = "5 ms"
v_th = 1.0
v_reset = {v_reset}
v_leak = {v_leak}
[inputs.inputs]
encoding = "poisson"
rate = "20 Hz"
[projections.w]
source = "inputs"
target = "lif"
init = {{ dist = "normal", mean = 0.05, std = 0.04 }}
[training]
loss = "none"
batch_size = 1
microbatch = 1
readout = "spike_count"
"""

needs_kernel = pytest.mark.skipif(sim.compiled_kernel() is None,
                                  reason=f"no compiled kernel: {_kernels.error('lif_events')}")


class _Spy(Network):
    """Network that keeps each population's state after its last step (for the final (v, i))."""

    def step_population(self, pop, current, state):
        out, v, state = super().step_population(pop, current, state)
        self.states = {**getattr(self, "states", {}), pop.name: state}
        return out, v, state


def _graph(n_in=120, m=40, duration=0.3, v_leak=0.0, v_reset=0.0):
    return loads_model(MODEL.format(n_in=n_in, m=m, duration=duration, v_leak=v_leak, v_reset=v_reset))


def _network_run(g, x, dtype, weight=None):
    net = _Spy(g, seed=2, dtype=dtype)
    if weight is not None:
        with torch.no_grad():
            net.weights["w"].copy_(weight)
    with torch.no_grad():
        ref = net(x.to(dtype), record=True)
    state = net.states["lif"]
    return net.weights["w"].detach(), ref.spikes["lif"], ref.voltages["lif"], state.v, state.i


def _ours(g, x, w, dtype, **kw):
    pop = g.populations["lif"]
    return simulate_lif_events(x, w, dt=g.dt, tau_mem=pop.tau_mem, tau_syn=pop.tau_syn, v_th=pop.v_th,
                               v_reset=pop.v_reset, v_leak=pop.v_leak, dtype=dtype, record_v=True,
                               return_state=True, **kw)


def _at_most_two_per_step(steps, batch, n_in, gen):
    """Random inputs with 0, 1 or 2 spikes per (step, trial): their sum is the same in any order."""
    x = torch.zeros(steps, batch, n_in, dtype=torch.bool)
    k = torch.randint(0, 3, (steps, batch), generator=gen)
    for t, b in (k > 0).nonzero().tolist():
        x[t, b, torch.randperm(n_in, generator=gen)[: int(k[t, b])]] = True
    return x


def _assert_identical(ours, ref):
    z, v, (vf, i_f) = ours
    _, zr, vr, vfr, ifr = ref
    assert zr.sum() > 100
    assert torch.equal(z.to(zr.dtype), zr)
    assert torch.equal(v, vr)
    assert torch.equal(vf, vfr) and torch.equal(i_f, ifr)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch", [1, 5])
def test_kernel_bit_identical_to_network_random_weights(dtype, batch):
    g = _graph(v_leak=0.05, v_reset=-0.1)
    gen = torch.Generator().manual_seed(7)
    x = _at_most_two_per_step(g.steps, batch, 120, gen)
    ref = _network_run(g, x, dtype)
    for threads in (1, 3):
        _assert_identical(_ours(g, x, ref[0], dtype, backend="c", threads=threads), ref)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_bit_identical_to_network_dense_inputs_dyadic_weights(dtype):
    # Many spikes per step; weights k / 4096 make every partial sum exact, so the matmul's
    # summation order cannot matter and the comparison checks the LIF arithmetic bit for bit.
    g = _graph(n_in=200, m=30)
    gen = torch.Generator().manual_seed(3)
    w = torch.randint(-60, 140, (30, 200), generator=gen).to(torch.float64) / 4096
    x = torch.rand(g.steps, 4, 200, generator=gen) < 0.02  # ~4 input spikes per step and trial
    ref = _network_run(g, x, dtype, weight=w)
    _assert_identical(_ours(g, x, ref[0], dtype, backend="c"), ref)


@needs_kernel
def test_kernel_poisson_inputs_match_network_raster():
    # Ordinary Poisson inputs and weights: the raster is identical; states agree to the ulp level
    # (a matmul may group 3+ simultaneous inputs differently).
    from neuro.data import poisson_trains

    g = _graph(n_in=300, m=50, duration=0.5)
    x = poisson_trains(300, 20.0, g.duration, g.dt, 4, batch=2, dtype=torch.float32)
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 1e-5)):
        ref = _network_run(g, x, dtype)
        z, v, _ = _ours(g, x, ref[0], dtype, backend="c")
        assert torch.equal(z.to(dtype), ref[1]) and ref[1].sum() > 200
        assert (v - ref[2]).abs().max() <= tol


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_equals_torch_backend_and_chunks(dtype):
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(1500, 3, 80, generator=gen) < 0.01
    w = (torch.randn(25, 80, generator=gen) * 0.05 + 0.06).to(dtype)
    kw = dict(dt=1e-4, tau_mem=0.01, tau_syn=0.005, v_leak=0.02, v_reset=-0.05, dtype=dtype, record_v=True,
              return_state=True)
    a = simulate_lif_events(x, w, backend="c", **kw)
    b = simulate_lif_events(x, w, backend="torch", block=333, **kw)
    assert a[0].sum() > 100 and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[2][0], b[2][0]) and torch.equal(a[2][1], b[2][1])
    # a run in chunks, passing the state on, is the same run
    z1, v1, s1 = simulate_lif_events(x[:700], w, backend="c", **kw)
    z2, v2, s2 = simulate_lif_events(x[700:], w, backend="c", state=s1, **kw)
    assert torch.equal(torch.cat([z1, z2]), a[0]) and torch.equal(torch.cat([v1, v2]), a[1])
    assert torch.equal(s2[0], a[2][0]) and torch.equal(s2[1], a[2][1])
    # without the raster: the spike count only
    z, _ = simulate_lif_events(x, w, dt=1e-4, tau_mem=0.01, tau_syn=0.005, v_leak=0.02, v_reset=-0.05,
                               dtype=dtype, backend="c", record_z=False)
    assert z is None and simulate_lif_events.last_count == int(a[0].sum())


def test_non_binary_spikes_rejected():
    w = torch.ones(3, 4)
    with pytest.raises(ValueError, match="0 or 1"):
        simulate_lif_events(torch.full((5, 1, 4), 0.5), w, dt=1e-4, tau_mem=0.01, tau_syn=0.005)
    with pytest.raises(ValueError, match="0 or 1"):
        simulate_lif_events(torch.full((5, 1, 4), 2, dtype=torch.uint8), w, dt=1e-4, tau_mem=0.01,
                            tau_syn=0.005)


def test_fallback_without_compiler_warns_and_runs_torch(monkeypatch, tmp_path):
    monkeypatch.setattr(_kernels, "_LOADED", {})
    monkeypatch.setattr(_kernels, "_ERRORS", {})
    monkeypatch.setenv("NEURO_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    monkeypatch.setattr(sim, "_KERNEL", None)
    monkeypatch.setattr(sim, "_WARNED", False)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(300, 2, 30, generator=gen) < 0.02
    w = torch.randn(10, 30, generator=gen) * 0.1 + 0.1
    kw = dict(dt=1e-4, tau_mem=0.01, tau_syn=0.005)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        z, _ = simulate_lif_events(x, w, **kw)
    assert torch.equal(z, simulate_lif_events(x, w, backend="torch", **kw)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        simulate_lif_events(x, w, **kw)
    with pytest.raises(RuntimeError, match="compiled kernel unavailable"):
        simulate_lif_events(x, w, backend="c", **kw)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(_kernels.compiler() is None, reason="no C compiler")
def test_kernel_build_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(_kernels, "_LOADED", {})
    monkeypatch.setenv("NEURO_KERNEL_CACHE", str(tmp_path / "k"))
    lib = _kernels.load("lif_events")
    assert lib is not None and _kernels.load("lif_events") is lib
    path = _kernels.library_path("lif_events")
    assert path.parent == tmp_path / "k" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    monkeypatch.setattr(_kernels, "FLAGS", (*_kernels.FLAGS, "-DNEURO_VARIANT"))
    assert _kernels.library_path("lif_events") != path  # other flags: another cache entry
    monkeypatch.setattr(_kernels, "_LOADED", {})
    monkeypatch.setenv("NEURO_NO_KERNELS", "1")
    assert _kernels.load("lif_events") is None and "NEURO_NO_KERNELS" in _kernels.error("lif_events")
