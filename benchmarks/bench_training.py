"""CPU tokens/s of phi1lib's training step vs a minimal plain-PyTorch loop (same PhiForCausalLM, same batch).

Both loops train the tiny preset's model on the same random token batches with AdamW and
gradient clipping; ours goes through `accelerate` (prepare, backward, clip, no_sync) and the
LR schedule. Steps alternate between the two loops in rounds so background load hits both
alike. Prints tokens/s of each, their ratio (goal >= 0.90) and peak resident memory.

    .venv/bin/python benchmarks/bench_training.py [--steps 12] [--batch 8] [--seq 128] [--threads N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per loop")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--micro", type=int, default=8, help="micro-batch for our loop (accumulation if < batch)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()

    import torch
    from accelerate import Accelerator

    from phi1lib.training.model import build_model
    from phi1lib.presets import get_preset
    from phi1lib.training import TrainConfig, forward_backward, lr_schedule, optimizer_step, param_groups

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_preset("tiny").model
    cfg = TrainConfig.for_preset("tiny", steps=1000, batch_seqs=args.batch, seq_len=args.seq, micro_batch=args.micro)
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, spec.vocab_size, (args.batch, args.seq), generator=g) for _ in range(4)]

    # Ours: accelerate-prepared model/optimizer, grouped weight decay, schedule, accumulation.
    acc = Accelerator(cpu=True)
    ours = build_model(spec, seed=0)
    opt = torch.optim.AdamW(param_groups(ours, cfg.weight_decay), lr=cfg.peak_lr, betas=cfg.adam_betas)
    sched = lr_schedule(opt, cfg)
    ours, opt = acc.prepare(ours, opt)
    accum = args.batch // args.micro

    def ours_step(x):
        forward_backward(ours, acc, [x[i:i + args.micro] for i in range(0, args.batch, args.micro)], accum)
        optimizer_step(ours, opt, sched, acc, cfg.grad_clip)

    # Baseline: the few lines anyone would write.
    plain = build_model(spec, seed=0)
    popt = torch.optim.AdamW(plain.parameters(), lr=cfg.peak_lr, weight_decay=cfg.weight_decay)

    def plain_step(x):
        loss = plain(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), cfg.grad_clip)
        popt.step()
        popt.zero_grad(set_to_none=True)

    ours.train(), plain.train()
    for fn in (ours_step, plain_step):  # warm-up
        fn(data[0]), fn(data[1])
    times = {"ours": [], "plain": []}
    for i in range(args.steps):
        x = data[i % len(data)]
        for name, fn in (("ours", ours_step), ("plain", plain_step)) if i % 2 else (("plain", plain_step), ("ours", ours_step)):
            t = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t)
    tokens = args.batch * args.seq
    rate = {k: tokens / statistics.median(v) for k, v in times.items()}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"threads={torch.get_num_threads()} batch={args.batch}x{args.seq} micro={args.micro} steps={args.steps}")
    print(f"plain PyTorch loop : {rate['plain']:10,.0f} tokens/s (median step {statistics.median(times['plain'])*1e3:.0f} ms)")
    print(f"phi1lib train step : {rate['ours']:10,.0f} tokens/s (median step {statistics.median(times['ours'])*1e3:.0f} ms)")
    print(f"ratio ours/plain   : {rate['ours'] / rate['plain']:.3f}  (goal >= 0.90)")
    print(f"peak RSS           : {peak_mb:,.0f} MB (both models in one process)")


if __name__ == "__main__":
    main()
