"""`phi1 model-info`: a preset's Phi shape, parameter count, FLOPs per token and schedule GPU-hours."""

from __future__ import annotations

import argparse

from ..training.model import model_info
from . import _common as C


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "model-info",
        help="parameter count, FLOPs/token and training GPU-hours of a preset's model (built on the meta device)",
        description="Build the preset's PhiForCausalLM on the meta device (no memory) and report its size and cost.",
        epilog="examples: phi1 model-info --preset phi1 | phi1 model-info --preset phi1-small --json",
    )
    C.add_preset(p)
    C.add_prices(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    info = model_info(args.preset, C.load_prices(args))
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
    return 0
