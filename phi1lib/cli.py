"""The `phi1` command: one subcommand per module in phi1lib/commands (found automatically)."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys

from . import __version__
from . import commands
from .errors import Phi1Error


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `phi1 train: error: argument --max-steps: invalid int value: 'x'
    (phi1 train --help lists the options)` instead of the usage block. Subparsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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


def _stdout_gone() -> int:
    """The reader of stdout left (`phi1 budget --json | head`): end quietly with 0. Later writes, and the
    interpreter's flush at exit, go to /dev/null instead of printing "Exception ignored ... BrokenPipeError"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # no real file descriptor (captured in-process)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until the process ends
    return 0


def _os_error_line(exc: OSError) -> str:
    """An OS error a reader did not turn into a DataError, as one line naming the path and the fix."""
    what = exc.strerror or str(exc)
    path = exc.filename if exc.filename is not None else ""
    fix = {errno.ENOENT: "check the path", errno.EISDIR: "give a file, not a folder",
           errno.ENOTDIR: "a part of the path is a file, not a folder", errno.EACCES: "check its permissions",
           errno.EPERM: "check its permissions", errno.ENOSPC: "free some disk space",
           errno.EEXIST: "give a folder, not a file"}.get(exc.errno, "check the path")
    if not path:  # not about a file (a connection, a device): say what it was
        return f"{type(exc).__name__}: {exc}"
    return f"{path}: {what[:1].lower()}{what[1:]}; {fix}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    command = "phi1"
    try:
        args, extra = parser.parse_known_args(argv)
        # "phi1 eval score": errors are named by the (sub)command the user typed
        names = [args.command] if getattr(args, "command", None) else []
        names += [v for k, v in vars(args).items() if k.endswith("_command") and v and names]
        command = " ".join(["phi1", *names])
        if extra:  # named by the subcommand they were given to, not by the top-level parser
            parser.exit(2, f"{command}: error: unrecognized arguments: {' '.join(extra)} "
                           f"({command} --help lists the options)\n")
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        rc = args.func(args)
        sys.stdout.flush()  # a reader that left shows up here, not in the interpreter's exit
    except BrokenPipeError:
        return _stdout_gone()
    except Phi1Error as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path no reader checked: still one line, never a traceback
        print(f"{command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted; finished work is kept on disk, rerun to resume", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
