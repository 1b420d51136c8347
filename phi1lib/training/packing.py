"""Training data: text files -> held-out split -> documents joined by <|endoftext|> -> fixed-length blocks.

As in phi-1 (paper §2.3) every document is followed by the end-of-text token and the stream is
cut into `block_size`-token slices (next-token loss on all of them), with `datasets` doing the
tokenising and grouping. Several sources form a mixture: a source's `weight` is how many times
its blocks appear per pass (2 = twice, 0.5 = a seeded random half). Held-out documents are taken
from each source *before* packing, so no held-out text leaks into a training block. Training
packs to `<run>/data/<fingerprint>.arrow` files that are memory-mapped, not held in RAM: packing
needs about one chunk of memory, a resumed run re-uses them, and the processes of a multi-GPU
run share one copy. (The source texts themselves are still read into memory.)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, DataError
from ..jsonl import iter_jsonl
from ..problems import load_humaneval

TEXT_COLUMN = "text"


@dataclass(frozen=True)
class DataSource:
    path: Path  # JSONL or Parquet file with a `text` column
    weight: float = 1.0  # passes over this source's blocks per epoch of the mixture

    def __post_init__(self):
        if not (self.weight >= 0 and math.isfinite(self.weight)):
            raise ConfigError(f"data weight for {self.path} must be a finite number >= 0, got {self.weight}")


def parse_source(spec: str | os.PathLike | DataSource) -> DataSource:
    """'path' or 'path:weight'. A non-numeric text after the last ':' is part of the path when it looks
    like one (has a '.' or a '/', e.g. 'C:data.jsonl') or the whole string names a file; otherwise it
    was meant as a weight and is an error (so 'f.jsonl:abc' is not reported as a missing file)."""
    if isinstance(spec, DataSource):
        return spec
    text = str(spec)
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            weight = None
        if weight is not None:
            return DataSource(Path(head), weight)
        if not any(c in tail for c in "./" + os.sep) and not Path(text).exists():
            raise ConfigError(f"{text}: the weight {tail!r} after ':' is not a number; "
                              f"write FILE or FILE:WEIGHT, e.g. {head}:2")
    return DataSource(Path(text))


def read_texts(path: str | os.PathLike) -> list[str]:
    """The non-empty `text` values of a .jsonl/.json or .parquet file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: training data file not found; pass JSONL or Parquet files with a "
                        f"'{TEXT_COLUMN}' column (e.g. filtering/kept.parquet, synthesis/textbooks.jsonl)")
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        if TEXT_COLUMN not in names:
            raise DataError(f"{path}: no '{TEXT_COLUMN}' column (columns: {names}); training needs one")
        values = pq.read_table(path, columns=[TEXT_COLUMN]).column(TEXT_COLUMN).to_pylist()
    elif suffix in (".jsonl", ".json"):
        values = []
        for i, rec in enumerate(iter_jsonl(path), 1):
            if TEXT_COLUMN not in rec:
                raise DataError(f"{path}: record {i} has no '{TEXT_COLUMN}' field (fields: {sorted(rec)}); "
                                "every training record needs one")
            values.append(rec[TEXT_COLUMN])
    else:
        raise DataError(f"{path}: unsupported training data format {suffix or '(no suffix)'}; use .jsonl or .parquet")
    texts = [v for v in values if isinstance(v, str) and v.strip()]
    if not texts:
        raise DataError(f"{path}: no non-empty '{TEXT_COLUMN}' values; nothing to train on")
    return texts


@dataclass
class SourceTexts:
    source: DataSource
    train: list[str]
    heldout: list[str]


def load_sources(sources: Sequence[str | os.PathLike | DataSource], heldout_fraction: float = 0.05,
                 seed: int = 0, max_chars: int | None = None) -> list[SourceTexts]:
    """Read each source and hold out a seeded `heldout_fraction` of its documents.

    `max_chars` caps each source's training text to a seeded random subset of documents (in
    file order) of about that many characters, so a short run does not tokenise a corpus it
    will never reach; None keeps everything.
    """
    import numpy as np

    if not sources:
        raise ConfigError("no training data: pass at least one --data file (JSONL or Parquet with a 'text' column)")
    if not 0 <= heldout_fraction < 1:
        raise ConfigError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    out = []
    for k, src in enumerate(parse_source(s) for s in sources):
        texts = read_texts(src.path)
        order = np.random.default_rng([seed, k]).permutation(len(texts))
        n_held = math.ceil(len(texts) * heldout_fraction) if heldout_fraction > 0 and len(texts) > 1 else 0
        held = set(order[:n_held].tolist())
        keep = set(range(len(texts))) - held
        if max_chars is not None:
            keep, total = set(), 0
            for i in order[n_held:].tolist():
                if total >= max_chars:
                    break
                keep.add(i)
                total += len(texts[i])
        out.append(SourceTexts(src, [t for i, t in enumerate(texts) if i in keep],
                               [t for i, t in enumerate(texts) if i in held]))
    return out


