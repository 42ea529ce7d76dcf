"""neuro: spiking neural networks trained through one exact update engine.

The public API (each name loads its module on first use, so ``import neuro`` stays cheap)::

    import neuro

    graph = neuro.load_model("digits_bptt")            # a bundled name or a path to a .toml file
    result = neuro.train(graph, epochs=1, out_dir="runs/digits")   # any mode, checkpoints, metrics
    run = neuro.load_run("runs/digits")                # graph, network with the trained weights, metrics
    test = neuro.load_data(graph, "test")              # encodes with the model's own encoder
    x = test.encode(range(4))                          # (T, B, inputs)
    scores = run.network(x).readout.max(0).values      # Norse-style forward pass
    report = neuro.crosscheck(graph, "runs/check")     # the same model in Brian2
    plan = neuro.plan(graph, mode="eprop")             # memory before anything runs

Layers (bottom-up; a lower layer never imports a higher one, ``lint-imports`` checks it):
``numerics`` / ``algebra`` -> ``engine`` -> ``neurons`` / ``data`` -> ``rules`` -> ``model`` ->
``sim`` / ``plot`` -> ``train`` -> ``crosscheck`` / ``deploy`` -> ``cli``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> (module, attribute)
_API = {
    "load_model": ("neuro.model.bundled", "load_model"),
    "ModelGraph": ("neuro.model.graph", "ModelGraph"),
    "ModelFileError": ("neuro.model.spec", "ModelFileError"),
    "Network": ("neuro.sim.network", "Network"),
    "UpdateEngine": ("neuro.engine", "UpdateEngine"),
    "Contributions": ("neuro.engine", "Contributions"),
    "train": ("neuro.training.run", "train"),
    "TrainResult": ("neuro.training.run", "TrainResult"),
    "MODES": ("neuro.training.modes", "MODES"),
    "load_run": ("neuro.training.outputs", "load_run"),
    "load_data": ("neuro.training.data", "load_split"),
    "crosscheck": ("neuro.crosscheck", None),  # a callable module: fidelity.crosscheck
    "plan": ("neuro.training.plan", "memory_plan"),
    "rules": ("neuro.rules", None),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'neuro' has no attribute {name!r}")
    module, attr = _API[name]
    value = importlib.import_module(module)
    return value if attr is None else getattr(value, attr)


def __dir__() -> list[str]:
    return sorted(__all__)
