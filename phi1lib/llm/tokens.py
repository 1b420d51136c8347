"""Prompt token counting for dry runs and budget reservations: tiktoken, a model's tokenizer, or a labelled estimate."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

# OpenAI's chat format adds a few tokens per message and for priming the reply (per the
# OpenAI cookbook's counting recipe); used for every tokenizer so estimates stay comparable.
PER_MESSAGE = 3
PER_REPLY = 3
APPROX_CHARS_PER_TOKEN = 4.0

_BPE_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
# The offline stand-ins (filtering's heuristic annotator, synthesis' extractive generator) are local functions with
# no tokenizer of their own: their requests are counted approximately, and nothing is ever downloaded for them.
STAND_IN_MODELS = ("heuristic", "heuristic-stand-in", "extractive")


def _offline() -> bool:
    return any(os.environ.get(v) == "1" for v in ("PHI1_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _tiktoken_cached(name: str) -> bool:
    """Whether tiktoken's BPE file is in its cache (same path rule as tiktoken.load)."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return (Path(cache) / hashlib.sha1(_BPE_URL.format(name).encode()).hexdigest()).exists()


def _encoding_name(model: str) -> str:
    import tiktoken

    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        # Unknown names (fine-tunes, new models): the newest families use o200k.
        return "o200k_base" if model.startswith(("gpt-4o", "o1", "o3", "o4", "gpt-4.1", "gpt-5")) else "cl100k_base"


class TokenCounter:
    """Counts request tokens with the best tokenizer available; `method` says which was used.

    Order: a given HF tokenizer (or folder) > tiktoken for the model name > 4 characters per
    token (approximate). tiktoken downloads its BPE file on first use; with `download=False`, or
    offline (PHI1_OFFLINE / HF_HUB_OFFLINE = 1, the default for `download=None`), it is used only if
    the file is already cached, and never crashes. An offline stand-in (STAND_IN_MODELS) is always
    counted approximately, without trying tiktoken.
    """

    def __init__(self, model: str | None = None, tokenizer=None, *, download: bool | None = None):
        self.model = model
        self.exact = False
        self._encode = None
        self.method = f"approximate ({APPROX_CHARS_PER_TOKEN:g} characters per token)"
        if tokenizer is not None:
            if isinstance(tokenizer, (str, os.PathLike)):
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
            tok = tokenizer
            self._encode = lambda text: len(tok.encode(text, add_special_tokens=False))
            self.method = f"model tokenizer ({type(tok).__name__}, {getattr(tok, 'name_or_path', '') or 'in memory'})"
            self.exact = True
        elif model in STAND_IN_MODELS:
            self.method += f"; {model} is an offline stand-in with no tokenizer of its own"
        elif model:
            self._try_tiktoken(model, (not _offline()) if download is None else download)

    def _try_tiktoken(self, model: str, download: bool) -> None:
        try:
            import tiktoken

            name = _encoding_name(model)
            if not download and not _tiktoken_cached(name):
                self.method += f"; tiktoken {name} BPE file not cached and downloads are off"
                return
            enc = tiktoken.get_encoding(name)
        except Exception as exc:  # no network, no package, unknown encoding: fall back, never crash
            self.method += f"; tiktoken unavailable ({type(exc).__name__})"
            return
        self._encode = lambda text: len(enc.encode(text, disallowed_special=()))
        self.method = f"tiktoken {name}"
        self.exact = True

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        if self._encode is not None:
            return self._encode(text)
        return max(1, round(len(text) / APPROX_CHARS_PER_TOKEN))

    def count_request(self, request) -> int:
        """Prompt tokens of a Request (chat messages with their per-message overhead, or a raw prompt)."""
        if request.messages is None:
            return self.count_text(request.prompt or "")
        total = PER_REPLY
        for m in request.messages:
            total += PER_MESSAGE + self.count_text(str(m.get("content") or "")) + self.count_text(str(m.get("role") or ""))
        return total

    def upper_bound(self, request) -> int:
        """Prompt tokens no tokenizer can exceed: exact counts as they are, else UTF-8 bytes.

        Byte-level BPE never makes more tokens than bytes, so reserving this much budget is
        always enough even when only the approximate count is available.
        """
        if self.exact:
            return self.count_request(request)
        if request.messages is None:
            return len((request.prompt or "").encode("utf-8"))
        return PER_REPLY + sum(
            PER_MESSAGE + len(str(m.get("content") or "").encode()) + len(str(m.get("role") or "").encode())
            for m in request.messages
        )
