"""Peak training memory vs number of time steps: inference, e-prop, OTTT, checkpointed BPTT, plain
BPTT through the engine, plain Norse BPTT (torch.optim.Adam) and reversible blocks, each in a fresh
subprocess.

Network: 256 Poisson-like inputs -> 3 x 256 LIF -> 10 LI readout, batch 32, float32.  The reversible
configurations (``rev_inference``, ``reversible``) run the same sizes as a ``[reversible]`` model
(:mod:`neuro.training.reversible`): 256 inputs -> 256 LIF -> 2 reversible blocks (each two LIF sublayers
of 128, so 3 x 256 LIF neurons in all) -> 10 LI, in float64 fixed point; their ratio is to
``rev_inference`` and their plan uses the spike rate measured in the run.  For each
configuration the child process imports everything, then measures (a) the peak of live tensor bytes
created after that point (neuro.training.plan.TensorBytes, exact) and (b) the peak RSS growth above the
post-import RSS (ru_maxrss, noisy).  It runs one training step (forward, backward or online
contributions, engine step) and prints one JSON line; the parent prints a table with the planned
bytes (neuro.training.plan) and the ratio to inference, and saves a plot of memory vs T.

    python benchmarks/bench_memory.py [--steps 100 1000] [--plot memory_vs_T.png]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

MODEL = """
[model]
name = "bench_memory"
dt = "1 ms"
duration = "100 ms"
output = "out"
[populations.inp]
type = "input"
size = 256
[populations.h1]
type = "LIF"
size = 256
[populations.h2]
type = "LIF"
size = 256
[populations.h3]
type = "LIF"
size = 256
[populations.out]
type = "LI"
size = 10
[inputs.inp]
encoding = "current"
[projections.p1]
source = "inp"
target = "h1"
init = { dist = "normal", mean = 0.0, std = 0.1 }
rule = "eprop"
[projections.p2]
source = "h1"
target = "h2"
init = { dist = "normal", mean = 0.0, std = 0.1 }
rule = "eprop"
[projections.p3]
source = "h2"
target = "h3"
init = { dist = "normal", mean = 0.0, std = 0.1 }
rule = "eprop"
[projections.p4]
source = "h3"
target = "out"
init = { dist = "normal", mean = 0.0, std = 0.1 }
rule = "eprop"
[training]
microbatch = 32
batch_size = 32
"""
REV_MODEL = (
    MODEL.replace('name = "bench_memory"', 'name = "bench_memory_reversible"')
    .split("[populations.h2]")[0]
    .replace("[populations.h1]", "[populations.h]")
    + """[populations.out]
