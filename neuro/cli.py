"""The ``neuro`` command line.  Each subcommand lives in its own ``_cmd_*`` function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuro import __version__
from neuro.training.modes import MODES


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
    train.add_argument("--epochs", type=count(1), default=None, help="override training.epochs (>= 1)")
    train.add_argument("--seed", type=count(0), default=None, help="override training.seed (>= 0)")
    train.add_argument("--max-train", type=count(1), default=None,
                       help="use only the first N training samples (>= 1)")
    train.add_argument("--duration", type=seconds, default=None,
                       help="override [model] duration, seconds (a local-rule scenario's simulated time, "
                       "a presentation's length)")
    train.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:N")
    train.add_argument("--checkpoint-every", type=count(0), default=50, metavar="N",
                       help="write a checkpoint every N global batches and after every epoch "
                       "(0: after epochs only; default 50)")
    train.add_argument("--resume", default=None, metavar="DIR",
                       help="continue the killed run in DIR (its --out) from its last checkpoint, to the "
                       "same weight bits; give the same model and options")
    train.add_argument("--mode", default=None, choices=MODES,
                       help="training mode (default: the one the model's rules name; reversible for "
                       "models with a [reversible] section, local for STDP-family rules); "
                       "bptt_checkpoint, eprop, ottt and reversible bound memory in the number of steps")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_cmd_train)

    check = sub.add_parser("crosscheck", help="simulate a model in Norse and Brian2 and compare spikes, "
                           "membranes and weights (exit 1 if the model's tolerances are not met)")
    check.add_argument("model", help="model file, bundled model name, or a run folder written by `neuro "
                       "train` (its resolved model and trained weights)")
    check.add_argument("--out", default=None,
                       help="output folder (default: runs/MODEL_crosscheck, or RUN_DIR_crosscheck)")
    check.add_argument("--seed", type=count(0), default=None, help="seed of weights and inputs")
    check.add_argument("--inputs", default=None, metavar="FILE",
                       help="input raster instead of seeded inputs: .npz (one array, or key 'spikes') or "
                       ".safetensors, shape (T, n) or (T, B, n), T = duration / dt; 0/1 spikes, or "
                       "currents for a current-encoded input")
    check.add_argument("--method", default="euler", choices=("euler", "exact"),
                       help="Brian2 integration method (euler matches ours step for step)")
    check.add_argument("--target", default="numpy", choices=("numpy", "cython"), help="Brian2 code target")
    check.add_argument("--format", default=None, help="weight storage format on our side (e.g. posit16)")
    check.add_argument("--duration", type=seconds, default=None,
                       help="simulated seconds (default: the model's; at most 1 s for local-rule "
                       "models, whose closed loop steps the engine every dt)")
    check.set_defaults(func=_cmd_crosscheck)
    plan = sub.add_parser("plan", help="memory plan of a model before it runs: inference vs training modes")
    plan.add_argument("model", help="model file or bundled model name")
    plan.add_argument("--batch", type=count(1), default=None,
                      help="batch size (default: the model's microbatch)")
    plan.add_argument("--steps", type=count(1), default=None, help="time steps (default: duration / dt)")
    plan.add_argument("--mode", default=None, help="bptt, bptt_checkpoint, reversible, ottt or eprop "
                      "(default: all the model allows)")
    plan.add_argument("--budget", default=None, help="e.g. 2x (of inference) or 512MiB; exit 1 if over")
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plan.set_defaults(func=lambda a: _call("neuro.training.plan", "plan_main", str(_resolve_model(a.model)),
                                           a.batch,
                                           a.steps, a.mode, a.budget, a.json))
    _add_registry_commands(sub)
    return parser


def count(low: int):
    """An argparse type: an integer >= ``low``, else a message that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {value}")
        return value

    return parse


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535."""
    value = count(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535, got {value}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a duration > 0 in seconds (a number, or a time with a unit such as "500 ms")."""
    try:
        value = float(text)
    except ValueError:
        from neuro.model.spec import ModelFileError, parse_time

        try:
            value = parse_time(text)
        except (ModelFileError, ValueError):
            raise argparse.ArgumentTypeError(
                f"expected seconds or a time such as \"500 ms\", got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a duration > 0, got {text!r}")
    return value


