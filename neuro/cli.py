"""The ``neuro`` command line.  Each subcommand lives in its own ``_cmd_*`` function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuro import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuro",
        description="Train spiking neural networks through an exact posit-quire update engine.",
    )
    parser.add_argument("--version", action="version", version=f"neuro {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    formats = sub.add_parser("formats", help="list the number formats the engine can store weights in")
    formats.set_defaults(func=_cmd_formats)

    models = sub.add_parser("models", help="list the bundled model files with one-line descriptions")
    models.add_argument("--dir", default=None, help="folder of model files (default: the bundled models/)")
    models.set_defaults(func=_cmd_models)

    train = sub.add_parser("train", help="train a model file and print its metrics")
    train.add_argument("model", help="model file (models/NAME.toml) or the name of a bundled model")
    train.add_argument("--out", default=None, help="output folder (default: runs/MODEL)")
    train.add_argument("--format", default=None, help="store every projection's weights in this format "
                       "(float32, float64, posit8, posit16, posit32, bposit16, bposit32)")
    train.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    train.add_argument("--seed", type=int, default=None, help="override training.seed")
    train.add_argument("--max-train", type=int, default=None, help="use only the first N training samples")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_cmd_train)

    check = sub.add_parser("crosscheck", help="simulate a model in Norse and Brian2 and compare spikes, "
                           "membranes and weights (exit 1 if the model's tolerances are not met)")
    check.add_argument("model", help="model file or bundled model name")
    check.add_argument("--out", default=None, help="output folder (default: runs/MODEL_crosscheck)")
    check.add_argument("--seed", type=int, default=None, help="seed of weights and inputs")
    check.add_argument("--method", default="euler", choices=("euler", "exact"),
                       help="Brian2 integration method (euler matches ours step for step)")
    check.add_argument("--target", default="numpy", choices=("numpy", "cython"), help="Brian2 code target")
    check.add_argument("--format", default=None, help="weight storage format on our side (e.g. posit16)")
    check.set_defaults(func=_cmd_crosscheck)
    return parser


def _models_dir() -> Path:
    """The bundled models/ folder (next to the package in a source checkout)."""
    return Path(__file__).resolve().parent.parent / "models"


def _resolve_model(text: str) -> Path:
    path = Path(text)
    if path.exists():
        return path
    bundled = _models_dir() / (text if text.endswith(".toml") else f"{text}.toml")
    if bundled.exists():
        return bundled
    names = sorted(p.stem for p in _models_dir().glob("*.toml"))
    import difflib

    near = difflib.get_close_matches(path.stem, names, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise SystemExit(f"neuro: no model file {text!r} (bundled models: {', '.join(names)}){hint}")


def _cmd_models(args: argparse.Namespace) -> int:
    from neuro.spec import ModelFileError, load_model

    folder = Path(args.dir) if args.dir else _models_dir()
    for path in sorted(folder.glob("*.toml")):
        try:
            description = load_model(path).description
        except ModelFileError as err:
            description = f"(invalid: {str(err).splitlines()[0]})"
        print(f"{path.stem:<24} {description}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from neuro.spec import ModelFileError, load_model
    from neuro.train import train

    path = _resolve_model(args.model)
    try:
        graph = load_model(path)
        if args.format:
            graph = graph.with_format(args.format)
    except (ModelFileError, ValueError) as err:
        print(f"neuro train: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("runs") / graph.name
    local_rules = {"stdp_pair", "stdp_triplet", "rstdp"}
    if any(p.rule in local_rules for p in graph.projections.values()):
        from neuro.plasticity import train_local as train  # noqa: F811 - local-rule models
    result = train(graph, epochs=args.epochs, seed=args.seed, out_dir=out, progress=not args.quiet,
                   max_train=args.max_train)
    print(f"{graph.name}: {_summary(result.metrics)}  -> {out}")
    return 0


def _summary(metrics: dict) -> str:
    """One line of the run's headline numbers (those that are numbers and not NaN)."""
    keys = ("test_accuracy", "train_accuracy", "share_below_10pct", "share_above_90pct",
            "rewarded_weight", "epochs", "seconds")
    parts = []
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, float) and value == value:
            parts.append(f"{key} {value:.4f}" if key != "seconds" else f"{value:.1f} s")
        elif isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"{key} {value}")
    fmt = metrics.get("format")
    if fmt:
        parts.append("format " + (",".join(fmt) if isinstance(fmt, list) else str(fmt)))
    return "  ".join(parts)


def _cmd_crosscheck(args: argparse.Namespace) -> int:
    from neuro.fidelity import crosscheck
    from neuro.spec import ModelFileError, load_model

    path = _resolve_model(args.model)
    try:
        graph = load_model(path)
    except ModelFileError as err:
        print(f"neuro crosscheck: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("runs") / f"{graph.name}_crosscheck"
    report = crosscheck(graph, out, seed=args.seed, method=args.method, target=args.target,
                        storage=args.format)
    keys = ("count_equality", "match_0", "match_1", "match_2", "mean_abs_dt_ms", "gamma_1ms",
            "gamma_2ms", "max_abs_dv", "max_abs_dw", "rate_diff")
    for key in keys:
        value = report.get(key)
        if value is not None:
            print(f"{key:<15} {value:.6g}" if isinstance(value, float) else f"{key:<15} {value}")
    verdict = "PASSED" if report["passed"] else "FAILED (tolerances not met)"
    print(f"{graph.name}: Norse vs Brian2 {verdict}  -> {out / 'fidelity.json'}, {out / 'overlay.png'}")
    return 0 if report["passed"] else 1


def _cmd_formats(args: argparse.Namespace) -> int:
    from neuro.numerics import NAMED_FORMATS

    print(f"{'name':<10} {'nbits':>5} {'es':>3} {'rs':>4} {'minpos':>12} {'maxpos':>12} {'quire bits':>10}")
    for name, fmt in NAMED_FORMATS.items():
        rs = "-" if fmt.rs is None else str(fmt.rs)
        print(
            f"{name:<10} {fmt.nbits:>5} {fmt.es:>3} {rs:>4} {fmt.minpos:>12.4g} "
            f"{fmt.maxpos:>12.4g} {fmt.quire_bits:>10}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
