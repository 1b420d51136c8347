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


def bench_outline(texts: list[str], repeats: int) -> float:
    """Samples per second turned into the filter's "outline" view (filtering.view: parse, keep signatures,
    docstrings and comments), what the filtering stage embeds instead of the raw file."""
    from phi1lib.filtering.view import sample_view

    return len(texts) / best_of(lambda: [sample_view(t, "outline") for t in texts], repeats, name="outline")


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


def bench_generate(n_problems: int, repeats: int) -> float:
    """(prompt + new) tokens per second of HF generate on CPU for a model of the tiny preset's shape (random
    weights, end-of-text disabled so every row runs its 128 new tokens), batch 8, with the evaluation stage's own
    per-row stop check: the rate the evaluation's CPU generation line divides by."""
    import tempfile

    from phi1lib.evaluation.completions import generate_local
    from phi1lib.presets import get_preset
    from phi1lib.training.model import build_model
    from phi1lib.training.tokenizer import train_bpe

    problems = load_humaneval()
    spec = get_preset("tiny").model
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_bpe([p["prompt"] + p["canonical_solution"] for p in problems], spec.vocab_size, tmp)
    model = build_model(spec, eos_token_id=tok.eos_token_id, seed=0).eval()
    model.generation_config.eos_token_id = None  # random weights: never stop early, as the trained model does not
    model.config.use_cache = model.generation_config.use_cache = True  # as evaluation's load_model sets it
    tok.pad_token = tok.eos_token
    chunk = problems[:n_problems]
    done: list[int] = []

    def go():
        recs = generate_local(chunk, None, model=(model, tok), max_new_tokens=128, batch_size=8, progress=False,
                              threads=1)
        done.append(sum(r["prompt_tokens"] + r["n_tokens"] for r in recs))

    # One thread: a model this small gains nothing from a second one, and on a shared machine two threads spin
    # against other jobs (8x slower measured under load); one thread's CPU time is the rate an idle run sees.
    secs = best_of(go, repeats, threads=1, name="generate")
    return done[-1] / secs


def bench_sandbox(n_problems: int, repeats: int) -> float:
    """Core-seconds per sandboxed test run: the HumanEval canonical solutions (passing programs) through the
    evaluation's sandbox pool with 1 worker; CPU time of this process and of the reaped sandbox processes."""
    import resource

    from phi1lib.evaluation.scoring import score_samples

    problems = load_humaneval()[:n_problems]
    samples = [{"task_id": p["task_id"], "completion_id": 0, "completion": p["canonical_solution"]} for p in problems]
    best = []
    for _ in range(repeats):
        before = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        t = time.perf_counter()
        score_samples(samples, problems, workers=1, progress=False)
        wall = time.perf_counter() - t
        after = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before))
        best.append((cpu, wall))
    cpu, wall = min(best)
    CLOCKS["sandbox"] = [wall, cpu]
    return cpu / len(samples)


def bench_extractive(quick: bool) -> float:
    """Wall seconds per requested prompt of the whole synthesis stage on the offline extractive stand-in (build
    units, assign them by topic, checks, sandboxed doctests, dedup) with the tiny preset's prompts, over the code
    the tiny preset's filtering stage keeps (run here first, into a temporary folder): how many exercises carry
    doctests, and whether one hangs to its sandbox timeout, depends on that code, so the stand-in is timed on the
    kind of input it gets. `quick`: 300 random installed files instead. One run (a repeat finds the sandbox and
    file caches warm); wall clock, sandbox processes and their timeouts included: run it on an idle machine."""
    import tempfile

    import pandas as pd

    from phi1lib import filtering, synthesis
    from phi1lib.runs import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        if quick:
            pool = load_corpus("installed", 300, seed=2)
            src = Path(tmp) / "kept.parquet"
            pd.DataFrame({"id": [s["id"] for s in pool], "text": [s["text"] for s in pool]}).to_parquet(src)
        else:
            kept = filtering.run(filtering.FilterConfig.for_preset("tiny"), RunDir(Path(tmp) / "filter"), progress=False)
            src = kept.kept_path
        cfg = synthesis.SynthesisConfig.for_preset("tiny", source=str(src))
        requested = sum(cfg.n_for(kind) for kind in cfg.kinds)
        t = time.perf_counter()
        synthesis.run(cfg, RunDir(Path(tmp) / "synth"), progress=False)
        wall = time.perf_counter() - t
    CLOCKS["extractive"] = [wall, wall]
    return wall / requested


