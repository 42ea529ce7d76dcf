"""NIR exchange (Neuromorphic Intermediate Representation, the ``nir`` package).

Export writes the NIR nodes directly from the model graph and its weights (Norse's exporter is not
used: Norse 1.1.0 writes ``tau = dt / tau_inv``, i.e. ``dt * tau``, 1000x too small at dt = 1 ms):

==================  ========================================================================
population          NIR node (all time constants in **seconds**, arrays of one value per neuron)
==================  ========================================================================
``input``           ``Input(input_type={"input": [size]})``
``LIF``             ``CubaLIF(tau_syn, tau_mem, r=1, v_leak, v_threshold, v_reset, w_in=1)``
``LIFBox``          ``LIF(tau=tau_mem, r=1, v_leak, v_threshold, v_reset)``
``LI``              ``CubaLI(tau_syn, tau_mem, r=1, v_leak, w_in=1)``
dense / recurrent   ``Affine(weight (target, source), bias=0)`` (recurrent: an edge back into the
                    population, a cycle in the NIR graph)
one_to_one          ``Scale(scale)``
delay d > 0         a ``Delay(delay=d seconds)`` node between the source and the projection
==================  ========================================================================

plus one ``Output`` node fed by the output population.  NIR describes continuous-time dynamics; the
discretisation is Norse's forward Euler with current jumps (``i += x``, ``v += dt/tau_mem * (v_leak -
v + i)``, ``i -= dt/tau_syn * i``), which is what :class:`neuro.sim.network.Network` runs.  The graph
metadata carries ``dt``, ``duration``, the readout and the input encodings (NIR has no place for
them), so our own files round-trip to the same model graph and bit-identical spikes.  AdaptiveLIF
populations and refractory periods have no NIR node and are refused with a clear error.

Import accepts files (``nir.read``) and in-memory ``NIRGraph`` objects:

* ``CubaLIF`` -> LIF, ``LIF`` -> LIFBox, ``CubaLI`` -> LI, ``LI`` (no synaptic current) -> LI with
  ``tau_syn = dt`` (then the current decays fully each step and the update equals Norse's LIBox
  step exactly), ``Affine``/``Linear`` -> dense projection (bias must be 0), ``Scale`` ->
  one_to_one, ``Delay`` -> projection delay.  ``w_in`` and ``r`` are folded into the incoming
  weights (the dynamics are linear in them).
* **Norse's tau bug, fixed explicitly**: graphs made by ``norse.torch.to_nir`` /
  ``norse.torch.utils.export_nir`` (1.1.0) carry ``tau_nir = dt * tau``.  With
  ``producer="norse"`` (or ``"auto"``, the default, which assumes Norse when a graph not written by
  neuro has a time constant shorter than one step) the true constant is recovered as
  ``tau = 1 / float32(dt / tau_nir)``: Norse stores ``tau_inv`` in float32, so this gives back its
  exact ``tau_inv``.  Norse's graphs hold 0-d torch tensors, which ``nir.write`` cannot store; pass
  the ``NIRGraph`` object itself.
* snnTorch's exporter writes NIR time constants in seconds; ``producer="snntorch"`` reads them as
  they are (untested here when snnTorch is not installed).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuro.model.graph import (
    CrosscheckSpec,
    DataSpec,
    Encoding,
    Init,
    ModelGraph,
    Population,
    Projection,
    TrainingSpec,
)

__all__ = ["export_nir", "import_nir", "read_nir", "write_nir", "NIRError", "PRODUCERS", "cli_export_nir",
           "cli_import_nir"]

PRODUCERS = ("auto", "neuro", "norse", "snntorch", "other")


class NIRError(ValueError):
    """A model cannot be expressed in NIR, or a NIR graph cannot be read as a neuro model."""


def _nir():
    import nir

    return nir


def _full(value: float, size: int) -> np.ndarray:
    return np.full((size,), float(value), dtype=np.float64)


def _output_name(graph: ModelGraph) -> str:
    name = "output"
    while name in graph.populations or name in graph.projections:
        name += "_"
    return name


def export_nir(graph: ModelGraph, weights: Mapping[str, torch.Tensor]):
    """A ``nir.NIRGraph`` of ``graph`` with ``weights`` (projection -> tensor, as stored).

    Node names are the population and projection names (plus ``output`` and ``NAME_delay`` nodes).
    Raises NIRError for AdaptiveLIF populations, refractory periods and multivector weights.
    """
    graph.require_plain("export_nir")
    nir = _nir()
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    for pop in graph.populations.values():
        n = pop.size
        if pop.refractory:
            raise NIRError(f"population {pop.name}: NIR has no refractory period (refractory = "
                           f"{pop.refractory!r} s); export a model without one")
        if pop.type == "input":
            nodes[pop.name] = nir.Input(input_type={"input": np.array([n])})
        elif pop.type == "LIF":
            nodes[pop.name] = nir.CubaLIF(
                tau_syn=_full(pop.tau_syn, n), tau_mem=_full(pop.tau_mem, n), r=_full(1.0, n),
                v_leak=_full(pop.v_leak, n), v_threshold=_full(pop.v_th, n), v_reset=_full(pop.v_reset, n),
                w_in=_full(1.0, n))
        elif pop.type == "LIFBox":
            nodes[pop.name] = nir.LIF(tau=_full(pop.tau_mem, n), r=_full(1.0, n), v_leak=_full(pop.v_leak, n),
                                      v_threshold=_full(pop.v_th, n), v_reset=_full(pop.v_reset, n))
        elif pop.type == "LI":
            nodes[pop.name] = nir.CubaLI(tau_syn=_full(pop.tau_syn, n), tau_mem=_full(pop.tau_mem, n),
                                         r=_full(1.0, n), v_leak=_full(pop.v_leak, n), w_in=_full(1.0, n))
        else:
            raise NIRError(f"population {pop.name}: NIR has no node for {pop.type} (adaptive threshold)")
    for name, proj in graph.projections.items():
        if name not in weights:
            raise NIRError(f"no weights for projection {name!r}")
        w = weights[name].detach().cpu().numpy()
        if tuple(w.shape) != graph.weight_shape(name) or (proj.algebra, proj.grades) != ((0, 0, 0), (0,)):
            raise NIRError(f"projection {name}: only scalar weights of shape {graph.weight_shape(name)} "
                           f"export to NIR, got {tuple(w.shape)} in Cl{proj.algebra}")
        if proj.kind == "one_to_one":
            nodes[name] = nir.Scale(scale=w.copy())
        else:
            nodes[name] = nir.Affine(weight=w.copy(), bias=np.zeros(w.shape[0], dtype=w.dtype))
        src = proj.source
        if proj.delay > 0:
            delay = f"{name}_delay"
            nodes[delay] = nir.Delay(delay=_full(proj.delay, graph.populations[proj.source].size))
            edges.append((src, delay))
            src = delay
        edges += [(src, name), (name, proj.target)]
    out = _output_name(graph)
    nodes[out] = nir.Output(output_type={"output": np.array([graph.populations[graph.output].size])})
    edges.append((graph.output, out))
    from neuro import __version__

    metadata = {
        "producer": "neuro", "neuro_version": __version__, "model": graph.name,
        "description": graph.description, "dt": graph.dt, "duration": graph.duration,
        "output": graph.output, "time_unit": "s",
        "encodings": json.dumps({k: e.to_dict() for k, e in graph.encodings.items()}, sort_keys=True),
        "training": json.dumps(graph.training.to_dict(), sort_keys=True),
        "formats": json.dumps({k: p.format for k, p in graph.projections.items()}, sort_keys=True),
        "projections": json.dumps({k: {f: p.to_dict()[f] for f in _BOOKKEEPING}
                                   for k, p in graph.projections.items()}, sort_keys=True),
        "data": json.dumps(None if graph.data is None else graph.data.to_dict(), sort_keys=True),
        "crosscheck": json.dumps(graph.crosscheck.to_dict(), sort_keys=True),
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


#: Projection fields NIR has no place for; carried in the graph metadata by our exporter.
_BOOKKEEPING = ("init", "format", "rule", "rule_params", "bounds", "sign")


def write_nir(graph: ModelGraph, weights: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Export (:func:`export_nir`) and write to an HDF5 ``.nir`` file; returns the path."""
    nir = _nir()
    path = Path(path)
    nir.write(path, export_nir(graph, weights))
    return path


