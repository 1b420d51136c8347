"""The budget: dated price books, the cost formulas, scenarios priced line by line, and the spend ledger.

`pricebook` (costs/prices/*.toml, validated), `estimates` (LLM tokens, training FLOPs, GPU and
CPU time priced into a StageEstimate of line items), `scenario` (a plan as line items; `--set`
knobs; priced into a Budget), `ledger` (measured spend, the cap), `view` (the ipywidgets
calculator; import it explicitly, it pulls in ipywidgets).
"""

from .estimates import (DEFAULT_COFFEE, DEFAULT_MFU, DEFAULT_TOKENS_PER_MINUTE, SANDBOX_SECONDS_PER_PROGRAM,
                        LineItem, StageEstimate, body_params, cappuccinos, combine, embed_flops_per_token,
                        estimate_coffee, estimate_compute, estimate_cpu, estimate_fixed, estimate_llm, estimate_rental,
                        estimate_training, flops_per_token, forward_flops_per_token, fp32_embed_mfu, llm_unit_prices,
                        measured_prompt_tokens, price_llm_usage)
from .ledger import Ledger
from .sensitivity import MFU_SENSITIVITY, format_sensitivity, mfu_sensitivity
from .throughput import Throughput, cpu_embed_seconds, load_throughput, throughput_path
from .pricebook import GPU, Coffee, LLMPrice, PriceBook, Rental, load_prices, parse_date, price_files
from .scenario import (DEFAULTS, EXTRA_MODELS, FIELDS, Budget, Scenario, list_scenarios, load_scenario, model_spec,
                       parse_sets, price_line, price_lines, price_scenario, scenario_dirs, scenario_from_dict, usd)

__all__ = ["DEFAULT_COFFEE", "DEFAULT_MFU", "DEFAULT_TOKENS_PER_MINUTE", "SANDBOX_SECONDS_PER_PROGRAM", "LineItem",
           "StageEstimate", "body_params", "cappuccinos", "combine", "embed_flops_per_token", "estimate_coffee",
           "estimate_compute", "estimate_cpu", "estimate_fixed", "estimate_llm", "estimate_rental",
           "estimate_training", "flops_per_token", "forward_flops_per_token", "fp32_embed_mfu", "llm_unit_prices", "measured_prompt_tokens",
           "price_llm_usage",
           "Ledger", "MFU_SENSITIVITY", "format_sensitivity", "mfu_sensitivity", "Throughput", "cpu_embed_seconds", "load_throughput", "throughput_path", "GPU", "Coffee", "LLMPrice", "PriceBook", "Rental", "load_prices", "parse_date",
           "price_files", "DEFAULTS", "EXTRA_MODELS", "FIELDS", "Budget", "Scenario", "list_scenarios",
           "load_scenario", "model_spec", "parse_sets", "price_line", "price_lines", "price_scenario",
           "scenario_dirs", "scenario_from_dict", "usd"]
