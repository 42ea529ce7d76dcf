"""Step functions of the leaky neuron family: LI, LIF, LIFBox and AdaptiveLIF, with refractoriness.

Norse's functional style: pure functions over NamedTuple parameters and states, time constants as
inverse seconds (``tau_mem_inv`` in 1/s), dimensionless potentials, ``dt`` in seconds, tensors
``(batch, neurons)`` (any shape works; parameters broadcast).  A parameter may be a python float or a
0-dim tensor: the arithmetic is the same expression either way, and each caller keeps the kind it
always used (a float32 0-dim tensor rounds ``dt * tau_mem_inv`` to float32, a python float does not).

Every type advances its membrane with ONE Euler step, :func:`integrate` (Norse's
``li_feed_forward_step`` / ``lif_feed_forward_step`` arithmetic, in its operation order)::

    i_new = i + I                                   (I: this step's input current jump)
    v'    = v + dt tau_mem_inv ((v_leak - v) + i_new)
    i     = i_new + (-dt tau_syn_inv) i_new

The spiking types then threshold ``x = v' - theta`` (``theta = v_th``, ``+ b`` for AdaptiveLIF) with
the strict Heaviside ``z = [x > 0]``; a neuron still refractory (``rho > 0`` steps left) cannot spike
and its membrane is held at ``v_reset``; a spike resets ``v = (1 - z) v' + z v_reset``, restarts the
refractory countdown at ``rho_reset`` steps and raises the adaptive threshold,
``b <- b exp(-dt / tau_adapt) + adapt_increment z``.  LIFBox has no synaptic current: each step's
input drives the membrane alone (``i_new = I``).

Three flavours of the spiking step share this arithmetic (so they give the same spikes and states):

* :func:`lif_step`: differentiable, spikes through :func:`~neuro.neurons.surrogate.spike_fn`
  (surrogate-gradient training; for LIF exactly Norse's ``lif_feed_forward_step``);
* :func:`lif_step_psi`: no autograd graph, also returns the pseudo-derivative ``psi(x)`` (online
  rules: e-prop, OTTT);
* :func:`lif_step_events`: no autograd graph, bool spikes, and the reset is skipped (fewer kernels)
  when no neuron fired -- the closed plastic loop's hot path.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import torch

from neuro.neurons.surrogate import heaviside, spike_fn, surrogate_derivative

__all__ = [
    "NEURON_TYPES",
    "SPIKING_TYPES",
    "LIParameters",
    "LIState",
    "LIFParameters",
    "LIFState",
    "LIFBoxParameters",
    "LIFBoxState",
    "AdaptiveLIFParameters",
    "AdaptiveLIFState",
    "NeuronSpec",
    "integrate",
    "li_step",
    "lif_step",
    "lif_step_psi",
    "lif_step_events",
    "neuron_parameters",
    "initial_state",
    "refractory_steps",
]

#: Neuron models implemented here.  ``LIF``: leaky integrate-and-fire with an exponential synaptic
#: current (Norse ``LIF``); ``LIFBox``: LIF without synaptic current (Norse ``LIFBox``);
#: ``AdaptiveLIF``: LIF whose threshold rises per spike and relaxes with ``tau_adapt`` (Norse
#: ``LSNN``); ``LI``: leaky integrator, never spikes (Norse ``LI``).
NEURON_TYPES: tuple[str, ...] = ("LIF", "LIFBox", "AdaptiveLIF", "LI")
#: Neuron models that emit spikes.
SPIKING_TYPES: tuple[str, ...] = ("LIF", "LIFBox", "AdaptiveLIF")

Scalar = float | torch.Tensor  # a python float or a 0-dim tensor


class LIParameters(NamedTuple):
    """Leaky integrator (Norse ``LIParameters``): ``tau_syn_inv``, ``tau_mem_inv`` (1/s), ``v_leak``."""

    tau_syn_inv: Scalar = 1.0 / 5e-3
    tau_mem_inv: Scalar = 1.0 / 1e-2
    v_leak: Scalar = 0.0


class LIState(NamedTuple):
    """Leaky integrator state: membrane ``v`` and synaptic current ``i``, each ``(B, n)``."""

    v: torch.Tensor
    i: torch.Tensor


class LIFParameters(NamedTuple):
    """LIF (Norse ``LIFParameters`` plus refractoriness and the surrogate).

    Attributes:
        tau_syn_inv, tau_mem_inv: inverse synaptic / membrane time constants, 1/s.
        v_leak, v_th, v_reset: resting, threshold and reset potentials (dimensionless).
        rho_reset: refractory period in steps (0: none; see :func:`refractory_steps`).
        surrogate, scale: the surrogate derivative (:data:`~neuro.neurons.surrogate.SURROGATES`)
            and its steepness per unit of potential.
    """

    tau_syn_inv: Scalar = 1.0 / 5e-3
    tau_mem_inv: Scalar = 1.0 / 1e-2
    v_leak: Scalar = 0.0
    v_th: Scalar = 1.0
    v_reset: Scalar = 0.0
    rho_reset: int = 0
    surrogate: str = "superspike"
    scale: float = 10.0


class LIFState(NamedTuple):
    """LIF state: ``v``, ``i`` ``(B, n)``; ``rho``: refractory steps left (None without refractoriness)."""

    v: torch.Tensor
    i: torch.Tensor
    rho: torch.Tensor | None = None


class LIFBoxParameters(NamedTuple):
    """LIFBox (Norse ``LIFBoxParameters``): :class:`LIFParameters` without ``tau_syn_inv``."""

    tau_mem_inv: Scalar = 1.0 / 1e-2
    v_leak: Scalar = 0.0
    v_th: Scalar = 1.0
    v_reset: Scalar = 0.0
    rho_reset: int = 0
    surrogate: str = "superspike"
    scale: float = 10.0


class LIFBoxState(NamedTuple):
    """LIFBox state: membrane ``v`` ``(B, n)`` and ``rho`` (refractory steps left, or None)."""

    v: torch.Tensor
    rho: torch.Tensor | None = None


class AdaptiveLIFParameters(NamedTuple):
    """AdaptiveLIF: :class:`LIFParameters` plus threshold adaptation.

    Attributes:
        tau_adapt: adaptation time constant, seconds (not inverted: the decay
            ``exp(-dt / tau_adapt)`` is formed from it as the model file and Brian2 state it).
        adapt_increment: threshold rise per spike (dimensionless).
        Others: as :class:`LIFParameters`.
    """

    tau_syn_inv: Scalar = 1.0 / 5e-3
    tau_mem_inv: Scalar = 1.0 / 1e-2
    v_leak: Scalar = 0.0
    v_th: Scalar = 1.0
    v_reset: Scalar = 0.0
    tau_adapt: float = 0.7
    adapt_increment: float = 0.1
    rho_reset: int = 0
    surrogate: str = "superspike"
    scale: float = 10.0


class AdaptiveLIFState(NamedTuple):
    """AdaptiveLIF state: ``v``, ``i``, threshold offset ``b`` (the threshold is ``v_th + b``), each
    ``(B, n)``, and ``rho`` (refractory steps left, or None)."""

    v: torch.Tensor
    i: torch.Tensor
    b: torch.Tensor
    rho: torch.Tensor | None = None


SpikingParameters = LIFParameters | LIFBoxParameters | AdaptiveLIFParameters
SpikingState = LIFState | LIFBoxState | AdaptiveLIFState


# ----------------------------------------------------------------------------------------------------
# The Euler step shared by every type


def integrate(current: torch.Tensor, v: torch.Tensor, i: torch.Tensor | None, p, dt: float):
    """One Euler step of the membrane ``v`` and synaptic current ``i`` (``(B, n)``) driven by the
    current jump ``current`` (``(B, n)``), in Norse's operation order; ``i=None``: no synaptic
    current (LIFBox: the input drives the membrane alone).

    Returns ``(v_dec, i_dec)``: the membrane before threshold and reset, and the decayed current
    (None for LIFBox).
    """
    i_new = current if i is None else i + current
    v_dec = v + dt * p.tau_mem_inv * ((p.v_leak - v) + i_new)
    if i is None:
        return v_dec, None
    return v_dec, i_new + (-dt * p.tau_syn_inv * i_new)


def li_step(current: torch.Tensor, state: LIState, p: LIParameters,
            dt: float) -> tuple[torch.Tensor, LIState]:
    """One step of a leaky integrator (Norse ``li_feed_forward_step``): ``(v, new_state)``."""
    v, i = integrate(current, state.v, state.i, p, dt)
    return v, LIState(v, i)


# ----------------------------------------------------------------------------------------------------
# Spiking types


def _membrane(current: torch.Tensor, state: SpikingState, p: SpikingParameters, dt: float):
    """``(v_dec, i_dec, threshold)`` of a spiking population."""
    kind = type(state)
    v_dec, i_dec = integrate(current, state.v, None if kind is LIFBoxState else state.i, p, dt)
    threshold = p.v_th + state.b if kind is AdaptiveLIFState else p.v_th
    return v_dec, i_dec, threshold


def _countdown(spiking: torch.Tensor, rho: torch.Tensor, p: SpikingParameters) -> torch.Tensor:
    """Refractory steps left after this step: ``rho_reset`` where a spike was emitted, else one less."""
    return torch.where(spiking, float(p.rho_reset), (rho - 1).clamp(min=0))


def _adapted(b: torch.Tensor, z: torch.Tensor | None, p: AdaptiveLIFParameters, dt: float) -> torch.Tensor:
    """``b exp(-dt / tau_adapt) + adapt_increment z`` (``z=None``: no spike, the decay alone)."""
    b = b * math.exp(-dt / p.tau_adapt)
    return b if z is None else b + p.adapt_increment * z


def _next(state: SpikingState, v: torch.Tensor, i: torch.Tensor | None, b, rho) -> SpikingState:
    """A state of ``state``'s type from the new values (``b`` only for AdaptiveLIF)."""
    kind = type(state)
    if kind is LIFState:
        return LIFState(v, i, rho)
    if kind is AdaptiveLIFState:
        return AdaptiveLIFState(v, i, b, rho)
    return LIFBoxState(v, rho)


