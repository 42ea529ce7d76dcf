"""Reversible spiking blocks: deep LIF stacks that recompute activations instead of storing them.

A :class:`ReversibleBlock` couples two halves ``(x1, x2)`` of a layer's activity with the RevNet rule

    y1 = x1 + F(x2),    y2 = x2 + G(y1)        inverse:  x2 = y2 - G(y1),  x1 = y1 - F(x2)

where ``F`` and ``G`` are spiking sublayers: a dense projection (``width x width``) feeding LIF neurons
with Norse's update equations (``lif_feed_forward_step``) and spikes from :func:`neuro.neurons.spike_fn`
(strict ``v > v_th``, surrogate gradient).  ``F(x2)`` is the sublayer's spike vector (0/1).  A
:class:`ReversibleStack` runs ``n_blocks`` of them, step by step over ``T`` time steps (each block keeps
the LIF states of its two sublayers across time, like the engine's streaming forward).

Exact arithmetic
----------------
Float inversion is not exact (a 64-block float32 RevNet reconstructs with ~1e-4 error), so every quantity
lives on a fixed-point grid held in float64 tensors, where every operation the model performs is exact:

* activations ``x1, x2, y1, y2``: multiples of ``2**-X_FRAC`` (``X_FRAC = 8``); the stack input is
  rounded to this grid (straight-through gradient), and spikes are integers.
* weights: rounded to ``2**-W_FRAC`` (``W_FRAC = 16``, straight-through gradient) before use, so the
  projection ``c = x @ W.T`` has all partial sums on the ``2**-24`` grid below ``2**53``: it is exact
  whatever order BLAS sums in, hence bit-identical when recomputed.
* membrane ``v``, synaptic current ``i``, projected current ``c``: multiples of ``2**-V_FRAC``
  (``V_FRAC = 24``), magnitude below ``2**20`` (checked; :class:`OverflowError` otherwise).
* decays ``a = 1 - dt tau_mem_inv`` and ``s = 1 - dt tau_syn_inv`` are rounded to ``n / 2**k``
  (``k = decay_bits = 8``: 230/256 and 205/256 for Norse's defaults at dt = 1 ms).

One step of a sublayer (the fixed-point form of Norse's LIF step, ``floor_Q`` = floor to ``2**-V_FRAC``):

    i_new = i + c                                            (exact add)
    v_dec = floor_Q(v * a) + floor_Q((v_leak + i_new) * (1 - a))
    i_dec = floor_Q(i_new * s)
    z     = spike_fn(v_dec - v_th)
    v_new = (1 - z) v_dec + z v_reset

Why this step is not :func:`neuro.neurons.lif_step`: the shared step is Norse's float Euler step
``v + dt tau_mem_inv ((v_leak - v) + i_new)``, whose roundings discard bits that no stored side
information could restore in general.  Exact inversion needs every operation to be exact or a floor
whose lost bits are countable, so the leak is written in decay form ``v a + (v_leak + i_new) (1 - a)``
with ``a`` rounded to ``n / 2**k`` and each product floored to the ``2**-V_FRAC`` grid.  Where no
floor discards anything (states, inputs and parameters on a grid coarse enough that every product is
exact) the two steps coincide bit for bit: ``tests/test_reversible.py`` checks this against the
shared step.

Stored bits (MacKay et al. 2018, "store the bits that forgetting discards")
----------------------------------------------------------------------------
Adds are exact and invert by subtraction.  Information is lost only where the model forgets:

* the leak ``floor_Q(v * n / 2**k)``: given the result ``q``, ``v`` is one of the integers
  ``ceil(q 2**k / n) + j`` with ``0 <= j < ceil(2**k / n)``; for a decay above 1/2 that is **one bit**
  ``j`` per neuron and step (likewise one bit for the synaptic decay);
* the reset: which neurons spiked (**one bit** per neuron and step), and the pre-reset membrane
  ``v_dec`` of the neurons that did (``v_dec - v_th`` in grid units as int32 -- int64 if any excess
  reaches 128 V -- **at spike times only**).

So each sublayer stores ``3`` bits per neuron-step (packed 8 to a byte) plus 32 bits per spike, in a
side buffer (measured: ~7 bits per neuron-step at a ~13% spike rate); everything else is recomputed.
Ordinary autograd (``reversible=False``) keeps ~36 bytes (4-5 float64 tensors) per neuron-step instead.

Gradients
---------
The backward pass (:class:`_ReversibleFunction`) walks time backwards and, at each step, the blocks from
the top down: it reconstructs a block's inputs and previous LIF states exactly from its outputs, its
current states and the side buffer, then re-runs that block's step under autograd and back-propagates
through it locally (``torch.autograd.grad``).  The local graph is the same code as the non-reversible
model's, on bit-identical values, and weight gradients are summed over time in the order autograd's
engine sums them (latest step first), so the gradients equal the non-reversible model's bit for bit.
Rounding steps (``floor_Q``, input and weight quantisation) pass gradients straight through.

Memory: the backward keeps one time step of LIF states and their gradients per block (the same as the
inference state) plus the packed side buffer; the non-reversible model keeps every intermediate of
every block and step.  See ``tests/test_reversible.py`` for the measured figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as tnf

from neuro.model.reversible import (
    REVERSIBLE_MAX_WIDTH,
    REVERSIBLE_V_FRAC,
    REVERSIBLE_W_FRAC,
    REVERSIBLE_X_FRAC,
)
from neuro.neurons import spike_fn

__all__ = [
    "X_FRAC",
    "W_FRAC",
    "V_FRAC",
    "LIFFixedParameters",
    "ReversibleBlock",
    "SideRecord",
    "block_step",
    "check_range",
    "lif_fixed_inverse",
    "lif_fixed_step",
    "side_record",
    "ReversibleStack",
    "quantize",
    "side_buffer_bytes",
]

#: Fraction bits of the activations, the weights, and membranes / currents / projected currents (X + W:
#: exact products): the grid the model layer checks a ``[reversible]`` model against.
X_FRAC, W_FRAC, V_FRAC = REVERSIBLE_X_FRAC, REVERSIBLE_W_FRAC, REVERSIBLE_V_FRAC
#: Bound on |v|, |i|, |c| (volts / current units): keeps every product with a decay numerator < 2**53.
STATE_LIMIT = 2.0**20
#: Bound on |x| and |W| for the exact projection (with width <= MAX_WIDTH).
X_LIMIT = 2.0**14
W_LIMIT = 8.0
MAX_WIDTH = REVERSIBLE_MAX_WIDTH

_DTYPE = torch.float64


class _Quantize(torch.autograd.Function):
    """Round (``floor=False``) or floor to multiples of ``2**-frac``; straight-through backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, frac: int, floor: bool) -> torch.Tensor:
        scaled = x * (2.0**frac)
        return (torch.floor(scaled) if floor else torch.round(scaled)) * (2.0**-frac)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


