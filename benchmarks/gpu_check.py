"""The GPU check (issue #19): a preset's model trained for a few steps at the memory plan's settings on
the card at hand, next to what the plan predicted; then generation throughput.

    python3 benchmarks/gpu_check.py [--preset phi1-small] [--steps 30] [--accum 2] [--json FILE]
    python3 benchmarks/gpu_check.py --cpu-smoke          # the same code on a toy model, on CPU (CI, laptops)

Prints tokens/s, MFU (6 x (N - input embedding) + 12 L d T FLOPs per token over the card's bf16 peak),
the measured peak memory (torch.cuda.max_memory_allocated / _reserved) beside the plan's tensor peak and
its planned peak with CUDA overhead, and generation tokens/s (bf16, batch 64, fixed length). Random
weights and random tokens: nothing is downloaded. The preset's per-GPU batch is its global batch over
8 GPUs; each optimizer step here runs `--accum` micro-batches of the planned size (throughput does not
depend on how many are accumulated). Runs in well under 8 minutes for phi1-small on an A100/H100/H200.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from phi1lib import budget  # noqa: E402
from phi1lib.presets import ModelSpec, get_preset  # noqa: E402
from phi1lib.training.memory import GIB, plan_for_gpu, step_peak  # noqa: E402
from phi1lib.training.model import build_model, enable_checkpointing, pick_attention  # noqa: E402

# Dense bf16 peak per device (TFLOP/s), datasheets; the price book holds A100 and H100.
PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


def card_peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAKS.items() if k in name), None)


def train_check(spec: ModelSpec, seq_len: int, per_gpu: int, device: str, steps: int, accum: int) -> dict:
    import torch

    gib = torch.cuda.get_device_properties(0).total_memory / GIB if device == "cuda" else 8.0
    plan = plan_for_gpu(spec, seq_len, per_gpu, gib, 1)
    attn, why = pick_attention(device)
    model = build_model(spec, attn_implementation=attn).to(device).train()
    if plan.gradient_checkpointing:
        enable_checkpointing(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda" or None)
    micro = plan.micro_batch
    dtype = torch.bfloat16
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        t = time.perf_counter()
        for _ in range(accum):
            x = torch.randint(0, spec.vocab_size, (micro, seq_len), device=device)
            with torch.autocast(device_type=device, dtype=dtype):
                loss = model(input_ids=x, labels=x).loss / accum
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    steady = times[2:] or times
    tokens_per_s = micro * seq_len * accum / (sum(steady) / len(steady))
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = card_peak_tflops(name)
    flops = budget.flops_per_token(spec, seq_len)
    out = {"device": name, "card_gib": round(gib, 1), "attention": why, "plan": plan.to_dict(),
           "micro_batch": micro, "accum": accum, "steps": steps, "tokens_per_s": round(tokens_per_s, 1),
           "flops_per_token": flops, "peak_tflops": peak,
           "mfu": round(tokens_per_s * flops / (peak * 1e12), 4) if peak else None,
           "planned_tensor_peak_gib": round(step_peak(spec, micro, seq_len,
                                                      gradient_checkpointing=plan.gradient_checkpointing)["total"]
                                            / GIB, 2),
           "planned_peak_gib": plan.peak_gib_per_gpu}
    if device == "cuda":
        out["measured_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
        out["measured_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
        out["allocated_over_planned_tensors"] = round(out["measured_allocated_gib"] / out["planned_tensor_peak_gib"], 3)
    del model, opt
    return out


def generation_check(spec: ModelSpec, device: str, batch: int, prompt_len: int, new_tokens: int) -> dict:
    import torch

    model = build_model(spec, attn_implementation=pick_attention(device)[0])
    model = model.to(device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32).eval()
    model.config.use_cache = True
    model.generation_config.use_cache = True
    x = torch.randint(0, spec.vocab_size, (batch, prompt_len), device=device)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(input_ids=x, **dict(kw, max_new_tokens=4, min_new_tokens=4))  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        model.generate(input_ids=x, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
    return {"batch": batch, "prompt_tokens": prompt_len, "new_tokens": new_tokens,
            "generated_tokens_per_s": round(batch * new_tokens / seconds, 1), "seconds": round(seconds, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="phi1-small", choices=["phi1-small", "phi1"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--accum", type=int, default=2, help="micro-batches per optimizer step (default 2)")
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    ap.add_argument("--cpu-smoke", action="store_true", help="a toy model on CPU: checks the script, measures nothing")
    args = ap.parse_args(argv)
    import torch

    if args.cpu_smoke:
        device, steps = "cpu", 3
        spec = ModelSpec(n_layer=2, d_model=64, d_mlp=256, n_head=4, rotary_dim=8, n_ctx=64, vocab_size=512)
        seq_len, per_gpu, gen = 64, 8, dict(batch=4, prompt_len=16, new_tokens=8)
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; use --cpu-smoke to check the script on CPU", file=sys.stderr)
            return 2
        device, steps = "cuda", args.steps
        p = get_preset(args.preset)
        spec, seq_len, per_gpu = p.model, p.pretrain.seq_len, p.pretrain.batch_seqs // p.hardware.n_gpus
        gen = dict(batch=64, prompt_len=150, new_tokens=256)
    print(f"gpu_check: {args.preset if not args.cpu_smoke else 'toy'} on {device}; torch {torch.__version__}",
          flush=True)
    t0 = time.perf_counter()
    result = {"train": train_check(spec, seq_len, per_gpu, device, steps, args.accum)}
    print(json.dumps(result["train"], indent=1), flush=True)
    if device == "cuda":
        torch.cuda.empty_cache()
    result["generate"] = generation_check(spec, device, **gen)
    print(json.dumps(result["generate"], indent=1), flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    tr = result["train"]
    print(f"\n{tr['device']}: {tr['tokens_per_s']:,.0f} tokens/s training at micro-batch {tr['micro_batch']} "
          f"(MFU {tr['mfu'] if tr['mfu'] is not None else 'n/a'}); memory allocated "
          f"{tr.get('measured_allocated_gib', 'n/a')} GiB vs planned tensors {tr['planned_tensor_peak_gib']} GiB; "
          f"generation {result['generate']['generated_tokens_per_s']:,.0f} tokens/s; {result['seconds']} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
