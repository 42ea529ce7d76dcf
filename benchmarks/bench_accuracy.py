"""Accuracy of the bundled gradient-trained models per weight storage format (BENCHMARKS.md).

Trains each configuration once with the code path of ``neuro train`` (``neuro.training`` for BPTT
and for the online rules, each in its own mode): models/yinyang_bptt.toml and
models/digits_bptt.toml, each with weights stored as float32, posit16, posit8 (quire + stochastic
rounding) and bposit16, and the online models models/yinyang_eprop.toml and models/yinyang_ottt.toml
(float32 only unless ``--formats`` says otherwise); prints test accuracy (fraction of the test set,
in percent), training accuracy, wall-clock seconds and the difference to float32 next to the targets:
Yin-Yang >= 97 %, digits >= 96 %, posit16 within 0.5 points of float32, posit8 within 2 points,
e-prop and OTTT within 2 points of BPTT (float32, when yinyang_bptt is in the same run).

Run: ``python benchmarks/bench_accuracy.py [--quick] [--json out.json] [--models M ...] [--lr F=LR ...]
[--formats F ...] [--epochs N]``.  ``--quick`` trains 2 epochs on the first 512 training samples (a
smoke run; its accuracies say nothing about the targets).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

from neuro.model.spec import load_model  # noqa: E402
from neuro.training import train  # noqa: E402
from neuro.training.modes import default_mode  # noqa: E402

MODELS = ("yinyang_bptt", "digits_bptt", "yinyang_eprop", "yinyang_ottt")
FORMATS = ("float32", "posit16", "posit8", "bposit16")
TARGET = {"yinyang_bptt": 97.0, "digits_bptt": 96.0}  # test accuracy, percent (float32)
WITHIN = {"posit16": 0.5, "posit8": 2.0}  # allowed drop versus float32, points
ONLINE_OF = {"yinyang_eprop": "yinyang_bptt", "yinyang_ottt": "yinyang_bptt"}  # online model -> its BPTT twin
ONLINE_WITHIN = 2.0  # allowed drop of an online rule versus BPTT (float32), points


def _machine() -> dict:
    """Machine description from benchmarks/_machine.py when present (printed), else a minimal one."""
    try:
        from _machine import print_machine
    except ImportError:
        import os
        import platform

        import torch

        info = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        }
        print("machine:", ", ".join(f"{k} {v}" for k, v in info.items()))
        return info
    return print_machine()


def run(
    models,
    formats,
    epochs: int | None,
    max_train: int | None,
    seed: int | None,
    lrs: dict[str, float] | None = None,
) -> list[dict]:
    """Train every (model, format) pair once; one result row per pair.  ``lrs`` maps a format to a
    learning rate that replaces the model file's for that format (reported in the row)."""
    rows = []
    for name in models:
        base = load_model(REPO / "models" / f"{name}.toml")
        mode = default_mode(base)
        online = mode if mode in ("eprop", "ottt") else None
        for fmt in formats:
            if online and fmt != "float32" and formats == list(FORMATS):
                continue  # online rules: float32 unless formats were chosen explicitly
            graph = base.with_format(fmt)
            if lrs and fmt in lrs:
                graph = graph.with_training(learning_rate=lrs[fmt])
            result = train(graph, epochs=epochs, seed=seed, progress=False, max_train=max_train)
            m = result.metrics
            row = {
                "model": name,
                "mode": online or "bptt",
                "format": fmt,
                "epochs": m["epochs"],
                "seed": m["seed"],
                "learning_rate": graph.training.learning_rate,
                "accumulation": m.get("accumulation"),
                "train_samples": m.get("train_samples"),
                "test_accuracy": round(100 * m["test_accuracy"], 2),
                "train_accuracy": round(100 * m["train_accuracy"], 2),
                "best_epoch_test_accuracy": round(100 * max(m["history"]["test_accuracy"]), 2),
                "seconds": m["seconds"],
                "weights_sha256": m["weights_sha256"],
            }
            rows.append(row)
            print(
                f"  {name:<14} {fmt:<9} lr {graph.training.learning_rate:<7g} test "
                f"{row['test_accuracy']:6.2f} %  train {row['train_accuracy']:6.2f} %  "
                f"{row['seconds']:7.1f} s",
                flush=True,
            )
    return rows


