"""The LLM layer: cached, rate-limited, resumable, budget-capped generation against any OpenAI-compatible endpoint.

`client` (Request, Result, LLMClient), `providers` (OpenAI-compatible, functions), `local`
(transformers), `store` (SQLite results), `limits` (rate limits, backoff), `guard` (spend cap),
`tokens` (token counting), `progress` (console bars), `batch` (the Batch API).
"""

from .client import (IncompleteRun, LLMClient, Request, Result, error_reasons, failure_reasons, incomplete,
                     require_all)
from .limits import Backoff, RateLimits
from .local import TransformersProvider
from .providers import Completion, FunctionProvider, OpenAIProvider, ProviderError

__all__ = ["Request", "Result", "LLMClient", "IncompleteRun", "require_all", "incomplete", "failure_reasons", "error_reasons", "OpenAIProvider", "TransformersProvider", "FunctionProvider",
           "Completion", "ProviderError", "Backoff", "RateLimits"]
