"""`phi1 model-info`: a preset's Phi shape, parameter count, FLOPs per token, schedule GPU-hours and the
training memory plan per GPU."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..stage import parse_assignments
from ..training.model import model_info
from . import _common as C


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "model-info",
        help="parameter count, FLOPs/token and training GPU-hours of a preset's model (built on the meta device)",
        description="Build the preset's PhiForCausalLM on the meta device (no memory) and report its size, cost "
                    "and training memory plan: the micro-batch, gradient checkpointing and sharding that fit one "
                    "GPU, and the planned peak per GPU (phi1lib.training.memory).",
        epilog="examples: phi1 model-info --preset phi1 | phi1 model-info --preset phi1 --set gpu=A100-40GB --json | "
               "phi1 model-info --preset phi1-small --set gpu=H100 --set n_gpus=4",
    )
    C.add_preset(p)
    C.add_prices(p)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="hardware to plan for: gpu=NAME (a price-book GPU with its memory, e.g. A100-40GB, A100 "
                        "(80 GB), H100) and n_gpus=N; repeatable")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    return p


def _hardware(sets: list[str]) -> dict:
    """--set gpu=NAME / n_gpus=N as model_info's keyword arguments."""
    got = parse_assignments(sets, example="gpu=A100-40GB", key_name="KEY")
    unknown = sorted(set(got) - {"gpu", "n_gpus"})
    if unknown:
        raise ConfigError(f"--set {unknown[0]}: unknown key; model-info takes gpu=NAME and n_gpus=N")
    out: dict = {}
    if "gpu" in got:
        out["gpu"] = got["gpu"]
    if "n_gpus" in got:
        try:
            out["n_gpus"] = C.positive_int(got["n_gpus"])
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"--set n_gpus: {exc}") from None
    return out


def run(args: argparse.Namespace) -> int:
    info = model_info(args.preset, C.load_prices(args), **_hardware(args.sets))
    if args.json:
        C.print_json(info)
        return 0
    print(f"preset {info['preset']}: {info['n_layer']} layers, d_model {info['d_model']}, MLP {info['d_mlp']}, "
          f"{info['n_head']} heads x {info['head_dim']}, rotary {info['rotary_dim']}, ctx {info['n_ctx']}, "
          f"vocab {info['vocab_size']}, {'tied' if info['tie_embeddings'] else 'untied'} LM head")
    print(f"parameters: {info['params']:,} (PhiForCausalLM on meta; formula {info['params_formula']:,})")
    print(f"hardware  : {info['hardware']}; tokenizer {info['tokenizer']}")
    for stage in ("pretrain", "finetune"):
        s = info[stage]
        print(f"{stage:9s} : {s['steps']:,} steps x {s['batch_seqs']} x {s['seq_len']} = {s['tokens']:.3g} tokens; "
              f"{s['flops_per_token']:.3g} FLOPs/token; {s['gpu_hours']:,.1f} GPU-h, {s['wall_hours']:,.1f} h wall, "
              f"${s['cost_usd']:,.0f}")
        m = s.get("train_memory")
        if m:
            print(f"{'':9s}   memory: micro-batch {m['micro_batch']} x {m['grad_accum']} accumulated, checkpointing "
                  f"{'on' if m['gradient_checkpointing'] else 'off'}, {m['sharding']} sharding: "
                  f"{m['peak_gib_per_gpu']:.1f} of {m['gpu_memory_gib']:g} GiB per GPU"
                  f"{'' if m['fits'] else ' - DOES NOT FIT'}")
    return 0
