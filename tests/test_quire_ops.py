"""The quire's public operations that the engine and the reduction modules build on: exact scaling
(``scaled`` / ``scale_``), loading (``from_float64``), sharing (``wrap``), kernel access
(``writable_limbs`` / ``count_additions``), per-term folds, signs; and the single sources of the
storage vocabulary and of the random streams."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import neuro.data
import neuro.engine.slot
import neuro.numerics.streams
from neuro.engine import ParamType, UpdateEngine
from neuro.numerics import BPOSIT32, NAMED_FORMATS, POSIT16, POSIT32, STORAGE_BYTES, Quire
from neuro.numerics.formats import FLOAT_STORAGE, STORAGE_FORMATS, resolve_storage

try:  # tests/ is on sys.path under pytest's default import mode
    from numerics_oracle import limbs_values
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.numerics_oracle import limbs_values

F64 = torch.float64


def _values(q: Quire) -> list[Fraction]:
    return limbs_values(q.limbs, q.offset)


def _random_quire(fmt, seed: int, n: int = 64) -> tuple[Quire, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp2(torch.randint(-80, 80, (n,), generator=g).double())
    x = torch.randn(n, generator=g, dtype=F64) * scale
    x[::7] = 0.0
    x[3] = -(2.0**95)  # a top limb of -1 (sign extension) next to full ones
    return Quire.from_float64(fmt, x), x


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 1000),
    sig=st.integers(-(2**30) + 1, 2**30 - 1),
    exp=st.integers(-200, 200),
)
def test_scaled_is_exact_and_leaves_the_source_alone(seed, sig, exp):
    q, x = _random_quire(BPOSIT32, seed)
    before = (q.offset, q.limbs.clone())
    s = q.scaled(sig, exp)
    assert q.offset == before[0] and torch.equal(q.limbs, before[1])  # the source kept its bits
    want = [Fraction(float(v)) * sig * Fraction(2) ** exp for v in x.tolist()]
    assert _values(s) == want
    assert not bool(s.nar.any())
    assert s.limbs.shape[-1] <= q.limbs.shape[-1] + 2  # at most one limb per integer factor
    inplace = Quire.from_float64(BPOSIT32, x).scale_(sig, exp)
    assert _values(inplace) == want


@pytest.mark.parametrize("sig,exp", [(1, 0), (1, 64), (-1, -32), (-1, 0), (0, 5), (2**29, 3)])
def test_scaled_by_powers_of_two_and_zero_never_share_limbs(sig, exp):
    """Scales with no integer factor (a power of two whose shift is whole limbs) must still copy."""
    q, x = _random_quire(BPOSIT32, 1)  # a range that holds 2**95 * 2**64
    s = q.scaled(sig, exp)
    want = [Fraction(float(v)) * sig * Fraction(2) ** exp for v in x.tolist()]
    assert _values(s) == want
    if s.limbs.numel():
        s.limbs.add_(1)  # writing through the result ...
    assert torch.equal(q.to_float(), x)  # ... does not reach the source


def test_scaled_keeps_nar_and_turns_overflow_into_nar():
    q = Quire.from_float64(POSIT16, torch.tensor([1.0, float("nan"), 2.0**40], dtype=F64))
    s = q.scaled(3, 0)
    assert s.nar.tolist() == [False, True, False] and s.to_float()[2] == 3 * 2.0**40
    big = q.scaled(1, POSIT16.quire_top_bit - 40)  # 2**40 * 2**(top - 40): beyond the quire's range
    assert big.nar.tolist() == [False, True, True]
    assert q.scaled(0, 7).nar.tolist() == [False, True, False]
    with pytest.raises(ValueError, match="2\\*\\*30"):
        q.scaled(1 << 30, 0)


def test_sign_and_zeros_like():
    q = Quire.from_float64(POSIT32, torch.tensor([-3.0, 0.0, 2.0**-300, float("inf")], dtype=F64))
    assert q.sign().tolist() == [-1, 0, 1, 0]
    z = q.zeros_like()
    assert z.shape == q.shape and z.fmt == q.fmt and z.sign().tolist() == [0, 0, 0, 0]


def test_wrap_shares_normalised_limbs():
    q, x = _random_quire(BPOSIT32, 2)
    rows = q.limbs[10:20]
    view = Quire.wrap(BPOSIT32, rows, q.offset)
    assert torch.equal(view.to_float(), x[10:20])
    assert view.limbs.data_ptr() == rows.data_ptr()  # no copy, no carry pass


def test_writable_limbs_and_count_additions_as_a_kernel_would_use_them():
    q = Quire(POSIT16, (3, 2))
    limbs = q.writable_limbs(-1, 2)  # window [-1, 2): limb 1 of an accumulator is its limb 0 + ... 2**0
    assert q.offset == -1 and limbs.shape == (3, 2, 3) and limbs.is_contiguous()
    for _ in range(5):
        limbs.view(-1, 3)[:, 1] += (1 << 32) - 1  # five unnormalised additions of 2**32 - 1 each
    q.count_additions(5)
    assert q.to_float().tolist() == [[5.0 * ((1 << 32) - 1)] * 2] * 3


def test_fold_at_adds_each_term_at_its_place_and_mark_nar():
    q = Quire(POSIT16, (2, 3))
    value = torch.tensor([3, -5, 7, 1], dtype=torch.int64)
    exponent = torch.tensor([-40, 0, 33, 100], dtype=torch.int64)
    place = torch.tensor([0, 0, 4, 5], dtype=torch.int64)
    q.fold_at(value, exponent, place)
    q.count_additions(2)  # place 0 received two terms
    want = [Fraction(3, 2**40) - 5, 0, 0, 0, Fraction(7 * 2**33), Fraction(2**100)]
    assert _values(q) == want
    q.mark_nar(torch.tensor([[False, True, False], [False, False, False]]))
    assert q.nar_at(torch.tensor([1, 0])).tolist() == [True, False]


def test_engine_reserves_windows_and_reads_the_accumulated_sum():
    w = torch.zeros(4, 3)
    eng = UpdateEngine([w], format=BPOSIT32, lr=0.5, type=ParamType(storage="float32"))
    eng.reserve_window(w, (-5, 3))
    assert eng.quire_bytes() == 4 * 3 * (8 * 8 + 1)
    d = torch.full((4, 3), 0.75)
    eng.accumulate(w, d)
    eng.accumulate(w, d)
    assert torch.equal(eng.accumulated(w), torch.full((4, 3), 1.5, dtype=F64))
    assert eng.quire_bytes() == 4 * 3 * (8 * 8 + 1)  # the contributions fit the reserved window
    eng.step()
    assert torch.equal(w, torch.full((4, 3), 0.75))
    with pytest.raises(ValueError, match="not a parameter"):
        eng.reserve_window(torch.zeros(2), (0, 1))


def test_storage_vocabulary_is_defined_once():
    assert STORAGE_FORMATS == ("float32", "float64", "posit8", "posit16", "posit32", "bposit16", "bposit32")
    assert set(STORAGE_BYTES) == set(STORAGE_FORMATS)
    for name in STORAGE_FORMATS:
        fmt = resolve_storage(name)
        bits = fmt.nbits if name in NAMED_FORMATS else FLOAT_STORAGE[name].itemsize * 8
        assert STORAGE_BYTES[name] * 8 == bits


def test_one_implementation_of_the_random_streams():
    """The data layer and the engine draw from neuro.numerics.streams itself, not from copies."""
    streams = neuro.numerics.streams
    assert neuro.data.derive_seed is streams.derive_seed
    assert neuro.data.sample_generator is streams.sample_generator
    assert neuro.engine.slot.counter_uniform is streams.counter_uniform
    assert neuro.engine.slot.stream_key is streams.stream_key
    # the numbers of the engine's stochastic-rounding stream before it moved here
    assert streams.stream_key(1, 2, 3) == 0x52A5B0F9D8A1A00B
    u = streams.counter_uniform(streams.stream_key(7, 0, 0), (3,))
    assert u.tolist() == [0.6607882689779647, 0.6107234809052197, 0.08051904108224939]
