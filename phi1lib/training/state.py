"""Training run state on disk: checkpoints (atomic, pruned, resumable only by the same run) and the log."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..jsonl import iter_jsonl, read_jsonl, write_jsonl
from ..paths import atomic_path

CKPT_PREFIX = "step_"
STATE_FILE = "trainer_state.json"
LOG_FILE = "log.jsonl"
# What must match for a checkpoint to be continued: the same data, order and shapes. Steps, LR,
# evals and how the run is carried out may change (e.g. more steps to train longer).
RESUME_KEYS = ("preset", "stage", "data", "seq_len", "batch_seqs", "seed", "init_from", "tokenizer", "heldout_fraction",
               "max_source_chars", "pack_shard_docs")


def checkpoints(stage_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in a stage folder (trainer_state.json is written last), oldest first."""
    root = Path(stage_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(CKPT_PREFIX) and (p / STATE_FILE).exists())


def read_state(ckpt: Path) -> dict[str, Any]:
    """A checkpoint's trainer_state.json: step, elapsed_s, cpu_s, config, inputs."""
    try:
        return json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{ckpt / STATE_FILE}: unreadable ({exc}); delete {ckpt} or start over with --force") from None


def save_checkpoint(acc, stage_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Save model, optimizer, schedule and RNG states as checkpoints/step_NNNNNN (renamed into place
    when complete); the `keep` newest are kept."""
    root = stage_dir / "checkpoints"
    final = root / f"{CKPT_PREFIX}{step:06d}"
    tmp = root / f".tmp_{CKPT_PREFIX}{step:06d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))  # model, optimizer, registered scheduler, per-process RNG states
    acc.wait_for_everyone()
    if acc.is_main_process:
        with atomic_path(tmp / STATE_FILE) as path:
            path.write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(stage_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def check_same_run(saved: dict[str, Any], config: dict[str, Any], inputs: dict[str, str], ckpt: Path) -> None:
    """Resuming only makes sense for the same data, order and shapes (RESUME_KEYS and the inputs'
    identities); steps and LR may change. `saved` is the checkpoint's trainer_state.json."""
    old = saved.get("config", {})
    diff = {k: (old.get(k), config.get(k)) for k in RESUME_KEYS
            if k in old and json.dumps(old[k], default=str) != json.dumps(config.get(k), default=str)}
    if "inputs" in saved:
        diff.update({f"input {k}": (saved["inputs"].get(k), inputs.get(k))
                     for k in sorted(set(saved["inputs"]) | set(inputs)) if saved["inputs"].get(k) != inputs.get(k)})
    if diff:
        raise ConfigError(f"{ckpt} was saved by a different run: " +
                          "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items()) +
                          ". Use the same settings to resume, or --force to start over")


def truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines from steps after the checkpoint we resume from (they will be redone)."""
    if log_path.exists():
        keep = [r for r in iter_jsonl(log_path) if r.get("step", 0) <= step or r.get("kind") == "info"]
        write_jsonl(log_path, keep)


def read_log(stage_dir: str | os.PathLike):
    """A stage folder's log.jsonl as a pandas DataFrame (kinds: info, train, eval, error)."""
    import pandas as pd

    return pd.DataFrame(read_jsonl(Path(stage_dir) / LOG_FILE))


def plot_log(stage_dirs: dict[str, str | os.PathLike], ax=None):
    """Training loss (smoothed) and eval losses of one or more stage folders, on matplotlib axes (2 panels)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    for label, folder in stage_dirs.items():
        df = read_log(folder)
        train = df[df.kind == "train"]
        line, = ax[0].plot(train.step, train.loss.rolling(10, min_periods=1).mean(), label=f"{label} (train)")
        ev = df[df.kind == "eval"].sort_values("step")
        if "heldout_loss" in ev and ev.heldout_loss.notna().any():
            ax[0].plot(ev.step, ev.heldout_loss, "o--", color=line.get_color(), label=f"{label} (held-out)")
        ax[1].plot(ev.step, ev.humaneval_loss, "o-", color=line.get_color(), label=label)
    ax[0].set(xlabel="optimizer step", ylabel="loss (nats/token)", title="training and held-out loss")
    ax[1].set(xlabel="optimizer step", ylabel="loss (nats/token)", title="HumanEval canonical-solution loss")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return ax
