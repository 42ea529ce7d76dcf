"""The one writer of a run folder: metrics, weights, the resolved model file and figures.

A run folder is complete or visibly incomplete.  :func:`begin_run` removes the folder's
``manifest.json`` before anything is trained, so a killed run leaves a folder without one;
:func:`write_run` writes every file atomically (temporary file, fsync, rename), removes files of an
earlier run that this one does not write, and writes ``manifest.json`` last: the list of the run's
files with their sha256.  Figures and metrics in a folder with a manifest belong to the same run.

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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

__all__ = ["MANIFEST", "atomic_write", "begin_run", "json_safe", "weights_digest", "write_run"]

MANIFEST = "manifest.json"
#: Files a run folder may hold; those of an earlier run that the new run does not write are removed.
_OUTPUTS = ("metrics.json", "weights.safetensors", "model.toml", "learning_curve.png", "raster.png",
            "weights_hist.png", "weights_over_time.png", "receptive_fields.png")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename: all or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        tmp = out / f".{name}.{os.getpid()}.tmp.png"
        draw(tmp)
        os.replace(tmp, out / name)
        written.append(name)
    for stale in set(_OUTPUTS) - set(written):
        (out / stale).unlink(missing_ok=True)
    manifest = {
        "model": graph.name,
        "weights_sha256": metrics.get("weights_sha256"),
        "files": {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in written},
    }
    atomic_write(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
