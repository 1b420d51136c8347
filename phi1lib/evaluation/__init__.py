"""Stage 5, evaluation: completions for HumanEval/MBPP, scored in the sandbox, pass@k, contamination split."""

from .stage import (BENCHMARKS, EvalConfig, EvalResult, SANDBOX_SECONDS_PER_PROGRAM, canonical_loss, category, contamination_table, estimate_cost, failure_breakdown, generate_api, generate_local, load_split, pass_at_k, pass_at_k_report, run_evaluation, sanitize, score_file, score_samples, truncate_at_stop)
