"""Training loops: a model graph, a data set and the update engine, bitwise reproducibly.

Reproducibility rests on three choices (see DESIGN.md):

* every global batch is split into microbatches of the model's fixed ``microbatch`` size, and
  every microbatch runs the same kernels whatever worker runs it (one intra-op thread);
* spikes and shuffles come from counter-based streams keyed by (seed, epoch, sample);
* weight changes are summed exactly in the engine's quires and merged as integers across
  ``torch.distributed`` workers, then rounded once.

So one worker and two workers, or two runs with the same seed, produce identical weight bits.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from neuro.engine import UpdateEngine
from neuro.model.graph import ModelGraph
from neuro.sim.network import Network
from neuro.numerics import BPOSIT32, POSIT32, PositFormat
from neuro.engine.params import Bounds, ParamType, Sign
from neuro.rules.bptt import bptt_contribute, classification_loss, readout_scores

__all__ = [
    "TrainResult",
    "train",
    "evaluate",
    "accumulation_format",
    "schedule_lr",
    "fit",
    "prepare_run",
    "Run",
    "SPIKE_ENCODINGS",
    "LR_SCHEDULES",
]

SPIKE_ENCODINGS = ("poisson", "latency", "spike_times", "raster")
LR_SCHEDULES = ("cosine", "constant")

# The quire format of a projection's updates: the format every factor handed to the engine is
# rounded to and the format of the Adam moments.  Storage (what the weights are rounded to once per
# step) is the projection's own format.  16- and 8-bit storage formats accumulate in bposit32
# (float32-like precision over a huge range): Adam's second moments (~1e-10) underflow a posit8
# (minpos 2**-24) and error signals rounded to 3 fraction bits (posit8) or posit16 cost accuracy
# for nothing, since the one rounding to storage happens at the end anyway.  Measured on
# digits_bptt: posit16 storage with a posit16 quire 98.06 %, with a bposit32 quire 98.61 % (= float32).
_ACCUMULATION = {
    "float32": BPOSIT32,  # ~float32 precision over a huge range; products stay on the fast path
    "float64": POSIT32,
    "posit8": BPOSIT32,
    "posit16": BPOSIT32,
    "posit32": POSIT32,
    "bposit16": BPOSIT32,
    "bposit32": BPOSIT32,
}


def accumulation_format(storage: str) -> PositFormat:
    """The quire format used to accumulate updates of weights stored as ``storage``."""
    return _ACCUMULATION[storage]


@dataclass
class TrainResult:
    """Metrics of a run (what ``metrics.json`` holds) and the trained network."""

    metrics: dict
    network: Network
    history: dict = field(default_factory=dict)


def _encoder(graph: ModelGraph):
    from neuro.data import Encoder

    (inp,) = graph.inputs()
    enc = graph.encodings.get(inp.name)
    if enc is None:
        return None
    rate = enc.max_rate if enc.max_rate is not None else enc.rate
    return Encoder(
        kind=enc.kind,
        max_rate_hz=float(rate) if rate is not None else 100.0,
        t_max=enc.t_max,
        tau=enc.tau,
        threshold=float(enc.threshold or 0.0),
        gain=float(enc.gain if enc.gain is not None else 1.0),
        seed=graph.training.seed,
    )


def _load_split(graph: ModelGraph, split: str):
    from neuro.data import load_dataset

    if graph.data is None:
        raise ValueError(f"{graph.name}: the model file has no [data] table; `neuro train` needs a data set")
    return load_dataset(graph.data.name, split, **dict(graph.data.options))


def _dtype_for(graph: ModelGraph) -> torch.dtype:
    wide = {"float64", "posit32", "bposit16", "bposit32"}
    return torch.float64 if any(p.format in wide for p in graph.projections.values()) else torch.float32


def build_engine(
    graph: ModelGraph, network: Network, *, rule: str = "bptt", adam: bool = True, seed: int = 0
) -> UpdateEngine:
    """An engine with one parameter group per projection trained by ``rule``."""
    groups = []
    for name in network.plastic(rule):
        proj = graph.projections[name]
        constraint = None
        if proj.bounds is not None:
            constraint = Bounds(*proj.bounds)
        elif proj.sign is not None:
            constraint = Sign(proj.sign)
        groups.append(
            {
                "params": [network.weights[name]],
                "names": [name],
                "format": accumulation_format(proj.format),
                "lr": graph.training.learning_rate,
                "adam": adam,
                "rounding": "stochastic" if proj.format == "posit8" else "nearest",
                "type": ParamType(constraint=constraint, storage=proj.format),
            }
        )
    if not groups:
        raise ValueError(f"{graph.name}: no projection uses rule {rule!r}; nothing to train")
    return UpdateEngine(groups, seed=seed)


@torch.no_grad()
def evaluate(network: Network, dataset, graph: ModelGraph, *, epoch: int = 0, batch: int = 256) -> float:
    """Classification accuracy of ``network`` on ``dataset`` (fraction in [0, 1])."""
    encoder = _encoder(graph)
    correct = 0
    for start in range(0, len(dataset), batch):
        idx = torch.arange(start, min(len(dataset), start + batch))
        x = dataset.encode(idx, epoch, graph.steps, graph.dt, encoder=encoder, dtype=network.dtype)
        scores = readout_scores(network(x).readout, graph.training.readout)
        correct += int((scores.argmax(-1).cpu() == dataset.labels[idx]).sum())
    return correct / max(1, len(dataset))


def _spiking_sources(graph: ModelGraph, names: list[str]) -> set[str]:
    out = set()
    for name in names:
        src = graph.populations[graph.projections[name].source]
        if src.type == "input":
            enc = graph.encodings.get(src.name)
            if enc is not None and enc.kind in SPIKE_ENCODINGS:
                out.add(name)
        elif src.type != "LI":
            out.add(name)
    return out


def train(
    graph: ModelGraph,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    max_train: int | None = None,
    lr_schedule: str | None = None,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train ``graph`` with its declared rule (surrogate-gradient BPTT) and return its metrics.

    Args:
        graph: the model graph (``neuro.model.spec.load_model``).
        epochs, seed: override the model file's training settings.
        out_dir: where to write ``metrics.json``, ``weights.safetensors``, ``model.toml`` and the
            figures; nothing is written when ``None``.
        progress: show a progress bar with loss and accuracy.
        max_train: use only the first ``max_train`` training samples (quick runs and tests).
        device: torch device of the network and the quires (``"cpu"``, ``"cuda"``).
        lr_schedule: ``"cosine"`` (default): the learning rate of update ``s`` out of ``S`` is
            ``lr * (1 + cos(pi * s / S)) / 2``, from ``training.learning_rate`` down to ~0 at the
            end, which settles the final weights (last-epoch accuracy stops jumping between
            epochs); ``"constant"``: ``training.learning_rate`` throughout.  The model file's
            ``training.lr_schedule`` is used when the spec has one.  Every worker computes the
            same value from the step count, so the schedule keeps runs bitwise reproducible.
    """
    t0 = time.perf_counter()
    spec = graph.training
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    per_batch = spec.batch_size // spec.microbatch
    if per_batch % world:
        raise ValueError(
            f"{graph.name}: {per_batch} microbatches per batch cannot be split evenly over "
            f"{world} workers; choose batch_size / microbatch divisible by the worker count"
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # identical kernels for every microbatch, whatever the worker count
    try:
        run = prepare_run(graph, epochs, seed, lr_schedule, max_train, t0)
        network = Network(graph, seed=run.seed, dtype=_dtype_for(graph), device=_check_device(device))
        trained = network.plastic("bptt")
        engine = build_engine(graph, network, seed=run.seed)
        spiking = _spiking_sources(graph, trained)
        scale = -1.0 / spec.batch_size

        def microbatch(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
            result = network(x, track=True)
            scores = readout_scores(result.readout, spec.readout)
            hidden = {k: v for k, v in result.spikes.items() if graph.populations[k].type != "input"}
            loss = classification_loss(scores, labels, hidden, spec.rate_regularisation)
            loss.backward()
            bptt_contribute(engine, network, result, trained, scale, spiking)
            return scores, float(loss.detach())

        metrics = fit(graph, network, engine, run, microbatch, progress=progress, rank=rank, world=world)
        if out_dir is not None and not rank:
            write_outputs(Path(out_dir), graph, network, metrics, run.test_set)
        return TrainResult(metrics=metrics, network=network, history=metrics["history"])
    finally:
        torch.set_num_threads(threads)


class Run(NamedTuple):
    """The settings and data of one training run (:func:`prepare_run`)."""

    epochs: int
    seed: int
    lr_schedule: str
    t0: float  # start, time.perf_counter() seconds
    train_set: object
    test_set: object


def prepare_run(
    graph: ModelGraph,
    epochs: int | None,
    seed: int | None,
    lr_schedule: str | None,
    max_train: int | None,
    t0: float,
) -> Run:
    """The overrides, else the model file's settings (checked), and the train / test splits (the
    first ``max_train`` training samples when given)."""
    spec = graph.training
    epochs = spec.epochs if epochs is None else int(epochs)
    seed = spec.seed if seed is None else int(seed)
    lr_schedule = lr_schedule or getattr(spec, "lr_schedule", "cosine")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"{graph.name}: lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if spec.batch_size % spec.microbatch:
        raise ValueError(
            f"{graph.name}: training.batch_size {spec.batch_size} must be a multiple of "
            f"training.microbatch {spec.microbatch}"
        )
    train_set = _load_split(graph, "train")
    test_set = _load_split(graph, "test")
    if max_train is not None:
        train_set = train_set.subset(torch.arange(min(max_train, len(train_set))))
    return Run(epochs, seed, lr_schedule, t0, train_set, test_set)


def fit(
    graph: ModelGraph,
    network: Network,
    engine: UpdateEngine,
    run: Run,
    microbatch,
    *,
    progress: bool = True,
    label: str = "",
    rank: int = 0,
    world: int = 1,
    evaluator=None,
    **extra,
) -> dict:
    """The training loop every gradient mode shares; returns the run's metrics (history included).

    Each epoch shuffles the training set with the counter-based stream ``(seed, epoch)``, cuts it into
    global batches of ``training.batch_size``, and runs this worker's microbatches (``rank``, ``rank +
    world``, ...) through ``microbatch(x (T, B, n_in), labels (B,)) -> (scores (B, C), loss)``, which
    hands the engine its contributions; then one ``engine.step()`` per batch at the scheduled learning
    rate, and the test accuracy after every epoch (``evaluator(network, dataset, graph)``, default
    :func:`evaluate`).  ``extra``: further metrics entries (e.g. the mode), placed after ``model_hash``.
    """
    from tqdm.auto import tqdm

    from neuro.data import epoch_permutation

    spec = graph.training
    evaluator = evaluator or evaluate
    epochs, train_set, test_set = run.epochs, run.train_set, run.test_set
    encoder = _encoder(graph)
    per_batch = spec.batch_size // spec.microbatch
    n_batches = len(train_set) // spec.batch_size
    history = {"epoch": [], "loss": [], "train_accuracy": [], "test_accuracy": []}
    total_steps, done = max(1, epochs * n_batches), 0
    prefix = f"{label} " if label else ""
    for epoch in range(epochs):
        order = epoch_permutation(len(train_set), run.seed, epoch)
        desc = f"{prefix}epoch {epoch + 1}/{epochs}"
        bar = tqdm(range(n_batches), desc=desc, disable=not progress or rank, leave=False)
        loss_sum, correct, seen = 0.0, 0, 0
        for b in bar:
            batch = order[b * spec.batch_size : (b + 1) * spec.batch_size]
            for mb in range(rank, per_batch, world):
                idx = batch[mb * spec.microbatch : (mb + 1) * spec.microbatch]
                x = train_set.encode(idx, epoch, graph.steps, graph.dt, encoder=encoder, dtype=network.dtype)
                labels = train_set.labels[idx].to(network.device)
                scores, loss = microbatch(x, labels)
                loss_sum += loss
                correct += int((scores.argmax(-1) == labels).sum())
                seen += len(idx)
            for group in engine.param_groups:
                group["lr"] = schedule_lr(spec.learning_rate, done, total_steps, run.lr_schedule)
            engine.step()
            done += 1
            if progress and not rank:
                bar.set_postfix(loss=f"{loss_sum / max(1, seen):.3f}", acc=f"{correct / max(1, seen):.3f}")
        test_acc = evaluator(network, test_set, graph)
        history["epoch"].append(epoch + 1)
        history["loss"].append(loss_sum / max(1, seen))
        history["train_accuracy"].append(correct / max(1, seen))
        history["test_accuracy"].append(test_acc)
        if progress and not rank:
            tqdm.write(
                f"{desc}: loss {loss_sum / max(1, seen):.4f} train {correct / max(1, seen):.4f} "
                f"test {test_acc:.4f}"
            )
    return {
        "model": graph.name,
        "model_hash": graph.canonical_hash(),
        **extra,
        "format": sorted({p.format for p in graph.projections.values()}),
        "epochs": epochs,
        "seed": run.seed,
        "workers": world,
        "accumulation": sorted({accumulation_format(p.format).name for p in graph.projections.values()}),
        "learning_rate": spec.learning_rate,
        "lr_schedule": run.lr_schedule,
        "batch_size": spec.batch_size,
        "microbatch": spec.microbatch,
        "train_samples": len(train_set),
        "train_accuracy": history["train_accuracy"][-1] if epochs else math.nan,
        "test_accuracy": history["test_accuracy"][-1] if epochs else evaluator(network, test_set, graph),
        "seconds": round(time.perf_counter() - run.t0, 3),
        "weights_sha256": weights_digest(network),
        "history": history,
    }


def schedule_lr(lr: float, step: int, total: int, schedule: str = "cosine") -> float:
    """Learning rate of update ``step`` (0-based) out of ``total`` (see :func:`train`)."""
    if schedule == "constant":
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / total))


