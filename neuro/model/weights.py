"""Initial weights of a projection: a distribution, or given weights read from a file.

In a model file::

    init = 0.05                                         # every weight 0.05
    init = { dist = "normal", mean = 0, std = 0.1 }     # or uniform (low, high), constant (value)
    init = { file = "W.safetensors", key = "hidden" }   # a tensor of a safetensors file
    init = { file = "W.npy" }                           # the array of a .npy file (no key)

A file path is relative to the model file's folder.  The weights must be floating point (float16,
bfloat16, float32 or float64), finite, of the projection's weight shape (``(target, source)`` like
``torch.nn.Linear``, see :meth:`~neuro.model.graph.ModelGraph.weight_shape`) and inside its bounds
and sign.  The graph stays plain data: :class:`Init` holds the resolved (absolute) path, the key and
the sha256 of the file's bytes, so the canonical hash of the graph changes when the weights change;
:meth:`Init.load` reads the tensor (float64) and refuses a file that changed since.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors

from neuro.model.checks import check_choice, finite
from neuro.model.errors import GraphError, did_you_mean, nearest

__all__ = ["INIT_DISTS", "INIT_PARAMETERS", "WEIGHT_FILES", "Init", "check_weight_range"]

#: Initial weight distributions; ``file``: given weights (see the module docstring).
INIT_DISTS: tuple[str, ...] = ("constant", "normal", "uniform", "file")
#: The parameters of each kind of initial weights (``key`` only for safetensors files).
INIT_PARAMETERS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "normal": ("mean", "std"),
    "uniform": ("low", "high"),
    "file": ("file", "key", "sha256"),
}
#: File types of given weights.
WEIGHT_FILES: tuple[str, ...] = (".safetensors", ".npy")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_UNREADABLE = (OSError, ValueError, RuntimeError, SafetensorError)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SAVE_HINT = "save them with safetensors.torch.save_file({'w': W}, 'W.safetensors') or numpy.save('W.npy', W)"


@dataclass(frozen=True)
class Init:
    """Initial weights of a projection (dimensionless weights).

    ``constant``: every weight is ``value``; ``normal``: N(``mean``, ``std``^2) with std >= 0;
    ``uniform``: U[``low``, ``high``) with low < high; ``file``: the tensor ``key`` of the
    safetensors file ``file`` (or the array of a .npy file, ``key`` None), an absolute path, whose
    bytes have the sha256 ``sha256`` (make it with :meth:`from_file`).  Unused parameters are
    ``None``.
    """

    dist: str
    value: float | None = None
    mean: float | None = None
    std: float | None = None
    low: float | None = None
    high: float | None = None
    file: str | None = None
    key: str | None = None
    sha256: str | None = None

    @classmethod
    def from_file(cls, path: str | Path, key: str | None = None, where: str = "init") -> Init:
        """Given weights: read ``path`` (tensor ``key`` of a safetensors file, or a .npy file),
        check them (float dtype, finite values) and record the resolved (absolute) path and the sha256.

        Raises:
            GraphError: naming ``where.file`` / ``where.key``, the file and the fix.
        """
        try:
            path = Path(path).resolve()
        except (OSError, ValueError, RuntimeError) as exc:
            raise GraphError(f"{where}.file", "a file path", f"{str(path)!r} ({exc})") from None
        data = _read_bytes(path, key, where)
        sha = hashlib.sha256(data).hexdigest()
        _decode(data, path, key, where)
        return cls("file", file=str(path), key=key, sha256=sha)

    def check(self, key: str) -> None:
        """Validate, reporting errors under ``key`` (e.g. ``projections.p.init``)."""
        check_choice(self.dist, INIT_DISTS, f"{key}.dist")
        wanted = INIT_PARAMETERS[self.dist]
        for name in ("value", "mean", "std", "low", "high", "file", "key", "sha256"):
            value = getattr(self, name)
            if name not in wanted:
                if value is not None:
                    raise GraphError(
                        f"{key}.{name}",
                        f"only {', '.join(wanted)} for dist {self.dist!r}",
                        repr(value),
                    )
                continue
            if self.dist == "file":
                continue
            if value is None:
                raise GraphError(f"{key}.{name}", f"a number (dist {self.dist!r} needs it)", "None")
            object.__setattr__(self, name, finite(value, f"{key}.{name}"))
        if self.dist == "normal" and self.std < 0:
            raise GraphError(f"{key}.std", "a value >= 0", repr(self.std))
        if self.dist == "uniform" and not self.low < self.high:
            raise GraphError(f"{key}.high", f"a value above low = {self.low!r}", repr(self.high))
        if self.dist == "file":
            self._check_file(key)

    def _check_file(self, key: str) -> None:
        made = "given weights are made by Init.from_file(path, key)"
        if not isinstance(self.file, str) or not Path(self.file).is_absolute():
            raise GraphError(f"{key}.file", "an absolute path", repr(self.file), made)
        _check_kind(Path(self.file), self.key, key)
        if Path(self.file).suffix == ".safetensors" and not isinstance(self.key, str):
            raise GraphError(f"{key}.key", f"the name of a tensor in {self.file}", repr(self.key), made)
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise GraphError(f"{key}.sha256", "the sha256 of the file (64 lowercase hex digits)",
                             repr(self.sha256), made)

    @property
    def label(self) -> str:
        """``/path/W.safetensors['key']`` or ``/path/W.npy``, for messages."""
        return f"{self.file}[{self.key!r}]" if self.key is not None else str(self.file)

    def shape(self, where: str = "init") -> tuple[int, ...]:
        """The shape of given weights, read from the file's header (not its data)."""
        path = Path(self.file)
        if not path.is_file():
            _missing(path, where)
        try:
            if path.suffix == ".npy":
                with path.open("rb") as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    return tuple(read(fh)[0])
            with safe_open(str(path), framework="pt") as fh:
                if self.key not in fh.keys():
                    _no_key(list(fh.keys()), path, self.key, where)
                return tuple(fh.get_slice(self.key).get_shape())
        except GraphError:
            raise
        except _UNREADABLE as exc:
            raise GraphError(f"{where}.file", f"a readable {path.suffix} file", f"{path}: {exc}",
                             _SAVE_HINT) from None

    def load(self, where: str = "init") -> torch.Tensor:
        """Given weights as a float64 tensor of their stored shape.

        Raises:
            GraphError: the file is gone, unreadable, or changed since the model was read.
        """
        if self.dist != "file":
            raise ValueError(f"Init.load: dist {self.dist!r} has no file (the network draws it)")
        path = Path(self.file)
        data = _read_bytes(path, self.key, where)
        sha = hashlib.sha256(data).hexdigest()
        if sha != self.sha256:
            raise GraphError(f"{where}.file",
                             f"the weights read with the model (sha256 {self.sha256[:16]}...)",
                             f"{self.label} changed since (sha256 {sha[:16]}...)",
                             "read the model file again to use the new weights")
        return _decode(data, path, self.key, where)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``dist`` and its parameters (no ``key`` for a .npy file)."""
        params = {k: getattr(self, k) for k in INIT_PARAMETERS[self.dist]}
        if self.dist == "file" and self.key is None:
            del params["key"]
        return {"dist": self.dist, **params}


def _missing(path: Path, where: str) -> None:
    hint = "a relative path starts from the model file's folder"
    if path.parent.is_dir():
        near = nearest(path.name, [p.name for p in path.parent.iterdir() if p.suffix in WEIGHT_FILES])
        if near:
            hint += f"; did you mean {near!r}?"
    raise GraphError(f"{where}.file", f"an existing {' or '.join(WEIGHT_FILES)} file",
                     f"no such file {str(path)!r}", hint)


def _no_key(keys: list[str], path: Path, key: str | None, where: str) -> None:
    if key is None:
        raise GraphError(f"{where}.key", f"the name of the tensor in {path}", "nothing (the key is missing)",
                         f'add key = "{keys[0]}" (the file holds {", ".join(keys)})' if keys
                         else "the file holds no tensor")
    raise GraphError(f"{where}.key", f"the name of a tensor in {path} ({', '.join(keys) or 'none'})",
                     repr(key), did_you_mean(key, keys, 0.5))


def _check_kind(path: Path, key: str | None, where: str) -> None:
    """GraphError unless ``path`` is a .safetensors or .npy file name, and ``key`` None for .npy."""
    if path.suffix not in WEIGHT_FILES:
        raise GraphError(f"{where}.file", "a .safetensors or .npy file", repr(str(path)), _SAVE_HINT)
    if path.suffix == ".npy" and key is not None:
        raise GraphError(f"{where}.key", "no key for a .npy file (it holds one array)", repr(key),
                         "remove key, or save the weights in a .safetensors file")


def _read_bytes(path: Path, key: str | None, where: str) -> bytes:
    """The file's bytes, after the checks that need no content (suffix, key of a .npy file)."""
    _check_kind(path, key, where)
    if not path.is_file():
        _missing(path, where)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise GraphError(f"{where}.file", "a readable file", f"{path}: {exc.strerror or exc}") from None


