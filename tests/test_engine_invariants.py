"""Type invariants after many random engine steps (hypothesis), vectorised over many parameters.

Default run: 4 examples x 64 parameters x 40 steps = 10,240 parameter-steps per parameter kind
(rotor, grade-restricted multivector, bounded scalar, excitatory scalar). The slow variant runs
10 examples x 100 x 100.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuro.algebra import Algebra
from neuro.engine import Bounds, ParamType, Sign, UpdateEngine, rotor_norm_bound
from neuro.numerics import POSIT8, POSIT16

STORAGES = {"posit16": POSIT16, "posit8": POSIT8, "float32": "float32"}


def _representable(x: torch.Tensor, storage) -> bool:
    x = x.detach().double()
    if storage == "float32":
        return bool(torch.equal(x.float().double(), x))
    return bool(torch.equal(storage.quantize(x), x))


def _run(data, params: int, steps: int) -> None:
    n = data.draw(st.sampled_from([2, 3]), label="n")
    alg = Algebra(n)
    storage = STORAGES[data.draw(st.sampled_from(sorted(STORAGES)), label="storage")]
    rounding = data.draw(st.sampled_from(["nearest", "stochastic"]), label="rounding")
    lr = data.draw(st.floats(1e-3, 2.0), label="lr")
    scale = data.draw(st.floats(1e-3, 10.0), label="scale")
    grades = data.draw(st.lists(st.integers(0, n), min_size=1, max_size=n + 1, unique=True), label="grades")
    # Bounds on a grid of 1/4 so that every storage format (posit8 included) holds both ends.
    lo = data.draw(st.integers(-8, 4), label="lo4") / 4
    hi = lo + data.draw(st.integers(0, 12), label="width4") / 4
    seed = data.draw(st.integers(0, 2**31), label="seed")
    g = torch.Generator().manual_seed(seed)

    rot = torch.zeros(params, alg.dim, dtype=torch.float64)
    rot[:, 0] = 1.0
    mv = torch.randn(params, alg.dim, generator=g)
    bnd = torch.rand(params, generator=g) * (hi - lo) + lo
    exc = torch.rand(params, generator=g)
    eng = UpdateEngine(
        [
            {"params": [rot], "type": ParamType(alg, constraint="rotor", storage=storage)},
            {"params": [mv], "type": ParamType(alg, grades=grades, storage=storage)},
            {"params": [bnd], "type": ParamType(constraint=Bounds(lo, hi), storage=storage)},
            {"params": [exc], "type": ParamType(constraint=Sign("excitatory"), storage=storage)},
        ],
        format=POSIT16, lr=lr, rounding=rounding, seed=seed,
    )
    off = ~alg.grade_mask(grades)
    odd = ~alg.grade_mask(list(range(0, n + 1, 2)))
    bound = rotor_norm_bound(alg, storage, rounding)
    one = torch.zeros(alg.dim, dtype=torch.float64)
    one[0] = 1.0
    worst = 0.0
    for _ in range(steps):
        eng.accumulate(rot, torch.randn(2, params, alg.dim, generator=g, dtype=torch.float64) * scale)
        eng.accumulate(mv, torch.randn(params, alg.dim, generator=g) * scale)
        eng.accumulate(bnd, torch.randn(params, generator=g) * scale)
        eng.accumulate(exc, torch.randn(params, generator=g) * scale)
        eng.step()
        assert (mv[:, off] == 0).all()
        assert (rot[:, odd] == 0).all()
        err = (alg.gp(rot, alg.reverse(rot)) - one).abs().max().item()
        worst = max(worst, err)
        assert err <= bound, (err, bound)
        assert (bnd >= lo).all() and (bnd <= hi).all()
        assert (exc >= 0).all()
    for p in (rot, mv, bnd, exc):
        assert _representable(p, storage)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_invariants_after_random_steps(data):
    _run(data, params=64, steps=40)


@pytest.mark.slow
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_invariants_after_random_steps_long(data):
    _run(data, params=100, steps=100)


def test_rotor_bound_values():
    """The stated bounds: Cl(3) posit16 ~4.9e-4, float32 ~2.4e-7 (nearest rounding)."""
    alg = Algebra(3)
    assert rotor_norm_bound(alg, POSIT16) == pytest.approx(2 * 2**-12 + 2**-24, rel=1e-6)
    assert rotor_norm_bound(alg, "float32") == pytest.approx(2 * 2**-24 + 2**-48, rel=1e-3)
