"""A finished run folder, read for certify, sign and NIR export: complete, and unchanged since.

:func:`neuro.train.outputs.write_run` writes ``manifest.json`` last, with the sha256 of every file of
the run.  :func:`read_run` therefore refuses a folder without a manifest (a run that was killed, or
one still running) and a folder whose files no longer match their manifest hashes, and returns the
model graph, the weight file's bytes (exactly the bytes that were hashed) and the metrics.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neuro.deploy.certify import weights_from_bytes
from neuro.model.graph import ModelGraph
from neuro.train.outputs import MANIFEST

__all__ = ["RUN_FILES", "RunFolder", "RunFolderError", "read_run"]

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
    graph: ModelGraph
    weights_bytes: bytes
    metrics: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """Projection name -> weight tensor, read from :attr:`weights_bytes` (safetensors, no pickle)."""
        return weights_from_bytes(self.weights_bytes)


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
