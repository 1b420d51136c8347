"""Decontamination of synthetic exercises against HumanEval (and MBPP when given): paper §5.

Three measures: 13-gram overlap (word tokens), embedding distance (L2 between unit-normalized
embeddings; MiniLM offline, CodeGen-350M-mono on GPU presets), and the AST match rate with
normalized identifiers (`ast_match`: a sequence-edit approximation of the paper's tree edit
distance). Pruning at each tau removes every exercise whose best AST match with a benchmark
problem reaches tau; a problem is "similar" at tau when some exercise reaches it. Output:
humaneval_split.json (read by evaluation), exercises pruned per tau, the Table 3 shaped summary,
the raw hits of each measure, and result.json last.

Table 3 is reproduced only in part: the split and the pruned exercise files are made here, and
the evaluation stage reports the main model's pass@1 on each side of the split; the paper's
second row (the model retrained on the data pruned at tau) is not run by the pipeline. Run it by
hand, into another run folder so the main finetune is kept:
    phi1 train finetune --out runs/tiny-pruned --init-from runs/tiny/pretrain/final \\
        --data runs/tiny/decontam/exercises_pruned_tau0.9.jsonl
    phi1 eval run --out runs/tiny-pruned --split runs/tiny/decontam/humaneval_split.json
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from .. import budget, paper, runs
from ..embed import MINILM_LOCAL, Embedder
from ..errors import DataError
from ..jsonl import iter_numbered, write_jsonl
from ..paths import check_file
from ..presets import Preset
from ..problems import N_PROBLEMS, load_humaneval
from ..runs import RunDir
from ..stage import StageConfig, StageResult, Timer, Usage, common_fields, load_stored
from .ast_match import ast_sequence, match_all

STAGE = "decontam"
TAUS = paper.DECONTAM_TAUS
_WORD = re.compile(r"\w+")


@dataclass
class DecontamConfig(StageConfig):
    """What the decontamination stage compares and how; `DecontamConfig.for_preset(name, **overrides)`."""

    STAGE: ClassVar[str] = STAGE
    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("planned_records",)

    preset: str = "tiny"  # preset the defaults came from
    taus: tuple[float, ...] = TAUS  # AST match-rate thresholds for pruning, highest first (paper: 0.95 ... 0.8)
    ngram: int = 13  # n of the word n-gram overlap (paper: 13)
    embedder: str | None = "minilm-local"  # transformers id/folder for the embedding distance; None = skip it
    embed_max_length: int = 256  # tokens of each text the embedder reads
    embed_flag_l2: float = 0.35  # unit-vector L2 below which a pair is flagged close (cosine > ~0.94)
    mbpp_path: str | None = None  # MBPP JSONL (task_id and code, or prompt + canonical_solution) to check too
    textbooks: bool = True  # also check textbooks for n-gram overlap
    exercises_file: str | None = None  # exercises to check; None = the run's synthesis/exercises.jsonl
    textbooks_file: str | None = None  # None = the run's synthesis/textbooks.jsonl (when it exists)
    planned_records: int = 2000  # exercises the estimate plans for (the preset's data plan)

    def validate(self) -> None:
        self.need(bool(self.taus) and all(0.0 < t <= 1.0 for t in self.taus), "taus", "match rates in (0, 1]")
        self.need(list(self.taus) == sorted(self.taus, reverse=True), "taus", "thresholds from highest to lowest")
        self.need_ints("ngram", "embed_max_length")
        self.need_ints("planned_records", minimum=0)
        self.need(self.embed_flag_l2 > 0, "embed_flag_l2", "a distance > 0")

    @classmethod
    def _from_preset(cls, p: Preset) -> dict[str, Any]:
        # Offline, 128 tokens (signature + docstring + the start of the body) keeps CPU time low.
        return dict(preset=p.name, embedder=p.embedder, embed_max_length=128 if p.offline else 256,
                    planned_records=p.data.n_exercises)


def budget_lines(config: DecontamConfig) -> list[dict[str, Any]]:
    """CPU work only, no API spend: AST matching of every exercise against every benchmark problem, and embedding
    the exercises and the problems (on CPU: the embedder runs there), at the rates in costs/throughput.toml."""
    tp = budget.load_throughput()
    n = config.planned_records
    problems = N_PROBLEMS["humaneval"] + (N_PROBLEMS["mbpp"] if config.mbpp_path else 0)
    ast_s = n * problems / tp.ast_pairs_per_s
    lines = [dict(stage=STAGE, item="decontam-ast", kind="cpu", cpu_hours=ast_s / 3600,
                  note=f"{n:,} exercises x {problems} problems at {tp.ast_pairs_per_s:,.0f} AST pairs/s, "
                       f"{tp.source()}")]
    if config.embedder:
        spec = None if config.embedder == MINILM_LOCAL else _embedder_spec(config.embedder)
        embed_s = budget.cpu_embed_seconds(tp, n + problems, config.embed_max_length, spec)
        scaled = "" if spec is None else ", scaled by its forward FLOPs per token against minilm-local's"
        lines.append(dict(stage=STAGE, item="decontam-embed", kind="cpu", cpu_hours=embed_s / 3600,
                          note=f"{n + problems:,} texts x {config.embed_max_length} tokens through {config.embedder} "
                               f"on CPU at {tp.embed_tokens_per_s:,.0f} tokens/s{scaled}, plus "
                               f"{tp.embed_load_s:.1f} s to load it, {tp.source()}"))
    return lines


def _embedder_spec(model: str):
    """The embedder's shape for the estimate (the budget's table of known embedders), else minilm-local's."""
    return budget.EXTRA_MODELS.get(model)