def _step(current, state, p, dt, with_psi: bool):
    v_dec, i_dec, threshold = _membrane(current, state, p, dt)
    x = v_dec - threshold
    if with_psi:
        z = heaviside(x).to(x.dtype)
    else:
        z = spike_fn(x, p.surrogate, p.scale)
    rho = state.rho
    if p.rho_reset:
        blocked = rho > 0
        z = torch.where(blocked, torch.zeros_like(z), z)
        v_dec = torch.where(blocked, p.v_reset, v_dec)
        rho = _countdown(z > 0, rho, p)
    v = (1 - z) * v_dec + z * p.v_reset
    b = _adapted(state.b, z, p, dt) if type(state) is AdaptiveLIFState else None
    new = _next(state, v, i_dec, b, rho)
    if with_psi:
        return z, surrogate_derivative(x, p.surrogate, p.scale), new
    return z, new


def lif_step(current: torch.Tensor, state: SpikingState, p: SpikingParameters,
             dt: float) -> tuple[torch.Tensor, SpikingState]:
    """One differentiable step of a spiking population (LIF, LIFBox or AdaptiveLIF, told apart by
    the state type: :class:`LIFState`, :class:`LIFBoxState`, :class:`AdaptiveLIFState`).

    Args:
        current: input current jump of this step, ``(B, n)``.
        state: the population's state; p: its parameters (the matching ``*Parameters``).
        dt: time step, seconds.
    Returns:
        ``(z, new_state)``: spikes ``(B, n)`` (0/1 in the state's dtype) whose gradient is the
        surrogate's.  For LIF without refractoriness: Norse's ``lif_feed_forward_step``, bit for bit.
    """
    return _step(current, state, p, dt, with_psi=False)


