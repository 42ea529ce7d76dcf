"""Number formats and exact arithmetic: posits (2022 standard), legacy SoftPosit formats, b-posits,
the quire, rounding to a storage format, and counter-based random streams.

Modules: :mod:`~neuro.numerics.posit` (formats: encode, decode, quantize), :mod:`~.formats` (the
storage vocabulary: names, IEEE storage, bytes per value), :mod:`~.quire` (the exact accumulator:
load, scale, merge, read out), :mod:`~.planes`, :mod:`~.outer` and :mod:`~.events` (exact
outer-product reductions), :mod:`~.rounding` and :mod:`~.fast_rounding` (one rounding of an exact
sum to storage, nearest or stochastic), :mod:`~.streams` (keyed random numbers),
:mod:`~.kernels` (the compiled integer kernels), :mod:`~.threads` (intra-op thread control).

``NAMED_FORMATS`` maps the names used in model files to formats; ``"float32"`` and ``"float64"``
are plain IEEE storage (the storage vocabulary: :mod:`neuro.numerics.formats`).  This package
imports nothing from neuro but itself and ``neuro._kernels``.
"""

from neuro.numerics.formats import NAMED_FORMATS, STORAGE_BYTES
from neuro.numerics.posit import BPOSIT16, BPOSIT32, POSIT8, POSIT16, POSIT32, PositFormat
from neuro.numerics.quire import Quire
from neuro.numerics.rounding import ROUNDINGS, next_value, round_nearest, round_quire, round_sum_nearest
from neuro.numerics.streams import counter_uniform, derive_seed, sample_generator, stream_key

__all__ = [
    "PositFormat",
    "POSIT8",
    "POSIT16",
    "POSIT32",
    "BPOSIT16",
    "BPOSIT32",
    "NAMED_FORMATS",
    "STORAGE_BYTES",
    "Quire",
    "ROUNDINGS",
    "next_value",
    "round_nearest",
    "round_quire",
    "round_sum_nearest",
    "counter_uniform",
    "stream_key",
    "derive_seed",
    "sample_generator",
]
