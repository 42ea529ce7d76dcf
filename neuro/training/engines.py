"""The one engine builder: an :class:`~neuro.engine.UpdateEngine` over the weights a training mode
trains, with each projection's storage format, bounds and sign.

Loss-based modes use Adam at the model's learning rate (scheduled by the loop); local rules use
``lr = 1`` and no moments (the rule's amplitudes carry the scale).  The quire format of a
projection (:func:`accumulation_format`) is the format every contribution is rounded to and the
format of the Adam moments; storage (what the weights are rounded to once per step) is the
projection's own format.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from neuro.engine import UpdateEngine
from neuro.engine.params import ParamType
from neuro.numerics import BPOSIT32, POSIT32, PositFormat
from neuro.sim.network import param_type

__all__ = ["QUIRE_WINDOW", "accumulation_format", "build_engine", "preallocate_quires"]

#: Quire window (absolute limb indices [lo, hi), 32 bits per limb) allocated up front for a
#: 32-bit quire format (bposit32 / posit32): measured on Yin-Yang training, contributions of
#: surrogate-gradient, e-prop and OTTT updates occupy limbs -5..2 (bits 2**-160 .. 2**96, headroom
#: for carries included).  A contribution outside the window widens it (never truncates).
QUIRE_WINDOW = (-5, 3)

# 16- and 8-bit storage formats accumulate in bposit32 (float32-like precision over a huge range):
# Adam's second moments (~1e-10) underflow a posit8 (minpos 2**-24) and error signals rounded to 3
# fraction bits (posit8) or posit16 cost accuracy for nothing, since the one rounding to storage
# happens at the end anyway.  Measured on digits_bptt: posit16 storage with a posit16 quire
# 98.06 %, with a bposit32 quire 98.61 % (= float32).
_ACCUMULATION = {
    "float32": BPOSIT32,  # ~float32 precision over a huge range; products stay on the fast path
    "float64": POSIT32,
    "posit8": BPOSIT32,
    "posit16": BPOSIT32,
    "posit32": POSIT32,
    "bposit16": BPOSIT32,
    "bposit32": BPOSIT32,
}


def accumulation_format(storage: str) -> PositFormat:
    """The quire format used to accumulate updates of weights stored as ``storage``."""
    return _ACCUMULATION[storage]


def build_engine(graph, weights: Mapping[str, torch.Tensor], names: list[str], *, seed: int,
                 local: bool = False, rounding: str | None = None, constraint=None,
                 storage: str | None = None, merge: bool = True) -> UpdateEngine:
    """One parameter group per trained weight.

    Args:
        graph: the model graph (formats, bounds, signs, learning rate).
        weights: name -> tensor, the tensors the engine updates in place.
        names: the trained weights, in order.
        seed: the stochastic-rounding stream's seed.
        local: local-rule engine (lr 1, no Adam) instead of a loss-based one.
        rounding: ``"nearest"`` / ``"stochastic"``; default: stochastic for posit8 storage in
            loss-based modes, else nearest.
        constraint: a constraint for every weight (e.g. the reversible grid's bounds) instead of
            each projection's bounds / sign.
        storage: the storage format of weights that are not projections of the graph (reversible
            block weights).
        merge: merge the workers' contributions at each step (False: a replicated run).
    """
    if not names:
        raise ValueError(f"{graph.name}: no projection is trained by this mode; nothing to train "
                         "(set a projection's rule)")
    groups = []
    for name in names:
        proj = graph.projections.get(name)
        fmt = proj.format if proj is not None else storage
        ptype = param_type(proj) if proj is not None and constraint is None else ParamType(
            constraint=constraint, storage=fmt)
        groups.append({
            "params": [weights[name]],
            "names": [name],
            "format": accumulation_format(fmt),
            "lr": 1.0 if local else graph.training.learning_rate,
            "adam": not local,
            "rounding": rounding or ("stochastic" if fmt == "posit8" and not local else "nearest"),
            "type": ptype,
        })
    return UpdateEngine(groups, seed=seed, merge=merge)


def preallocate_quires(engine: UpdateEngine, window: tuple[int, int] = QUIRE_WINDOW) -> None:
    """Allocate every parameter's quire limbs ``[lo, hi)`` now, as :mod:`neuro.training.plan` assumes."""
    for p in engine.parameters():
        engine.reserve_window(p, window)
