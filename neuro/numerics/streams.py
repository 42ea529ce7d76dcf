"""Counter-based random streams: numbers named by keys, never by the order they are drawn in.

A draw is named by integers (and, for data, string tags): a seed, an epoch, a sample index, a
step, a parameter index.  Nothing is advanced in an order that depends on batching or on which
worker draws first, so the same keys give the same numbers alone, in a batch, or on another
process.  Two forms, each with its own key derivation (the recorded weight digests depend on both,
so neither may change):

* :func:`sample_generator` -- a fresh :class:`torch.Generator` seeded with :func:`derive_seed`, for
  the data layer's draws (Poisson inputs, shuffles, generated data sets) through torch's samplers::

      h = BLAKE2b(digest_size=8, person=b"neuro.data.v1")
      for key in (seed, *keys):
          int key:  h.update(b"i" + key.to_bytes(16, "little", signed=True))
          str key:  h.update(b"s" + len(utf8).to_bytes(4, "little") + utf8)
      seed64 = int.from_bytes(h.digest(), "little")          # in [0, 2**64)

  Integers must fit in a signed 128-bit word.  Type tags and length prefixes make the encoding
  injective, so ``(1, 23)`` and ``(12, 3)`` or ``("ab",)`` and ``("a", "b")`` never collide by
  construction (only by a 64-bit hash collision).  Python's built-in ``hash`` is not used: it is
  salted per process for strings.

* :func:`counter_uniform` -- uniform float64 numbers computed element by element from a 64-bit
  key (:func:`stream_key`, SplitMix64 over integers) and the element's index, for the engine's
  stochastic rounding: any subset of elements can be drawn without drawing the rest.
"""

from __future__ import annotations

import hashlib
import operator

import torch

__all__ = ["Key", "derive_seed", "sample_generator", "stream_key", "counter_uniform"]

_PERSON = b"neuro.data.v1"
_INT_BYTES = 16
_U64 = (1 << 64) - 1

Key = int | str


# ----------------------------------------------------------------------------- keyed generators
def _key_bytes(key: object) -> bytes:
    if isinstance(key, str):
        raw = key.encode("utf-8")
        return b"s" + len(raw).to_bytes(4, "little") + raw
    if isinstance(key, float):
        raise TypeError(f"stream keys must be integers or strings, got float {key!r}")
    try:
        value = operator.index(key)
    except TypeError:
        raise TypeError(
            f"stream keys must be integers or strings, got {type(key).__name__}"
        ) from None
    try:
        return b"i" + value.to_bytes(_INT_BYTES, "little", signed=True)
    except OverflowError:
        raise ValueError(f"integer stream key {value} does not fit in 128 bits") from None


def derive_seed(seed: int, *keys: Key) -> int:
    """Hash ``(seed, *keys)`` into a 64-bit unsigned integer (see the module docstring).

    Args:
        seed: the user's seed (any integer that fits in 128 bits, negative allowed).
        *keys: further integers (epoch, sample index, class, ...) or strings (tags that keep
            different uses of the same seed apart).

    Returns:
        An integer in ``[0, 2**64)``; the same keys give the same integer everywhere.
    """
    h = hashlib.blake2b(digest_size=8, person=_PERSON)
    for key in (seed, *keys):
        h.update(_key_bytes(key))
    return int.from_bytes(h.digest(), "little")


def sample_generator(seed: int, *keys: Key, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh :class:`torch.Generator` seeded with :func:`derive_seed` ``(seed, *keys)``.

    Typical keys: ``sample_generator(seed, "poisson", epoch, sample_index)``.  Use CPU generators
    (the default) for results that must agree bit for bit across machines: CUDA generators use a
    different algorithm (Philox) than CPU ones (MT19937).
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


# ----------------------------------------------------------------------------- counter uniforms
def _mix64(z: int) -> int:
    """SplitMix64 finaliser on a Python int (mod 2**64)."""
    z &= _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return z ^ (z >> 31)


def stream_key(*parts: int) -> int:
    """A 64-bit key from integers (e.g. seed, step, parameter index), order-sensitive."""
    key = 0x6A09E667F3BCC909
    for p in parts:
        key = _mix64(key ^ _mix64(int(p) & _U64))
    return key


def _to_i64(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def counter_uniform(
    key: int,
    shape: tuple[int, ...] | torch.Size,
    device=None,
    start: int = 0,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Counter-based uniform numbers in [0, 1): element ``i`` (row-major) is ``f(key, start + i)``;
    with ``index`` (long, of ``shape``), element ``j`` is ``f(key, start + index[j])`` -- the numbers
    of scattered elements, equal to those of the whole tensor at the same places.

    ``f`` is SplitMix64 of ``key + (i + 1) * golden``: the same (key, shape) gives the same numbers on
    any machine and in any order of calls; float64 with 53 random bits.
    """
    n = 1
    for s in shape:
        n *= int(s)
    gamma = _to_i64(0x9E3779B97F4A7C15)
    if index is not None:
        i = index.to(device=device, dtype=torch.int64).reshape(-1) + (start + 1)
    else:
        i = torch.arange(start + 1, start + n + 1, dtype=torch.int64, device=device)
    z = i * gamma + _to_i64(key)  # wraps mod 2**64
    z = (z ^ _srl(z, 30)) * _to_i64(0xBF58476D1CE4E5B9)
    z = (z ^ _srl(z, 27)) * _to_i64(0x94D049BB133111EB)
    z = z ^ _srl(z, 31)
    return (_srl(z, 11).to(torch.float64) * 2.0**-53).reshape(tuple(shape))