def table(rows: list[dict], judge: bool = True) -> str:
    """The results as a Markdown table with the difference to float32 and the target verdicts
    (``judge=False``: no verdicts, e.g. for ``--quick`` smoke runs)."""
    ref = {r["model"]: r["test_accuracy"] for r in rows if r["format"] == "float32"}
    lines = [
        "| model | mode | format | lr | epochs | test acc. (%) | best epoch (%) | train acc. (%) | "
        "vs float32 or BPTT (points) | target | met | seconds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        twin = ONLINE_OF.get(r["model"])
        f32 = ref.get(twin or r["model"])
        delta = None if f32 is None else round(r["test_accuracy"] - f32, 2)
        if twin is not None:  # online rule: against BPTT's float32 accuracy
            target = f"within {ONLINE_WITHIN:g} pt of {twin}"
            met = None if delta is None else delta >= -ONLINE_WITHIN
        elif r["format"] == "float32":
            goal = TARGET.get(r["model"], 0.0)
            target, met = f">= {goal:g} %", r["test_accuracy"] >= goal
        elif r["format"] in WITHIN and delta is not None:
            target, met = f"within {WITHIN[r['format']]:g} pt", delta >= -WITHIN[r["format"]]
        else:
            target, met = "report", None
        if not judge:
            met = None
        r["delta_vs_float32"], r["target"], r["target_met"] = delta, target, met
        lines.append(
            f"| {r['model']} | {r.get('mode', 'bptt')} | {r['format']} | {r['learning_rate']:g} | "
            f"{r['epochs']} | "
            f"{r['test_accuracy']:.2f} | "
            f"{r['best_epoch_test_accuracy']:.2f} | {r['train_accuracy']:.2f} | "
            f"{'' if delta is None else f'{delta:+.2f}'} | {target} | "
            f"{'' if met is None else ('yes' if met else 'NO')} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


class _Sum:
    """A stand-in engine that sums contributions in float64 (the gradient an online rule hands over)."""

    def __init__(self):
        self.sums = {}

    def accumulate_outer(self, w, post, pre, scale):
        self.sums[id(w)] = self.sums.get(id(w), 0) + scale * (post.double().T @ pre.double())

    def accumulate(self, w, delta):
        self.sums[id(w)] = self.sums.get(id(w), 0) + delta.double()


def gradient_alignment(batch: int = 64) -> list[str]:
    """Cosine between each online rule's update and BPTT's exact gradient of the model's loss
    (cross-entropy of the max-membrane readout) on the first ``batch`` Yin-Yang training samples, at
    initialisation, float64; also for the per-step objective against its own exact gradient."""
    import torch

    from neuro.rules.online import OBJECTIVES, ONLINE_RULES, OnlineLearner
    from neuro.sim.network import Network
    from neuro.training.data import load_split

    g = load_model(REPO / "models" / "yinyang_eprop.toml").with_format("float64")
    data = load_split(g, "train")
    idx = torch.arange(batch)
    x = data.encode(idx, 0, dtype=torch.float64)
    labels = data.labels[idx]
    lines = ["| rule | objective | cos(input_hidden) | cos(hidden_readout) |", "|---|---|---:|---:|"]
    for objective in OBJECTIVES:
        net = Network(g, seed=g.training.seed, dtype=torch.float64)
        for w in net.weights.values():
            w.requires_grad_(True)
        out = net(x).readout
        if objective == "max_membrane":
            loss = torch.nn.functional.cross_entropy(out.max(0).values, labels, reduction="sum")
        else:
            loss = -torch.log_softmax(out, -1).gather(2, labels.expand(out.shape[0], -1)[..., None]).sum()
        loss.backward()
        for rule in ONLINE_RULES:
            eng = _Sum()
            weights = {k: w.detach() for k, w in net.weights.items()}
            with torch.no_grad():
                OnlineLearner(
                    g, weights, batch=batch, rule=rule, dtype=torch.float64, objective=objective
                ).run(x, labels, eng, 1.0)
            cos = [
                float(
                    torch.nn.functional.cosine_similarity(
                        eng.sums[id(weights[n])].flatten(), w.grad.flatten(), 0
                    )
                )
                for n, w in net.weights.items()
            ]
            lines.append(f"| {rule} | {objective} | " + " | ".join(f"{c:.4f}" for c in cos) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 epochs on 512 training samples (smoke run)")
    ap.add_argument("--json", default=None, help="write machine info and results to this JSON file")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    ap.add_argument("--epochs", type=int, default=None, help="override the model files' epochs")
    ap.add_argument("--seed", type=int, default=None, help="override the model files' seeds")
    ap.add_argument(
        "--lr",
        nargs="+",
        default=[],
        metavar="FORMAT=LR",
        help="learning rate for one storage format instead of the model file's, e.g. posit8=1.5e-2",
    )
    ap.add_argument(
        "--alignment",
        action="store_true",
        help="only print the cosine of the online rules' updates with BPTT's exact gradient (one batch)",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    info = _machine()
    if args.alignment:
        print("\nGradient alignment with BPTT on one batch of 64 Yin-Yang samples (initial weights, float64)")
        print("\n".join(gradient_alignment()))
        return 0
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else None)
    max_train = 512 if args.quick else None
    print(
        f"\nAccuracy per storage format ({'quick smoke run' if args.quick else 'full training'}; "
        "one run per configuration, seeds from the model files)"
    )
    lrs = {}
    for item in args.lr:
        fmt, _, value = item.partition("=")
        if fmt not in FORMATS or not value:
            ap.error(f"--lr expects FORMAT=LR with FORMAT one of {FORMATS}, got {item!r}")
        lrs[fmt] = float(value)
    rows = run(args.models, args.formats, epochs, max_train, args.seed, lrs)
    print()
    print(table(rows, judge=not args.quick and args.epochs is None))
    total = time.perf_counter() - t0
    print(f"\ntotal benchmark time {total:.1f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"machine": info, "quick": args.quick, "results": rows, "total_seconds": round(total, 1)},
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
