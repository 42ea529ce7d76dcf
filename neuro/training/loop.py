"""The one training loop: every mode (BPTT, checkpointed BPTT, e-prop, OTTT, reversible, local
rules) is a :class:`Driver` that this loop runs, on one worker or many.

Reproducibility rests on three choices (see DESIGN.md):

* every global batch is split into microbatches of the model's fixed ``microbatch`` size, and
  every microbatch runs the same kernels whatever worker runs it (one intra-op thread);
* spikes and shuffles come from counter-based streams keyed by (seed, epoch, sample);
* weight changes are summed exactly in the engine's quires and merged as integers across
  ``torch.distributed`` workers, then rounded once.

So one worker and two workers, or two runs with the same seed, produce identical weight bits.
Worker ``rank`` of ``world`` runs microbatches ``rank, rank + world, ...`` of each global batch (a
worker may get none); the engine's step merges every worker's quires.  A driver whose rule is
sequential in time (a local rule: each presentation changes the weights the next one sees) is
``replicated``: every worker runs every microbatch with an engine that does not merge (each worker
computes the same contributions itself, so nothing travels), and only rank 0 writes.
"""

from __future__ import annotations

import abc
import math
import time
from typing import NamedTuple

import torch

from neuro.engine.schedules import LR_SCHEDULES, schedule_lr
from neuro.training.checkpoint import Checkpointer, Position
from neuro.training.data import load_split
from neuro.training.engines import accumulation_format
from neuro.training.outputs import weights_digest

__all__ = ["Driver", "Run", "fit", "prepare_run", "world_of", "evaluate"]


class Run(NamedTuple):
    """The settings and data of one training run (:func:`prepare_run`)."""

    epochs: int
    seed: int
    lr_schedule: str
    t0: float  # start, time.perf_counter() seconds
    train_set: object
    test_set: object


def prepare_run(graph, epochs: int | None = None, seed: int | None = None, lr_schedule: str | None = None,
                max_train: int | None = None, t0: float | None = None, splits=None) -> Run:
    """The overrides, else the model file's settings (checked), and the train / test splits (the
    first ``max_train`` training samples when given; ``splits(graph, max_train)``: a driver's own,
    :meth:`Driver.splits`)."""
    spec = graph.training
    epochs = spec.epochs if epochs is None else int(epochs)
    seed = spec.seed if seed is None else int(seed)
    lr_schedule = lr_schedule or spec.lr_schedule
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"{graph.name}: lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if spec.batch_size % spec.microbatch:
        raise ValueError(
            f"{graph.name}: training.batch_size {spec.batch_size} must be a multiple of "
            f"training.microbatch {spec.microbatch}"
        )
    train_set, test_set = (splits or Driver.splits)(graph, max_train)
    return Run(epochs, seed, lr_schedule, time.perf_counter() if t0 is None else t0, train_set, test_set)


