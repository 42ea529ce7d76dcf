"""Simulation speed: our event-driven LIF simulation vs Brian2 (numpy and cython targets).

Scenario (issue 6): 1000 LIF neurons (tau_mem 10 ms, tau_syn 5 ms, v_th 1, reset 0), driven by
1000 Poisson inputs at 10 Hz through a dense 1000x1000 weight, 10 s at dt = 0.1 ms (10^5 steps).

* ours, compiled kernel: :func:`neuro.sim.simulate.simulate_lif_events` with ``backend="c"`` (the C
  kernel ``neuro/_kernels/lif_events.c``, float32; per step only the weight rows of inputs that
  spiked are added, then Norse's LIF update), batch 1 and batch B (B independent trials in one
  run, on ``torch.get_num_threads()`` threads).  The batch-B inputs are generated 0.2 s at a time
  (uint8) and the run goes on chunk by chunk with its state; only the simulation calls are timed.
* ours, torch loop: the same function with ``backend="torch"`` (the fallback without a C
  compiler), batch 1 (``--torch-batch``: batch B too).
* Both backends are first checked against :class:`neuro.sim.network.Network` in float64 (same
  raster) on the first 0.5 s.
* Brian2 numpy and Brian2 cython (compiled without -ffast-math in its own cache): ``Network.run``
  wall time of one trial, built by :func:`neuro.crosscheck.reference.simulate_brian2` from the same model
  graph.  The cython target runs twice: the first run compiles (or finds the disk cache), the
  second, warm, run is the one compared.  Brian2 simulates one trial per network, so its
  batch-B time is B x the measured single trial (stated as such).
* optionally (``--dense``) the dense per-step Norse loop (:class:`neuro.sim.network.Network`).

Timings are wall-clock seconds of one run each (build and input generation excluded for both
sides).  Run::

    python benchmarks/bench_simulate.py [--duration 10] [--batch 32] [--dense] [--torch-batch]
                                        [--skip-brian2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _machine import print_machine  # noqa: E402

from neuro.data import poisson_trains  # noqa: E402
from neuro.model.spec import loads_model  # noqa: E402
from neuro.sim.network import Network  # noqa: E402
from neuro.sim.simulate import compiled_kernel, simulate_lif_events  # noqa: E402

MODEL = """
[model]
name = "bench_simulate"
description = "1000 Poisson (10 Hz) -> 1000 LIF, dt 0.1 ms"
dt = "0.1 ms"
duration = "{duration} s"
output = "lif"
[populations.inputs]
type = "input"
size = 1000
[populations.lif]
type = "LIF"
size = 1000
tau_mem = "10 ms"
tau_syn = "5 ms"
v_th = 1.0
v_reset = 0.0
v_leak = 0.0
[inputs.inputs]
encoding = "poisson"
rate = "10 Hz"
[projections.w]
source = "inputs"
target = "lif"
init = {{ dist = "normal", mean = 0.025, std = 0.02 }}
[data]
name = "poisson_scenario"
[training]
batch_size = 1
microbatch = 1
loss = "none"
readout = "spike_count"
"""


def _ours_batch(w, kw: dict, graph, batch: int, backend: str) -> tuple[float, int]:
    """Batch run with inputs generated per chunk of steps; returns (seconds simulated, spikes)."""
    chunk_s = 0.2
    n_chunks = max(1, round(graph.duration / chunk_s))
    state, elapsed, count = None, 0.0, 0
    for c in range(n_chunks):
        dur = graph.duration - c * chunk_s if c == n_chunks - 1 else chunk_s
        x = poisson_trains(1000, 10.0, dur, graph.dt, 100 + c, batch=batch, dtype=torch.uint8)
        t = time.perf_counter()
        _, _, state = simulate_lif_events(x, w, dtype=torch.float32, record_z=False, state=state,
                                          return_state=True, backend=backend, **kw)
        elapsed += time.perf_counter() - t
        count += simulate_lif_events.last_count
    return elapsed, count


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="simulated seconds (default 10)")
    ap.add_argument("--batch", type=int, default=32, help="batched run size (default 32)")
    ap.add_argument("--dense", action="store_true", help="also time the dense per-step Norse loop")
    ap.add_argument("--torch-batch", action="store_true", help="also time the torch loop at batch B")
    ap.add_argument("--skip-brian2", action="store_true", help="time only our simulator")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    info = print_machine()
    graph = loads_model(MODEL.format(duration=args.duration))
    pop = graph.populations["lif"]
    net = Network(graph, seed=0, dtype=torch.float64)
    w64 = net.weights["w"].detach()
    x1 = poisson_trains(1000, 10.0, graph.duration, graph.dt, 1, batch=1, dtype=torch.uint8)
    kw = dict(dt=graph.dt, tau_mem=pop.tau_mem, tau_syn=pop.tau_syn, v_th=pop.v_th, v_reset=pop.v_reset)
    has_c = compiled_kernel() is not None  # compiles the kernel on first use (not timed)
    res: dict = {"machine": info, "steps": graph.steps, "batch": args.batch,
                 "threads": torch.get_num_threads(), "compiled_kernel": has_c}
    print(f"scenario: 1000 Poisson (10 Hz) -> 1000 LIF, {graph.steps} steps of {graph.dt * 1e3:g} ms; "
          f"compiled kernel {'available' if has_c else 'UNAVAILABLE (no C compiler)'}; "
          f"threads {res['threads']}")
    backends = (["c"] if has_c else []) + ["torch"]

    # correctness of both backends against the Network (float64, first 0.5 s)
    n_chk = min(graph.steps, 5000)
    with torch.no_grad():
        ref = net(x1[:n_chk].double(), record=True)
    for be in backends:
        z, v = simulate_lif_events(x1[:n_chk], w64, dtype=torch.float64, record_v=True, backend=be, **kw)
        res[f"check_{be}_raster_equal"] = bool(torch.equal(z.double(), ref.spikes["lif"]))
        res[f"check_{be}_max_abs_dv"] = float((v - ref.voltages["lif"]).abs().max())
        print(f"check {be:5s} vs Network (float64, {n_chk} steps, {int(ref.spikes['lif'].sum())} spikes): "
              f"raster equal {res[f'check_{be}_raster_equal']}, max|dv| {res[f'check_{be}_max_abs_dv']:.2e}")
    del ref

    rows = []  # (label, result key, trials, output rate)
    for be in backends:
        t = time.perf_counter()
        z1, _ = simulate_lif_events(x1, w64, dtype=torch.float32, backend=be, **kw)
        res[f"ours_{be}_b1_s"] = time.perf_counter() - t
        res[f"ours_{be}_rate_hz"] = float(z1.sum()) / (1000 * graph.duration)
        name = "compiled kernel" if be == "c" else "torch loop"
        rows.append((f"ours {name}, batch 1", f"ours_{be}_b1", 1, res[f"ours_{be}_rate_hz"]))
        if be == "c" or args.torch_batch:
            res[f"ours_{be}_batch_s"], n = _ours_batch(w64, kw, graph, args.batch, be)
            res[f"ours_{be}_batch_rate_hz"] = n / (1000 * graph.duration * args.batch)
            rows.append((f"ours {name}, batch {args.batch}", f"ours_{be}_batch", args.batch,
                         res[f"ours_{be}_batch_rate_hz"]))
    del z1
    for label, key, _, rate in rows:
        print(f"{label:38s}: {res[key + '_s']:7.2f} s  (output rate {rate:.2f} Hz)")
    if args.dense:
        net32 = Network(graph, seed=0, dtype=torch.float32)
        t = time.perf_counter()
        with torch.no_grad():
            net32(x1)
        res["dense_norse_b1_s"] = time.perf_counter() - t
        print(f"{'dense per-step Norse loop, batch 1':38s}: {res['dense_norse_b1_s']:7.2f} s")
    if not args.skip_brian2:
        from neuro.crosscheck.reference import simulate_brian2

        r = simulate_brian2(graph, x1, {"w": w64}, target="numpy", record=False)
        res["brian2_numpy_b1_s"] = r.wall_s
        res["brian2_numpy_rate_hz"] = float(r.spikes["lif"].sum()) / (1000 * graph.duration)
        del r
        print(f"{'Brian2 numpy, batch 1':38s}: {res['brian2_numpy_b1_s']:7.2f} s  "
              f"(output rate {res['brian2_numpy_rate_hz']:.2f} Hz)")
        r = simulate_brian2(graph, x1, {"w": w64}, target="cython", record=False)  # compiles / warms
        res["brian2_cython_first_s"] = r.wall_s
        del r
        r = simulate_brian2(graph, x1, {"w": w64}, target="cython", record=False)
        res["brian2_cython_b1_s"] = r.wall_s
        res["brian2_cython_rate_hz"] = float(r.spikes["lif"].sum()) / (1000 * graph.duration)
        del r
        print(f"{'Brian2 cython, batch 1, first run':38s}: {res['brian2_cython_first_s']:7.2f} s  "
              "(compiles unless cached)")
        print(f"{'Brian2 cython, batch 1, warm':38s}: {res['brian2_cython_b1_s']:7.2f} s  "
              f"(no fast-math; output rate {res['brian2_cython_rate_hz']:.2f} Hz)")
        print(f"ratios (Brian2 time for the same number of trials / our time; Brian2 batch {args.batch} "
              f"= {args.batch} x one trial):")
        for label, key, trials, _ in rows:
            parts = []
            for name in ("numpy", "cython"):
                ratio = trials * res[f"brian2_{name}_b1_s"] / res[key + "_s"]
                res[f"speedup_{key}_vs_{name}"] = ratio
                parts.append(f"vs Brian2 {name} {ratio:6.2f}x")
            print(f"  {label:38s}: " + ", ".join(parts))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
