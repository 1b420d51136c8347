"""Stage 1, filtering (paper §2.1): annotate a subset for educational value, embed, learn a random forest,
keep the best of the pool.

`stage` (FilterConfig, budget_lines, estimate, run, FilterResult; the named steps, threshold and
scoring), `corpus` (readers: installed Python, folders, JSONL/Parquet, the hub), `annotate` (the
LLM annotator and its heuristic stand-in, strict rating parser), `classifier` (forest, baselines,
metrics, save/load).
"""

from .stage import (OUT_COLUMNS, STAGE, FilterConfig, FilterResult, budget_lines, choose_threshold, count_tokens,
                    estimate, examples_html, examples_table, load_pool, run, score_pool)

__all__ = ["STAGE", "OUT_COLUMNS", "FilterConfig", "FilterResult", "budget_lines", "estimate", "run", "load_pool",
           "choose_threshold", "count_tokens", "examples_html", "examples_table", "score_pool"]
