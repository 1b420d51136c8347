"""CPU throughput constants for the budget's wall-time estimates, written to ONE file with date and machine.

Measures, on this machine, the rates the CPU stages' estimates divide by (see phi1lib/budget/throughput.py),
from the process's CPU time per thread rather than the wall clock, so that a machine shared with other
jobs still measures its own speed (both clocks are printed; on an idle machine they agree):
the offline embedder's forward pass (tokens/s, and its load time), the AST decontamination match
(pairs/s against the 164 HumanEval solutions, candidate filter included), reading installed Python
into a filtering pool (samples/s) and the offline heuristic annotator (prompt tokens/s). Then writes them to costs/throughput.toml (or --out), which
`phi1 budget --preset tiny` and every stage estimate read. Run it on an idle machine; the file says
when and where it was measured, and `--note` records anything else (e.g. "shared by 5 people").

    .venv/bin/python benchmarks/bench_throughput.py [--out costs/throughput.toml] [--note "..."] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

from phi1lib.budget.throughput import parse_throughput, throughput_path
from phi1lib.decontam.ast_match import ast_sequence, match_all
from phi1lib.embed import MINILM_LOCAL, Embedder
from phi1lib.filtering.corpus import load_corpus
from phi1lib.problems import load_humaneval


def machine() -> str:
    """'<cores>-core <cpu model>, <GiB> GiB' from /proc (Linux) or platform."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                      if l.startswith("MemTotal"))
        mem = f", {mem_kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        mem = ""
    return f"{os.cpu_count()}-core {model}{mem}"


# Seconds of one timed call, two ways: wall clock, and the process's CPU time (user + sys, all threads) divided by
# the threads the work runs on. On an idle machine they agree; on a shared one the wall clock counts the time
# other processes held the cores, the CPU time does not. The file keeps the CPU-time rate (the machine's
# own speed, what an idle run of a stage sees); both are printed.
CLOCKS: dict[str, list[float]] = {}


def best_of(fn, repeats: int, threads: int = 1, name: str = "") -> float:
    """Fastest of `repeats` calls, in CPU seconds per thread (see CLOCKS); the wall seconds go to CLOCKS[name]."""
    cpu, wall = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append((time.process_time() - c) / threads)
    CLOCKS[name] = [min(wall), min(cpu)]
    return min(cpu)


def bench_corpus(n: int, repeats: int) -> float:
    return n / best_of(lambda: load_corpus("installed", n, seed=1), repeats, name="corpus")


def bench_embed(texts: list[str], max_length: int, repeats: int) -> tuple[float, float]:
    """(tokens per second of the forward pass, seconds to load the model) for minilm-local on CPU, no cache.
    torch and transformers are imported first: a run imports them once, each stage that embeds loads a model."""
    import torch
    import transformers  # noqa: F401

    emb = Embedder(MINILM_LOCAL, max_length=max_length, cache=False, progress=False)
    load_s = best_of(emb.load, 1, name=f"load {max_length}")  # reading the weights: one thread
    secs = best_of(lambda: emb.embed(texts), repeats, threads=torch.get_num_threads(), name=f"embed {max_length}")
    return len(texts) * max_length / secs, load_s


def bench_heuristic(texts: list[str], repeats: int) -> float:
    """Prompt tokens per second the offline heuristic annotator (the tiny preset's stand-in for GPT-4) answers."""
    from phi1lib.filtering.annotate import build_prompt, heuristic_answer
    from phi1lib.llm import Request
    from phi1lib.llm.tokens import TokenCounter

    reqs = [Request(messages=[{"role": "user", "content": build_prompt(t, 2000)}]) for t in texts]
    tokens = sum(TokenCounter("heuristic").count_request(r) for r in reqs)
    return tokens / best_of(lambda: [heuristic_answer(r) for r in reqs], repeats, name="heuristic")


def bench_ast(n: int, repeats: int) -> float:
    """AST pairs per second: `n` single standard-library functions (exercise-sized, as in bench_decontam.py)
    against the 164 HumanEval solutions."""
    from bench_decontam import stdlib_functions  # a sibling script: benchmarks/ is on sys.path when run as one

    queries = stdlib_functions(n)
    refs = [ast_sequence(p["prompt"] + p["canonical_solution"]) for p in load_humaneval()]
    secs = best_of(lambda: match_all(queries, refs, 0.8), repeats, name="ast")
    return len(queries) * len(refs) / secs


def render(rates: dict[str, float], note: str) -> str:
    lines = ["# CPU throughput constants for wall-time estimates (phi1lib/budget/throughput.py).",
             "# Written by benchmarks/bench_throughput.py; rerun it to refresh, do not edit by hand.", "",
             "[meta]", f"date = {dt.date.today().isoformat()}", f"machine = {json.dumps(machine())}",
             f"note = {json.dumps(note)}", "", "[cpu]"]
    comments = {"embed_tokens_per_s": "minilm-local forward on CPU, texts x max_length per second (batch 32)",
                "embed_load_s": "loading the embedder, once per stage that embeds",
                "ast_pairs_per_s": "AST (function, HumanEval problem) pairs per second at tau 0.8, exact filter",
                "corpus_samples_per_s": "installed-Python files read into a pool per second",
                "heuristic_tokens_per_s": "prompt tokens per second through the offline heuristic annotator"}
    lines += [f"{k} = {v:.6g}  # {comments[k]}" for k, v in rates.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(throughput_path()), help="file to write (default: costs/throughput.toml)")
    ap.add_argument("--note", default="", help="anything a reader should know (e.g. the machine was shared)")
    ap.add_argument("--quick", action="store_true", help="fewer samples and repeats (a smoke run)")
    args = ap.parse_args(argv)
    n, repeats = (64, 1) if args.quick else (400, 3)
    pool = load_corpus("installed", n, seed=0)
    texts = [s["text"] for s in pool]
    rates: dict[str, float] = {"corpus_samples_per_s": bench_corpus(n, repeats),
                               "heuristic_tokens_per_s": bench_heuristic(texts, repeats)}
    tok_64, load_s = bench_embed(texts, 64, repeats)
    tok_128, _ = bench_embed(texts, 128, repeats)
    rates["embed_tokens_per_s"] = (tok_64 + tok_128) / 2
    rates["embed_load_s"] = load_s
    rates["ast_pairs_per_s"] = bench_ast(n, repeats)
    for k, v in rates.items():
        print(f"{k:<24} {v:>12,.1f}")
    print(f"embed tokens/s at max_length 64 vs 128: {tok_64:,.0f} vs {tok_128:,.0f} (ratio {tok_128 / tok_64:.2f}; "
          "the file keeps their mean)")
    for name, (wall, cpu) in CLOCKS.items():
        print(f"{name:<12} wall {wall:8.2f} s  cpu/thread {cpu:8.2f} s  (wall / cpu {wall / cpu:.1f}: how shared the "
              "machine was)")
    text = render(rates, args.note)
    parse_throughput(__import__("tomllib").loads(text), args.out)  # never write a file the estimates refuse
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
