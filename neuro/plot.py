"""Figures users look at: learning curves, spike rasters with membrane traces, weight histograms.

Every function draws with matplotlib's Agg backend and saves a PNG; none needs a display.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["learning_curve", "raster", "receptive_fields", "weights_hist", "weights_over_time"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: dict, path: str | Path, graph=None) -> None:
    """Loss and accuracy per epoch (``history`` as in ``metrics.json``), titled with the model and
    its formats when ``graph`` is given; whole-number epoch ticks."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    epochs = history.get("epoch", [])
    ax_loss.plot(epochs, history.get("loss", []), marker="o")
    ax_loss.set_ylabel("training loss (per sample)")
    ax_loss.set_title("training loss")
    ax_acc.plot(epochs, history.get("train_accuracy", []), marker="o", label="train")
    ax_acc.plot(epochs, history.get("test_accuracy", []), marker="s", label="test")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.set_title("accuracy")
    ax_acc.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # beside the data
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    if graph is not None:
        fig.suptitle(f"{graph.name}: learning curve ({_formats(graph)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def raster(result, graph, path: str | Path, sample: int = 0, label: int | None = None,
           predicted: int | None = None) -> None:
    """Spike raster of every spiking population of one sample, with the output's membrane traces,
    titled with the model, its formats, the sample index and (when given) its true and predicted
    class.

    Args:
        result: a :class:`neuro.sim.network.RunResult` made with ``record=True``.
        graph: the model graph (time step and population names).
    """
    plt = _pyplot()
    currents = {name for name, enc in graph.encodings.items() if enc.kind == "current"}
    pops = [name for name in result.spikes if name not in currents]  # current inputs are no spikes
    traces = result.voltages.get(graph.output)
    rows = len(pops) + (1 if traces is not None else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(8.6, 1.6 * rows + 0.9), sharex=True, squeeze=False)
    dt_ms = graph.dt * 1e3
    for ax, name in zip(axes[:, 0], pops):
        z = result.spikes[name][:, sample].detach().cpu()
        t, n = torch.nonzero(z > 0, as_tuple=True)
        ax.scatter(t.numpy() * dt_ms, n.numpy(), s=2, c="k")
        ax.set_ylabel(f"{name}\nneuron")
        ax.set_ylim(-0.5, z.shape[1] - 0.5)
    if traces is not None:
        ax = axes[-1, 0]
        v = traces[:, sample].detach().cpu()
        steps = torch.arange(v.shape[0]) * dt_ms
        for j in range(v.shape[1]):
            ax.plot(steps.numpy(), v[:, j].numpy(), lw=1, label=f"{graph.output}[{j}]")
        ax.set_ylabel("membrane")
        if v.shape[1] <= 10:
            ax.legend(fontsize=6, ncol=1, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the traces
    axes[-1, 0].set_xlabel("time (ms)")
    title = f"{graph.name} ({_formats(graph)}): sample {sample}"
    if label is not None:
        title += f", label {label}"
    if predicted is not None:
        title += f", predicted {predicted}"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def weights_hist(weights: dict[str, torch.Tensor], path: str | Path, bins: int = 60, graph=None) -> None:
    """Histogram of each projection's weights (titled with the model and formats when ``graph`` is
    given)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(weights), figsize=(3.6 * len(weights), 3.0), squeeze=False)
    for ax, (name, w) in zip(axes[0], weights.items()):
        ax.hist(w.detach().cpu().double().flatten().numpy(), bins=bins, color="tab:blue")
        known = graph is not None and name in graph.projections
        fmt = f" ({graph.projections[name].format})" if known else ""
        ax.set_title(name + fmt, fontsize=9)
        ax.set_xlabel("weight")
    axes[0, 0].set_ylabel("count")
    if graph is not None:
        fig.suptitle(f"{graph.name}: weight histograms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def weights_over_time(history: dict, graph, path: str | Path) -> None:
    """Weight histogram over time (image: time x weight bin, share of synapses) and the final one
    (``history`` of a local-rule scenario: ``time_s``, ``hist_edges``, ``hist``)."""
    plt = _pyplot()
    h = torch.tensor(history["hist"], dtype=torch.float64)
    h = h / h.sum(1, keepdim=True).clamp(min=1)
    edges, t = history["hist_edges"], history["time_s"]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6))
    im = ax0.imshow(h.T.numpy(), aspect="auto", origin="lower", extent=[t[0], t[-1], edges[0], edges[-1]],
                    cmap="viridis")
    ax0.set_xlabel("time (s)")
    ax0.set_ylabel("weight")
    ax0.set_title("weight distribution over time")
    fig.colorbar(im, ax=ax0, label="share of synapses")
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    ax1.bar(centers, h[-1].numpy(), width=edges[1] - edges[0])
    ax1.set_xlabel("weight")
    ax1.set_ylabel("share of synapses")
    ax1.set_title(f"at the end ({t[-1]:g} s)")
    fig.suptitle(f"{graph.name}: plastic weights ({_formats(graph)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def receptive_fields(w: torch.Tensor, graph, path: str | Path, limit: int = 100) -> None:
    """Input weights of up to ``limit`` neurons as square images (inputs must be a square number)."""
    plt = _pyplot()
    w = w[:limit].detach().to(torch.float64).cpu()
    n, side = w.shape[0], round(w.shape[1] ** 0.5)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.7, rows * 0.7 + 0.5), squeeze=False)
    for k, ax in enumerate(axes.reshape(-1)):
        ax.axis("off")
        if k < n:
            ax.imshow(w[k].reshape(side, side).numpy(), cmap="hot")
    fig.suptitle(f"{graph.name}: input weights of {n} neurons ({_formats(graph)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _formats(graph) -> str:
    return ", ".join(sorted({p.format for p in graph.projections.values()}))
