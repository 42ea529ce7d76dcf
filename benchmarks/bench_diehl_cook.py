"""Diehl & Cook (2015) style unsupervised digits: test accuracy of the 100- and 400-neuron model files.

Each model is trained exactly as ``neuro train models/<file>`` does (pair STDP with a target trace
through the UpdateEngine, adaptive thresholds, lateral inhibition, weight normalisation,
re-presentation of quiet samples), then every neuron is labelled by its average response on the
training set and the test digits are classified by the class whose neurons respond most.

    python benchmarks/bench_diehl_cook.py            # the model files as they are
    python benchmarks/bench_diehl_cook.py --quick    # 1 epoch on the first 400 training digits
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _machine import print_machine

from neuro.model.spec import load_model
from neuro.training import train

MODELS = Path(__file__).resolve().parent.parent / "models"
FILES = ("diehl_cook_digits.toml", "diehl_cook_digits_400.toml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 epoch on the first 400 training digits")
    ap.add_argument("--only", default=None, help="run only this model file (e.g. diehl_cook_digits.toml)")
    ap.add_argument("--json", default=None, help="write the rows to this file")
    args = ap.parse_args()
    info = print_machine()
    rows = []
    head = ("model", "neurons", "epochs", "train", "test acc", "train acc", "wall s")
    print(f"{head[0]:<24} " + " ".join(f"{h:>9}" for h in head[1:]))
    for name in FILES:
        if args.only and name != args.only:
            continue
        graph = load_model(MODELS / name)
        t0 = time.perf_counter()
        r = train(
            graph, progress=False, epochs=1 if args.quick else None, max_train=400 if args.quick else None
        )
        m = r.metrics
        row = {
            "model": graph.name,
            "neurons": m["neurons"],
            "epochs": m["epochs"],
            "train_samples": m["train_samples"],
            "test_accuracy": m["test_accuracy"],
            "train_accuracy": m["train_accuracy"],
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        rows.append(row)
        print(
            f"{row['model']:<24} {row['neurons']:>9} {row['epochs']:>9} {row['train_samples']:>9} "
            f"{row['test_accuracy']:>9.4f} {row['train_accuracy']:>9.4f} {row['wall_s']:>9.1f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
