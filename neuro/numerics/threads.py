"""Run element-wise integer work on one intra-op thread.

The numerics are chains of ~20 cheap element-wise passes over cache-sized tensors.  Splitting each
pass over threads gains little, and on shared cores (another process busy on the same cores) every
hand-off waits for a descheduled thread: we measured the same encode 3x-100x slower with 2 threads
than with 1 on a loaded 2-core machine.  Matrix products (the quire's GEMMs) stay multi-threaded.

``torch.set_num_threads`` is process-wide, so nested and concurrent uses share one counter: the
original setting is restored when the last user leaves.

Matrix products made of many calls (the quire's row blocks) pay that hand-off once per call: on an
busy machine (1-minute load average above the core count) they too run on one thread
(:func:`gemm_threads`); we measured 64 two-thread GEMM calls of 1024x128x128 at 25 ms each under a
load of 10 on 2 cores, against 1.5 ms on one thread.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar

import torch

_lock = threading.Lock()
CORES = os.cpu_count() or 1
_depth = 0
_saved = 1

F = TypeVar("F", bound=Callable)


@contextmanager
def one_thread():
    """Context in which torch's CPU intra-op parallelism is limited to one thread."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = torch.get_num_threads()
            if _saved != 1:
                torch.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved != 1:
                torch.set_num_threads(_saved)


def single_threaded(fn: F) -> F:
    """Decorator form of :func:`one_thread`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextmanager
def gemm_threads():
    """Context for one matrix product: torch's original thread count, also inside
    :func:`one_thread`, unless the machine is busy (then one thread)."""
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > CORES:
        with one_thread():
            yield
        return
    with _lock:
        restore = _depth > 0 and _saved != 1
    if restore:
        torch.set_num_threads(_saved)
    try:
        yield
    finally:
        if restore:
            torch.set_num_threads(1)
