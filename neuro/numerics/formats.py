"""The storage-format vocabulary: format names, IEEE storage, bytes per value, JSON round trip.

A *storage* is what a stored value is rounded to: a :class:`~neuro.numerics.PositFormat`, or one of
the IEEE names ``"float32"`` / ``"float64"`` (:data:`FLOAT_STORAGE`).  Model files and reports name
formats with the keys of :data:`STORAGE_BYTES` (:data:`STORAGE_FORMATS`).
"""

from __future__ import annotations

from typing import Any

import torch

from neuro.numerics.posit import BPOSIT16, BPOSIT32, POSIT8, POSIT16, POSIT32, PositFormat

__all__ = [
    "NAMED_FORMATS",
    "FLOAT_STORAGE",
    "STORAGE_FORMATS",
    "STORAGE_BYTES",
    "Storage",
    "resolve_storage",
    "storage_name",
    "storage_to_json",
    "storage_from_json",
]

#: The posit formats by the names model files use.
NAMED_FORMATS: dict[str, PositFormat] = {
    "posit8": POSIT8,
    "posit16": POSIT16,
    "posit32": POSIT32,
    "bposit16": BPOSIT16,
    "bposit32": BPOSIT32,
}
#: IEEE storage names and their torch dtypes.
FLOAT_STORAGE: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
#: Every storage format name: the IEEE ones, then the posits.
STORAGE_FORMATS: tuple[str, ...] = (*FLOAT_STORAGE, *NAMED_FORMATS)
#: Bytes per stored value of each storage format.
STORAGE_BYTES: dict[str, int] = {
    **{name: dtype.itemsize for name, dtype in FLOAT_STORAGE.items()},
    **{name: fmt.nbits // 8 for name, fmt in NAMED_FORMATS.items()},
}

Storage = PositFormat | str  # a PositFormat, or "float32" / "float64"


def resolve_storage(storage: Any) -> Storage | None:
    """Normalise a storage spec: ``None``, a PositFormat, ``torch.float32/64`` or a format name."""
    if storage is None or isinstance(storage, PositFormat):
        return storage
    if storage in (torch.float32, torch.float64):
        return "float32" if storage == torch.float32 else "float64"
    if isinstance(storage, str):
        if storage in FLOAT_STORAGE:
            return storage
        if storage in NAMED_FORMATS:
            return NAMED_FORMATS[storage]
    raise ValueError(
        f"storage must be 'float32', 'float64', torch.float32/float64, a PositFormat or one of "
        f"{sorted(NAMED_FORMATS)}, got {storage!r}"
    )


def storage_name(storage: Storage) -> str:
    """Display name of a storage format (``"float32"``, ``"posit16"``...)."""
    return storage if isinstance(storage, str) else storage.name


def storage_to_json(storage: Storage | None) -> Any:
    """JSON-able description of a storage format (inverse: :func:`storage_from_json`)."""
    if storage is None or isinstance(storage, str):
        return storage
    return {"nbits": storage.nbits, "es": storage.es, "rs": storage.rs, "name": storage.name}


def storage_from_json(obj: Any) -> Storage | None:
    """Rebuild a storage format written by :func:`storage_to_json`."""
    if obj is None or isinstance(obj, str):
        return resolve_storage(obj)
    return PositFormat(int(obj["nbits"]), int(obj["es"]), obj.get("rs"), name=obj.get("name"))