def lif_step_psi(current: torch.Tensor, state: SpikingState, p: SpikingParameters,
                 dt: float) -> tuple[torch.Tensor, torch.Tensor, SpikingState]:
    """:func:`lif_step` without an autograd graph, also returning the pseudo-derivative.

    Returns ``(z, psi, new_state)``: spikes ``(B, n)`` (0/1), ``psi = surrogate_derivative(v' -
    theta)`` ``(B, n)`` (the eligibility factor of e-prop / OTTT) and the state.
    """
    return _step(current, state, p, dt, with_psi=True)


def lif_step_events(current: torch.Tensor, state: SpikingState, p: SpikingParameters,
                    dt: float) -> tuple[torch.Tensor | None, SpikingState]:
    """:func:`lif_step` for event-driven loops without autograd: bool spikes, and when no neuron
    fires the reset and the threshold jump are skipped (the same values with fewer kernels).

    Returns ``(spikes, new_state)``: ``spikes`` ``(B, n)`` bool, or None when no neuron fired.
    """
    v_dec, i_dec, threshold = _membrane(current, state, p, dt)
    spikes = heaviside(v_dec - threshold)
    rho = state.rho
    if p.rho_reset:
        blocked = rho > 0
        spikes = spikes & ~blocked
        v_dec = torch.where(blocked, p.v_reset, v_dec)
        rho = _countdown(spikes, rho, p)
    fired = bool(spikes.any())
    v = torch.where(spikes, p.v_reset, v_dec) if fired else v_dec  # = (1 - z) v' + z v_reset
    b = None
    if type(state) is AdaptiveLIFState:
        b = _adapted(state.b, spikes.to(v.dtype) if fired else None, p, dt)
    return (spikes if fired else None), _next(state, v, i_dec, b, rho)