def estimate(config: DecontamConfig, prices: budget.PriceBook | None = None) -> budget.StageEstimate:
    return budget.price_lines(STAGE, budget_lines(config), {}, prices)


# ---- benchmark problems -----------------------------------------------------------------------

def benchmark_problems(config: DecontamConfig) -> dict[str, list[dict]]:
    """{"humaneval": [{task_id, text}], "mbpp": [...]}: the code each training record is compared with."""
    out = {"humaneval": [{"task_id": p["task_id"], "text": p["prompt"] + p.get("canonical_solution", "")}
                         for p in load_humaneval()]}
    if config.mbpp_path:
        path = Path(config.mbpp_path)
        probs = []
        for i, r in iter_numbered(path, strict=True):
            parts = [r.get("code")] if r.get("code") else [r.get("prompt", ""), r.get("canonical_solution", "")]
            code = "".join(p for p in parts if isinstance(p, str))
            if "task_id" not in r or not code or not all(isinstance(p, str) for p in parts):
                raise DataError(f"{path}:{i}: MBPP problem needs task_id and code as a string "
                                "(or prompt + canonical_solution)")
            probs.append({"task_id": r["task_id"], "text": code})
        if not probs:
            raise DataError(f"{path}: no MBPP problems in the file; give a JSONL with task_id and code per line")
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


def embedding_neighbours(records: Sequence[dict], problems: Sequence[dict], config: DecontamConfig,
                         progress: bool = True) -> list[dict]:
    """For each problem, its nearest record by L2 distance between unit-normalized embeddings."""
    if not records:
        return []
    emb = Embedder(config.embedder, max_length=config.embed_max_length, progress=progress)
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
    q = [ast_sequence(r["text"]) for r in records]
    ref = [ast_sequence(p["text"]) for p in problems]
    timer = Timer()
    with timer("match"):
        matches, stats = match_all(q, ref, tau_min, progress=progress)
    stats.update(seconds=timer.seconds["match"], unparsable_records=sum(s is None for s in q))
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

