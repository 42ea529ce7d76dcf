"""The one way into the engine: the contribution interface every learning rule receives.

A rule never writes a weight.  It hands weight changes (per unit learning rate; a loss-based rule
hands minus its gradient) to an object with these three methods -- the
:class:`~neuro.engine.UpdateEngine`, or a stand-in (a replicated worker's null sink, a recorder in a
test) -- and the engine sums them exactly and rounds once per step.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Contributions"]


@runtime_checkable
class Contributions(Protocol):
    """What a rule may do with a parameter ``param (M, *rest)`` (see :class:`~neuro.engine.UpdateEngine`).

    * ``accumulate(param, delta)``: add ``delta`` (``param``'s shape, or extra leading dims that are
      summed) exactly.
    * ``accumulate_outer(param, post (K, M), pre (K, *rest), scale=None)``: add ``sum_k scale *
      post[k, m] * pre[k, ...]`` exactly (the reduction of a gradient: errors x presynaptic
      activity over time x batch).
    * ``accumulate_events(param, post (K, M), pre (K, *rest))``: the same sum when one factor is 0/1
      events (spikes) that reach few rows or columns: the terms are added one by one where the
      events are, and the step visits only the entries they reached (same bits as the dense form).
    """

    def accumulate(self, param: torch.Tensor, delta: torch.Tensor) -> None: ...

    def accumulate_outer(self, param: torch.Tensor, post: torch.Tensor, pre: torch.Tensor,
                         scale: torch.Tensor | float | None = None) -> None: ...

    def accumulate_events(self, param: torch.Tensor, post: torch.Tensor, pre: torch.Tensor) -> None: ...
