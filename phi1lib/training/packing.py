"""Training data: documents joined by <|endoftext|> -> fixed-length blocks; a mixture of sources.

As in phi-1 (paper §2.3) every document is followed by the end-of-text token and the stream is
cut into `block_size`-token slices (next-token loss on all of them). `pack` does that for a list of
texts (in memory, or written chunk by chunk to an Arrow file that is memory-mapped back). Several
sources form a mixture (`mix`): a source's `weight` is how many times its blocks appear per pass
(2 = twice, 0.5 = a seeded random half). Reading sources as streams, the held-out split, shards
and the multi-process split live in `shards` (packing as its own resumable step, `phi1 pack`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, DataError
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


def humaneval_eval_set(tokenizer, max_len: int, n_problems: int | None = None) -> list[dict[str, Any]]:
    """HumanEval prompt + canonical solution as (input_ids, labels, n_bytes), labels -100 on the prompt.

    The two are tokenized as one text, as they stand in a file; the labelled tokens are those that
    reach into the solution, then <|endoftext|>. The loss over `labels` is the loss on the solution:
    how well the model predicts a correct body given the signature and docstring. `n_bytes` is the
    UTF-8 size of the text the labelled tokens spell, so summed nats / ln 2 / n_bytes is bits per
    byte, a yardstick that does not depend on the tokenizer. Sequences are cut to `max_len` tokens.
    """
    problems = load_humaneval()[: n_problems or None]
    eot = tokenizer.eos_token_id
    out = []
    for p in problems:
        text = p["prompt"] + p["canonical_solution"]
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, spans = enc["input_ids"], enc["offset_mapping"]
        first = next((i for i, (_, end) in enumerate(spans) if end > len(p["prompt"])), len(ids))
        ids = (ids + [eot])[:max_len]
        labels = ([-100] * first + ids[first:])[:max_len]
        scored = [i for i in range(max(first, 1), min(len(spans), len(ids)))]  # text tokens with a label
        n_bytes = len(text[spans[scored[0]][0]:spans[scored[-1]][1]].encode("utf-8")) if scored else 0
        if any(x != -100 for x in labels[1:]):
            out.append({"task_id": p["task_id"], "input_ids": ids, "labels": labels, "n_bytes": n_bytes})
    return out
