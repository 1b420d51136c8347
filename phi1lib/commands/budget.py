"""`phi1 budget`: price a scenario or a preset, every line item and the total (text or --json)."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "budget",
        help="price the recipe (tokens, GPU-hours, dollars, cappuccinos) before spending anything",
        description="Price a scenario (costs/scenarios/*.toml) or a preset, line by line.",
        epilog="examples: phi1 budget --scenario phi1-paper | phi1 budget --preset phi1 --set gpu=H100 "
               "--set rental=p5.48xlarge --set as_of=latest --json",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--scenario", metavar="NAME|PATH", help="scenario name or .toml path (default: phi1-paper)")
    src.add_argument("--preset", metavar="NAME", help="derive the plan from a preset: tiny, phi1-small, phi1")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override: as_of=DATE|latest, gpu=, n_gpus=, mfu=, rental=, batch=, coffee=, "
                        "or ITEM.FIELD (e.g. textbooks.tokens_out=2e9); repeatable")
    p.add_argument("--prices", action="append", default=[], metavar="DIR",
                   help="extra folder of price books (*.toml); overrides shipped prices of the same name")
    p.add_argument("--scenarios", action="append", default=[], metavar="DIR", help="extra folder of scenarios")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    p.add_argument("--list", action="store_true", help="list scenarios, presets and the keys --set accepts")
    p.set_defaults(func=run)
    return p


def build(args: argparse.Namespace):
    """The priced Budget for parsed arguments (shared by the CLI and tests)."""
    from .. import budget

    prices = budget.load_prices(args.prices)
    if args.preset:
        scenario = budget.preset_scenario(args.preset)
    else:
        scenario = budget.load_scenario(args.scenario or "phi1-paper", args.scenarios)
    if args.sets:
        scenario = scenario.with_overrides(args.sets)
    return budget.price_scenario(scenario, prices)


def run(args: argparse.Namespace) -> int:
    from .. import budget
    from ..presets import PRESET_NAMES

    if args.list:
        print("scenarios:", ", ".join(budget.list_scenarios(args.scenarios)))
        print("presets:  ", ", ".join(PRESET_NAMES))
        if args.scenario or args.preset:
            sc = budget.preset_scenario(args.preset) if args.preset else budget.load_scenario(args.scenario, args.scenarios)
            print("--set keys: as_of, " + ", ".join(budget.DEFAULTS))
            for line in sc.lines:
                fields = [k.split(".", 1)[1] for k in sc.keys() if k.startswith(line["item"] + ".")]
                print(f"  {line['item']}.{{{','.join(fields)}}}  ({line['kind']}, stage {line['stage']})")
        return 0
    result = build(args)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return 0
    print(result.format())
    if result.scenario.note.strip():
        print("\nNote:", result.scenario.note.strip())
    return 0
