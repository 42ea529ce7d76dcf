"""Exponential spike traces in closed form, and the small helpers every STDP rule shares.

Conventions of the STDP family (:mod:`neuro.rules.stdp_pair`, :mod:`neuro.rules.stdp_triplet`,
:mod:`neuro.rules.rstdp`):

* Tensors are ``(time, batch, neurons)``; a weight is ``(post M, pre N)``; time in seconds.
* Traces jump by 1 at a spike (all-to-all pairing) or are reset to 1 (nearest-spike pairing,
  Morrison et al. 2008 "symmetric nearest spike") and decay by the exact factor ``exp(-dt / tau)``
  per step: the trace of one spike ``s`` steps ago is ``exp(-s dt / tau)``.
* Same-step order (Brian2's): the presynaptic pathway runs before the postsynaptic one.  At a pre
  spike the weight is depressed by the postsynaptic trace *before* this step's post spike; at a post
  spike it is potentiated by the presynaptic trace *after* this step's pre spike.  A pre and a post
  spike in the same step therefore give ``+A_plus`` (LTP only).
* Within one update interval the weights are constant (the network sees the weights of the
  interval's start); bounds are applied by the engine once per interval (Brian2 clips after every
  event; the two agree whenever no weight crosses a bound inside an interval).
* A rule never writes a weight: it turns spike trains into *terms* (spikes and traces) and hands the
  weight change to the engine as exact contributions (one factor a bool spike train); the engine
  sums them in a quire and rounds once per ``step()`` (one step per update interval).

Weight dependence (Guetig et al. 2003), with ``u = (w - w_min) / (w_max - w_min)``:
``dw+ = A_plus (1 - u)**mu``, ``dw- = -A_minus u**mu``; ``mu = 0`` additive (hard bounds by the
engine's clamp), ``mu = 1`` multiplicative (soft bounds), other ``mu`` power law.
"""

from __future__ import annotations

import abc
import functools
import math

import torch

__all__ = [
    "PAIRINGS",
    "TraceRule",
    "active_rows",
    "as_spikes",
    "check_pairing",
    "decay_factor",
    "rows_of",
    "spikes_times",
    "trace_before",
    "trace_interval",
    "trace_powers",
    "weight_factors",
]

#: Spike pairings: every earlier spike counts (traces add 1) or only the nearest (traces reset to 1).
PAIRINGS = ("all_to_all", "nearest")
_F64 = torch.float64
_MAX_GROWTH = 2.0**40  # largest decay**-L used in the closed-form scan before a new block starts


def decay_factor(dt: float, tau: float) -> float:
    """Exact per-step decay of an exponential trace, ``exp(-dt / tau)`` (dt, tau in seconds)."""
    if not (dt > 0 and tau > 0):
        raise ValueError(f"decay_factor: dt and tau must be > 0 seconds, got dt={dt}, tau={tau}")
    return math.exp(-dt / tau)


def _block_len(decay: float) -> int:
    if decay >= 1.0:
        return 1 << 30
    return max(1, int(math.log(_MAX_GROWTH) / -math.log(decay)))


def trace_interval(
    spikes: torch.Tensor, x0: torch.Tensor, decay: float, nearest: bool = False
) -> torch.Tensor:
    """Trace values after each step's spikes, for a whole interval at once (closed form).

    ``x[t] = decay * x[t-1] + z[t]`` (all-to-all) or ``x[t] = 1 if z[t] else decay * x[t-1]``
    (nearest spike), with ``x[-1] = x0``.

    Args:
        spikes: ``(L, *S)`` bool (or 0/1) spike train.
        x0: ``(*S)`` trace before the interval.
        decay: per-step factor ``exp(-dt / tau)``.
        nearest: nearest-spike (reset to 1) instead of all-to-all (add 1).

    Returns:
        ``(L, *S)`` float64.  Computed without a per-step loop: all-to-all as
        ``decay**t * (decay * x0 + cumsum_s decay**-s z[s])`` in blocks that keep ``decay**-s`` below
        2**40; nearest spike as ``decay**(t - last spike)``.  Elementwise along each trace, so a
        trace's values do not depend on the batch it shares.
    """
    length = spikes.shape[0]
    x0 = x0.to(_F64)
    if length == 0:
        return torch.zeros((0, *x0.shape), dtype=_F64, device=x0.device)
    extra = (1,) * (spikes.dim() - 1)
    if nearest:
        t = torch.arange(length, device=spikes.device).reshape(length, *extra)
        z = spikes.bool()
        idx = torch.where(z, t, torch.full_like(t, -1).expand_as(z))
        last = torch.cummax(idx, dim=0).values
        since = (t - last).to(_F64)  # steps since the last spike (if any)
        powers = torch.pow(torch.tensor(decay, dtype=_F64), since)
        from_x0 = torch.pow(torch.tensor(decay, dtype=_F64), (t + 1).to(_F64)) * x0
        return torch.where(last >= 0, powers, from_x0)
    out = torch.empty((length, *x0.shape), dtype=_F64, device=x0.device)
    block = _block_len(decay)
    x = x0
    for start in range(0, length, block):
        stop = min(length, start + block)
        grow, shrink = trace_powers(decay, stop - start, spikes.dim() - 1, x0.device)
        acc = torch.cumsum(spikes[start:stop].to(_F64) * grow, dim=0)
        vals = torch.mul(shrink, decay * x + acc, out=out[start:stop])
        x = vals[-1]
    return out


