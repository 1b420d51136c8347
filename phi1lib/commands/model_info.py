"""`phi1 model-info`: a preset's Phi shape, parameter count, FLOPs per token, schedule GPU-hours and the
training memory plan per GPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..paths import atomic_path
from ..stage import parse_assignments
from ..training.memory import accelerate_config
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
    p.add_argument("--accelerate-config", metavar="FILE",
                   help="also write the `accelerate launch --config_file` YAML for this plan: DDP, or FSDP where the "
                        "plan shards (needs --set gpu=NAME or a GPU preset)")
    p.add_argument("--machines", type=C.positive_int, default=1, metavar="N",
                   help="with --accelerate-config: machines the n_gpus are spread over (default 1)")
    p.add_argument("--main-process-ip", metavar="IP", help="with --accelerate-config and --machines > 1: machine 0")
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


def write_launch_config(info: dict, path: str, machines: int, main_process_ip: str | None) -> str:
    """The accelerate config for the preset's plan (FSDP if either stage's plan shards); returns its sharding."""
    import yaml

    plans = [info[s].get("train_memory") for s in ("pretrain", "finetune")]
    if not all(plans):
        raise ConfigError(f"--accelerate-config: no GPU memory plan for {info['hardware']}; plan for a GPU with "
                          "--set gpu=NAME (e.g. A100-40GB) --set n_gpus=N")
    sharding = "fsdp" if any(p["sharding"] == "fsdp" for p in plans) else "none"
    cfg = accelerate_config(sharding, info["n_gpus"], machines, main_process_ip=main_process_ip)
    target = Path(path)
    if target.is_dir() or not target.parent.is_dir():
        raise ConfigError(f"--accelerate-config {path}: {'is a folder' if target.is_dir() else 'its folder does not exist'}"
                          "; give a file path, e.g. fsdp.yaml")
    with atomic_path(target) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=True), encoding="utf-8")
    return sharding


def run(args: argparse.Namespace) -> int:
    info = model_info(args.preset, C.load_prices(args), **_hardware(args.sets))
    if args.accelerate_config:
        sharding = write_launch_config(info, args.accelerate_config, args.machines, args.main_process_ip)
        info["accelerate_config"] = {"file": args.accelerate_config, "sharding": sharding}
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
    if args.accelerate_config:
        print(f"launch    : wrote {args.accelerate_config} ({'FSDP' if sharding == 'fsdp' else 'DDP'}, "
              f"{info['n_gpus']} processes on {args.machines} machine(s)); "
              f"accelerate launch --config_file {args.accelerate_config} -m phi1lib.cli train pretrain --out RUN")
    return 0
