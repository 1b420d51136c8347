"""A local `transformers` causal LM as an LLM provider: batched generation with stop strings, priced at $0."""

from __future__ import annotations

import os
from collections import defaultdict

from ..errors import ConfigError, MissingDependency
from .providers import Completion, ProviderError
from .tokens import TokenCounter


def _cut_at_stop(text: str, stops) -> tuple[str, bool]:
    """Text up to the earliest stop string (the stop itself excluded, as the OpenAI API does)."""
    cut = len(text)
    for s in stops or ():
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut], cut < len(text)


class TransformersProvider:
    """Any causal LM by hub id or local folder, run in this process.

    Requests with the same sampling parameters and stop strings are generated together in
    batches of `batch_size` (left-padded). Chat messages use the tokenizer's chat template
    when it has one, else plain "role: content" lines. Sampling is seeded (`seed`) per batch.
    """

    kind = "transformers"
    price_model = None  # runs locally: no API charge

    def __init__(self, model_path: str | os.PathLike, *, batch_size: int = 8, device: str | None = None,
                 dtype: str | None = None, tokenizer_path: str | os.PathLike | None = None, seed: int = 0,
                 name: str | None = None, trust_remote_code: bool = False):
        if int(batch_size) < 1:
            raise ConfigError(f"TransformersProvider: batch_size must be >= 1, got {batch_size!r}")
        self.model_path = str(model_path)
        self.tokenizer_path = str(tokenizer_path or model_path)
        self.batch_size = int(batch_size)
        self.device = device
        self.dtype = dtype
        self.seed = int(seed)
        self.model = name or self.model_path
        self.trust_remote_code = trust_remote_code
        self._tok = None
        self._lm = None

    @property
    def cache_id(self) -> str:
        return f"transformers:{self.model}"

    def __repr__(self) -> str:
        return f"TransformersProvider({self.model_path!r}, batch_size={self.batch_size})"

    def redact(self, text: str) -> str:
        return text

    # -- loading ---------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tok is None:
            try:
                from transformers import AutoTokenizer
            except ImportError as exc:  # pragma: no cover - core dependency
                raise MissingDependency("the local provider needs transformers: pip install transformers") from exc
            try:
                tok = AutoTokenizer.from_pretrained(self.tokenizer_path, trust_remote_code=self.trust_remote_code)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"TransformersProvider: cannot load a tokenizer from {self.tokenizer_path!r} ({exc}); "
                                  "pass a folder holding tokenizer files or a hub id reachable from here") from None
            tok.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
            self._tok = tok
        return self._tok

    def _load(self):
        if self._lm is None:
            import torch
            from transformers import AutoModelForCausalLM

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            kwargs = {"trust_remote_code": self.trust_remote_code}
            if self.dtype:
                kwargs["dtype"] = getattr(torch, self.dtype)
            try:
                lm = AutoModelForCausalLM.from_pretrained(self.model_path, **kwargs)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"TransformersProvider: cannot load a causal LM from {self.model_path!r} ({exc}); "
                                  "pass a folder written by save_pretrained or a hub id reachable from here") from None
            self._lm = lm.to(device).eval()
            self.device = device
        return self._lm

    def token_counter(self):
        return TokenCounter(tokenizer=self.tokenizer)

    # -- generation ------------------------------------------------------------------------
    def prompt_text(self, request) -> str:
        if request.messages is None:
            return request.prompt
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        return "".join(f"{m['role']}: {m['content']}\n" for m in request.messages) + "assistant:"

    def call(self, request) -> Completion:
        out = self.call_batch([request])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def call_batch(self, requests) -> list[Completion | ProviderError]:
        """One Completion (or ProviderError) per request, in order."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[(r.max_tokens, float(r.temperature), float(r.top_p), r.stop)].append(i)
        out: list = [None] * len(requests)
        for (max_tokens, temperature, top_p, stop), idx in groups.items():
            for start in range(0, len(idx), self.batch_size):
                part = idx[start : start + self.batch_size]
                try:
                    done = self._generate([requests[i] for i in part], max_tokens, temperature, top_p, stop)
                except Exception as exc:  # a failed batch fails its requests, not the run
                    done = [ProviderError(f"local generation failed: {type(exc).__name__}: {exc}")] * len(part)
                for i, c in zip(part, done):
                    out[i] = c
        return out

    def _generate(self, reqs, max_tokens, temperature, top_p, stop) -> list[Completion]:
        import torch

        lm, tok = self._load(), self.tokenizer
        texts = [self.prompt_text(r) for r in reqs]
        enc = tok(texts, return_tensors="pt", padding=True).to(self.device)
        kwargs = dict(max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            # Lets generate() stop a row early; the text is still cut below, since a batch
            # keeps running until every row is done.
            kwargs.update(stop_strings=list(stop), tokenizer=tok)
        torch.manual_seed(self.seed)
        with torch.no_grad():
            gen = lm.generate(**enc, **kwargs)
        new = gen[:, enc["input_ids"].shape[1]:]
        results = []
        for row, mask in zip(new, enc["attention_mask"]):
            ids = row.tolist()
            hit_eos = False
            if tok.eos_token_id is not None and tok.eos_token_id in ids and tok.eos_token_id != tok.pad_token_id:
                ids = ids[: ids.index(tok.eos_token_id)]
                hit_eos = True
            elif tok.pad_token_id is not None and tok.pad_token_id in ids:
                ids = ids[: ids.index(tok.pad_token_id)]  # pad == eos: rows that finished early
                hit_eos = True
            text, hit_stop = _cut_at_stop(tok.decode(ids, skip_special_tokens=True), stop)
            n_out = len(tok.encode(text, add_special_tokens=False)) if hit_stop else len(ids)
            reason = "stop" if (hit_stop or hit_eos) else "length"
            results.append(Completion(text, int(mask.sum()), n_out, reason))
        return results
