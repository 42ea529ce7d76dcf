"""ParamType: defaults, validation, projection, JSON round trip."""

from __future__ import annotations

import json

import pytest
import torch

from neuro.algebra import Algebra
from neuro.engine.params import Bounds, ParamType, Sign
from neuro.numerics import BPOSIT16, POSIT16
from neuro.numerics.formats import storage_from_json, storage_to_json


def test_defaults_and_rotor_grades():
    t = ParamType()
    assert t.grades == (0,) and t.dim == 1 and not t.is_multivector and t.storage is None
    r = ParamType(Algebra(4), constraint="rotor")
    assert r.grades == (0, 2, 4)
    assert ParamType(Algebra(3), grades=[2, 0, 2]).grades == (0, 2)


def test_projection_zeroes_exactly_the_other_grades():
    alg = Algebra(3)
    t = ParamType(alg, grades=(1,))
    x = torch.randn(5, 8)
    y = t.project(x)
    mask = alg.grade_mask(1)
    assert torch.equal(y[:, mask], x[:, mask]) and (y[:, ~mask] == 0).all()
    assert ParamType(alg, grades=range(4)).project(x) is x


@pytest.mark.parametrize("bad", [
    dict(algebra=None, grades=(1,)),
    dict(algebra=Algebra(3), constraint="rotor", grades=(0, 1)),
    dict(algebra=Algebra(2), constraint="rotor", grades=(2,)),
    dict(constraint="clamp"),
    dict(storage="float16"),
])
def test_invalid_types_are_refused(bad):
    with pytest.raises(ValueError):
        ParamType(**bad)


def test_constraint_values_are_checked():
    with pytest.raises(ValueError, match="lo <= hi"):
        Bounds(1.0, 0.0)
    with pytest.raises(ValueError, match="excitatory"):
        Sign("positive")


@pytest.mark.parametrize("t", [
    ParamType(),
    ParamType(Algebra(3, 0, 1), grades=(1, 2), storage="float32"),
    ParamType(Algebra(3), constraint="rotor", storage=BPOSIT16),
    ParamType(constraint=Bounds(0.0, 1.0), storage=POSIT16),
    ParamType(constraint=Sign("inhibitory"), storage="posit8"),
])
def test_json_round_trip(t):
    again = ParamType.from_json(json.loads(json.dumps(t.to_json())))
    assert again == t and hash(again) == hash(t)
    assert storage_from_json(storage_to_json(t.storage)) == t.storage