def world_of() -> tuple[int, int]:
    """``(rank, world)`` of this process: (0, 1) unless ``torch.distributed`` is initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Driver(abc.ABC):
    """One training mode: the network it trains and how a microbatch reaches the engine.

    Attributes:
        mode: the mode's name (``metrics["mode"]``).
        weights: name -> every weight of the network, in projection order (digest, outputs).
        trained: the names of the weights the engine updates.
        dtype: dtype of the network's arithmetic (inputs are encoded in it).
        local: a local-rule driver (lr 1, no Adam; it steps the engine itself, once per update
            interval, through the ``step`` it is given).
        replicated: every worker runs every microbatch (see the module docstring).
        preallocate: the engine's quires get the window the memory plan assumes up front.
        eval_batch: samples per evaluation batch (the pre-flight check may lower it).
    """

    mode = ""
    local = False
    replicated = False
    preallocate = False
    eval_batch = 256
    weights: dict[str, torch.Tensor]
    trained: list[str]
    dtype = torch.float32

    def __init__(self, graph, run: Run) -> None:
        self.graph, self.run = graph, run

    def engine(self, seed: int):
        """The one engine builder over the trained weights (:func:`neuro.training.engines.build_engine`)."""
        from neuro.training.engines import build_engine

        return build_engine(self.graph, self.weights, self.trained, seed=seed, local=self.local,
                            rounding=getattr(self, "rounding", None), merge=not self.replicated)

    def order(self, n: int, seed: int, epoch: int) -> torch.Tensor:
        """The order of the ``n`` training samples in ``epoch``: the counter-based shuffle."""
        from neuro.data import epoch_permutation

        return epoch_permutation(n, seed, epoch)

    def encode(self, dataset, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        """The inputs ``(T, B, n_in)`` of samples ``idx`` in ``epoch``."""
        return dataset.encode(idx, epoch, dtype=self.dtype)

    @abc.abstractmethod
    def microbatch(self, x, labels, engine, scale: float) -> tuple[torch.Tensor | None, float]:
        """Run one microbatch and hand the engine its contributions (``scale``: the factor of a
        gradient, ``-1 / global batch``); a local driver also steps it, once per update interval.
        Return ``(scores (B, C) or None, summed loss)``."""

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, C)`` of inputs ``x`` (no learning); drivers that classify otherwise
        override :meth:`accuracies` instead."""
        raise TypeError(f"mode {self.mode} scores no inputs")

    def accuracies(self, test_set, epoch: int, running: float) -> tuple[float, float]:
        """``(train, test)`` accuracy after ``epoch``: by default the running accuracy of the
        epoch's microbatches and :func:`evaluate` of :meth:`scores` on ``test_set``."""
        return running, evaluate(self, test_set, batch=self.eval_batch)

    def metrics(self) -> dict:
        """Extra entries of ``metrics.json`` (after ``model_hash``)."""
        return {"mode": self.mode} if self.mode != "bptt" else {}

    def finish(self, metrics: dict) -> None:  # noqa: B027 (a hook: most drivers add nothing)
        """Add what is known once training is over to ``metrics`` (and its ``history``)."""

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The driver's own state for a checkpoint, beyond the weights and the engine: ``(tensors,
        JSON-able values)`` (default: none, a microbatch starts from rest)."""
        return {}, {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:  # noqa: B027
        """Restore :meth:`state_dict`'s state."""

    @staticmethod
    def splits(graph, max_train: int | None):
        """``(train, test)`` data sets of the mode (default: the model's splits)."""
        return load_split(graph, "train", max_samples=max_train), load_split(graph, "test")

    def figures(self, test_set) -> list:
        """``(file name, draw(path))`` of the run's figures."""
        from neuro import plot

        return [("learning_curve.png", lambda p, h=self.history: plot.learning_curve(h, p, self.graph))]


@torch.no_grad()
def evaluate(driver: Driver, dataset, *, epoch: int = 0, batch: int = 256) -> float:
    """Classification accuracy (fraction in [0, 1]) of ``driver.scores`` on ``dataset``, ``batch``
    samples at a time: memory does not grow with the size of the data set."""
    correct = 0
    for start in range(0, len(dataset), batch):
        idx = torch.arange(start, min(len(dataset), start + batch))
        scores = driver.scores(driver.encode(dataset, idx, epoch))
        correct += int((scores.argmax(-1).cpu() == dataset.labels[idx]).sum())
    return correct / max(1, len(dataset))


