"""Number formats: posits (2022 standard), legacy SoftPosit formats, b-posits, and the quire.

``NAMED_FORMATS`` maps the names used in model files to formats; ``"float32"`` and ``"float64"``
map to ``None`` meaning "plain IEEE storage".
"""

from neuro.numerics.posit import BPOSIT16, BPOSIT32, POSIT8, POSIT16, POSIT32, PositFormat

NAMED_FORMATS: dict[str, PositFormat] = {
    "posit8": POSIT8,
    "posit16": POSIT16,
    "posit32": POSIT32,
    "bposit16": BPOSIT16,
    "bposit32": BPOSIT32,
}

__all__ = [
    "PositFormat",
    "POSIT8",
    "POSIT16",
    "POSIT32",
    "BPOSIT16",
    "BPOSIT32",
    "NAMED_FORMATS",
]

from neuro.numerics.quire import Quire  # noqa: E402

__all__ += ["Quire"]
