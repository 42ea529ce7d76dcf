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
and decides ``passed`` from the model's ``[crosscheck]`` tolerances.  A run in which neither
simulator spikes in any population compares nothing and fails (check ``spikes``).  Models with
local rules (STDP family) run through our training code (:mod:`neuro.crosscheck.local`); the
others run :class:`neuro.sim.network.Network` with fixed weights.  Both take the seeded
initial weights or given ones (a trained run's) and the seeded inputs or a user's raster
(:mod:`neuro.crosscheck.inputs`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuro.crosscheck.figures import overlay_figure, plasticity_figure
from neuro.crosscheck.inputs import check_inputs, initial_network, make_inputs, read_inputs
from neuro.model.graph import ModelGraph
from neuro.numerics.formats import resolve_storage, storage_name
from neuro.rules import registry

__all__ = [
    "PLASTIC_DURATION",
    "PROBE_REWARD",
    "coincidence_factor",
    "crosscheck",
    "fidelity_metrics",
    "match_pairs",
    "spike_trains",
]


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


#: Simulated seconds of a plastic model's cross-check unless ``duration`` says otherwise: our closed
#: loop steps the engine every dt (as Brian2 applies every event), so a 100 s model would take many
#: minutes, and over seconds a same-step pair at a bound moves a spike (:mod:`neuro.crosscheck.local`).
PLASTIC_DURATION = 1.0
#: Dopamine of a reward-modulated model's cross-check: a seeded random train (release probability
#: per step, amount), not the model's protocol, which rewards an event 1-3 s later and so would
#: rarely release any in a short check.
PROBE_REWARD = (0.02, 0.5)
#: Why a silent run fails.
SILENT = ("nothing was compared: neither simulator spiked in any population; give inputs or "
          "weights that make the model spike (--inputs FILE, a trained RUN_DIR) or run longer")


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
    inputs: Mapping[str, torch.Tensor] | torch.Tensor | str | Path | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    duration: float | None = None,
    figure: bool = True,
) -> dict[str, Any]:
    """Run a model in our simulator and in Brian2 and compare them.

    A model with a local rule (pair, triplet or reward-modulated STDP; a local-rule model, as
    ``neuro train`` trains them) runs :func:`neuro.crosscheck.local.crosscheck_local`: our closed
    loop with the rule module and the exact engine against Brian2's per-event synapses, float64, a
    reward model with a seeded probe dopamine train (:data:`PROBE_REWARD`), over the first
    :data:`PLASTIC_DURATION` seconds unless ``duration`` says otherwise.  Other models run
    :class:`~neuro.sim.network.Network` against Brian2 with fixed weights.

    Args:
        graph: the model graph.
        out_dir: folder for ``fidelity.json`` and ``overlay.png`` (created); None writes nothing.
        seed: seed of weights and inputs (default: the graph's training seed).
        method: Brian2 integration method, ``"euler"`` (same discrete model) or ``"exact"``.
        dt: override the model's time step, seconds.
        dtype: dtype of our simulation (float64 for bit-identity, float32 for the default storage).
        target: Brian2 target, ``"numpy"`` or ``"cython"`` (no fast-math).
        storage: round our weights to this storage format first (a name of
            :data:`neuro.numerics.formats.STORAGE_FORMATS`; Brian2 keeps float64).
        inputs: a raster file (``.npz`` / ``.safetensors``), a tensor or a dict per input population,
            ``(T, n)`` or ``(T, B, n)`` with ``T = duration / dt`` (default: :func:`make_inputs`);
            checked by :func:`neuro.crosscheck.inputs.check_inputs`.
        weights: initial weights of every projection (e.g. ``neuro.load_run(dir).network.weights``;
            default: drawn from ``seed``).
        duration: override the model's duration, seconds.
        figure: write ``overlay.png``.
    Returns:
        the content of ``fidelity.json``: the metrics of :func:`fidelity_metrics`, ``passed``,
        ``tolerances`` (the model's ``[crosscheck]`` table, window in seconds), ``checks`` (each
        tolerance with its value and verdict; ``spikes`` fails a silent run) and the run settings.
    Raises:
        ValueError for a model or an argument the cross-check cannot run (the message says why).
    """
    changes = {}
    if dt is not None:
        changes["dt"] = float(dt)
    if duration is not None:
        changes["duration"] = float(duration)
    if changes:
        graph = dataclasses.replace(graph, **changes)
    seed = graph.training.seed if seed is None else seed
    try:
        fmt = resolve_storage(storage)
    except ValueError as err:
        raise ValueError(f"crosscheck: {err}") from None
    graph.require_plain("crosscheck")
    if isinstance(inputs, str | Path):  # a raster file: errors name it
        source = origin = str(inputs)
        inputs = read_inputs(inputs)
    else:
        source, origin = "inputs", "seeded" if inputs is None else "given"
    given = {"inputs": origin, "weights": "seeded" if weights is None else "given"}
    plastic = [n for n, p in graph.projections.items() if registry.get(p.rule).kind == "local"]
    if plastic:
        if duration is None and graph.duration > PLASTIC_DURATION:
            graph = dataclasses.replace(graph, duration=PLASTIC_DURATION)
        local = _local_model(graph, plastic)
        if method != "euler" or storage is not None or dtype != torch.float64:
            raise ValueError(
                f"crosscheck: {graph.name} is a local-rule model (plastic projection {local.plastic!r}); "
                "its cross-check runs our training loop and Brian2 in float64 with Euler steps: drop "
                "method (--method), storage (--format) and dtype")
        if inputs is not None:
            inputs = check_inputs(inputs, graph, source=source, one_trial=True)
        return _crosscheck_local(graph, local, out_dir, seed, target, figure, weights, inputs, given)
    from neuro.crosscheck.reference import simulate_brian2

    inputs = (make_inputs(graph, seed) if inputs is None
              else check_inputs(inputs, graph, source=source))
    net = initial_network(graph, seed, dtype, weights)
    ref_weights = {k: w.detach().to(torch.float64).clone() for k, w in net.weights.items()}
    if fmt is not None:
        with torch.no_grad():
            for w in net.weights.values():
                w.copy_(_rounded(w.detach().double(), fmt).to(w.dtype))
    with torch.no_grad():
        ours = net({k: v.to(dtype) for k, v in inputs.items()}, record=True)
    ref = simulate_brian2(graph, inputs, ref_weights, method=method, target=target, record=True)
    spiking = [p.name for p in graph.populations.values() if p.spiking]
    z_ours, z_ref = {p: ours.spikes[p] for p in spiking}, {p: ref.spikes[p] for p in spiking}
    metrics = fidelity_metrics(z_ours, z_ref, graph.dt, window=graph.crosscheck.window,
                               volts_ours=ours.voltages, volts_ref=ref.voltages)
    settings = {"seed": seed, "method": method, "dt": graph.dt, "duration": graph.duration,
                "dtype": str(dtype).replace("torch.", ""), "target": target,
                "storage": None if fmt is None else storage_name(fmt), **given, "brian2_run_s": ref.wall_s}
    result = _report(graph, z_ours, z_ref, metrics, {}, settings)
    out = _write_report(out_dir, result)
    if out is not None and figure:
        overlay_figure(graph, ours, ref, out / "overlay.png", title=_title(result))
    return result


def _rounded(w: torch.Tensor, fmt) -> torch.Tensor:
    """float64 ``w`` rounded to a storage format (a PositFormat, ``"float32"`` or ``"float64"``)."""
    if fmt == "float64":
        return w
    return w.to(torch.float32).double() if fmt == "float32" else fmt.quantize(w)


def _local_model(graph: ModelGraph, plastic: list[str]):
    from neuro.sim.plastic import LocalModel

    try:
        return LocalModel.from_graph(graph)
    except ValueError as err:
        rules = sorted({graph.projections[n].rule for n in plastic})
        raise ValueError(
            f"crosscheck: {graph.name} learns with {', '.join(rules)}, which the cross-check runs "
            "through our training loop; that loop trains local-rule models only (one input "
            "population -> one plastic projection -> one LIF or AdaptiveLIF population, optionally a "
            f"fixed recurrent projection on it): {err}") from None


def _write_report(out_dir, result: dict[str, Any]) -> Path | None:
    """Write ``fidelity.json`` into ``out_dir`` (created); the folder, or None for no folder."""
    if out_dir is None:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    return out


def _report(graph: ModelGraph, ours: dict, ref: dict, metrics: dict, extra: dict, settings: dict) -> dict:
    """``fidelity.json``: the metrics, ``extra`` (a local-rule run's own figures), the checks against
    the model's ``[crosscheck]`` tolerances (``extra["max_weight_change"]``: a plastic run must
    change a weight) and ``passed``."""
    tol = graph.crosscheck
    ta = sum((spike_trains(ours[p]) for p in ours), [])
    tb = sum((spike_trains(ref[p]) for p in ref), [])
    gamma_window = coincidence_factor(ta, tb, max(0, round(tol.window / graph.dt)), graph.steps)
    n_spikes = metrics["n_spikes_ours"] + metrics["n_spikes_ref"]
    checks = {
        "spikes": {"value": n_spikes, "min_exclusive": 0, "ok": n_spikes > 0,
                   **({} if n_spikes else {"note": SILENT})},
        "gamma_window": {"value": gamma_window, "min": tol.min_gamma, "ok": gamma_window >= tol.min_gamma},
        "rate_diff": {"value": metrics["rate_diff"], "max": tol.rate_rtol,
                      "ok": metrics["rate_diff"] <= tol.rate_rtol},
    }
    if metrics["max_abs_dw"] is not None:
        checks["max_abs_dw"] = {"value": metrics["max_abs_dw"], "max": tol.weight_atol,
                                "ok": metrics["max_abs_dw"] <= tol.weight_atol}
    if "max_weight_change" in extra:  # a run without plasticity checks nothing about it
        change = extra["max_weight_change"]
        checks["weights_changed"] = {"value": change, "min_exclusive": 0.0, "ok": change > 0}
    return {
        "model": graph.name,
        "model_hash": graph.canonical_hash(),
        **{k: v for k, v in metrics.items() if k != "populations"},
        **extra,
        "gamma_window": gamma_window,
        "passed": all(c["ok"] for c in checks.values()),
        "tolerances": tol.to_dict(),
        "checks": checks,
        "populations": metrics["populations"],
        "settings": settings,
    }


def _crosscheck_local(graph: ModelGraph, local, out_dir, seed: int, target: str, figure: bool,
                      weights, inputs, given: dict) -> dict[str, Any]:
    """:func:`crosscheck` of a local-rule model: :func:`neuro.crosscheck.local.crosscheck_local`,
    scored against the model's ``[crosscheck]`` tolerances like any model; ``max_abs_dw`` covers
    the synapses :data:`neuro.crosscheck.local.COMPARED_SYNAPSES` names."""
    from neuro.crosscheck.local import COMPARED_SYNAPSES, crosscheck_local

    reward = None
    if graph.projections[local.plastic].rule == "rstdp":
        p, amount = PROBE_REWARD
        draw = torch.rand(graph.steps, generator=torch.Generator().manual_seed(seed))
        reward = (draw < p).to(torch.float64) * amount
    local_result = crosscheck_local(graph, seed=seed, target=target, record=True, reward=reward,
                                    weights=weights, inputs=inputs)
    rec = local_result.pop("record")
    out_pop, proj, keep = local.target, local.plastic, rec["compared"]
    ours, ref = {out_pop: rec["z_ours"]}, {out_pop: rec["z_ref"]}
    metrics = fidelity_metrics(ours, ref, graph.dt, window=graph.crosscheck.window,
                               weights_ours={proj: rec["w_ours"][keep]},
                               weights_ref={proj: rec["w_ref"][keep]})
    extra = {"rule": graph.projections[proj].rule, **local_result, "compared_synapses": COMPARED_SYNAPSES}
    settings = {"seed": seed, "method": "euler", "dt": graph.dt, "duration": graph.duration,
                "dtype": "float64", "target": target, "storage": None, **given}
    result = _report(graph, ours, ref, metrics, extra, settings)
    out = _write_report(out_dir, result)
    if out is not None and figure:
        title = (f"{graph.name} ({result['rule']}, {graph.duration:g} s): closed loop vs Brian2, "
                 f"max|dw| = {result['max_abs_dw']:.1e}, spikes equal: {result['spikes_equal']}")
        plasticity_figure(graph, rec, out / "overlay.png", title=title)
    return result


def _title(r: dict[str, Any]) -> str:
    s = r["settings"]
    dv = "n/a" if r["max_abs_dv"] is None else f"{r['max_abs_dv']:.1e}"
    return (f"{r['model']}: ours ({s['dtype']}{', ' + s['storage'] if s['storage'] else ''}) vs Brian2 "
            f"({s['method']}, {s['target']}), dt={s['dt'] * 1e3:g} ms   match_0={r['match_0']:.4f}  "
            f"Gamma(2ms)={r['gamma_2ms']:.4f}  max|dv|={dv}")
