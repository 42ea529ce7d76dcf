"""scikit-learn's handwritten digits: 1797 8x8 images shipped inside the scikit-learn wheel.

Pixels (integers 0..16 in the original) are scaled to [0, 1] and flattened row-major to 64
features.  The train/test split is stratified and deterministic: for each class, a keyed
permutation (:mod:`neuro.data.streams`, keys ``(seed, "digits", "split", class)``) picks that
class's test samples; each class contributes ``n_test * class_count / N`` test samples rounded
by largest remainder, so the test set's class proportions match the whole set's to within one
sample.  Both splits keep the original order of the samples.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from .streams import sample_generator

__all__ = ["N_DIGITS", "load_digits_arrays", "stratified_split"]

N_DIGITS = 1797


@lru_cache(maxsize=1)
def _raw() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # local import: keep `import neuro.data` light

    bunch = load_digits()
    images = torch.as_tensor(bunch.data, dtype=torch.float64) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images, labels


def load_digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits: images (1797, 64) float64 in [0, 1], labels (1797,) int64 in 0..9."""
    images, labels = _raw()
    return images.clone(), labels.clone()


def stratified_split(
    labels: torch.Tensor, n_test: int, seed: int, tag: str = "digits"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic stratified split of sample positions into train and test.

    Args:
        labels: (N,) int64 class labels.
        n_test: number of test samples (0 <= n_test <= N).
        seed: stream seed.
        tag: string key that separates the streams of different data sets.

    Returns:
        train indices, test indices: sorted int64 tensors that partition ``range(N)``.
    """
    n = int(labels.numel())
    if not 0 <= n_test <= n:
        raise ValueError(f"n_test must lie in [0, {n}], got {n_test}")
    classes = torch.unique(labels).tolist()
    members = {c: torch.nonzero(labels == c).flatten() for c in classes}
    quota = {c: n_test * len(members[c]) / n for c in classes}
    take = {c: math.floor(q) for c, q in quota.items()}
    leftover = n_test - sum(take.values())
    for c in sorted(classes, key=lambda c: (-(quota[c] - take[c]), c))[:leftover]:
        take[c] += 1
    test_parts = []
    for c in classes:
        perm = torch.randperm(len(members[c]), generator=sample_generator(seed, tag, "split", c))
        test_parts.append(members[c][perm[: take[c]]])
    test_mask = torch.zeros(n, dtype=torch.bool)
    if test_parts:
        test_mask[torch.cat(test_parts)] = True
    return torch.nonzero(~test_mask).flatten(), torch.nonzero(test_mask).flatten()
