"""Packing as its own resumable step: sources streamed in shards of documents, each shard tokenised and
written atomically, the shards of a multi-process launch split over its ranks.

A source is read record by record, never whole. Each document gets a role from a seeded hash of its
index in the source: held out (for the eval loss), trained on, or skipped (beyond `max_chars`, which
costs one more streaming pass to count the training characters). Shard s holds documents
s*shard_docs ... (s+1)*shard_docs-1; its training and held-out blocks go to
`<folder>/shard-NNNNN.train.arrow` / `.heldout.arrow` (memory-mapped, never in RAM) and its
`shard-NNNNN.json` is written last, so a shard is either finished or redone: a crash loses at most the
shards in flight and a rerun reuses the rest. Under N processes, rank r packs the shards s with
s % N == r and then waits for the others' by watching the folder (not a collective, so no NCCL timeout
fires while rank 0 tokenises; `wait_s` bounds the wait and names what is missing, e.g. when the
folder is not on a filesystem every node shares). The folder is named by a key over the source's
identity, the split, the shard size, the tokenizer and the block size: a changed input is packed
afresh, never mixed with an old one. The shards do not depend on how many processes packed them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .. import runs
from ..errors import ConfigError, DataError
from ..jsonl import iter_numbered, iter_parquet_rows, parquet_columns
from ..paths import atomic_path, check_file
from .packing import TEXT_COLUMN, DataSource, PackedData, data_fingerprint, mix, pack, parse_source

_WARNED: set[str] = set()  # sources whose corrupt-line warnings were shown in this process
SHARD_DOCS = 20_000  # documents per shard: ~100 MB of code text, one shard's texts are the memory peak
DONE_FILE = "done.json"


@dataclass(frozen=True)
class Split:
    """Which documents of a source are held out, trained on or skipped (the same on every process)."""

    heldout_fraction: float = 0.05  # share of documents held out, in [0, 1)
    seed: int = 0
    max_chars: int | None = None  # per source: a seeded subset of about this many training characters

    def __post_init__(self):
        if not 0 <= self.heldout_fraction < 1:
            raise ConfigError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")


# ---- reading ---------------------------------------------------------------------------------------

def iter_texts(path: str | os.PathLike) -> Iterator[str]:
    """The non-empty `text` values of a .jsonl(.gz)/.json or .parquet file, streamed in file order."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: training data file not found; pass JSONL or Parquet files with a "
                        f"'{TEXT_COLUMN}' column (e.g. filtering/kept.parquet, synthesis/textbooks.jsonl)")
    check_file(path, "a training data file: JSONL or Parquet with a 'text' column")
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    found = 0
    if suffixes[-1:] == [".parquet"]:
        names = parquet_columns(path, what="training texts")
        if TEXT_COLUMN not in names:
            raise DataError(f"{path}: no '{TEXT_COLUMN}' column (columns: {names}); training needs one")
        rows = (row.get(TEXT_COLUMN) for row in iter_parquet_rows(path, what="training texts", columns=[TEXT_COLUMN]))
    elif suffixes[-1:] in ([".jsonl"], [".json"]) or suffixes == [".jsonl", ".gz"]:
        def rows():
            # A source is streamed more than once (tokenizer sample, cap, packing): its corrupt-line warning
            # is shown on the first pass only.
            seen = runs.identity(path) in _WARNED
            with warnings.catch_warnings():
                if seen:
                    warnings.simplefilter("ignore")
                for lineno, rec in iter_numbered(path):
                    if TEXT_COLUMN not in rec:
                        raise DataError(f"{path}:{lineno}: record has no '{TEXT_COLUMN}' field (fields: "
                                        f"{sorted(rec)}); every training record needs one")
                    yield rec[TEXT_COLUMN]
            _WARNED.add(runs.identity(path))
        rows = rows()
    else:
        raise DataError(f"{path}: unsupported training data format {''.join(path.suffixes) or '(no suffix)'}; "
                        "use .jsonl, .jsonl.gz or .parquet")
    for value in rows:
        if isinstance(value, str) and value.strip():
            found += 1
            yield value
    if not found:
        raise DataError(f"{path}: no non-empty '{TEXT_COLUMN}' values; nothing to train on")


def _uniforms(key: str, start: int, n: int):
    """n seeded uniforms in [0, 1) for document indices start..start+n-1 (splitmix64 of index ^ key)."""
    import numpy as np

    k = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    x = np.arange(start, start + n, dtype=np.uint64) ^ np.uint64(k)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class _Draw:
    """Per-document uniforms for one (seed, source, purpose), computed 4096 indices at a time."""

    def __init__(self, key: str):
        self.key, self.start, self.values = key, -1, None

    def __call__(self, i: int) -> float:
        block = i - i % 4096
        if block != self.start:
            self.start, self.values = block, _uniforms(self.key, block, 4096)
        return float(self.values[i - block])


