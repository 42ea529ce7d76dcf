"""Synaptic updates per second: neuro's pair STDP through the exact engine vs Norse's own
``norse.torch.functional.stdp.stdp_step_linear`` on the same spike trains.

A "synaptic update" is one synapse advanced by one time step (M x N x T per run).  Norse updates
the weights every step in float32 (Euler-decayed traces); neuro computes each update interval's
traces in closed form, hands exact spike x trace contributions to the UpdateEngine's quire and
rounds once per interval (float32 storage).  With few spikes per interval the engine takes its
event path: each spike's row (LTP) or column (LTD) of products is added term by term, and the
step rounds only the entries those terms reached (neuro/_kernels/quire.c; same bits as the dense
path).  Both on one CPU thread; each time is the best of ``--repeat`` runs after a warm-up.  The
"rule side only" rows drop the contributions (no engine): the closed-form traces and terms alone.
The 1-step row rounds every step, as Norse does: there the fixed cost of each engine call shows.

    python benchmarks/bench_stdp.py            # 1000 pre x 100 post, 1 s at dt = 0.1 ms, 15 Hz
    python benchmarks/bench_stdp.py --quick    # 0.2 s
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
from _machine import print_machine

from neuro.engine import UpdateEngine
from neuro.engine.params import Bounds, ParamType
from neuro.numerics import BPOSIT32
from neuro.rules import PairSTDP, PairSTDPParameters


def trains(steps: int, n_pre: int, n_post: int, rate: float, dt: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z_pre = torch.rand(steps, 1, n_pre, generator=g) < rate * dt
    z_post = torch.rand(steps, 1, n_post, generator=g) < rate * dt
    return z_pre, z_post


def run_norse(z_pre, z_post, dt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from norse.torch.functional.stdp import STDPParameters, STDPState, stdp_step_linear
    n_pre, n_post = z_pre.shape[2], z_post.shape[2]
    w = torch.full((n_post, n_pre), 0.5)
    p = STDPParameters(
        eta_plus=1e-3, eta_minus=1.05e-3, tau_pre_inv=torch.tensor(50.0), tau_post_inv=torch.tensor(50.0)
    )
    state = STDPState(t_pre=torch.zeros(1, n_pre), t_post=torch.zeros(1, n_post))
    zp, zq = z_pre.float(), z_post.float()
    t0 = time.perf_counter()
    for t in range(zp.shape[0]):
        w, state = stdp_step_linear(zp[t], zq[t], w, state, p, dt)
    return time.perf_counter() - t0


class _NoEngine:
    """Takes the rule's contributions and drops them: times the rule side alone."""

    def accumulate_events(self, *args) -> None:
        pass

    def step(self) -> None:
        pass


def run_neuro(z_pre, z_post, dt, interval, engine=None):
    n_pre, n_post = z_pre.shape[2], z_post.shape[2]
    w = torch.full((n_post, n_pre), 0.5)
    engine = engine or UpdateEngine(
        [
            {
                "params": [w],
                "format": BPOSIT32,
                "lr": 1.0,
                "type": ParamType(constraint=Bounds(0.0, 1.0), storage="float32"),
            }
        ]
    )
    rule = PairSTDP(PairSTDPParameters(tau_plus=20e-3, tau_minus=20e-3, a_plus=1e-3, a_minus=1.05e-3), dt)
    t0 = time.perf_counter()
    for s in range(0, z_pre.shape[0], interval):
        rule.interval(engine, w, z_pre[s : s + interval], z_post[s : s + interval])
        engine.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pre", type=int, default=1000)
    ap.add_argument("--post", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the best is reported")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    info = print_machine()
    torch.set_num_threads(1)
    dt = 1e-4
    steps = 2000 if args.quick else 10000
    z_pre, z_post = trains(steps, args.pre, args.post, 15.0, dt)
    syn = args.pre * args.post * steps

    def best(fn, *a) -> float:
        fn(z_pre[:200], z_post[:200], *a)  # warm-up: caches, compiled kernels, allocator
        return min(fn(z_pre, z_post, *a) for _ in range(args.repeat))

    rows = []
    t = best(run_norse, dt)
    rows.append({"impl": "norse stdp_step_linear (f32, per step)", "seconds": t, "updates_per_s": syn / t})
    for engine, what in ((None, "PairSTDP + engine"), (_NoEngine(), "PairSTDP rule side only")):
        for interval in (1, 10, 100, 1000):
            t = best(run_neuro, dt, interval, engine)
            rows.append(
                {
                    "impl": f"neuro {what}, {interval}-step interval ({interval * dt * 1e3:g} ms)",
                    "seconds": t,
                    "updates_per_s": syn / t,
                }
            )
    print(
        f"{args.pre} pre x {args.post} post, {steps} steps of {dt * 1e3:g} ms, 15 Hz Poisson, 1 thread, "
        f"best of {args.repeat}"
    )
    print(f"{'implementation':<62} {'seconds':>9} {'synaptic updates/s':>20} {'vs Norse':>9}")
    for r in rows:
        ratio = rows[0]["seconds"] / r["seconds"]
        print(f"{r['impl']:<62} {r['seconds']:>9.3f} {r['updates_per_s']:>20.3e} {ratio:>8.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