def _chunks(texts: Sequence[str], chunk_docs: int, chunk_chars: int):
    """Consecutive slices of `texts` of at most chunk_docs documents / about chunk_chars characters."""
    start, chars = 0, 0
    for i, t in enumerate(texts):
        chars += len(t)
        if i + 1 - start >= chunk_docs or chars >= chunk_chars:
            yield texts[start:i + 1]
            start, chars = i + 1, 0
    if start < len(texts):
        yield texts[start:]


def _block_arrays(texts: Sequence[str], tokenizer, block_size: int, chunk_docs: int, chunk_chars: int):
    """Flat int32 arrays, each a whole number of blocks: documents + <|endoftext|>, tokenised a
    chunk at a time (the fast tokenizer's batched Rust path; a chunk's Python token lists are the
    memory peak, hence the character bound), the remainder of one chunk carried into the next, so
    only the final tail shorter than a block is dropped."""
    import numpy as np

    eot = tokenizer.eos_token_id
    carry = np.zeros(0, dtype=np.int32)
    for chunk in _chunks(texts, chunk_docs, chunk_chars):
        ids = tokenizer(list(chunk), add_special_tokens=False, return_attention_mask=False)["input_ids"]
        parts = [carry]
        for x in ids:
            parts.append(np.asarray(x, dtype=np.int32))
            parts.append(np.asarray([eot], dtype=np.int32))
        stream = np.concatenate(parts)
        n = len(stream) // block_size * block_size
        if n:
            yield stream[:n]
        carry = stream[n:]


def data_fingerprint(texts: Sequence[str], tokenizer, block_size: int) -> str:
    """What a packed file depends on: every text, the whole tokenizer (vocabulary and merges)
    and the block size. Reusing a file needs all three to match."""
    import hashlib

    h = hashlib.sha1(f"{block_size}|{tokenizer.eos_token_id}|".encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:20]


def pack(texts: Sequence[str], tokenizer, block_size: int, *, chunk_docs: int = 4096,
         chunk_chars: int = 4_000_000, path: str | os.PathLike | None = None):
    """A `datasets.Dataset` of `input_ids` blocks of exactly `block_size` tokens.

    Each document gets <|endoftext|> appended; documents are concatenated and sliced into one
    Arrow fixed-size-list column. With `path` the blocks are written there chunk by chunk and
    memory-mapped back (peak memory ~one chunk, not the corpus; every training process on the
    machine shares the pages); an existing file at `path` is reused as it is, so name it by
    `data_fingerprint`.
    """
    import datasets
    import numpy as np
    import pyarrow as pa

    if tokenizer.eos_token_id is None:
        raise ConfigError("tokenizer has no eos token; packing puts <|endoftext|> between documents")
    if block_size < 2:
        raise ConfigError(f"block_size must be >= 2 tokens, got {block_size}")
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"), length=block_size)})

    def table(flat):
        return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.int32()), block_size)})

    if path is None:
        chunks = list(_block_arrays(texts, tokenizer, block_size, chunk_docs, chunk_chars))
        flat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
        return datasets.Dataset(table(flat), info=datasets.DatasetInfo(features=features))
    from datasets.arrow_writer import ArrowWriter

    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        writer = ArrowWriter(features=features, path=str(tmp))
        try:
            for flat in _block_arrays(texts, tokenizer, block_size, chunk_docs, chunk_chars):
                writer.write_table(table(flat))
            writer.finalize()
        finally:
            writer.close()
        os.replace(tmp, path)  # whole or absent: a killed run never leaves a half file under the name
    return datasets.Dataset.from_file(str(path))


