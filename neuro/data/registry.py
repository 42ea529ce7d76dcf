"""``load_dataset(name, split, **options)``: the registry of offline data sets."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import torch

from .dataset import Dataset
from .digits import N_DIGITS, load_digits_arrays, stratified_split
from .encoders import Encoder
from .randman import generate_randman
from .yinyang import CLASS_NAMES as YINYANG_CLASSES
from .yinyang import SPLITS as YINYANG_SPLITS
from .yinyang import generate_yinyang

__all__ = ["DATASETS", "SPLITS", "load_dataset", "dataset_names"]


def _yinyang(
    split: str,
    *,
    size: int | None = None,
    seed: int | None = None,
    r_small: float = 0.1,
    r_big: float = 0.5,
    encoder: Encoder | None = None,
    steps: int = 100,
    dt: float = 1e-3,
) -> Dataset:
    std_size, std_seed = YINYANG_SPLITS[split]
    size = std_size if size is None else size
    seed = std_seed if seed is None else seed
    inputs, labels = generate_yinyang(size, seed, r_small=r_small, r_big=r_big)
    return Dataset(
        name="yinyang",
        split=split,
        inputs=inputs.to(torch.float32),
        labels=labels,
        n_classes=3,
        class_names=YINYANG_CLASSES,
        description=(
            "Yin-Yang (Kriener, Goltz & Petrovici 2022): points of the yin-yang symbol, inputs "
            f"(x, y, 1-x, 1-y) in [0, 1]; classes yin/yang/dot; {size} samples, seed {seed} "
            f"(published generator); r_small={r_small}, r_big={r_big}."
        ),
        encoder=Encoder(kind="latency") if encoder is None else encoder,
        steps=steps,
        dt=dt,
        options={"size": size, "seed": seed, "r_small": r_small, "r_big": r_big},
    )


def _randman(
    split: str,
    *,
    nb_classes: int = 10,
    nb_units: int = 100,
    nb_steps: int = 100,
    dim_manifold: int = 2,
    alpha: float = 2.0,
    nb_samples: int = 1000,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    encoder: Encoder | None = None,
    dt: float = 1e-3,
) -> Dataset:
    times, labels = generate_randman(
        split=split, nb_classes=nb_classes, nb_units=nb_units, nb_steps=nb_steps,
        dim_manifold=dim_manifold, alpha=alpha, nb_samples=nb_samples, seed=seed,
        fractions=fractions,
    )
    return Dataset(
        name="randman",
        split=split,
        inputs=times.to(torch.float32),
        labels=labels,
        n_classes=nb_classes,
        class_names=tuple(f"manifold {c}" for c in range(nb_classes)),
        description=(
            f"Randman (after Zenke & Vogels 2021): {nb_classes} random smooth {dim_manifold}-D "
            f"manifolds (alpha={alpha}) in {nb_units} dimensions; inputs are spike times as "
            f"fractions of a {nb_steps}-step window, one spike per unit; {nb_samples} samples "
            f"per class split {fractions}; seed {seed}."
        ),
        encoder=Encoder(kind="spike_times") if encoder is None else encoder,
        steps=nb_steps,
        dt=dt,
        options={
            "nb_classes": nb_classes, "nb_units": nb_units, "nb_steps": nb_steps,
            "dim_manifold": dim_manifold, "alpha": alpha, "nb_samples": nb_samples,
            "seed": seed, "fractions": tuple(fractions),
        },
    )


def _digits(
    split: str,
    *,
    seed: int = 0,
    n_test: int = 360,
    encoder: Encoder | None = None,
    steps: int = 100,
    dt: float = 1e-3,
) -> Dataset:
    images, labels = load_digits_arrays()
    train_idx, test_idx = stratified_split(labels, n_test, seed, tag="digits")
    idx = {"train": train_idx, "test": test_idx, "all": torch.arange(N_DIGITS)}[split]
    return Dataset(
        name="digits",
        split=split,
        inputs=images[idx].to(torch.float32),
        labels=labels[idx].clone(),
        n_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        description=(
            "scikit-learn handwritten digits (UCI optdigits test set, 1797 images of 8x8 "
            "pixels, shipped in the scikit-learn wheel); 64 pixel intensities scaled to [0, 1]; "
            f"stratified split with {n_test} test samples, seed {seed}."
        ),
        encoder=Encoder(kind="poisson", max_rate_hz=100.0) if encoder is None else encoder,
        steps=steps,
        dt=dt,
        options={"seed": seed, "n_test": n_test},
    )


#: name -> (builder, valid splits)
DATASETS: dict[str, tuple[Callable[..., Dataset], tuple[str, ...]]] = {
    "digits": (_digits, ("train", "test", "all")),
    "randman": (_randman, ("train", "validation", "test", "all")),
    "yinyang": (_yinyang, tuple(YINYANG_SPLITS)),
}
SPLITS: dict[str, tuple[str, ...]] = {name: splits for name, (_, splits) in DATASETS.items()}


def dataset_names() -> tuple[str, ...]:
    """Registered data set names, sorted."""
    return tuple(sorted(DATASETS))


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def load_dataset(name: str, split: str = "train", **options: Any) -> Dataset:
    """Load (generate) a registered data set; nothing is downloaded.

    Args:
        name: ``"yinyang"``, ``"randman"`` or ``"digits"`` (case, ``-`` and ``_`` ignored).
        split: one of ``SPLITS[name]``.
        **options: per data set, with defaults:

            * yinyang: ``size`` and ``seed`` (default: the published split, train 5000/42,
              validation 1000/41, test 1000/40), ``r_small=0.1``, ``r_big=0.5``.
            * randman: ``nb_classes=10, nb_units=100, nb_steps=100, dim_manifold=2, alpha=2.0,
              nb_samples=1000`` (per class), ``seed=0``, ``fractions=(0.8, 0.1, 0.1)``.
            * digits: ``seed=0``, ``n_test=360`` (1437 train / 360 test).
            * all: ``encoder`` (:class:`~neuro.data.Encoder`; defaults latency / spike_times /
              Poisson 100 Hz), ``dt`` (seconds, default 1e-3), ``steps`` (default 100; randman
              uses ``nb_steps``).

    Returns:
        A :class:`~neuro.data.Dataset`.

    Raises:
        ValueError: unknown name (with the nearest valid name) or split.
        TypeError: an option the data set does not know.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = _normalise(name)
    valid = dataset_names()
    if key not in DATASETS:
        nearest = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
        hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Valid names: {', '.join(valid)}.")
    builder, splits = DATASETS[key]
    if split not in splits:
        raise ValueError(
            f"unknown split {split!r} for dataset {key!r}; valid splits: {', '.join(splits)}."
        )
    params = inspect.signature(builder).parameters
    allowed = [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"dataset {key!r} has no option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(allowed)}."
        )
    return builder(split, **options)
