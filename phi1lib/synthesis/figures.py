"""Chapter 2's figures from a synthesis result (and the decontamination result): what was asked, what came back.

    coverage_heatmap(result, topics, audiences)   # accepted textbooks per topic x audience (prompt metadata)
    lengths_histogram(result)                     # characters per accepted record, per kind
    funnel(result, decontam_table)                # requested -> answered -> checked -> deduplicated -> pruned

Every title names the generator, so a stand-in's output is never mistaken for an LLM's.
matplotlib is imported inside the functions (a heavy library; the stage does not need it).
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

from .extractive import GENERATOR


def generator_label(result: Any, kind: str) -> str:
    """'extractive STAND-IN (not an LLM)' or the model name that wrote `kind`'s records."""
    gen = (result.made.get(kind) or {}).get("generator", result.generator)
    return "extractive STAND-IN (not an LLM)" if gen == GENERATOR else gen


def coverage_matrix(records: Sequence[dict], topics: Sequence[str], audiences: Sequence[str]):
    """DataFrame topics x audiences: how many records were asked for each combination (prompt metadata)."""
    import pandas as pd

    counts = collections.Counter((r.get("topic"), r.get("audience")) for r in records)
    return pd.DataFrame([[counts.get((t, a), 0) for a in audiences] for t in topics], index=list(topics),
                        columns=list(audiences))


def coverage_heatmap(result: Any, topics: Sequence[str], audiences: Sequence[str], ax=None):
    """Accepted textbook sections per topic (rows) x audience (columns). Counts the prompts' metadata:
    a filled cell says a section was asked for that pair and accepted, not that its text fits it."""
    import matplotlib.pyplot as plt

    m = coverage_matrix(result.records("textbook"), topics, audiences)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, max(4.0, 0.16 * len(topics))))
    im = ax.imshow(m.to_numpy(), aspect="auto", cmap="Greens", vmin=0)
    ax.set_yticks(range(len(topics)), [t[:38] for t in topics], fontsize=6)
    ax.set_xticks(range(len(audiences)), [a[:28] for a in audiences], fontsize=6, rotation=60, ha="right")
    covered = int((m.sum(axis=1) > 0).sum())
    ax.set_title(f"Accepted textbook sections per topic x audience (prompt metadata)\n"
                 f"{covered} of {len(topics)} topics; generator: {generator_label(result, 'textbook')}", fontsize=8)
    ax.figure.colorbar(im, ax=ax, shrink=0.5, label="sections")
    return ax


def lengths_histogram(result: Any, ax=None, bins: int = 30):
    """Characters per accepted record, one histogram per kind (log-scaled x: lengths span decades)."""
    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    lengths = {kind: [len(r["text"]) for r in result.records(kind)] for kind in result.files}
    every = [n for ns in lengths.values() for n in ns]
    if not every:
        ax.set_title("no accepted records")
        return ax
    edges = np.logspace(np.log10(max(min(every), 1)), np.log10(max(every) + 1), bins)
    for kind, ns in lengths.items():
        ax.hist(ns, bins=edges, alpha=0.6, label=f"{kind}s ({len(ns)}; median {int(np.median(ns)) if ns else 0:,} "
                                                 f"chars; {generator_label(result, kind)})")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("characters per accepted record (log scale)")
    ax.set_ylabel("records")
    ax.legend(fontsize=7)
    ax.set_title("Lengths of the accepted records", fontsize=9)
    return ax


def funnel_counts(result: Any, kind: str, decontam_table: Sequence[dict] | None = None) -> list[tuple[str, int]]:
    """(step, records left) from requested to accepted for one kind; for exercises also what is kept after
    pruning at each tau (decontamination rows: tau, kept)."""
    c = result.counts[kind]
    steps = [("requested", c["requested"]), ("answered (source found)" if c.get("no_source") else "answered",
                                              c["requested"] - c["no_source"] - c["llm_errors"]),
             ("passed the static checks", c["generated"] - c["failed_checks"])]
    if kind == "exercise":
        steps.append(("passed the sandbox (or no doctests)", c["generated"] - c["failed_checks"] - c["failed_sandbox"]))
    steps.append(("not a duplicate = accepted", c["accepted"]))
    if kind == "exercise":
        steps += [(f"kept after pruning at tau={row['tau']:g}", row["kept"])
                  for row in sorted(decontam_table or [], key=lambda r: -r["tau"])]
    return steps


def funnel(result: Any, decontam_table: Sequence[dict] | None = None, axes=None):
    """Horizontal bars per kind: how many records survive each step, the accepted exercises split into
    executed in the sandbox and not executed."""
    import matplotlib.pyplot as plt

    kinds = [k for k in ("textbook", "exercise") if k in result.counts]
    all_steps = [funnel_counts(result, kind, decontam_table if kind == "exercise" else None) for kind in kinds]
    if axes is None:
        sizes = [len(steps) for steps in all_steps]
        _, axes = plt.subplots(len(kinds), 1, figsize=(7, 1.0 + 0.3 * sum(sizes)), squeeze=False,
                               gridspec_kw={"height_ratios": sizes}, constrained_layout=True)
        axes = axes[:, 0]
    for ax, kind, steps in zip(axes, kinds, all_steps):
        names, values = [s for s, _ in steps][::-1], [v for _, v in steps][::-1]
        ax.barh(names, values, color="tab:blue")
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:,}", va="center", fontsize=7)
        c = result.counts[kind]
        if kind == "exercise" and "executed" in c:
            y = names.index("not a duplicate = accepted")
            ax.barh([y], [c["executed"]], color="tab:green", label=f"executed in the sandbox ({c['executed']})")
            ax.legend(fontsize=7, loc="lower right")
        ax.tick_params(labelsize=7)
        ax.set_title(f"{kind}s, {generator_label(result, kind)}", fontsize=8)
    axes[-1].set_xlabel("records")
    return axes