def _check_device(device: str | torch.device) -> torch.device:
    """A usable torch device, or a clear error saying why not."""
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device {device!r} is not a torch device (use cpu, cuda or cuda:N)") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
            "(not a valid torch device index); use cuda:0"
        )
    return dev


def weights_digest(network: Network) -> str:
    """sha256 over every weight's bytes (in projection order): equal digests = identical bits."""
    import hashlib

    h = hashlib.sha256()
    for name, w in network.weights.items():
        h.update(name.encode())
        h.update(w.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_outputs(out: Path, graph: ModelGraph, network: Network, metrics: dict, test_set) -> None:
    """``metrics.json``, ``weights.safetensors``, ``model.toml`` and figures, each written atomically."""
    from safetensors.torch import save

    from neuro import plot
    from neuro.model.spec import dump_model

    out.mkdir(parents=True, exist_ok=True)
    weights = {name: w.detach().cpu().contiguous() for name, w in network.weights.items()}
    _atomic_write(out / "weights.safetensors", save(weights, metadata={"model_hash": graph.canonical_hash()}))
    _atomic_write(out / "model.toml", dump_model(graph).encode())
    _atomic_write(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    plot.learning_curve(metrics["history"], out / "learning_curve.png")
    with torch.no_grad():
        x = test_set.encode(
            torch.arange(1), 0, graph.steps, graph.dt, encoder=_encoder(graph), dtype=network.dtype
        )
        result = network(x, record=True)
    plot.raster(result, graph, out / "raster.png")
    plot.weights_hist(weights, out / "weights_hist.png")
