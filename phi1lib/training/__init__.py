"""Stages 3 and 4, pretraining and finetuning: tokenizer, Phi model, packing, the accelerate loop, checkpoints.

`config` (TrainConfig, TrainResult, budget_lines, estimate), `stage` (run: inputs from the run
folder, the stored-result rule, resume), `loop` (setup -> resume -> loop -> finish around a
TrainState; evaluate, forward_backward, optimizer_step; Callback), `state` (checkpoints, the
log), `model`, `tokenizer`, `packing` (blocks, mixtures), `shards` (streamed, sharded, resumable packing;
`pack` = `phi1 pack`).
"""

from .config import PRECISIONS, STAGE, STAGES, TrainConfig, TrainResult, budget_lines, estimate
# The loop's steps stay under their module's name: training.loop.setup / .resume / .loop / .finish
# (importing the function `loop` here would hide the module of the same name).
from . import loop
from .loop import (BlockOrder, Callback, NonFiniteLoss, TrainState, evaluate, forward_backward, lr_schedule,
                   optimizer_step, param_groups)
from .stage import pack, run
from .state import CKPT_PREFIX, RESUME_KEYS, STATE_FILE, checkpoints, plot_log, read_log

__all__ = ["STAGE", "STAGES", "PRECISIONS", "TrainConfig", "TrainResult", "budget_lines", "estimate", "run", "pack",
           "loop", "BlockOrder", "Callback", "NonFiniteLoss", "TrainState", "evaluate", "forward_backward",
           "optimizer_step", "lr_schedule", "param_groups",
           "CKPT_PREFIX", "RESUME_KEYS", "STATE_FILE", "checkpoints", "plot_log", "read_log"]