def fit(graph, driver: Driver, engine, run: Run, *, progress: bool = True, rank: int = 0,
        world: int = 1, checkpoint: Checkpointer | None = None, resume: bool = False) -> dict:
    """Train ``driver`` for ``run.epochs`` epochs; returns the run's metrics (history included).

    Each epoch shuffles the training set with the counter-based stream ``(seed, epoch)``, cuts it
    into global batches of ``training.batch_size``, runs this worker's microbatches through
    ``driver.microbatch`` and steps the engine once per batch at the scheduled learning rate (a
    local driver steps it once per update interval instead); then the test accuracy.  With a
    ``checkpoint`` (:class:`~neuro.training.checkpoint.Checkpointer`), rank 0 writes one every
    ``checkpoint.every`` batches and after every epoch; ``resume`` continues from the last one.
    """
    from tqdm.auto import tqdm

    spec = graph.training
    train_set, test_set = run.train_set, run.test_set
    per_batch = spec.batch_size // spec.microbatch
    n_batches = len(train_set) // spec.batch_size
    if n_batches == 0:
        raise ValueError(f"{graph.name}: {len(train_set)} training samples make no batch of "
                         f"training.batch_size = {spec.batch_size}; use more samples or a smaller batch")
    mine = range(per_batch) if driver.replicated else range(rank, per_batch, world)
    history = {"epoch": [], "loss": [], "train_accuracy": [], "test_accuracy": []}
    position = Position()
    if checkpoint is not None and resume:
        position, history = checkpoint.load(driver, engine)
    driver.history = history
    total_steps, done = max(1, run.epochs * n_batches), position.done
    scale = -1.0 / spec.batch_size
    quiet = not progress or rank
    writes = checkpoint is not None and not rank
    prefix = f"{driver.mode} " if driver.mode and driver.mode != "bptt" else ""
    for epoch in range(position.epoch, run.epochs):
        order = driver.order(len(train_set), run.seed, epoch)
        desc = f"{prefix}epoch {epoch + 1}/{run.epochs}"
        start = position.batch if epoch == position.epoch else 0
        bar = tqdm(range(start, n_batches), desc=desc, disable=bool(quiet), leave=False, initial=start,
                   total=n_batches)
        loss_sum, correct, seen = (position[3:] if start else (0.0, 0, 0))
        for b in bar:
            batch = order[b * spec.batch_size : (b + 1) * spec.batch_size]
            for mb in mine:
                idx = batch[mb * spec.microbatch : (mb + 1) * spec.microbatch]
                x = driver.encode(train_set, idx, epoch)
                labels = train_set.labels[idx]
                scores, loss = driver.microbatch(x, labels, engine, scale)
                loss_sum += loss
                if scores is not None:
                    correct += int((scores.argmax(-1).cpu() == labels).sum())
                seen += len(idx)
            if not driver.local:
                for group in engine.param_groups:
                    group["lr"] = schedule_lr(spec.learning_rate, done, total_steps, run.lr_schedule)
                engine.step()
            done += 1
            if not quiet:
                bar.set_postfix(loss=f"{loss_sum / max(1, seen):.3f}", acc=f"{correct / max(1, seen):.3f}")
            if writes and checkpoint.due(b) and b + 1 < n_batches:  # the last batch: before evaluation
                here = Position(epoch, b + 1, done, loss_sum, correct, seen)
                checkpoint.save(here, history, driver, engine)
        if writes:  # before evaluating: a failure there does not lose the epoch's training
            trained = Position(epoch, n_batches, done, loss_sum, correct, seen)
            checkpoint.save(trained, history, driver, engine)
        train_acc, test_acc = driver.accuracies(test_set, epoch, correct / max(1, seen))
        history["epoch"].append(epoch + 1)
        history["loss"].append(loss_sum / max(1, seen))
        history["train_accuracy"].append(train_acc)
        history["test_accuracy"].append(test_acc)
        if not quiet:
            tqdm.write(f"{desc}: loss {history['loss'][-1]:.4f} train {history['train_accuracy'][-1]:.4f} "
                       f"test {test_acc:.4f}")
        if writes:
            checkpoint.save(Position(epoch + 1, 0, done), history, driver, engine)
    epochs = run.epochs
    return {
        "model": graph.name,
        "model_hash": graph.canonical_hash(),
        **driver.metrics(),
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
        "test_accuracy": (history["test_accuracy"][-1] if epochs
                          else driver.accuracies(test_set, 0, math.nan)[1]),
        "seconds": round(time.perf_counter() - run.t0, 3),
        "weights_sha256": weights_digest(driver.weights),
        "history": history,
    }
