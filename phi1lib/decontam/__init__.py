"""Stage 2b, decontamination (paper §5): n-gram, embedding and AST-match overlap of the exercises with the benchmarks.

`stage` (DecontamConfig, budget_lines, estimate, run, DecontamResult; the three measures),
`ast_match` (the AST match rate with normalized identifiers, exact candidate pruning) and `blocks` (the three
measures as datatrove blocks applied per shard against a benchmark side computed once; `run` uses them).
"""

from .stage import STAGE, TAUS, DecontamConfig, DecontamResult, budget_lines, estimate, run

__all__ = ["STAGE", "TAUS", "DecontamConfig", "DecontamResult", "budget_lines", "estimate", "run"]
