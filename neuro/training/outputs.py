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
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["MANIFEST", "Run", "atomic_write", "begin_run", "json_safe", "load_run", "weights_digest",
           "write_run"]

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


@dataclass
class Run:
    """A finished run folder, loaded: its resolved model, a network holding the trained weights, its
    metrics, and the folder."""

    graph: object
    network: object
    metrics: dict
    path: Path


def load_run(path: str | Path) -> Run:
    """Load a run folder written by :func:`write_run` (``neuro train``): ``model.toml``, the weights
    (into a :class:`~neuro.sim.network.Network`, or a
    :class:`~neuro.sim.reversible_network.ReversibleNetwork` for a ``[reversible]`` model) and
    ``metrics.json``.  ValueError when the folder is not a complete run (no ``manifest.json``: the
    run was killed or is still going), a file does not match the manifest, or the weights do not
    match ``weights_sha256``."""
    from safetensors.torch import load_file

    from neuro.model.spec import load_model

    out = Path(path)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        raise ValueError(f"{out}: not a complete run folder (no {MANIFEST}: the run was killed or is "
                         "still going; resume it with `neuro train MODEL --resume DIR`)") from None
    for name, digest in manifest["files"].items():
        if not (out / name).is_file() or hashlib.sha256((out / name).read_bytes()).hexdigest() != digest:
            raise ValueError(f"{out / name} does not match {out / MANIFEST} (changed or removed after "
                             "the run)")
    graph = load_model(out / "model.toml")
    metrics = json.loads((out / "metrics.json").read_text())
    weights = load_file(out / "weights.safetensors")
    if graph.reversible is not None:
        from neuro.sim.reversible_network import ReversibleNetwork

        network = ReversibleNetwork(graph)
    else:
        from neuro.sim.network import Network

        network = Network(graph, dtype=next(iter(weights.values())).dtype)
    if set(weights) != set(network.weights):
        raise ValueError(f"{out / 'weights.safetensors'} holds {sorted(weights)}, the model "
                         f"{sorted(network.weights)}")
    ordered = {name: weights[name] for name in network.weights}  # the digest's order: the network's
    if weights_digest(ordered) != metrics["weights_sha256"]:
        raise ValueError(f"{out / 'weights.safetensors'}: the weights do not match metrics.json's "
                         "weights_sha256")
    with torch.no_grad():
        for name, w in network.weights.items():
            w.copy_(ordered[name])
    return Run(graph=graph, network=network, metrics=metrics, path=out)
