"""``train``: the one entry point that trains a model graph in any mode, on one worker or many.

It picks the mode's driver, builds the one engine over the driver's trained weights, runs the one
loop (:func:`neuro.training.loop.fit`) and, on rank 0 only, writes the run folder
(:func:`neuro.training.outputs.write_run`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from neuro.training.checkpoint import Checkpointer
from neuro.training.loop import fit, prepare_run, world_of
from neuro.training.modes import MODES, check_mode, default_mode
from neuro.training.outputs import begin_run, write_run
from neuro.training.preflight import available_bytes, check_memory

__all__ = ["TrainResult", "check_device", "driver_class", "make_driver", "train"]


@dataclass
class TrainResult:
    """Metrics of a run (what ``metrics.json`` holds), the trained network, and the run folder (None
    when nothing was written)."""

    metrics: dict
    network: object
    history: dict = field(default_factory=dict)
    out_dir: Path | None = None


def check_device(device: str | torch.device) -> torch.device:
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


def driver_class(mode: str):
    """The :class:`~neuro.training.loop.Driver` class of ``mode`` (one of
    :data:`~neuro.training.modes.MODES`)."""
    from neuro.training.bptt import BPTTDriver, CheckpointDriver
    from neuro.training.local import LocalDriver
    from neuro.training.online import OnlineDriver
    from neuro.training.reversible import ReversibleDriver

    drivers = {"bptt": BPTTDriver, "bptt_checkpoint": CheckpointDriver, "eprop": OnlineDriver,
               "ottt": OnlineDriver, "reversible": ReversibleDriver, "local": LocalDriver}
    assert set(drivers) == set(MODES)
    return drivers[mode]


def make_driver(mode: str, graph, run, *, device: torch.device, segment: int | None = None):
    """The driver of ``mode`` for ``graph``."""
    if device.type != "cpu" and mode != "bptt":
        raise ValueError(f"{graph.name}: mode {mode} runs on the CPU only; use --device cpu or mode bptt")
    cls = driver_class(mode)
    if mode == "bptt":
        return cls(graph, run, device=device)
    if mode == "bptt_checkpoint":
        return cls(graph, run, segment=segment)
    if mode in ("eprop", "ottt"):
        return cls(graph, run, mode=mode)
    return cls(graph, run)


def train(
    graph,
    *,
    mode: str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    max_train: int | None = None,
    lr_schedule: str | None = None,
    device: str | torch.device = "cpu",
    segment: int | None = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    memory_limit: int | None = None,
) -> TrainResult:
    """Train ``graph`` and return its metrics and trained network.

    Args:
        graph: the model graph (:func:`neuro.model.spec.load_model`).
        mode: a training mode (:data:`~neuro.training.modes.MODES`); default: the one its rules name.
        epochs, seed: override the model file's training settings.
        out_dir: the run folder (``metrics.json``, ``weights.safetensors``, ``model.toml``, figures,
            ``manifest.json``); nothing is written when ``None``, and only rank 0 writes.
        progress: show progress bars.
        max_train: use only the first ``max_train`` training samples (quick runs and tests).
        lr_schedule: ``"cosine"`` (default) or ``"constant"`` (:mod:`neuro.engine.schedules`).
        device: torch device of the network and the quires (mode ``bptt``).
        segment: steps per checkpoint segment (mode ``bptt_checkpoint``; default ``ceil(sqrt(T))``).
        checkpoint_every: with ``out_dir``, write a checkpoint every this many global batches
            (and after every epoch; 0: after epochs only) (:mod:`neuro.training.checkpoint`).
        resume: continue the run in ``out_dir`` from its last checkpoint; options left at None
            take the checkpoint's values, given ones must agree; the result has the bits of an
            uninterrupted run.
        memory_limit: bytes the run may use (default: the memory available on the device); a run
            whose memory plan exceeds it is refused before anything is allocated
            (:mod:`neuro.training.preflight`).
    Under ``torchrun`` (``torch.distributed`` initialised) every worker runs its share of each
    batch and the engine merges the contributions exactly: the weights equal one worker's, bit for bit.
    """
    from neuro.training.engines import preallocate_quires

    if resume and out_dir is not None:
        saved = Checkpointer.saved_settings(Path(out_dir))
        mode = mode if mode is not None else saved.get("mode")
        epochs = epochs if epochs is not None else saved.get("epochs")
        seed = seed if seed is not None else saved.get("seed")
        max_train = max_train if max_train is not None else saved.get("max_train")
        lr_schedule = lr_schedule if lr_schedule is not None else saved.get("lr_schedule")
        segment = segment if segment is not None else saved.get("segment")
    mode = check_mode(graph, mode or default_mode(graph))
    dev = check_device(device)
    limit = available_bytes(dev) if memory_limit is None else int(memory_limit)
    eval_batch = check_memory(graph, mode, limit)
    rank, world = world_of()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # identical kernels for every microbatch, whatever the worker count
    try:
        run = prepare_run(graph, epochs, seed, lr_schedule, max_train, splits=driver_class(mode).splits)
        driver = make_driver(mode, graph, run, device=dev, segment=segment)
        driver.progress = progress and not rank
        driver.eval_batch = eval_batch
        engine = driver.engine(run.seed)
        if driver.preallocate:
            preallocate_quires(engine)
        out = Path(out_dir) if out_dir is not None else None
        if resume and (out is None or not Checkpointer.exists(out)):
            raise ValueError(f"--resume: {out} holds no checkpoint (checkpoint.json); nothing to resume"
                             if out is not None else "resume needs the run folder (out_dir) to resume")
        checkpoint = None
        if out is not None:
            settings = {"model_hash": graph.canonical_hash(), "mode": mode, "epochs": run.epochs,
                        "seed": run.seed, "max_train": max_train, "lr_schedule": run.lr_schedule,
                        "segment": segment}
            checkpoint = Checkpointer(out, settings, checkpoint_every)
            if not rank:
                begin_run(out)
        metrics = fit(graph, driver, engine, run, progress=progress, rank=rank, world=world,
                      checkpoint=checkpoint, resume=resume)
        driver.finish(metrics)
        if out is not None and not rank:
            write_run(out, graph, driver.weights, metrics, driver.figures(run.test_set))
            checkpoint.remove()
        return TrainResult(metrics=metrics, network=driver.network, history=metrics["history"], out_dir=out)
    finally:
        torch.set_num_threads(threads)
