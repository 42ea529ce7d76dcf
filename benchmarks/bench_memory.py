"""Peak training memory vs number of time steps: inference, e-prop, OTTT, checkpointed BPTT, plain
BPTT through the engine and plain Norse BPTT (torch.optim.Adam), each in a fresh subprocess.

Network: 256 Poisson-like inputs -> 3 x 256 LIF -> 10 LI readout, batch 32, float32.  For each
configuration the child process imports everything, then measures (a) the peak of live tensor bytes
created after that point (neuro.plan.TensorBytes, exact) and (b) the peak RSS growth above the
post-import RSS (ru_maxrss, noisy).  It runs one training step (forward, backward or online
contributions, engine step) and prints one JSON line; the parent prints a table with the planned
bytes (neuro.plan) and the ratio to inference, and saves a plot of memory vs T.

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
CONFIGS = ("inference", "eprop", "ottt", "bptt_checkpoint", "bptt", "norse_bptt")
BATCH = 32


def child(config: str, steps: int) -> None:
    import resource

    import torch

    from neuro.network import Network
    from neuro.plan import TensorBytes
    from neuro.rules.online import OnlineLearner
    from neuro.spec import loads_model
    from neuro.train import build_engine
    from neuro.train_online import CheckpointedBPTT, preallocate_quires

    torch.set_num_threads(1)
    g = loads_model(MODEL)
    if config == "norse_bptt":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import norse.torch as nt
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gen = torch.Generator().manual_seed(0)
    with TensorBytes() as tb:
        x = (torch.rand(steps, BATCH, 256, generator=gen) < 0.05).float()
        labels = torch.randint(0, 10, (BATCH,), generator=gen)
        if config == "norse_bptt":
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
                engine = build_engine(g, net, rule="eprop")
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
    print(json.dumps({"config": config, "steps": steps, "tensor_peak": tb.peak, "rss_peak": rss * 1024}))


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
    from neuro.plan import memory_plan
    from neuro.spec import loads_model

    g = loads_model(MODEL)
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
        inf = rows.get(("inference", steps))
        for config in args.configs:
            r = rows.get((config, steps))
            if r is None:
                continue
            mode = {"inference": "eprop"}.get(config, config)
            plan = None
            if mode in ("eprop", "ottt", "bptt", "bptt_checkpoint"):
                p = memory_plan(g, batch=BATCH, steps=steps, mode=mode,
                                segment=max(1, round(steps ** 0.5)))
                plan = p.inference_bytes if config == "inference" else p.training_bytes
            ratio_t = r["tensor_peak"] / inf["tensor_peak"] if inf else float("nan")
            ratio_r = r["rss_peak"] / max(1, inf["rss_peak"]) if inf else float("nan")
            print(f"{config:<16}{steps:>6}{r['tensor_peak'] / mib:>13.2f}{ratio_t:>9.2f}"
                  f"{r['rss_peak'] / mib:>10.2f}{ratio_r:>9.2f}"
                  f"{(plan / mib if plan else float('nan')):>10.2f}")
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
