"""Offline data sets and input encoders.

Nothing here touches the network: the data sets are generated (Yin-Yang, Randman) or shipped in an
installed package (scikit-learn digits).  Spikes are (time, batch, features) float tensors of 0/1,
Norse's layout; time is in steps of ``dt`` seconds, rates in Hz.

Randomness comes from counter-based streams keyed by (seed, tag, epoch, sample index)
(:mod:`neuro.data.streams`): a sample's Poisson spikes in an epoch are the same whatever batch or
worker encodes it.

Quick start::

    from neuro.data import load_dataset, batch_indices
    train = load_dataset("yinyang", "train")            # 5000 samples, published seed 42
    for idx in batch_indices(len(train), 8, seed=1, epoch=0):
        spikes = train.encode(idx, epoch=0)             # (100, 8, 4)
        labels = train.labels[idx]

Importing this package does not import Norse, Brian2 or scikit-learn.
"""

from .dataset import Dataset
from .encoders import (
    ENCODINGS,
    Encoder,
    constant_current_encode,
    latency_encode,
    poisson_encode,
    poisson_trains,
    spike_times_encode,
)
from .randman import RandmanManifold, generate_randman
from .registry import DATASETS, SPLITS, dataset_names, load_dataset
from .streams import batch_indices, derive_seed, epoch_permutation, sample_generator
from .yinyang import generate_yinyang, yinyang_class

__all__ = [
    "DATASETS",
    "ENCODINGS",
    "SPLITS",
    "Dataset",
    "Encoder",
    "RandmanManifold",
    "batch_indices",
    "constant_current_encode",
    "dataset_names",
    "derive_seed",
    "epoch_permutation",
    "generate_randman",
    "generate_yinyang",
    "latency_encode",
    "load_dataset",
    "poisson_encode",
    "poisson_trains",
    "sample_generator",
    "spike_times_encode",
    "yinyang_class",
]