# ----------------------------------------------------------------------------------------------------
# Parameters and states from a population description


class NeuronSpec(Protocol):
    """What :func:`neuron_parameters` reads from a population description (e.g. a model graph's
    ``Population``): the type name, times in seconds, dimensionless potentials; None where the type
    has no such parameter."""

    type: str
    tau_mem: float | None
    tau_syn: float | None
    v_leak: float | None
    v_th: float | None
    v_reset: float | None
    refractory: float | None
    tau_adapt: float | None
    adapt_increment: float | None
    surrogate: str | None
    surrogate_scale: float | None


def refractory_steps(refractory: float | None, dt: float) -> int:
    """A refractory period (seconds) as a whole number of steps of ``dt`` seconds (0 for none)."""
    return round(refractory / dt) if refractory and refractory > 0 else 0


def neuron_parameters(spec: NeuronSpec, dt: float, *, dtype: torch.dtype | None = None, device=None):
    """The parameters of a population of type ``spec.type`` (one of :data:`NEURON_TYPES`).

    Args:
        spec: the population description; dt: time step, seconds (for the refractory steps).
        dtype: None for python-float potentials and inverse time constants; a dtype for 0-dim
            tensors of that dtype (Norse's convention) on ``device``.
    """

    def num(value: float) -> Scalar:
        return value if dtype is None else torch.tensor(value, dtype=dtype, device=device)

    tau_mem_inv = num(1.0 / spec.tau_mem)
    tau_syn_inv = num(1.0 / spec.tau_syn if spec.tau_syn else 0.0)
    if spec.type == "LI":
        return LIParameters(tau_syn_inv, tau_mem_inv, num(spec.v_leak))
    if spec.type not in SPIKING_TYPES:
        raise ValueError(f"neuro.neurons: unknown neuron type {spec.type!r}; choose one of {NEURON_TYPES}")
    spiking = dict(
        v_leak=num(spec.v_leak),
        v_th=num(spec.v_th),
        v_reset=num(spec.v_reset),
        rho_reset=refractory_steps(spec.refractory, dt),
        surrogate=spec.surrogate or "superspike",
        scale=spec.surrogate_scale if spec.surrogate_scale is not None else 10.0,
    )
    if spec.type == "LIFBox":
        return LIFBoxParameters(tau_mem_inv=tau_mem_inv, **spiking)
    if spec.type == "AdaptiveLIF":
        return AdaptiveLIFParameters(tau_syn_inv=tau_syn_inv, tau_mem_inv=tau_mem_inv,
                                     tau_adapt=spec.tau_adapt, adapt_increment=spec.adapt_increment,
                                     **spiking)
    return LIFParameters(tau_syn_inv=tau_syn_inv, tau_mem_inv=tau_mem_inv, **spiking)


def initial_state(p, shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32, device=None):
    """The resting state for parameters ``p``: ``v = v_leak``, currents, threshold offsets and
    refractory counters 0; tensors of ``shape`` (e.g. ``(B, n)``)."""
    zeros = torch.zeros(shape, dtype=dtype, device=device)
    v = zeros + p.v_leak
    if isinstance(p, LIParameters):
        return LIState(v, zeros.clone())
    rho = zeros.clone() if p.rho_reset else None
    if isinstance(p, LIFBoxParameters):
        return LIFBoxState(v, rho)
    if isinstance(p, AdaptiveLIFParameters):
        return AdaptiveLIFState(v, zeros.clone(), zeros.clone(), rho)
    return LIFState(v, zeros.clone(), rho)
