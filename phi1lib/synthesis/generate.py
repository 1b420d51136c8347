"""The synthesis stage's work loop: prompts -> LLM layer -> parsed, checked, deduplicated records."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import DataError
from .extractive import GENERATOR, assign_units, extract_units
from .quality import check_exercise_text, check_textbook, parse_exercise, run_doctests, sandbox_available

STORE_FILE = "llm_store.sqlite"


def _load_units(config, root) -> dict:
    """Stand-in input: documented functions of stage 1's kept code (file- or function-level samples)."""
    import pandas as pd

    from .stage import ensure_source

    path = ensure_source(config, root)
    try:
        df = pd.read_parquet(path, columns=["id", "text"])
    except Exception as exc:  # pyarrow raises several types for a bad file or missing columns
        raise DataError(f"{path}: cannot read columns id, text ({exc}); expected stage 1's kept.parquet") from exc
    return extract_units(zip(df["id"].astype(str), df["text"].astype(str)))


def _requests(config, kind, prompts, units):
    from ..llm import Request

    reqs, used = [], []
    max_tokens = config.max_tokens_textbook if kind == "textbook" else config.max_tokens_exercise
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
        reqs.append(Request(messages=messages, max_tokens=max_tokens, temperature=config.temperature,
                            n_index=p.variant, meta=meta))
        used.append(p)
    return reqs, used


def _check(config, kind, prompt, text, generator) -> tuple[dict | None, str | None]:
    """(record, None) if the reply passes the static checks, else (partial record, reason)."""
    rec: dict[str, Any] = {"id": f"{kind}-{prompt.id}", **prompt.meta(), "generator": generator, "text": text}
    if kind == "textbook":
        why = check_textbook(text, min_chars=config.min_chars, max_chars=config.max_chars_textbook)
        return (rec, why)
    try:
        parts = parse_exercise(text)
    except ValueError as exc:
        return rec, str(exc)
    why = check_exercise_text(parts["code"], min_chars=config.min_chars, max_chars=config.max_chars_exercise)
    rec.update(text=parts["code"], prompt=parts["prompt"], solution=parts["solution"],
               entry_point=parts["entry_point"], n_doctests=parts["n_doctests"],
               name_prefix_ok=parts["entry_point"].startswith(prompt.name_prefix or ""))
    return rec, why


def generate_all(config, out: Path, *, provider=None, ledger=None, prices=None, progress=True, root=None) -> dict:
    from .dedup import dedup_records
    from ..llm import LLMClient

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    units_by_kind = _load_units(config, root) if config.is_stand_in and provider is None else None
    seconds["extract"] = time.perf_counter() - t
    if provider is None:
        from .stage import make_provider

        provider = make_provider(config, units_by_kind)
    generator = GENERATOR if config.is_stand_in and units_by_kind is not None else getattr(provider, "model", config.model)
    client = LLMClient(provider, store=out / STORE_FILE, ledger=ledger, cap_usd=config.cap_usd,
                       concurrency=config.concurrency, prices=prices, stage="synthesis",
                       progress=progress)
    use_sandbox = config.sandbox and sandbox_available()
    checked = ("sandbox doctests" if use_sandbox else
               "parse-only (disabled)" if not config.sandbox else "parse-only (phi1lib.sandbox unavailable)")
    accepted: dict[str, list[dict]] = {}
    rejected: list[dict] = []
    counts: dict[str, dict[str, int]] = {}
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0, "cached": 0, "requests": 0}
    for kind in config.kinds:
        prompts = config.prompts(kind)
        units = assign_units(prompts, units_by_kind[kind]) if units_by_kind is not None else None
        reqs, used = _requests(config, kind, prompts, units)
        t = time.perf_counter()
        results = client.generate(reqs, desc=f"synthesis: {kind}s") if reqs else []
        seconds[f"generate_{kind}"] = time.perf_counter() - t
        c = {"requested": len(prompts), "no_source": len(prompts) - len(reqs), "generated": 0, "llm_errors": 0,
             "failed_checks": 0, "failed_sandbox": 0, "duplicates": 0, "accepted": 0}
        good: list[dict] = []
        t = time.perf_counter()
        for prompt, res in zip(used, results):
            usage["requests"] += 1
            if getattr(res, "cached", False):
                usage["cached"] += 1
            else:
                usage["prompt_tokens"] += int(res.prompt_tokens or 0)
                usage["completion_tokens"] += int(res.completion_tokens or 0)
                usage["usd"] += float(res.usd or 0.0)
            if not res.ok:
                c["llm_errors"] += 1
                rejected.append({"id": f"{kind}-{prompt.id}", **prompt.meta(), "generator": generator, "text": None,
                                 "reason": f"llm error: {res.error}"})
                continue
            c["generated"] += 1
            rec, why = _check(config, kind, prompt, res.text, generator)
            if why:
                c["failed_checks"] += 1
                rejected.append({**rec, "reason": why})
            else:
                good.append(rec)
        seconds[f"check_{kind}"] = time.perf_counter() - t
        if kind == "exercise" and use_sandbox and good:
            # Only exercises with doctests have something to check by running; the rest are parse-checked.
            t = time.perf_counter()
            runnable = [r for r in good if r["n_doctests"] > 0]
            reasons = dict(zip((r["id"] for r in runnable),
                               run_doctests([r["text"] for r in runnable], timeout_s=config.sandbox_timeout_s,
                                            workers=config.workers) if runnable else []))
            passed = []
            for rec in good:
                if rec["id"] not in reasons:
                    passed.append({**rec, "checked": "parse-only (no doctests)"})
                elif reasons[rec["id"]]:
                    c["failed_sandbox"] += 1
                    rejected.append({**rec, "reason": reasons[rec["id"]]})
                else:
                    passed.append({**rec, "checked": "sandbox doctests passed"})
            good = passed
            c["sandbox_runs"] = len(runnable)
            seconds["sandbox"] = time.perf_counter() - t
        elif kind == "exercise":
            good = [{**r, "checked": "parse-only"} for r in good]
        t = time.perf_counter()
        kept, dups = dedup_records(good, threshold=config.dedup_threshold)
        seconds[f"dedup_{kind}"] = time.perf_counter() - t
        c["duplicates"] = len(dups)
        c["accepted"] = len(kept)
        rejected.extend(dups)
        accepted[kind] = kept
        counts[kind] = c
    return {"accepted": accepted, "rejected": rejected, "counts": counts, "usage": usage, "seconds": seconds,
            "checked": checked, "generator": generator, "stand_in": generator == GENERATOR}