def quantize(x: torch.Tensor, frac: int, floor: bool = False) -> torch.Tensor:
    """``x`` rounded (or floored) to the grid ``2**-frac``, with a straight-through gradient."""
    return _Quantize.apply(x, frac, floor)


@dataclass(frozen=True)
class LIFFixedParameters:
    """LIF parameters of the spiking sublayers (Norse's names and units).

    Attributes:
        tau_syn_inv, tau_mem_inv: inverse time constants, 1/s.
        v_leak, v_th, v_reset: volts; must lie on the ``2**-V_FRAC`` grid (checked).
        dt: time step, s.
        decay_bits: ``k``; the decays are rounded to ``n / 2**k`` (``k <= 16``).
    """

    tau_syn_inv: float = 200.0
    tau_mem_inv: float = 100.0
    v_leak: float = 0.0
    v_th: float = 1.0
    v_reset: float = 0.0
    dt: float = 1e-3
    decay_bits: int = 8

    def __post_init__(self) -> None:
        half = 2 ** (self.decay_bits - 1)
        for name, num in (("tau_mem_inv", self.mem_num), ("tau_syn_inv", self.syn_num)):
            if not half < num < 2 * half:
                raise ValueError(
                    f"LIFFixedParameters: 1 - dt*{name} must round to a decay in (1/2, 1) "
                    f"with {self.decay_bits} bits (got {num}/{2 * half}); one stored bit per "
                    "neuron-step needs a decay above 1/2"
                )
        for name in ("v_leak", "v_th", "v_reset"):
            val = getattr(self, name)
            if val * 2**V_FRAC != round(val * 2**V_FRAC):
                raise ValueError(f"LIFFixedParameters: {name}={val} is not a multiple of 2**-{V_FRAC}")

    @property
    def mem_num(self) -> int:
        """Numerator ``n`` of the membrane decay ``a = n / 2**k``."""
        return round((1.0 - self.dt * self.tau_mem_inv) * 2**self.decay_bits)

    @property
    def syn_num(self) -> int:
        """Numerator of the synaptic decay ``s = n / 2**k``."""
        return round((1.0 - self.dt * self.tau_syn_inv) * 2**self.decay_bits)

    @property
    def a(self) -> float:
        return self.mem_num / 2**self.decay_bits

    @property
    def s(self) -> float:
        return self.syn_num / 2**self.decay_bits


