"""Optional vLLM engine for local-model generation (`EvalConfig.engine = "vllm"`): n=200 samples per problem
at paper scale in minutes instead of hours of HF `generate`.

vLLM is not a dependency (it needs a CUDA machine: `pip install vllm`); without it this path stops with one
line saying so. It loads the same saved folder (`save_pretrained` model + tokenizer) in bf16, sends every
missing (problem, completion_id) as one request with the problem's stop sequences, and writes the same
records as `completions.generate_local` (task_id, completion_id, completion, raw, n_tokens, prompt_tokens),
so scoring, resuming and the run report do not know which engine ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ConfigError, MissingDependency
from .completions import CODEX_STOP, sanitize

PROBLEMS_PER_CALL = 64  # problems per LLM.generate call: the unit of saving (a crash loses at most one call)


def load_vllm(model_dir: str | Path, *, seed: int = 0, dtype: str = "bfloat16", max_model_len: int | None = None,
              gpu_memory_utilization: float = 0.9):
    """A `vllm.LLM` over a saved model folder; MissingDependency with the install line when vLLM is absent."""
    try:
        import vllm
    except ImportError:
        raise MissingDependency("engine 'vllm' needs vLLM on a CUDA machine: pip install vllm (or use engine=hf, "
                                "batched transformers generate)") from None
    folder = Path(model_dir)
    if not (folder / "config.json").exists():
        raise ConfigError(f"{folder}: no config.json; engine 'vllm' loads a folder written by save_pretrained")
    kwargs = dict(model=str(folder), tokenizer=str(folder), dtype=dtype, seed=seed,
                  gpu_memory_utilization=gpu_memory_utilization)
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    return vllm.LLM(**kwargs), vllm.SamplingParams


def generate_vllm(problems: list[dict], model_dir: str | Path, *, n: int = 1, temperature: float = 0.0,
                  top_p: float = 0.95, max_new_tokens: int = 512, seed: int = 0, skip: set | None = None,
                  on_batch: Callable[[list[dict]], None] | None = None, engine=None) -> list[dict]:
    """The missing completions of every problem through vLLM (greedy at temperature 0, else sampled with
    a per-request seed), PROBLEMS_PER_CALL problems per call, each call's records passed to `on_batch`.
    `engine` = (LLM, SamplingParams) already loaded (else `load_vllm`)."""
    if temperature == 0 and n > 1:
        raise ConfigError(f"n={n} samples with temperature=0 would be identical; set temperature > 0 (paper: 0.8)")
    llm, params_cls = engine if engine is not None else load_vllm(model_dir, seed=seed)
    todo = [(p, i) for p in problems for i in range(n) if (p["task_id"], i) not in (skip or set())]
    out: list[dict] = []
    for start in range(0, len(todo), PROBLEMS_PER_CALL * n):
        chunk = todo[start:start + PROBLEMS_PER_CALL * n]
        stops = [list(p.get("stop") or CODEX_STOP) for p, _ in chunk]
        params = [params_cls(n=1, temperature=float(temperature), top_p=float(top_p) if temperature > 0 else 1.0,
                             max_tokens=max_new_tokens, stop=st, seed=seed * 1_000_003 + k + start)
                  for k, st in enumerate(stops)]
        results = llm.generate([p["prompt"] for p, _ in chunk], params, use_tqdm=False)
        recs = []
        for (p, i), st, res in zip(chunk, stops, results):
            gen = res.outputs[0]
            recs.append({"task_id": p["task_id"], "completion_id": i, "completion": sanitize(gen.text, st),
                         "raw": gen.text, "n_tokens": len(gen.token_ids),
                         "prompt_tokens": len(res.prompt_token_ids or ())})
        out.extend(recs)
        if on_batch:
            on_batch(recs)
    return out
