"""The quire's compiled integer kernels (``neuro/_kernels/quire.c``) through ctypes.

Event terms (:mod:`neuro.numerics.events`), the carry pass (:meth:`Quire.normalize`) and the
rounding of ``w + lr * S`` at chosen entries (:func:`neuro.numerics.fast_rounding.round_entries`)
run there when a C compiler is available; every caller keeps a torch path with the same results.
"""

from __future__ import annotations

import ctypes
import warnings

from neuro import _kernels

__all__ = ["ENABLED", "compiled_kernels"]

#: Tests switch the compiled kernels off (False) to compare them with the torch paths.
ENABLED = True
_KERNEL: list = []  # [ctypes library or None], loaded on first use


def compiled_kernels():
    """``neuro/_kernels/quire.c`` through ctypes (compiled on first use), or None: switched off, or
    no compiler (then one warning, and the quire runs its torch paths: same results, slower)."""
    if not ENABLED:
        return None
    if not _KERNEL:
        lib = _kernels.load("quire")
        if lib is None:
            warnings.warn(
                f"neuro.numerics: the compiled quire kernels are unavailable "
                f"({_kernels.error('quire')}); event terms and carries take the slower torch paths",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            i64, ptr = ctypes.c_int64, ctypes.c_void_p
            lib.quire_event_range.argtypes = [i64, ptr, ptr, i64, ptr]
            lib.quire_event_range.restype = i64
            lib.quire_event_fold.argtypes = [i64, ptr, ptr, ptr, i64, i64, i64, ptr, i64, i64]
            lib.quire_event_fold.restype = None
            lib.quire_normalize.argtypes = [ptr, i64, i64]
            lib.quire_normalize.restype = i64
            f64 = ctypes.c_double
            lib.quire_step_entries.argtypes = [ptr, i64, ptr, i64, i64, i64, i64, ptr, i64, f64, f64, ptr]
            lib.quire_step_entries.restype = i64
        _KERNEL.append(lib)
    return _KERNEL[0]