# ----------------------------------------------------------------------------------------------------
# One step of a spiking sublayer and of a block (differentiable; shared by every path)


def _floor_q(x: torch.Tensor) -> torch.Tensor:
    return _Quantize.apply(x, V_FRAC, True)


def lif_fixed_step(x, wq, v, i, p: LIFFixedParameters, surrogate: str, scale: float):
    """One step of a spiking sublayer.

    Args:
        x: input activity ``(B, width)`` on the ``2**-X_FRAC`` grid.
        wq: quantised weight ``(width, width)``.
        v, i: membrane (V) and synaptic current ``(B, width)`` on the ``2**-V_FRAC`` grid.
    Returns:
        ``(z, v_new, i_dec, v_dec, i_new, c)``: spikes (0/1), the new state, the pre-reset membrane
        and the undecayed current (for the side buffer), and the projected current ``(B, width)``.
    """
    c = tnf.linear(x, wq)
    v_dec, i_dec, i_new = _leaky_step(c, v, i, p)
    z = spike_fn(v_dec - p.v_th, surrogate, scale)
    v_new = (1 - z) * v_dec + z * p.v_reset
    return z, v_new, i_dec, v_dec, i_new, c


def _leaky_step(c, v, i, p: LIFFixedParameters):
    """The leaky integration shared by LIF sublayers and the LI readout: ``(v_dec, i_dec, i_new)``."""
    i_new = i + c
    v_dec = _floor_q(v * p.a) + _floor_q((i_new + p.v_leak) * (1.0 - p.a))
    return v_dec, _floor_q(i_new * p.s), i_new


def li_step(x, wq, v, i, p: LIFFixedParameters):
    """One step of a fixed-point leaky-integrator readout (Norse ``LI``, no spikes).

    Args:
        x: input activity ``(B, n)`` on the ``2**-X_FRAC`` grid; wq: quantised weight ``(K, n)``.
        v, i: membrane and current ``(B, K)`` on the ``2**-V_FRAC`` grid.
    Returns:
        ``(v_new, i_dec, i_new, c)``.
    """
    c = tnf.linear(x, wq)
    v_new, i_dec, i_new = _leaky_step(c, v, i, p)
    return v_new, i_dec, i_new, c


