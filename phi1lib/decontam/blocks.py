"""Decontamination per shard, as datatrove blocks: the three measures of `stage` (word n-gram overlap, embedding
distance, AST match rate) applied to each task's share of the records, against the benchmark problems.

    side = BenchmarkSide.build(problems, work / "benchmark", ngram=13, embedder="minilm-local")  # once
    pipeline = decontam_pipeline(records_folder, work, side.folder, tau_min=0.8, embedder="minilm-local")
    make_executor("local", pipeline, tasks=4, workers=2, logging_dir=...).run()
    verdicts = collect(work, side.folder, flag_l2=0.35)   # the same rows as stage's in-process functions

`measure` does all of it for the stage: records written as contiguous shards (one per task), a benchmark side per
benchmark, the exercises through every block, the textbooks through the n-gram block only, the executor run to
completion, the verdicts collected in record order.

The benchmark side (its n-gram index, AST sequences and embeddings) is computed once by `BenchmarkSide.build`
and written to a folder that every task reads, never writes. Each record leaves its task with its verdicts in
its metadata (`ngram_hits`, `ast_matches`, `embed_nearest`); the embedding block also writes, per task, each
problem's nearest record in that shard, so the global nearest record of a problem is the best of the shards'
(`collect`). The embedder runs on the task's own device (`resolve_device`; the block's default "auto": local
rank -> cuda:rank % GPUs when CUDA is present, else the CPU; the stage passes its config's `device`, cpu unless
set); it embeds through its disk cache (what `stage.count_work` plans with), so a rerun embeds nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from datatrove.pipeline.base import PipelineStep

from ..dataflow import PeakMemory, make_executor, read_peaks, run_to_completion, task_device
from ..dataflow.dedup import quiet_logs
from ..embed import Embedder
from ..jsonl import iter_numbered
from .ast_match import ASTIndex, ast_sequence

SIDE_FILE = "benchmark.pkl"
EMB_FILE = "problem_embeddings.npy"
AST_KEY = "ast_matches"
EMBED_BATCH = 256  # records an embedding task embeds at once (EmbedNearest's batch; stage.count_work plans with it)
_WORD = re.compile(r"\w+")


def ngrams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    """The lower-cased word n-grams of `text`."""
    toks = _WORD.findall(text.lower())
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def resolve_device(device: str, rank: int = 0) -> str:
    """The torch device of task `rank`: "auto" = cuda:rank % GPUs when torch sees CUDA, else cpu; "cuda" =
    cuda:rank % GPUs; "cpu" or "cuda:N" as given."""
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return task_device(device, rank)


@dataclass
class BenchmarkSide:
    """What every task compares its records with: task ids, the n-gram index, AST sequences (and embeddings)."""

    folder: Path
    task_ids: list[str]
    ngram: int
    ngram_index: dict[tuple[str, ...], list[int]]
    ast_refs: list[list[str] | None]
    embedder: str | None

    @classmethod
    def build(cls, problems: Sequence[dict], folder: str | Path, *, ngram: int = 13, embedder: str | None = None,
              max_length: int = 256, device: str = "cpu") -> "BenchmarkSide":
        """Compute the benchmark side once (problems: [{task_id, text}]) and write it to `folder`. The problems
        are embedded through the embedder's disk cache."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index: dict[tuple[str, ...], list[int]] = {}
        for j, p in enumerate(problems):
            for g in sorted(ngrams(p["text"], ngram)):
                index.setdefault(g, []).append(j)
        side = cls(folder, [p["task_id"] for p in problems], ngram, index, [ast_sequence(p["text"]) for p in problems],
                   embedder)
        if embedder is not None:
            emb = Embedder(embedder, max_length=max_length, device=device, progress=False)
            np.save(folder / EMB_FILE, _unit(emb.embed([p["text"] for p in problems], desc="embed problems")))
        with open(folder / SIDE_FILE, "wb") as fh:
            pickle.dump({k: v for k, v in side.__dict__.items() if k != "folder"}, fh)
        return side

    @classmethod
    def load(cls, folder: str | Path) -> "BenchmarkSide":
        with open(Path(folder) / SIDE_FILE, "rb") as fh:
            return cls(folder=Path(folder), **pickle.load(fh))

    def embeddings(self) -> np.ndarray:
        return np.load(self.folder / EMB_FILE, mmap_mode="r")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def l2_distances(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(problems x records) L2 distances between unit vectors (||a - b||^2 = 2 - 2 a.b), as float32. The products
    are summed in float64: a float32 matrix product rounds differently with its shape, so the last digit of a
    distance would depend on which other records share the task's batch; rounded from float64 it does not."""
    d2 = 2.0 - 2.0 * (np.asarray(p, dtype=np.float64) @ np.asarray(r, dtype=np.float64).T)
    return np.sqrt(np.clip(d2, 0.0, None)).astype(np.float32)


class NgramOverlap(PipelineStep):
    """metadata["ngram_hits"]: every problem sharing a word n-gram with the record (count, one example)."""

    name = "n-gram overlap"
    type = "🔍 - DECONTAM"

    def __init__(self, benchmark_dir: str):
        super().__init__()
        self.benchmark_dir = benchmark_dir

    def run(self, data, rank: int = 0, world_size: int = 1):
        side = BenchmarkSide.load(self.benchmark_dir)
        for doc in data:
            with self.track_time():
                hits: dict[int, list[tuple[str, ...]]] = {}
                for g in sorted(ngrams(doc.text, side.ngram)):
                    for j in side.ngram_index.get(g, ()):
                        hits.setdefault(j, []).append(g)
                doc.metadata["ngram_hits"] = [{"task_id": side.task_ids[j], "shared": len(gs),
                                               "example": " ".join(gs[0])} for j, gs in sorted(hits.items())]
            self.stat_update("with_ngram_hits" if hits else "no_ngram_hits")
            yield doc


class AstMatch(PipelineStep):
    """metadata[key]: every problem whose AST match rate with the record reaches `tau_min`; the index's pruning
    counts (pairs_total, after_length, after_bag, edit_distances) and unparsable records go to the task's stats."""

    name = "AST match"
    type = "🔍 - DECONTAM"

    def __init__(self, benchmark_dir: str, tau_min: float, key: str = AST_KEY):
        super().__init__()
        self.benchmark_dir, self.tau_min, self.key = benchmark_dir, tau_min, key

    def run(self, data, rank: int = 0, world_size: int = 1):
        side = BenchmarkSide.load(self.benchmark_dir)
        index = ASTIndex(side.ast_refs)
        for doc in data:
            with self.track_time():
                seq = ast_sequence(doc.text)
                doc.metadata[self.key] = [{"task_id": side.task_ids[r], "rate": rate}
                                          for r, rate in index.query(seq, self.tau_min)]
            self.stat_update("with_ast_matches" if doc.metadata[self.key] else "no_ast_matches")
            if seq is None:
                self.stat_update("unparsable_records")
            yield doc
        for name, value in index.stats.items():
            if value:
                self.stat_update(name, value=value, unit="task")


class EmbedNearest(PipelineStep):
    """Embeds the shard's records in batches on the task's device (through the embedder's disk cache);
    metadata["embed_nearest"] = the record's nearest problem {task_id, l2}; `<output_folder>/nn_<rank>.json`: each
    problem's nearest record in this shard (the first one on a tie)."""

    name = "embedding distance"
    type = "🔍 - DECONTAM"

    def __init__(self, benchmark_dir: str, output_folder: str, embedder: str, max_length: int = 256,
                 device: str = "auto", batch: int = EMBED_BATCH):
        super().__init__()
        self.benchmark_dir, self.output_folder = benchmark_dir, output_folder
        self.embedder, self.max_length, self.device, self.batch = embedder, max_length, device, batch

    def run(self, data, rank: int = 0, world_size: int = 1):
        side = BenchmarkSide.load(self.benchmark_dir)
        p = np.asarray(side.embeddings())
        emb = Embedder(self.embedder, max_length=self.max_length, progress=False,
                       device=resolve_device(self.device, rank))
        best: list[tuple[float, Any]] = [(np.inf, None)] * len(side.task_ids)
        buf: list = []

        def flush():
            d = l2_distances(p, _unit(emb.embed([d.text for d in buf], desc="embed records")))
            for k, doc in enumerate(buf):
                j = int(d[:, k].argmin())
                doc.metadata["embed_nearest"] = {"task_id": side.task_ids[j], "l2": float(d[j, k])}
            nn = d.argmin(axis=1)  # the first of equals, as across batches and tasks
            for j in range(len(best)):
                l2 = float(d[j, nn[j]])
                if l2 < best[j][0]:
                    best[j] = (l2, buf[int(nn[j])].id)

        for doc in data:
            buf.append(doc)
            if len(buf) == self.batch:
                with self.track_time():
                    flush()
                yield from buf
                buf = []
        if buf:
            with self.track_time():
                flush()
            yield from buf
        self.stat_update("embedded_by_model", value=emb.texts_embedded_, unit="task")
        Path(self.output_folder).mkdir(parents=True, exist_ok=True)
        (Path(self.output_folder) / f"nn_{rank:05d}.json").write_text(
            json.dumps([{"task_id": t, "record_id": rid, "l2": l2} for t, (l2, rid) in zip(side.task_ids, best)
                        if rid is not None]))


def decontam_pipeline(records_folder: str | Path, work: str | Path, benchmark_dir: str | Path, *,
                      tau_min: float | None, embedder: str | None = None, max_length: int = 256,
                      device: str = "auto", others: dict[str, str | Path] | None = None) -> list:
    """reader -> n-gram overlap -> (AST match; per other benchmark side too: metadata "ast_matches_<name>") ->
    (embedding distance) -> writer of the records with their verdicts -> peak memory (`<work>/memory`, MB per
    task). tau_min None: the n-gram block only."""
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    work, bench = Path(work), str(benchmark_dir)
    blocks: list[Any] = [JsonlReader(str(records_folder), glob_pattern="*.jsonl*"), NgramOverlap(bench)]
    if tau_min is not None:
        blocks.append(AstMatch(bench, tau_min))
        blocks += [AstMatch(str(d), tau_min, key=f"{AST_KEY}_{name}") for name, d in (others or {}).items()]
    if embedder is not None:
        blocks.append(EmbedNearest(bench, str(work / "nearest"), embedder, max_length, device))
    return blocks + [JsonlWriter(str(work / "verdicts"), compression=None), PeakMemory(str(work / "memory"))]


def _verdicts(works: Sequence[Path]) -> Iterator[tuple[int, dict]]:
    """(position, {id, metadata}) of every record the tasks wrote with an n-gram or AST verdict, in record order:
    metadata "pos" when the shards carry it, else the reading order (files in task order). The files are read line
    by line and only those records are kept, without their text: memory grows with the hits, not the records."""
    docs, k = [], 0
    for work in works:
        for f in sorted((work / "verdicts").glob("*.jsonl")):
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    doc = json.loads(line)
                    meta = doc.get("metadata", {})
                    if any(v for key, v in meta.items() if key == "ngram_hits" or key.startswith(AST_KEY)):
                        docs.append((meta.get("pos", k), k, {"id": doc["id"], "metadata": meta}))
                    k += 1
    docs.sort(key=lambda x: (x[0], x[1]))
    return ((pos, doc) for pos, _, doc in docs)


def collect(work: str | Path | Sequence[str | Path], benchmark_dir: str | Path, flag_l2: float | None = None,
            others: Sequence[str] = ()) -> dict[str, Any]:
    """The tasks' verdicts (of one work folder, or several: e.g. exercises and textbooks) as the rows of `stage`'s
    in-process functions, in their order: "ngram" (ngram_overlap: by problem, then record), "ast" (ast_matches'
    rows: by record), "embedding" (embedding_neighbours: per problem its nearest record of all shards), and
    "others": {name: AST rows against the side of that name}."""
    works = [Path(work)] if isinstance(work, (str, Path)) else [Path(w) for w in work]
    side = BenchmarkSide.load(benchmark_dir)
    order = {t: j for j, t in enumerate(side.task_ids)}
    ngram, ast_rows, other_rows = [], [], {name: [] for name in others}
    for pos, doc in _verdicts(works):
        meta = doc.get("metadata", {})
        ngram += [(order[h["task_id"]], pos, {"task_id": h["task_id"], "record_id": doc["id"], "kind": meta.get("kind"),
                                              "shared": h["shared"], "example": h["example"]})
                  for h in meta.get("ngram_hits", [])]
        ast_rows += [{"task_id": m["task_id"], "record_id": doc["id"], "rate": m["rate"]}
                     for m in meta.get(AST_KEY, [])]
        for name in others:
            other_rows[name] += [{"task_id": m["task_id"], "record_id": doc["id"], "rate": m["rate"]}
                                 for m in meta.get(f"{AST_KEY}_{name}", [])]
    ngram.sort(key=lambda x: x[:2])
    nearest: dict[Any, dict] = {}
    for work in works:
        for f in sorted((work / "nearest").glob("nn_*.json")):  # task order: the first record wins a tie
            for row in json.loads(f.read_text()):
                if row["task_id"] not in nearest or row["l2"] < nearest[row["task_id"]]["l2"]:
                    nearest[row["task_id"]] = row
    embedding = [{**nearest[t], "flagged": bool(flag_l2 is not None and nearest[t]["l2"] < flag_l2)}
                 for t in side.task_ids if t in nearest]
    return {"ngram": [row for _, _, row in ngram], "ast": ast_rows, "embedding": embedding, "others": other_rows}


def block_stats(logging_dir: str | Path) -> list[dict[str, Any]]:
    """Each block's name (without datatrove's type prefix), seconds (summed over the tasks) and counters (totals),
    from the tasks' stats files."""
    merged: list[dict[str, Any]] = []
    for f in sorted(Path(logging_dir, "stats").glob("*.json")):
        for i, block in enumerate(json.loads(f.read_text())):
            if i == len(merged):
                merged.append({"name": block["name"].split(": ", 1)[-1], "seconds": 0.0, "counters": {}})
            t = block.get("time_stats") or 0
            merged[i]["seconds"] += t["total"] if isinstance(t, dict) else t
            for k, v in (block.get("stats") or {}).items():
                merged[i]["counters"][k] = merged[i]["counters"].get(k, 0) + (v["total"] if isinstance(v, dict) else v)
    return merged


def measure(exercises: RecordFile | Sequence[dict], books: RecordFile | Sequence[dict] | None,
            benches: dict[str, Sequence[dict]],
            work_dir: str | Path | None, *, ngram: int, tau_min: float, embedder: str | None, max_length: int,
            flag_l2: float, device: str = "cpu", executor: str = "local", tasks: int = 1, workers: int = 1,
            cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stage's three measures through the blocks: `collect`'s rows, plus "blocks" (each pipeline's block
    seconds and counters) and "peak_rss_mb" (each pipeline's peak RSS per task, MB). The exercises go through every
    block (AST against each benchmark in `benches`, embedding against "humaneval"), the textbooks (None: none)
    through the n-gram block only. Records come as `RecordFile`s (streamed: read to hash them for the work folder's
    name and once to write the shards, never held) or lists; each is split into at most `tasks` contiguous shards, `workers` tasks at once locally (1: in this process), each task embedding on
    `resolve_device(device, rank)` (the problems on rank 0's). `work_dir`: where datatrove's files go, under a
    folder named by the records and settings (a rerun skips finished tasks; a cluster needs a folder its nodes
    share); None = a temporary folder, removed afterwards."""
    books = books if books is not None else []
    key = _work_key(exercises, books, benches, ngram, tau_min, embedder, max_length, tasks)
    with _work_folder(work_dir, key) as work, quiet_logs(work / "datatrove.log"):
        sides = {name: BenchmarkSide.build(probs, work / "benchmark" / name, ngram=ngram, max_length=max_length,
                                           embedder=embedder if name == "humaneval" else None,
                                           device="cpu" if embedder is None else resolve_device(device)).folder
                 for name, probs in benches.items()}
        others = {name: d for name, d in sides.items() if name != "humaneval"}
        parts = [("exercises", exercises, 0, dict(tau_min=tau_min, embedder=embedder, others=others, device=device))]
        if books:
            parts.append(("textbooks", books, len(exercises), dict(tau_min=None)))
        stats, peaks = {}, {}
        for part, records, offset, blocks in parts:
            n = _write_shards(records, len(records), work / part / "input", tasks, offset)
            pipeline = decontam_pipeline(work / part / "input", work / part, sides["humaneval"], max_length=max_length,
                                         **blocks)
            run_to_completion(make_executor(executor, pipeline, tasks=n, workers=min(n, workers),
                                            logging_dir=str(work / part / "logs"), **(cluster or {})),
                              what=f"decontam ({part})")
            stats[part] = block_stats(work / part / "logs")
            peaks[part] = [round(mb, 1) for mb in read_peaks(work / part / "memory")]
        rows = collect([work / part for part, *_ in parts], sides["humaneval"], flag_l2, others=list(others))
    return {**rows, "blocks": stats, "peak_rss_mb": peaks}


@dataclass(frozen=True)
class RecordFile:
    """A JSONL file of records read as a stream, never held whole, and how many records it has (counted when the
    stage checked it). Iterating it reads the file again; `len` is the count."""

    path: Path
    count: int

    def __iter__(self) -> Iterator[dict]:
        for _, record in iter_numbered(self.path, strict=True):
            yield record

    def __len__(self) -> int:
        return self.count


def shard_bounds(n: int, tasks: int) -> list[tuple[int, int]]:
    """[start, end) of each contiguous shard when n records are split over at most `tasks` tasks (the last ones
    may be short or empty): the split `_write_shards` writes and `stage.count_work` plans with."""
    k = max(1, min(tasks, n))
    size = -(-n // k)
    return [(s * size, min(n, (s + 1) * size)) for s in range(k)]


def _write_shards(records: Iterable[dict], count: int, folder: Path, tasks: int, offset: int) -> int:
    """`count` records (read once, as a stream) as contiguous runs in at most `tasks` JSONL files ({id, text, kind,
    pos}), file k read by task k; returns the number of files (= tasks to run)."""
    folder.mkdir(parents=True, exist_ok=True)
    stream = iter(records)
    bounds = shard_bounds(count, tasks)
    for k, (start, end) in enumerate(bounds):
        with open(folder / f"part{k:05d}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(start, end):
                r = next(stream)
                row = {"id": r["id"], "text": r["text"], "kind": r.get("kind"), "pos": offset + i}
                fh.write(json.dumps(row) + "\n")
    return len(bounds)


def _work_key(exercises, books, benches, *settings) -> str:
    """A name for the work folder from everything the tasks' outputs depend on."""
    h = hashlib.sha1(repr(settings).encode())
    for records in (exercises, books, *benches.values()):
        h.update(b"\x00")
        for r in records:
            h.update(json.dumps([r.get("id", r.get("task_id")), r.get("kind"), r["text"]]).encode())
    h.update(repr(sorted(benches)).encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _work_folder(work_dir: str | Path | None, key: str) -> Iterator[Path]:
    if work_dir is not None:
        folder = Path(work_dir) / f"decontam-{key}"
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    tmp = tempfile.mkdtemp(prefix="phi1-decontam-")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
