"""Figures of a cross-check: both simulators' rasters on one time axis (mismatches marked), a
membrane overlay, and for plastic models the final weights ours vs Brian2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neuro.model.graph import ModelGraph

__all__ = ["overlay_figure", "plasticity_figure"]


def plasticity_figure(graph: ModelGraph, rec: dict, path: str | Path, *, title: str = "",
                      max_neurons: int = 60) -> Path:
    """Output raster of both simulators (mismatches marked), final weights ours vs Brian2 and the
    weight histograms before and after (Brian2's run).

    Args:
        graph: the model graph.
        rec: :func:`neuro.crosscheck.local.crosscheck_local`'s ``record``.
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