def block_step(x1, x2, state, wf, wg, p, surrogate, scale):
    """One step of a block: ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``; ``state = (vF, iF, vG, iG)``."""
    vf, i_f, vg, ig = state
    zf, vf, i_f, vf_dec, if_new, cf = lif_fixed_step(x2, wf, vf, i_f, p, surrogate, scale)
    y1 = x1 + zf
    zg, vg, ig, vg_dec, ig_new, cg = lif_fixed_step(y1, wg, vg, ig, p, surrogate, scale)
    y2 = x2 + zg
    return y1, y2, (vf, i_f, vg, ig), ((zf, vf_dec, if_new, cf), (zg, vg_dec, ig_new, cg))


# ----------------------------------------------------------------------------------------------------
# Side buffer: the bits the leak and the reset discard


_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def _pack(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor into uint8, 8 entries a byte (row-major)."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def _unpack(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    n = 1
    for d in shape:
        n *= d
    bits = (packed.unsqueeze(1) & _BIT_WEIGHTS) != 0
    return bits.reshape(-1)[:n].reshape(shape)


def _to_int(x: torch.Tensor) -> torch.Tensor:
    return (x * 2.0**V_FRAC).to(torch.int64)


def _leak_bit(before: torch.Tensor, num: int, k: int) -> torch.Tensor:
    """The bit ``j`` that ``floor_Q(before * num / 2**k)`` discards (bool tensor)."""
    b = _to_int(before)
    q = torch.div(b * num, 2**k, rounding_mode="floor")
    lo = torch.div(q * 2**k + (num - 1), num, rounding_mode="floor")
    j = b - lo
    if bool(((j < 0) | (j > 1)).any()):  # impossible for num > 2**(k-1); a guard against misuse
        raise ArithmeticError("reversible: leak remainder needs more than one bit")
    return j.bool()


def _unleak(q: torch.Tensor, j: torch.Tensor, num: int, k: int) -> torch.Tensor:
    """Invert ``q = floor_Q(before * num / 2**k)`` given the stored bit ``j``: returns ``before``."""
    qi = _to_int(q)
    lo = torch.div(qi * 2**k + (num - 1), num, rounding_mode="floor")
    return (lo + j.to(torch.int64)).to(_DTYPE) * 2.0**-V_FRAC


@dataclass
class SideRecord:
    """What one sublayer stores for one step: packed spike, membrane-leak and current-leak bits
    (``ceil(B width / 8)`` bytes each) and the pre-reset excess ``v_dec - v_th`` at the spikes (grid
    units, int32 or int64, one per spike)."""

    spikes: torch.Tensor
    v_bits: torch.Tensor
    i_bits: torch.Tensor
    v_spiked: torch.Tensor

    def nbytes(self) -> int:
        parts = (self.spikes, self.v_bits, self.i_bits, self.v_spiked)
        return sum(t.numel() * t.element_size() for t in parts)


def _compact(excess: torch.Tensor) -> torch.Tensor:
    """``v_dec - v_th`` at the spikes in grid units: int32 when it fits (|excess| < 128 V), else int64."""
    ints = _to_int(excess)
    if ints.numel() and int(ints.abs().max()) >= 2**31:
        return ints
    return ints.to(torch.int32)


def side_record(v_before, z, v_dec, i_new, p: LIFFixedParameters) -> SideRecord:
    k = p.decay_bits
    mask = z.bool()
    return SideRecord(
        spikes=_pack(mask),
        v_bits=_pack(_leak_bit(v_before, p.mem_num, k)),
        i_bits=_pack(_leak_bit(i_new, p.syn_num, k)),
        v_spiked=_compact(v_dec[mask] - p.v_th),
    )


def lif_fixed_inverse(x, wq, v_new, i_dec, rec: SideRecord, p: LIFFixedParameters):
    """Invert one sublayer step exactly: returns ``(z, v, i)`` (spikes and the previous state)."""
    k = p.decay_bits
    shape = v_new.shape
    mask = _unpack(rec.spikes, shape)
    v_dec = v_new.masked_scatter(mask, rec.v_spiked.to(_DTYPE) * 2.0**-V_FRAC + p.v_th)
    i_new = _unleak(i_dec, _unpack(rec.i_bits, shape), p.syn_num, k)
    i = i_new - tnf.linear(x, wq)
    q = v_dec - _floor_q((i_new + p.v_leak) * (1.0 - p.a))
    v = _unleak(q, _unpack(rec.v_bits, shape), p.mem_num, k)
    return mask.to(_DTYPE), v, i


def li_record(v_before, i_new, p: LIFFixedParameters) -> SideRecord:
    """Side record of an LI step: only the two leak bits (no spikes, no reset)."""
    k, empty = p.decay_bits, v_before.new_empty(0, dtype=torch.uint8)
    return SideRecord(
        spikes=empty,
        v_bits=_pack(_leak_bit(v_before, p.mem_num, k)),
        i_bits=_pack(_leak_bit(i_new, p.syn_num, k)),
        v_spiked=empty.to(torch.int32),
    )


def li_inverse(x, wq, v_new, i_dec, rec: SideRecord, p: LIFFixedParameters):
    """Invert :func:`li_step` exactly: returns the previous ``(v, i)``."""
    k, shape = p.decay_bits, v_new.shape
    i_new = _unleak(i_dec, _unpack(rec.i_bits, shape), p.syn_num, k)
    q = v_new - _floor_q((i_new + p.v_leak) * (1.0 - p.a))
    return _unleak(q, _unpack(rec.v_bits, shape), p.mem_num, k), i_new - tnf.linear(x, wq)


def check_range(x1, x2, state) -> None:
    if max(float(x1.abs().max()), float(x2.abs().max())) >= X_LIMIT:
        raise OverflowError(f"reversible: activations reached {X_LIMIT}; fixed point would be inexact")
    for s in state:
        if float(s.abs().max()) >= STATE_LIMIT:
            raise OverflowError(f"reversible: a membrane/current reached {STATE_LIMIT}; fixed point inexact")


def side_buffer_bytes(records) -> int:
    """Bytes of a list of per-block lists of per-step ``(F, G)`` side records."""
    return sum(r.nbytes() for per_block in records for step in per_block if step for r in step)


# ----------------------------------------------------------------------------------------------------
# The reversible autograd Function


def _snapshot(kind, t, b, x1, x2, state):
    """A trace entry: ``(kind, t, block, x1, x2, (vF, iF, vG, iG))``, copies of a block's inputs."""
    return kind, t, b, x1.detach().clone(), x2.detach().clone(), tuple(s.detach().clone() for s in state)


class _ReversibleFunction(torch.autograd.Function):
    """Forward without saving activations; backward by exact inversion and local recomputation.

    Inputs: ``(stack, x1, x2, *weights)`` with ``x1, x2`` of shape ``(T, B, width)`` (already on the
    activation grid) and ``weights = (wF_0, wG_0, wF_1, ...)`` quantised.  Saved for backward: the
    outputs, the weights, each block's final LIF states and the packed side buffer.
    """

    @staticmethod
    def forward(ctx, stack, x1, x2, *weights):
        p, sur, scale = stack.params, stack.surrogate, stack.scale
        n = len(weights) // 2
        steps, batch, width = x1.shape
        states = [tuple(x1.new_zeros(batch, width) for _ in range(4)) for _ in range(n)]
        side = [[None] * steps for _ in range(n)]
        y1, y2 = torch.empty_like(x1), torch.empty_like(x2)
        trace = stack.trace
        for t in range(steps):
            a1, a2 = x1[t], x2[t]
            for b in range(n):
                if trace is not None:
                    trace.append(_snapshot("forward", t, b, a1, a2, states[b]))
                old, wf, wg = states[b], weights[2 * b], weights[2 * b + 1]
                a1, a2, states[b], aux = block_step(a1, a2, old, wf, wg, p, sur, scale)
                (zf, vf_dec, if_new, _), (zg, vg_dec, ig_new, _) = aux
                side[b][t] = (side_record(old[0], zf, vf_dec, if_new, p),
                              side_record(old[2], zg, vg_dec, ig_new, p))
                check_range(a1, a2, states[b])
            y1[t], y2[t] = a1, a2
        ctx.stack = stack
        ctx.states, ctx.side = states, side
        ctx.save_for_backward(y1, y2, *weights)
        stack.last_side_bytes = side_buffer_bytes(side)
        return y1, y2

    @staticmethod
    def backward(ctx, gy1, gy2):
        stack = ctx.stack
        p, sur, scale, trace = stack.params, stack.surrogate, stack.scale, stack.trace
        y1, y2, *weights = ctx.saved_tensors
        states, side = ctx.states, ctx.side
        ctx.states = ctx.side = None
        n = len(weights) // 2
        leaves = [w.detach().requires_grad_() for w in weights]
        gw: list[torch.Tensor | None] = [None] * len(weights)
        gstate: list[tuple | None] = [None] * n
        gx1, gx2 = torch.empty_like(y1), torch.empty_like(y2)
        for t in reversed(range(y1.shape[0])):
            a1, a2, g1, g2 = y1[t], y2[t], gy1[t], gy2[t]
            for b in reversed(range(n)):
                wf, wg = weights[2 * b], weights[2 * b + 1]
                rec_f, rec_g = side[b][t]
                side[b][t] = None
                vf, i_f, vg, ig = states[b]
                # exact inverse: G first (its input y1 is known), then F
                zg, vg0, ig0 = lif_fixed_inverse(a1, wg, vg, ig, rec_g, p)
                x2 = a2 - zg
                zf, vf0, if0 = lif_fixed_inverse(x2, wf, vf, i_f, rec_f, p)
                x1 = a1 - zf
                prev = (vf0, if0, vg0, ig0)
                if trace is not None:
                    trace.append(_snapshot("inverse", t, b, x1, x2, prev))
                # local recomputation under autograd
                with torch.enable_grad():
                    ins = [x1.requires_grad_(), x2.requires_grad_(), *(s.requires_grad_() for s in prev)]
                    o1, o2, new_state, _ = block_step(
                        ins[0], ins[1], tuple(ins[2:]), leaves[2 * b], leaves[2 * b + 1], p, sur, scale
                    )
                    outs, gouts = [o1, o2], [g1, g2]
                    if gstate[b] is not None:
                        outs += list(new_state)
                        gouts += list(gstate[b])
                    grads = torch.autograd.grad(
                        outs, ins + [leaves[2 * b], leaves[2 * b + 1]], gouts, allow_unused=True
                    )
                g1, g2 = grads[0], grads[1]
                gstate[b] = tuple(grads[2:6])
                for j, g in ((2 * b, grads[6]), (2 * b + 1, grads[7])):
                    if g is not None:
                        gw[j] = g if gw[j] is None else gw[j] + g
                states[b] = tuple(s.detach() for s in prev)
                a1, a2 = x1.detach(), x2.detach()
            gx1[t], gx2[t] = g1, g2
        return (None, gx1, gx2, *gw)


# ----------------------------------------------------------------------------------------------------
# Modules


class ReversibleBlock(torch.nn.Module):
    """One reversible block: two spiking sublayers ``F`` and ``G``, each a ``width x width`` dense
    projection feeding ``width`` LIF neurons.

    Args:
        width: neurons per half (``x1`` and ``x2`` each have ``width`` features).
        weight_scale: initial weights ~ N(0, weight_scale**2 / width).
        generator: for the initial weights.
    """

    def __init__(
        self,
        width: int,
        *,
        weight_scale: float = 1.0,
        generator: torch.Generator | None = None,
        params: LIFFixedParameters | None = None,
        surrogate: str = "superspike",
        scale: float = 10.0,
        reversible: bool = True,
    ) -> None:
        super().__init__()
        if width > MAX_WIDTH:
            raise ValueError(f"ReversibleBlock: width {width} > {MAX_WIDTH}: the projection would be inexact")
        std = weight_scale / width**0.5
        self.w_f = torch.nn.Parameter(torch.randn(width, width, generator=generator, dtype=_DTYPE) * std)
        self.w_g = torch.nn.Parameter(torch.randn(width, width, generator=generator, dtype=_DTYPE) * std)
        self.params = params or LIFFixedParameters()
        self.surrogate, self.scale, self.reversible = surrogate, float(scale), reversible
        self.trace = None
        self.last_side_bytes = 0

    def quantized_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(wF, wG)`` clamped to ``|w| <= W_LIMIT`` and rounded to ``2**-W_FRAC`` (straight-through)."""
        return tuple(quantize(w.clamp(-W_LIMIT, W_LIMIT), W_FRAC) for w in (self.w_f, self.w_g))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the block over a sequence: ``x1, x2`` ``(T, B, width)`` -> ``(y1, y2)``, same shape."""
        return _run(self, [self], x1, x2)


class ReversibleStack(torch.nn.Module):
    """``n_blocks`` reversible spiking blocks applied in sequence at every time step.

    Args:
        n_blocks: depth.
        width: neurons per half; the stack maps ``(x1, x2)``, each ``(T, B, width)``, to ``(y1, y2)``.
        params: :class:`LIFFixedParameters` shared by every sublayer.
        surrogate, scale: the surrogate gradient of :func:`neuro.neurons.spike_fn`.
        reversible: ``True``: the memory-saving backward (:class:`_ReversibleFunction`); ``False``: the
            same arithmetic under ordinary autograd (stores every activation), the reference.
        weight_scale, seed: initialisation (N(0, weight_scale**2 / width)).

    Attributes:
        trace: set to a list to record every block input/state in the forward pass and every
            reconstruction in the backward pass (tests); ``None`` normally.
        last_side_bytes: bytes of the side buffer stored by the last reversible forward.
    """

    def __init__(
        self,
        n_blocks: int,
        width: int,
        *,
        params: LIFFixedParameters | None = None,
        surrogate: str = "superspike",
        scale: float = 10.0,
        reversible: bool = True,
        weight_scale: float = 1.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.blocks = torch.nn.ModuleList(
            ReversibleBlock(width, weight_scale=weight_scale, generator=gen) for _ in range(n_blocks)
        )
        self.params = params or LIFFixedParameters()
        self.surrogate, self.scale, self.reversible = surrogate, float(scale), reversible
        self.width = width
        self.trace = None
        self.last_side_bytes = 0

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x1, x2``: ``(T, B, width)`` activity (any float dtype; rounded to ``2**-X_FRAC`` in float64).

        Returns ``(y1, y2)``, each ``(T, B, width)`` float64: the top block's outputs at every step.
        """
        return _run(self, list(self.blocks), x1, x2)


def _run(owner, blocks, x1, x2):
    if x1.shape != x2.shape or x1.dim() != 3:
        raise ValueError(
            f"reversible: x1, x2 must both be (T, B, width); got {tuple(x1.shape)}, {tuple(x2.shape)}"
        )
    x1 = quantize(x1.to(_DTYPE), X_FRAC)
    x2 = quantize(x2.to(_DTYPE), X_FRAC)
    weights = [w for blk in blocks for w in blk.quantized_weights()]
    if owner.reversible:
        return _ReversibleFunction.apply(owner, x1, x2, *weights)
    # reference: identical arithmetic under ordinary autograd (every activation saved)
    p, sur, scale = owner.params, owner.surrogate, owner.scale
    steps, batch, width = x1.shape
    states = [tuple(x1.new_zeros(batch, width) for _ in range(4)) for _ in blocks]
    out1, out2 = [], []
    for t in range(steps):
        a1, a2 = x1[t], x2[t]
        for b in range(len(blocks)):
            wf, wg = weights[2 * b], weights[2 * b + 1]
            a1, a2, states[b], _ = block_step(a1, a2, states[b], wf, wg, p, sur, scale)
        out1.append(a1)
        out2.append(a2)
    return torch.stack(out1), torch.stack(out2)