def read_nir(path: str | Path, **kwargs: Any) -> tuple[ModelGraph, dict[str, torch.Tensor]]:
    """Read a ``.nir`` file and :func:`import_nir` it."""
    return import_nir(_nir().read(Path(path)), **kwargs)


# --------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------


def _arr(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _value(x: Any, what: str, node: str) -> float:
    """The single value of a per-neuron parameter (NIR arrays may be scalars or per neuron)."""
    a = _arr(x).astype(np.float64).reshape(-1)
    if a.size == 0:
        raise NIRError(f"node {node!r}: empty {what}")
    if not np.all(a == a[0]):
        raise NIRError(f"node {node!r}: {what} differs between neurons; neuro populations share one value")
    return float(a[0])


def _ident(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in str(name))
    if not out or not out.isidentifier() or not out.isascii():
        out = f"n{out}"
    return out


def _fix_tau(tau_nir: float, dt: float) -> float:
    """Undo Norse 1.1.0's ``tau_nir = dt / tau_inv``: ``tau = 1 / float32(dt / tau_nir)``."""
    tau_inv = np.float32(dt) / np.float32(tau_nir)
    return 1.0 / float(tau_inv)


def import_nir(source: Any, *, dt: float | None = None, duration: float | None = None,
               name: str | None = None, producer: str = "auto", fmt: str = "float32"
               ) -> tuple[ModelGraph, dict[str, torch.Tensor]]:
    """A model graph and its weights from a NIR graph (object or ``.nir`` path).

    Args:
        source: ``nir.NIRGraph`` or a path to a ``.nir`` file.
        dt: time step, seconds (default: the graph's metadata; required if it has none).
        duration: simulated time per sample, seconds (default: metadata, else ``100 * dt``).
        name: model name (default: metadata, else ``"nir_model"``).
        producer: ``"neuro"``, ``"norse"`` (fix Norse 1.1.0's tau bug), ``"snntorch"``/``"other"``
            (taus in seconds), or ``"auto"`` (neuro if the metadata says so; Norse if some time
            constant is shorter than ``dt``, with a warning; else seconds).
        fmt: storage format of the imported projections (when the metadata does not say).
    Returns:
        ``(graph, weights)`` with weights as float tensors of ``graph.weight_shape``.
    """
    nir = _nir()
    if isinstance(source, str | Path):
        source = nir.read(Path(source))
    if producer not in PRODUCERS:
        raise NIRError(f"producer must be one of {PRODUCERS}, got {producer!r}")
    meta = dict(getattr(source, "metadata", None) or {})

    def meta_get(key: str) -> Any:
        v = meta.get(key)
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, np.ndarray):
            v = v.item() if v.size == 1 else v
        if isinstance(v, np.generic):
            v = v.item()
        return v

    ours = meta_get("producer") == "neuro"
    if dt is None:
        dt = meta_get("dt")
        if dt is None:
            raise NIRError("the NIR graph carries no time step; pass dt (seconds), e.g. dt=1e-3")
    dt = float(dt)
    if duration is None:
        duration = meta_get("duration")
    duration = float(duration) if duration is not None else 100 * dt
    nodes = dict(source.nodes)
    edges = [tuple(e) for e in source.edges]
    taus = []
    for node in nodes.values():
        for attr in ("tau", "tau_mem", "tau_syn"):
            if hasattr(node, attr) and getattr(node, attr) is not None:
                taus.append(float(np.min(_arr(getattr(node, attr)))))
    if producer == "auto":
        producer = "neuro" if ours else ("norse" if taus and min(taus) < dt else "other")
        if producer == "norse":
            warnings.warn(f"NIR graph has time constants shorter than dt = {dt} s (min {min(taus):.3g} s): "
                          "assuming Norse 1.1.0's exporter (tau written as dt * tau) and correcting it; "
                          "pass producer='other' to read the values as seconds", stacklevel=2)

    def tau(x: Any, what: str, node: str) -> float:
        v = _value(x, what, node)
        return _fix_tau(v, dt) if producer == "norse" else v

    neuron_types = (nir.CubaLIF, nir.LIF, nir.CubaLI, nir.LI, nir.Input)
    pops: dict[str, Population] = {}
    gains: dict[str, float] = {}  # population -> factor r * w_in folded into incoming weights
    rename = {k: _ident(k) for k in nodes}
    for key, node in nodes.items():
        pname = rename[key]
        if isinstance(node, nir.Input):
            shape = _arr(next(iter(node.input_type.values())))
            pops[pname] = Population(pname, "input", int(shape.reshape(-1)[-1]))
        elif isinstance(node, nir.CubaLIF | nir.LIF | nir.CubaLI | nir.LI):
            size = int(_arr(node.v_leak).size) if _arr(node.v_leak).size > 1 else None
            common = {"v_leak": _value(node.v_leak, "v_leak", key)}
            if isinstance(node, nir.CubaLIF | nir.LIF):
                v_reset = getattr(node, "v_reset", None)
                common.update(v_th=_value(node.v_threshold, "v_threshold", key),
                              v_reset=0.0 if v_reset is None else _value(v_reset, "v_reset", key),
                              refractory=0.0, surrogate="superspike", surrogate_scale=10.0)
            if isinstance(node, nir.CubaLIF):
                kw = dict(type="LIF", tau_syn=tau(node.tau_syn, "tau_syn", key),
                          tau_mem=tau(node.tau_mem, "tau_mem", key))
                gain = _value(node.r, "r", key) * _value(node.w_in, "w_in", key)
            elif isinstance(node, nir.LIF):
                kw = dict(type="LIFBox", tau_mem=tau(node.tau, "tau", key))
                gain = _value(node.r, "r", key)
            elif isinstance(node, nir.CubaLI):
                kw = dict(type="LI", tau_syn=tau(node.tau_syn, "tau_syn", key),
                          tau_mem=tau(node.tau_mem, "tau_mem", key))
                gain = _value(node.r, "r", key) * _value(node.w_in, "w_in", key)
                common = {"v_leak": common["v_leak"]}
            else:  # LI: no synaptic current -> tau_syn = dt empties the current every step
                kw = dict(type="LI", tau_syn=dt, tau_mem=tau(node.tau, "tau", key))
                gain = _value(node.r, "r", key)
                common = {"v_leak": common["v_leak"]}
            pops[pname] = (pname, kw, common, size)  # size resolved from the weights below
            gains[pname] = gain
        elif not isinstance(node, nir.Affine | nir.Linear | nir.Scale | nir.Delay | nir.Output):
            raise NIRError(f"node {key!r}: NIR {type(node).__name__} has no neuro equivalent (supported: "
                           "Input, Output, CubaLIF, LIF, CubaLI, LI, Affine, Linear, Scale, Delay)")
    succ: dict[str, list[str]] = {k: [] for k in nodes}
    pred: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise NIRError(f"edge {a!r} -> {b!r} names a node that does not exist")
        succ[a].append(b)
        pred[b].append(a)

    def neuron_before(key: str) -> tuple[str, float]:
        """Walk back from a synapse node to the neuron node feeding it (through one Delay)."""
        delay = 0.0
        (p,) = pred[key] or [None]
        if p is None:
            raise NIRError(f"node {key!r} has no input edge")
        if isinstance(nodes[p], nir.Delay):
            delay = _value(nodes[p].delay, "delay", p)
            (p,) = pred[p]
        if not isinstance(nodes[p], neuron_types):
            raise NIRError(f"node {key!r} is fed by {type(nodes[p]).__name__} {p!r}; "
                           "expected a neuron or Input")
        return rename[p], delay

    projs: dict[str, Projection] = {}
    weights: dict[str, torch.Tensor] = {}
    sizes: dict[str, int] = {n: p.size for n, p in pops.items() if isinstance(p, Population)}
    for key, node in nodes.items():
        if not isinstance(node, nir.Affine | nir.Linear | nir.Scale):
            continue
        if len(succ[key]) != 1 or not isinstance(nodes[succ[key][0]], neuron_types[:4]):
            raise NIRError(f"synapse node {key!r} must feed exactly one neuron node")
        target = rename[succ[key][0]]
        src, delay = neuron_before(key)
        if isinstance(node, nir.Scale):
            w = torch.as_tensor(_arr(node.scale).astype(np.float64).reshape(-1))
            kind = "one_to_one"
            sizes.setdefault(target, w.shape[0])
        else:
            w = torch.as_tensor(_arr(node.weight).astype(np.float64))
            bias = getattr(node, "bias", None)
            if bias is not None and np.any(_arr(bias) != 0):
                raise NIRError(f"node {key!r}: Affine bias is not 0; neuro projections have no bias")
            kind = "recurrent" if src == target else "dense"
            sizes.setdefault(target, w.shape[0])
            sizes.setdefault(src, w.shape[1])
        pname = rename[key] if rename[key] not in pops else f"{rename[key]}_w"
        if (meta_fmts := meta_get("formats")) is not None:
            proj_fmt = json.loads(meta_fmts).get(pname, fmt)
        else:
            proj_fmt = fmt
        extra = json.loads(meta_get("projections") or "{}").get(pname)
        if extra:
            projs[pname] = Projection(
                pname, src, target, kind, init=Init(**extra["init"]), format=extra["format"], delay=delay,
                rule=extra["rule"], rule_params=tuple(sorted(extra["rule_params"].items())),
                bounds=None if extra["bounds"] is None else tuple(extra["bounds"]), sign=extra["sign"])
        else:
            projs[pname] = Projection(pname, src, target, kind, init=Init("constant", value=0.0),
                                      format=proj_fmt, delay=delay, rule="bptt")
        weights[pname] = w
    for pname, p in list(pops.items()):
        if isinstance(p, tuple):
            _, kw, common, size = p
            size = size or sizes.get(pname)
            if size is None:
                raise NIRError(f"cannot tell the size of population {pname!r} (no weights into it)")
            pops[pname] = Population(pname, size=size, **kw, **common)
    for pname, w in weights.items():  # fold r * w_in of the target into its incoming weights
        g = gains.get(projs[pname].target, 1.0)
        if g != 1.0:
            weights[pname] = w * g
    outs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
    if len(outs) != 1 or len(pred[outs[0]]) != 1:
        raise NIRError("expected exactly one Output node fed by one population")
    output = rename[pred[outs[0]][0]]
    if meta_get("encodings"):
        encodings = {k: Encoding(**v) for k, v in json.loads(meta_get("encodings")).items()}
    else:
        encodings = {n: Encoding(n, "current", gain=1.0) for n, p in pops.items() if p.type == "input"}
    if meta_get("training"):
        training = TrainingSpec(**json.loads(meta_get("training")))
    else:
        readout = "spike_count" if pops[output].spiking else "max_membrane"
        training = TrainingSpec(readout=readout)
    data = json.loads(meta_get("data") or "null")
    crosscheck = json.loads(meta_get("crosscheck") or "null")
    graph = ModelGraph(
        data=None if data is None else DataSpec(**data),
        crosscheck=CrosscheckSpec() if crosscheck is None else CrosscheckSpec(**crosscheck),
        name=name or meta_get("model") or "nir_model",
        description=meta_get("description") or f"imported from NIR ({producer})",
        dt=dt, duration=duration, populations=pops, projections=projs, output=output,
        encodings=encodings, training=training)
    dtype = torch.float64 if any(p.format != "float32" for p in graph.projections.values()) else torch.float32
    weights = {k: w.to(dtype).reshape(graph.weight_shape(k)) for k, w in weights.items()}
    return graph, weights


