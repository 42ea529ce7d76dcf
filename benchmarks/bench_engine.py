"""UpdateEngine vs torch.optim.SGD: step time and extra memory per parameter.

For a 784x512 and a 4096x4096 float32 weight, the same per-step update (a dense weight change of
``batch`` summed per-sample contributions) is applied by

* ``torch.optim.SGD(lr)`` with ``p.grad = -sum(deltas)`` (contributions are weight changes), and
* ``UpdateEngine(format=POSIT16, lr)``: ``accumulate(w, deltas)`` (exact quire sum of the
  per-sample deltas), then ``step()`` (w + lr * S rounded once to posit16 storage).

Timings are medians over ``--repeats`` steps after one warm-up step, wall-clock and process CPU
time (the latter is less sensitive to other load on a shared machine), with torch's default
thread count unless ``--threads`` is given. Memory: the engine's quire bytes per parameter
(``engine.quire_bytes() / numel``); plain SGD keeps no extra state (0 bytes per parameter).

Run: ``python benchmarks/bench_engine.py [--repeats N] [--batch B] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _machine import print_machine  # noqa: E402

from neuro.engine import UpdateEngine  # noqa: E402
from neuro.numerics import POSIT16  # noqa: E402


def _median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and process-CPU seconds of ``fn()`` after one warm-up call."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def bench(shape: tuple[int, int], batch: int, repeats: int, lr: float = 2.0**-6) -> dict:
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(*shape, generator=g) * 0.05
    deltas = torch.randn(batch, *shape, generator=g) * 1e-2

    w_sgd = torch.nn.Parameter(POSIT16.quantize(w0).float())
    sgd = torch.optim.SGD([w_sgd], lr=lr)

    def sgd_step() -> None:
        w_sgd.grad = -deltas.sum(0)
        sgd.step()

    t_sgd, c_sgd = _median_time(sgd_step, repeats)

    w_eng = torch.nn.Parameter(w0.clone())
    eng = UpdateEngine([w_eng], format=POSIT16, lr=lr)

    def eng_acc() -> None:
        eng.accumulate(w_eng, deltas)

    def eng_step() -> None:
        eng.step()

    acc, stp, cpu_acc, cpu_stp = [], [], [], []
    eng_acc()
    eng_step()  # warm-up
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        eng_acc()
        t1, c1 = time.perf_counter(), time.process_time()
        eng_step()
        t2, c2 = time.perf_counter(), time.process_time()
        acc.append(t1 - t0)
        stp.append(t2 - t1)
        cpu_acc.append(c1 - c0)
        cpu_stp.append(c2 - c1)
    eng_acc()
    quire_bytes = eng.quire_bytes()  # window in use while contributions are pending
    eng.clear()
    n = w0.numel()
    out = {
        "shape": list(shape),
        "batch": batch,
        "sgd_step_s": t_sgd,
        "sgd_step_cpu_s": c_sgd,
        "engine_accumulate_cpu_s": statistics.median(cpu_acc),
        "engine_step_cpu_s": statistics.median(cpu_stp),
        "engine_accumulate_s": statistics.median(acc),
        "engine_step_s": statistics.median(stp),
        "quire_bytes": quire_bytes,
        "quire_bytes_per_param": quire_bytes / n,
        "sgd_extra_bytes_per_param": 0.0,
    }
    out["engine_total_s"] = out["engine_accumulate_s"] + out["engine_step_s"]
    out["ratio_total_vs_sgd"] = out["engine_total_s"] / t_sgd
    out["ratio_step_vs_sgd"] = out["engine_step_s"] / t_sgd
    out["cpu_ratio_total_vs_sgd"] = (out["engine_accumulate_cpu_s"] + out["engine_step_cpu_s"]) / c_sgd
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--sizes", type=str, default="784x512,4096x4096")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = print_machine()
    results = []
    print(
        f"\nbatch of {args.batch} per-sample contributions per step, posit16 engine, medians of "
        f"{args.repeats} steps"
    )
    print(
        f"{'weight':>11} | {'SGD step':>9} | {'engine acc':>10} | {'engine step':>11} | "
        f"{'total/SGD':>9} | {'step/SGD':>8} | CPU-time total/SGD | step ns/weight (CPU) | quire B/param"
    )
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    for shape in shapes:
        r = bench(shape, args.batch, args.repeats)
        results.append(r)
        n = shape[0] * shape[1]
        print(
            f"{shape[0]:>5}x{shape[1]:<5} | {r['sgd_step_s'] * 1e3:7.2f}ms | "
            f"{r['engine_accumulate_s'] * 1e3:8.1f}ms | {r['engine_step_s'] * 1e3:9.1f}ms | "
            f"{r['ratio_total_vs_sgd']:8.1f}x | {r['ratio_step_vs_sgd']:7.1f}x | "
            f"{r['cpu_ratio_total_vs_sgd']:17.1f}x | "
            f"{r['engine_step_s'] / n * 1e9:7.1f} ({r['engine_step_cpu_s'] / n * 1e9:7.1f})      | "
            f"{r['quire_bytes_per_param']:.1f} (SGD: 0)",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
