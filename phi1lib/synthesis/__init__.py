"""Stage 2, synthesis (paper §2.2): textbook sections and exercises through the LLM layer, checked and deduplicated.

`stage` (SynthesisConfig, budget_lines, estimate, run, SynthesisResult; the per-kind stored-result
rule), `generate` (the work loop: request -> check -> sandbox -> dedup, a GenerationOutcome),
`prompts` (seeded topic x audience / topic x name prompts), `quality` (reply parsing and checks),
`extractive` (the offline STAND-IN that retrieves stage 1's code by topic), `dedup`, `diversity`,
`figures` (chapter 2's coverage heatmap, lengths histogram and funnel).
"""

from .generate import GenerationOutcome
from .stage import (KINDS, PROVIDERS, STAGE, STAND_IN_NOTE, SynthesisConfig, SynthesisResult, budget_lines, estimate,
                    kind_config, make_provider, parse_shard, reason_category, run, run_shard)

__all__ = ["STAGE", "KINDS", "PROVIDERS", "STAND_IN_NOTE", "SynthesisConfig", "SynthesisResult", "GenerationOutcome",
           "budget_lines", "estimate", "run", "kind_config", "make_provider", "reason_category",
           "run_shard", "parse_shard"]
