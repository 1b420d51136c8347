"""Stages 3 and 4, pretraining and finetuning: tokenizer, Phi model, packing, the accelerate loop, checkpoints."""

from .stage import (CKPT_PREFIX, NonFiniteLoss, PRECISIONS, RESUME_KEYS, STAGES, STATE_FILE, TrainConfig, TrainResult, auto_threads, checkpoints, device_peak_tflops, estimate_cost, evaluate, forward_backward, lr_schedule, optimizer_step, param_groups, plot_log, read_log, run_training)
