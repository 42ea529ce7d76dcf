"""Tests of neuro.algebra.Algebra: against the kingdon package, algebraic identities, exp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kingdon import Algebra as KAlgebra

from neuro.algebra import Algebra

F64 = torch.float64
SIGNATURES = [(3, 0, 0), (1, 3, 0), (3, 0, 1), (2, 0, 0)]


# --------------------------------------------------------------------------- kingdon bridge
class KingdonBridge:
    """Maps our multivectors to kingdon's and back, with an explicit basis correspondence.

    kingdon's ``Algebra(p, q, r)`` orders its basis by square (its null vectors come *first*,
    named ``e0``), and keys blades by bit masks of its basis vectors. Our basis vector ``i`` is
    sent to the kingdon basis vector with the same square (stable order within each square
    class); a blade ``e_i1 ... e_ik`` (i1 < ... < ik) then becomes ``sign *`` the canonical
    kingdon blade, ``sign`` being the parity of sorting the mapped indices.
    """

    def __init__(self, alg: Algebra) -> None:
        self.alg = alg
        self.k = KAlgebra(alg.p, alg.q, alg.r)
        ksig = [int(v) for v in self.k.signature]
        assert sorted(ksig) == sorted(alg.signature)
        free = {sq: [i for i, v in enumerate(ksig) if v == sq] for sq in (1, -1, 0)}
        perm = [free[sq].pop(0) for sq in alg.signature]
        self.keys: list[int] = []
        self.signs: list[float] = []
        for blade in alg.blades:
            mapped = [perm[i] for i in blade]
            inversions = sum(
                1 for a in range(len(mapped)) for b in range(a + 1, len(mapped)) if mapped[a] > mapped[b]
            )
            self.keys.append(sum(1 << m for m in mapped))
            self.signs.append(-1.0 if inversions % 2 else 1.0)
        self.sign_arr = np.array(self.signs)[:, None]

    def to_k(self, x: torch.Tensor):
        """(N, dim) float64 tensor -> batched kingdon multivector."""
        values = x.detach().numpy().T * self.sign_arr
        return self.k.multivector(values=values, keys=tuple(self.keys))

    def from_k(self, mv, batch: int) -> torch.Tensor:
        got = dict(zip(mv.keys(), mv.values()))
        out = np.zeros((batch, self.alg.dim))
        for pos, (key, sign) in enumerate(zip(self.keys, self.signs)):
            if key in got:
                out[:, pos] = sign * np.broadcast_to(np.asarray(got[key], dtype=float), (batch,))
        return torch.from_numpy(out)


def rand_mv(alg: Algebra, *shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, alg.dim, generator=g, dtype=F64)


@pytest.fixture(scope="module", params=SIGNATURES, ids=lambda s: "Cl{}{}{}".format(*s))
def bridge(request) -> KingdonBridge:
    return KingdonBridge(Algebra(*request.param))


def test_kingdon_bridge_maps_a_nontrivial_order() -> None:
    # Cl(3,0,1): our null vector e4 is kingdon's e0, so the map is not the identity.
    b = KingdonBridge(Algebra(3, 0, 1))
    assert b.keys[Algebra(3, 0, 1).blades.index((3,))] == 1
    assert -1.0 in b.signs


def test_geometric_product_matches_kingdon(bridge: KingdonBridge) -> None:
    alg = bridge.alg
    a, b = rand_mv(alg, 32, seed=1), rand_mv(alg, 32, seed=2)
    ours = alg.gp(a, b)
    theirs = bridge.from_k(bridge.to_k(a) * bridge.to_k(b), 32)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_outer_and_inner_match_kingdon(bridge: KingdonBridge) -> None:
    alg = bridge.alg
    a, b = rand_mv(alg, 16, seed=3), rand_mv(alg, 16, seed=4)
    ka, kb = bridge.to_k(a), bridge.to_k(b)
    torch.testing.assert_close(alg.outer(a, b), bridge.from_k(ka ^ kb, 16), rtol=0, atol=1e-12)
    torch.testing.assert_close(alg.inner(a, b), bridge.from_k(ka.lc(kb), 16), rtol=0, atol=1e-12)


def test_reverse_involute_and_grades_match_kingdon(bridge: KingdonBridge) -> None:
    alg = bridge.alg
    x = rand_mv(alg, 8, seed=5)
    kx = bridge.to_k(x)
    torch.testing.assert_close(alg.reverse(x), bridge.from_k(kx.reverse(), 8), rtol=0, atol=1e-12)
    torch.testing.assert_close(alg.involute(x), bridge.from_k(kx.involute(), 8), rtol=0, atol=1e-12)
    for k in range(alg.n + 1):
        torch.testing.assert_close(alg.grade(x, k), bridge.from_k(kx.grade(k), 8), atol=1e-12, rtol=0)
    torch.testing.assert_close(alg.grade(x, [0, 2]), bridge.from_k(kx.grade(0, 2), 8), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- layout and basics
def test_blade_order_and_metadata() -> None:
    alg = Algebra(3)
    assert alg.dim == 8 and alg.n == 3
    assert alg.blades == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert alg.blade_names == ["1", "e1", "e2", "e3", "e12", "e13", "e23", "e123"]
    assert alg.grades.tolist() == [0, 1, 1, 1, 2, 2, 2, 3]
    assert alg.grades.dtype == torch.long
    assert Algebra(2, 1, 1).signature == (1, 1, -1, 0)


@pytest.mark.parametrize("sig", [(3, 0, 0), (1, 3, 0), (3, 0, 1), (2, 1, 1)])
def test_basis_vectors_square_to_signature(sig: tuple[int, int, int]) -> None:
    alg = Algebra(*sig)
    e = torch.eye(alg.n, dtype=F64)
    vectors = alg.from_grade(e, 1)
    squares = alg.gp(vectors, vectors)
    expected = torch.zeros(alg.n, alg.dim, dtype=F64)
    expected[:, 0] = torch.tensor(alg.signature, dtype=F64)
    torch.testing.assert_close(squares, expected, rtol=0, atol=0)


def test_bivector_blades_anticommute_and_compose() -> None:
    alg = Algebra(3)
    e1, e2, e12 = (torch.eye(8, dtype=F64)[i] for i in (1, 2, 4))
    torch.testing.assert_close(alg.gp(e1, e2), e12)
    torch.testing.assert_close(alg.gp(e2, e1), -e12)
    torch.testing.assert_close(alg.gp(e12, e12), -torch.eye(8, dtype=F64)[0])


def test_gp_broadcasts_and_keeps_dtype() -> None:
    alg = Algebra(3, 0, 1)
    a = rand_mv(alg, 2, 1, seed=6)
    b = rand_mv(alg, 3, seed=7)
    out = alg.gp(a, b)
    assert out.shape == (2, 3, alg.dim)
    torch.testing.assert_close(out[1, 2], alg.gp(a[1, 0], b[2]), rtol=0, atol=1e-14)
    out32 = alg.gp(a.float(), b.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out, rtol=1e-5, atol=1e-5)


def test_norms_and_scalar() -> None:
    alg = Algebra(3)
    v = alg.from_grade(torch.tensor([[3.0, 4.0, 12.0]], dtype=F64), 1)
    torch.testing.assert_close(alg.norm(v), torch.tensor([13.0], dtype=F64))
    x = rand_mv(alg, 5, seed=8)
    torch.testing.assert_close(alg.norm_sq(x), alg.scalar(alg.gp(x, alg.reverse(x))))
    sta = Algebra(1, 3)
    y = rand_mv(sta, 5, seed=9)
    torch.testing.assert_close(sta.norm_sq(y), sta.gp(y, sta.reverse(y))[..., 0])
    torch.testing.assert_close(sta.norm(y), sta.norm_sq(y).abs().sqrt())
    assert alg.scalar(x).shape == (5,)


def test_from_grade_and_components_roundtrip() -> None:
    alg = Algebra(4)
    vals = torch.randn(3, 6, dtype=F64)
    x = alg.from_grade(vals, 2)
    torch.testing.assert_close(alg.components(x, 2), vals)
    torch.testing.assert_close(alg.grade(x, 2), x)
    assert alg.grade(x, [0, 1, 3, 4]).abs().max() == 0


# --------------------------------------------------------------------------- errors
def test_wrong_last_dim_names_expected_and_got() -> None:
    alg = Algebra(3)
    bad = torch.zeros(4, 7)
    for fn in (lambda: alg.gp(bad, torch.zeros(8)), lambda: alg.reverse(bad), lambda: alg.exp(bad)):
        with pytest.raises(ValueError, match=r"\(\.\.\., 8\).*got shape \(4, 7\)"):
            fn()
    with pytest.raises(ValueError, match=r"got shape \(2, 4\)"):
        alg.from_grade(torch.zeros(2, 4), 2)
    with pytest.raises(ValueError, match="grades must be ints"):
        alg.grade(torch.zeros(8), 4)
    with pytest.raises(ValueError, match="non-negative"):
        Algebra(-1)
    with pytest.raises(TypeError, match="floating-point"):
        alg.gp(torch.zeros(8, dtype=torch.long), torch.zeros(8))


# --------------------------------------------------------------------------- identities
ALL_SIGS = [(3, 0, 0), (1, 3, 0), (3, 0, 1), (2, 0, 0), (4, 0, 0), (2, 2, 0), (4, 1, 0)]
EUCLIDEAN = [(2, 0, 0), (3, 0, 0), (4, 0, 0), (5, 0, 0)]
_ALGEBRAS: dict[tuple[int, int, int], Algebra] = {}


def algebra(sig: tuple[int, int, int]) -> Algebra:
    if sig not in _ALGEBRAS:
        _ALGEBRAS[sig] = Algebra(*sig)
    return _ALGEBRAS[sig]


seeds = st.integers(0, 2**31 - 1)
fast = settings(max_examples=15, deadline=None)


@fast
@given(sig=st.sampled_from(ALL_SIGS), seed=seeds)
def test_associativity(sig: tuple[int, int, int], seed: int) -> None:
    alg = algebra(sig)
    a, b, c = rand_mv(alg, 3, 4, seed=seed).unbind(0)
    torch.testing.assert_close(alg.gp(alg.gp(a, b), c), alg.gp(a, alg.gp(b, c)), rtol=0, atol=1e-12)


@fast
@given(sig=st.sampled_from(ALL_SIGS), seed=seeds)
def test_reverse_is_an_anti_automorphism(sig: tuple[int, int, int], seed: int) -> None:
    alg = algebra(sig)
    a, b = rand_mv(alg, 2, 4, seed=seed).unbind(0)
    torch.testing.assert_close(
        alg.reverse(alg.gp(a, b)), alg.gp(alg.reverse(b), alg.reverse(a)), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        alg.involute(alg.gp(a, b)), alg.gp(alg.involute(a), alg.involute(b)), rtol=0, atol=1e-12
    )


@fast
@given(sig=st.sampled_from(ALL_SIGS), seed=seeds)
def test_product_of_two_vectors_has_grades_0_and_2(sig: tuple[int, int, int], seed: int) -> None:
    alg = algebra(sig)
    u, v = alg.grade(rand_mv(alg, 2, 4, seed=seed), 1).unbind(0)
    uv = alg.gp(u, v)
    others = [k for k in range(alg.n + 1) if k not in (0, 2)]
    assert alg.grade(uv, others).abs().max() == 0
    # u v = u.v + u^v
    torch.testing.assert_close(uv, alg.inner(u, v) + alg.outer(u, v), rtol=0, atol=1e-12)


@fast
@given(sig=st.sampled_from(ALL_SIGS + [(3, 0, 1), (6, 0, 0)]), seed=seeds)
def test_rotors_from_exp_are_unit(sig: tuple[int, int, int], seed: int) -> None:
    alg = algebra(sig)
    R = alg.random_rotor(torch.Generator().manual_seed(seed), 6, scale=0.7)
    one = torch.zeros(alg.dim, dtype=F64)
    one[0] = 1
    torch.testing.assert_close(alg.gp(R, alg.reverse(R)), one.expand_as(R), rtol=0, atol=1e-12)
    torch.testing.assert_close(alg.gp(alg.reverse(R), R), one.expand_as(R), rtol=0, atol=1e-12)
    assert bool(alg.is_rotor(R).all())


@fast
@given(sig=st.sampled_from(EUCLIDEAN), seed=seeds)
def test_rotor_sandwich_of_vector_is_isometry(sig: tuple[int, int, int], seed: int) -> None:
    alg = algebra(sig)
    g = torch.Generator().manual_seed(seed)
    R = alg.random_rotor(g, 5)
    v = alg.from_grade(torch.randn(5, alg.n, generator=g, dtype=F64), 1)
    w = alg.sandwich(R, v)
    assert alg.grade(w, [k for k in range(alg.n + 1) if k != 1]).abs().max() < 1e-12
    torch.testing.assert_close(alg.norm(w), alg.norm(v), rtol=0, atol=1e-12)


def test_sandwich_rotates_e1_into_e2() -> None:
    alg = Algebra(3)
    B = torch.zeros(8, dtype=F64)
    B[4] = -math.pi / 4  # exp(-pi/4 e12) e1 exp(pi/4 e12) rotates e1 by +90 deg in the 12-plane
    R = alg.exp(B)
    e1 = torch.eye(8, dtype=F64)[1]
    torch.testing.assert_close(alg.sandwich(R, e1), torch.eye(8, dtype=F64)[2], rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- exp
def taylor_exp(alg: Algebra, B: torch.Tensor, terms: int = 70) -> torch.Tensor:
    """Reference: plain Taylor series sum_k B**k / k! (float64, no scaling)."""
    out = torch.zeros_like(B)
    out[..., 0] = 1
    term = out.clone()
    for k in range(1, terms):
        term = alg.gp(term, B) / k
        out = out + term
    return out


def random_bivector(alg: Algebra, n: int, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = alg.grade_indices(2).numel()
    return alg.from_grade(torch.randn(n, k, generator=g, dtype=F64) * scale, 2)


def test_exp_simple_bivectors_closed_forms() -> None:
    theta = torch.tensor([0.0, 1e-9, 0.3, 1.0, 2.5], dtype=F64)
    # elliptic: B^2 < 0
    e3 = Algebra(3)
    B = torch.zeros(5, 8, dtype=F64)
    B[:, 5] = theta  # e13
    expected = torch.zeros_like(B)
    expected[:, 0], expected[:, 5] = torch.cos(theta), torch.sin(theta)
    torch.testing.assert_close(e3.exp(B), expected, rtol=0, atol=1e-15)
    # hyperbolic: B^2 > 0 (e12 in Cl(1,1))
    h = Algebra(1, 1)
    Bh = torch.zeros(5, 4, dtype=F64)
    Bh[:, 3] = theta
    expected_h = torch.zeros_like(Bh)
    expected_h[:, 0], expected_h[:, 3] = torch.cosh(theta), torch.sinh(theta)
    torch.testing.assert_close(h.exp(Bh), expected_h, rtol=1e-15, atol=1e-15)
    # parabolic: B^2 = 0 (a translator e14 in Cl(3,0,1))
    pga = Algebra(3, 0, 1)
    Bp = torch.zeros(5, 16, dtype=F64)
    Bp[:, pga.blade_names.index("e14")] = theta * 10
    expected_p = Bp.clone()
    expected_p[:, 0] = 1
    torch.testing.assert_close(pga.exp(Bp), expected_p, rtol=0, atol=0)


@pytest.mark.parametrize("sig", [(2, 0, 0), (3, 0, 0), (1, 1, 0), (0, 3, 0), (1, 3, 0), (3, 0, 1), (2, 0, 1)])
def test_exp_matches_taylor_low_dim(sig: tuple[int, int, int]) -> None:
    alg = Algebra(*sig)
    for scale in (1e-6, 0.3, 1.0):
        B = random_bivector(alg, 20, scale, seed=11)
        torch.testing.assert_close(alg.exp(B), taylor_exp(alg, B), rtol=0, atol=1e-13)


@pytest.mark.parametrize("sig", [(4, 0, 0), (2, 2, 0), (4, 0, 1), (5, 0, 0), (4, 1, 0)])
def test_exp_non_simple_matches_taylor(sig: tuple[int, int, int]) -> None:
    alg = Algebra(*sig)
    B = random_bivector(alg, 30, 0.5, seed=12)
    nonsimple = alg.grade(alg.gp(B, B), 4).abs().amax(-1)
    assert bool((nonsimple > 1e-2).all())  # really non-simple
    torch.testing.assert_close(alg.exp(B), taylor_exp(alg, B), rtol=0, atol=1e-13)


def test_exp_cl4_degenerate_cases() -> None:
    alg = Algebra(4)
    i12, i34 = alg.blade_names.index("e12"), alg.blade_names.index("e34")
    B = torch.zeros(6, 16, dtype=F64)
    # isoclinic (equal angles: both simple parts have the same square) and near-isoclinic
    for row, (a, b) in enumerate([(0.7, 0.7), (0.7, 0.7 + 1e-9), (1e-5, 1e-5), (1.2, 0.0)]):
        B[row, i12], B[row, i34] = a, b
    B[4:] = random_bivector(alg, 2, 1.0, seed=13)
    R = alg.exp(B)
    torch.testing.assert_close(R, taylor_exp(alg, B), rtol=0, atol=1e-13)
    # exp(a e12 + b e34) = exp(a e12) exp(b e34) since the planes commute
    expected = torch.zeros(16, dtype=F64)
    a, b = 0.7, 0.7
    expected[0], expected[i12], expected[i34] = math.cos(a) * math.cos(b), math.sin(a), 0
    expected[i12] = math.sin(a) * math.cos(b)
    expected[i34] = math.cos(a) * math.sin(b)
    expected[-1] = math.sin(a) * math.sin(b)
    torch.testing.assert_close(R[0], expected, rtol=0, atol=1e-15)


def test_exp_pga_screw_with_tiny_rotation() -> None:
    alg = Algebra(3, 0, 1)
    B = torch.zeros(4, 16, dtype=F64)
    names = alg.blade_names
    for row, angle in enumerate([0.0, 1e-9, 1e-4, 1.3]):
        B[row, names.index("e12")] = angle
        B[row, names.index("e34")] = 2.0  # translation along e3 (e4 is the null vector)
        B[row, names.index("e14")] = -0.5
    torch.testing.assert_close(alg.exp(B), taylor_exp(alg, B), rtol=0, atol=1e-14)


def test_exp_six_dims_uses_scaled_taylor_for_non_simple() -> None:
    alg = Algebra(6)
    B = random_bivector(alg, 8, 0.4, seed=14)
    torch.testing.assert_close(alg.exp(B), taylor_exp(alg, B), rtol=0, atol=1e-13)
    simple = torch.zeros(2, alg.dim, dtype=F64)
    simple[:, alg.blade_names.index("e26")] = torch.tensor([0.4, 3.0], dtype=F64)
    R = alg.exp(simple)
    assert R[1, 0].item() == pytest.approx(math.cos(3.0), abs=1e-15)
    torch.testing.assert_close(R, taylor_exp(alg, simple), rtol=0, atol=1e-13)


def test_exp_float32_and_ignores_other_grades() -> None:
    alg = Algebra(3, 0, 1)
    B = random_bivector(alg, 10, 1.0, seed=15)
    R32 = alg.exp(B.float())
    assert R32.dtype == torch.float32
    torch.testing.assert_close(R32.double(), alg.exp(B), rtol=0, atol=2e-6)
    noise = rand_mv(alg, 10, seed=16)
    torch.testing.assert_close(alg.exp(B + alg.grade(noise, [0, 1, 3, 4])), alg.exp(B))


@pytest.mark.parametrize("sig", [(3, 0, 1), (4, 0, 0), (1, 3, 0)])
def test_exp_gradients_are_finite_and_correct(sig: tuple[int, int, int]) -> None:
    alg = Algebra(*sig)
    B = torch.cat([random_bivector(alg, 2, 0.8, seed=17), torch.zeros(1, alg.dim, dtype=F64)])
    B.requires_grad_(True)
    assert torch.autograd.gradcheck(alg.exp, (B,))


def test_random_rotor_is_reproducible() -> None:
    alg = Algebra(3)
    R1 = alg.random_rotor(torch.Generator().manual_seed(3), (2, 3))
    R2 = alg.random_rotor(torch.Generator().manual_seed(3), (2, 3))
    assert R1.shape == (2, 3, 8)
    assert torch.equal(R1, R2)
    assert not bool(alg.is_rotor(R1 + 0.01).any())
