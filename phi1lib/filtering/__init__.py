"""Stage 1, filtering (paper §2.1): annotate a subset for educational value, embed, learn a random forest,
keep the best of the pool.

`stage` (FilterConfig, budget_lines, estimate, run, FilterResult; the named steps), `view` (what of a
sample is embedded: past its licence header), `heldout` (hand-written snippets the filter never sees), `scoring`
(scoring the pool with the saved forest, the threshold, the pool and its extremes read back), `corpus` (readers: installed Python, folders, JSONL/Parquet, the hub), `annotate` (the
LLM annotator and its heuristic stand-in, strict rating parser), `classifier` (forest or logistic regression
chosen by cross-validation, baselines, metrics, save/load).
"""

from .scoring import auc_table, choose_threshold, examples_html, examples_table, load_pool, score_pool
from .stage import OUT_COLUMNS, STAGE, FilterConfig, FilterResult, budget_lines, count_tokens, estimate, run, \
    scoring_pipeline

__all__ = ["STAGE", "OUT_COLUMNS", "FilterConfig", "FilterResult", "budget_lines", "estimate", "run", "load_pool",
           "choose_threshold", "count_tokens", "examples_html", "examples_table", "score_pool", "auc_table",
           "scoring_pipeline"]
