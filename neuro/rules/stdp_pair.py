"""Pair STDP (Bi & Poo 1998; Song, Miller & Abbott 2000): additive, multiplicative or power-law.

A pre spike depresses the weight by the postsynaptic trace (``-a_minus x_post f-(w)``), a post spike
potentiates it by the presynaptic trace (``+a_plus (x_pre - x_tar) f+(w)``); conventions, traces and
weight dependence as in :mod:`neuro.rules.traces`.  Additive terms reach the engine as exact
spike x trace products; weight-dependent terms are formed per sample and interval, ``A f(w) * sum_t
post x pre``, each entry rounded once into the quire (``accumulate``).

Registered as rule ``stdp_pair`` (driver ``local``; Brian2 counterpart: event-driven traces with
``clip`` after every event).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from neuro.rules.registry import Brian2Synapse, Rule, RuleKeyError, register
from neuro.rules.traces import (
    PAIRINGS,
    TraceRule,
    active_rows,
    as_spikes,
    check_pairing,
    decay_factor,
    rows_of,
    spikes_times,
    trace_before,
    trace_interval,
    weight_factors,
)

__all__ = [
    "PairSTDP",
    "PairSTDPParameters",
    "PairSTDPState",
    "PairTerms",
    "pair_contribute",
    "pair_delta",
    "pair_init",
    "pair_window",
    "stdp_pair_interval",
    "stdp_pair_step",
]

_F64 = torch.float64
MODES = ("additive", "multiplicative", "power_law")


class PairSTDPParameters(NamedTuple):
    """Pair STDP.

    Attributes:
        tau_plus: presynaptic trace time constant (s), LTP window.
        tau_minus: postsynaptic trace time constant (s), LTD window.
        a_plus: weight change per pre-before-post pair at zero lag (weight units).
        a_minus: size of the weight change per post-before-pre pair (>= 0, applied as depression).
        mu: weight dependence exponent: 0 additive, 1 multiplicative (soft bounds), else power law.
        w_min, w_max: weight range used by the weight dependence (the engine clamps to the
            projection's bounds).
        pairing: ``"all_to_all"`` or ``"nearest"``.
        x_tar: presynaptic target trace (Diehl & Cook 2015): a post spike changes the weight by
            ``a_plus (x_pre - x_tar) f+(w)``, so synapses whose input was silent are depressed.
    """

    tau_plus: float = 20e-3
    tau_minus: float = 20e-3
    a_plus: float = 0.01
    a_minus: float = 0.0105
    mu: float = 0.0
    w_min: float = 0.0
    w_max: float = 1.0
    pairing: str = "all_to_all"
    x_tar: float = 0.0


class PairSTDPState(NamedTuple):
    """Traces: ``x_pre`` ``(B, N)`` and ``x_post`` ``(B, M)`` (dimensionless, float64)."""

    x_pre: torch.Tensor
    x_post: torch.Tensor


class PairTerms(NamedTuple):
    """Everything the weight change of one interval depends on.

    Attributes:
        z_pre: ``(L, B, N)`` bool presynaptic spikes.
        z_post: ``(L, B, M)`` bool postsynaptic spikes.
        x_pre: ``(L, B, N)`` presynaptic trace after the step's pre spikes (read at post spikes).
        x_post: ``(L, B, M)`` postsynaptic trace before the step's post spikes (read at pre spikes).
    """

    z_pre: torch.Tensor
    z_post: torch.Tensor
    x_pre: torch.Tensor
    x_post: torch.Tensor


def pair_init(batch: int, n_pre: int, n_post: int, device=None) -> PairSTDPState:
    """Zero traces."""
    z = torch.zeros
    return PairSTDPState(
        z(batch, n_pre, dtype=_F64, device=device), z(batch, n_post, dtype=_F64, device=device)
    )




def stdp_pair_interval(
    z_pre: torch.Tensor, z_post: torch.Tensor, state: PairSTDPState, p: PairSTDPParameters, dt: float
) -> tuple[PairTerms, PairSTDPState]:
    """Traces of a whole interval in closed form.

    Args:
        z_pre: ``(L, B, N)`` presynaptic spikes (bool or 0/1).
        z_post: ``(L, B, M)`` postsynaptic spikes.
        state: traces before the interval.
        p: parameters.
        dt: step (s).
    Returns:
        ``(terms, new_state)``; hand ``terms`` to :func:`pair_contribute`.
    """
    nearest = check_pairing(p.pairing)
    z_pre, z_post = as_spikes(z_pre), as_spikes(z_post)
    d_plus, d_minus = decay_factor(dt, p.tau_plus), decay_factor(dt, p.tau_minus)
    x_pre = trace_interval(z_pre, state.x_pre, d_plus, nearest)
    post_after = trace_interval(z_post, state.x_post, d_minus, nearest)
    x_post = trace_before(post_after, state.x_post, d_minus)
    return PairTerms(z_pre, z_post, x_pre, x_post), PairSTDPState(x_pre[-1], post_after[-1])


def stdp_pair_step(
    z_pre: torch.Tensor, z_post: torch.Tensor, state: PairSTDPState, p: PairSTDPParameters, dt: float
) -> tuple[PairTerms, PairSTDPState]:
    """One time step (``z_pre`` ``(B, N)``, ``z_post`` ``(B, M)``): :func:`stdp_pair_interval` with L = 1."""
    return stdp_pair_interval(z_pre.unsqueeze(0), z_post.unsqueeze(0), state, p, dt)






def pair_contribute(contributions, weight: torch.Tensor, terms: PairTerms, p: PairSTDPParameters) -> None:
    """Hand the interval's pair-STDP weight change to ``contributions``.

    Additive (``mu == 0``): ``accumulate_events(w, z_post, x_pre, a_plus)`` and
    ``accumulate_events(w, x_post, z_pre, -a_minus)`` over the ``L * B`` rows that hold a spike
    (the others add zero), all in one call with the amplitudes on the spike factor; every product
    is exact; ``x_tar`` adds a row ``post spike counts x (-a_plus x_tar)``.  Weight-dependent
    (``mu != 0``): per sample ``a_plus f+(w) * sum_t z_post (x_pre - x_tar) - a_minus f-(w) *
    sum_t x_post z_pre`` (``(B, M, N)``) via ``engine.accumulate`` (each entry rounded once to the
    engine's format, then summed exactly).
    """
    if p.mu == 0.0:
        post, pre = [], []  # LTP and LTD rows go to the engine in one call (each row's terms are
        # few: a spike row times a trace row, which the engine adds one by one)
        rows = active_rows(terms.z_post, terms.x_pre)
        if rows.numel() and p.a_plus:
            post.append(spikes_times(rows_of(terms.z_post)[rows], p.a_plus))
            pre.append(rows_of(terms.x_pre)[rows])
            if p.x_tar:  # post spike counts (integers, exact) x -a_plus x_tar
                post.append(rows_of(terms.z_post).sum(0, dtype=_F64).unsqueeze(0))
                pre.append(torch.full((1, terms.z_pre.shape[-1]), -p.a_plus * p.x_tar, dtype=_F64))
        rows = active_rows(terms.z_pre, terms.x_post)
        if rows.numel() and p.a_minus:
            post.append(rows_of(terms.x_post)[rows])
            pre.append(spikes_times(rows_of(terms.z_pre)[rows], -p.a_minus))
        if post:
            contributions.accumulate_events(weight, torch.cat(post), torch.cat(pre))
        return
    if not (bool(terms.z_post.any()) or bool(terms.z_pre.any())):
        return
    delta = _weighted_delta(terms, p, weight.detach())
    if bool(delta.any()):
        contributions.accumulate(weight, delta)


def _weighted_delta(terms: PairTerms, p: PairSTDPParameters, w: torch.Tensor) -> torch.Tensor:
    """Per-sample weight change ``(B, M, N)`` of a weight-dependent rule (float64)."""
    ltp = torch.einsum("lbm,lbn->bmn", terms.z_post.to(_F64), terms.x_pre - p.x_tar)
    ltd = torch.einsum("lbm,lbn->bmn", terms.x_post, terms.z_pre.to(_F64))
    f_plus, f_minus = weight_factors(w, p.w_min, p.w_max, p.mu)
    return p.a_plus * f_plus * ltp - p.a_minus * f_minus * ltd


def pair_delta(terms: PairTerms, p: PairSTDPParameters, w: torch.Tensor | None = None) -> torch.Tensor:
    """Reference weight change ``(M, N)`` in plain float64 (no engine; for tests and comparisons)."""
    if p.mu == 0.0:
        ltp = rows_of(terms.z_post).to(_F64).T @ (rows_of(terms.x_pre) - p.x_tar)
        ltd = rows_of(terms.x_post).T @ rows_of(terms.z_pre).to(_F64)
        return p.a_plus * ltp - p.a_minus * ltd
    if w is None:
        raise ValueError("pair_delta: a weight-dependent rule (mu != 0) needs the weights w")
    return _weighted_delta(terms, p, w).sum(0)


def pair_window(lags: torch.Tensor, p: PairSTDPParameters) -> torch.Tensor:
    """Weight change of one isolated pair vs lag ``t_post - t_pre`` (s): ``a_plus exp(-lag/tau_plus)``
    for ``lag >= 0`` (a zero lag is LTP, the same-step convention), ``-a_minus exp(lag/tau_minus)``
    otherwise."""
    lags = torch.as_tensor(lags, dtype=_F64)
    return torch.where(
        lags >= 0, p.a_plus * torch.exp(-lags / p.tau_plus), -p.a_minus * torch.exp(lags / p.tau_minus)
    )


class PairSTDP(TraceRule):
    """Pair STDP on one projection (:class:`~neuro.rules.traces.TraceRule`): keeps the traces,
    hands each interval's contributions on; ``params``: :class:`PairSTDPParameters`, ``dt``: step (s)."""

    def init(self, batch: int, n_pre: int, n_post: int) -> PairSTDPState:
        return pair_init(batch, n_pre, n_post)

    def advance(self, contributions, weight, z_pre, z_post, reward):
        terms, state = stdp_pair_interval(z_pre, z_post, self.state, self.params, self.dt)
        pair_contribute(contributions, weight, terms, self.params)
        return terms, state


# ==================================================================================================
# Registration
# ==================================================================================================


def _resolve(values: dict, given: set, bounds) -> None:
    """``mu`` follows ``mode`` (0 additive, 1 multiplicative, given for power law); a weight-dependent
    mode needs the projection's bounds."""
    mode = values["mode"]
    if mode == "power_law":
        if "mu" not in given or not values["mu"] > 0:
            raise RuleKeyError("mu", 'an exponent mu > 0 for mode = "power_law"', None,
                               'mu = 0 is mode = "additive", mu = 1 mode = "multiplicative"')
    else:
        implied = 0.0 if mode == "additive" else 1.0
        if "mu" in given and values["mu"] != implied:
            raise RuleKeyError("mu", f"mu = {implied:g} (implied by mode = {mode!r}), or no mu", None,
                               'set mode = "power_law" for another exponent')
        values["mu"] = implied
    if mode != "additive" and bounds is None:
        raise RuleKeyError("bounds", f"[low, high] (mode = {mode!r} depends on the weight's place "
                           "between the bounds)", "nothing (the key is missing)", table="projection")


def _build(graph, name: str) -> PairSTDP:
    proj = graph.projections[name]
    v = RULE.values(proj.params, proj.bounds)
    lo, hi = proj.bounds if proj.bounds is not None else (0.0, 1.0)
    p = PairSTDPParameters(v["tau_plus"], v["tau_minus"], v["a_plus"], v["a_minus"], v["mu"], lo, hi,
                           v["pairing"], v["x_tar"])
    return PairSTDP(p, graph.dt)


def _brian2(params, bounds, dt: float) -> Brian2Synapse:
    """Event-driven traces; the pre pathway adds ``apost f-(u)``, the post pathway ``(apre - a_plus
    x_tar) f+(u)``, each clipped to the bounds; nearest pairing sets the traces instead of adding."""
    lo, hi = bounds if bounds is not None else (-math.inf, math.inf)
    jump = "=" if params["pairing"] == "nearest" else "+="
    mu = float(params["mu"])
    u = "((w - w_low)/(w_high - w_low))"
    f_minus, f_plus = ("", "") if mu == 0.0 else (f"*{u}**mu", f"*(1 - {u})**mu")
    model = ("w : 1\ndapre/dt = -apre/tau_plus : 1 (event-driven)\n"
             "dapost/dt = -apost/tau_minus : 1 (event-driven)")
    on_pre = f"I_post += w\napre {jump} a_plus\nw = clip(w + apost{f_minus}, w_low, w_high)"
    on_post = f"apost {jump} -a_minus\nw = clip(w + (apre - a_plus*x_tar){f_plus}, w_low, w_high)"
    names = ("tau_plus", "tau_minus", "a_plus", "a_minus", "mu", "x_tar")
    ns = {"w_low": float(lo), "w_high": float(hi), **{k: float(params[k]) for k in names}}
    return Brian2Synapse(model, on_pre, on_post, ns, seconds=("tau_plus", "tau_minus"))


RULE = register(Rule(
    "stdp_pair", "pair STDP (additive, multiplicative or power law; all-to-all or nearest pairing)",
    "local", mode="local", spiking_target=True, build=_build, brian2=_brian2, resolve=_resolve,
    keys={
        "tau_plus": ("time", 20e-3, ">0"),
        "tau_minus": ("time", 20e-3, ">0"),
        "a_plus": ("number", 0.01, ">=0"),
        "a_minus": ("number", 0.0105, ">=0"),
        "mode": ("choice", "additive", MODES),
        "mu": ("number", 0.0, ">=0"),
        "pairing": ("choice", "all_to_all", PAIRINGS),
        "x_tar": ("number", 0.0, ">=0"),
    },
))