HELD, TRAIN, SKIP = "heldout", "train", "skip"


def iter_roles(path: str | os.PathLike, index: int, split: Split) -> Iterator[tuple[int, str, str]]:
    """(document index, text, role) for every non-empty document of source number `index`."""
    import numpy as np

    held = _Draw(f"{split.seed}|{index}|heldout")
    keep, cut = _Draw(f"{split.seed}|{index}|cap"), 1.0
    if split.max_chars is not None:
        # The cap keeps documents in a seeded random order until it is reached (at least one): one streaming
        # pass collects each training document's draw and length (16 bytes a document), then a threshold.
        draws, lengths = [], []
        for i, text in enumerate(iter_texts(path)):
            if not (split.heldout_fraction and held(i) < split.heldout_fraction):
                draws.append(keep(i))
                lengths.append(len(text))
        if draws:
            order = np.argsort(np.asarray(draws), kind="stable")
            reach = np.cumsum(np.asarray(lengths)[order])
            last = min(int(np.searchsorted(reach, split.max_chars)), len(order) - 1)
            cut = float(np.asarray(draws)[order[last]])
    for i, text in enumerate(iter_texts(path)):
        if split.heldout_fraction and held(i) < split.heldout_fraction:
            yield i, text, HELD
        else:
            yield i, text, TRAIN if cut >= 1 or keep(i) <= cut else SKIP


def tokenizer_sample(sources: Sequence[str | os.PathLike | DataSource], split: Split, max_chars: int) -> list[str]:
    """Training documents for the BPE, round-robin over the sources' training documents until `max_chars`
    (BPE training time grows with text; a few MB already give stable merges for a 2k vocabulary)."""
    return round_robin([(t for _, t, role in iter_roles(parse_source(s).path, k, split) if role == TRAIN)
                        for k, s in enumerate(sources)], max_chars)


def round_robin(streams: Sequence[Iterator[str]], max_chars: int) -> list[str]:
    """One text from each stream in turn (a finished stream drops out) until about `max_chars` characters."""
    streams, out, total = list(streams), [], 0
    while total < max_chars and streams:
        for it in list(streams):
            text = next(it, None)
            if text is None:
                streams.remove(it)
            elif total < max_chars:
                out.append(text)
                total += len(text)
    return out


# ---- packing one source ----------------------------------------------------------------------------

def source_key(src: DataSource, index: int, tokenizer, block_size: int, split: Split, shard_docs: int) -> str:
    """The name of a source's packed folder: everything its blocks depend on (not the weight, which only mixes)."""
    doc = {"source": runs.identity(src.path), "index": index, "split": [split.heldout_fraction, split.seed,
           split.max_chars], "shard_docs": shard_docs, "tokens": data_fingerprint((), tokenizer, block_size)}
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def _shard_name(s: int) -> str:
    return f"shard-{s:05d}"


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")


def _pack_shard(folder: Path, s: int, train: list[str], held: list[str], tokenizer, block_size: int) -> None:
    t0 = time.perf_counter()
    stats = {"shard": s, "documents": len(train), "heldout_documents": len(held)}
    for role, texts in ((TRAIN, train), (HELD, held)):
        ds = pack(texts, tokenizer, block_size, path=folder / f"{_shard_name(s)}.{role}.arrow")
        stats[f"{role}_blocks"] = len(ds)
        stats[f"{role}_chars"] = sum(len(t) for t in texts)
    stats["seconds"] = time.perf_counter() - t0
    _write_json(folder / f"{_shard_name(s)}.json", stats)  # last: the shard is finished


def _wait_for(folder: Path, n_shards: int, wait_s: float, what: str) -> list[dict[str, Any]]:
    """Every shard's stats, waiting (by watching the folder) for shards other processes pack."""
    deadline = time.monotonic() + wait_s
    while True:
        missing = [s for s in range(n_shards) if not (folder / f"{_shard_name(s)}.json").exists()]
        if not missing:
            return [json.loads((folder / f"{_shard_name(s)}.json").read_text()) for s in range(n_shards)]
        if time.monotonic() > deadline:
            raise DataError(f"{what}: waited {wait_s:.0f} s for {len(missing)} shard(s) other processes pack "
                            f"({', '.join(_shard_name(s) for s in missing[:5])}{', ...' if len(missing) > 5 else ''} "
                            f"in {folder}); a process may have died, or the folder is not on a filesystem every node "
                            "shares. Rerun (finished shards are kept), run `phi1 pack` before launching, or raise "
                            "pack_wait_s")
        time.sleep(0.5)


@dataclass
class SourceBlocks:
    source: DataSource
    folder: Path
    shards: list[dict[str, Any]] = field(default_factory=list)

    def datasets(self, role: str) -> list[Any]:
        import datasets

        return [datasets.Dataset.from_file(str(self.folder / f"{_shard_name(st['shard'])}.{role}.arrow"))
                for st in self.shards if st[f"{role}_blocks"]]

    def total(self, name: str) -> int:
        return sum(st[name] for st in self.shards)


