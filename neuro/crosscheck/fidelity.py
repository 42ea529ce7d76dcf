"""Spike-timing and weight fidelity of our simulation against the Brian2 reference.

Metrics (all on spike rasters ``(T, B, n)`` of 0/1 on the time grid ``dt``; "ours" is the model
under test, "ref" the Brian2 reference):

* ``count_equality`` -- share of neurons (over batch x neurons) whose spike counts are equal.
* ``match_0``, ``match_1``, ``match_2`` -- share of spikes matched one-to-one within 0, 1 or 2
  steps: ``2 * pairs / (n_ours + n_ref)`` (1.0 when both rasters are empty).  Pairs come from a
  greedy matching of the two sorted spike trains of each neuron (earliest first), which is optimal
  for one-dimensional windows.
* ``mean_abs_dt_ms`` -- mean |t_ours - t_ref| of the pairs matched within the cross-check window,
  milliseconds.
* ``gamma_1ms``, ``gamma_2ms`` -- Kistler et al. (1997) coincidence factor with a window of +-1 and
  +-2 ms, as in Jolivet et al. (2008)::

      Gamma = (N_coinc - <N_coinc>) / (0.5 (N_ref + N_ours)) / (1 - 2 nu Delta),
      <N_coinc> = 2 nu Delta N_ref,   nu = N_ours / duration

  computed per neuron (one-to-one coincidences) and averaged over the neurons that spike in
  either raster.  1 means identical timing, 0 chance level.
* ``max_abs_dv`` -- max |v_ours - v_ref| over the recorded membrane traces.
* ``max_abs_dw`` -- max |w_ours - w_ref| over plastic projections after the run (None: none).
* ``rate_diff`` -- largest relative population-rate difference |r_ours - r_ref| / r_ref over the
  spiking populations.

:func:`crosscheck` runs a model in both simulators, writes ``fidelity.json`` and ``overlay.png``
and decides ``passed`` from the model's ``[crosscheck]`` tolerances.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuro.model.graph import ModelGraph
from neuro.rules import registry

__all__ = [
    "spike_trains",
    "match_pairs",
    "coincidence_factor",
    "fidelity_metrics",
    "make_inputs",
    "crosscheck",
    "overlay_figure",
    "STORAGE_FORMATS",
]

#: Weight storage formats :func:`crosscheck` can apply to our side (None: plain ``dtype``).
STORAGE_FORMATS = (None, "posit16", "bposit16", "posit8", "posit32", "bposit32")


def spike_trains(raster: torch.Tensor) -> list[np.ndarray]:
    """Spike steps of each neuron of a ``(T, B, n)`` (or ``(T, n)``) raster, neurons flattened
    batch-major: a list of ``B * n`` sorted int64 arrays."""
    r = raster.detach().to("cpu")
    if r.dim() == 2:
        r = r.unsqueeze(1)
    steps = r.shape[0]
    flat = (r.reshape(steps, -1) > 0).T.numpy()
    return [np.flatnonzero(row) for row in flat]


def match_pairs(a: np.ndarray, b: np.ndarray, window: int) -> np.ndarray:
    """One-to-one pairs of two sorted spike-step arrays with ``|a_i - b_j| <= window`` steps.

    Greedy in time order (optimal for intervals on a line).  Returns the differences
    ``a_i - b_j`` of the pairs (int64 array).
    """
    i = j = 0
    out = []
    while i < len(a) and j < len(b):
        d = int(a[i]) - int(b[j])
        if abs(d) <= window:
            out.append(d)
            i += 1
            j += 1
        elif d < 0:
            i += 1
        else:
            j += 1
    return np.asarray(out, dtype=np.int64)


def coincidence_factor(ours: list[np.ndarray], ref: list[np.ndarray], window_steps: int,
                       duration_steps: int) -> float:
    """Kistler/Jolivet coincidence factor Gamma averaged over neurons that spike in either train.

    Args:
        ours, ref: spike steps per neuron (same length lists).
        window_steps: coincidence window Delta, in steps (+-Delta counts).
        duration_steps: length of the trains, steps.
    Returns 1.0 when no neuron spikes in either raster.
    """
    gammas = []
    for a, b in zip(ours, ref, strict=True):
        n_a, n_b = len(a), len(b)
        if n_a == 0 and n_b == 0:
            continue
        n_coinc = len(match_pairs(a, b, window_steps))
        nu = n_a / duration_steps  # spikes per step
        expected = 2.0 * nu * window_steps * n_b
        norm = 1.0 - 2.0 * nu * window_steps
        if norm <= 0:
            gammas.append(float("nan"))
            continue
        gammas.append((n_coinc - expected) / (0.5 * (n_a + n_b)) / norm)
    if not gammas:
        return 1.0
    return float(np.nanmean(gammas)) if not all(math.isnan(g) for g in gammas) else float("nan")


def fidelity_metrics(
    ours: dict[str, torch.Tensor],
    ref: dict[str, torch.Tensor],
    dt: float,
    *,
    window: float = 2e-3,
    volts_ours: dict[str, torch.Tensor] | None = None,
    volts_ref: dict[str, torch.Tensor] | None = None,
    weights_ours: dict[str, torch.Tensor] | None = None,
    weights_ref: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """All fidelity metrics of two runs (see the module docstring).

    Args:
        ours, ref: population -> spike raster ``(T, B, n)``; the populations compared are those
            present in both (pass only spiking non-input populations).
        dt: time step, seconds.
        window: window of ``mean_abs_dt_ms``, seconds.
        volts_ours, volts_ref: population -> membrane potentials ``(T, B, n)``.
        weights_ours, weights_ref: plastic projection -> final weights.
    Returns:
        dict with ``count_equality``, ``match_0/1/2``, ``mean_abs_dt_ms``, ``gamma_1ms``,
        ``gamma_2ms``, ``max_abs_dv``, ``max_abs_dw``, ``rate_diff`` and ``populations`` (per
        population spike counts and rates in Hz) and ``n_spikes_ours`` / ``n_spikes_ref``.
    """
    pops = [p for p in ours if p in ref]
    if not pops:
        raise ValueError("fidelity: no population in common")
    steps = next(iter(ours.values())).shape[0]
    ta, tb = [], []
    per_pop = {}
    rate_diff = 0.0
    for p in pops:
        a, b = spike_trains(ours[p]), spike_trains(ref[p])
        ta += a
        tb += b
        na, nb = sum(len(x) for x in a), sum(len(x) for x in b)
        seconds = steps * dt * len(a)  # neuron-seconds
        ra, rb = na / seconds, nb / seconds
        rd = abs(ra - rb) / rb if rb > 0 else (0.0 if ra == 0 else math.inf)
        rate_diff = max(rate_diff, rd)
        per_pop[p] = {"n_spikes_ours": na, "n_spikes_ref": nb, "rate_ours_hz": ra, "rate_ref_hz": rb,
                      "rate_diff": rd}
    n_a, n_b = sum(len(x) for x in ta), sum(len(x) for x in tb)
    out: dict[str, Any] = {
        "count_equality": float(np.mean([len(a) == len(b) for a, b in zip(ta, tb, strict=True)])),
    }
    for k in (0, 1, 2):
        pairs = sum(len(match_pairs(a, b, k)) for a, b in zip(ta, tb, strict=True))
        out[f"match_{k}"] = 1.0 if n_a + n_b == 0 else 2.0 * pairs / (n_a + n_b)
    wsteps = max(0, round(window / dt))
    diffs = [match_pairs(a, b, wsteps) for a, b in zip(ta, tb, strict=True)]
    diffs = np.concatenate(diffs) if diffs else np.zeros(0)
    out["mean_abs_dt_ms"] = float(np.abs(diffs).mean() * dt * 1e3) if len(diffs) else 0.0
    out["gamma_1ms"] = coincidence_factor(ta, tb, max(0, round(1e-3 / dt)), steps)
    out["gamma_2ms"] = coincidence_factor(ta, tb, max(0, round(2e-3 / dt)), steps)
    dv = None
    if volts_ours and volts_ref:
        common = [p for p in volts_ours if p in volts_ref]
        if common:
            dv = max(float((volts_ours[p].double() - volts_ref[p].double()).abs().max()) for p in common)
    out["max_abs_dv"] = dv
    dw = None
    if weights_ours and weights_ref:
        common = [p for p in weights_ours if p in weights_ref]
        if common:
            dw = max(float((weights_ours[p].double() - weights_ref[p].double()).abs().max())
                     for p in common)
    out["max_abs_dw"] = dw
    out["rate_diff"] = rate_diff
    out["n_spikes_ours"] = n_a
    out["n_spikes_ref"] = n_b
    out["populations"] = per_pop
    return out


def make_inputs(graph: ModelGraph, seed: int, batch: int = 1,
                dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Input tensors ``(T, batch, n)`` for every input population of a graph, from its encodings.

    ``poisson`` with ``rate``: :func:`neuro.data.poisson_trains` at that rate; with ``max_rate``:
    per-channel rates ``max_rate * U[0, 1)``; ``current``: ``gain * U[0, 1)`` per channel, every step.
    Other encodings need data; pass the inputs to :func:`crosscheck` yourself.
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
                f"crosscheck: input {pop.name!r} uses the {enc.kind} encoding, which needs a data set; "
                "pass inputs= explicitly"
            )
    return out


def _plastic(graph: ModelGraph) -> list[str]:
    return [n for n, p in graph.projections.items() if registry.get(p.rule).kind == "local"]


def crosscheck(
    graph: ModelGraph,
    out_dir: str | Path | None = None,
    *,
    seed: int | None = None,
    method: str = "euler",
    dt: float | None = None,
    dtype: torch.dtype = torch.float64,
    target: str = "numpy",
    storage: str | None = None,
    inputs: dict[str, torch.Tensor] | None = None,
    duration: float | None = None,
    figure: bool = True,
) -> dict[str, Any]:
    """Run a model in our simulator and in Brian2 and compare them.

    Pair-STDP projections learn on our side through :func:`neuro.sim.simulate.simulate_stdp` (per-event
    updates, the Brian2 reference's arithmetic); a local-rule model with triplet or reward-modulated
    STDP runs :func:`neuro.crosscheck.reference.crosscheck_local` instead (our closed loop: the rule module and
    the exact engine), a reward model with a seeded probe dopamine train (:data:`PROBE_REWARD`).
    Plastic models run the first :data:`PLASTIC_DURATION` seconds unless ``duration`` says otherwise.

    Args:
        graph: the model graph.
        out_dir: folder for ``fidelity.json`` and ``overlay.png`` (created); None writes nothing.
        seed: seed of weights and inputs (default: the graph's training seed).
        method: Brian2 integration method, ``"euler"`` (same discrete model) or ``"exact"``.
        dt: override the model's time step, seconds.
        dtype: dtype of our simulation (float64 for bit-identity, float32 for the default storage).
        target: Brian2 target, ``"numpy"`` or ``"cython"`` (no fast-math).
        storage: round our weights to this posit/b-posit format first (Brian2 keeps float64).
        inputs: inputs per input population ``(T, 1, n)`` (default: :func:`make_inputs`).
        duration: override the model's duration, seconds.
        figure: write ``overlay.png``.
    Returns:
        the content of ``fidelity.json``: the metrics of :func:`fidelity_metrics`, ``passed``,
        ``tolerances`` (the model's ``[crosscheck]`` table, window in seconds), ``checks`` (each
        tolerance with its value and verdict) and the run settings.
    """
    from neuro.crosscheck.reference import simulate_brian2
    from neuro.sim.network import Network

    changes = {}
    if dt is not None:
        changes["dt"] = float(dt)
    if duration is not None:
        changes["duration"] = float(duration)
    if changes:
        graph = dataclasses.replace(graph, **changes)
    seed = graph.training.seed if seed is None else seed
    if storage not in STORAGE_FORMATS:
        raise ValueError(f"crosscheck: storage must be one of {STORAGE_FORMATS}, got {storage!r}")
    graph.require_plain("crosscheck")
    plastic = _plastic(graph)
    if plastic and duration is None and graph.duration > PLASTIC_DURATION:
        graph = dataclasses.replace(graph, duration=PLASTIC_DURATION)
    if any(graph.projections[n].rule != "stdp_pair" for n in plastic):
        local = _local_model(graph)
        if local is None or len(graph.projections) != 1:
            rules = sorted({graph.projections[n].rule for n in plastic} - {"stdp_pair"})
            raise ValueError(
                f"crosscheck: {graph.name} learns with {', '.join(rules)}, which the cross-check "
                "supports in local-rule models only (one input population -> one plastic "
                "projection -> one LIF population, no other projection); pair STDP works in any graph"
            )
        if method != "euler" or storage is not None or inputs is not None:
            raise ValueError(
                f"crosscheck: {graph.name} is a local-rule model (plastic projection {local.plastic!r}); "
                "its cross-check runs both sides in float64 with Euler steps on the model's own "
                "inputs: drop method, storage and inputs"
            )
        return _crosscheck_local(graph, local, out_dir, seed, target, figure)
    net = Network(graph, seed=seed, dtype=dtype)
    ref_weights = {k: w.detach().to(torch.float64).clone() for k, w in net.weights.items()}
    if storage is not None:
        from neuro.numerics import NAMED_FORMATS

        fmt = NAMED_FORMATS[storage]
        with torch.no_grad():
            for w in net.weights.values():
                w.copy_(fmt.quantize(w.detach().double()).to(w.dtype))
    if inputs is None:
        inputs = make_inputs(graph, seed, batch=1, dtype=torch.float64)
    if plastic:
        from neuro.sim.simulate import simulate_stdp

        ours = simulate_stdp(graph, {k: v.to(dtype) for k, v in inputs.items()},
                             {k: w.detach() for k, w in net.weights.items()}, dtype=dtype)
        ours_weights = {k: ours.weights[k] for k in plastic}
    else:
        with torch.no_grad():
            ours = net({k: v.to(dtype) for k, v in inputs.items()}, record=True)
        ours_weights = None
    ref = simulate_brian2(graph, inputs, ref_weights, method=method, target=target, record=True)
    spiking = [p.name for p in graph.populations.values() if p.spiking]
    metrics = fidelity_metrics(
        {p: ours.spikes[p] for p in spiking}, {p: ref.spikes[p] for p in spiking}, graph.dt,
        window=graph.crosscheck.window,
        volts_ours=ours.voltages, volts_ref=ref.voltages,
        weights_ours=ours_weights, weights_ref={k: ref.weights[k] for k in plastic} if plastic else None,
    )
    gamma_window, checks = _checks(graph, {p: ours.spikes[p] for p in spiking},
                                   {p: ref.spikes[p] for p in spiking}, metrics)
    tol = graph.crosscheck
    result = {
        "model": graph.name,
        "model_hash": graph.canonical_hash(),
        **{k: v for k, v in metrics.items() if k != "populations"},
        "gamma_window": gamma_window,
        "passed": all(c["ok"] for c in checks.values()),
        "tolerances": tol.to_dict(),
        "checks": checks,
        "populations": metrics["populations"],
        "settings": {
            "seed": seed, "method": method, "dt": graph.dt, "duration": graph.duration,
            "dtype": str(dtype).replace("torch.", ""), "target": target, "storage": storage,
            "brian2_run_s": ref.wall_s,
        },
    }
    out = _write_report(out_dir, result)
    if out is not None and figure:
        overlay_figure(graph, ours, ref, out / "overlay.png", title=_title(result))
    return result


def _write_report(out_dir, result: dict[str, Any]) -> Path | None:
    """Write ``fidelity.json`` into ``out_dir`` (created); the folder, or None for no folder."""
    if out_dir is None:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    return out


#: Simulated seconds of a plastic model's cross-check unless ``duration`` says otherwise: both our
#: side (per-step plasticity, as Brian2 applies every event) and Brian2 step one dt at a time, so a
#: 100 s model would take many minutes.
PLASTIC_DURATION = 1.0
#: Dopamine of a reward-modulated model's cross-check: a seeded random train (release probability
#: per step, amount), not the model's protocol, which rewards an event 1-3 s later and so would
#: rarely release any in a short check.
PROBE_REWARD = (0.02, 0.5)


def _local_model(graph: ModelGraph):
    from neuro.sim.plastic import LocalModel

    try:
        return LocalModel.from_graph(graph)
    except ValueError:
        return None


def _checks(graph: ModelGraph, ours: dict, ref: dict, metrics: dict) -> tuple[float, dict]:
    """``(Gamma within the model's window, {check: {value, min|max, ok}})`` from the rasters of
    the spiking populations and :func:`fidelity_metrics`'s result."""
    tol = graph.crosscheck
    wsteps = max(0, round(tol.window / graph.dt))
    ta = sum((spike_trains(ours[p]) for p in ours), [])
    tb = sum((spike_trains(ref[p]) for p in ref), [])
    gamma_window = coincidence_factor(ta, tb, wsteps, graph.steps)
    checks = {
        "gamma_window": {"value": gamma_window, "min": tol.min_gamma, "ok": gamma_window >= tol.min_gamma},
        "rate_diff": {"value": metrics["rate_diff"], "max": tol.rate_rtol,
                      "ok": metrics["rate_diff"] <= tol.rate_rtol},
    }
    if metrics["max_abs_dw"] is not None:
        checks["max_abs_dw"] = {"value": metrics["max_abs_dw"], "max": tol.weight_atol,
                                "ok": metrics["max_abs_dw"] <= tol.weight_atol}
    return gamma_window, checks


def _crosscheck_local(graph: ModelGraph, local, out_dir, seed, target: str, figure: bool) -> dict[str, Any]:
    """:func:`crosscheck` of a local-rule model: :func:`neuro.crosscheck.reference.crosscheck_local` (our closed
    loop with the rule module and the exact engine vs Brian2's synapses, float64), scored against
    the model's ``[crosscheck]`` tolerances like any model."""
    from neuro.crosscheck.reference import crosscheck_local

    seed = graph.training.seed if seed is None else seed
    reward = None
    if graph.projections[local.plastic].rule == "rstdp":
        p, amount = PROBE_REWARD
        draw = torch.rand(graph.steps, generator=torch.Generator().manual_seed(seed))
        reward = (draw < p).to(torch.float64) * amount
    local_result = crosscheck_local(graph, seed=seed, target=target, record=True, reward=reward)
    rec = local_result.pop("record")
    out_pop, proj = local.target, local.plastic
    metrics = fidelity_metrics(
        {out_pop: rec["z_ours"]}, {out_pop: rec["z_ref"]}, graph.dt, window=graph.crosscheck.window,
        weights_ours={proj: rec["w_ours"]}, weights_ref={proj: rec["w_ref"]},
    )
    gamma_window, checks = _checks(graph, {out_pop: rec["z_ours"]}, {out_pop: rec["z_ref"]}, metrics)
    change = local_result["max_weight_change"]  # a run without plasticity checks nothing about it
    checks["weights_changed"] = {"value": change, "min_exclusive": 0.0, "ok": change > 0}
    result = {
        "model": graph.name,
        "model_hash": graph.canonical_hash(),
        "rule": graph.projections[proj].rule,
        **{k: v for k, v in metrics.items() if k != "populations"},
        **local_result,
        "gamma_window": gamma_window,
        "passed": all(c["ok"] for c in checks.values()),
        "tolerances": graph.crosscheck.to_dict(),
        "checks": checks,
        "populations": metrics["populations"],
        "settings": {"seed": seed, "method": "euler", "dt": graph.dt, "duration": graph.duration,
                     "dtype": "float64", "target": target, "storage": None},
    }
    out = _write_report(out_dir, result)
    if out is not None and figure:
        title = (f"{graph.name} ({result['rule']}, {graph.duration:g} s): closed loop vs Brian2, "
                 f"max|dw| = {result['max_abs_dw']:.1e}, spikes equal: {result['spikes_equal']}")
        plasticity_figure(graph, rec, out / "overlay.png", title=title)
    return result


def plasticity_figure(graph: ModelGraph, rec: dict, path: str | Path, *, title: str = "",
                      max_neurons: int = 60) -> Path:
    """Output raster of both simulators (mismatches marked), final weights ours vs Brian2 and the
    weight histograms before and after (Brian2's run).

    Args:
        graph: the model graph.
        rec: ``crosscheck_local(..., record=True)["record"]``.
        path: PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 7))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.3, 1])
    ax_r = fig.add_subplot(grid[0, :])
    dt_ms = graph.dt * 1e3
    a = rec["z_ours"][:, 0, :max_neurons].cpu()
    b = rec["z_ref"][:, 0, :max_neurons].cpu()
    tb, nb = torch.nonzero(b, as_tuple=True)
    ta, na = torch.nonzero(a, as_tuple=True)
    tm, nm = torch.nonzero(a != b, as_tuple=True)
    ax_r.scatter(tb * dt_ms, nb, marker="o", s=22, facecolors="none", edgecolors="tab:blue", linewidths=0.8,
                 label="Brian2")
    ax_r.scatter(ta * dt_ms, na, marker=".", s=10, color="k", label="ours")
    ax_r.scatter(tm * dt_ms, nm, marker="x", s=40, color="tab:red", label="mismatch")
    ax_r.set_ylim(-0.5, a.shape[1] - 0.5)
    ax_r.set_xlabel("time (ms)")
    ax_r.set_ylabel("output neuron")
    ax_r.legend(loc="upper right", fontsize=8, ncols=3)
    ax_r.set_title(title, fontsize=9)
    ax_w = fig.add_subplot(grid[1, 0])
    w_ref, w_ours = rec["w_ref"].reshape(-1).cpu().numpy(), rec["w_ours"].reshape(-1).cpu().numpy()
    ax_w.scatter(w_ref, w_ours, s=4, color="k")
    lo, hi = float(min(w_ref.min(), w_ours.min())), float(max(w_ref.max(), w_ours.max()))
    ax_w.plot([lo, hi], [lo, hi], color="tab:blue", lw=0.8)
    ax_w.set_xlabel("final weight, Brian2")
    ax_w.set_ylabel("final weight, ours")
    ax_h = fig.add_subplot(grid[1, 1])
    ax_h.hist(rec["w0"].reshape(-1).cpu().numpy(), bins=40, alpha=0.5, color="0.5", label="initial")
    ax_h.hist(w_ref, bins=40, alpha=0.6, color="tab:blue", label="final (Brian2)")
    ax_h.set_xlabel("weight")
    ax_h.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _title(r: dict[str, Any]) -> str:
    s = r["settings"]
    dv = "n/a" if r["max_abs_dv"] is None else f"{r['max_abs_dv']:.1e}"
    return (f"{r['model']}: ours ({s['dtype']}{', ' + s['storage'] if s['storage'] else ''}) vs Brian2 "
            f"({s['method']}, {s['target']}), dt={s['dt'] * 1e3:g} ms   match_0={r['match_0']:.4f}  "
            f"Gamma(2ms)={r['gamma_2ms']:.4f}  max|dv|={dv}")


def overlay_figure(graph: ModelGraph, ours, ref, path: str | Path, *, title: str = "",
                   max_neurons: int = 60, batch_index: int = 0) -> Path:
    """Raster of both simulators on one time axis (mismatched spikes marked) and a membrane overlay.

    Args:
        graph: the model graph.
        ours, ref: run results with ``spikes`` and ``voltages`` ``(T, B, n)``.
        path: PNG file to write.
        max_neurons: neurons shown per population in the raster.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spiking = [p.name for p in graph.populations.values() if p.spiking]
    fig, (ax_r, ax_v) = plt.subplots(2, 1, figsize=(11, 7), sharex=True,
                                     gridspec_kw={"height_ratios": [2.2, 1]})
    dt_ms = graph.dt * 1e3
    offset = 0
    for p in spiking:
        a = ours.spikes[p][:, batch_index, :max_neurons].detach().cpu()
        b = ref.spikes[p][:, batch_index, :max_neurons].detach().cpu()
        ta, na = torch.nonzero(a > 0, as_tuple=True)
        tb, nb = torch.nonzero(b > 0, as_tuple=True)
        ax_r.scatter(tb * dt_ms, nb + offset, marker="o", s=22, facecolors="none", edgecolors="tab:blue",
                     linewidths=0.8, label="Brian2" if offset == 0 else None)
        ax_r.scatter(ta * dt_ms, na + offset, marker=".", s=10, color="k",
                     label="ours" if offset == 0 else None)
        miss = (a > 0) != (b > 0)
        tm, nm = torch.nonzero(miss, as_tuple=True)
        ax_r.scatter(tm * dt_ms, nm + offset, marker="x", s=40, color="tab:red",
                     label="mismatch (0 steps)" if offset == 0 else None)
        ax_r.axhline(offset - 0.5, color="0.8", lw=0.5)
        ax_r.text(0, offset + 0.5, p, fontsize=8, color="0.3", va="bottom")
        offset += a.shape[1]
    ax_r.set_ylabel("neuron (populations stacked)")
    ax_r.legend(loc="upper right", fontsize=8, ncols=3)
    ax_r.set_title(title, fontsize=9)
    # Membrane trace: the most active neuron of the output (or first spiking) population.
    pop = graph.output if graph.output in ours.voltages else next(iter(ours.voltages), None)
    if pop is not None and pop in ref.voltages:
        counts = ours.spikes[pop][:, batch_index].sum(0) if pop in ours.spikes else None
        n = int(torch.argmax(counts)) if counts is not None else 0
        va = ours.voltages[pop][:, batch_index, n].detach().double().cpu()
        vb = ref.voltages[pop][:, batch_index, n].detach().double().cpu()
        t = np.arange(len(va)) * dt_ms
        ax_v.plot(t, vb.numpy(), color="tab:blue", lw=2.2, alpha=0.5, label="Brian2")
        ax_v.plot(t, va.numpy(), color="k", lw=0.7, label="ours")
        popobj = graph.populations[pop]
        if popobj.spiking:
            ax_v.axhline(popobj.v_th, color="tab:red", lw=0.6, ls="--", label="v_th")
        ax_v.set_ylabel(f"v ({pop}[{n}])")
        ax_v.legend(loc="upper right", fontsize=8, ncols=3)
        ax_v.set_title(f"max |dv| on this trace = {float((va - vb).abs().max()):.2e}", fontsize=8)
    ax_v.set_xlabel("time (ms)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
