"""`phi1 budget`: price a scenario or a preset's plan, every line item and the total (text or --json)."""

from __future__ import annotations

import argparse

from .. import budget, pipeline
from ..errors import ConfigError, DataError
from ..presets import PRESET_NAMES
from ..runs import RunDir
from . import _common as C


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "budget",
        help="price the recipe (tokens, GPU-hours, dollars, cappuccinos) before spending anything",
        description="Price a scenario (costs/scenarios/*.toml) or a preset's plan, line by line. A preset's plan "
                    "is the sum of its stages' own estimates: exactly what `phi1 run --preset P --dry-run` shows.",
        epilog="examples: phi1 budget --scenario phi1-paper | phi1 budget --preset phi1 --set gpu=H100 "
               "--set rental=p5.48xlarge --set as_of=latest --json | phi1 budget --list --preset tiny | "
               "phi1 budget --run runs/tiny",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--scenario", metavar="NAME|PATH", help="scenario name or .toml path (default: phi1-paper)")
    src.add_argument("--preset", choices=PRESET_NAMES, help="price the preset's plan (the stages phi1 run would run)")
    src.add_argument("--run", metavar="DIR",
                     help="reconcile a run folder: each finished stage's estimate (made before it ran) next to what "
                          "it measured, wall time, GPU-hours, dollars and tokens")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override: as_of=DATE|latest, gpu=, n_gpus=, mfu=, rental=, batch=, coffee=, "
                        "or ITEM.FIELD (e.g. textbooks.samples=2e6); repeatable; --list shows every key")
    C.add_prices(p)
    p.add_argument("--scenarios", action="append", default=[], metavar="DIR", help="extra folder of scenarios")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    p.add_argument("--list", action="store_true", help="list scenarios, presets and the keys --set accepts")
    p.set_defaults(func=run)
    return p


def scenario_from_args(args: argparse.Namespace) -> budget.Scenario:
    if args.preset:
        return pipeline.preset_scenario(args.preset)
    return pipeline.load_scenario(args.scenario or "phi1-paper", args.scenarios)


def build(args: argparse.Namespace) -> budget.Budget:
    """The priced Budget for parsed arguments (shared by the CLI and tests)."""
    scenario = scenario_from_args(args)
    if args.sets:
        scenario = scenario.with_overrides(args.sets)
    return budget.price_scenario(scenario, C.load_prices(args))


def run_reconcile(args: argparse.Namespace) -> int:
    root = RunDir(args.run).root
    if not root.is_dir():
        raise DataError(f"{root}: no such run folder; pass --run the --out folder of a phi1 run")
    rows = pipeline.reconcile(root)
    if not rows:
        raise DataError(f"{root}: no finished stage (no <stage>/result.json); run a stage into it first")
    if args.json:
        C.print_json(rows)
    else:
        print(f"run {root}: estimate (made before each stage ran) next to measured\n")
        print(pipeline.reconcile_markdown(rows))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.run:
        if args.sets or args.list:
            raise ConfigError("--run reconciles a finished run as it was priced; --set and --list do not apply")
        return run_reconcile(args)
    if args.list:
        print("scenarios:", ", ".join(budget.list_scenarios(args.scenarios)))
        print("presets:  ", ", ".join(PRESET_NAMES))
        if args.scenario or args.preset:
            sc = scenario_from_args(args)
            print("--set keys: as_of, " + ", ".join(budget.DEFAULTS))
            for line in sc.lines:
                fields = [k.split(".", 1)[1] for k in sc.keys() if k.startswith(line["item"] + ".")]
                print(f"  {line['item']}.{{{','.join(fields)}}}  ({line['kind']}, stage {line['stage']})")
        return 0
    result = build(args)
    sens = budget.mfu_sensitivity(result.scenario, C.load_prices(args))
    if args.json:
        C.print_json({**result.to_dict(), "mfu_sensitivity": sens})
        return 0
    print(result.format())
    if sens["rows"]:
        print("\n" + budget.format_sensitivity(sens))
    if result.scenario.note.strip():
        print("\nNote:", result.scenario.note.strip())
    return 0
