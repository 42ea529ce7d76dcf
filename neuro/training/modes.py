"""Training modes: their names, and which mode trains a graph.

A projection's rule names the mode that trains it (:attr:`neuro.rules.registry.Rule.mode`).
Loss-based rules (``bptt``, ``eprop``, ``ottt``) share the loss-based modes: any of them trains
every loss-based projection of a graph (``--mode``), so one model file runs BPTT, its
memory-bounded variants or the online rules.  Local rules run in mode ``local``; a graph with a
``[reversible]`` section trains in mode ``reversible`` only.
"""

from __future__ import annotations

__all__ = ["LOSS_MODES", "MODES", "check_mode", "default_mode"]

#: Loss-based modes, in the memory plan's order of preference (exact gradients first, then
#: recomputation, then the online approximations).
LOSS_MODES: tuple[str, ...] = ("bptt", "bptt_checkpoint", "reversible", "ottt", "eprop")
#: Every training mode.
MODES: tuple[str, ...] = (*LOSS_MODES, "local")


def _kinds(graph) -> set[str]:
    from neuro.rules import registry

    return {registry.get(p.rule).kind for p in graph.projections.values()} - {"fixed"}


def default_mode(graph) -> str:
    """The mode a graph trains in when none is asked for: ``reversible`` with a ``[reversible]``
    section, ``local`` for local rules, else the mode of the first loss-based projection's rule."""
    from neuro.rules import registry

    if graph.reversible is not None:
        return "reversible"
    kinds = _kinds(graph)
    if not kinds:
        raise ValueError(f"{graph.name}: no projection has a learning rule (every rule is \"none\"); "
                         "set a projection's rule to train it")
    if kinds == {"local"}:
        return "local"
    return next(registry.get(p.rule).mode for p in graph.projections.values()
                if registry.get(p.rule).kind == "loss")


def check_mode(graph, mode: str) -> str:
    """``mode`` if it can train ``graph``, else ValueError saying which modes can."""
    if mode not in MODES:
        raise ValueError(f"{graph.name}: no training mode {mode!r}; choose one of {', '.join(MODES)}")
    kinds = _kinds(graph)
    if "local" in kinds and "loss" in kinds:
        raise ValueError(f"{graph.name}: mixes local rules and loss-based rules; a run trains one kind")
    if graph.reversible is not None and mode != "reversible":
        raise ValueError(f"{graph.name} has a [reversible] section: it trains in mode reversible only")
    if mode == "reversible" and graph.reversible is None:
        raise ValueError(f"{graph.name}: mode reversible needs a [reversible] section in the model file")
    if mode == "local" and kinds != {"local"}:
        plain = ", ".join(m for m in LOSS_MODES if m != "reversible")
        raise ValueError(f"{graph.name}: mode local trains local rules (STDP family); this model has "
                         f"loss-based rules: use one of {plain}")
    if mode != "local" and "local" in kinds:
        raise ValueError(f"{graph.name}: local rules train in mode local, not {mode!r} (leave --mode out)")
    return mode
