"""Data stages at scale on datatrove: generated code documents through filtering (a deterministic stand-in embedder
and classifier, per document) and MinHash dedup, with 1 and 2 local tasks.

Each stage is split into one task per input file (--files); it runs with 1 and with 2 tasks at a time (local
workers). For each corpus size it prints wall seconds per document and the peak RSS of each task (the tasks record
it themselves), and the ratios that matter: peak RSS as the corpus grows (flat = memory bounded
by a task's stream, not the corpus), time per document as it grows (flat = linear), and 1-task / 2-task wall
time (the speed-up of a second task on 2 cores; goal >= 1.7).

    .venv/bin/python benchmarks/bench_scale.py [--sizes 10000,100000,1000000] [--files 8]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path


def generate(folder: Path, n: int, files: int, seed: int = 0) -> None:
    """n code-like documents (~60 lines) over `files` JSONL files; 1 in 10 a near copy of an earlier one."""
    rng = random.Random(seed)
    names = [f"{a}_{b}" for a in ("get", "set", "load", "parse", "count", "merge") for b in range(200)]
    folder.mkdir(parents=True, exist_ok=True)
    handles = [open(folder / f"part{k:03d}.jsonl", "w") for k in range(files)]
    recent: list[str] = []
    for i in range(n):
        if recent and i % 10 == 9:
            text = rng.choice(recent).replace("return", "return  ", 1) + "\n# copy\n"
        else:
            text = "\n".join(f"def {rng.choice(names)}(x, y):\n    return {rng.choice(names)}(x) + {rng.randint(0, 99)}"
                             for _ in range(20))
            recent = (recent + [text])[-50:]
        handles[i % files].write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")
    for h in handles:
        h.close()


def run_once(inp: Path, work: Path, workers: int, tasks: int) -> dict:
    """Filtering then dedup, each split into `tasks` tasks (one per input file) run `workers` at a time."""
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from phi1lib.dataflow import HashEmbedScore, PeakMemory, ScoreFilter, make_executor, minhash_dedup, read_peaks

    t0 = time.perf_counter()
    make_executor("local", [JsonlReader(str(inp)), HashEmbedScore(), ScoreFilter(0.3),
                            PeakMemory(str(work / "mem-filter")), JsonlWriter(str(work / "filtered"), compression=None)],
                  tasks=tasks, workers=workers, logging_dir=str(work / "logs-filter")).run()
    t1 = time.perf_counter()
    dd = minhash_dedup(work / "filtered", work / "dedup", tasks=tasks, workers=workers,
                       extra_blocks=(PeakMemory(str(work / "mem-dedup")),))
    t2 = time.perf_counter()
    return {"filter_s": t1 - t0, "dedup_s": t2 - t1, "kept": dd["kept"], "documents": dd["documents"],
            "peak_filter_mb": max(read_peaks(work / "mem-filter")), "peak_dedup_mb": max(read_peaks(work / "mem-dedup"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--files", type=int, default=8, help="input JSONL files (the unit datatrove splits over tasks)")
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as d:
        root = Path(d)
        for n in sizes:
            inp = root / f"in{n}"
            generate(inp, n, args.files)
            for tasks in (1, 2):
                work = root / f"w{n}-{tasks}"
                r = run_once(inp, work, tasks, args.files)
                results[(n, tasks)] = r
                shutil.rmtree(work, ignore_errors=True)
                print(f"{n:>9,} docs, {tasks} at a time: filter {r['filter_s']:7.1f} s, dedup {r['dedup_s']:7.1f} s, "
                      f"{(r['filter_s'] + r['dedup_s']) / n * 1e3:6.3f} ms/doc; peak RSS per task filter "
                      f"{r['peak_filter_mb']:6.0f} MB, dedup {r['peak_dedup_mb']:6.0f} MB; kept {r['kept']:,} of "
                      f"{r['documents']:,} after the filter", flush=True)
            shutil.rmtree(inp, ignore_errors=True)
    small, large = sizes[0], sizes[-1]
    for tasks in (1, 2):
        a, b = results[(small, tasks)], results[(large, tasks)]
        per_doc = ((b["filter_s"] + b["dedup_s"]) / large) / ((a["filter_s"] + a["dedup_s"]) / small)
        print(f"{tasks} task(s), {large // small}x the corpus: peak RSS x{b['peak_dedup_mb'] / a['peak_dedup_mb']:.2f} "
              f"(dedup), x{b['peak_filter_mb'] / a['peak_filter_mb']:.2f} (filter); time per document x{per_doc:.2f}")
    for n in sizes:
        one, two = results[(n, 1)], results[(n, 2)]
        print(f"{n:>9,} docs: 1 task / 2 tasks wall = "
              f"{(one['filter_s'] + one['dedup_s']) / (two['filter_s'] + two['dedup_s']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
