"""Training loops for the memory-bounded modes: online e-prop / OTTT and segment-checkpointed BPTT.

* ``eprop`` / ``ottt``: :class:`neuro.rules.online.OnlineLearner` runs each microbatch step by step
  and hands the engine its contributions online; memory does not depend on ``T``.
* ``bptt_checkpoint``: surrogate-gradient BPTT where the time loop is cut into segments, each run
  under ``torch.utils.checkpoint``; error signals reach the engine from the backward pass
  (:class:`neuro.sim.checkpointed.CheckpointedBPTT`).

Every mode allocates its buffers up front (:func:`preallocate_quires` widens each quire to the
window :mod:`neuro.train.plan` assumed) and runs in :func:`neuro.train.loop.fit`, the loop BPTT uses, so
metrics and output files look like those of ``neuro train``.  All modes train the model's own
objective, the cross-entropy of the max-membrane readout.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from neuro.model.graph import ModelGraph
from neuro.rules.online import ONLINE_RULES, OnlineLearner
from neuro.sim.checkpointed import CheckpointedBPTT
from neuro.sim.network import Network
from neuro.train.loop import (
    TrainResult,
    _dtype_for,
    build_engine,
    fit,
    prepare_run,
    write_outputs,
)

__all__ = ["MODES", "train_online", "preallocate_quires", "CheckpointedBPTT", "online_mode_of"]

MODES = ("eprop", "ottt", "bptt_checkpoint")
#: Quire window (absolute limb indices [lo, hi), 32 bits per limb) allocated up front for a
#: 32-bit quire format (bposit32 / posit32): measured on Yin-Yang training, contributions of
#: surrogate-gradient, e-prop and OTTT updates occupy limbs -5..2 (bits 2**-160 .. 2**96, headroom
#: for carries included).  A contribution outside the window widens it (never truncates).
QUIRE_WINDOW = (-5, 3)


def preallocate_quires(engine, window: tuple[int, int] = QUIRE_WINDOW) -> None:
    """Allocate every parameter's quire limbs ``[lo, hi)`` now, as :mod:`neuro.train.plan` assumes.

    Uses the engine's per-parameter quires (``engine._slot(p).quire.widen``): the engine has no
    public pre-allocation call yet.
    """
    for p in engine.parameters():
        engine._slot(p).quire.widen(*window)


def online_mode_of(graph: ModelGraph) -> str | None:
    """The online mode a graph's projection rules select (``"eprop"`` / ``"ottt"``), else None."""
    rules = {p.rule for p in graph.projections.values()} & set(ONLINE_RULES)
    if len(rules) > 1:
        raise ValueError(f"{graph.name}: mixes online rules {sorted(rules)}; use one")
    return rules.pop() if rules else None


def train_online(
    graph: ModelGraph,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    max_train: int | None = None,
    mode: str | None = None,
    segment: int | None = None,
    lr_schedule: str | None = None,
) -> TrainResult:
    """Train ``graph`` in a memory-bounded mode; same metrics and outputs as :func:`neuro.train.loop.train`.

    Args:
        graph: the model graph; its projection rule selects the mode (``"eprop"``, ``"ottt"``)
            unless ``mode`` is given.
        epochs, seed, out_dir, progress, max_train, lr_schedule: as in :func:`neuro.train.loop.train`.
        mode: ``"eprop"``, ``"ottt"`` or ``"bptt_checkpoint"`` (projections with rule ``eprop`` or
            ``bptt`` are trained).
        segment: steps per checkpoint segment for ``bptt_checkpoint`` (default ``ceil(sqrt(T))``).
    """
    from neuro.rules.bptt import classification_loss

    t0 = time.perf_counter()
    spec = graph.training
    mode = mode or online_mode_of(graph) or "bptt_checkpoint"
    if mode not in MODES:
        raise ValueError(f"{graph.name}: mode must be one of {MODES}, got {mode!r}")
    if spec.readout != "max_membrane":
        raise ValueError(
            f"{graph.name}: training.readout = {spec.readout!r}: the online and checkpointed "
            "modes train the max_membrane readout of an LI output"
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = prepare_run(graph, epochs, seed, lr_schedule, max_train, t0)
        network = Network(graph, seed=run.seed, dtype=_dtype_for(graph))
        rules = ("eprop", "ottt", "bptt")
        trained = network.plastic(rules)
        rule_name = next(p.rule for p in graph.projections.values() if p.rule in rules)
        engine = build_engine(graph, network, rule=rule_name, seed=run.seed)
        preallocate_quires(engine)
        feedback = dict(graph.projections[trained[0]].rule_params).get("feedback", "symmetric")
        scale = -1.0 / spec.batch_size
        if mode in ONLINE_RULES:
            learner = OnlineLearner(
                graph,
                dict(network.weights),
                batch=spec.microbatch,
                rule=mode,
                trained=trained,
                feedback=feedback,
                dtype=network.dtype,
                seed=run.seed,
            )

            @torch.no_grad()
            def microbatch(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
                return learner.run(x, labels, engine, scale)
        else:
            learner = CheckpointedBPTT(graph, network, segment=segment or math.ceil(math.sqrt(graph.steps)))

            def microbatch(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
                scores = learner.run(x, engine, trained, scale)
                loss = classification_loss(scores, labels)
                loss.backward()
                for w in network.weights.values():
                    w.grad = None
                return scores.detach(), float(loss.detach())

        extra = {"mode": mode} if mode != "bptt_checkpoint" else {"mode": mode, "segment": learner.segment}
        metrics = fit(graph, network, engine, run, microbatch, progress=progress, label=mode, **extra)
        if out_dir is not None:
            write_outputs(Path(out_dir), graph, network, metrics, run.test_set)
        return TrainResult(metrics=metrics, network=network, history=metrics["history"])
    finally:
        torch.set_num_threads(threads)
