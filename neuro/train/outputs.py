"""The one writer of a run folder: metrics, weights, the resolved model file and figures.

A run folder is complete or visibly incomplete.  :func:`begin_run` removes the folder's
``manifest.json`` before anything is trained, so a killed run leaves a folder without one;
:func:`write_run` writes every file atomically (:func:`atomic_write`: temporary file, fsync,
rename, folder fsync), removes files of an earlier run that this one does not write, and writes
``manifest.json`` last: the list of the run's files with their sha256.  Figures and metrics in a
folder with a manifest belong to the same run.

``weights_sha256`` (in ``metrics.json``) is the digest of the weight *values*: sha256 over each
weight's name (UTF-8) followed by its raw bytes (C order, the tensor's dtype), in projection
order.  Equal digests mean identical bits; the digest does not depend on the file container
(``weights.safetensors`` also holds metadata, so its own sha256 is listed in the manifest).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

__all__ = ["MANIFEST", "atomic_write", "begin_run", "fsync_dir", "json_safe", "weights_digest", "write_run"]

MANIFEST = "manifest.json"
#: Files a run folder may hold; those of an earlier run that the new run does not write are removed.
_OUTPUTS = ("metrics.json", "weights.safetensors", "model.toml", "learning_curve.png", "raster.png",
            "weights_hist.png", "weights_over_time.png", "receptive_fields.png")


def fsync_dir(path: Path) -> None:
    """fsync the folder ``path``, so that a rename or a new file inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | Callable[[Path], None]) -> None:
    """Replace ``path`` all or nothing: write a temporary file in the same folder (``data`` bytes, or
    ``data(tmp_path)`` draws it; the temporary name keeps ``path``'s suffix), fsync it, rename it
    over ``path`` and fsync the folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        if callable(data):
            data(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        else:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def weights_digest(weights: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every weight's name and bytes, in order (see the module docstring)."""
    h = hashlib.sha256()
    for name, w in weights.items():
        h.update(name.encode())
        h.update(w.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def json_safe(obj):
    """``obj`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def begin_run(out: Path) -> None:
    """Mark ``out`` as a run in progress: create it and remove an earlier run's manifest."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)


def write_run(out: Path, graph, weights: Mapping[str, torch.Tensor], metrics: dict,
              figures: Iterable[tuple[str, Callable[[Path], None]]] = ()) -> None:
    """Write a finished run into ``out``: ``weights.safetensors`` (metadata: the model's canonical
    hash), ``model.toml`` (resolved), ``metrics.json`` (NaN as null), each figure ``(file name,
    draw(path))``, then ``manifest.json``."""
    from safetensors.torch import save

    from neuro.model.spec import dump_model

    begin_run(out)
    tensors = {name: w.detach().cpu().contiguous() for name, w in weights.items()}
    files = {
        "weights.safetensors": save(tensors, metadata={"model_hash": graph.canonical_hash()}),
        "model.toml": dump_model(graph).encode(),
        "metrics.json": (json.dumps(json_safe(metrics), indent=2) + "\n").encode(),
    }
    for name, data in files.items():
        atomic_write(out / name, data)
    written = list(files)
    for name, draw in figures:
        atomic_write(out / name, draw)
        written.append(name)
    for stale in set(_OUTPUTS) - set(written):
        (out / stale).unlink(missing_ok=True)
    manifest = {
        "model": graph.name,
        "weights_sha256": metrics.get("weights_sha256"),
        "files": {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in written},
    }
    atomic_write(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
