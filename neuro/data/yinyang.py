"""The Yin-Yang data set (Kriener, Göltz & Petrovici 2022, arXiv:2102.08211).

Points (x, y) in the square [0, 2 r_big]^2, inside the disc of radius ``r_big`` around
(r_big, r_big), fall into three classes:

* label 2, ``"dot"``: within ``r_small`` of one of the two dots at (r_big/2, r_big) and
  (3 r_big/2, r_big);
* label 1, ``"yang"``: the upper half (y > r_big) except the right inner half-disc (within
  r_big/2 of the right dot), plus the left inner half-disc (within r_big/2 of the left dot) in
  the lower half;
* label 0, ``"yin"``: the rest of the big disc (the mirror image of label 1 through the centre).

Label numbers and names follow the reference implementation (lkriener/yin_yang_data_set), whose
names call label 0 "yin" and label 1 "yang".  A sample's inputs are (x, y, 1 - x, 1 - y): the
mirrored pair lets networks without biases solve the task.

Generation follows the published procedure, so the standard splits (train 5000 samples, seed 42;
validation 1000, seed 41; test 1000, seed 40) are the published data: a legacy NumPy MT19937
stream seeded with ``seed``; for each sample draw a goal class uniformly from {0, 1, 2}, then
draw points ``rand(2) * 2 * r_big`` until one lies in the big disc and belongs to the goal
class (rejection sampling).  Classes are therefore balanced in expectation (each ~1/3), not
exactly.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

__all__ = ["CLASS_NAMES", "SPLITS", "yinyang_class", "generate_yinyang"]

CLASS_NAMES = ("yin", "yang", "dot")
#: split -> (size, seed) of the published data set.
SPLITS: dict[str, tuple[int, int]] = {
    "train": (5000, 42),
    "validation": (1000, 41),
    "test": (1000, 40),
}


def _class_of_point(x: float, y: float, r_small: float, r_big: float) -> int:
    """Class of one point already known to lie inside the big disc (scalar float64 math)."""
    dxr = x - 1.5 * r_big
    dxl = x - 0.5 * r_big
    dy = y - r_big
    d_right = math.sqrt(dxr * dxr + dy * dy)
    d_left = math.sqrt(dxl * dxl + dy * dy)
    if d_right < r_small or d_left < r_small:
        return 2
    upper_outside_right_head = y > r_big and d_right > 0.5 * r_big
    left_head_ring = r_small < d_left <= 0.5 * r_big
    return 1 if (d_right <= r_small or left_head_ring or upper_outside_right_head) else 0


def yinyang_class(
    x: torch.Tensor | np.ndarray | float,
    y: torch.Tensor | np.ndarray | float,
    r_small: float = 0.1,
    r_big: float = 0.5,
) -> torch.Tensor:
    """Class labels of points (x, y); -1 for points outside the big disc.

    Args:
        x, y: coordinates (same shape, or broadcastable), in the units of ``r_big``.
        r_small: radius of the two dots.
        r_big: radius of the whole symbol; its centre is (r_big, r_big).

    Returns:
        int64 tensor of labels in {-1, 0, 1, 2} with the broadcast shape of x and y.
    """
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    xt, yt = torch.broadcast_tensors(xt, yt)
    d_centre = torch.sqrt((xt - r_big) ** 2 + (yt - r_big) ** 2)
    d_right = torch.sqrt((xt - 1.5 * r_big) ** 2 + (yt - r_big) ** 2)
    d_left = torch.sqrt((xt - 0.5 * r_big) ** 2 + (yt - r_big) ** 2)
    label_one = (
        (d_right <= r_small)
        | ((d_left > r_small) & (d_left <= 0.5 * r_big))
        | ((yt > r_big) & (d_right > 0.5 * r_big))
    )
    labels = label_one.to(torch.int64)
    labels = torch.where((d_right < r_small) | (d_left < r_small), 2, labels)
    return torch.where(d_centre > r_big, -1, labels)


@lru_cache(maxsize=16)
def _generate(size: int, seed: int, r_small: float, r_big: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    xy = np.empty((size, 2), dtype=np.float64)
    labels = np.empty(size, dtype=np.int64)
    for i in range(size):
        goal = int(rng.randint(3))
        while True:
            u = rng.rand(2)
            x = float(u[0]) * 2.0 * r_big
            y = float(u[1]) * 2.0 * r_big
            dx = x - r_big
            dy = y - r_big
            if math.sqrt(dx * dx + dy * dy) > r_big:
                continue
            if _class_of_point(x, y, r_small, r_big) == goal:
                break
        xy[i] = (x, y)
        labels[i] = goal
    xy.setflags(write=False)
    labels.setflags(write=False)
    return xy, labels


def generate_yinyang(
    size: int, seed: int, r_small: float = 0.1, r_big: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``size`` Yin-Yang samples with the published procedure (see module docstring).

    Args:
        size: number of samples.
        seed: seed of the legacy NumPy MT19937 stream (42 / 41 / 40 for train / val / test).
        r_small: radius of the dots.
        r_big: radius of the symbol.

    Returns:
        inputs (size, 4) float64 ``(x, y, 2 r_big - x, 2 r_big - y)`` (= (x, y, 1-x, 1-y) for the
        default r_big = 0.5), labels (size,) int64.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if not 0 < r_small < 0.5 * r_big:
        raise ValueError(f"need 0 < r_small < r_big / 2, got r_small={r_small}, r_big={r_big}")
    xy, labels = _generate(int(size), int(seed), float(r_small), float(r_big))
    xy_t = torch.from_numpy(xy.copy())
    inputs = torch.cat([xy_t, 2.0 * r_big - xy_t], dim=1)
    return inputs, torch.from_numpy(labels.copy())