def _decode(data: bytes, path: Path, key: str | None, where: str) -> torch.Tensor:
    """The weights in ``data`` (the bytes of ``path``) as float64, checked: float dtype, finite."""
    label = f"{path}[{key!r}]" if key is not None else str(path)
    try:
        if path.suffix == ".npy":
            array = np.load(io.BytesIO(data), allow_pickle=False)
            if array.dtype.kind != "f" or array.dtype.itemsize > 8:
                _not_float(array.dtype, label, where)
            weights = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=False))
        else:
            tensors = load_safetensors(data)
            if key not in tensors:
                _no_key(sorted(tensors), path, key, where)
            weights = tensors[key]
    except GraphError:
        raise
    except _UNREADABLE as exc:
        raise GraphError(f"{where}.file", f"a readable {path.suffix} file", f"{path}: {exc}",
                         _SAVE_HINT) from None
    if weights.dtype not in _FLOAT_DTYPES:
        _not_float(weights.dtype, label, where)
    weights = weights.to(torch.float64)
    bad = ~torch.isfinite(weights)
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise GraphError(f"{where}.file", "finite weights",
                         f"{int(bad.sum())} NaN or infinite values in {label} (the first at index {first})",
                         "replace or clip them before saving the file")
    return weights


def _not_float(dtype: Any, label: str, where: str) -> None:
    raise GraphError(f"{where}.file", "floating-point weights (float16, bfloat16, float32 or float64)",
                     f"dtype {dtype} in {label}", "convert them before saving, e.g. W.astype(numpy.float32) "
                     "or W.float()")


def check_weight_range(init: Init, bounds: tuple[float, float] | None, sign: str | None, where: str) -> None:
    """GraphError unless given weights lie inside ``bounds`` and have the projection's ``sign``
    (``excitatory``: >= 0, ``inhibitory``: <= 0); drawn weights are clipped by the network instead."""
    if init.dist != "file" or (bounds is None and sign is None):
        return
    w = init.load(where)
    low, high = bounds if bounds is not None else (-float("inf"), float("inf"))
    if sign == "excitatory":
        low = max(low, 0.0)
    elif sign == "inhibitory":
        high = min(high, 0.0)
    outside = (w < low) | (w > high)
    if outside.any():
        first = tuple(int(i) for i in outside.nonzero()[0])
        raise GraphError(f"{where}.file", f"weights in [{low!r}, {high!r}] (the projection's bounds "
                         f"{list(bounds) if bounds else 'none'}, sign {sign or 'none'})",
                         f"{int(outside.sum())} values outside in {init.label} (the first, "
                         f"{float(w[first])!r}, at index {first})",
                         "clip them before saving, or widen bounds")
