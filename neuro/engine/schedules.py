"""Learning-rate schedules over a run's update steps (the engine's ``lr`` of each step).

Every worker computes the same value from the step count, so a schedule keeps runs bitwise
reproducible.
"""

from __future__ import annotations

import math

__all__ = ["LR_SCHEDULES", "schedule_lr"]

#: ``cosine``: from the base rate down to ~0 at the end (settles the final weights); ``constant``.
LR_SCHEDULES: tuple[str, ...] = ("cosine", "constant")


def schedule_lr(lr: float, step: int, total: int, schedule: str = "cosine") -> float:
    """Learning rate of update ``step`` (0-based) out of ``total``: ``lr * (1 + cos(pi * step /
    total)) / 2`` (cosine) or ``lr`` (constant)."""
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"schedule_lr: schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
