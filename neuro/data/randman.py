"""Randman: random smooth manifolds turned into spike-time patterns (after Zenke & Vogels 2021).

Each class ``c`` owns a smooth random map ``f_c: [0, 1]^D -> R^U`` (D = ``dim_manifold``,
U = ``nb_units``).  Component ``u`` is a product over the D coordinates of smooth random 1-D
functions, each a random Fourier series with decaying amplitudes::

    g(x) = sum_{k=1..K} a_k * k**(-alpha) * sin(2 pi (nu_k x + phi_k))
    a_k ~ U(-1, 1),  nu_k ~ U(k - 1, k),  phi_k ~ U(0, 1)

so larger ``alpha`` gives smoother manifolds.  The series is cut at ``K = min(ceil(prec **
(-1 / alpha)), max_components)``, where the amplitude falls below ``prec``.

A sample of class c is ``f_c(x)`` at a uniformly random point x of the unit cube; every
component is rescaled to [0, 1] by its minimum and maximum over all samples of that class.  The
value ``t_u`` in [0, 1] is the spike time of input unit u as a fraction of the window: one spike
per unit per sample, in step ``min(floor(t_u * nb_steps), nb_steps - 1)``.

Random numbers come from keyed streams (:mod:`neuro.data.streams`): the manifold of class c from
``(seed, "randman", "manifold", c)``, its sample points from ``(seed, "randman", "points", c)``,
the order of a split from ``(seed, "randman", "order", split)``.  Classes are exactly balanced.
Results are bit-reproducible for the same options on the same platform (float64 ``sin`` and
``pow`` of different math libraries may differ in the last bit).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .streams import sample_generator

__all__ = ["RandmanManifold", "generate_randman", "split_counts"]

_CHUNK = 64  # samples per evaluation chunk (bounds memory at _CHUNK * U * D * K float64s)


class RandmanManifold:
    """One random smooth map from the unit cube [0, 1]^D into R^U.

    Args:
        nb_units: embedding dimension U (input units).
        dim_manifold: manifold dimension D.
        alpha: smoothness; Fourier amplitude of component k decays like ``k**(-alpha)``.
        generator: source of the random coefficients.
        prec: amplitude at which the series is cut.
        max_components: hard cap on the number of Fourier components K.
    """

    def __init__(
        self,
        nb_units: int,
        dim_manifold: int,
        alpha: float,
        generator: torch.Generator,
        *,
        prec: float = 1e-3,
        max_components: int = 1000,
    ) -> None:
        if nb_units < 1 or dim_manifold < 1:
            raise ValueError("nb_units and dim_manifold must be >= 1")
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        if not 0 < prec < 1:
            raise ValueError(f"prec must lie in (0, 1), got {prec!r}")
        self.nb_units = int(nb_units)
        self.dim_manifold = int(dim_manifold)
        self.alpha = float(alpha)
        self.n_components = int(min(math.ceil(prec ** (-1.0 / alpha)), max_components))
        shape = (self.nb_units, self.dim_manifold, self.n_components)
        k = torch.arange(1, self.n_components + 1, dtype=torch.float64)
        draws = torch.rand((3, *shape), generator=generator, dtype=torch.float64)
        self.amplitude = (2.0 * draws[0] - 1.0) * k.pow(-self.alpha)  # (U, D, K)
        self.frequency = (k - 1.0) + draws[1]  # (U, D, K), cycles per unit length
        self.phase = draws[2]  # (U, D, K), in cycles

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """Evaluate the map.

        Args:
            points: (S, D) float coordinates in [0, 1].

        Returns:
            (S, U) float64 values.
        """
        x = torch.as_tensor(points, dtype=torch.float64).numpy()
        if x.ndim != 2 or x.shape[1] != self.dim_manifold:
            raise ValueError(f"points must have shape (S, {self.dim_manifold})")
        # NumPy, single-threaded: these are many mid-sized elementwise ops, where torch's
        # intra-op threads cost more than they give on a loaded machine.
        freq, phase, amp = (t.numpy() for t in (self.frequency, self.phase, self.amplitude))
        out = np.empty((x.shape[0], self.nb_units), dtype=np.float64)
        for start in range(0, x.shape[0], _CHUNK):
            xc = x[start : start + _CHUNK, None, :, None]  # (s, 1, D, 1)
            terms = freq * xc  # (s, U, D, K): cycles
            terms += phase
            terms *= 2.0 * math.pi
            np.sin(terms, out=terms)
            terms *= amp
            out[start : start + _CHUNK] = terms.sum(axis=-1).prod(axis=-1)  # sum K, prod D
        return torch.from_numpy(out)
        return out


def split_counts(n: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """Split ``n`` items into parts proportional to ``fractions`` (which sum to 1).

    Each part gets ``floor(n * f)``; the leftover items go to the parts with the largest
    remainders (ties to the earlier part).  The counts sum to ``n``.
    """
    if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    raw = [n * f for f in fractions]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda j: (-(raw[j] - counts[j]), j))
    for j in order[: n - sum(counts)]:
        counts[j] += 1
    return tuple(counts)


@lru_cache(maxsize=64)
def _class_times(
    c: int,
    nb_units: int,
    dim_manifold: int,
    alpha: float,
    nb_samples: int,
    seed: int,
    prec: float,
    max_components: int,
) -> torch.Tensor:
    manifold = RandmanManifold(
        nb_units,
        dim_manifold,
        alpha,
        sample_generator(seed, "randman", "manifold", c),
        prec=prec,
        max_components=max_components,
    )
    gen = sample_generator(seed, "randman", "points", c)
    points = torch.rand((nb_samples, dim_manifold), generator=gen, dtype=torch.float64)
    values = manifold(points)
    lo = values.min(dim=0).values
    span = values.max(dim=0).values - lo
    span = torch.where(span > 0, span, torch.ones_like(span))
    return ((values - lo) / span).clamp_(0.0, 1.0)


def generate_randman(
    *,
    split: str = "train",
    nb_classes: int = 10,
    nb_units: int = 100,
    nb_steps: int = 100,
    dim_manifold: int = 2,
    alpha: float = 2.0,
    nb_samples: int = 1000,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    prec: float = 1e-3,
    max_components: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spike-time fractions and labels of one Randman split.

    Args:
        split: ``"train"``, ``"validation"``, ``"test"`` or ``"all"``.
        nb_classes: number of classes (one manifold each).
        nb_units: input units U (embedding dimension).
        nb_steps: time steps per sample (used by the encoder, not here).
        dim_manifold: manifold dimension D.
        alpha: smoothness exponent.
        nb_samples: samples per class, over all splits.
        seed: stream seed.
        fractions: (train, validation, test) shares of each class's samples.
        prec, max_components: Fourier series cut-off (see :class:`RandmanManifold`).

    Returns:
        times (N, U) float64 in [0, 1] (spike time / window), labels (N,) int64.  Every split
        holds the same number of samples from each class, in a keyed random order.
    """
    if nb_classes < 1 or nb_samples < 1 or nb_steps < 1:
        raise ValueError("nb_classes, nb_samples and nb_steps must be >= 1")
    if len(fractions) != 3:
        raise ValueError("fractions must be (train, validation, test)")
    n_train, n_val, n_test = split_counts(nb_samples, tuple(float(f) for f in fractions))
    bounds = {
        "train": (0, n_train),
        "validation": (n_train, n_train + n_val),
        "test": (n_train + n_val, nb_samples),
        "all": (0, nb_samples),
    }
    if split not in bounds:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(bounds)}")
    lo, hi = bounds[split]
    times, labels = [], []
    for c in range(nb_classes):
        t = _class_times(
            c,
            int(nb_units),
            int(dim_manifold),
            float(alpha),
            int(nb_samples),
            int(seed),
            float(prec),
            int(max_components),
        )
        times.append(t[lo:hi])
        labels.append(torch.full((hi - lo,), c, dtype=torch.int64))
    all_times = torch.cat(times)
    all_labels = torch.cat(labels)
    order = torch.randperm(len(all_labels), generator=sample_generator(seed, "randman", "order", split))
    return all_times[order].clone(), all_labels[order].clone()
