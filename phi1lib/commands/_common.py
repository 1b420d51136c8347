"""What every stage command shares: the same flags with one meaning each, and configs built from them.

`--preset` (with its choices), `--out` (always the RUN folder; a stage writes OUT/<stage>/),
`--force` (redo a finished stage), `--set FIELD=VALUE` (any config field, parsed by its type),
`--prices DIR`, `--cap-usd USD`, `--json`; for commands that call an LLM, `add_llm_args` (--base-url,
--api-key-env, --concurrency, --rpm, --tpm, --price-free | --rental NAME --tokens-per-s N) with
`llm_prices` and `llm_limits`. Errors name the flag the user typed, not the field.
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


def _cli_number(convert, ok, expected: str):
    """An argparse `type` for a number: `convert(text)`, then `ok(value)`, else one line saying what was expected."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
        return value
    return parse


# checked by argparse before any work
usd = _cli_number(float, lambda v: math.isfinite(v) and v >= 0, "a dollar amount >= 0, e.g. 25 or 2.5")
positive_int = _cli_number(int, lambda v: v >= 1, "a whole number >= 1, e.g. 64")  # e.g. --concurrency 64
positive_float = _cli_number(float, lambda v: math.isfinite(v) and v > 0, "a number > 0, e.g. 2500")


def add_cap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cap-usd", type=usd, metavar="USD",
                   help="the job's budget cap in USD, kept in the run folder's ledger so later commands and reruns "
                        "honour it too: work stops before spend would cross it")


def add_llm_args(p: argparse.ArgumentParser, *, endpoint: bool = True) -> None:
    """The LLM flags every command that calls an LLM shares (synth, filter, eval generate):
    --base-url, --api-key-env (with endpoint=True), --concurrency, --rpm, --tpm and the self-hosted
    pricing flags --price-free | --rental NAME --tokens-per-s N. `--prices DIR` comes with
    add_stage_args/add_prices. Build the price book with `llm_prices(args, model)` and the client
    limits with `llm_limits(args)`."""
    if endpoint:
        p.add_argument("--base-url", metavar="URL",
                       help="OpenAI-compatible endpoint with its scheme, e.g. --base-url http://localhost:8000/v1 "
                            "(vLLM; default: api.openai.com)")
        p.add_argument("--api-key-env", metavar="VAR",
                       help="environment variable holding the API key, e.g. --api-key-env OPENAI_API_KEY (the "
                            "default); 'none' for a server without auth. The key itself is never stored")
    g = p.add_argument_group("LLM throughput and self-hosted pricing")
    g.add_argument("--concurrency", type=positive_int, metavar="N",
                   help="LLM requests in flight at once, e.g. --concurrency 256 for a vLLM server "
                        "(default: the preset's; tiny 8, phi1 64)")
    g.add_argument("--rpm", type=positive_float, metavar="N", help="at most N requests started per minute "
                                                                  "(the endpoint's rate limit; default: none)")
    g.add_argument("--tpm", type=positive_float, metavar="N",
                   help="at most N tokens per minute, counted as prompt + max_tokens (default: none)")
    price = g.add_mutually_exclusive_group()
    price.add_argument("--price-free", action="store_true",
                       help="price the model at $0 (a self-hosted server whose cost you count elsewhere)")
    price.add_argument("--rental", metavar="NAME",
                       help="price a self-hosted model from GPU-hours: a rental in the price books, e.g. --rental "
                            "p4d.24xlarge (needs --tokens-per-s)")
    g.add_argument("--tokens-per-s", type=positive_float, metavar="N",
                   help="with --rental: tokens (prompt + completion) the server processes per second, as vLLM "
                        "logs it or as a previous run measured, e.g. --tokens-per-s 2500")


def llm_limits(args: argparse.Namespace) -> dict[str, Any]:
    """{concurrency, rpm, tpm} the user gave (config field -> value), for stage_config's `extra`."""
    return {k: getattr(args, k) for k in ("concurrency", "rpm", "tpm") if getattr(args, k, None) is not None}


def llm_prices(args: argparse.Namespace, model: str | None) -> budget.PriceBook:
    """The price book for an LLM command: --prices DIR folders, then the self-hosted pricing flags for `model`
    (--price-free: $0; --rental NAME --tokens-per-s N: the rental's dollars per hour spread over the tokens
    the server processes in that hour). Checks now that `model` is priced, naming the flags that fix it."""
    prices = load_prices(args)
    tps, rental = getattr(args, "tokens_per_s", None), getattr(args, "rental", None)
    if tps is not None and rental is None:
        raise ConfigError("--tokens-per-s is used with --rental NAME (GPU-hour pricing of a self-hosted model); "
                          "add --rental, e.g. --rental p4d.24xlarge, or drop --tokens-per-s")
    if model is None:
        return prices
    if getattr(args, "price_free", False):
        return prices.with_free(model, source="--price-free: self-hosted, priced at $0")
    if rental is not None:
        if tps is None:
            raise ConfigError(f"--rental {rental}: also give the server's throughput, --tokens-per-s N (tokens/s "
                              "processed, prompt + completion; vLLM logs it, and every phi1 run prints it measured)")
        r = prices.rental(rental)
        per_1k = r.usd_per_hour / 3600.0 / tps * 1000.0
        return prices.with_llm(model, per_1k, per_1k,
                               source=f"self-hosted on {r.name} (${r.usd_per_hour:,.2f}/h) at {tps:g} tokens/s")
    check_priced(prices, model)
    return prices


def check_priced(prices: budget.PriceBook, model: str) -> None:
    """ConfigError naming the CLI fixes when `model` has no price (a self-hosted model name, a typo)."""
    try:
        prices.llm(model)
    except ConfigError:
        known = ", ".join(sorted(m for m in prices.llms if not prices.llms[m].free)[:12])
        raise ConfigError(
            f"--model {model}: no price for this LLM in the price books. A self-hosted model (vLLM): add "
            f"--price-free, or --rental NAME --tokens-per-s N to price it from GPU-hours; an API model: add "
            f"[llm.\"{model}\"] with input_per_1k/output_per_1k to a *.toml in a folder passed as --prices DIR. "
            f"Priced models include: {known}") from None


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


def run_stage(args: argparse.Namespace, stage, config, *, prices: budget.PriceBook | None = None, **run_kw):
    """The body every stage command shares: estimate (and stop with --estimate-only), run the stage into the
    run folder with its ledger, print the result as JSON with --json. Returns the result to print, or None
    when the command has printed all it will. `prices`: a book built by `llm_prices` (default: --prices)."""
    where = run_dir(args)
    prices = prices if prices is not None else load_prices(args)
    if show_estimate(args, stage.STAGE, stage.estimate(config, prices)):
        return None
    result = stage.run(config, where, ledger=ledger(args, where), prices=prices, force=args.force,
                       progress=not args.json, **run_kw)
    if args.json:
        print_json(result.to_dict())
        return None
    return result
