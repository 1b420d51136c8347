"""What every stage command shares: the same flags with one meaning each, and configs built from them.

`--preset` (with its choices), `--out` (always the RUN folder; a stage writes OUT/<stage>/),
`--force` (redo a finished stage), `--set FIELD=VALUE` (any config field, parsed by its type),
`--prices DIR`, `--cap-usd USD`, `--json`. Errors name the flag the user typed, not the field.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from .. import budget
from ..errors import ConfigError
from ..presets import PRESET_NAMES
from ..runs import ENV_VAR, RunDir
from ..stage import FieldError, parse_assignments

OUT_HELP = f"run folder; the stage reads and writes OUT/<stage>/ (default: ${ENV_VAR}, else runs/<preset>)"


def add_preset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", choices=PRESET_NAMES, help="preset the defaults come from (default: tiny)")


def add_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", help=OUT_HELP)


def add_force(p: argparse.ArgumentParser, what: str = "redo the stage even if OUT holds its finished result") -> None:
    p.add_argument("--force", action="store_true", help=what)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_prices(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prices", action="append", default=[], metavar="DIR",
                   help="extra folder of price books (*.toml); overrides shipped prices of the same name; repeatable")


def usd(text: str) -> float:
    """A dollar amount from the command line: finite and >= 0 (checked before any work)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a dollar amount >= 0, e.g. 25 or 2.5")
    return value


def add_cap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cap-usd", type=usd, metavar="USD",
                   help="budget cap in USD for this run folder's ledger: work stops before spend would cross it")


def add_sets(p: argparse.ArgumentParser, config: str) -> None:
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                   help=f"any {config} field, parsed by its type (e.g. --set seed=1); repeatable")


def add_stage_args(p: argparse.ArgumentParser, config: str) -> None:
    """--preset, --out, --set, --prices, --cap-usd, --estimate-only, --force, --json."""
    add_preset(p)
    add_out(p)
    add_sets(p, config)
    add_prices(p)
    add_cap(p)
    p.add_argument("--estimate-only", action="store_true", help="print the stage's estimate and stop (spends nothing)")
    add_force(p)
    add_json(p)


def flag_values(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    """{field: value} for every flag in `flags` (field -> "--flag") the user gave."""
    out = {}
    for name, flag in flags.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            out[name] = value
    return out


def stage_config(cls, args: argparse.Namespace, flags: dict[str, str], extra: dict[str, Any] | None = None, *,
                 nullable: tuple[str, ...] = (), **kw):
    """`cls.for_preset(--preset, flags..., extra..., --set...)`; a bad value names the flag it came from.
    A flag of a `nullable` field given as "none" sets the field to None (e.g. --embedder none)."""
    sets = cls.parse_sets(parse_assignments(getattr(args, "sets", []) or []))
    named = {**flags, **{name: f"--set {name}" for name in sets}}
    values = flag_values(args, flags)
    values.update({name: None for name in nullable if str(values.get(name, "")).lower() == "none"})
    values.update({**(extra or {}), **sets})
    try:
        return cls.for_preset(args.preset, **kw, **values)
    except FieldError as exc:
        flag = named.get(exc.field)
        if flag is None:
            raise
        raise ConfigError(f"{flag} {_typed(exc.value)}: expected {exc.expected}") from None


def _typed(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def run_dir(args: argparse.Namespace) -> RunDir:
    return RunDir.for_preset(args.preset, getattr(args, "out", None))


def load_prices(args: argparse.Namespace) -> budget.PriceBook:
    return budget.load_prices(getattr(args, "prices", []) or [])


def ledger(args: argparse.Namespace, where: RunDir) -> budget.Ledger:
    return budget.Ledger(where.ledger_path, cap_usd=getattr(args, "cap_usd", None))


def print_estimate(stage: str, est, file=None) -> None:
    """One line: dollars, tokens, GPU-, CPU- and wall time of a budget.StageEstimate."""
    print(f"[{stage}] estimate: ${est.cost_usd:,.4f}; {est.tokens:,.0f} tokens; {est.gpu_hours:.4g} GPU-h; "
          f"{est.cpu_hours:.4g} CPU-h; {est.wall_hours * 3600:,.0f} s wall", file=file or sys.stdout)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def show_estimate(args: argparse.Namespace, stage: str, est) -> bool:
    """Print the estimate (as JSON with --json --estimate-only); True when the command should stop here."""
    if args.estimate_only:
        if args.json:
            print_json(est.to_dict())
        else:
            print_estimate(stage, est)
        return True
    if not args.json:
        print_estimate(stage, est)
    return False


def run_stage(args: argparse.Namespace, stage, config, **run_kw):
    """The body every stage command shares: estimate (and stop with --estimate-only), run the stage into the
    run folder with its ledger, print the result as JSON with --json. Returns the result to print, or None
    when the command has printed all it will."""
    where, prices = run_dir(args), load_prices(args)
    if show_estimate(args, stage.STAGE, stage.estimate(config, prices)):
        return None
    result = stage.run(config, where, ledger=ledger(args, where), prices=prices, force=args.force,
                       progress=not args.json, **run_kw)
    if args.json:
        print_json(result.to_dict())
        return None
    return result
