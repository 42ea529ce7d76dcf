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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["MANIFEST", "RUN_FILES", "Run", "RunFolder", "RunFolderError", "atomic_write", "begin_run",
           "fsync_dir", "json_safe", "load_run", "read_run", "weights_digest", "write_run"]

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


#: The files a run folder must hold (and its manifest must list) to be certified or signed.
RUN_FILES = ("model.toml", "weights.safetensors", "metrics.json")


class RunFolderError(ValueError):
    """A run folder is missing, incomplete (no ``manifest.json``) or changed after the run finished."""


@dataclass
class RunFolder:
    """A complete run folder whose files match its manifest.

    Attributes:
        path: the folder.
        graph: the run's resolved model (``model.toml``).
        weights_bytes: the bytes of ``weights.safetensors`` (the bytes whose sha256 was checked).
        metrics: ``metrics.json``.
        manifest: ``manifest.json`` (``model``, ``weights_sha256``, ``files``: name -> sha256).
    """

    path: Path
    graph: object
    weights_bytes: bytes
    metrics: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """Projection name -> weight tensor, read from :attr:`weights_bytes` (safetensors, no pickle)."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            return dict(load(self.weights_bytes))
        except SafetensorError as exc:
            raise RunFolderError(f"{self.path / 'weights.safetensors'}: not a safetensors file "
                                 f"({exc})") from None


def read_run(run_dir: str | Path) -> RunFolder:
    """Read a run folder written by ``neuro train``, checking that it is complete and unchanged.

    Raises:
        RunFolderError: no such folder; no ``manifest.json`` (the run is incomplete); a file the
            manifest lists is missing or does not match its sha256; a required file is not listed.
    """
    from neuro.model.spec import load_model

    path = Path(run_dir)
    if not path.is_dir():
        raise RunFolderError(f"{path}: no such run folder")
    if not (path / MANIFEST).is_file():
        if not any((path / name).exists() for name in RUN_FILES):
            raise RunFolderError(f"{path}: not a `neuro train` output folder (no {', '.join(RUN_FILES)})")
        raise RunFolderError(f"{path}: the run is incomplete: it has no {MANIFEST}, which `neuro train` "
                             "writes last, so the run was killed or is still running; train it again")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise RunFolderError(f"{path / MANIFEST}: unreadable manifest ({exc})") from None
    missing = [name for name in RUN_FILES if name not in files]
    if missing:
        raise RunFolderError(f"{path / MANIFEST}: does not list {', '.join(missing)}")
    blobs = {}
    for name, digest in sorted(files.items()):
        try:
            blobs[name] = (path / name).read_bytes()
        except FileNotFoundError:
            raise RunFolderError(f"{path}: {name} is listed in {MANIFEST} but missing") from None
        if hashlib.sha256(blobs[name]).hexdigest() != digest:
            raise RunFolderError(f"{path / name}: does not match its sha256 in {MANIFEST} "
                                 "(changed after the run finished)")
    try:
        metrics = json.loads(blobs["metrics.json"])
    except ValueError as exc:
        raise RunFolderError(f"{path / 'metrics.json'}: not JSON ({exc})") from None
    if not isinstance(metrics, dict):
        raise RunFolderError(f"{path / 'metrics.json'}: not a JSON object")
    if metrics.get("weights_sha256") != manifest.get("weights_sha256"):
        raise RunFolderError(f"{path}: metrics.json and {MANIFEST} name different weights_sha256")
    graph = load_model(path / "model.toml")
    return RunFolder(path=path, graph=graph, weights_bytes=blobs["weights.safetensors"], metrics=metrics,
                     manifest=manifest)


@dataclass
class Run:
    """A finished run folder, loaded: its resolved model, a network holding the trained weights, its
    metrics, and the folder."""

    graph: object
    network: object
    metrics: dict
    path: Path


def load_run(path: str | Path) -> Run:
    """Load a complete run folder (:func:`read_run`'s checks) with its weights in a
    :class:`~neuro.sim.network.Network` (a :class:`~neuro.sim.reversible_network.ReversibleNetwork`
    for a ``[reversible]`` model); RunFolderError (a ValueError) when the weights do not fit the
    model or do not match ``weights_sha256``."""
    run = read_run(path)
    graph, weights, out = run.graph, run.weights, run.path
    if graph.reversible is not None:
        from neuro.sim.reversible_network import ReversibleNetwork

        network = ReversibleNetwork(graph)
    else:
        from neuro.sim.network import Network

        network = Network(graph, dtype=next(iter(weights.values())).dtype)
    if set(weights) != set(network.weights):
        raise RunFolderError(f"{out / 'weights.safetensors'} holds {sorted(weights)}, the model "
                             f"{sorted(network.weights)}")
    ordered = {name: weights[name] for name in network.weights}  # the digest's order: the network's
    if weights_digest(ordered) != run.metrics["weights_sha256"]:
        raise RunFolderError(f"{out / 'weights.safetensors'}: the weights do not match metrics.json's "
                             "weights_sha256")
    with torch.no_grad():
        for name, w in network.weights.items():
            w.copy_(ordered[name])
    return Run(graph=graph, network=network, metrics=run.metrics, path=out)
