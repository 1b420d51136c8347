"""Why greedy completions look the way they do: the model's next-token choice next to its training text's habits.

Greedy decoding takes the single likeliest token each time. A model that has learnt little beyond
how often each token follows another picks, after an indented new line, whatever its training text
most often puts there, and then does so again on the next line. `next_tokens` shows the choice the
model faces at one point of a prompt; `line_starts` counts what the training text itself starts its
indented lines with, so a reader can see whether the two agree.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable

from ..errors import DataError
from ..jsonl import iter_jsonl
from .completions import load_model

# The first token-like piece of a line: a run of word characters or a run of punctuation.
_FIRST = r"(\w+|[^\w\s]+)"


def next_tokens(model_dir: str | Path, text: str, k: int = 5, *, indent: int = 0, model=None) -> list[dict]:
    """The model's k likeliest next tokens after `text`, each with its probability: the first row is what greedy
    decoding writes next. With `indent` > 0, after `text` plus that many spaces, cut where the tokenizer would
    cut them in front of a word (a byte-level BPE often keeps the last space for the word's own token, " return"):
    the choice of how the indented line starts. `model`: an already loaded (model, tokenizer)."""
    import torch

    m, tok = model if model is not None else load_model(model_dir, "cpu")
    if not text:
        raise DataError("next_tokens: the text is empty; pass a prompt (e.g. a HumanEval prompt)")
    if indent:
        enc = tok(text + " " * indent + "x", add_special_tokens=False, return_offsets_mapping=True)
        word = len(text) + indent  # where the word after the indent begins; keep the tokens that end before it
        ids = [i for i, (_, end) in zip(enc["input_ids"], enc["offset_mapping"]) if end <= word]
    else:
        ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = m(torch.tensor([ids], device=m.device)).logits[0, -1].float().softmax(-1)
    top = probs.topk(min(k, probs.numel()))
    return [{"token": repr(tok.decode([int(i)])), "probability": round(float(p), 4)}
            for p, i in zip(top.values, top.indices)]


def line_starts(texts: Iterable[str], indent: int = 4, k: int = 5) -> list[dict]:
    """What lines indented by exactly `indent` spaces start with, over `texts`: the k commonest first pieces (a
    word or a run of punctuation, e.g. `return`, `if`, `\"\"\"`) with their share of all such lines."""
    pattern = re.compile(r"^ {%d}%s" % (indent, _FIRST), re.M)
    counts = Counter(m.group(1) for text in texts for m in pattern.finditer(text))
    total = sum(counts.values())
    if not total:
        raise DataError(f"line_starts: no line indented by exactly {indent} spaces in the texts given")
    return [{"line starts with": piece, "share of lines": round(n / total, 4), "lines": n}
            for piece, n in counts.most_common(k)]


def file_line_starts(path: str | Path, indent: int = 4, k: int = 5) -> list[dict]:
    """`line_starts` over the `text` field of a JSONL file (e.g. synthesis/exercises.jsonl, the finetuning data)."""
    return line_starts((r.get("text") or "" for r in iter_jsonl(path)), indent, k)
