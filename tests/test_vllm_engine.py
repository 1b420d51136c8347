"""The optional vLLM engine: a clear stop without vLLM; with an engine that answers like vLLM's API (a stand-in
built on the same transformers model, since vLLM needs CUDA), the same records as the HF path, resumable, and
the evaluation stage runs it when engine=vllm."""

from __future__ import annotations

import sys
import types

import pytest

from phi1lib.errors import ConfigError, MissingDependency
from phi1lib.evaluation import EvalConfig
from phi1lib.evaluation.completions import generate_local, load_model
from phi1lib.evaluation.vllm_engine import generate_vllm, load_vllm
from phi1lib.problems import load_humaneval


def fake_vllm(model_dir):
    """vLLM's LLM/SamplingParams surface over a transformers model (greedy only): text up to the first stop
    string, excluded, as vLLM returns it; token ids of the generated text; the prompt's token ids."""
    model, tok = load_model(model_dir, "cpu")

    class SamplingParams:
        def __init__(self, n, temperature, top_p, max_tokens, stop, seed):
            assert n == 1 and temperature == 0.0
            self.max_tokens, self.stop = max_tokens, stop

    class LLM:
        calls = 0

        def generate(self, prompts, params, use_tqdm=True):
            LLM.calls += 1
            outs = []
            for prompt, sp in zip(prompts, params):
                rec = generate_local([{"task_id": "x", "prompt": prompt, "stop": sp.stop}], None,
                                     max_new_tokens=sp.max_tokens, model=(model, tok), progress=False)[0]
                text = rec["raw"]
                cut = min([text.index(s) for s in sp.stop if s in text], default=len(text))
                out = types.SimpleNamespace(text=text[:cut], token_ids=[0] * rec["n_tokens"])
                outs.append(types.SimpleNamespace(outputs=[out], prompt_token_ids=tok(prompt)["input_ids"]))
            return outs

    return LLM(), SamplingParams


def test_without_vllm_the_engine_says_how_to_get_it(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    with pytest.raises(MissingDependency, match="pip install vllm"):
        load_vllm(tiny_model)
    with pytest.raises(ConfigError, match="engine"):
        EvalConfig.for_preset("tiny", engine="tensorrt")
    with pytest.raises(ConfigError, match="engine"):
        EvalConfig.for_preset("tiny", engine="vllm", model="openai:gpt-4o")


def test_vllm_records_equal_the_hf_path_and_resume(tiny_model):
    problems = load_humaneval()[:5]
    hf = generate_local(problems, tiny_model, max_new_tokens=24, progress=False, device="cpu")
    engine = fake_vllm(tiny_model)
    saved = []
    got = generate_vllm(problems, tiny_model, max_new_tokens=24, engine=engine, on_batch=saved.extend)
    assert saved == got
    for a, b in zip(hf, got):
        assert (a["task_id"], a["completion_id"], a["completion"]) == (b["task_id"], b["completion_id"], b["completion"])
        assert b["n_tokens"] <= 24 and b["prompt_tokens"] > 0
    done = {(r["task_id"], r["completion_id"]) for r in got[:3]}
    rest = generate_vllm(problems, tiny_model, max_new_tokens=24, engine=engine, skip=done)
    assert [r["task_id"] for r in rest] == [p["task_id"] for p in problems[3:]]
    with pytest.raises(ConfigError, match="identical"):
        generate_vllm(problems, tiny_model, n=2, engine=engine)


def test_the_stage_generates_with_vllm_when_asked(tiny_model, tmp_path, monkeypatch):
    from phi1lib import evaluation
    from phi1lib.runs import RunDir

    engine = fake_vllm(tiny_model)
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=lambda **kw: engine[0],
                                                                   SamplingParams=engine[1]))
    cfg = EvalConfig.for_preset("tiny", model=str(tiny_model), engine="vllm", limit=3, max_new_tokens=16,
                                canonical_loss=False)
    before = type(engine[0]).calls
    path = evaluation.generate(cfg, RunDir(tmp_path / "run"), progress=False)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and type(engine[0]).calls == before + 1
