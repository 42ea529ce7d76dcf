"""The bundled model files (``models/`` beside the package in a source checkout) and how a name or a
path is resolved to a model file."""

from __future__ import annotations

import difflib
from pathlib import Path

__all__ = ["MODELS_DIR", "bundled_names", "find_model", "load_model"]

#: The bundled model files (a source checkout: ``pip install -e .`` keeps them beside the package).
MODELS_DIR = Path(__file__).resolve().parent.parent.parent / "models"


def bundled_names() -> list[str]:
    """Names of the bundled models (file stems), sorted."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.toml"))


def find_model(text: str | Path) -> Path:
    """The model file ``text`` names: an existing path, else a bundled model's name (with or without
    ``.toml``).  ValueError naming the bundled models and the nearest one otherwise."""
    path = Path(text)
    if path.is_file():
        return path
    bundled = MODELS_DIR / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    if path.parent == Path(".") and bundled.is_file():
        return bundled
    names = bundled_names()
    near = difflib.get_close_matches(path.stem, names, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ValueError(f"no model file {str(text)!r} (a path to a .toml file, or a bundled model: "
                     f"{', '.join(names)}){hint}")


def load_model(name: str | Path):
    """The :class:`~neuro.model.graph.ModelGraph` of a model file or a bundled model's name
    (:func:`find_model`); ModelFileError for a file that is not a valid model."""
    from neuro.model.spec import load_model as load_file

    return load_file(find_model(name))
