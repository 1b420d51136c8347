"""The synthesis work loop: prompts -> LLM layer -> parsed, checked, deduplicated records.

The stage (`synthesis.stage`) prepares everything this module needs: the config, an
`LLMClient` built on the provider, the extractive stand-in's source units (when it answers)
and the generator's name. `generate_all` then runs, per kind, the named steps
request -> check -> sandbox (exercises) -> dedup, and returns a `GenerationOutcome`.
This module never imports the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..llm import LLMClient, Request, Result
from ..stage import Timer, Usage
from .dedup import dedup_records
from .extractive import Unit, assign_units
from .prompts import SynthPrompt
from .quality import check_exercise_text, check_textbook, parse_exercise, run_doctests, sandbox_available

# The count keys every kind reports, in the order of the funnel (sandbox_runs only for sandboxed exercises).
COUNT_KEYS = ("requested", "no_source", "generated", "llm_errors", "failed_checks", "failed_sandbox", "duplicates",
              "accepted")


@dataclass
class GenerationOutcome:
    """What `generate_all` made of the kinds it was asked for."""

    accepted: dict[str, list[dict]]  # kind -> records that passed every check, in prompt order
    rejected: list[dict]  # records that failed, each with `reason` (kinds in the order generated)
    counts: dict[str, dict[str, int]]  # kind -> requested / no_source / generated / ... / accepted
    usage: Usage  # tokens_in / tokens_out / usd of new answers; requests = all answers (stored included)
    cached: int  # answers served from the LLM store (no new spend)
    seconds: dict[str, float]  # wall seconds per named step (generate_<kind>, check_<kind>, sandbox, dedup_<kind>)
    checked: str  # how exercises were checked: "sandbox doctests" | "parse-only (...)"
    generator: str  # "extractive-stand-in" or the model name
    kinds: tuple[str, ...] = field(default=())  # the kinds generated, in order
    failed: list[Result] = field(default_factory=list)  # requests that failed for good (the job is not finished)
    sent: int = 0  # requests made of the LLM layer (stored answers included)


def how_checked(config: Any) -> str:
    """How exercises are checked under `config`: by running their doctests in the sandbox, or parse-only."""
    if not config.sandbox:
        return "parse-only (disabled)"
    return "sandbox doctests" if sandbox_available() else "parse-only (phi1lib.sandbox unavailable)"


def make_requests(config: Any, kind: str, prompts: Sequence[SynthPrompt],
                  units: Sequence[Unit | None] | None) -> tuple[list[Request], list[SynthPrompt]]:
    """One Request per prompt (prompts the stand-in has no source for are left out), and the prompts used."""
    reqs, used = [], []
    for i, p in enumerate(prompts):
        messages = [dict(m) for m in p.messages]
        meta = {"stage": "synthesis", **p.meta()}
        if units is not None:
            unit = units[i]
            if unit is None:
                continue  # the stand-in ran out of source code for this prompt
            meta.update(source_id=unit.source_id, source_name=unit.name)
            # The stand-in's reply depends on its source, so the source is part of the request (and cache key).
            messages[-1]["content"] += f"\n\n[extractive stand-in source: {unit.source_id}:{unit.name}]"
        reqs.append(Request(messages=messages, max_tokens=config.max_tokens_for(kind), temperature=config.temperature,
                            n_index=p.variant, meta=meta))
        used.append(p)
    return reqs, used


def check_reply(config: Any, kind: str, prompt: SynthPrompt, text: str, generator: str) -> tuple[dict, str | None]:
    """(record, None) if the reply passes the static checks, else (partial record, reason)."""
    rec: dict[str, Any] = {"id": f"{kind}-{prompt.id}", **prompt.meta(), "generator": generator, "text": text}
    if kind == "textbook":
        return rec, check_textbook(text, min_chars=config.min_chars, max_chars=config.max_chars_textbook)
    try:
        parts = parse_exercise(text)
    except ValueError as exc:
        return rec, str(exc)
    why = check_exercise_text(parts["code"], min_chars=config.min_chars, max_chars=config.max_chars_exercise)
    rec.update(text=parts["code"], prompt=parts["prompt"], solution=parts["solution"],
               entry_point=parts["entry_point"], n_doctests=parts["n_doctests"],
               name_prefix_ok=parts["entry_point"].startswith(prompt.name_prefix or ""))
    return rec, why


def check_replies(config: Any, kind: str, used: Sequence[SynthPrompt], results: Sequence[Result], generator: str,
                  counts: dict[str, int], usage: Usage) -> tuple[list[dict], list[dict], int]:
    """(passed, rejected, cached answers): each answer parsed and checked; usage and counts updated."""
    good: list[dict] = []
    rejected: list[dict] = []
    cached = 0
    for prompt, res in zip(used, results):
        usage.requests += 1
        if getattr(res, "cached", False):
            cached += 1
        else:
            usage.tokens_in += int(res.prompt_tokens or 0)
            usage.tokens_out += int(res.completion_tokens or 0)
            usage.usd += float(res.usd or 0.0)
        if not res.ok:
            counts["llm_errors"] += 1
            rejected.append({"id": f"{kind}-{prompt.id}", **prompt.meta(), "generator": generator, "text": None,
                             "reason": f"llm error: {res.error}"})
            continue
        counts["generated"] += 1
        rec, why = check_reply(config, kind, prompt, res.text, generator)
        if why:
            counts["failed_checks"] += 1
            rejected.append({**rec, "reason": why})
        else:
            good.append(rec)
    return good, rejected, cached


def sandbox_exercises(config: Any, good: list[dict], counts: dict[str, int]) -> tuple[list[dict], list[dict]]:
    """(passed, failed): exercises with doctests run them in the sandbox; the rest are parse-checked only."""
    runnable = [r for r in good if r["n_doctests"] > 0]
    verdicts = run_doctests([r["text"] for r in runnable], timeout_s=config.sandbox_timeout_s,
                            workers=config.workers) if runnable else []
    reasons = dict(zip((r["id"] for r in runnable), verdicts))
    passed, failed = [], []
    for rec in good:
        if rec["id"] not in reasons:
            passed.append({**rec, "checked": "parse-only (no doctests)"})
        elif reasons[rec["id"]]:
            counts["failed_sandbox"] += 1
            failed.append({**rec, "reason": reasons[rec["id"]]})
        else:
            passed.append({**rec, "checked": "sandbox doctests passed"})
    counts["sandbox_runs"] = len(runnable)
    return passed, failed


def shard_of(items: Sequence, shard: tuple[int, int] | None) -> list:
    """Shard i of n: every n-th item from the i-th (all items without a shard)."""
    if shard is None:
        return list(items)
    i, n = shard
    return list(items)[i::n]


def kind_requests(config: Any, kind: str, units: list[Unit] | None) -> tuple[list[Request], list[SynthPrompt], int]:
    """(requests, the prompts they came from, prompts drawn) for one kind."""
    prompts = config.prompts(kind)
    assigned = assign_units(prompts, units) if units is not None else None
    reqs, used = make_requests(config, kind, prompts, assigned)
    return reqs, used, len(prompts)


def generate_kind(config: Any, client: LLMClient, kind: str, units: list[Unit] | None, generator: str, t: Timer,
                  usage: Usage, use_sandbox: bool,
                  failed_requests: list | None = None) -> tuple[list[dict], list[dict], dict[str, int], int]:
    """(accepted, rejected, counts, cached answers) for one kind: request, check, sandbox, dedup.
    Requests that failed for good are appended to `failed_requests`."""
    reqs, used, n_prompts = kind_requests(config, kind, units)
    with t(f"generate_{kind}"):
        results = client.generate(reqs, desc=f"synthesis: {kind}s") if reqs else []
    if failed_requests is not None:
        failed_requests.extend(r for r in results if not r.ok)
    counts = {k: 0 for k in COUNT_KEYS}
    counts.update(requested=n_prompts, no_source=n_prompts - len(reqs))
    with t(f"check_{kind}"):
        good, rejected, cached = check_replies(config, kind, used, results, generator, counts, usage)
    if kind == "exercise" and use_sandbox and good:
        with t("sandbox"):
            good, failed = sandbox_exercises(config, good, counts)
        rejected.extend(failed)
    elif kind == "exercise":
        good = [{**r, "checked": "parse-only"} for r in good]
    with t(f"dedup_{kind}"):
        kept, dups = dedup_records(good, threshold=config.dedup_threshold)
    counts.update(duplicates=len(dups), accepted=len(kept))
    return kept, rejected + dups, counts, cached


def generate_all(config: Any, client: LLMClient, *, kinds: Sequence[str] | None = None,
                 units_by_kind: dict[str, list[Unit]] | None = None, generator: str) -> GenerationOutcome:
    """Generate, check and deduplicate `kinds` (default: config.kinds) of a SynthesisConfig through `client`.

    `units_by_kind`: the extractive stand-in's source units per kind (prompts are matched to
    them and name their unit in the request), or None when a real provider answers.
    """
    kinds = tuple(config.kinds if kinds is None else kinds)
    t = Timer()
    usage = Usage()
    use_sandbox = config.sandbox and sandbox_available()
    accepted: dict[str, list[dict]] = {}
    rejected: list[dict] = []
    counts: dict[str, dict[str, int]] = {}
    cached = 0
    failed_requests: list[Result] = []
    for kind in kinds:
        units = units_by_kind.get(kind, []) if units_by_kind is not None else None
        accepted[kind], failed, counts[kind], n_cached = generate_kind(config, client, kind, units, generator, t,
                                                                       usage, use_sandbox, failed_requests)
        rejected.extend(failed)
        cached += n_cached
    return GenerationOutcome(accepted=accepted, rejected=rejected, counts=counts, usage=usage, cached=cached,
                             seconds=dict(t.seconds), checked=how_checked(config), generator=generator, kinds=kinds,
                             failed=failed_requests, sent=sum(c["requested"] - c["no_source"] for c in counts.values()))