def pack_source(src: DataSource, index: int, tokenizer, block_size: int, split: Split, cache_dir: Path, *,
                rank: int = 0, world: int = 1, shard_docs: int = SHARD_DOCS, wait_s: float = 3600.0,
                on_shard: Callable[[int], None] | None = None) -> SourceBlocks:
    """Pack one source into `<cache_dir>/<source_key>/` (this process: the shards s % world == rank; then
    wait for the rest). A finished folder (done.json) is reused without reading the source again."""
    folder = Path(cache_dir) / source_key(src, index, tokenizer, block_size, split, shard_docs)
    done = folder / DONE_FILE
    if done.exists():
        return SourceBlocks(src, folder, json.loads(done.read_text())["shards"])
    folder.mkdir(parents=True, exist_ok=True)
    buf: dict[str, list[str]] = {TRAIN: [], HELD: []}
    current, n_docs = 0, 0

    def flush(s: int) -> None:
        if s % world == rank and not (folder / f"{_shard_name(s)}.json").exists():
            _pack_shard(folder, s, buf[TRAIN], buf[HELD], tokenizer, block_size)
            if on_shard is not None:
                on_shard(s)
        buf[TRAIN], buf[HELD] = [], []

    for i, text, role in iter_roles(src.path, index, split):
        s = i // shard_docs
        if s != current:
            flush(current)
            current = s
        n_docs = i + 1
        if role != SKIP and s % world == rank:
            buf[role].append(text)
    flush(current)
    n_shards = max(1, math.ceil(n_docs / shard_docs))
    shards = _wait_for(folder, n_shards, wait_s, f"packing {src.path}")
    if rank == 0 and not done.exists():
        _write_json(done, {"source": str(src.path), "documents": n_docs, "shards": shards})
    return SourceBlocks(src, folder, shards)


# ---- a mixture ---------------------------------------------------------------------------------------

def build_data(sources: Sequence[str | os.PathLike | DataSource], tokenizer, block_size: int, split: Split,
               cache_dir: str | os.PathLike, *, rank: int = 0, world: int = 1, shard_docs: int = SHARD_DOCS,
               wait_s: float = 3600.0, on_shard: Callable[[int], None] | None = None) -> PackedData:
    """Pack every source (streamed, sharded, resumable), mix the training blocks by weight, and gather the
    held-out blocks of all sources. Every process gets the same PackedData, memory-mapped from cache_dir."""
    import datasets

    if not sources:
        raise ConfigError("no training data: pass at least one --data file (JSONL or Parquet with a 'text' column)")
    if tokenizer.eos_token_id is None:
        raise ConfigError("tokenizer has no eos token; packing puts <|endoftext|> between documents")
    if block_size < 2:
        raise ConfigError(f"block_size must be >= 2 tokens, got {block_size}")
    parsed = [parse_source(s) for s in sources]
    packed = [pack_source(src, k, tokenizer, block_size, split, Path(cache_dir), rank=rank, world=world,
                          shard_docs=shard_docs, wait_s=wait_s, on_shard=on_shard) for k, src in enumerate(parsed)]
    train_blocks, held, per_source = [], [], []
    for sb in packed:
        parts = sb.datasets(TRAIN)
        if not parts:
            raise DataError(f"{sb.source.path}: {sb.total('documents')} training documents give fewer than "
                            f"{block_size} tokens per shard; add data or lower seq_len")
        train_blocks.append(datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0])
        held.extend(sb.datasets(HELD))
        per_source.append({"path": str(sb.source.path), "weight": sb.source.weight, "documents": sb.total("documents"),
                           "heldout_documents": sb.total("heldout_documents"), "blocks": len(train_blocks[-1]),
                           "shards": len(sb.shards), "folder": sb.folder.name})
    train = mix(train_blocks, [src.weight for src in parsed], split.seed)
    heldout = datasets.concatenate_datasets(held) if len(held) > 1 else (held[0] if held else None)
    if heldout is None and any(sb.total("heldout_documents") for sb in packed):
        heldout = _short_heldout(parsed, tokenizer, block_size, split)
    stats = {"sources": per_source, "train_blocks": len(train), "block_size": block_size,
             "train_tokens": len(train) * block_size, "heldout_blocks": 0 if heldout is None else len(heldout)}
    return PackedData(train, heldout, stats)


def _short_heldout(sources: Sequence[DataSource], tokenizer, block_size: int, split: Split):
    """Held-out text shorter than one block: keep it as one shorter block (else no eval loss at all)."""
    import datasets

    ids: list[int] = []
    for k, src in enumerate(sources):
        for _, text, role in iter_roles(src.path, k, split):
            if role == HELD and len(ids) < block_size:
                ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return datasets.Dataset.from_dict({"input_ids": [ids[:block_size]]}) if len(ids) > 1 else None