def mix(blocks: Sequence[Any], weights: Sequence[float], seed: int = 0):
    """Concatenate per-source block datasets, each repeated/subsampled by its weight."""
    import datasets
    import numpy as np

    parts = []
    for k, (ds, w) in enumerate(zip(blocks, weights)):
        n = len(ds)
        whole, frac = int(w), w - int(w)
        idx = list(range(n)) * whole
        if frac > 0 and n:
            rng = np.random.default_rng([seed, 1000 + k])
            idx += sorted(rng.choice(n, size=int(round(frac * n)), replace=False).tolist())
        if idx:
            parts.append(ds.select(idx))
    if not parts:
        raise DataError("the data mixture is empty: every source has weight 0 or fewer tokens than one block")
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


@dataclass
class PackedData:
    train: Any  # datasets.Dataset with input_ids blocks
    heldout: Any  # datasets.Dataset (may have 0 rows)
    stats: dict[str, Any] = field(default_factory=dict)


def build_data(loaded: Sequence[SourceTexts], tokenizer, block_size: int, seed: int = 0,
               cache_dir: str | os.PathLike | None = None) -> PackedData:
    """Pack each source, mix the training blocks by weight, pack held-out text the same way.
    With `cache_dir` each source's blocks go to `<cache_dir>/<fingerprint>.arrow` (memory-mapped,
    reused by a resumed run or by the other processes of a multi-GPU run)."""

    def where(texts):
        return None if cache_dir is None else Path(cache_dir) / f"{data_fingerprint(texts, tokenizer, block_size)}.arrow"

    train_blocks, held_texts, per_source = [], [], []
    for st in loaded:
        ds = pack(st.train, tokenizer, block_size, path=where(st.train))
        if len(ds) == 0:
            raise DataError(f"{st.source.path}: {len(st.train)} documents give fewer than {block_size} tokens; "
                            "add data or lower seq_len")
        train_blocks.append(ds)
        held_texts.extend(st.heldout)
        per_source.append({"path": str(st.source.path), "weight": st.source.weight, "documents": len(st.train),
                           "heldout_documents": len(st.heldout), "blocks": len(ds)})
    train = mix(train_blocks, [st.source.weight for st in loaded], seed)
    heldout = pack(held_texts, tokenizer, block_size, path=where(held_texts)) if held_texts else None
    if heldout is not None and len(heldout) == 0:  # short held-out text: keep one shorter block
        ids = [t for x in tokenizer(held_texts, add_special_tokens=False)["input_ids"] for t in x + [tokenizer.eos_token_id]]
        import datasets

        heldout = datasets.Dataset.from_dict({"input_ids": [ids[:block_size]]}) if len(ids) > 1 else None
    stats = {"sources": per_source, "train_blocks": len(train), "block_size": block_size,
             "train_tokens": len(train) * block_size,
             "heldout_blocks": 0 if heldout is None else len(heldout)}
    return PackedData(train, heldout, stats)


def tokenizer_sample(loaded: Sequence[SourceTexts], max_chars: int) -> list[str]:
    """Training documents for the BPE, round-robin over sources until `max_chars` (BPE training
    time grows with text; a few MB already give stable merges for a 2k vocabulary)."""
    out, total = [], 0
    queues = [list(st.train) for st in loaded]
    while total < max_chars and any(queues):
        for q in queues:
            if q and total < max_chars:
                out.append(q.pop(0))
                total += len(out[-1])
    return out


def humaneval_eval_set(tokenizer, max_len: int, n_problems: int | None = None) -> list[dict[str, list[int]]]:
    """HumanEval prompt + canonical solution as (input_ids, labels), labels -100 on the prompt.

    The loss over `labels` is the loss on solution tokens only: how well the model predicts a
    correct body given the signature and docstring. Sequences are cut to `max_len` tokens.
    """
    problems = load_humaneval()[: n_problems or None]
    out = []
    for p in problems:
        prompt = tokenizer(p["prompt"], add_special_tokens=False)["input_ids"]
        sol = tokenizer(p["canonical_solution"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + sol)[:max_len]
        labels = ([-100] * len(prompt) + sol)[:max_len]
        if any(x != -100 for x in labels[1:]):
            out.append({"task_id": p["task_id"], "input_ids": ids, "labels": labels})
    return out
