"""The model layer: model files (TOML with physical units) and the typed graph they describe.

Import from :mod:`neuro.model.spec` (reading and writing files: ``load_model``, ``loads_model``,
``model_from_dict``, ``dump_model``, ``ModelFileError``, ``parse_*``) and :mod:`neuro.model.graph`
(``ModelGraph`` and its pieces, ``GraphError``, the vocabularies), or from here.  The modules, one job
each:

* :mod:`~neuro.model.errors` -- ``GraphError``, ``ModelFileError``, hints (aliases, nearest names);
* :mod:`~neuro.model.checks` -- value checks of the graph pieces;
* :mod:`~neuro.model.units` -- quantities with Brian2's unit names;
* :mod:`~neuro.model.population`, :mod:`~neuro.model.projection`, :mod:`~neuro.model.weights`
  (``Init``: drawn or given initial weights), :mod:`~neuro.model.encoding`,
  :mod:`~neuro.model.settings` (data, training, cross-check), :mod:`~neuro.model.reversible` -- the
  typed pieces;
* :mod:`~neuro.model.graph` -- ``ModelGraph``: topology, invariants, canonical hash;
* :mod:`~neuro.model.schema`, :mod:`~neuro.model.table`, :mod:`~neuro.model.reader`,
  :mod:`~neuro.model.writer` -- the model-file keys, reading TOML into a graph, writing it back.

The layer reads the rule registry, the data-set registry, the storage formats and the learning-rate
schedules from the layers below; it imports no simulator.
"""

from neuro.model.errors import GraphError, ModelFileError
from neuro.model.graph import ModelGraph
from neuro.model.population import Population
from neuro.model.projection import Projection
from neuro.model.reader import load_model, loads_model, model_from_dict
from neuro.model.weights import Init
from neuro.model.writer import dump_model

__all__ = [
    "GraphError",
    "Init",
    "ModelFileError",
    "ModelGraph",
    "Population",
    "Projection",
    "dump_model",
    "load_model",
    "loads_model",
    "model_from_dict",
]