@dataclass(kw_only=True)
class DecontamResult(StageResult):
    split_path: str  # humaneval_split.json (read by the evaluation stage)
    pruned: dict[str, str]  # tau -> exercises JSONL pruned at that tau
    table: list[dict]  # Table 3 rows
    n_records: int  # exercises checked
    ngram_hits: int  # (problem, record) pairs sharing an n-gram
    embedding: dict[str, Any]  # summary of the nearest-neighbour distances
    ast_stats: dict[str, Any]  # candidate pruning statistics of the AST match
    extra_splits: dict[str, str] = field(default_factory=dict)  # other benchmarks: name -> <name>_split.json

    def table_df(self):
        """Table 3 as a DataFrame, columns in reading order."""
        import pandas as pd

        cols = ["tau", "records", "removed", "kept", "similar", "non_similar", "paper_similar", "paper_non_similar"]
        return pd.DataFrame(self.table)[cols]

    def split(self) -> dict:
        return json.loads(Path(self.split_path).read_text(encoding="utf-8"))


def _read_records(path: Path, what: str) -> list[dict]:
    records, seen = [], set()
    for i, r in iter_numbered(path, strict=True):
        rid = r.get("id")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool) or not isinstance(r.get("text"), str):
            raise DataError(f"{path}:{i}: needs an `id` (string or integer) and a string `text` field ({what}); "
                            f"has {', '.join(f'{k}: {type(v).__name__}' for k, v in list(r.items())[:6])}")
        if rid in seen:
            raise DataError(f"{path}:{i}: id {rid!r} appears more than once; record ids must be unique")
        seen.add(rid)
        records.append(r)
    return records


def inputs_of(config: DecontamConfig, run_dir: RunDir) -> dict[str, Path]:
    """The files this stage reads: the exercises (required) and the textbooks (when checked and present)."""
    found = {"exercises": Path(config.exercises_file) if config.exercises_file else
             run_dir.input("synthesis", "exercises.jsonl")}
    if config.textbooks:
        tb = Path(config.textbooks_file) if config.textbooks_file else run_dir.path("synthesis", "textbooks.jsonl")
        if config.textbooks_file or tb.exists():
            found["textbooks"] = tb
    for name, path in found.items():
        check_file(path, f"the {name} file, a JSONL with `id` and `text` per line")
    return found


def read(paths: dict[str, Path]) -> tuple[list[dict], list[dict]]:
    exercises = _read_records(paths["exercises"], "an exercise")
    if not exercises:
        raise DataError(f"{paths['exercises']}: no exercises to check; run synthesis first (phi1 synth exercises)")
    books = _read_records(paths["textbooks"], "a textbook section") if "textbooks" in paths else []
    if "textbooks" in paths and not books:
        raise DataError(f"{paths['textbooks']}: no textbook sections to check; give a JSONL with `id` and `text` "
                        "per line, or --set textbooks=false to check the exercises only")
    return exercises, books