def _add_registry_commands(sub) -> None:
    """keygen / sign / verify / versions / certify / export-nir / import-nir / serve."""
    p = sub.add_parser("keygen", help="make an Ed25519 signing key pair (private key file mode 0600)")
    p.add_argument("private_key")
    p.add_argument("--public", default=None, help="also write the public key here")
    p.set_defaults(func=lambda a: _call("neuro.deploy.registry", "cli_keygen", a.private_key, a.public))

    p = sub.add_parser("sign", help="certify a training run and add it to a registry as a signed version")
    p.add_argument("registry")
    p.add_argument("run", help="run folder written by `neuro train`")
    p.add_argument("--key", required=True, help="Ed25519 private key (PEM)")
    p.add_argument("--trust", action="append", default=None,
                   help="public key (PEM) that may have signed the registry's head besides --key; repeatable")
    p.add_argument("--memory-budget", type=count(1), default=None, help="bytes the memory plan must fit")
    p.add_argument("--note", default=None)
    p.set_defaults(func=lambda a: _call("neuro.deploy.registry", "cli_sign", a.registry, a.run, a.key,
                                        memory_budget=a.memory_budget, note=a.note, trust=a.trust))

    p = sub.add_parser("verify", help="verify signatures, hashes, hash chain and certificates")
    p.add_argument("registry")
    p.add_argument("--key", action="append", required=True, help="trusted public key (PEM); repeatable")
    p.add_argument("--model", default=None)
    p.add_argument("--version", type=count(1), default=None)
    p.set_defaults(func=lambda a: _call("neuro.deploy.registry", "cli_verify", a.registry, a.key, a.model,
                                        a.version))

    p = sub.add_parser("versions", help="list the versions in a registry")
    p.add_argument("registry")
    p.add_argument("--model", default=None)
    p.set_defaults(func=lambda a: _call("neuro.deploy.registry", "cli_versions", a.registry, a.model))

    p = sub.add_parser("certify", help="check a model and its weights and write a certificate")
    p.add_argument("model", help="model file, or a run folder written by `neuro train`")
    p.add_argument("weights", nargs="?", default=None, help="weights.safetensors (with a model file)")
    p.add_argument("--out", default=None, help="certificate JSON path")
    p.add_argument("--memory-budget", type=count(1), default=1 << 30, help="bytes (default 1 GiB)")
    p.set_defaults(func=lambda a: _call("neuro.deploy.certify", "cli_certify", a.model, a.weights, out=a.out,
                                        memory_budget=a.memory_budget))

    p = sub.add_parser("export-nir", help="export a run or model file to NIR (time constants in seconds)")
    p.add_argument("run_or_model")
    p.add_argument("out")
    p.add_argument("--weights", default=None)
    p.set_defaults(func=lambda a: _call("neuro.deploy.nir_io", "cli_export_nir", a.run_or_model, a.out,
                                        weights=a.weights))

    p = sub.add_parser("import-nir", help="import a NIR graph (ours, Norse's, ...) as a model file + weights")
    p.add_argument("path")
    p.add_argument("out_dir")
    p.add_argument("--dt", type=seconds, default=None, help="time step in seconds (or with a unit, \"1 ms\")")
    p.add_argument("--producer", default="auto", choices=("auto", "neuro", "norse", "snntorch", "other"))
    p.add_argument("--name", default=None)
    p.set_defaults(func=lambda a: _call("neuro.deploy.nir_io", "cli_import_nir", a.path, a.out_dir, dt=a.dt,
                                        producer=a.producer, name=a.name))

    p = sub.add_parser("serve", help="serve a registry's model over HTTP on loopback, with warm rotation")
    p.add_argument("registry")
    p.add_argument("--key", action="append", required=True, help="trusted public key (PEM); repeatable")
    p.add_argument("--model", default=None)
    p.add_argument("--version", type=count(1), default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=8321)
    p.add_argument("--token-file", default=None, help="bearer token for /rotate and /rollback")
    p.add_argument("--threads", type=count(1), default=1)
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=lambda a: _call("neuro.deploy.serve", "cli_serve", a.registry, a.key, model=a.model,
                                        version=a.version, host=a.host, port=a.port,
                                        token_file=a.token_file, threads=a.threads, verbose=a.verbose))


def _call(module: str, function: str, /, *args, **kwargs) -> int:
    """Import ``module`` lazily (keeps ``neuro --help`` fast) and call its CLI ``function``."""
    import importlib

    return int(getattr(importlib.import_module(module), function)(*args, **kwargs) or 0)


