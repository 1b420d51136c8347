"""The training memory plan: what one GPU holds at the peak of a training step, and the micro-batch,
gradient checkpointing and sharding that make a model fit a card.

A step under accelerate's bf16 mixed precision keeps fp32 weights (4 bytes a parameter), fp32
gradients (4) and AdamW's two fp32 moments (8); autocast saves a bf16 copy of every matmul weight
for the backward pass (2 bytes a non-embedding parameter); and each token of each layer saves its
activations. The Phi block's activations were measured on CPU with `saved_activation_bytes`
(autograd's saved tensors of one `PhiDecoderLayer` under bf16 autocast, SDPA's flash kernel):

    22.25 * d_model + 10 * d_mlp bytes per token per layer   (+ 4 * d_model with residual dropout)

The d_mlp term is the unfused `gelu_new` (tanh approximation in Python ops): five bf16 tensors of
d_mlp per token. With gradient checkpointing a layer keeps only its fp32 input (4 * d_model) and
one layer at a time is recomputed in full. The loss adds `LOGIT_BYTES` per token per vocabulary
entry at its peak (bf16 logits, their fp32 copy, log-softmax, the gradient). FSDP (full shard)
divides weights, gradients and optimizer states by the number of GPUs.

On a GPU add the CUDA context and the caching allocator's slack (`CUDA_OVERHEAD_GIB`,
`FRAGMENTATION`); the CPU check (tests/test_memory.py) compares the tensor peak itself with
torch's MemTracker. Attention dropout is assumed to run in a fused kernel (flash-attn or SDPA's
memory-efficient kernel on CUDA), which stores no T x T probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..budget.estimates import matmul_params
from ..errors import ConfigError
from ..presets import ModelSpec

GIB = 2 ** 30
STATE_BYTES = 4 + 4 + 8  # fp32 weights, fp32 gradients, AdamW exp_avg + exp_avg_sq (fp32)
AUTOCAST_COPY_BYTES = 2  # bf16 copy of each matmul weight that autocast saves for the backward pass
ACT_D, ACT_MLP = 22.25, 10.0  # saved bytes per token per layer, per d_model and per d_mlp unit (measured)
DROPOUT_D = 4.0  # residual dropout masks, bytes per token per layer per d_model unit (measured)
CKPT_D = 4.0  # gradient checkpointing keeps each layer's fp32 input
LOGIT_BYTES = 12.5  # per token per vocabulary entry at the loss's peak (measured)
CUDA_OVERHEAD_GIB = 1.0  # CUDA context, cuBLAS/NCCL workspaces: outside the tensor peak
FRAGMENTATION = 1.10  # the caching allocator reserves more than the live tensors
HEADROOM = 0.95  # plan to at most this share of the card
SHARDINGS = ("none", "fsdp")


def activation_bytes_per_token(spec: ModelSpec, *, dropout: float | None = None,
                               gradient_checkpointing: bool = False) -> float:
    """Saved activation bytes per token for the whole stack of layers (the loss's logits not included)."""
    p = spec.dropout if dropout is None else dropout
    per_layer = ACT_D * spec.d_model + ACT_MLP * spec.d_mlp + (DROPOUT_D * spec.d_model if p > 0 else 0.0)
    if gradient_checkpointing:  # each layer's input, plus one layer recomputed in full during backward
        return spec.n_layer * CKPT_D * spec.d_model + per_layer
    return spec.n_layer * per_layer


def step_peak(spec: ModelSpec, micro_batch: int, seq_len: int, *, gradient_checkpointing: bool = False,
              shards: int = 1, dropout: float | None = None) -> dict[str, float]:
    """Bytes live at the peak of a training step (end of a micro-batch's forward, gradients of earlier
    micro-batches present), by part; "total" is their sum. No CUDA overhead (see `plan_for_gpu`)."""
    if micro_batch < 1 or seq_len < 1 or shards < 1:
        raise ConfigError(f"memory plan: micro_batch={micro_batch}, seq_len={seq_len}, shards={shards}: "
                          "each must be >= 1")
    n = spec.n_params()
    tokens = micro_batch * seq_len
    parts = {
        "weights": 4.0 * n / shards,
        "gradients": 4.0 * n / shards,
        "optimizer": 8.0 * n / shards,
        # autocast's bf16 copy of every matmul parameter (FLOPs count the same ones: all but the input embedding)
        "autocast_copies": 0.0 if gradient_checkpointing else AUTOCAST_COPY_BYTES * matmul_params(spec),
        "activations": activation_bytes_per_token(spec, dropout=dropout,
                                                  gradient_checkpointing=gradient_checkpointing) * tokens,
        "logits": LOGIT_BYTES * spec.vocab_size * tokens,
    }
    parts["total"] = sum(parts.values())
    return parts


@dataclass(frozen=True)
class MemoryPlan:
    """How a training run fits one card: what `phi1 model-info` reports as "train_memory"."""

    micro_batch: int  # sequences per forward pass per GPU
    gradient_checkpointing: bool
    sharding: str  # "none" (DDP: every GPU holds all states) | "fsdp" (full shard over the GPUs)
    peak_gib_per_gpu: float  # planned peak, CUDA overhead and allocator slack included
    gpu_memory_gib: float  # the card's memory
    fits: bool
    grad_accum: int  # micro-batches per optimizer step per GPU
    parts_gib: dict[str, float]  # the tensor peak by part (GiB)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _peak_gib(tensor_bytes: float) -> float:
    return tensor_bytes * FRAGMENTATION / GIB + CUDA_OVERHEAD_GIB


def plan_for_gpu(spec: ModelSpec, seq_len: int, seqs_per_gpu: int, gpu_memory_gib: float, n_gpus: int = 1, *,
                 micro_batch: int | None = None, gradient_checkpointing: bool | None = None,
                 sharding: str | None = None, dropout: float | None = None) -> MemoryPlan:
    """The fastest setting that fits: the largest micro-batch (a divisor of the per-GPU batch, so the global
    batch stays the same by accumulation) without checkpointing or sharding; else with gradient
    checkpointing; else with FSDP as well (several GPUs). Settings given by hand are kept; the plan then
    says whether they fit (`fits`). When nothing fits, the smallest setting tried is returned, fits=False."""
    if seqs_per_gpu < 1 or gpu_memory_gib <= 0 or n_gpus < 1:
        raise ConfigError(f"memory plan: seqs_per_gpu={seqs_per_gpu}, gpu_memory_gib={gpu_memory_gib}, "
                          f"n_gpus={n_gpus}: each must be > 0")
    if sharding is not None and sharding not in SHARDINGS:
        raise ConfigError(f"memory plan: sharding={sharding!r}: expected one of {', '.join(SHARDINGS)}")
    if micro_batch is not None and (micro_batch < 1 or seqs_per_gpu % micro_batch):
        raise ConfigError(f"memory plan: micro_batch={micro_batch} must divide the {seqs_per_gpu} sequences each "
                          "GPU takes per optimizer step")
    budget = gpu_memory_gib * HEADROOM
    micros = [micro_batch] if micro_batch else sorted((m for m in range(1, seqs_per_gpu + 1) if seqs_per_gpu % m == 0),
                                                      reverse=True)
    ckpts = [gradient_checkpointing] if gradient_checkpointing is not None else [False, True]
    shards = [sharding] if sharding else (["none", "fsdp"] if n_gpus > 1 else ["none"])
    last = None
    for shard in shards:
        for ckpt in ckpts:
            for m in micros:
                parts = step_peak(spec, m, seq_len, gradient_checkpointing=ckpt,
                                  shards=n_gpus if shard == "fsdp" else 1, dropout=dropout)
                peak = _peak_gib(parts["total"])
                last = MemoryPlan(m, ckpt, shard, round(peak, 2), gpu_memory_gib, peak <= budget, seqs_per_gpu // m,
                                  {k: round(v / GIB, 3) for k, v in parts.items()})
                if last.fits:
                    return last
    return last


def saved_activation_bytes(model, seq_len: int = 128, batch: int = 2) -> float:
    """Measure: bytes autograd saves for backward in the first decoder layer of `model` (a PhiForCausalLM, in
    train mode) per token, under bf16 autocast on CPU; the layer's bf16 weight copies are left out (they are
    per step, not per token). Give the model attention dropout 0: on CPU a dropout inside attention takes
    SDPA's math path, while the GPU's fused kernels store no T x T probabilities."""
    import torch

    layer = model.model.layers[0]
    weights = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        saved[st.data_ptr()] = st.nbytes()
        return t

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    pre = layer.register_forward_pre_hook(lambda *a: hooks.__enter__())
    post = layer.register_forward_hook(lambda *a: hooks.__exit__(None, None, None))
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=ids)
    finally:
        pre.remove()
        post.remove()
    d, m = model.config.hidden_size, model.config.intermediate_size
    casts = AUTOCAST_COPY_BYTES * (4 * d * d + 2 * d * m)
    return (sum(n for ptr, n in saved.items() if ptr not in weights) - casts) / (batch * seq_len)


