"""Bitwise determinism of UpdateEngine: any order, any microbatch split, 1 / 2 / 4 processes.

The distributed runs use torch.distributed with the gloo backend on 127.0.0.1, started here with
torch.multiprocessing.spawn on a free port. The same test shows that a plain float32 sum of the
same contributions gives different bits for different orders (so the test can fail).
"""

from __future__ import annotations

import os
import random
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neuro.algebra import Algebra
from neuro.engine import ParamType, UpdateEngine
from neuro.numerics import POSIT16

SAMPLES = 32  # contributions per step
STEPS = 3
MICRO = 4  # microbatch shape used by the workers


def _initial() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(12, 10, generator=g)
    s = torch.randn(6, 5, generator=g)
    rot = torch.zeros(3, 8, dtype=torch.float64)
    rot[:, 0] = 1.0
    return [w, s, rot]


def _contributions(step: int) -> dict[str, torch.Tensor]:
    """Per-sample contributions of one step, with a wide dynamic range (hard for float32 sums)."""
    g = torch.Generator().manual_seed(100 + step)
    mag = torch.exp2(torch.randint(-12, 8, (SAMPLES, 12, 10), generator=g).float())
    return {
        "w": torch.randn(SAMPLES, 12, 10, generator=g) * mag,
        "post": (torch.rand(SAMPLES, 5, 12, generator=g) < 0.3).float(),
        "pre": torch.randn(SAMPLES, 5, 10, generator=g),
        "reward": torch.randn(SAMPLES, generator=g),
        "s": torch.randn(SAMPLES, 6, 5, generator=g) * 1e-2,
        "rot": torch.randn(SAMPLES, 3, 8, generator=g, dtype=torch.float64),
    }


def _engine(params: list[torch.Tensor], group=None) -> UpdateEngine:
    w, s, rot = params
    return UpdateEngine(
        [
            {"params": [w], "lr": 0.03},
            {"params": [s], "lr": 0.5, "rounding": "stochastic", "momentum": 0.5,
             "type": ParamType(storage="float32")},
            {"params": [rot], "lr": 0.05, "type": ParamType(Algebra(3), constraint="rotor")},
        ],
        format=POSIT16,
        seed=7,
        process_group=group,
    )


def _feed(engine: UpdateEngine, params: list[torch.Tensor], c: dict, batches: list[list[int]]) -> None:
    w, s, rot = params
    for b in batches:
        idx = torch.tensor(b, dtype=torch.long)
        engine.accumulate(w, c["w"][idx])
        k = len(b)
        post = c["post"][idx].reshape(k * 5, 12)
        pre = c["pre"][idx].reshape(k * 5, 10)
        scale = c["reward"][idx].repeat_interleave(5).unsqueeze(1)
        engine.accumulate_outer(w, post, pre, scale)
        engine.accumulate(s, c["s"][idx])
        engine.accumulate(rot, c["rot"][idx])


def _run(batches_for_step, group=None) -> list[torch.Tensor]:
    params = _initial()
    engine = _engine(params, group)
    for step in range(STEPS):
        _feed(engine, params, _contributions(step), batches_for_step(step))
        engine.step()
    return params


def _bits(params: list[torch.Tensor]) -> list[list[int]]:
    out = []
    for p in params:
        view = p.detach().contiguous().view(torch.int32 if p.dtype == torch.float32 else torch.int64)
        out.append(view.flatten().tolist())
    return out


def _worker(rank: int, world: int, port: int, path: str) -> None:
    """One of ``world`` processes; runs the job on sub-groups of 1, 2 and all ``world`` ranks."""
    from safetensors.torch import save_file

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for size in (1, 2, world):
            group = dist.new_group(list(range(size)))  # collective: every rank calls it
            if rank >= size:
                continue
            mine = list(range(rank, SAMPLES, size))

            def batches(step: int, mine=mine) -> list[list[int]]:
                return [mine[i:i + MICRO] for i in range(0, len(mine), MICRO)]

            params = _run(batches, group)
            if rank == 0:
                save_file({f"p{i}": p.detach().contiguous() for i, p in enumerate(params)},
                          f"{path}.{size}")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed(world: int) -> dict[int, list[torch.Tensor]]:
    """Final parameters of the job run on 1, 2 and ``world`` gloo processes (one spawn)."""
    from safetensors.torch import load_file

    out = {}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.safetensors")
        # fork: the workers inherit the already imported (and warmed-up) torch and neuro; "spawn" works
        # too but pays ~5 s of imports per process.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        mp.start_processes(_worker, args=(world, _free_port(), path), nprocs=world, join=True,
                           start_method=method)
        for size in (1, 2, world):
            loaded = load_file(f"{path}.{size}")
            out[size] = [loaded[f"p{i}"] for i in range(3)]
    return out


def _float32_reference(order: list[int]) -> list[int]:
    """Plain float32: w + lr * (sum of the same contributions in the given order)."""
    w = _initial()[0].clone()
    c = _contributions(0)
    total = torch.zeros(12, 10)
    for i in order:
        total = total + c["w"][i]
        total = total + c["reward"][i] * (c["post"][i].T @ c["pre"][i])
    return (w + 0.03 * total).view(torch.int32).flatten().tolist()


def test_bitwise_determinism_orders_microbatches_processes():
    rng = random.Random(3)
    reference = _bits(_run(lambda step: [list(range(SAMPLES))]))  # one call per step

    def shuffled(step: int) -> list[list[int]]:
        order = list(range(SAMPLES))
        random.Random(step).shuffle(order)
        return [[i] for i in order]

    def random_split(step: int) -> list[list[int]]:
        order = list(range(SAMPLES))
        rng.shuffle(order)
        cuts = sorted(rng.sample(range(1, SAMPLES), 5))
        return [order[a:b] for a, b in zip([0, *cuts], [*cuts, SAMPLES])]

    assert _bits(_run(shuffled)) == reference
    assert _bits(_run(random_split)) == reference
    runs = _distributed(4)
    assert sorted(runs) == [1, 2, 4]
    for world, params in runs.items():
        assert _bits(params) == reference, f"{world} processes differ"
    # Something actually happened, in every parameter.
    assert _bits(_initial()) != reference
    for a, b in zip(_bits(_initial()), reference):
        assert a != b

    # The same contributions summed in float32 in different orders do NOT agree bit for bit.
    orders = [list(range(SAMPLES)), list(reversed(range(SAMPLES)))]
    for seed in range(3):
        o = list(range(SAMPLES))
        random.Random(seed).shuffle(o)
        orders.append(o)
    f32 = {tuple(_float32_reference(o)) for o in orders}
    assert len(f32) > 1


@pytest.mark.slow
def test_bitwise_determinism_more_splits():
    reference = _bits(_run(lambda step: [list(range(SAMPLES))]))
    for seed in range(20):
        rng = random.Random(seed)

        def split(step: int, rng=rng) -> list[list[int]]:
            order = list(range(SAMPLES))
            rng.shuffle(order)
            n = rng.randint(1, SAMPLES)
            cuts = sorted(rng.sample(range(1, SAMPLES), n - 1)) if n > 1 else []
            return [order[a:b] for a, b in zip([0, *cuts], [*cuts, SAMPLES])]

        assert _bits(_run(split)) == reference
