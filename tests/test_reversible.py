"""Reversible spiking blocks (neuro.sim.reversible): exact inversion, identical gradients, memory, learning,
the fixed-point step = the shared neuron step on its grid."""

from __future__ import annotations

import pytest
import torch

from neuro import neurons
from neuro.sim import reversible
from neuro.sim.reversible import LIFFixedParameters, ReversibleStack
from neuro.training.plan import TensorBytes


@pytest.fixture(autouse=True)
def one_thread():
    """Many small float64 GEMMs: one intra-op thread is far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("seed", range(8))
def test_fixed_point_step_equals_the_shared_step_on_its_grid(seed):
    """Where no floor of the fixed-point step discards a bit (decays n / 2**k, states and currents on
    the 2**-(V_FRAC - k) grid), it is the shared float step of neuro.neurons, bit for bit."""
    k, dt = 4, 2.0**-10
    fixed = LIFFixedParameters(tau_syn_inv=5 / 16 / dt, tau_mem_inv=3 / 16 / dt, v_leak=0.125, v_th=0.75,
                               v_reset=-0.0625, dt=dt, decay_bits=k)
    assert (fixed.a, fixed.s) == (13 / 16, 11 / 16)
    taus = dict(tau_syn_inv=fixed.tau_syn_inv, tau_mem_inv=fixed.tau_mem_inv, v_leak=fixed.v_leak)
    lif = neurons.LIFParameters(**taus, v_th=fixed.v_th, v_reset=fixed.v_reset, surrogate="triangle",
                                scale=2.0)
    li = neurons.LIParameters(**taus)
    g = torch.Generator().manual_seed(seed)
    F64 = torch.float64

    def on_grid(shape, frac, span):
        return torch.randint(-span * 2**frac, span * 2**frac + 1, shape, generator=g).to(F64) / 2**frac

    coarse = reversible.V_FRAC - k
    x = on_grid((6, 16), 4, 1)  # activations, 2**-4 grid; weights 2**-16: currents on the 2**-20 grid
    w = on_grid((16, 16), 16, 1)
    v, i = on_grid((6, 16), coarse, 2), on_grid((6, 16), coarse, 2)
    z, v_new, i_dec, v_dec, _, c = reversible.lif_fixed_step(x, w, v, i, fixed, "triangle", 2.0)
    z_ref, state = neurons.lif_step(c, neurons.LIFState(v, i), lif, dt)
    assert 0 < int(z.sum()) < z.numel()
    assert torch.equal(z, z_ref) and torch.equal(v_new, state.v) and torch.equal(i_dec, state.i)
    v_li, i_li, _, c_li = reversible.li_step(x, w, v, i, fixed)
    v_ref, state = neurons.li_step(c_li, neurons.LIState(v, i), li, dt)
    assert torch.equal(v_li, v_ref) and torch.equal(i_li, state.i)


def _inputs(steps, batch, width, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(steps, batch, width, dtype=torch.float64, generator=g) * scale for _ in range(2))


def _float32_revnet_error(n_blocks=64, width=16, batch=8, seed=0) -> float:
    """Plain float32 RevNet (F, G = tanh of a dense layer): max |x - inverse(forward(x))|."""
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(width, width, generator=g) / width**0.5 for _ in range(2 * n_blocks)]
    x1, x2 = torch.randn(batch, width, generator=g), torch.randn(batch, width, generator=g)
    y1, y2 = x1, x2
    for b in range(n_blocks):
        y1 = y1 + torch.tanh(y2 @ ws[2 * b].T)
        y2 = y2 + torch.tanh(y1 @ ws[2 * b + 1].T)
    for b in reversed(range(n_blocks)):
        y2 = y2 - torch.tanh(y1 @ ws[2 * b + 1].T)
        y1 = y1 - torch.tanh(y2 @ ws[2 * b].T)
    return max(float((y1 - x1).abs().max()), float((y2 - x2).abs().max()))


def test_inversion_is_bit_exact_through_64_blocks():
    steps, batch, width, n = 3, 2, 8, 64
    stack = ReversibleStack(n, width, seed=3)
    stack.trace = []
    x1, x2 = _inputs(steps, batch, width)
    x1.requires_grad_()
    y1, y2 = stack(x1, x2)
    (y1.sum() + y2.sum()).backward()
    fwd = {(t, b): e for kind, t, b, *e in stack.trace if kind == "forward"}
    inv = {(t, b): e for kind, t, b, *e in stack.trace if kind == "inverse"}
    assert len(fwd) == len(inv) == steps * n
    for key, (a1, a2, state) in fwd.items():
        r1, r2, rstate = inv[key]
        assert torch.equal(a1, r1) and torch.equal(a2, r2), key
        for s, r in zip(state, rstate):
            assert torch.equal(s, r), key
    # the stack really spikes and resets: the side buffer holds pre-reset membranes beyond the packed bits
    bits_only = steps * n * 2 * 3 * (batch * width // 8)
    assert stack.last_side_bytes > bits_only
    assert fwd[(steps - 1, n - 1)][2][0].abs().sum() > 0
    # a plain float32 RevNet of the same depth does not invert exactly
    err = _float32_revnet_error()
    assert err > 0.0, "float32 RevNet unexpectedly exact"


def _run(reversible, n, steps, batch, width, seed=7):
    stack = ReversibleStack(n, width, reversible=reversible, seed=seed)
    x1, x2 = _inputs(steps, batch, width, seed=1)
    x1.requires_grad_()
    x2.requires_grad_()
    y1, y2 = stack(x1, x2)
    g = torch.Generator().manual_seed(2)
    c1 = torch.randn(y1.shape, dtype=torch.float64, generator=g)
    c2 = torch.randn(y2.shape, dtype=torch.float64, generator=g)
    ((y1 * c1).sum() + (y2 * c2).sum()).backward()
    return y1.detach(), y2.detach(), x1.grad, x2.grad, [p.grad for p in stack.parameters()]


def test_gradients_equal_ordinary_autograd_bit_for_bit():
    rev = _run(True, n=6, steps=6, batch=4, width=12)
    ref = _run(False, n=6, steps=6, batch=4, width=12)
    for a, b in zip(rev[:4], ref[:4]):
        assert torch.equal(a, b)
    assert len(rev[4]) == len(ref[4]) == 12
    for a, b in zip(rev[4], ref[4]):
        assert a is not None and b is not None
        assert a.abs().sum() > 0, "a weight got no gradient: the comparison would be vacuous"
        assert torch.equal(a, b)
    assert rev[2].abs().sum() > 0 and rev[3].abs().sum() > 0


def _peak(reversible, n, steps=12, batch=8, width=32) -> int:
    stack = ReversibleStack(n, width, reversible=reversible, seed=1)
    x1, x2 = _inputs(steps, batch, width)
    with TensorBytes() as tb:
        y1, y2 = stack(x1.requires_grad_(), x2.requires_grad_())
        (y1.sum() + y2.sum()).backward()
        del y1, y2
    return tb.peak


def test_memory_does_not_grow_with_activations():
    """Peak live tensor bytes of forward + backward (TensorBytes) for 4 and 8 blocks.

    Per extra block the reversible stack adds only its quantised weights and their gradients, one step
    of LIF states and state gradients, and ~3 bits per neuron-step of side buffer; the non-reversible one
    adds every saved intermediate of every step.
    """
    rev4, rev8 = _peak(True, 4), _peak(True, 8)
    ref4, ref8 = _peak(False, 4), _peak(False, 8)
    rev_slope, ref_slope = (rev8 - rev4) / 4, (ref8 - ref4) / 4
    width, batch, steps = 32, 8, 12
    per_block_fixed = 2 * 3 * width * width * 8 + 3 * 4 * batch * width * 8  # weights+grads, states+grads
    assert ref_slope > 0.9 * steps * 2 * batch * width * 8 * 3  # >= 3 float64 per neuron-step, linear in T
    assert rev_slope < 0.25 * ref_slope, (rev_slope, ref_slope)
    # what the reversible stack adds per block beyond the T-independent part is the compact side buffer
    assert rev_slope - per_block_fixed < 0.1 * ref_slope, (rev_slope, per_block_fixed, ref_slope)
    assert rev8 < ref8 / 2


def test_reversible_stack_learns_a_tiny_task():
    """Two input rate patterns; a fixed random readout of the time-averaged top activity; only the
    reversible stack is trained.  The cross-entropy must fall."""
    torch.manual_seed(0)
    steps, batch, width = 8, 32, 16
    stack = ReversibleStack(4, width, seed=0)
    g = torch.Generator().manual_seed(5)
    patterns = torch.rand(2, 2 * width, dtype=torch.float64, generator=g) * 2
    readout = torch.randn(2 * width, 2, dtype=torch.float64, generator=g) / width
    labels = torch.arange(batch) % 2
    opt = torch.optim.Adam(stack.parameters(), lr=0.05)
    losses = []
    for _ in range(25):
        x = patterns[labels] + 0.3 * torch.rand(batch, 2 * width, dtype=torch.float64, generator=g)
        x = x.expand(steps, batch, 2 * width)
        y1, y2 = stack(x[..., :width], x[..., width:])
        logits = torch.cat([y1, y2], dim=-1).mean(0) @ readout
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, losses
