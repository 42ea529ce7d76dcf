"""What a cross-check starts from: its inputs (generated from the model's encodings, or a user's
raster file) and its initial weights.

* :func:`make_inputs` -- seeded inputs ``(T, B, n)`` for every input population, from its encoding
  (Poisson trains or constant currents).
* :func:`read_inputs` -- the arrays of a ``.npz`` or ``.safetensors`` file (``neuro crosscheck
  --inputs FILE``).
* :func:`check_inputs` -- arrays matched to the graph's input populations and checked against the
  model (shape, values, number of steps); every error names the file, the shape found and the fix.
* :func:`initial_network` -- the network with seeded weights, or given ones (a trained run's).

A raster is ``(T, n)`` or ``(T, B, n)``: time steps of the model's ``dt``, trials, channels; 0/1
spikes for a spiking encoding (``poisson``, ``latency``, ``spike_times``, ``raster``), real values
for a ``current`` encoding (added to the target's input every step, as the data set's encoder
would).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from neuro.model.graph import ModelGraph
from neuro.sim.network import Network

__all__ = ["RASTER_KEYS", "check_inputs", "initial_network", "make_inputs", "read_inputs"]

#: Names under which a file holds the raster of a model's only input population (a file with one
#: array may use any name; a model with several input populations needs one array per population,
#: under the population's name).
RASTER_KEYS = ("spikes", "inputs")


def make_inputs(graph: ModelGraph, seed: int, batch: int = 1,
                dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Input tensors ``(T, batch, n)`` for every input population of a graph, from its encodings.

    ``poisson`` with ``rate``: :func:`neuro.data.poisson_trains` at that rate; with ``max_rate``:
    per-channel rates ``max_rate * U[0, 1)``; ``current``: ``gain * U[0, 1)`` per channel, every step.
    Other encodings need data: give a raster (:func:`read_inputs`, ``--inputs FILE``).
    """
    from neuro.data import poisson_trains

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, pop in enumerate(graph.inputs()):
        enc = graph.encodings[pop.name]
        if enc.kind == "poisson":
            rate = enc.rate if enc.rate is not None else enc.max_rate * torch.rand(
                pop.size, generator=gen, dtype=torch.float64)
            out[pop.name] = poisson_trains(pop.size, rate, graph.duration, graph.dt, seed + 7919 * k,
                                           batch=batch, dtype=dtype)
        elif enc.kind == "current":
            values = enc.gain * torch.rand(batch, pop.size, generator=gen, dtype=torch.float64)
            out[pop.name] = values.to(dtype).unsqueeze(0).expand(graph.steps, batch, pop.size).clone()
        else:
            raise ValueError(
                f"crosscheck: input {pop.name!r} of {graph.name} uses the {enc.kind} encoding, which "
                f"needs data: give a raster of shape (T, {pop.size}) of 0/1 spikes with --inputs FILE "
                "(.npz or .safetensors; inputs= in Python)"
            )
    return out