def measure_embedding(exercises: list[dict], problems: list[dict], config: DecontamConfig, out: Path,
                      progress: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {"embedder": config.embedder, "skipped": config.embedder is None}
    if config.embedder is not None:
        nn = embedding_neighbours(exercises, problems, config, progress=progress)
        write_jsonl(out / "embedding_nn.jsonl", nn)
        d = sorted(x["l2"] for x in nn)
        summary.update(min_l2=d[0], median_l2=d[len(d) // 2], flagged=sum(x["flagged"] for x in nn),
                       flag_l2=config.embed_flag_l2)
    return summary


def split_and_prune(exercises: list[dict], benches: dict[str, list[dict]], config: DecontamConfig, out: Path,
                    progress: bool) -> dict[str, Any]:
    """AST matches against each benchmark, the similar/non-similar split per tau, exercises pruned per tau."""
    matches, stats = ast_matches(exercises, benches["humaneval"], min(config.taus), progress=progress)
    write_jsonl(out / "ast_matches.jsonl", matches)
    split = split_table(matches, benches["humaneval"], exercises, config.taus)
    (out / "humaneval_split.json").write_text(json.dumps(split, indent=1), encoding="utf-8")
    extra = {}
    for name, probs in benches.items():
        if name != "humaneval":
            other, _ = ast_matches(exercises, probs, min(config.taus))
            path = out / f"{name}_split.json"
            path.write_text(json.dumps(split_table(other, probs, exercises, config.taus), indent=1), encoding="utf-8")
            extra[name] = str(path)
    best: dict[str, float] = {}
    for m in matches:
        best[m["record_id"]] = max(best.get(m["record_id"], 0.0), m["rate"])
    pruned = {}
    for tau in config.taus:
        path = out / f"exercises_pruned_tau{tau:g}.jsonl"
        write_jsonl(path, (r for r in exercises if best.get(r["id"], 0.0) < tau - 1e-9))
        pruned[f"{tau:g}"] = str(path)
    return {"split": split, "stats": stats, "extra": extra, "pruned": pruned}


# What synthesis.extractive marks its records with (a stage never imports another stage: the name is the contract).
STAND_IN_GENERATOR = "extractive-stand-in"


def stand_in_note(records: Sequence[dict]) -> str | None:
    """The result's `stand_in` when some checked records came from the offline stand-in, else None."""
    n = sum(r.get("generator") == STAND_IN_GENERATOR for r in records)
    if not n:
        return None
    return (f"checks {n} of {len(records)} records made by the extractive stand-in (library code, not LLM output): "
            "little or nothing to find is expected")


def run(config: DecontamConfig, run_dir: RunDir, *, ledger: budget.Ledger | None = None,
        prices: budget.PriceBook | None = None, force: bool = False, progress: bool = True) -> DecontamResult:
    """Measure overlap (n-gram, embedding, AST), split HumanEval, prune the exercises per tau; result.json last."""
    out = run_dir.stage(STAGE)
    paths = inputs_of(config, run_dir)
    inputs = {name: runs.identity(path) for name, path in paths.items()}
    if (done := load_stored(DecontamResult, out, config, root=run_dir.root, inputs=inputs, force=force)) is not None:
        return done
    est = estimate(config, prices)
    t = Timer()
    with t("read"):
        exercises, books = read(paths)
        benches = benchmark_problems(config)
    with t("ngram"):
        hits = ngram_overlap(exercises + books, benches["humaneval"], config.ngram)
        write_jsonl(out / "ngram_hits.jsonl", hits)
    with t("embedding"):
        emb = measure_embedding(exercises, benches["humaneval"], config, out, progress)
    with t("ast"):
        ast = split_and_prune(exercises, benches, config, out, progress)
    table = table3(ast["split"], len(exercises))
    table.to_csv(out / "table3.csv", index=False)
    usage = Usage(cpu_s=t.cpu_s, wall_s=t.wall_s)
    if ledger is not None:
        ledger.record(STAGE, usd=0.0, cpu_seconds=usage.cpu_s, estimate_usd=est.cost_usd, preset=config.preset)
    files = {"split": str(out / "humaneval_split.json"), "table3": str(out / "table3.csv"),
             "ngram_hits": str(out / "ngram_hits.jsonl"), "ast_matches": str(out / "ast_matches.jsonl"),
             **{f"pruned_tau{k}": v for k, v in ast["pruned"].items()}}
    metrics = {"records": len(exercises), "textbooks": len(books), "ngram_hits": len(hits),
               "similar": {r["tau"]: r["similar"] for r in table.to_dict(orient="records")}}
    return DecontamResult(
        **common_fields(config, out, run_dir, inputs, est), files=files, metrics=metrics, usage=usage,
        seconds=t.finish(), stand_in=stand_in_note(exercises + books), split_path=files["split"],
        pruned=ast["pruned"], table=table.to_dict(orient="records"),
        n_records=len(exercises), ngram_hits=len(hits), embedding=emb, ast_stats=ast["stats"],
        extra_splits=ast["extra"]).save()
