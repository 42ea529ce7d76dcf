"""Reward-modulated STDP (Izhikevich 2007; Florian 2007): pair-STDP events build a per-synapse
eligibility trace; dopamine turns it into weight changes, seconds later.

Registered as rule ``rstdp`` (driver ``local``; reads a dopamine signal; Brian2 counterpart: the
eligibility ``c`` and dopamine ``d`` updated once per step around the synaptic pathways).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from neuro.rules.registry import Brian2Synapse, Rule, register
from neuro.rules.stdp_pair import PairSTDPParameters, PairSTDPState, stdp_pair_interval
from neuro.rules.traces import (
    TraceRule,
    active_rows,
    as_spikes,
    decay_factor,
    rows_of,
    spikes_times,
    trace_interval,
)

__all__ = ["RSTDPParameters", "RSTDPState", "RewardSTDP", "rstdp_init", "rstdp_interval"]

_F64 = torch.float64


class RSTDPParameters(NamedTuple):
    """Dopamine-modulated STDP with an eligibility trace (Izhikevich 2007).

    ``c`` (eligibility, per synapse): ``c <- exp(-dt/tau_eligibility) c + stdp events`` where the
    events are pair-STDP's (``+a_plus x_pre`` at post spikes, ``-a_minus x_post`` at pre spikes);
    ``d`` (dopamine, per trial): ``d <- exp(-dt/tau_reward) d + reward``; weight change per step
    ``dw = dt * d * c`` (both after this step's update).  Times in seconds, ``dw`` in weight units
    per (dopamine unit x second).
    """

    tau_plus: float = 20e-3
    tau_minus: float = 20e-3
    a_plus: float = 1.0
    a_minus: float = 1.5
    tau_eligibility: float = 1.0
    tau_reward: float = 0.2


class RSTDPState(NamedTuple):
    """``x_pre (B, N)``, ``x_post (B, M)``, ``eligibility (B, M, N)``, ``dopamine (B,)`` (float64)."""

    x_pre: torch.Tensor
    x_post: torch.Tensor
    eligibility: torch.Tensor
    dopamine: torch.Tensor


def rstdp_init(batch: int, n_pre: int, n_post: int, device=None) -> RSTDPState:
    """Zero traces, eligibility and dopamine."""
    z = torch.zeros
    return RSTDPState(
        z(batch, n_pre, dtype=_F64, device=device),
        z(batch, n_post, dtype=_F64, device=device),
        z(batch, n_post, n_pre, dtype=_F64, device=device),
        z(batch, dtype=_F64, device=device),
    )


def _reverse_filter(d: torch.Tensor, decay: float) -> torch.Tensor:
    """``G[s] = sum_{t >= s} d[t] decay**(t - s)`` along dim 0: the closed-form trace of the
    time-reversed signal (no per-step loop)."""
    return trace_interval(d.flip(0), torch.zeros_like(d[0]), decay).flip(0)


def rstdp_interval(
    contributions,
    weight: torch.Tensor,
    z_pre: torch.Tensor,
    z_post: torch.Tensor,
    reward: torch.Tensor,
    state: RSTDPState,
    p: RSTDPParameters,
    dt: float,
) -> RSTDPState:
    """One interval of reward-modulated STDP; contributions go to ``contributions``.

    Args:
        z_pre: ``(L, B, N)``, z_post: ``(L, B, M)`` spikes; reward: ``(L, B)`` dopamine released at
            each step (added to ``d``).
    With ``dc = exp(-dt/tau_eligibility)`` and ``G[s] = dt sum_{t>=s} d[t] dc**(t-s)``:
    ``sum_t dt d[t] c[t] = g0 * c0 + sum_s G[s] e[s]`` where ``c0`` is the eligibility before the
    interval, ``g0 = dt sum_t d[t] dc**(t+1)`` and ``e[s]`` the STDP events of step ``s``.  The event
    part goes to the engine as exact three-factor products ``accumulate_events(w, z_post, x_pre,
    a_plus * G)`` (and the LTD twin); the ``c0`` part, a real matrix, per sample through
    ``accumulate`` (one rounding per entry).
    """
    z_pre, z_post = as_spikes(z_pre), as_spikes(z_post)
    length, batch = z_pre.shape[:2]
    terms, pair_state = stdp_pair_interval(
        z_pre,
        z_post,
        PairSTDPState(state.x_pre, state.x_post),
        PairSTDPParameters(p.tau_plus, p.tau_minus, p.a_plus, p.a_minus),
        dt,
    )
    dd, dc = decay_factor(dt, p.tau_reward), decay_factor(dt, p.tau_eligibility)
    reward = reward.to(_F64)
    dop = trace_interval(reward, state.dopamine, dd)  # (L, B) dopamine after each step's release
    g = _reverse_filter(dop, dc) * dt  # (L, B)
    steps = torch.arange(length, dtype=_F64)
    g0 = dt * (dop * torch.pow(torch.tensor(dc, dtype=_F64), steps + 1).unsqueeze(1)).sum(0)  # (B,)
    scale = g.unsqueeze(-1)  # (L, B, 1) broadcast over post neurons
    rows = active_rows(terms.z_post, scale, terms.x_pre)
    if rows.numel():
        sc = rows_of(scale.expand(*terms.z_post.shape))[rows] * p.a_plus
        contributions.accumulate_events(
            weight, spikes_times(rows_of(terms.z_post)[rows], sc), rows_of(terms.x_pre)[rows]
        )
    rows = active_rows(terms.z_pre, scale, terms.x_post)
    if rows.numel():
        sc = rows_of(scale)[rows] * -p.a_minus  # (K, 1): one factor per row
        contributions.accumulate_events(
            weight, rows_of(terms.x_post)[rows], spikes_times(rows_of(terms.z_pre)[rows], sc)
        )
    if bool((state.eligibility != 0).any()) and bool((g0 != 0).any()):
        contributions.accumulate(weight, state.eligibility * g0[:, None, None])
    # eligibility at the end of the interval: dc**L c0 + sum_s dc**(L-1-s) e[s]
    w_s = torch.pow(torch.tensor(dc, dtype=_F64), (length - 1 - steps)).reshape(length, 1, 1)
    ltp = torch.einsum("lbm,lbn->bmn", terms.z_post.to(_F64) * w_s, terms.x_pre)
    ltd = torch.einsum("lbm,lbn->bmn", terms.x_post * w_s, terms.z_pre.to(_F64))
    elig = dc**length * state.eligibility + p.a_plus * ltp - p.a_minus * ltd
    return RSTDPState(pair_state.x_pre, pair_state.x_post, elig, dop[-1])


class RewardSTDP(TraceRule):
    """Reward-modulated STDP on one projection (see :class:`~neuro.rules.traces.TraceRule`); ``reward``
    ``(L, B)``: dopamine released at each step (None: none)."""

    def init(self, batch: int, n_pre: int, n_post: int) -> RSTDPState:
        return rstdp_init(batch, n_pre, n_post)

    def advance(self, contributions, weight, z_pre, z_post, reward):
        if reward is None:
            reward = torch.zeros(z_pre.shape[:2], dtype=_F64)
        state = rstdp_interval(contributions, weight, z_pre, z_post, reward, self.state, self.params, self.dt)
        return state, state


# ==================================================================================================
# Registration
# ==================================================================================================


def _build(graph, name: str) -> RewardSTDP:
    values = RULE.values(graph.projections[name].params)
    return RewardSTDP(RSTDPParameters(*(values[k] for k in RSTDPParameters._fields)), graph.dt)


def _brian2(params, bounds, dt: float) -> Brian2Synapse:
    """Traces ``apre, apost`` (event-driven) feed the eligibility ``c``; the reference decays ``c``
    and ``d`` and applies ``w += dt d c`` once per step (:mod:`neuro.crosscheck.reference`)."""
    lo, hi = bounds if bounds is not None else (-math.inf, math.inf)
    model = ("w : 1\ndapre/dt = -apre/tau_plus : 1 (event-driven)\n"
             "dapost/dt = -apost/tau_minus : 1 (event-driven)\nc : 1\nd : 1 (shared)")
    ns = {"w_low": float(lo), "w_high": float(hi), "tau_plus": float(params["tau_plus"]),
          "tau_minus": float(params["tau_minus"]), "a_plus": float(params["a_plus"]),
          "a_minus": float(params["a_minus"]),
          "c_decay": math.exp(-dt / params["tau_eligibility"]),
          "d_decay": math.exp(-dt / params["tau_reward"]),
          "dt_s": float(dt)}
    return Brian2Synapse(model, "I_post += w\nc -= a_minus*apost\napre += 1", "c += a_plus*apre\napost += 1",
                         ns, seconds=("tau_plus", "tau_minus"), reward=True)


RULE = register(Rule(
    "rstdp", "reward-modulated STDP with an eligibility trace (Izhikevich 2007)",
    "local", mode="local", spiking_target=True, reward=True, build=_build, brian2=_brian2,
    keys={
        "tau_plus": ("time", 20e-3, ">0"),
        "tau_minus": ("time", 20e-3, ">0"),
        "a_plus": ("number", 0.01, ">=0"),
        "a_minus": ("number", 0.0105, ">=0"),
        "tau_eligibility": ("time", 1.0, ">0"),
        "tau_reward": ("time", 0.2, ">0"),
    },
))
