"""Simulation speed: our event-driven LIF loop vs Brian2 (numpy and cython targets).

Scenario (issue 6): 1000 LIF neurons (tau_mem 10 ms, tau_syn 5 ms, v_th 1, reset 0), driven by
1000 Poisson inputs at 10 Hz through a dense 1000x1000 weight, 10 s at dt = 0.1 ms (10^5 steps).

* ours: :func:`neuro.simulate.simulate_lif_events` (float32; only the weight rows of inputs that
  spiked are touched, then an in-place membrane loop), batch 1 and batch 32 (32 independent
  trials in one run).  The float64 variant is checked against :class:`neuro.network.Network`
  (same raster) on the first 0.5 s.
* Brian2 numpy and Brian2 cython (compiled without -ffast-math in its own cache; the cache is
  warmed by a short run first): ``Network.run`` wall time of one trial, built by
  :func:`neuro.reference.simulate_brian2` from the same model graph.  Brian2 simulates one trial
  per network, so its batch-32 time is 32 x the measured single trial (stated as such).
* optionally (``--dense``) the dense per-step Norse loop (:class:`neuro.network.Network`).

Timings are wall-clock seconds of one run each (build and input generation excluded for both
sides), with torch's default thread count.  Run::

    python benchmarks/bench_simulate.py [--duration 10] [--batch 32] [--dense] [--skip-brian2]
                                        [--json out.json]
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
from neuro.network import Network  # noqa: E402
from neuro.simulate import simulate_lif_events  # noqa: E402
from neuro.spec import loads_model  # noqa: E402

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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="simulated seconds (default 10)")
    ap.add_argument("--batch", type=int, default=32, help="batched run size (default 32)")
    ap.add_argument("--dense", action="store_true", help="also time the dense per-step Norse loop")
    ap.add_argument("--skip-brian2", action="store_true", help="time only our simulator")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    info = print_machine()
    graph = loads_model(MODEL.format(duration=args.duration))
    pop = graph.populations["lif"]
    net = Network(graph, seed=0, dtype=torch.float64)
    w64 = net.weights["w"].detach()
    x1 = poisson_trains(1000, 10.0, graph.duration, graph.dt, 1, batch=1, dtype=torch.float32)
    # uint8: the dense batch-32 raster is 3.2 GB as uint8 (12.8 GB as float32)
    xb = poisson_trains(1000, 10.0, graph.duration, graph.dt, 1, batch=args.batch, dtype=torch.uint8)
    kw = dict(dt=graph.dt, tau_mem=pop.tau_mem, tau_syn=pop.tau_syn, v_th=pop.v_th, v_reset=pop.v_reset)
    res: dict = {"machine": info, "steps": graph.steps, "batch": args.batch,
                 "threads": torch.get_num_threads()}

    # correctness of the fast loop against the Network (float64, first 0.5 s)
    n_chk = min(graph.steps, 5000)
    with torch.no_grad():
        ref = net(x1[:n_chk].double(), record=True)
    z, v = simulate_lif_events(x1[:n_chk], w64, dtype=torch.float64, record_v=True, **kw)
    res["check_raster_equal"] = bool(torch.equal(z.double(), ref.spikes["lif"]))
    res["check_max_abs_dv"] = float((v - ref.voltages["lif"]).abs().max())
    print(f"check vs Network (float64, {n_chk} steps): raster equal {res['check_raster_equal']}, "
          f"max|dv| {res['check_max_abs_dv']:.2e}")

    t = time.perf_counter()
    z1, _ = simulate_lif_events(x1, w64, dtype=torch.float32, **kw)
    res["ours_b1_s"] = time.perf_counter() - t
    res["rate_hz"] = float(z1.sum()) / (1000 * graph.duration)
    t = time.perf_counter()
    simulate_lif_events(xb, w64, dtype=torch.float32, **kw)
    res["ours_batch_s"] = time.perf_counter() - t
    del xb
    print(f"ours event-driven float32: batch 1 {res['ours_b1_s']:.2f} s, batch {args.batch} "
          f"{res['ours_batch_s']:.2f} s (output rate {res['rate_hz']:.1f} Hz)")
    if args.dense:
        net32 = Network(graph, seed=0, dtype=torch.float32)
        t = time.perf_counter()
        with torch.no_grad():
            net32(x1)
        res["dense_norse_b1_s"] = time.perf_counter() - t
        print(f"dense per-step Norse loop float32, batch 1: {res['dense_norse_b1_s']:.2f} s")
    if not args.skip_brian2:
        from neuro.reference import simulate_brian2

        xin = x1.double()
        r = simulate_brian2(graph, xin, {"w": w64}, target="numpy", record=False)
        res["brian2_numpy_b1_s"] = r.wall_s
        res["brian2_numpy_rate_hz"] = float(r.spikes["lif"].sum()) / (1000 * graph.duration)
        print(f"Brian2 numpy, batch 1: {r.wall_s:.2f} s (rate {res['brian2_numpy_rate_hz']:.1f} Hz)")
        warm = loads_model(MODEL.format(duration=0.01))
        simulate_brian2(warm, xin[:100], {"w": w64}, target="cython", record=False)  # compile/warm cache
        r = simulate_brian2(graph, xin, {"w": w64}, target="cython", record=False)
        res["brian2_cython_b1_s"] = r.wall_s
        print(f"Brian2 cython (no fast-math, warm cache), batch 1: {r.wall_s:.2f} s")
        for name in ("numpy", "cython"):
            b1 = res[f"brian2_{name}_b1_s"]
            res[f"speedup_vs_{name}_b1"] = b1 / res["ours_b1_s"]
            res[f"speedup_vs_{name}_batch"] = args.batch * b1 / res["ours_batch_s"]
        print("ratios (Brian2 time / our time):")
        for name in ("numpy", "cython"):
            print(f"  vs Brian2 {name}: batch 1 {res[f'speedup_vs_{name}_b1']:.2f}x, batch {args.batch} "
                  f"{res[f'speedup_vs_{name}_batch']:.2f}x (Brian2: {args.batch} x one trial)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