def run_settings(spec: ModelSpec, seq_len: int, batch_seqs: int, world: int, *, micro_batch: int | None,
                 gradient_checkpointing: bool | None, gpu_memory_gib: float | None = None, sharded: bool = False,
                 dropout: float | None = None, what: str = "training") -> tuple[int, bool, MemoryPlan | None]:
    """(micro_batch, gradient_checkpointing, plan) for a run on `world` processes. On CPU (`gpu_memory_gib`
    None) the config's values, None meaning 8 sequences and no checkpointing. On a GPU the memory plan for
    this card: unset values are chosen to fit; values set by hand that will not fit, or a model that needs
    FSDP when the launch is not sharded, are refused here with one line, before any data is prepared."""
    per_proc = batch_seqs // world
    if gpu_memory_gib is None:
        return micro_batch or min(per_proc, 8), bool(gradient_checkpointing), None
    plan = plan_for_gpu(spec, seq_len, per_proc, gpu_memory_gib, world, micro_batch=micro_batch,
                        gradient_checkpointing=gradient_checkpointing, sharding="fsdp" if sharded else "none",
                        dropout=dropout)
    if not plan.fits:
        fsdp = plan_for_gpu(spec, seq_len, per_proc, gpu_memory_gib, world, sharding="fsdp", dropout=dropout)
        if micro_batch is not None or gradient_checkpointing is False:
            fix = ("leave micro_batch and gradient_checkpointing unset so the plan picks settings that fit "
                   "(`phi1 model-info --preset P --set gpu=NAME` shows them)")
        elif not sharded and world > 1 and fsdp.fits:
            fix = (f"shard the states with FSDP: `phi1 model-info --preset P --set gpu=NAME --set n_gpus={world} "
                   "--accelerate-config fsdp.yaml` writes the launch config (then `accelerate launch --config_file "
                   f"fsdp.yaml -m phi1lib.cli train ...`), or add {FSDP_LAUNCH} to `accelerate launch`")
        else:
            fix = "use cards with more memory, or more GPUs with FSDP"
        raise ConfigError(f"{what}: micro_batch {plan.micro_batch}, gradient checkpointing "
                          f"{'on' if plan.gradient_checkpointing else 'off'}, {plan.sharding} sharding needs about "
                          f"{plan.peak_gib_per_gpu:.1f} GiB per GPU, more than {HEADROOM:.0%} of this "
                          f"{gpu_memory_gib:.0f} GiB card; {fix}")
    return plan.micro_batch, plan.gradient_checkpointing, plan


