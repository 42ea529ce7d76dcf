"""The ``neuro`` command line.  Each subcommand lives in its own ``_cmd_*`` function."""

from __future__ import annotations

import argparse
import sys

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
    return parser


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
