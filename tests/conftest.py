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
