"""The uniform dataset object every loader in :mod:`neuro.data` returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .encoders import Encoder

__all__ = ["Dataset"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled split of a data set plus the rule that turns samples into spikes.

    Attributes:
        name: registry name (``"yinyang"``, ``"randman"``, ``"digits"``).
        split: ``"train"``, ``"validation"``, ``"test"``, ...
        inputs: (N, F) float tensor of values, or (N, T, F) for samples that already are rasters.
        labels: (N,) int64 class indices in ``[0, n_classes)``.
        n_classes: number of classes.
        class_names: one name per class.
        description: what the data are, where they come from, value ranges.
        encoder: how :meth:`encode` turns a sample into spikes.
        steps: default number of time steps for :meth:`encode`.
        dt: default step length in seconds for :meth:`encode`.
        sample_ids: (N,) int64 ids that key each sample's random stream (default ``0..N-1``);
            :meth:`subset` keeps them, so a sample's spikes do not change when it is selected.
        options: the generation options (seed, sizes, ...), for records and reports.
    """

    name: str
    split: str
    inputs: torch.Tensor
    labels: torch.Tensor
    n_classes: int
    class_names: tuple[str, ...]
    description: str
    encoder: Encoder = field(default_factory=Encoder)
    steps: int = 100
    dt: float = 1e-3
    sample_ids: torch.Tensor | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.inputs.shape[0]
        if self.inputs.ndim not in (2, 3):
            raise ValueError(f"inputs must be (N, F) or (N, T, F), got {tuple(self.inputs.shape)}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if self.labels.dtype != torch.int64:
            raise ValueError(f"labels must be int64, got {self.labels.dtype}")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.n_classes):
            raise ValueError(f"labels must lie in [0, {self.n_classes})")
        if len(self.class_names) != self.n_classes:
            raise ValueError("class_names must have one entry per class")
        if self.sample_ids is None:
            object.__setattr__(self, "sample_ids", torch.arange(n, dtype=torch.int64))
        elif self.sample_ids.shape != (n,):
            raise ValueError(f"sample_ids must have shape ({n},)")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"features={self.n_features}, n_classes={self.n_classes}, "
            f"encoder={self.encoder.kind!r})"
        )

    @property
    def n_features(self) -> int:
        """Number of input units F."""
        return int(self.inputs.shape[-1])

    def class_counts(self) -> torch.Tensor:
        """(n_classes,) int64 number of samples per class."""
        return torch.bincount(self.labels, minlength=self.n_classes)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> Dataset:
        """The samples at ``indices`` (same encoder; stream ids kept, so same spikes)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return dataclasses.replace(
            self,
            inputs=self.inputs[idx].clone(),
            labels=self.labels[idx].clone(),
            sample_ids=self.sample_ids[idx].clone(),
        )

    def with_encoder(self, encoder: Encoder, **defaults: Any) -> Dataset:
        """A copy with another encoder (and optionally other ``steps`` / ``dt`` defaults)."""
        return dataclasses.replace(self, encoder=encoder, **defaults)

    def encode(
        self,
        indices: Sequence[int] | torch.Tensor,
        epoch: int = 0,
        steps: int | None = None,
        dt: float | None = None,
        *,
        encoder: Encoder | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Spikes for the samples at ``indices``.

        Each sample is encoded on its own, with random numbers from the stream
        ``sample_generator(encoder.seed, "poisson", name, split, epoch, sample_id)``, so a
        sample's spikes are bit-identical whatever batch it is in and whichever worker encodes it.

        Args:
            indices: B positions in this dataset.
            epoch: epoch number (keys the random stream; irrelevant for deterministic codes).
            steps: number of time steps T (default ``self.steps``).
            dt: step length in seconds (default ``self.dt``).
            encoder: override ``self.encoder``.
            dtype: dtype of the result.

        Returns:
            (T, B, F) tensor (Norse layout), CPU.
        """
        enc = self.encoder if encoder is None else encoder
        steps = self.steps if steps is None else steps
        dt = self.dt if dt is None else dt
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"indices out of range for a dataset of {n} samples")
        out = torch.empty((steps, idx.numel(), self.n_features), dtype=dtype)
        for b, i in enumerate(idx.tolist()):
            keys = (self.name, self.split, int(epoch), int(self.sample_ids[i]))
            out[:, b, :] = enc.encode_sample(self.inputs[i], steps, dt, keys, dtype=dtype)
        return out

    def labels_of(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """(B,) int64 labels of the samples at ``indices``."""
        return self.labels[torch.as_tensor(indices, dtype=torch.int64)].clone()
