"""Stage 2, synthesis: textbook sections and exercises through the LLM layer, checked and deduplicated."""

from .stage import (CHARS_PER_TOKEN, ESTIMATE_SAMPLE, KINDS, OUT_FILES, PROVIDERS, REJECTED_FILE, SynthesisConfig, SynthesisResult, default_source, ensure_source, estimate_cost, make_provider, reason_category, run_synthesis)
