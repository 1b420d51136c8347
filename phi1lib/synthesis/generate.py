"""The synthesis work loop: prompts -> LLM layer -> parsed, checked, deduplicated records.

The stage (`synthesis.stage`) prepares everything this module needs: the config, an
`LLMClient` built on the provider, the extractive stand-in's source units (when it answers)
and the generator's name. `generate_all` then runs, per kind, the named steps
request -> check -> sandbox (exercises) -> dedup, and returns a `GenerationOutcome`.
This module never imports the stage.

What was checked is said per record (`checked`) and per stage (`checks_summary`): an exercise
either ran its doctests in the sandbox ("sandbox: doctests passed") or says why it was not
executed. An LLM's exercise must show doctests (the prompt asks for them) and is rejected
without (`require_doctests`); the stand-in's library functions rarely have any, so they are kept
and labelled "not executed (no doctests)". Textbook code blocks are parse-checked, never run.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..llm import LLMClient, Request, Result
from ..stage import Timer, Usage
from .dedup import dedup_options, dedup_records
from .extractive import GENERATOR, Match, Unit, assign_units
from .prompts import SynthPrompt
from .quality import check_exercise_text, check_textbook, parse_exercise, run_doctests, sandbox_available

# The count keys every kind reports, in the order of the funnel (sandbox_runs only for sandboxed exercises).
COUNT_KEYS = ("requested", "no_source", "generated", "llm_errors", "failed_checks", "failed_sandbox", "duplicates",
              "accepted")
# Per-record `checked` labels: what was done to the record's code.
PASSED = "sandbox: doctests passed"
NO_DOCTESTS = "not executed (no doctests)"
TEXTBOOK_CHECK = "not executed (code blocks parse-checked only)"


@dataclass
class GenerationOutcome:
    """What `generate_all` made of the kinds it was asked for."""

    accepted: dict[str, list[dict]]  # kind -> records that passed every check, in prompt order
    rejected: list[dict]  # records that failed, each with `reason` (kinds in the order generated)
    counts: dict[str, dict[str, int]]  # kind -> requested / no_source / generated / ... / accepted
    usage: Usage  # tokens_in / tokens_out / usd of new answers; requests = all answers (stored included)
    cached: int  # answers served from the LLM store (no new spend)
    seconds: dict[str, float]  # wall seconds per named step (prompts_<kind>, generate_<kind>, check_<kind>, sandbox, ...)
    checked: str  # how exercises were checked: checks_summary of the accepted exercises
    generator: str  # "extractive-stand-in" or the model name
    kinds: tuple[str, ...] = field(default=())  # the kinds generated, in order
    failed: list[Result] = field(default_factory=list)  # requests that failed for good (the job is not finished)
    sent: int = 0  # requests made of the LLM layer (stored answers included)


def how_checked(config: Any) -> str:
    """How exercises with doctests are checked under `config`: run in the sandbox, or the label saying why not."""
    if not config.sandbox:
        return "not executed (sandbox disabled)"
    return "sandbox doctests" if sandbox_available() else "not executed (phi1lib.sandbox unavailable)"


def checks_summary(records: Sequence[dict]) -> str:
    """What was checked over `records` (accepted exercises), by their `checked` labels, most common first:
    '380 not executed (no doctests); 12 sandbox: doctests passed (of 392 accepted exercises)'."""
    counts = collections.Counter(r.get("checked", "unknown") for r in records)
    if not counts:
        return "no accepted exercises"
    return "; ".join(f"{n} {label}" for label, n in counts.most_common()) + f" (of {len(records)} accepted exercises)"


def requires_doctests(config: Any, generator: str) -> bool:
    """Whether an exercise without doctests is rejected: `config.require_doctests`, else yes for an LLM
    (the prompt asks for doctests) and no for the extractive stand-in (library code rarely has them)."""
    setting = getattr(config, "require_doctests", None)
    return setting if setting is not None else generator != GENERATOR


def make_requests(config: Any, kind: str, prompts: Sequence[SynthPrompt], matches: Sequence[Match | None] | None
                  ) -> tuple[list[Request], list[SynthPrompt], dict[str, dict], list[SynthPrompt]]:
    """(one Request per answered prompt, the prompts used, prompt id -> what its record says about the
    stand-in's source, the prompts the stand-in had no relevant code for: they get no request)."""
    reqs, used, sources, unmatched = [], [], {}, []
    for i, p in enumerate(prompts):
        messages = [dict(m) for m in p.messages]
        meta = {"stage": "synthesis", **p.meta()}
        if matches is not None:
            match = matches[i]
            if match is None:
                unmatched.append(p)  # no unused code on this topic: said so, never answered with unrelated code
                continue
            unit = match.unit
            sources[p.id] = match.meta()
            meta.update(source_id=unit.source_id, source_name=unit.name)
            # The stand-in's reply depends on its source, so the source is part of the request (and cache key).
            messages[-1]["content"] += f"\n\n[extractive stand-in source: {unit.source_id}:{unit.name}]"
        reqs.append(Request(messages=messages, max_tokens=config.max_tokens_for(kind), temperature=config.temperature,
                            n_index=p.variant, meta=meta))
        used.append(p)
    return reqs, used, sources, unmatched


def no_source_records(kind: str, prompts: Sequence[SynthPrompt], generator: str, min_relevance: float) -> list[dict]:
    """Rejected records for the prompts the stand-in had no relevant code for (reason category 'no source')."""
    return [{"id": f"{kind}-{p.id}", **p.meta(), "generator": generator, "text": None,
             "reason": f"no source: no unused function in the filtered code matches the topic {p.topic!r} "
                       f"(relevance < min_relevance={min_relevance:g}); the stand-in does not answer off-topic"}
            for p in prompts]


def check_reply(config: Any, kind: str, prompt: SynthPrompt, text: str, generator: str,
                source: dict | None = None) -> tuple[dict, str | None]:
    """(record, None) if the reply passes the static checks, else (partial record, reason)."""
    rec: dict[str, Any] = {"id": f"{kind}-{prompt.id}", **prompt.meta(), "generator": generator, **(source or {}),
                           "text": text}
    if kind == "textbook":
        rec["checked"] = TEXTBOOK_CHECK
        return rec, check_textbook(text, min_chars=config.min_chars, max_chars=config.max_chars_textbook)
    try:
        parts = parse_exercise(text)
    except ValueError as exc:
        return rec, str(exc)
    why = check_exercise_text(parts["code"], min_chars=config.min_chars, max_chars=config.max_chars_exercise)
    rec.update(text=parts["code"], prompt=parts["prompt"], solution=parts["solution"],
               entry_point=parts["entry_point"], n_doctests=parts["n_doctests"],
               name_prefix_ok=parts["entry_point"].startswith(prompt.name_prefix or ""))
    if why is None and parts["n_doctests"] == 0 and requires_doctests(config, generator):
        why = ("no doctests: the reply shows no >>> example to run in the sandbox (the prompt asks for one; "
               "require_doctests)")
    return rec, why


def check_replies(config: Any, kind: str, used: Sequence[SynthPrompt], results: Sequence[Result], generator: str,
                  counts: dict[str, int], usage: Usage,
                  sources: dict[str, dict] | None = None) -> tuple[list[dict], list[dict], int]:
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
        rec, why = check_reply(config, kind, prompt, res.text, generator, (sources or {}).get(prompt.id))
        if why:
            counts["failed_checks"] += 1
            rejected.append({**rec, "reason": why})
        else:
            good.append(rec)
    return good, rejected, cached


def sandbox_exercises(config: Any, good: list[dict], counts: dict[str, int]) -> tuple[list[dict], list[dict]]:
    """(passed, failed): exercises with doctests run them in the sandbox; the rest are labelled not executed."""
    runnable = [r for r in good if r["n_doctests"] > 0]
    verdicts = run_doctests([r["text"] for r in runnable], timeout_s=config.sandbox_timeout_s,
                            workers=config.workers) if runnable else []
    reasons = dict(zip((r["id"] for r in runnable), verdicts))
    passed, failed = [], []
    for rec in good:
        if rec["id"] not in reasons:
            passed.append({**rec, "checked": NO_DOCTESTS})
        elif reasons[rec["id"]]:
            counts["failed_sandbox"] += 1
            failed.append({**rec, "reason": reasons[rec["id"]]})
        else:
            passed.append({**rec, "checked": PASSED})
    counts["sandbox_runs"] = len(runnable)
    return passed, failed


def shard_of(items: Sequence, shard: tuple[int, int] | None) -> list:
    """Shard i of n: every n-th item from the i-th (all items without a shard)."""
    if shard is None:
        return list(items)
    i, n = shard
    return list(items)[i::n]


def kind_requests(config: Any, kind: str, units: list[Unit] | None
                  ) -> tuple[list[Request], list[SynthPrompt], int, dict[str, dict], list[SynthPrompt]]:
    """(requests, the prompts they came from, prompts drawn, per prompt id its stand-in source, the
    prompts the stand-in has no relevant code for) for one kind."""
    prompts = config.prompts(kind)
    matches = assign_units(prompts, units, min_relevance=config.min_relevance) if units is not None else None
    reqs, used, sources, unmatched = make_requests(config, kind, prompts, matches)
    return reqs, used, len(prompts), sources, unmatched


def generate_kind(config: Any, client: LLMClient, kind: str, units: list[Unit] | None, generator: str, t: Timer,
                  usage: Usage, use_sandbox: bool,
                  failed_requests: list | None = None) -> tuple[list[dict], list[dict], dict[str, int], int]:
    """(accepted, rejected, counts, cached answers) for one kind: request, check, sandbox, dedup.
    Requests that failed for good are appended to `failed_requests`."""
    with t(f"prompts_{kind}"):  # draw the prompts (and, for the stand-in, retrieve its code by topic)
        reqs, used, n_prompts, sources, unmatched = kind_requests(config, kind, units)
    with t(f"generate_{kind}"):
        results = client.generate(reqs, desc=f"synthesis: {kind}s") if reqs else []
    if failed_requests is not None:
        failed_requests.extend(r for r in results if not r.ok)
    counts = {k: 0 for k in COUNT_KEYS}
    counts.update(requested=n_prompts, no_source=n_prompts - len(reqs))
    with t(f"check_{kind}"):
        good, rejected, cached = check_replies(config, kind, used, results, generator, counts, usage, sources)
    rejected = no_source_records(kind, unmatched, generator, config.min_relevance) + rejected
    if kind == "exercise" and use_sandbox and good:
        with t("sandbox"):
            good, failed = sandbox_exercises(config, good, counts)
        rejected.extend(failed)
    elif kind == "exercise":
        good = [{**r, "checked": NO_DOCTESTS if r["n_doctests"] == 0 else how_checked(config)} for r in good]
    with t(f"dedup_{kind}"):
        kept, dups = dedup_records(good, **dedup_options(config))
    counts.update(duplicates=len(dups), accepted=len(kept))
    if kind == "exercise":
        counts.update(executed=sum(r["checked"] == PASSED for r in kept),
                      not_executed=sum(r["checked"] != PASSED for r in kept))
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
    checked = checks_summary(accepted["exercise"]) if "exercise" in accepted else "no exercises generated"
    return GenerationOutcome(accepted=accepted, rejected=rejected, counts=counts, usage=usage, cached=cached,
                             seconds=dict(t.seconds), checked=checked, generator=generator, kinds=kinds,
                             failed=failed_requests, sent=sum(c["requested"] - c["no_source"] for c in counts.values()))
