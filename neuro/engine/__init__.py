"""The shared update engine: exact quire accumulation of weight changes, one rounding per step,
parameters kept in their declared grades and constraints (see :mod:`neuro.engine.engine`).

Modules: :mod:`~neuro.engine.contributions` (the interface every rule receives),
:mod:`~neuro.engine.engine` (``UpdateEngine``: groups, contributions, distributed merge),
:mod:`~neuro.engine.slot` (one parameter: storage, type, constraints), :mod:`~neuro.engine.step`
(the step and its memory sizing), :mod:`~neuro.engine.state` (state dict), :mod:`~neuro.engine.params`
(parameter types).
"""

from neuro.engine.contributions import Contributions
from neuro.engine.engine import UpdateEngine
from neuro.engine.params import Bounds, ParamType, Sign
from neuro.engine.slot import rotor_norm_bound, snap_to_type
from neuro.engine.state import flatten_state_dict, unflatten_state_dict

__all__ = [
    "Contributions",
    "UpdateEngine",
    "ParamType",
    "Bounds",
    "Sign",
    "rotor_norm_bound",
    "snap_to_type",
    "flatten_state_dict",
    "unflatten_state_dict",
]
