"""Model files: TOML with physical units, read into and written from a :class:`ModelGraph`.

The names users import (the work is done in the modules named in brackets):

* :func:`load_model` (path), :func:`loads_model` (text) and :func:`model_from_dict` (a parsed TOML
  document) -> :class:`~neuro.model.graph.ModelGraph` (:mod:`neuro.model.reader`);
* :func:`dump_model` -> resolved TOML (every default filled in) that re-parses to the same
  canonical hash (:mod:`neuro.model.writer`);
* :func:`parse_quantity`, :func:`parse_time`, :func:`parse_rate` for unit strings
  (:mod:`neuro.model.units`: Brian2 unit names, times in seconds, rates in hertz);
* :class:`ModelFileError`, the only exception these functions raise for bad input; its message
  names the file, the key, what was expected and found, and a hint (:mod:`neuro.model.errors`);
* :data:`FORMAT_HELP` (the keys of every table) and :data:`POPULATION_DEFAULTS`
  (:mod:`neuro.model.schema`).

Reading a model file imports no simulator: Brian2 is imported on the first unit string (for its
unit tables only), Norse never.
"""

from __future__ import annotations

from neuro.model.errors import ModelFileError
from neuro.model.reader import load_model, loads_model, model_from_dict
from neuro.model.schema import FORMAT_HELP, POPULATION_DEFAULTS
from neuro.model.units import parse_quantity, parse_rate, parse_time
from neuro.model.writer import dump_model

__all__ = [
    "FORMAT_HELP",
    "POPULATION_DEFAULTS",
    "ModelFileError",
    "dump_model",
    "load_model",
    "loads_model",
    "model_from_dict",
    "parse_quantity",
    "parse_rate",
    "parse_time",
]
