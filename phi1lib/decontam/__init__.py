"""Stage 2b, decontamination: n-gram, embedding and AST-match overlap of exercises with the benchmarks; pruning."""

from .stage import (DecontamConfig, DecontamResult, TAUS, ast_matches, benchmark_problems, embedding_neighbours, estimate_cost, ngram_overlap, ngrams, run_decontamination, split_table, table3)