FSDP_LAUNCH = ("--use_fsdp --fsdp_version 2 --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP "
               "--fsdp_transformer_layer_cls_to_wrap PhiDecoderLayer --fsdp_state_dict_type SHARDED_STATE_DICT")


def accelerate_config(sharding: str, n_gpus: int, n_machines: int = 1, mixed_precision: str = "bf16",
                      main_process_ip: str | None = None, main_process_port: int = 29500) -> dict[str, Any]:
    """The `accelerate config` file (YAML as a dict) for a launch the memory plan chose: DDP (`sharding`
    "none") or FSDP2 full shard, one Phi decoder layer per unit, sharded checkpoints (training saves the
    final model whole). `n_gpus` counts all machines' GPUs; several machines need `main_process_ip`
    (and a run folder on a filesystem every machine shares)."""
    if sharding not in SHARDINGS:
        raise ConfigError(f"sharding {sharding!r}: expected one of {', '.join(SHARDINGS)}")
    if n_gpus < 1 or n_machines < 1 or n_gpus % n_machines:
        raise ConfigError(f"n_gpus={n_gpus} must be a positive multiple of n_machines={n_machines}")
    if n_machines > 1 and not main_process_ip:
        raise ConfigError("a launch on several machines needs main_process_ip (the address of machine 0)")
    cfg: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE", "debug": False, "downcast_bf16": "no", "enable_cpu_affinity": False,
        "distributed_type": "FSDP" if sharding == "fsdp" else ("MULTI_GPU" if n_gpus > 1 else "NO"),
        "gpu_ids": "all", "machine_rank": 0, "main_training_function": "main", "mixed_precision": mixed_precision,
        "num_machines": n_machines, "num_processes": n_gpus, "rdzv_backend": "static", "same_network": True,
        "tpu_env": [], "tpu_use_cluster": False, "tpu_use_sudo": False, "use_cpu": False}
    if n_machines > 1:
        cfg.update(main_process_ip=main_process_ip, main_process_port=main_process_port)
    if sharding == "fsdp":
        cfg["fsdp_config"] = {
            "fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": "PhiDecoderLayer", "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_reshard_after_forward": True, "fsdp_offload_params": False, "fsdp_cpu_ram_efficient_loading": False,
            "fsdp_activation_checkpointing": False}  # the plan turns on the model's own checkpointing when needed
    return cfg