type = "LI"
size = 10
[inputs.inp]
encoding = "current"
[projections.p_in]
source = "inp"
target = "h"
init = { dist = "normal", mean = 0.0, std = 1.0 }
rule = "bptt"
[projections.p_out]
source = "h"
target = "out"
init = { dist = "normal", mean = 0.0, std = 0.1 }
rule = "bptt"
[reversible]
population = "h"
blocks = 2
[training]
microbatch = 32
batch_size = 32
"""
)
CONFIGS = ("inference", "eprop", "ottt", "bptt_checkpoint", "bptt", "norse_bptt", "rev_inference",
           "reversible")
#: Neurons of the reversible model: 256 LIF + 2 blocks x (128 + 128) LIF + 10 LI.
REV_NEURONS = 778
#: The inference row each configuration's ratio refers to.
BASE = {"rev_inference": "rev_inference", "reversible": "rev_inference"}
BATCH = 32


def child(config: str, steps: int) -> None:
    import resource

    import torch

    from neuro.model.spec import loads_model
    from neuro.rules.online import OnlineLearner
    from neuro.sim.checkpointed import CheckpointedBPTT
    from neuro.sim.network import Network
    from neuro.training.bptt import loss_trained
    from neuro.training.engines import build_engine, preallocate_quires
    from neuro.training.plan import TensorBytes

    torch.set_num_threads(1)
    g = loads_model(MODEL)
    if config == "norse_bptt":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import norse.torch as nt
    rev = config in BASE
    if rev:
        from neuro.sim.reversible_network import ReversibleNetwork, side_bytes_per_step
        from neuro.training.reversible import reversible_engine

        g = loads_model(REV_MODEL)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gen = torch.Generator().manual_seed(0)
    extra = {}
    with TensorBytes() as tb:
        x = (torch.rand(steps, BATCH, 256, generator=gen) < 0.05).float()
        labels = torch.randint(0, 10, (BATCH,), generator=gen)
        if rev:
            net = ReversibleNetwork(g, seed=0)
            if config == "rev_inference":
                net.scores(x)
            else:
                engine = reversible_engine(g, net)
                preallocate_quires(engine)
                scores = net.train_scores(x, engine, -1.0 / BATCH)
                torch.nn.functional.cross_entropy(scores, labels, reduction="sum").backward()
                engine.step()
                spikes = (net.last_side_bytes - steps * side_bytes_per_step(BATCH, net.sizes, 0)) / 4
                extra = {"side_bytes": net.last_side_bytes,
                         "spike_rate": spikes / (steps * BATCH * sum(net.sizes[:-1]))}
        elif config == "norse_bptt":
            model = nt.SequentialState(torch.nn.Linear(256, 256, bias=False), nt.LIF(),
                                       torch.nn.Linear(256, 256, bias=False), nt.LIF(),
                                       torch.nn.Linear(256, 256, bias=False), nt.LIF(),
                                       torch.nn.Linear(256, 10, bias=False), nt.LI())
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            out, _ = model(x)
            torch.nn.functional.cross_entropy(out.max(0).values, labels).backward()
            opt.step()
        else:
            net = Network(g, seed=0)
            if config == "inference":
                with torch.no_grad():
                    OnlineLearner(g, dict(net.weights), batch=BATCH, learn=False).run(x)
            else:
                engine = build_engine(g, net.weights, loss_trained(g), seed=0)
                preallocate_quires(engine)
                if config in ("eprop", "ottt"):
                    learner = OnlineLearner(g, dict(net.weights), batch=BATCH, rule=config)
                    with torch.no_grad():
                        learner.run(x, labels, engine, -1.0 / BATCH)
                else:
                    seg = None if config == "bptt" else None
                    learner = CheckpointedBPTT(g, net, segment=seg if config == "bptt" else
                                               max(1, round(steps ** 0.5)))
                    scores = learner.run(x, engine, list(g.projections), -1.0 / BATCH)
                    torch.nn.functional.cross_entropy(scores, labels, reduction="sum").backward()
                engine.step()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss  # KiB on Linux
    row = {"config": config, "steps": steps, "tensor_peak": tb.peak, "rss_peak": rss * 1024, **extra}
    print(json.dumps(row))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--plot", default=None, help="PNG path for the memory-vs-T plot")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    from neuro.model.spec import loads_model
    from neuro.training.plan import memory_plan

    g, g_rev = loads_model(MODEL), loads_model(REV_MODEL)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
          f"python {platform.python_version()}")
    rows = {}
    for steps in args.steps:
        for config in args.configs:
            proc = subprocess.run([sys.executable, __file__, "--child", config, str(steps)],
                                  capture_output=True, text=True)
            if proc.returncode:
                print(f"{config} T={steps}: failed\n{proc.stderr[-2000:]}")
                continue
            rows[(config, steps)] = json.loads(proc.stdout.strip().splitlines()[-1])
    mib = 2**20
    print(f"{'config':<16}{'T':>6}{'tensors MiB':>13}{'x infer':>9}{'RSS MiB':>10}{'x infer':>9}"
          f"{'plan MiB':>10}")
    for steps in args.steps:
        for config in args.configs:
            r = rows.get((config, steps))
            if r is None:
                continue
            inf = rows.get((BASE.get(config, "inference"), steps))
            mode = {"inference": "eprop"}.get(config, config)
            plan = None
            if mode in ("eprop", "ottt", "bptt", "bptt_checkpoint"):
                p = memory_plan(g, batch=BATCH, steps=steps, mode=mode,
                                segment=max(1, round(steps ** 0.5)))
                plan = p.inference_bytes if config == "inference" else p.training_bytes
            elif config in BASE:
                rate = rows.get(("reversible", steps), {}).get("spike_rate", 0.1)
                p = memory_plan(g_rev, batch=BATCH, steps=steps, mode="reversible", spike_rate=rate)
                plan = p.inference_bytes if config == "rev_inference" else p.training_bytes
            ratio_t = r["tensor_peak"] / inf["tensor_peak"] if inf else float("nan")
            ratio_r = r["rss_peak"] / max(1, inf["rss_peak"]) if inf else float("nan")
            print(f"{config:<16}{steps:>6}{r['tensor_peak'] / mib:>13.2f}{ratio_t:>9.2f}"
                  f"{r['rss_peak'] / mib:>10.2f}{ratio_r:>9.2f}"
                  f"{(plan / mib if plan else float('nan')):>10.2f}")
    for steps in args.steps:
        r = rows.get(("reversible", steps))
        if r and "side_bytes" in r:
            print(f"reversible T={steps}: side records {r['side_bytes'] / mib:.2f} MiB "
                  f"({8 * r['side_bytes'] / (steps * BATCH * REV_NEURONS):.2f} bits per neuron-step), "
                  f"spike rate {r['spike_rate']:.3f}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for config in args.configs:
            pts = [(s, rows[(config, s)]["tensor_peak"] / mib) for s in args.steps if (config, s) in rows]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=config)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("time steps T")
        ax.set_ylabel("peak tensor memory above baseline (MiB)")
        ax.set_title("3 x 256 LIF, batch 32")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