def load_into_network(graph: ModelGraph, weights: Mapping[str, torch.Tensor],
                      dtype: torch.dtype | None = None):
    """A :class:`neuro.sim.network.Network` of ``graph`` holding ``weights`` (inference mode)."""
    from neuro.sim.network import Network

    graph.require_plain("load_into_network (serve, NIR)")
    if dtype is None:
        dtype = next(iter(weights.values())).dtype if weights else torch.float32
    net = Network(graph, dtype=dtype)
    with torch.no_grad():
        for k, w in weights.items():
            net.weights[k].copy_(w.to(dtype))
    net.requires_grad_(False)
    return net


def cli_export_nir(run_or_model: str, out: str, *, weights: str | None = None) -> int:
    """``neuro export-nir RUN_DIR|MODEL.toml OUT.nir [--weights W.safetensors]``.

    A complete run folder (:func:`neuro.training.outputs.read_run`) supplies ``model.toml`` and
    ``weights.safetensors``; a model file needs ``--weights``.  Returns 0, or 2 with the error.
    """
    import sys

    from neuro.deploy.certify import load_weights
    from neuro.model.spec import load_model
    from neuro.training.outputs import read_run

    try:
        p = Path(run_or_model)
        if p.is_dir() and weights is None:
            run = read_run(p)
            graph, tensors = run.graph, run.weights
        elif weights is None:
            raise NIRError("a model file needs --weights WEIGHTS.safetensors")
        else:
            graph = load_model(p / "model.toml" if p.is_dir() else p)
            tensors = load_weights(weights)
        write_nir(graph, tensors, out)
    except (NIRError, OSError, ValueError) as exc:
        print(f"neuro export-nir: {exc}", file=sys.stderr)
        return 2
    print(f"{graph.name} -> {out} (dt {graph.dt} s, {len(graph.projections)} projections)")
    return 0


def cli_import_nir(path: str, out_dir: str, *, dt: float | None = None, producer: str = "auto",
                   name: str | None = None) -> int:
    """``neuro import-nir FILE.nir OUT_DIR [--dt SECONDS] [--producer auto|neuro|norse|snntorch|other]
    [--name NAME]``: writes ``OUT_DIR/model.toml`` and ``OUT_DIR/weights.safetensors``."""
    import sys

    from safetensors.torch import save_file

    from neuro.model.spec import dump_model

    try:
        graph, weights = read_nir(path, dt=dt, producer=producer, name=name)
    except (NIRError, OSError, ValueError) as exc:
        print(f"neuro import-nir: {exc}", file=sys.stderr)
        return 2
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.toml").write_text(dump_model(graph))
    save_file({k: v.contiguous() for k, v in weights.items()}, out / "weights.safetensors")
    print(f"{path} -> {out}/model.toml, weights.safetensors ({graph.name}, dt {graph.dt} s)")
    return 0
