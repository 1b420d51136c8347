"""The phi-1 model: a ModelSpec turned into transformers' own PhiConfig / PhiForCausalLM.

No hand-written transformer: the presets only choose the shape. `model_info(preset)` gives
the planner the parameter count, FLOPs per token and GPU-hours of the preset's schedule
without allocating a single weight (the model is built on the `meta` device).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from .. import budget
from ..errors import MissingDependency
from ..presets import ModelSpec, Preset, get_preset
from .memory import plan_for_gpu

log = logging.getLogger(__name__)


def phi_config(spec: ModelSpec, *, eos_token_id: int | None = None, dropout: float | None = None):
    """PhiConfig with exactly the spec's shape; attention and residual dropout = spec.dropout."""
    from transformers import PhiConfig

    p = spec.dropout if dropout is None else dropout
    return PhiConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.d_model,
        intermediate_size=spec.d_mlp,
        num_hidden_layers=spec.n_layer,
        num_attention_heads=spec.n_head,
        num_key_value_heads=spec.n_head,
        partial_rotary_factor=spec.partial_rotary_factor,
        max_position_embeddings=spec.n_ctx,
        hidden_act=spec.activation,
        tie_word_embeddings=spec.tie_embeddings,
        attention_dropout=p,
        resid_pdrop=p,
        embd_pdrop=0.0,  # phi-1 drops attention and residual streams, not embeddings
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        use_cache=False,  # training default; generation turns it back on
    )


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def pick_attention(device_type: str, requested: str = "auto") -> tuple[str, str]:
    """(implementation, reason): flash_attention_2 on CUDA when installed, else sdpa."""
    if requested != "auto":
        if requested == "flash_attention_2" and not flash_attn_available():
            raise MissingDependency("attn_implementation='flash_attention_2' needs flash-attn: "
                                    "pip install flash-attn --no-build-isolation, after torch (or use 'auto' to fall back "
                                    "to sdpa)")
        return requested, f"attention: {requested} (requested)"
    if device_type != "cuda":
        return "sdpa", f"attention: sdpa (flash_attention_2 needs a CUDA device; running on {device_type})"
    if not flash_attn_available():
        return "sdpa", ("attention: sdpa (flash-attn is not installed; pip install flash-attn --no-build-isolation "
                        "for flash_attention_2)")
    return "flash_attention_2", "attention: flash_attention_2 (flash-attn installed)"


def build_model(spec: ModelSpec, *, device: str | None = None, attn_implementation: str = "sdpa",
                eos_token_id: int | None = None, dropout: float | None = None, seed: int | None = None):
    """A freshly initialised PhiForCausalLM; `device="meta"` allocates nothing."""
    import torch
    from transformers import PhiForCausalLM

    config = phi_config(spec, eos_token_id=eos_token_id, dropout=dropout)
    config._attn_implementation = attn_implementation
    if seed is not None:
        torch.manual_seed(seed)
    if device == "meta":
        with torch.device("meta"):
            return PhiForCausalLM(config)
    model = PhiForCausalLM(config)
    return model.to(device) if device else model


def enable_checkpointing(model) -> None:
    """Recompute each layer's activations in the backward pass (non-reentrant torch.utils.checkpoint):
    `activation_checkpointing_enable` in transformers 5.x, `gradient_checkpointing_enable` before it."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def model_info(preset: str | Preset, prices=None, *, gpu: str | None = None, n_gpus: int | None = None) -> dict[str, Any]:
    """Parameters (counted on the meta model and from the formula), FLOPs/token, schedule GPU-hours, and the
    training memory plan per GPU ("train_memory": micro-batch, checkpointing, sharding, planned peak) on the
    preset's GPU or `gpu` (a price-book GPU with its memory, e.g. "A100-40GB"), `n_gpus` of them."""
    p = get_preset(preset)
    spec = p.model
    counted = count_params(build_model(spec, device="meta"))
    prices = prices or budget.load_prices()
    gpu = gpu or p.hardware.gpu
    n_gpus = n_gpus or p.hardware.n_gpus
    card = prices.gpu(gpu)  # an unknown name: one line listing the known ones
    info: dict[str, Any] = {
        "preset": p.name,
        "n_layer": spec.n_layer, "d_model": spec.d_model, "d_mlp": spec.d_mlp, "n_head": spec.n_head,
        "head_dim": spec.head_dim, "rotary_dim": spec.rotary_dim, "n_ctx": spec.n_ctx,
        "vocab_size": spec.vocab_size, "tie_embeddings": spec.tie_embeddings,
        "params": counted,
        "params_formula": spec.n_params(),
        "tokenizer": p.tokenizer,
        "hardware": f"{n_gpus}x {card.name} ({card.memory_gb:g} GB) at MFU {p.hardware.mfu:.0%}",
        "gpu": card.name, "n_gpus": n_gpus,
    }
    for stage in ("pretrain", "finetune"):
        sched = getattr(p, stage)
        est = budget.estimate_training(stage, spec, sched.tokens, prices, gpu=card.name, n_gpus=n_gpus,
                                      mfu=p.hardware.mfu)
        info[stage] = {
            "steps": sched.steps, "batch_seqs": sched.batch_seqs, "seq_len": sched.seq_len,
            "tokens": sched.tokens,
            "flops_per_token": budget.flops_per_token(spec, sched.seq_len),
            "gpu_hours": est.gpu_hours, "wall_hours": est.wall_hours, "cost_usd": est.cost_usd,
        }
        if card.name != "cpu" and card.memory_gb > 0 and sched.batch_seqs % n_gpus == 0:
            plan = plan_for_gpu(spec, sched.seq_len, sched.batch_seqs // n_gpus, card.memory_gb, n_gpus)
            info[stage]["train_memory"] = plan.to_dict()
    if "train_memory" in info["pretrain"]:
        info["train_memory"] = info["pretrain"]["train_memory"]
    return info


def sample(model_dir: str, prompt: str, *, max_new_tokens: int = 80, temperature: float = 0.7, seed: int = 0) -> str:
    """One sampled continuation of `prompt` by a saved model, with plain transformers classes (for the notebooks;
    evaluation generates through phi1lib.evaluation). Sampling, not greedy: a tiny model repeats itself greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    ids = tok(prompt, return_tensors="pt").input_ids
    torch.manual_seed(seed)
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                         pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:])
