"""Decontamination of synthetic exercises against HumanEval (and MBPP when given): paper §5.

Three measures: 13-gram overlap (word tokens), embedding distance (L2 between unit-normalized
embeddings; MiniLM offline, CodeGen-350M-mono on GPU presets), and the AST match rate with
normalized identifiers (`ast_match`: a sequence-edit approximation of the paper's tree edit
distance). Pruning at each tau removes every exercise whose best AST match with a benchmark
problem reaches tau; a problem is "similar" at tau when some exercise reaches it. Output:
humaneval_split.json (read by evaluation), exercises pruned per tau, the Table 3 shaped summary,
the raw hits of each measure, and result.json last.

The measures run as datatrove pipelines (`blocks.measure`): the exercises through the n-gram, AST (HumanEval, and
MBPP when given) and embedding blocks, the textbooks through the n-gram block, split into `tasks` contiguous shards
and run by the `executor` (local here: `workers` tasks at once, 1 = in this process; slurm or ray with a shared
`work_dir`). The rows are collected in record order, so the files are the same for any number of tasks (the
embedding distances up to float32 rounding when the shards are embedded in other batches than one task would).
No step holds the records: the inputs are checked line by line (only their ids kept, to refuse a repeat), then
streamed into the shards, the estimate's embedding plan and the pruned files; the verdicts are collected keeping
only the records with a hit. The functions below (`ngram_overlap`, `embedding_neighbours`, `ast_matches`) are the
in-process reference the blocks are tested against.

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
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from .. import budget, paper, runs
from ..dataflow import EXECUTORS, check_available
from ..embed import MINILM_LOCAL, Embedder
from ..errors import DataError
from ..jsonl import iter_numbered, write_jsonl
from ..paths import check_file
from ..presets import Preset, get_preset
from ..problems import N_PROBLEMS, load_humaneval
from ..runs import RunDir
from ..stage import StageConfig, StageResult, Timer, Usage, common_fields, load_stored, plan_defaults
from .ast_match import ast_sequence, match_all
from .blocks import EMBED_BATCH, RecordFile, l2_distances, measure, ngrams, shard_bounds

STAGE = "decontam"
TAUS = paper.DECONTAM_TAUS


@dataclass
class DecontamConfig(StageConfig):
    """What the decontamination stage compares and how; `DecontamConfig.for_preset(name, **overrides)`."""

    STAGE: ClassVar[str] = STAGE
    # planned_records only prices the plan; the datatrove settings only split the same per-record work over
    # processes and machines (the outputs are the same for any executor, tasks and workers), so none forces a redo
    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("planned_records", "device", "executor", "tasks", "workers",
                                                    "work_dir", "cluster")

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
    device: str = "cpu"  # where each task embeds: cpu | cuda (task rank -> cuda:rank % GPUs) | cuda:N | auto
    executor: str = "local"  # datatrove executor running the measures: local | slurm | ray
    tasks: int = 1  # datatrove tasks the exercises (and textbooks) are split over, as contiguous shards
    workers: int = 1  # local executor: tasks at once (1: in this process, no process start-up)
    work_dir: str | None = None  # folder for datatrove's files (one every slurm/ray node shares); None = temporary
    cluster: dict = field(default_factory=dict)  # slurm/ray executor settings (partition, time, ...); in code only

    def validate(self) -> None:
        self.need(bool(self.taus) and all(0.0 < t <= 1.0 for t in self.taus), "taus", "match rates in (0, 1]")
        self.need(list(self.taus) == sorted(self.taus, reverse=True), "taus", "thresholds from highest to lowest")
        self.need_ints("ngram", "embed_max_length")
        self.need_ints("planned_records", minimum=0)
        self.need(self.embed_flag_l2 > 0, "embed_flag_l2", "a distance > 0")
        self.need(self.device in ("cpu", "cuda", "auto") or re.fullmatch(r"cuda:\d+", self.device) is not None,
                  "device", "cpu, cuda (each task on cuda:rank % GPUs), cuda:N or auto (cuda when present)")
        self.need(self.executor in EXECUTORS, "executor", f"one of {', '.join(EXECUTORS)}")
        self.need_ints("tasks", "workers")
        self.need(self.executor == "local" or bool(self.work_dir), "work_dir",
                  f"a folder every {self.executor} node can read and write (executor={self.executor}); a temporary "
                  "folder is only for executor=local")
        self.need(self.executor != "local" or not self.cluster, "cluster",
                  "no settings with executor=local (they are for slurm or ray)")

    @classmethod
    def _from_preset(cls, p: Preset) -> dict[str, Any]:
        # Offline, 128 tokens (signature + docstring + the start of the body) keeps CPU time low.
        gpu = {} if p.hardware.gpu == "cpu" else dict(device="cuda", tasks=p.hardware.n_gpus, workers=p.hardware.n_gpus)
        return dict(preset=p.name, embedder=p.embedder, embed_max_length=128 if p.offline else 256,
                    planned_records=p.data.n_exercises, **gpu)  # GPU presets: one task per GPU embeds there


def budget_lines(config: DecontamConfig, counted: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """CPU work only, no API spend: AST matching of every exercise against every benchmark problem, and embedding
    the exercises and the problems (on CPU: the embedder runs there), at the rates in costs/throughput.toml.
    `counted` (a run's `count_work`, once the inputs are read) replaces the planned exercise count with the real
    one and the planned texts with what the embedder will run: texts not in its cache, their padded tokens."""
    tp = budget.load_throughput()
    n = counted["records"] if counted else config.planned_records
    problems = N_PROBLEMS["humaneval"] + (N_PROBLEMS["mbpp"] if config.mbpp_path else 0)
    ast_s = n * problems / tp.ast_pairs_per_s
    side_by_side = config.tasks if config.executor != "local" else min(config.tasks, config.workers)
    lines = [dict(stage=STAGE, item="decontam-ast", kind="cpu", cpu_hours=ast_s / 3600, workers=side_by_side,
                  note=f"{n:,} exercises{'' if counted else ' (planned)'} x {problems} problems at "
                       f"{tp.ast_pairs_per_s:,.0f} AST pairs/s, {tp.source()}")]
    hardware = get_preset(config.preset).hardware
    if config.embedder and config.device != "cpu" and hardware.gpu != "cpu":
        lines.append(_gpu_embed_line(config, n + problems, hardware, side_by_side))
    elif config.embedder:
        spec = None if config.embedder == MINILM_LOCAL else _embedder_spec(config.embedder)
        if counted:
            texts, tokens = counted["embed_texts"], counted["embed_tokens"]
            what = (f"{texts:,} texts not in the embedding cache, {tokens:,} padded tokens (of {n + problems:,} "
                    "texts)")
        else:
            texts, tokens = n + problems, None
            what = f"{texts:,} texts x {config.embed_max_length} tokens (planned)"
        embed_s = budget.cpu_embed_seconds(tp, texts, config.embed_max_length, spec, tokens=tokens)
        scaled = "" if spec is None else ", scaled by its forward FLOPs per token against minilm-local's"
        lines.append(dict(stage=STAGE, item="decontam-embed", kind="cpu", cpu_hours=embed_s / 3600,
                          note=f"{what} through {config.embedder} on CPU at {tp.embed_tokens_per_s:,.0f} tokens/s"
                               f"{scaled}, plus {tp.embed_load_s:.1f} s to load it when anything is left to "
                               f"embed, {tp.source()}"))
    return lines


def _gpu_embed_line(config: DecontamConfig, texts: int, hardware, side_by_side: int) -> dict[str, Any]:
    """Embedding on the preset's GPUs, one task per GPU, in fp32 (as embed.py runs it): forward FLOPs of the
    embedder's body over texts x max_length tokens, at the stated fp32 utilisation."""
    spec = _embedder_spec(config.embedder)
    n_gpus = max(1, min(side_by_side, hardware.n_gpus))
    mfu = budget.fp32_embed_mfu(hardware.gpu)
    tokens = float(texts * config.embed_max_length)
    line = dict(stage=STAGE, item="decontam-embed", kind="compute", tokens=tokens, seq_len=config.embed_max_length,
                n_gpus=n_gpus, **({"mfu": mfu} if mfu else {}),
                note=f"{texts:,} texts x {config.embed_max_length} tokens through {config.embedder} on {n_gpus} "
                     f"{hardware.gpu}(s), one task each, in fp32" + (f" (MFU {mfu:.3f} of the bf16 peak)" if mfu else ""))
    if spec is not None:
        line.update(model=config.embedder, params=float(budget.body_params(spec)))
    else:
        line["flops"] = budget.embed_flops_per_token(budget.EXTRA_MODELS[MINILM_LOCAL], config.embed_max_length) * tokens
    return line


def count_work(config: DecontamConfig, exercises: RecordFile, problems: list[dict]) -> dict[str, Any]:
    """What this run will do, counted before it does it: the exercises, and the texts (and padded tokens) the
    embedder will run once its cache has answered the rest (`Embedder.plan_calls`), batch by batch as the embedding
    tasks will: each task's contiguous shard in batches of EMBED_BATCH records, then the problems as one list. The
    exercises are streamed from their file, one batch held at a time. (A text repeated in a later batch is counted
    again, where the run finds it cached: synthesis has removed exact copies by then.)"""
    counted: dict[str, Any] = {"records": len(exercises), "embed_texts": 0, "embed_tokens": 0}
    if not (config.embedder and len(exercises)):
        return counted
    ends = {end for _, end in shard_bounds(len(exercises), config.tasks)}

    def calls():  # the embedding tasks' calls, in order: each shard in batches, then the problems as one list
        batch: list[str] = []
        for i, record in enumerate(exercises, 1):
            batch.append(record["text"])
            if len(batch) == EMBED_BATCH or i in ends:
                yield batch
                batch = []
        if batch:
            yield batch
        yield [x["text"] for x in problems]

    emb = Embedder(config.embedder, max_length=config.embed_max_length, progress=False)
    counted["embed_texts"], counted["embed_tokens"] = emb.plan_calls(calls())
    return counted


def _embedder_spec(model: str):
    """The embedder's shape for the estimate (the budget's table of known embedders), else minilm-local's."""
    return budget.EXTRA_MODELS.get(model)


def estimate(config: DecontamConfig, prices: budget.PriceBook | None = None,
             counted: dict[str, Any] | None = None) -> budget.StageEstimate:
    return budget.price_lines(STAGE, budget_lines(config, counted), plan_defaults(get_preset(config.preset).hardware),
                              prices)


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

def ngram_overlap(records: Sequence[dict], problems: Sequence[dict], n: int = 13) -> list[dict]:
    """Every (task, record) pair sharing a word n-gram, with the count and one example n-gram (the first in sorted
    order: the same in every process, whatever the string hash seed)."""
    index: dict[tuple, list[int]] = {}
    for j, p in enumerate(problems):
        for g in sorted(ngrams(p["text"], n)):
            index.setdefault(g, []).append(j)
    hits: dict[tuple[int, int], list] = {}
    for i, r in enumerate(records):
        for g in sorted(ngrams(r["text"], n)):
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
    d = l2_distances(p, r)  # (problems x records)
    nn = d.argmin(axis=1)
    return [{"task_id": problems[j]["task_id"], "record_id": records[int(nn[j])]["id"],
             "l2": float(d[j, nn[j]]), "flagged": bool(d[j, nn[j]] < config.embed_flag_l2)}
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


def split_table(matches: Sequence[dict], problems: Sequence[dict], n_records: int,
                taus: Sequence[float]) -> dict[str, dict]:
    """Per tau: similar / non-similar task ids and how many of the `n_records` records pruning removes and keeps
    (paper Table 3). Every match names a record of those n_records (ids are unique)."""
    best_task: dict[str, float] = {}
    best_rec: dict[str, float] = {}
    for m in matches:
        best_task[m["task_id"]] = max(best_task.get(m["task_id"], 0.0), m["rate"])
        best_rec[m["record_id"]] = max(best_rec.get(m["record_id"], 0.0), m["rate"])
    out = {}
    for tau in taus:
        sim = [p["task_id"] for p in problems if best_task.get(p["task_id"], 0.0) >= tau - 1e-9]
        simset = set(sim)
        removed = sum(1 for rate in best_rec.values() if rate >= tau - 1e-9)
        out[f"{tau:g}"] = {"similar": sim, "non_similar": [p["task_id"] for p in problems if p["task_id"] not in simset],
                           "removed": removed, "kept": n_records - removed}
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


def _check_records(path: Path, what: str) -> tuple[RecordFile, int]:
    """The file checked line by line, never held whole: (the records as a stream with their count, how many the
    offline stand-in made). Only the ids are kept, to refuse a repeated one."""
    n, stand_in, seen = 0, 0, set()
    for i, r in iter_numbered(path, strict=True):
        rid = r.get("id")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool) or not isinstance(r.get("text"), str):
            raise DataError(f"{path}:{i}: needs an `id` (string or integer) and a string `text` field ({what}); "
                            f"has {', '.join(f'{k}: {type(v).__name__}' for k, v in list(r.items())[:6])}")
        if rid in seen:
            raise DataError(f"{path}:{i}: id {rid!r} appears more than once; record ids must be unique")
        seen.add(rid)
        n += 1
        stand_in += r.get("generator") == STAND_IN_GENERATOR
    return RecordFile(Path(path), n), stand_in


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


def read(paths: dict[str, Path]) -> tuple[RecordFile, RecordFile | None, int]:
    """The exercises and the textbooks (None when not checked) as checked streams, and how many records of both
    the offline stand-in made."""
    exercises, stand_in = _check_records(paths["exercises"], "an exercise")
    if not len(exercises):
        raise DataError(f"{paths['exercises']}: no exercises to check; run synthesis first (phi1 synth exercises)")
    books = None
    if "textbooks" in paths:
        books, more = _check_records(paths["textbooks"], "a textbook section")
        stand_in += more
        if not len(books):
            raise DataError(f"{paths['textbooks']}: no textbook sections to check; give a JSONL with `id` and `text` "
                            "per line, or --set textbooks=false to check the exercises only")
    return exercises, books, stand_in


def write_embedding(nn: list[dict], config: DecontamConfig, out: Path) -> dict[str, Any]:
    """embedding_nn.jsonl (each problem's nearest exercise) and its summary."""
    summary: dict[str, Any] = {"embedder": config.embedder, "skipped": config.embedder is None}
    if config.embedder is not None:
        write_jsonl(out / "embedding_nn.jsonl", nn)
        d = sorted(x["l2"] for x in nn)
        summary.update(min_l2=d[0], median_l2=d[len(d) // 2], flagged=sum(x["flagged"] for x in nn),
                       flag_l2=config.embed_flag_l2)
    return summary


def split_and_prune(exercises: RecordFile, benches: dict[str, list[dict]], rows: dict[str, Any],
                    config: DecontamConfig, out: Path) -> dict[str, Any]:
    """From the AST matches against each benchmark (`rows`: blocks.measure's): the similar/non-similar split per
    tau, exercises pruned per tau (each file written from a stream over the exercises)."""
    matches = rows["ast"]
    write_jsonl(out / "ast_matches.jsonl", matches)
    split = split_table(matches, benches["humaneval"], len(exercises), config.taus)
    (out / "humaneval_split.json").write_text(json.dumps(split, indent=1), encoding="utf-8")
    extra = {}
    for name, probs in benches.items():
        if name != "humaneval":
            other = rows["others"][name]
            path = out / f"{name}_split.json"
            split_other = split_table(other, probs, len(exercises), config.taus)
            path.write_text(json.dumps(split_other, indent=1), encoding="utf-8")
            extra[name] = str(path)
    best: dict[str, float] = {}
    for m in matches:
        best[m["record_id"]] = max(best.get(m["record_id"], 0.0), m["rate"])
    pruned = {}
    for tau in config.taus:
        path = out / f"exercises_pruned_tau{tau:g}.jsonl"
        write_jsonl(path, (r for r in exercises if best.get(r["id"], 0.0) < tau - 1e-9))
        pruned[f"{tau:g}"] = str(path)
    return {"split": split, "stats": ast_block_stats(rows["blocks"]["exercises"]), "extra": extra, "pruned": pruned}


def ast_block_stats(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """ast_matches' statistics (candidate pruning counts, seconds, unparsable records) from the first AST block's
    stats (HumanEval's), its seconds summed over the tasks."""
    block = next(b for b in blocks if b["name"] == "AST match")
    keys = ("pairs_total", "after_length", "after_bag", "edit_distances", "unparsable_records")
    return {**{k: int(block["counters"].get(k, 0)) for k in keys}, "seconds": block["seconds"]}


def block_seconds(blocks: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Seconds per measure summed over the tasks (and over exercises and textbooks): ngram, ast, embedding."""
    names = {"n-gram overlap": "ngram", "AST match": "ast", "embedding distance": "embedding"}
    out: dict[str, float] = {}
    for part in blocks.values():
        for b in part:
            if b["name"] in names:
                out[names[b["name"]]] = out.get(names[b["name"]], 0.0) + b["seconds"]
    return out


# What synthesis.extractive marks its records with (a stage never imports another stage: the name is the contract).
STAND_IN_GENERATOR = "extractive-stand-in"


def stand_in_note(stand_in: int, total: int) -> str | None:
    """The result's `stand_in` when `stand_in` of the `total` checked records came from the offline stand-in."""
    if not stand_in:
        return None
    return (f"checks {stand_in} of {total} records made by the extractive stand-in (library code, not LLM output): "
            "little or nothing to find is expected")


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished child processes (the local executor's workers)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(config: DecontamConfig, run_dir: RunDir, *, ledger: budget.Ledger | None = None,
        prices: budget.PriceBook | None = None, force: bool = False, progress: bool = True) -> DecontamResult:
    """Measure overlap (n-gram, embedding, AST) through the datatrove blocks, split HumanEval, prune the exercises
    per tau; result.json last. A task that fails raises (nothing marked finished; a rerun redoes the unfinished
    tasks). `progress` is accepted for the stage contract; the tasks log to datatrove's log instead of bars."""
    out = run_dir.stage(STAGE)
    paths = inputs_of(config, run_dir)
    inputs = {name: runs.identity(path) for name, path in paths.items()}
    if (done := load_stored(DecontamResult, out, config, root=run_dir.root, inputs=inputs, force=force)) is not None:
        return done
    if config.executor != "local":
        check_available(config.executor)  # before any work: MissingDependency naming what to install
    t, children0 = Timer(), _children_cpu_s()
    with t("read"):
        exercises, books, stand_in = read(paths)
        benches = benchmark_problems(config)
        # Priced from what will run: the real exercises, and what the embedder's cache leaves to embed.
        est = estimate(config, prices, count_work(config, exercises, benches["humaneval"]))
    with t("measure"):  # the datatrove pipelines: every block over every shard
        rows = measure(exercises, books, benches, config.work_dir, ngram=config.ngram, tau_min=min(config.taus),
                       embedder=config.embedder, max_length=config.embed_max_length, flag_l2=config.embed_flag_l2,
                       device=config.device, executor=config.executor, tasks=config.tasks, workers=config.workers,
                       cluster=config.cluster)
    with t("write"):
        hits = rows["ngram"]
        write_jsonl(out / "ngram_hits.jsonl", hits)
        emb = write_embedding(rows["embedding"], config, out)
        ast = split_and_prune(exercises, benches, rows, config, out)
    table = table3(ast["split"], len(exercises))
    n_books = len(books) if books is not None else 0
    table.to_csv(out / "table3.csv", index=False)
    usage = Usage(cpu_s=t.cpu_s + _children_cpu_s() - children0, wall_s=t.wall_s)  # with the worker processes'
    if ledger is not None:
        ledger.record(STAGE, usd=0.0, cpu_seconds=usage.cpu_s, estimate_usd=est.cost_usd, preset=config.preset)
    files = {"split": str(out / "humaneval_split.json"), "table3": str(out / "table3.csv"),
             "ngram_hits": str(out / "ngram_hits.jsonl"), "ast_matches": str(out / "ast_matches.jsonl"),
             **{f"pruned_tau{k}": v for k, v in ast["pruned"].items()}}
    metrics = {"records": len(exercises), "textbooks": n_books, "ngram_hits": len(hits),
               "similar": {r["tau"]: r["similar"] for r in table.to_dict(orient="records")},
               "dataflow": {"executor": config.executor, "tasks": config.tasks, "workers": config.workers,
                            "block_seconds": block_seconds(rows["blocks"]), "peak_rss_mb": rows["peak_rss_mb"],
                            "note": "block_seconds: each measure's seconds summed over the datatrove tasks; "
                                    "peak_rss_mb: each task's process peak RSS (with workers=1 the tasks run in the "
                                    "stage's own process)"}}
    return DecontamResult(
        **common_fields(config, out, run_dir, inputs, est), files=files, metrics=metrics, usage=usage,
        seconds=t.finish(), stand_in=stand_in_note(stand_in, len(exercises) + n_books), split_path=files["split"],
        pruned=ast["pruned"], table=table.to_dict(orient="records"),
        n_records=len(exercises), ngram_hits=len(hits), embedding=emb, ast_stats=ast["stats"],
        extra_splits=ast["extra"]).save()
