"""The shared update engine: exact quire accumulation of weight changes, one rounding per step,
parameters kept in their declared grades and constraints (see :mod:`neuro.engine.engine`)."""

from neuro.engine.engine import UpdateEngine, flatten_state_dict, rotor_norm_bound, unflatten_state_dict
from neuro.engine.params import Bounds, ParamType, Sign

__all__ = [
    "UpdateEngine",
    "ParamType",
    "Bounds",
    "Sign",
    "rotor_norm_bound",
    "flatten_state_dict",
    "unflatten_state_dict",
]
