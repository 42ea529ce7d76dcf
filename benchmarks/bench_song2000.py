"""Song, Miller & Abbott (2000) through ``neuro train``'s local-rule trainer, in several storage formats.

Prints the final weight histogram (the figure, as text bars) and the shares of weights below 10% /
above 90% of g_max for: float32 storage; posit8 and bposit16 storage with the quire and ONE rounding
per update interval (nearest, and stochastic); and the naive baseline that rounds the weight to
storage after every 0.1 ms step (``update_interval = dt``: updates below half an ulp vanish).  Same
Poisson inputs for all.

    python benchmarks/bench_song2000.py                  # 100 s of simulated time per variant
    python benchmarks/bench_song2000.py --duration 10    # quicker
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _machine import print_machine

from neuro.model.graph import ModelGraph
from neuro.model.spec import load_model
from neuro.training import train

MODEL = Path(__file__).resolve().parent.parent / "models" / "song2000_stdp.toml"

VARIANTS = [
    ("float32", "nearest", False),
    ("bposit16", "nearest", False),
    ("bposit16", "nearest", True),
    ("posit8", "nearest", False),
    ("posit8", "stochastic", False),
    ("posit8", "nearest", True),
]


def graph_for(fmt: str, duration: float, rounding: str, naive: bool) -> ModelGraph:
    d = load_model(MODEL).to_dict()
    d["duration"] = duration
    d["data"]["options"]["rounding"] = rounding
    if naive:  # the engine rounds after every step
        d["data"]["options"]["update_interval"] = d["dt"]
    return ModelGraph.from_dict(d).with_format(fmt)


def bars(hist: list[float], width: int = 40) -> str:
    total = max(1.0, sum(hist))
    return "\n".join(
        f"  {i / len(hist):4.2f}-{(i + 1) / len(hist):4.2f} g_max {'#' * round(width * h / total * 4)}"
        for i, h in enumerate(hist)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=100.0, help="simulated seconds per variant")
    ap.add_argument("--only", default=None, help="comma-separated storage formats to run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    info = print_machine()
    rows = []
    for fmt, rounding, naive in VARIANTS:
        if args.only and fmt not in args.only.split(","):
            continue
        t0 = time.perf_counter()
        r = train(graph_for(fmt, args.duration, rounding, naive), progress=False)
        m = r.metrics
        w = r.network.weights["synapses"].detach().double()
        hist = torch.histc(w, bins=10, min=0, max=m["g_max"]).tolist()
        label = (
            f"{fmt:<8} {'naive per-step rounding' if naive else f'quire, one {rounding} rounding / 10 ms'}"
        )
        rows.append(
            {
                "variant": label,
                "format": fmt,
                "rounding": rounding,
                "naive": naive,
                "share_below_10pct": m["share_below_10pct"],
                "share_above_90pct": m["share_above_90pct"],
                "mean_weight_over_gmax": m["mean_weight_over_gmax"],
                "post_rate_hz": m["post_rate_hz"],
                "distinct_weights": int(torch.unique(w).numel()),
                "seconds": time.perf_counter() - t0,
                "hist": hist,
            }
        )
        print(
            f"\n{label}: below 10% {m['share_below_10pct']:.3f}, above 90% {m['share_above_90pct']:.3f}, "
            f"mean w/g_max {m['mean_weight_over_gmax']:.3f}, post rate {m['post_rate_hz']:.1f} Hz, "
            f"{rows[-1]['distinct_weights']} distinct weights, {rows[-1]['seconds']:.0f} s"
        )
        print(bars(hist))
    print(f"\nSong 2000, {args.duration:g} s simulated, initial weights uniform in [0, g_max] (10% / 10%)")
    print(f"{'variant':<52} {'<10%':>6} {'>90%':>6} {'mean':>6} {'rate Hz':>8}")
    for r in rows:
        print(
            f"{r['variant']:<52} {r['share_below_10pct']:>6.3f} {r['share_above_90pct']:>6.3f} "
            f"{r['mean_weight_over_gmax']:>6.3f} {r['post_rate_hz']:>8.1f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
