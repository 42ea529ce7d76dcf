"""Shuffling and batching of sample indices from keyed random streams.

The streams themselves (:func:`derive_seed`, :func:`sample_generator`: a fresh generator for each
draw, named by ``(seed, tag, epoch, sample index, ...)``) live in :mod:`neuro.numerics.streams`;
every random draw in :mod:`neuro.data` comes from one, so sample ``i`` of epoch ``e`` sees the same
random numbers whether it is drawn alone, in a batch of 8, or by another process.
"""

from __future__ import annotations

import torch

from neuro.numerics.streams import derive_seed, sample_generator

__all__ = [
    "derive_seed",
    "sample_generator",
    "epoch_permutation",
    "batch_indices",
]


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
