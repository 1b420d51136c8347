"""Training run state on disk: checkpoints (atomic, pruned, resumable only by the same run) and the log."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import ConfigError

CKPT_PREFIX = "step_"
STATE_FILE = "trainer_state.json"


def checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints (trainer_state.json is written last), oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(CKPT_PREFIX) and (p / STATE_FILE).exists())


def _save_checkpoint(acc, out_dir: Path, step: int, state: dict, keep: int) -> Path:
    root = out_dir / "checkpoints"
    final = root / f"{CKPT_PREFIX}{step:06d}"
    tmp = root / f".tmp_{CKPT_PREFIX}{step:06d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))  # model, optimizer, registered scheduler, per-process RNG states
    acc.wait_for_everyone()
    if acc.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


RESUME_KEYS = ("preset", "stage", "data", "seq_len", "batch_seqs", "seed", "init_from", "tokenizer")


def _check_same_run(saved: dict, current: dict, ckpt: Path) -> None:
    """Resuming only makes sense for the same data, order and shapes; steps/LR may change."""
    diff = {k: (saved.get(k), current.get(k)) for k in RESUME_KEYS
            if k in saved and json.dumps(saved[k], default=str) != json.dumps(current.get(k), default=str)}
    if diff:
        raise ConfigError(f"{ckpt} was saved by a different run: " +
                          "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items()) +
                          ". Use the same settings to resume, or --force to start over")


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines from steps after the checkpoint we resume from (they will be redone)."""
    from ..jsonl import iter_jsonl, write_jsonl

    if log_path.exists():
        keep = [r for r in iter_jsonl(log_path) if r.get("step", 0) <= step or r.get("kind") == "info"]
        write_jsonl(log_path, keep)


def read_log(out_dir: str | os.PathLike):
    """log.jsonl as a pandas DataFrame (kinds: info, train, eval, error)."""
    import pandas as pd

    from ..jsonl import read_jsonl

    return pd.DataFrame(read_jsonl(Path(out_dir) / "log.jsonl"))


def plot_log(out_dirs: dict[str, str | os.PathLike], ax=None):
    """Training loss (smoothed) and eval losses of one or more runs, on matplotlib axes (2 panels)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    for label, out in out_dirs.items():
        df = read_log(out)
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
