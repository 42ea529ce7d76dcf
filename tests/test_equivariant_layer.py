"""Tests of neuro.algebra.GradeLinear: the grade-wise formula, rotor equivariance, currents."""

from __future__ import annotations

import pytest
import torch

from neuro.algebra import Algebra, GradeLinear

F64 = torch.float64


def make_layer(alg: Algebra, cin: int, cout: int, seed: int, **kwargs) -> GradeLinear:
    torch.manual_seed(seed)
    layer = GradeLinear(alg, cin, cout, **kwargs).double()
    with torch.no_grad():
        layer.weight.normal_()
        if layer.bias is not None:
            layer.bias.normal_()
    return layer


def features(alg: Algebra, *shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, alg.dim, generator=g, dtype=F64)


def act(alg: Algebra, R: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply rotor R (batch, dim) to every channel of x (batch, channels, dim)."""
    return alg.sandwich(R.unsqueeze(-2), x)


@pytest.mark.parametrize("sig", [(3, 0, 0), (3, 0, 1), (1, 3, 0)])
@pytest.mark.parametrize("bias", [False, True])
def test_grade_linear_commutes_with_rotors(sig: tuple[int, int, int], bias: bool) -> None:
    alg = Algebra(*sig)
    layer = make_layer(alg, 5, 3, seed=0, bias=bias)
    x = features(alg, 7, 5, seed=1)
    R = alg.random_rotor(torch.Generator().manual_seed(2), 7)
    with torch.no_grad():
        left = layer(act(alg, R, x))
        right = act(alg, R, layer(x))
    torch.testing.assert_close(left, right, rtol=0, atol=1e-12)


def test_equivariance_check_detects_a_grade_mixing_map() -> None:
    # Negative control: a linear map that mixes a vector blade into a bivector blade is not
    # equivariant, and the same comparison as above sees it.
    alg = Algebra(3, 0, 1)
    layer = make_layer(alg, 2, 2, seed=3)
    x = features(alg, 4, 2, seed=4)
    R = alg.random_rotor(torch.Generator().manual_seed(5), 4)

    def mixed(z: torch.Tensor) -> torch.Tensor:
        y = layer(z).clone()
        y[..., 5] = y[..., 5] + z[..., 1]
        return y

    with torch.no_grad():
        err = (mixed(act(alg, R, x)) - act(alg, R, mixed(x))).abs().max()
    assert err > 1e-3


def test_grade_linear_matches_the_defining_sum() -> None:
    alg = Algebra(3, 0, 1)
    layer = make_layer(alg, 4, 3, seed=6)
    x = features(alg, 2, 4, seed=7)
    expected = torch.zeros(2, 3, alg.dim, dtype=F64)
    for o in range(3):
        for i in range(4):
            for g, k in enumerate(layer.grades):
                expected[:, o] += layer.weight[o, i, g].detach() * alg.grade(x[:, i], k)
    torch.testing.assert_close(layer(x).detach(), expected, rtol=0, atol=1e-13)


def test_restricted_grades_zero_the_others() -> None:
    alg = Algebra(3)
    layer = make_layer(alg, 3, 2, seed=8, grades=[0, 2])
    assert layer.weight.shape == (2, 3, 2)
    assert layer.grades == (0, 2)
    x = features(alg, 5, 3, seed=9)
    y = layer(x).detach()
    assert alg.grade(y, [1, 3]).abs().max() == 0
    assert alg.grade(y, [0, 2]).abs().max() > 0
    # grade-1 and grade-3 input content does not reach the output at all
    y2 = layer(x + alg.grade(features(alg, 5, 3, seed=10), [1, 3])).detach()
    torch.testing.assert_close(y2, y, rtol=0, atol=1e-14)


def test_leading_axes_dtype_and_gradients() -> None:
    alg = Algebra(3)
    layer = GradeLinear(alg, 4, 6, bias=True)
    x = torch.randn(10, 2, 4, alg.dim)  # (time, batch, in, 2**n)
    y = layer(x)
    assert y.shape == (10, 2, 6, alg.dim) and y.dtype == torch.float32
    current = layer.scalar_current(y)
    assert current.shape == (10, 2, 6)
    torch.testing.assert_close(current, y[..., 0])
    current.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad[..., 0].abs().sum() > 0
    # only the grade-0 column influences the scalar current
    assert layer.weight.grad[..., 1:].abs().max() == 0
    assert layer.bias is not None and layer.bias.grad is not None


def test_scalar_current_is_rotor_invariant() -> None:
    alg = Algebra(3, 0, 1)
    layer = make_layer(alg, 3, 4, seed=11, bias=True)
    x = features(alg, 6, 3, seed=12)
    R = alg.random_rotor(torch.Generator().manual_seed(13), 6)
    with torch.no_grad():
        a = layer.scalar_current(layer(x))
        b = layer.scalar_current(layer(act(alg, R, x)))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_scalar_current_drives_a_norse_population() -> None:
    norse = pytest.importorskip("norse.torch")
    alg = Algebra(3)
    layer = GradeLinear(alg, 2, 5, bias=True)
    with torch.no_grad():
        layer.bias.fill_(50.0)  # strong constant drive: every neuron must spike
    cell = norse.LIFCell()
    state = None
    spikes = []
    x = torch.zeros(40, 1, 2, alg.dim)
    for t in range(x.shape[0]):
        z, state = cell(layer.scalar_current(layer(x[t])), state)
        spikes.append(z)
    total = torch.stack(spikes).sum(0)
    assert total.shape == (1, 5)
    assert bool((total > 0).all())


def test_errors_name_expected_and_got_shapes() -> None:
    alg = Algebra(3)
    layer = GradeLinear(alg, 4, 2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 8\).*got shape \(3, 4, 7\)"):
        layer(torch.zeros(3, 4, 7))
    with pytest.raises(ValueError, match=r"got shape \(3, 5, 8\)"):
        layer(torch.zeros(3, 5, 8))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 8\).*got shape \(3, 4, 8\)"):
        layer.scalar_current(torch.zeros(3, 4, 8))
    with pytest.raises(ValueError, match="grades"):
        GradeLinear(alg, 4, 2, grades=[0, 5])
    with pytest.raises(ValueError, match="bias"):
        GradeLinear(alg, 4, 2, grades=[1, 2], bias=True)
    with pytest.raises(TypeError, match="Algebra"):
        GradeLinear("Cl3", 4, 2)  # type: ignore[arg-type]
