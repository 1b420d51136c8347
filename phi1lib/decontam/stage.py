"""Decontamination of synthetic exercises against HumanEval (and MBPP when given): paper §5.

Three measures: 13-gram overlap (word tokens), embedding distance (L2 between unit-normalized
embeddings; MiniLM offline, CodeGen-350M-mono on GPU presets), and the AST match rate with
normalized identifiers (`decontam_ast`). Pruning at each tau removes every exercise whose best
AST match with a benchmark problem reaches tau; a problem is "similar" at tau when some
exercise reaches it. Output: humaneval_split.json (read by evaluation), exercises pruned per
tau, the Table 3 shaped summary, the raw hits of each measure, and result.json last.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from .. import paper, runs
from ..errors import ConfigError, DataError
from ..jsonl import read_jsonl, write_jsonl
from ..presets import get_preset

TAUS = paper.DECONTAM_TAUS
_WORD = re.compile(r"\w+")


@dataclass
class DecontamConfig:
    preset: str = "tiny"
    taus: tuple[float, ...] = TAUS  # AST match-rate thresholds for pruning (paper: 0.95, 0.9, 0.85, 0.8)
    ngram: int = 13  # n for the n-gram overlap (word tokens)
    embedder: str | None = "minilm-local"  # transformers id/folder; None = skip the embedding measure
    embed_max_length: int = 256  # tokens per text for the embedder
    embed_flag_l2: float = 0.35  # unit-vector L2 below which a pair is flagged close (cosine > ~0.94)
    mbpp_path: str | None = None  # optional MBPP JSONL (fields task_id and code, or prompt+canonical_solution)
    textbooks: bool = True  # also check textbooks for 13-gram overlap
    progress: bool = True

    def __post_init__(self):
        get_preset(self.preset)
        self.taus = tuple(sorted((float(t) for t in self.taus), reverse=True))
        if not self.taus or not all(0.0 < t <= 1.0 for t in self.taus):
            raise ConfigError(f"DecontamConfig.taus must be match rates in (0, 1], got {self.taus}")
        if not isinstance(self.ngram, int) or self.ngram < 1:
            raise ConfigError(f"DecontamConfig.ngram must be an integer >= 1, got {self.ngram!r}")

    @classmethod
    def for_preset(cls, name: str = "tiny", **overrides) -> "DecontamConfig":
        p = get_preset(name)
        kw: dict[str, Any] = {"preset": p.name, "embedder": p.embedder}
        if p.offline:
            kw["embed_max_length"] = 128  # CPU budget: signature + docstring + the start of the body
        kw.update(overrides)
        return cls(**kw)


def estimate_cost(config: DecontamConfig, prices=None, n_records: int | None = None):
    """CPU work only (no API spend). n_records defaults to the preset's exercise count.

    Rates from benchmarks/bench_decontam.py on a busy 2-core machine: ~1e6 AST (record, problem)
    pairs/s effective after candidate filtering (2-3e6 measured), ~50 texts/s through MiniLM.
    """
    from ..budget import estimate_cpu, load_prices

    if n_records is None:
        from ..synthesis.stage import SynthesisConfig

        n_records = SynthesisConfig.for_preset(config.preset).n_exercises
    prices = prices or load_prices()
    embed_s = n_records / 50 if config.embedder else 0.0
    hours = (n_records * 164 / 1e6 + embed_s) / 3600.0
    return estimate_cpu("decontam", hours, prices)


# ---- benchmark problems -----------------------------------------------------------------------

def benchmark_problems(config: DecontamConfig) -> dict[str, list[dict]]:
    """{"humaneval": [{task_id, text}], "mbpp": [...]}: the code each training record is compared with."""
    from ..problems import load_humaneval

    out = {"humaneval": [{"task_id": p["task_id"], "text": p["prompt"] + p.get("canonical_solution", "")}
                         for p in load_humaneval()]}
    if config.mbpp_path:
        path = Path(config.mbpp_path)
        rows = read_jsonl(path, strict=True)
        probs = []
        for i, r in enumerate(rows, 1):
            code = r.get("code") or (r.get("prompt", "") + r.get("canonical_solution", ""))
            if "task_id" not in r or not code:
                raise DataError(f"{path}:{i}: MBPP problem needs task_id and code (or prompt + canonical_solution)")
            probs.append({"task_id": r["task_id"], "text": code})
        out["mbpp"] = probs
    return out


# ---- the three measures -------------------------------------------------------------------------

def ngrams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    toks = _WORD.findall(text.lower())
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def ngram_overlap(records: Sequence[dict], problems: Sequence[dict], n: int = 13) -> list[dict]:
    """Every (task, record) pair sharing a word n-gram, with the count and one example n-gram."""
    index: dict[tuple, list[int]] = {}
    for j, p in enumerate(problems):
        for g in ngrams(p["text"], n):
            index.setdefault(g, []).append(j)
    hits: dict[tuple[int, int], list] = {}
    for i, r in enumerate(records):
        for g in ngrams(r["text"], n):
            for j in index.get(g, ()):
                hits.setdefault((j, i), []).append(g)
    return [{"task_id": problems[j]["task_id"], "record_id": records[i]["id"], "kind": records[i].get("kind"),
             "shared": len(gs), "example": " ".join(gs[0])} for (j, i), gs in sorted(hits.items())]


def embedding_neighbours(records: Sequence[dict], problems: Sequence[dict], config: DecontamConfig) -> list[dict]:
    """For each problem, its nearest record by L2 distance between unit-normalized embeddings."""
    import numpy as np

    from ..embed import Embedder

    if not records:
        return []
    emb = Embedder(config.embedder, max_length=config.embed_max_length, progress=config.progress)
    r = emb.embed([x["text"] for x in records], desc="embed exercises")
    p = emb.embed([x["text"] for x in problems], desc="embed problems")
    r /= np.linalg.norm(r, axis=1, keepdims=True) + 1e-12
    p /= np.linalg.norm(p, axis=1, keepdims=True) + 1e-12
    # ||a - b||^2 = 2 - 2 a.b for unit vectors: one matrix product, (problems x records).
    d2 = np.clip(2.0 - 2.0 * (p @ r.T), 0.0, None)
    nn = d2.argmin(axis=1)
    return [{"task_id": problems[j]["task_id"], "record_id": records[int(nn[j])]["id"],
             "l2": float(np.sqrt(d2[j, nn[j]])), "flagged": bool(np.sqrt(d2[j, nn[j]]) < config.embed_flag_l2)}
            for j in range(len(problems))]


def ast_matches(records: Sequence[dict], problems: Sequence[dict], tau_min: float, progress: bool = False):
    """Pairs with AST match rate >= tau_min, as dicts, plus pruning statistics."""
    from .ast_match import ast_sequence, match_all

    q = [ast_sequence(r["text"]) for r in records]
    ref = [ast_sequence(p["text"]) for p in problems]
    t = time.perf_counter()
    matches, stats = match_all(q, ref, tau_min, progress=progress)
    stats.update(seconds=time.perf_counter() - t, unparsable_records=sum(s is None for s in q))
    rows = [{"task_id": problems[m.ref]["task_id"], "record_id": records[m.query]["id"], "rate": m.rate}
            for m in matches]
    return rows, stats


def split_table(matches: Sequence[dict], problems: Sequence[dict], records: Sequence[dict],
                taus: Sequence[float]) -> dict[str, dict]:
    """Per tau: similar / non-similar task ids and how many records pruning removes (paper Table 3)."""
    best_task: dict[str, float] = {}
    best_rec: dict[str, float] = {}
    for m in matches:
        best_task[m["task_id"]] = max(best_task.get(m["task_id"], 0.0), m["rate"])
        best_rec[m["record_id"]] = max(best_rec.get(m["record_id"], 0.0), m["rate"])
    out = {}
    for tau in taus:
        sim = [p["task_id"] for p in problems if best_task.get(p["task_id"], 0.0) >= tau - 1e-9]
        simset = set(sim)
        out[f"{tau:g}"] = {"similar": sim, "non_similar": [p["task_id"] for p in problems if p["task_id"] not in simset],
                           "removed": sum(1 for r in records if best_rec.get(r["id"], 0.0) >= tau - 1e-9),
                           "kept": sum(1 for r in records if best_rec.get(r["id"], 0.0) < tau - 1e-9)}
    return out


def table3(split: dict[str, dict], n_records: int):
    """The paper's Table 3 shape as a DataFrame, with the paper's counts alongside for reference."""
    import pandas as pd

    rows = []
    for tau, s in split.items():
        similar, non_similar = paper.split_counts(tau)
        rows.append({"tau": float(tau), "records": n_records, "removed": s["removed"], "kept": s["kept"],
                     "similar": len(s["similar"]), "non_similar": len(s["non_similar"]),
                     "paper_similar": similar, "paper_non_similar": non_similar})
    return pd.DataFrame(rows)


# ---- the stage ----------------------------------------------------------------------------------

@dataclass
class DecontamResult:
    out_dir: str
    split_path: str  # humaneval_split.json
    pruned: dict[str, str]  # tau -> pruned exercises JSONL
    table: list[dict]  # Table 3 rows
    n_records: int
    ngram_hits: int  # (task, record) pairs sharing a 13-gram
    embedding: dict[str, Any]  # summary of nearest-neighbour distances
    ast_stats: dict[str, Any]
    seconds: dict[str, float]
    usage: dict[str, float] = field(default_factory=lambda: {"usd": 0.0})
    extra_splits: dict[str, str] = field(default_factory=dict)  # e.g. mbpp -> mbpp_split.json

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DecontamResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def table_df(self):
        """Table 3 as a DataFrame, columns in reading order."""
        import pandas as pd

        cols = ["tau", "records", "removed", "kept", "similar", "non_similar", "paper_similar", "paper_non_similar"]
        return pd.DataFrame(self.table)[cols]

    def split(self) -> dict:
        return json.loads(Path(self.split_path).read_text())


def _load_data(data_dir: Path, textbooks: bool) -> tuple[list[dict], list[dict]]:
    ex = data_dir / "exercises.jsonl"
    if not ex.exists():
        raise DataError(f"{ex}: no exercises to decontaminate; point --data at a synthesis folder "
                        "(with exercises.jsonl from `phi1 synth exercises`)")
    exercises = read_jsonl(ex)
    for i, r in enumerate(exercises, 1):
        if "id" not in r or not isinstance(r.get("text"), str):
            raise DataError(f"{ex}:{i}: record needs `id` and a string `text` field")
    tb = data_dir / "textbooks.jsonl"
    books = read_jsonl(tb) if textbooks and tb.exists() else []
    return exercises, books


def run_decontamination(config: DecontamConfig, data_dir=None, out_dir=None, *, force: bool = False) -> DecontamResult:
    """Measure overlap, prune exercises at each tau, write the splits; a finished run is returned as stored."""
    data_dir = Path(data_dir) if data_dir is not None else runs.stage_dir("synthesis", preset=config.preset)
    out = Path(out_dir) if out_dir is not None else runs.stage_dir("decontam", preset=config.preset)
    out.mkdir(parents=True, exist_ok=True)
    stored = runs.load_result(out)
    if stored is not None and not force:
        return DecontamResult.from_dict(stored)
    exercises, books = _load_data(data_dir, config.textbooks)
    seconds: dict[str, float] = {}
    benches = benchmark_problems(config)
    he = benches["humaneval"]

    t = time.perf_counter()
    hits = ngram_overlap(exercises + books, he, config.ngram)
    write_jsonl(out / "ngram_hits.jsonl", hits)
    seconds["ngram"] = time.perf_counter() - t

    t = time.perf_counter()
    emb_summary: dict[str, Any] = {"embedder": config.embedder, "skipped": config.embedder is None}
    if config.embedder is not None and exercises:
        nn = embedding_neighbours(exercises, he, config)
        write_jsonl(out / "embedding_nn.jsonl", nn)
        d = sorted(x["l2"] for x in nn)
        emb_summary.update(min_l2=d[0], median_l2=d[len(d) // 2], flagged=sum(x["flagged"] for x in nn),
                           flag_l2=config.embed_flag_l2)
    seconds["embedding"] = time.perf_counter() - t

    t = time.perf_counter()
    matches, ast_stats = ast_matches(exercises, he, min(config.taus), progress=config.progress)
    write_jsonl(out / "ast_matches.jsonl", matches)
    split = split_table(matches, he, exercises, config.taus)
    (out / "humaneval_split.json").write_text(json.dumps(split, indent=1), encoding="utf-8")
    extra = {}
    for name, probs in benches.items():
        if name == "humaneval":
            continue
        m2, _ = ast_matches(exercises, probs, min(config.taus))
        path = out / f"{name}_split.json"
        path.write_text(json.dumps(split_table(m2, probs, exercises, config.taus), indent=1), encoding="utf-8")
        extra[name] = str(path)
    seconds["ast"] = time.perf_counter() - t

    best: dict[str, float] = {}
    for m in matches:
        best[m["record_id"]] = max(best.get(m["record_id"], 0.0), m["rate"])
    pruned = {}
    for tau in config.taus:
        path = out / f"exercises_pruned_tau{tau:g}.jsonl"
        write_jsonl(path, (r for r in exercises if best.get(r["id"], 0.0) < tau - 1e-9))
        pruned[f"{tau:g}"] = str(path)
    table = table3(split, len(exercises))
    table.to_csv(out / "table3.csv", index=False)
    result = DecontamResult(out_dir=str(out), split_path=str(out / "humaneval_split.json"), pruned=pruned,
                            table=table.to_dict(orient="records"), n_records=len(exercises), ngram_hits=len(hits),
                            embedding=emb_summary, ast_stats=ast_stats, seconds=seconds, extra_splits=extra)
    runs.save_result(out, result.to_dict())
    return result
