"""Filtering throughput: samples/s for embedding and for scoring at growing corpus sizes, and how time grows.

    .venv/bin/python benchmarks/bench_filtering.py [--sizes 100 200 400] [--max-length 64] [--embedder minilm-local]

Embedding runs with an empty cache per size (the model is loaded once beforehand, so load time
is excluded); scoring is the forest's predict_proba plus the datasets.map pass over a warm
cache. Growth is printed as time(n)/time(n0) next to n/n0: ~1.0 ratio of ratios = linear.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from phi1lib.embed import Embedder
from phi1lib.filtering import score_pool
from phi1lib.filtering.classifier import save_classifier, train_classifier
from phi1lib.filtering.corpus import read_installed_python


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--embedder", default="minilm-local")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    texts = [r["text"] for r in read_installed_python(max(args.sizes), seed=123)]
    print(f"corpus: {len(texts)} installed Python files; embedder {args.embedder}, max_length {args.max_length}, "
          f"{torch.get_num_threads()} torch threads, device {args.device}")
    base = Embedder(args.embedder, max_length=args.max_length, batch_size=args.batch_size, device=args.device,
                    cache=False, progress=False)
    base.load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.sizes):
            emb = Embedder(args.embedder, max_length=args.max_length, batch_size=args.batch_size, device=args.device,
                           cache=os.path.join(tmp, f"cache-{n}"), progress=False)
            emb._model, emb._tokenizer = base._model, base._tokenizer  # share the loaded weights
            t = time.perf_counter()
            X = emb.embed(texts[:n])
            t_embed = time.perf_counter() - t
            y = (np.arange(n) % 2).astype(int)
            clf = train_classifier(X, y, n_estimators=200, seed=0)
            path = save_classifier(clf, os.path.join(tmp, f"clf-{n}.joblib"), {})
            t = time.perf_counter()
            clf.predict_proba(X)
            t_forest = time.perf_counter() - t
            kwargs = dict(model=args.embedder, max_length=args.max_length, batch_size=args.batch_size,
                          device=args.device, cache=os.path.join(tmp, f"cache-{n}"))
            t = time.perf_counter()
            score_pool(texts[:n], kwargs, path, progress=False)
            t_pool = time.perf_counter() - t
            rows.append((n, t_embed, t_forest, t_pool))
    n0, e0, f0, p0 = rows[0]
    print(f"{'n':>6} {'embed s':>9} {'embed/s':>9} {'forest/s':>10} {'score pass/s':>13} "
          f"{'n/n0':>6} {'embed t/t0':>11} {'score t/t0':>11}")
    for n, te, tf, tp in rows:
        print(f"{n:>6} {te:>9.2f} {n / te:>9.1f} {n / tf:>10.0f} {n / tp:>13.1f} {n / n0:>6.1f} "
              f"{te / e0:>11.2f} {tp / p0:>11.2f}")
    print("linear growth: embed t/t0 ~ n/n0 (the forest and the cached pass are orders of magnitude faster)")


if __name__ == "__main__":
    main()