@functools.lru_cache(maxsize=64)
def trace_powers(decay: float, n: int, dims: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(decay**-s, decay**s)`` for ``s = 0..n-1``, shaped ``(n, 1, ..., 1)`` with ``dims`` ones
    (cached: every interval of a run has the same length; callers must not modify them)."""
    s = torch.arange(n, dtype=_F64, device=device).reshape(n, *(1,) * dims)
    base = torch.tensor(decay, dtype=_F64, device=device)
    return torch.pow(base, -s), torch.pow(base, s)


def trace_before(after: torch.Tensor, x0: torch.Tensor, decay: float) -> torch.Tensor:
    """Trace values just before each step's spikes: ``decay * x[t-1]`` (``x[-1] = x0``)."""
    prev = torch.cat([x0.to(_F64).unsqueeze(0), after[:-1]], dim=0)
    return prev * decay


def as_spikes(z: torch.Tensor) -> torch.Tensor:
    """Spikes as bool (0/1 or bool input)."""
    return z if z.dtype == torch.bool else z > 0


def rows_of(x: torch.Tensor) -> torch.Tensor:
    """``(L, B, n)`` as ``(L * B, n)`` rows."""
    return x.reshape(-1, x.shape[-1])


def weight_factors(w: torch.Tensor, w_min: float, w_max: float, mu: float):
    """``((1 - u)**mu, u**mu)`` with ``u = (w - w_min) / (w_max - w_min)`` clamped to [0, 1]."""
    u = ((w.to(_F64) - w_min) / (w_max - w_min)).clamp(0.0, 1.0)
    if mu == 1.0:
        return 1.0 - u, u
    return (1.0 - u) ** mu, u**mu


def check_pairing(pairing: str) -> bool:
    """True for nearest-spike pairing, False for all-to-all; ValueError otherwise."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    return pairing == "nearest"


def spikes_times(z: torch.Tensor, a) -> torch.Tensor:
    """Spikes times a gain (scalar or per entry): a spike's entry is the gain, which the engine
    rounds once and multiplies exactly -- the same bits as passing a constant gain as
    ``accumulate_outer``'s ``scale``, without the scaled path's pass over the quire."""
    return z.to(_F64) * a


def active_rows(z: torch.Tensor, *factors: torch.Tensor) -> torch.Tensor:
    """Rows of the flattened ``(L * B, n)`` terms with a spike in ``z`` and a non-zero entry in each
    other factor (``(L, B, k)``): the only rows whose contribution is not zero."""
    keep = z.reshape(-1, z.shape[-1]).any(-1)
    for f in factors:
        keep &= (f.reshape(-1, f.shape[-1]) != 0).any(-1)
    return keep.nonzero().squeeze(-1)


class TraceRule(abc.ABC):
    """The module shape of a trace-based local rule (Norse style: a thin module over pure functions).

    Keeps the rule's state (its traces; the first field is ``(B, N)``) between update intervals;
    ``interval(contributions, weight, z_pre (L, B, N), z_post (L, B, M), reward=None)`` advances it
    over one interval and hands the weight change to ``contributions`` (subclasses define ``init``
    and ``advance``).  Traces restart at rest when the batch changes.
    """

    def __init__(self, params, dt: float):
        if hasattr(params, "pairing"):
            check_pairing(params.pairing)
        self.params, self.dt = params, float(dt)
        self.state = None

    @abc.abstractmethod
    def init(self, batch: int, n_pre: int, n_post: int):
        """The state at rest of ``batch`` trials."""

    @abc.abstractmethod
    def advance(self, contributions, weight, z_pre, z_post, reward):
        """``(what the interval returns, new state)``."""

    def reset(self, batch: int, n_pre: int, n_post: int) -> None:
        self.state = self.init(batch, n_pre, n_post)

    def interval(self, contributions, weight, z_pre, z_post, reward=None):
        if self.state is None or self.state[0].shape[0] != z_pre.shape[1]:
            self.reset(z_pre.shape[1], z_pre.shape[2], z_post.shape[2])
        out, self.state = self.advance(contributions, weight, z_pre, z_post, reward)
        return out
