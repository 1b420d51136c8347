"""Peak memory of packing training text into blocks: in memory, to disk, and streamed in shards (`phi1 pack`).

Each variant runs in a fresh subprocess over the same texts (Python sources of this interpreter,
repeated up to --tokens tokens) with the same BPE tokenizer. "memory" and "disk" get the texts as a
list (their baseline includes it) and the script prints the peak RSS each needed *above* the texts,
and the ratio disk/memory: at paper scale (7B tokens) the in-memory path needs the whole int32 stream
more than once per training process; the disk path about one chunk. "shards" is training's path
(training.shards.build_data): it streams a JSONL file, so it never holds the texts; it runs on the
corpus and on one --grow times larger, and the ratio of their peaks above the imports should stay
near 1 (memory bounded by one shard, not by the corpus).

    .venv/bin/python benchmarks/bench_packing.py [--tokens 20e6] [--block 1024] [--grow 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from transformers import PreTrainedTokenizerFast
from phi1lib.training.packing import pack
import datasets, pyarrow, numpy  # noqa: imported before the baseline: both variants need them
from phi1lib.training.shards import Split, build_data
tmp, mode, block = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
texts = json.loads((tmp / "texts.json").read_text()) if mode in ("memory", "disk") else None
tok = PreTrainedTokenizerFast.from_pretrained(str(tmp / "tok"))
tok.eos_token = "<|endoftext|>"
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if texts is not None:
    n = len(pack(texts, tok, block, path=(tmp / "blocks.arrow") if mode == "disk" else None))
else:  # "shards:FILE": training's streamed, sharded packing of a JSONL file
    data = build_data([str(tmp / mode.split(":")[1])], tok, block, Split(0.0), tmp / ("cache-" + mode.split(":")[1]),
                      shard_docs=int(sys.argv[4]))
    n = len(data.train)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"blocks": n, "extra_mb": (peak - base) / 1024, "base_mb": base / 1024, "seconds": seconds}))
"""


def corpus(n_tokens: float) -> list[str]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    texts, chars = [], 0
    while chars < n_tokens * 3.5:  # ~3.5 characters per BPE token on Python source
        for f in files:
            try:
                t = f.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            texts.append(t)
            chars += len(t)
            if chars >= n_tokens * 3.5:
                break
    return texts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=float, default=20e6, help="about how many tokens to pack")
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--grow", type=int, default=4, help="the streamed run's second corpus: this many times larger")
    args = ap.parse_args(argv)
    from phi1lib.training.tokenizer import train_bpe

    with tempfile.TemporaryDirectory(prefix="bench-packing-") as d:
        tmp = Path(d)
        texts = corpus(args.tokens)
        (tmp / "texts.json").write_text(json.dumps(texts))
        train_bpe(texts[:200], 2000).save_pretrained(str(tmp / "tok"))
        rows = {}
        for mode in ("memory", "disk"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(tmp), mode, str(args.block)],
                                 capture_output=True, text=True, check=True)
            rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        tokens = rows["memory"]["blocks"] * args.block
        print(f"{len(texts):,} documents, {sum(map(len, texts)) / 1e6:,.0f} MB of text, {tokens / 1e6:,.1f}M tokens "
              f"in {rows['memory']['blocks']:,} blocks of {args.block}; texts loaded: {rows['memory']['base_mb']:,.0f} MB RSS")
        print(f"{'packing':<8} {'peak RSS above texts':>21} {'seconds':>8}")
        for mode, r in rows.items():
            print(f"{mode:<8} {r['extra_mb']:>18,.0f} MB {r['seconds']:>8.1f}")
        assert rows["disk"]["blocks"] == rows["memory"]["blocks"]
        ratio = rows["disk"]["extra_mb"] / max(rows["memory"]["extra_mb"], 1e-9)
        print(f"\nratio disk/memory peak: {ratio:.2f} (int32 stream alone: {tokens * 4 / 2**20:,.0f} MB)")
        # Training's path: the corpus as a JSONL file, streamed in shards; then one --grow times larger.
        with open(tmp / "small.jsonl", "w") as fh:
            fh.writelines(json.dumps({"text": t}) + "\n" for t in texts)
        with open(tmp / "large.jsonl", "w") as fh:
            for _ in range(args.grow):
                fh.writelines(json.dumps({"text": t}) + "\n" for t in texts)
        shard_docs = max(1, len(texts) // 8)  # the small corpus in 8 shards, the large one in 8 x --grow
        del texts
        streamed = {}
        for name in ("small", "large"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(tmp), f"shards:{name}.jsonl", str(args.block),
                                  str(shard_docs)],
                                 capture_output=True, text=True, check=True)
            streamed[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"\n{'streamed':<8} {'blocks':>10} {'peak RSS above imports':>23} {'seconds':>8}")
        for name, r in streamed.items():
            print(f"{name:<8} {r['blocks']:>10,} {r['extra_mb']:>20,.0f} MB {r['seconds']:>8.1f}")
        grow = streamed["large"]["extra_mb"] / max(streamed["small"]["extra_mb"], 1e-9)
        print(f"ratio peak large/small ({args.grow}x the corpus): {grow:.2f} (flat = memory bounded by a shard)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
