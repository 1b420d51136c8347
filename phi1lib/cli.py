"""The `phi1` command: one subcommand per module in phi1lib/commands (found automatically)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__
from . import commands
from .errors import Phi1Error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phi1",
        description="The phi-1 recipe: budget, filtering, synthesis, training, evaluation. Every stage command "
                    "takes --preset, --out RUN_FOLDER, --set FIELD=VALUE, --prices DIR, --force and --json.",
        epilog="examples: phi1 budget --scenario phi1-paper | phi1 run --preset tiny --out runs/tiny | "
               "phi1 run --preset phi1 --dry-run | phi1 eval score --samples samples.jsonl",
    )
    parser.add_argument("--version", action="version", version=f"phi1 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Each module in phi1lib/commands defines add_parser(subparsers) and keeps heavy imports
    # inside its run function, so `phi1 --help` and `phi1 budget` stay fast.
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except Phi1Error as exc:
        print(f"phi1 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"phi1 {args.command}: interrupted; finished work is kept on disk, rerun to resume", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