def _resolve_model(text: str) -> Path:
    from neuro.model.bundled import find_model

    try:
        return find_model(text)
    except ValueError as err:
        print(f"neuro: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_models(args: argparse.Namespace) -> int:
    from neuro.model.bundled import MODELS_DIR
    from neuro.model.spec import ModelFileError, load_model

    folder = Path(args.dir) if args.dir else MODELS_DIR
    if not folder.is_dir():
        print(f"neuro models: {folder}: no such folder (--dir names a folder of .toml model files)",
              file=sys.stderr)
        return 2
    for path in sorted(folder.glob("*.toml")):
        try:
            description = load_model(path).description
        except ModelFileError as err:
            description = f"(invalid: {str(err).splitlines()[0]})"
        print(f"{path.stem:<24} {description}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from neuro.model.graph import GraphError, ModelGraph
    from neuro.model.spec import ModelFileError, load_model
    from neuro.training import train

    path = _resolve_model(args.model)
    try:
        graph = load_model(path)
        if args.format:
            graph = graph.with_format(args.format)
        if args.duration is not None:
            graph = ModelGraph.from_dict({**graph.to_dict(), "duration": args.duration})
    except (ModelFileError, GraphError, ValueError) as err:
        print(f"neuro train: {err}", file=sys.stderr)
        return 2
    out = Path(args.resume or args.out or Path("runs") / graph.name)
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        print("neuro train: --resume DIR continues the run in DIR; leave --out out (or give the same folder)",
              file=sys.stderr)
        return 2
    _init_distributed(args.device)
    try:
        result = train(graph, mode=args.mode, epochs=args.epochs, seed=args.seed, out_dir=out,
                       progress=not args.quiet, max_train=args.max_train, device=args.device,
                       checkpoint_every=args.checkpoint_every, resume=bool(args.resume))
    except ValueError as err:
        print(f"neuro train: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        same = "".join(f" --{k} {v}" for k, v in (("format", args.format), ("duration", args.duration)) if v)
        print(f"\nneuro train: interrupted; the last checkpoint is kept in {out} "
              f"(continue with: neuro train {args.model}{same} --resume {out})", file=sys.stderr)
        return 130
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{graph.name}: {_summary(result.metrics)}  -> {out}")
    return 0


def _init_distributed(device: str) -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on GPU.

    The engine then merges every worker's quires as integers, so the result has the same bits as a
    single worker's run.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")


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
    from neuro.crosscheck.fidelity import crosscheck
    from neuro.model.graph import GraphError
    from neuro.model.spec import ModelFileError, load_model

    run_dir = Path(args.model) if Path(args.model).is_dir() else None
    weights = None
    try:
        if run_dir is not None:
            from neuro.training.outputs import load_run

            run = load_run(run_dir)
            graph, weights = run.graph, dict(run.network.weights)
        else:
            graph = load_model(_resolve_model(args.model))
    except (ModelFileError, GraphError, ValueError) as err:
        print(f"neuro crosscheck: {err}", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
    elif run_dir is not None:
        out = run_dir.resolve().with_name(f"{run_dir.resolve().name}_crosscheck")
    else:
        out = Path("runs") / f"{graph.name}_crosscheck"
    try:
        report = crosscheck(graph, out, seed=args.seed, method=args.method, target=args.target,
                            storage=args.format, duration=args.duration, inputs=args.inputs, weights=weights)
    except ValueError as err:
        print(f"neuro crosscheck: {err}", file=sys.stderr)
        return 2
    keys = ("count_equality", "match_0", "match_1", "match_2", "mean_abs_dt_ms", "gamma_1ms",
            "gamma_2ms", "max_abs_dv", "max_abs_dw", "max_abs_dw_all", "compared_share", "rate_diff",
            "spikes_equal", "max_abs_dw_replay")
    for key in keys:
        value = report.get(key)
        if value is not None:
            print(f"{key:<17} {value:.6g}" if isinstance(value, float) else f"{key:<17} {value}")
    failed = {k: c for k, c in report["checks"].items() if not c["ok"]}
    sign = {"min": ">=", "max": "<=", "min_exclusive": ">"}
    for key, check in failed.items():
        bound = " ".join(f"{sign[k]} {v:g}" for k, v in check.items() if k in sign)
        note = f": {check['note']}" if "note" in check else ""
        print(f"failed: {key} = {check['value']:.6g} ({bound}){note}", file=sys.stderr)
    verdict = "PASSED" if report["passed"] else f"FAILED ({', '.join(failed)})"
    what = f"run {run_dir}" if run_dir else graph.name
    print(f"{what}: Norse vs Brian2 over {report['settings']['duration']:g} s {verdict}  -> "
          f"{out / 'fidelity.json'}, {out / 'overlay.png'}")
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
