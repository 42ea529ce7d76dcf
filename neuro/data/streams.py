"""Counter-based random streams keyed by (seed, tag, epoch, sample index, ...).

Every random draw in :mod:`neuro.data` comes from a generator made *for that draw*: the keys that
name it (a seed, a string tag such as ``"poisson"``, an epoch, a sample index) are hashed into a
64-bit seed, and a fresh :class:`torch.Generator` is seeded with it.  Nothing is advanced in an
order that depends on batching or on which worker draws first, so sample ``i`` of epoch ``e`` sees
the same random numbers whether it is drawn alone, in a batch of 8, or by another process.

Key derivation (stable across Python versions, platforms and runs)::

    h = BLAKE2b(digest_size=8, person=b"neuro.data.v1")
    for key in (seed, *keys):
        int key:  h.update(b"i" + key.to_bytes(16, "little", signed=True))
        str key:  h.update(b"s" + len(utf8).to_bytes(4, "little") + utf8)
    seed64 = int.from_bytes(h.digest(), "little")          # in [0, 2**64)

Integers must fit in a signed 128-bit word.  Type tags and length prefixes make the encoding
injective, so ``(1, 23)`` and ``(12, 3)`` or ``("ab",)`` and ``("a", "b")`` never collide by
construction (only by a 64-bit hash collision).  Python's built-in ``hash`` is not used: it is
salted per process for strings.
"""

from __future__ import annotations

import hashlib
import operator

import torch

__all__ = [
    "derive_seed",
    "sample_generator",
    "epoch_permutation",
    "batch_indices",
]

_PERSON = b"neuro.data.v1"
_INT_BYTES = 16

Key = int | str


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
    """Hash ``(seed, *keys)`` into a 64-bit unsigned integer (see module docstring).

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


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """A permutation of ``range(n)`` for shuffling in ``epoch``, keyed by ``(seed, epoch)``.

    Returns:
        (n,) int64 tensor on the CPU; the same for the same ``(n, seed, epoch)``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return torch.randperm(n, generator=sample_generator(seed, "shuffle", epoch))


def batch_indices(
    n: int,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[torch.Tensor]:
    """Split ``range(n)`` into batches of sample indices for one epoch.

    Args:
        n: number of samples.
        batch_size: samples per batch (the last batch may be shorter unless ``drop_last``).
        seed, epoch: keys of the shuffling permutation (:func:`epoch_permutation`).
        shuffle: if False, batches are ``0..n-1`` in order.
        drop_last: drop a final batch shorter than ``batch_size``.

    Returns:
        List of (b,) int64 tensors.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = epoch_permutation(n, seed, epoch) if shuffle else torch.arange(n)
    batches = list(torch.split(order, batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return [b.clone() for b in batches]
