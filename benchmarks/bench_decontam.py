"""AST match-rate decontamination: pairs per second, and how time grows with dataset size.

Queries are real functions from the standard library (the same kind of code the tiny preset's
exercises are made of); references are the 164 HumanEval solutions, or the queries themselves
for the self-join (every record against every record, which is what makes the naive approach
quadratic). For each size we time the naive all-pairs edit distance and the candidate-filtered
index (length bound + bag-of-nodes bound, both exact), check they return the same pairs, and
print the ratio. `--plot PATH` saves the curves (log-log) with matplotlib.

    .venv/bin/python benchmarks/bench_decontam.py [--sizes 100,200,400,800] [--tau 0.8] [--plot out.png]
"""

from __future__ import annotations

import argparse
import ast
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

from phi1lib.decontam.ast_match import ast_sequence, match_all
from phi1lib.problems import load_humaneval


def stdlib_functions(limit: int) -> list[list[str]]:
    """AST sequences of up to `limit` distinct functions and methods from the standard library (tests excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seqs, seen = [], set()
    for path in sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts):
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        methods = [m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body]
        for node in tree.body + methods:
            if not isinstance(node, ast.FunctionDef):
                continue
            seg = ast.get_source_segment(src, node)
            seq = ast_sequence(textwrap.dedent(seg)) if seg else None
            if seq and len(seq) <= 600 and tuple(seq) not in seen:
                seen.add(tuple(seq))
                seqs.append(seq)
                if len(seqs) >= limit:
                    return seqs
    return seqs
    return seqs


def timed(queries, refs, tau, naive, lsh=None):
    t = time.perf_counter()
    matches, stats = match_all(queries, refs, tau, naive=naive, lsh_threshold=lsh)
    return time.perf_counter() - t, matches, stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="250,500,1000,2000,4000", help="dataset sizes N (comma-separated)")
    ap.add_argument("--naive-max", type=int, default=1000, help="largest N for the naive self-join")
    ap.add_argument("--tau", type=float, default=0.8, help="match-rate threshold (the loosest of the paper's)")
    ap.add_argument("--lsh", type=float, default=0.3, help="LSH Jaccard threshold for the approximate self-join")
    ap.add_argument("--plot", help="save the time-vs-N curves to this image file")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    pool = stdlib_functions(max(sizes))
    he = [ast_sequence(p["prompt"] + p["canonical_solution"]) for p in load_humaneval()]
    print(f"pool: {len(pool)} stdlib functions; references: {len(he)} HumanEval solutions; tau={args.tau}")
    rows = []
    header = f"{'setting':<10} {'N':>6} {'pairs':>10} {'naive s':>9} {'filtered s':>10} {'speedup':>8} " \
             f"{'naive pairs/s':>14} {'eff. pairs/s':>13} {'edit dists':>10} {'same':>5}"
    print(header)
    exact_pairs: dict[int, set] = {}
    for setting in ("vs-HE", "self-join", "self-lsh"):
        for n in sizes:
            q = pool[:n]
            n = len(q)
            refs = he if setting == "vs-HE" else q
            pairs = len(q) * len(refs)
            tf, mf, stats = timed(q, refs, args.tau, naive=False, lsh=args.lsh if setting == "self-lsh" else None)
            found = {(m.query, m.ref) for m in mf}
            tn, same = None, None
            if setting == "self-join":
                exact_pairs[n] = found
            if setting == "self-lsh":
                same = f"{len(found & exact_pairs[n]) / max(len(exact_pairs[n]), 1):.3f}"  # recall vs exact
            elif setting == "vs-HE" or n <= args.naive_max:
                tn, mn, _ = timed(q, refs, args.tau, naive=True)
                same = str(found == {(m.query, m.ref) for m in mn})
            rows.append((setting, n, pairs, tn, tf, stats["edit_distances"]))
            print(f"{setting:<10} {n:>6} {pairs:>10,} {tn if tn is not None else float('nan'):>9.3f} {tf:>10.3f} "
                  f"{(tn / tf) if tn else float('nan'):>8.1f} {(pairs / tn) if tn else float('nan'):>14,.0f} "
                  f"{pairs / tf:>13,.0f} {stats['edit_distances']:>10,} {str(same):>5}")
    print("same: filtered pairs == naive pairs (exact settings); for self-lsh, recall against the exact self-join")
    # Growth exponent from the two largest sizes: time ~ N^k (k = 1 linear, k = 2 quadratic).
    for setting in ("vs-HE", "self-join", "self-lsh"):
        pts = [r for r in rows if r[0] == setting]
        if len(pts) >= 2:
            import math

            (_, n1, _, tn1, tf1, _), (_, n2, _, tn2, tf2, _) = pts[-2], pts[-1]
            kf = math.log(tf2 / tf1) / math.log(n2 / n1)
            kn = math.log(tn2 / tn1) / math.log(n2 / n1) if tn1 and tn2 else float("nan")
            print(f"{setting}: time grows as N^{kn:.2f} naive, N^{kf:.2f} filtered (between N={n1} and N={n2})")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for setting, style in (("vs-HE", "o"), ("self-join", "s"), ("self-lsh", "^")):
            pts = [r for r in rows if r[0] == setting]
            ax.loglog([r[1] for r in pts], [r[4] for r in pts], style + "-",
                      label=f"{setting}, {'LSH + bounds' if setting == 'self-lsh' else 'exact bounds'}")
            naive = [r for r in pts if r[3]]
            ax.loglog([r[1] for r in naive], [r[3] for r in naive], style + "--", label=f"{setting}, naive")
        ax.set_xlabel("records N")
        ax.set_ylabel("seconds")
        ax.set_title(f"AST match-rate decontamination, tau={args.tau}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
