"""Tests for neuro.data data sets, the Dataset object and load_dataset."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from neuro.data import (
    Dataset,
    Encoder,
    RandmanManifold,
    dataset_names,
    generate_randman,
    generate_yinyang,
    load_dataset,
    sample_generator,
    yinyang_class,
)
from neuro.data.digits import load_digits_arrays, stratified_split
from neuro.data.randman import split_counts

SMALL_RANDMAN = dict(nb_classes=3, nb_units=20, nb_steps=50, dim_manifold=1, nb_samples=200)


def _sha(a: torch.Tensor, dtype: str) -> str:
    return hashlib.sha256(np.ascontiguousarray(a.numpy(), dtype=dtype).tobytes()).hexdigest()


# ---------------------------------------------------------------- Yin-Yang


def test_yinyang_split_sizes_and_inputs():
    for split, n in [("train", 5000), ("validation", 1000), ("test", 1000)]:
        ds = load_dataset("yinyang", split)
        assert len(ds) == n and ds.inputs.shape == (n, 4) and ds.labels.shape == (n,)
        assert ds.n_classes == 3 and ds.class_names == ("yin", "yang", "dot")
        x = ds.inputs.double()
        assert torch.allclose(x[:, :2] + x[:, 2:], torch.ones(n, 2, dtype=torch.float64))
        assert float(x.min()) >= 0 and float(x.max()) <= 1
        assert bool((torch.hypot(x[:, 0] - 0.5, x[:, 1] - 0.5) <= 0.5 + 1e-7).all())


def test_yinyang_matches_published_data():
    """sha256 of lkriener/yin_yang_data_set publication_data/*.npy (float64 samples, int64
    labels): the standard splits are bit-identical to the published ones."""
    published = {
        "train": (5000, 42,
                  "f5a4054d56f2a058f8250fba7ff9720458e1625db7af78a295e45701745b2228",
                  "534d12acda4f9dbc7208a99d3646115a4aa7d74ca31d6d23f822079a568559b7"),
        "validation": (1000, 41,
                       "5eac358bdf2122763dce3703a79f3005e56e46a4db25ec329a07333d0f7b8093",
                       "5a4c2f605814a620f514c1091f10441ce562cd81e902ce701b3cf94ae7576f7d"),
        "test": (1000, 40,
                 "7bab3ed668ed4992679cff6339fe21bfe7d0c921ddc6187eaa3bc6ef34b888d7",
                 "daa0f8f4e3b37b1ddec2afee22f09afb768f0e575f3f568e7469f1ebc6af73c1"),
    }
    for size, seed, x_hash, y_hash in published.values():
        x, y = generate_yinyang(size, seed)
        assert _sha(x, "<f8") == x_hash
        assert _sha(y, "<i8") == y_hash


def test_yinyang_deterministic_and_seeded():
    a = load_dataset("yinyang", "train", size=300, seed=5)
    b = load_dataset("yinyang", "train", size=300, seed=5)
    c = load_dataset("yinyang", "train", size=300, seed=6)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.inputs, c.inputs)
    # mutating a returned tensor must not leak into the cache
    a.inputs.zero_()
    assert torch.equal(load_dataset("yinyang", "train", size=300, seed=5).inputs, b.inputs)


def test_yinyang_class_balance():
    ds = load_dataset("yinyang", "train")
    counts = ds.class_counts()
    sd = math.sqrt(5000 * (1 / 3) * (2 / 3))  # goal classes are uniform draws
    assert bool((torch.abs(counts.double() - 5000 / 3) < 4 * sd).all()), counts
    assert counts.tolist() == [1681, 1702, 1617]  # the published training set


def test_yinyang_membership_known_points():
    pts = {
        (0.25, 0.5): 2,  # centre of the left dot
        (0.75, 0.5): 2,  # centre of the right dot
        (0.25, 0.58): 2,  # inside the left dot
        (0.81, 0.45): 2,  # inside the right dot
        (0.5, 0.9): 1,  # top of the disc
        (0.5, 0.1): 0,  # bottom of the disc
        (0.1, 0.7): 1,  # upper left
        (0.9, 0.3): 0,  # lower right
        (0.25, 0.35): 1,  # left head, lower half (label 1 bulges down around the left dot)
        (0.75, 0.65): 0,  # right head, upper half (label 0 bulges up around the right dot)
        (0.75, 0.35): 0,
        (0.25, 0.65): 1,
        (0.05, 0.05): -1,  # corner: outside the disc
        (0.99, 0.99): -1,
    }
    xs = torch.tensor([p[0] for p in pts])
    ys = torch.tensor([p[1] for p in pts])
    assert yinyang_class(xs.double(), ys.double()).tolist() == list(pts.values())


def test_yinyang_geometry_symmetry_and_areas():
    g = sample_generator(0, "test-yinyang")
    xy = torch.rand(200_000, 2, generator=g, dtype=torch.float64)
    lab = yinyang_class(xy[:, 0], xy[:, 1])
    mirrored = yinyang_class(1 - xy[:, 0], 1 - xy[:, 1])
    inside = lab >= 0
    # point reflection through the centre swaps labels 0 and 1 and keeps the dots
    swap = torch.tensor([1, 0, 2])
    assert torch.equal(mirrored[inside], swap[lab[inside]])
    frac_inside = float(inside.double().mean())
    assert abs(frac_inside - math.pi / 4) < 0.005
    # area fractions within the disc: dots 2 * 0.1^2 / 0.5^2 = 0.08, halves 0.46 each
    fr = torch.bincount(lab[inside], minlength=3).double() / int(inside.sum())
    assert torch.allclose(fr, torch.tensor([0.46, 0.46, 0.08], dtype=torch.float64), atol=0.006)


def test_yinyang_labels_agree_with_geometry():
    ds = load_dataset("yinyang", "validation")
    x = ds.inputs.double()
    x64, y64 = generate_yinyang(1000, 41)
    assert torch.equal(yinyang_class(x64[:, 0], x64[:, 1]), y64)
    assert torch.equal(ds.labels, y64)
    assert torch.allclose(x, x64, atol=1e-7)


# ---------------------------------------------------------------- Randman


def test_randman_shapes_balance_and_ranges():
    tr = load_dataset("randman", "train", **SMALL_RANDMAN, seed=1)
    va = load_dataset("randman", "validation", **SMALL_RANDMAN, seed=1)
    te = load_dataset("randman", "test", **SMALL_RANDMAN, seed=1)
    assert (len(tr), len(va), len(te)) == (480, 60, 60)
    assert tr.inputs.shape == (480, 20) and tr.steps == 50
    for ds in (tr, va, te):
        counts = ds.class_counts()
        assert bool((counts == counts[0]).all())
        assert float(ds.inputs.min()) >= 0 and float(ds.inputs.max()) <= 1
    # per class, over all splits, every unit spans the whole window
    all_t, all_y = generate_randman(split="all", **SMALL_RANDMAN, seed=1)
    for c in range(3):
        t = all_t[all_y == c]
        assert torch.allclose(t.min(0).values, torch.zeros(20, dtype=torch.float64))
        assert torch.allclose(t.max(0).values, torch.ones(20, dtype=torch.float64))
    # the splits are disjoint pieces of "all"
    rows = {tuple(r) for r in all_t.tolist()}
    parts = [{tuple(r) for r in d.inputs.double().tolist()} for d in (tr, va, te)]
    assert sum(len(p) for p in parts) == 600 == len(rows)
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])


def test_randman_deterministic_and_seeded():
    a = generate_randman(split="train", **SMALL_RANDMAN, seed=3)
    b = generate_randman(split="train", **SMALL_RANDMAN, seed=3)
    c = generate_randman(split="train", **SMALL_RANDMAN, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_randman_one_spike_per_unit():
    ds = load_dataset("randman", "test", **SMALL_RANDMAN)
    spikes = ds.encode(range(10))
    assert spikes.shape == (50, 10, 20)
    assert torch.equal(spikes.sum(0), torch.ones(10, 20))
    steps = spikes.argmax(0)
    expect = torch.clamp(torch.floor(ds.inputs[:10].double() * 50), max=49).long()
    assert torch.equal(steps, expect)


def test_randman_smoothness_and_separability():
    x = torch.linspace(0, 1, 2001, dtype=torch.float64)[:, None]

    def roughness(alpha: float) -> float:
        m = RandmanManifold(30, 1, alpha, sample_generator(0, "smooth"))
        y = m(x)
        y = (y - y.min(0).values) / (y.max(0).values - y.min(0).values)
        return float((y[2:] - 2 * y[1:-1] + y[:-2]).abs().mean())

    assert roughness(1.0) > 3 * roughness(3.0)
    assert RandmanManifold(4, 1, 2.0, sample_generator(0)).n_components == 32  # ceil(1e3 ** .5)
    # classes are separable: a linear read-out of the spike times beats chance by far
    from sklearn.linear_model import LogisticRegression

    tr = load_dataset("randman", "train", **SMALL_RANDMAN, seed=2)
    te = load_dataset("randman", "test", **SMALL_RANDMAN, seed=2)
    clf = LogisticRegression(max_iter=500).fit(tr.inputs.numpy(), tr.labels.numpy())
    assert clf.score(te.inputs.numpy(), te.labels.numpy()) > 0.8


def test_split_counts():
    assert split_counts(200, (0.8, 0.1, 0.1)) == (160, 20, 20)
    assert split_counts(7, (0.5, 0.25, 0.25)) == (3, 2, 2)  # remainders .5, .75, .75
    assert sum(split_counts(1001, (0.7, 0.2, 0.1))) == 1001
    with pytest.raises(ValueError):
        split_counts(10, (0.5, 0.6, 0.1))


# ---------------------------------------------------------------- digits


def test_digits_shapes_ranges_and_split():
    tr = load_dataset("digits", "train")
    te = load_dataset("digits", "test")
    assert (len(tr), len(te)) == (1437, 360)
    assert tr.inputs.shape == (1437, 64) and tr.n_features == 64
    assert tr.inputs.dtype == torch.float32 and tr.labels.dtype == torch.int64
    for ds in (tr, te):
        assert float(ds.inputs.min()) == 0.0 and float(ds.inputs.max()) == 1.0
        assert set(ds.labels.tolist()) == set(range(10))
    # train + test is the whole set (as a multiset of (image, label) rows)
    everything = load_dataset("digits", "all")
    both = torch.cat([torch.cat([d.inputs, d.labels[:, None].float()], 1) for d in (tr, te)])
    ref = torch.cat([everything.inputs, everything.labels[:, None].float()], 1)
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, ref.tolist()))


def test_digits_stratified_and_deterministic():
    _, labels = load_digits_arrays()
    tr_idx, te_idx = stratified_split(labels, 360, seed=0)
    assert len(tr_idx) == 1437 and len(te_idx) == 360
    assert torch.equal(torch.sort(torch.cat([tr_idx, te_idx])).values, torch.arange(1797))
    total = torch.bincount(labels, minlength=10).double()
    test_counts = torch.bincount(labels[te_idx], minlength=10).double()
    assert bool((torch.abs(test_counts - 360 * total / 1797) < 1).all())
    again = stratified_split(labels, 360, seed=0)
    other = stratified_split(labels, 360, seed=1)
    assert torch.equal(again[1], te_idx)
    assert not torch.equal(other[1], te_idx)
    a = load_dataset("digits", "test", seed=3)
    b = load_dataset("digits", "test", seed=3)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    small = load_dataset("digits", "test", n_test=100)
    assert len(small) == 100


# ---------------------------------------------------------------- Dataset.encode


@pytest.mark.parametrize(
    "name,options",
    [
        ("digits", {}),  # Poisson
        ("yinyang", {"size": 64}),  # latency
        ("randman", SMALL_RANDMAN),  # spike times
    ],
)
def test_encode_is_batch_split_invariant(name, options):
    ds = load_dataset(name, "test", **options)
    whole = ds.encode(torch.arange(8), epoch=2)
    halves = torch.cat([ds.encode(range(0, 4), epoch=2), ds.encode(range(4, 8), epoch=2)], 1)
    assert whole.shape == (ds.steps, 8, ds.n_features)
    assert torch.equal(whole, halves)
    singles = torch.cat([ds.encode([i], epoch=2) for i in range(8)], 1)
    assert torch.equal(whole, singles)
    perm = torch.tensor([5, 2, 7, 0, 1, 6, 3, 4])
    assert torch.equal(ds.encode(perm, epoch=2), whole[:, perm])
    assert set(torch.unique(whole).tolist()) <= {0.0, 1.0}
    assert float(whole.sum()) > 0


def test_poisson_dataset_epochs_seeds_and_rates():
    ds = load_dataset("digits", "train")
    e0 = ds.encode(range(16), epoch=0)
    assert torch.equal(e0, ds.encode(range(16), epoch=0))
    assert not torch.equal(e0, ds.encode(range(16), epoch=1))
    reseeded = ds.with_encoder(Encoder(kind="poisson", max_rate_hz=100.0, seed=9))
    assert not torch.equal(e0, reseeded.encode(range(16), epoch=0))
    # subsets keep each sample's stream
    sub = ds.subset([3, 11, 5])
    assert torch.equal(sub.encode([0, 1, 2], epoch=0), e0[:, [3, 11, 5]])
    # splits use distinct streams: same pixel values, different spikes
    te = load_dataset("digits", "test")
    twin = Dataset(
        name="digits", split="test", inputs=ds.inputs[:4], labels=ds.labels[:4], n_classes=10,
        class_names=ds.class_names, description="", encoder=ds.encoder,
    )
    assert not torch.equal(twin.encode(range(4)), ds.encode(range(4)))
    # identical samples at different positions get independent spikes
    same = twin.subset([0, 0])
    assert torch.equal(same.encode([0, 1])[:, 0], same.encode([0, 1])[:, 1])  # same stream id
    clones = dataclasses.replace(
        twin, inputs=ds.inputs[[0, 0]], labels=ds.labels[[0, 0]], sample_ids=None
    )
    pair = clones.encode([0, 1])
    assert not torch.equal(pair[:, 0], pair[:, 1])
    assert te.encoder.kind == "poisson"
    # mean count = sum of pixel values * 100 Hz * 1 s (steps=1000, dt=1 ms)
    long = ds.encode(range(100), steps=1000)
    expected = float(ds.inputs[:100].double().sum()) * 100.0 * 1.0
    assert abs(float(long.sum()) - expected) < 5 * math.sqrt(expected)


def test_encode_in_a_fresh_process_is_identical():
    """Streams do not depend on Python's per-process hash salt or on process history; and
    importing neuro.data stays light (no Norse, Brian2 or scikit-learn)."""
    ds = load_dataset("digits", "train")
    here = ds.encode([7, 100, 3], epoch=4)
    code = (
        "import sys, torch\n"
        "from neuro.data import load_dataset\n"
        "heavy = [m for m in ('norse', 'brian2', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, f'import neuro.data pulled in {heavy}'\n"
        "s = load_dataset('digits', 'train').encode([7, 100, 3], epoch=4)\n"
        "sys.stdout.write(''.join(str(int(v)) for v in s.flatten().tolist()))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root,
        check=True, timeout=120,
    ).stdout
    assert out == "".join(str(int(v)) for v in here.flatten().tolist())


def test_dataset_validation():
    good = dict(
        name="x", split="train", inputs=torch.zeros(3, 2), labels=torch.tensor([0, 1, 1]),
        n_classes=2, class_names=("a", "b"), description="",
    )
    ds = Dataset(**good)
    assert len(ds) == 3 and torch.equal(ds.sample_ids, torch.arange(3))
    with pytest.raises(ValueError, match="labels"):
        Dataset(**{**good, "labels": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match="labels"):
        Dataset(**{**good, "labels": torch.tensor([0, 2, 1])})
    with pytest.raises(ValueError, match="int64"):
        Dataset(**{**good, "labels": torch.tensor([0.0, 1.0, 1.0])})
    with pytest.raises(ValueError, match="class_names"):
        Dataset(**{**good, "class_names": ("a",)})
    with pytest.raises(IndexError):
        ds.encode([3])
    raster = Dataset(
        **{**good, "inputs": torch.eye(4)[None].expand(3, 4, 4).clone()},
        encoder=Encoder(kind="raster"), steps=4,
    )
    assert torch.equal(raster.encode([0, 2])[:, 1], torch.eye(4))


# ---------------------------------------------------------------- registry


def test_registry_names_and_aliases():
    assert dataset_names() == ("digits", "randman", "yinyang")
    assert load_dataset("Yin-Yang", "test", size=10).name == "yinyang"


def test_registry_error_messages():
    with pytest.raises(ValueError) as err:
        load_dataset("yinyan")
    msg = str(err.value)
    assert "'yinyang'" in msg and "Did you mean" in msg
    assert "digits, randman, yinyang" in msg
    with pytest.raises(ValueError, match="Did you mean 'digits'"):
        load_dataset("digit")
    with pytest.raises(ValueError, match="Valid names: digits, randman, yinyang"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="valid splits: train, validation, test"):
        load_dataset("yinyang", "dev")
    with pytest.raises(ValueError, match="valid splits: train, test, all"):
        load_dataset("digits", "validation")
    with pytest.raises(TypeError, match="valid options"):
        load_dataset("digits", "train", size=3)