def read_inputs(path: str | Path) -> dict[str, torch.Tensor]:
    """The arrays of a ``.npz`` (numpy, no pickles) or ``.safetensors`` file, by name.

    ValueError naming the file when it is missing, of another kind, unreadable, empty or holds
    something other than numbers."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file (--inputs takes a .npz or .safetensors raster)")
    kind = path.suffix.lower()
    if kind == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: not a readable .npz file ({err}); write it with "
                             "numpy.savez(path, spikes=raster)") from None
        for key, a in arrays.items():
            if a.dtype.kind not in "biuf":
                raise ValueError(f"{path}: array {key!r} holds {a.dtype} values; a raster holds numbers "
                                 "(0/1 spikes, or currents for a current-encoded input)")
        tensors = {k: torch.from_numpy(a.copy()) for k, a in arrays.items()}
    elif kind == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(path)
        except Exception as err:  # safetensors raises its own error type for a damaged file
            raise ValueError(f"{path}: not a readable .safetensors file ({err}); write it with "
                             "safetensors.torch.save_file({'spikes': raster}, path)") from None
    else:
        raise ValueError(f"{path}: expected a .npz or .safetensors file, got {kind or 'no extension'!r}")
    if not tensors:
        raise ValueError(f"{path}: holds no array; store the raster under the name 'spikes'")
    return tensors


def _by_population(arrays: Mapping[str, torch.Tensor], graph: ModelGraph, source: str) -> dict:
    """``{population: (key, array)}``: the file's arrays matched to the graph's input populations."""
    names = [p.name for p in graph.inputs()]
    if set(names) <= set(arrays):
        return {n: (n, arrays[n]) for n in names}
    if len(names) == 1:
        keys = list(arrays) if len(arrays) == 1 else [k for k in RASTER_KEYS if k in arrays]
        if keys:
            return {names[0]: (keys[0], arrays[keys[0]])}
        raise ValueError(f"{source}: holds arrays {sorted(arrays)}; store the raster of input "
                         f"{names[0]!r} under the name 'spikes' (or {names[0]!r}), or keep one array")
    raise ValueError(f"{source}: {graph.name} has input populations {names}; store one raster per "
                     f"population under its name (found {sorted(arrays)})")


def check_inputs(arrays: Mapping[str, torch.Tensor] | torch.Tensor, graph: ModelGraph, *,
                 source: str = "inputs", one_trial: bool = False) -> dict[str, torch.Tensor]:
    """Rasters checked against the model: ``{input population: (T, B, n) float64}``.

    Args:
        arrays: name -> array (:func:`read_inputs`), or one tensor for a single input population.
        graph: the model as it will run (``graph.steps`` is the ``T`` a raster must have).
        source: what to name in errors (the file).
        one_trial: only ``B = 1`` (a local-rule model learns on one trial).
    Raises:
        ValueError naming ``source``, the shape and the fix: wrong rank or channel count, a batch
        over 1 where ``one_trial``, non-finite values, values other than 0/1 for a spiking
        encoding, a number of steps other than ``graph.steps``, rasters of unequal ``T`` or ``B``.
    """
    if isinstance(arrays, torch.Tensor | np.ndarray):
        arrays = {RASTER_KEYS[0]: torch.as_tensor(arrays)}
    out: dict[str, torch.Tensor] = {}
    for name, (key, x) in _by_population(arrays, graph, source).items():
        x = torch.as_tensor(x)
        pop, enc = graph.populations[name], graph.encodings[name]
        shape, n = tuple(x.shape), pop.size
        where = f"{source}: raster {key!r} of shape {shape}"
        if x.dim() not in (2, 3) or x.shape[-1] != n or x.shape[0] == 0:
            flipped = " (time is the first axis: transpose it)" if x.dim() == 2 and x.shape[0] == n else ""
            raise ValueError(f"{where}; input {name!r} of {graph.name} takes (T, {n}) or (T, B, {n}): "
                             f"T >= 1 time steps of {graph.dt * 1e3:g} ms, B trials, {n} channels{flipped}")
        x = x.unsqueeze(1) if x.dim() == 2 else x
        if one_trial and x.shape[1] != 1:
            raise ValueError(f"{where}; {graph.name} is a local-rule model, whose cross-check learns on "
                             f"one trial: give (T, {n}) or (T, 1, {n})")
        if x.is_complex():
            raise ValueError(f"{where} holds {x.dtype} values; a raster holds real numbers")
        x = x.to(torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{where} holds NaN or infinite values; a raster holds finite numbers")
        if enc.spiking:
            bad = ((x != 0) & (x != 1)).nonzero()
            if len(bad):
                t, b, c = bad[0].tolist()
                raise ValueError(
                    f"{where}: input {name!r} is {enc.kind}-encoded and takes 0/1 spikes, found "
                    f"{float(x[t, b, c]):g} at step {t}, trial {b}, channel {c} (turn rates into "
                    "spikes first, e.g. rand < rate * dt; real values drive a current-encoded input)")
        if x.shape[0] != graph.steps:
            steps = x.shape[0]
            raise ValueError(
                f"{where} has {steps} steps; the cross-check of {graph.name} runs {graph.steps} steps "
                f"({graph.duration:g} s at dt = {graph.dt * 1e3:g} ms): give a raster of {graph.steps} "
                f"steps, or a duration of {steps * graph.dt:.6g} s (--duration) to check {steps} steps")
        out[name] = x
    first = next(iter(out.values()))
    for name, x in out.items():
        if x.shape[:2] != first.shape[:2]:
            raise ValueError(f"{source}: the rasters disagree in (T, B): {name!r} has "
                             f"{tuple(x.shape[:2])}, another {tuple(first.shape[:2])}")
    return out


def initial_network(graph: ModelGraph, seed: int, dtype: torch.dtype,
                    weights: Mapping[str, torch.Tensor] | None = None) -> Network:
    """The :class:`~neuro.sim.network.Network` a cross-check starts from, in ``dtype``: weights drawn
    from ``seed``, or the given ones (every projection, e.g. a run's trained weights:
    ``neuro.load_run(dir).network.weights``); ValueError naming a missing or misshapen weight."""
    net = Network(graph, seed=seed, dtype=dtype)
    if weights is None:
        return net
    missing = sorted(set(net.weights) - set(weights))
    if missing:
        raise ValueError(f"crosscheck: no weights given for projection(s) {missing} of {graph.name}")
    with torch.no_grad():
        for name, w in net.weights.items():
            given = weights[name]
            if tuple(given.shape) != tuple(w.shape):
                raise ValueError(f"crosscheck: weights of projection {name!r} have shape "
                                 f"{tuple(given.shape)}; {graph.name} needs {tuple(w.shape)}")
            w.copy_(given.detach().to(device=w.device, dtype=dtype))
    return net
