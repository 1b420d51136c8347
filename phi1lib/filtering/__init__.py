"""Stage 1, filtering: annotate a subset for educational value, embed, learn a random forest, keep the best of the pool."""

from .stage import (FilterConfig, FilterResult, STAGE, choose_threshold, count_tokens, estimate_cost, examples_html, examples_table, load_pool, run_filtering, score_pool)