def bench_classifier(n_labels: int, repeats: int) -> float:
    """Seconds per labelled sample of choosing and fitting the filter's classifier: cross-validating and fitting
    every candidate (random forest, logistic regression) with the tiny preset's settings on `n_labels` embeddings
    (384 dims, like MiniLM's; the classes are separable by a few dimensions, as labelled code is)."""
    import numpy as np

    from phi1lib.filtering import FilterConfig
    from phi1lib.filtering.stage import _fit_candidates

    rng = np.random.default_rng(0)
    y = (rng.random(n_labels) < 0.4).astype(int)
    X = rng.normal(size=(n_labels, 384)).astype(np.float32)
    X[:, :8] += y[:, None] * 0.8
    cfg = FilterConfig.for_preset("tiny")
    # the forest fits on every core (n_jobs=-1): CPU time divided by the cores
    secs = best_of(lambda: _fit_candidates(X, y, cfg), repeats, threads=os.cpu_count() or 1, name="classifier")
    return secs / n_labels


def bench_dataflow_start(repeats: int) -> float:
    """Wall seconds a local datatrove stage of 2 tasks on 2 workers costs before any document: the worker pool
    (forkserver, phi1lib.dataflow preloaded) and each task importing torch and transformers, as the filter's
    scoring tasks do. Wall clock: run it on an idle machine."""
    import tempfile

    from datatrove.pipeline.base import PipelineStep

    from phi1lib.dataflow import make_executor

    class ImportTorch(PipelineStep):  # what a scoring task pays before its first document
        name, type = "import torch", "bench"

        def run(self, data, rank: int = 0, world_size: int = 1):
            import torch  # noqa: F401
            import transformers  # noqa: F401

            yield from data or ()

    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats + 1):  # the first start also starts the fork server: counted once, as in a run
            t = time.perf_counter()
            make_executor("local", [ImportTorch()], tasks=2, workers=2, logging_dir=f"{tmp}/logs{i}").run()
            walls.append(time.perf_counter() - t)
    CLOCKS["dataflow start"] = [min(walls), min(walls)]
    return sum(walls) / len(walls)


def render(rates: dict[str, float], note: str) -> str:
    lines = ["# CPU throughput constants for wall-time estimates (phi1lib/budget/throughput.py).",
             "# Written by benchmarks/bench_throughput.py; rerun it to refresh, do not edit by hand.", "",
             "[meta]", f"date = {dt.date.today().isoformat()}", f"machine = {json.dumps(machine())}",
             f"note = {json.dumps(note)}", "", "[cpu]"]
    comments = {"embed_tokens_per_s": "minilm-local forward on CPU, texts x max_length per second (batch 32)",
                "embed_load_s": "loading the embedder, once per stage that embeds",
                "ast_pairs_per_s": "AST (function, HumanEval problem) pairs per second at tau 0.8, exact filter",
                "corpus_samples_per_s": "installed-Python files read into a pool per second",
                "heuristic_tokens_per_s": "prompt tokens per second through the offline heuristic annotator",
                "generate_tokens_per_s": "tiny-shaped Phi, HF generate on CPU, batch 8: (prompt + new) tokens per second",
                "sandbox_seconds_per_program": "core-seconds per sandboxed test run (HumanEval solutions, pool of 1)",
                "extractive_seconds_per_request": "wall s per prompt of the stand-in synthesis stage on tiny's kept code",
                "classifier_seconds_per_label": "choosing + fitting the filter's classifier, seconds per label",
                "outline_samples_per_s": "installed-Python files turned into the filter's outline view per second",
                "dataflow_start_s": "a 2-task local datatrove stage before its first document (pool + torch import)"}
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
    rates["generate_tokens_per_s"] = bench_generate(16 if args.quick else 32, repeats)
    rates["sandbox_seconds_per_program"] = bench_sandbox(32 if args.quick else 164, repeats)
    rates["classifier_seconds_per_label"] = bench_classifier(480, repeats)
    rates["outline_samples_per_s"] = bench_outline(texts, repeats)
    rates["dataflow_start_s"] = bench_dataflow_start(repeats)
    rates["extractive_seconds_per_request"] = bench_extractive(args.quick)
    for k, v in rates.items():
        print(f"{k:<32} {v:>14,.6g}")
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
