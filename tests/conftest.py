"""Shared test setup: fully offline, a private cache per session, small thread counts."""

from __future__ import annotations

import os

import pytest

# Nothing in the test suite may reach a model or dataset hub.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("OPENAI_API_KEY", None)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Point $PHI1_CACHE at a fresh directory so tests never see a user's cache."""
    old = os.environ.get("PHI1_CACHE")
    os.environ["PHI1_CACHE"] = str(tmp_path_factory.mktemp("phi1-cache"))
    yield
    if old is None:
        os.environ.pop("PHI1_CACHE", None)
    else:
        os.environ["PHI1_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One whole `tiny` pipeline run per test session, shared by the notebook and book tests.

    Returns (run_dir, report). Set PHI1_TEST_RUN_DIR to reuse an existing run directory.
    """
    from pathlib import Path

    from phi1lib.pipeline import run_pipeline

    existing = os.environ.get("PHI1_TEST_RUN_DIR")
    out = Path(existing) if existing else tmp_path_factory.mktemp("tiny-run")
    report = run_pipeline("tiny", out=out)
    return out, report


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random 1-layer PhiForCausalLM saved with a byte-level BPE trained on HumanEval prompts + solutions."""
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    from phi1lib.problems import load_humaneval
    from phi1lib.training.tokenizer import train_bpe

    out = tmp_path_factory.mktemp("tiny-model")
    tok = train_bpe([p["prompt"] + p["canonical_solution"] for p in load_humaneval()], 400, out)
    torch.manual_seed(0)
    cfg = PhiConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, max_position_embeddings=1024, eos_token_id=tok.eos_token_id,
                    bos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    PhiForCausalLM(cfg).save_pretrained(str(out))
    return out
