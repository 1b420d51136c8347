"""Shared test setup: fully offline, a private cache per session, small thread counts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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


FAKE_SBATCH = r"""#!/usr/bin/env bash
# A stand-in for Slurm's sbatch: runs the submitted job array here, task after task (every task its own process,
# as on a cluster), then answers like sbatch. Each task's output goes to $FAKE_SLURM_LOG.
script="${@: -1}"
offset=0
for a in "$@"; do case "$a" in --export=*RUN_OFFSET=*) offset="${a##*RUN_OFFSET=}";; esac; done
echo "sbatch $*" >> "$FAKE_SLURM_LOG"
range=$(sed -n 's/^#SBATCH --array=\([0-9]*-[0-9]*\).*/\1/p' "$script")
first=${range%-*}; last=${range#*-}
for i in $(seq "${first:-0}" "${last:-0}"); do
  SLURM_ARRAY_TASK_ID=$i RUN_OFFSET=$offset SLURM_JOB_ID=4242 SLURM_ARRAY_JOB_ID=4242 SLURM_NODELIST=localhost \
    bash "$script" >> "$FAKE_SLURM_LOG" 2>&1 || echo "task $i failed" >> "$FAKE_SLURM_LOG"
done
echo "Submitted batch job 4242"
"""
FAKE_SRUN = r"""#!/usr/bin/env bash
# srun inside the fake job: drop its options, run the command
while [[ $# -gt 0 && "$1" == -* ]]; do case "$1" in -n|-N) shift 2;; *) shift;; esac; done
exec "$@"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, srun, squeue and scontrol on PATH that run a datatrove Slurm job array on this machine (squeue lists
    nothing: every job has finished by the time sbatch answers), and the venv's scripts (launch_pickled_pipeline,
    merge_stats) that the job calls. Returns the log file of what was submitted and what the tasks printed."""
    bin_dir, log = tmp_path / "fake-slurm-bin", tmp_path / "fake-slurm.log"
    bin_dir.mkdir()
    scontrol = "#!/usr/bin/env bash\n[ \"$1 $2\" = 'show hostnames' ] && echo \"$3\"\n"  # the node list, expanded
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("squeue", "#!/usr/bin/env bash\nexit 0\n"),
                       ("scontrol", scontrol)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]))
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    log.write_text("")
    return log
