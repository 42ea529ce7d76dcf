"""Pre-flight: a training run that would not fit in memory is refused before anything is allocated.

:func:`check_memory` compares the memory plan (:mod:`neuro.training.plan`) of the mode -- a training
step at the model's microbatch, and evaluation at :data:`EVAL_BATCH` samples with the weights,
quires and optimizer state still held -- with the memory available on the device, and names what
would fit instead: another mode, a smaller microbatch, or (for evaluation) a smaller evaluation
batch, which the run then uses.  Local-rule runs have no plan and are not checked.
"""

from __future__ import annotations

import os

import torch

__all__ = ["EVAL_BATCH", "available_bytes", "check_memory"]

#: Samples per evaluation batch (fewer when memory is short): evaluation memory does not grow with the
#: size of the test set.
EVAL_BATCH = 256


def available_bytes(device: torch.device) -> int:
    """Memory available for a run: free CUDA memory on a GPU; on the CPU, ``MemAvailable`` of
    /proc/meminfo (Linux), else the free physical pages."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**27 else f"{n / 2**20:.3g} MiB"


def check_memory(graph, mode: str, limit: int) -> int:
    """Raise ValueError if training ``graph`` in ``mode`` needs more than ``limit`` bytes; else return
    the evaluation batch to use (:data:`EVAL_BATCH`, or fewer samples when that is what fits)."""
    from neuro.training.modes import LOSS_MODES
    from neuro.training.plan import memory_plan, modes_for

    if mode not in LOSS_MODES:
        return EVAL_BATCH
    plan = memory_plan(graph, mode=mode)
    held = sum(plan.training.get(k, 0) for k in ("weights", "weight_tensors", "quires", "optimizer"))

    def evaluation(batch: int) -> int:
        return memory_plan(graph, batch=batch, mode=mode).inference_bytes + held

    if plan.training_bytes > limit:
        fitting = [m for m in modes_for(graph) if memory_plan(graph, mode=m).training_bytes <= limit]
        batches = [b for b in (64, 32, 16, 8, 4, 2, 1) if b < graph.training.microbatch
                   and memory_plan(graph, batch=b, mode=mode).training_bytes <= limit]
        if fitting:
            fix = f"mode {fitting[0]} needs {_gib(memory_plan(graph, mode=fitting[0]).training_bytes)}: "
            fix += f"train with --mode {fitting[0]}"
        elif batches:
            fix = f"training.microbatch = {batches[0]} would fit"
        else:
            fix = "no mode or microbatch fits: a smaller model, or a machine with more memory"
        raise ValueError(f"{graph.name}: training in mode {mode} needs {_gib(plan.training_bytes)} "
                         f"(`neuro plan {graph.name} --mode {mode}`), but {_gib(limit)} are available; {fix}")
    batch = EVAL_BATCH
    while batch > 1 and evaluation(batch) > limit:
        batch //= 2
    if evaluation(batch) > limit:
        raise ValueError(f"{graph.name}: evaluating one sample needs {_gib(evaluation(1))} with the "
                         f"weights and the engine held, but {_gib(limit)} are available")
    return batch
