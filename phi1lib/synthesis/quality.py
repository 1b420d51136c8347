"""Quality checks for synthetic records: parse LLM replies, check Python, run doctests in the sandbox.

A reply that fails a check is not thrown away: the caller stores it in rejected.jsonl with the
reason returned here. Synthetic code is never executed in this process; solutions run only
through `phi1lib.sandbox` (when it cannot run programs, checks are parse-only and say so).
"""

from __future__ import annotations

import ast
import doctest
import re
import textwrap

from .. import sandbox

FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_DOCTEST_PARSER = doctest.DocTestParser()


PY_LANGS = ("python", "py", "python3", "pycon")


def code_blocks(text: str, *, labelled_only: bool = False) -> list[str]:
    """Bodies of the markdown code fences in `text`: python-labelled ones, plus unlabelled ones
    unless `labelled_only` (an unlabelled fence often holds program output, not code)."""
    langs = PY_LANGS if labelled_only else PY_LANGS + ("",)
    return [body for lang, body in FENCE.findall(text) if lang.lower() in langs]


def doctest_source(block: str) -> str | None:
    """If `block` is a doctest transcript (>>> lines), the Python it runs; else None."""
    if ">>>" not in block:
        return None
    try:
        examples = _DOCTEST_PARSER.get_examples(textwrap.dedent(block))
    except ValueError:  # inconsistent indentation inside the transcript
        return None
    return "".join(ex.source for ex in examples)


def _count_doctests(doc: str) -> int:
    try:
        return len(_DOCTEST_PARSER.get_examples(doc))
    except ValueError:
        return 0


def parse_error(source: str) -> str | None:
    """None if `source` parses as Python, else a short reason ('line 3: invalid syntax')."""
    try:
        ast.parse(source)
    except SyntaxError as exc:
        return f"line {exc.lineno}: {exc.msg}"
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        return type(exc).__name__
    return None


def check_textbook(text: str, *, min_chars: int, max_chars: int) -> str | None:
    """Reason a textbook section is rejected, or None: length, at least one code block, all code parses."""
    if len(text) < min_chars:
        return f"too short: {len(text)} chars < min_chars={min_chars}"
    if len(text) > max_chars:
        return f"too long: {len(text)} chars > max_chars={max_chars}"
    blocks = code_blocks(text)
    if not blocks:
        return "no code block: a textbook section must interleave prose with ```python code"
    # Labelled python blocks must parse; unlabelled ones only when they are >>> transcripts.
    checked = [(i, b) for i, b in enumerate(blocks) if b in code_blocks(text, labelled_only=True) or ">>>" in b]
    for i, block in checked:
        err = parse_error(textwrap.dedent(block))
        if err and (source := doctest_source(block)) is not None:
            err = parse_error(source)  # a >>> transcript: check the code it runs
        if err:
            return f"code block {i} does not parse ({err})"
    prose = FENCE.sub("", text).strip()
    if len(prose) < 0.1 * len(text):
        return "almost no prose: the section is nearly all code"
    return None


def parse_exercise(text: str) -> dict:
    """Split an exercise reply into prompt (signature + docstring), solution (body) and entry point.

    Raises ValueError with the rejection reason when the reply is not one documented function.
    """
    blocks = code_blocks(text)
    code = blocks[0] if blocks else text
    code = textwrap.dedent(code).strip("\n") + "\n"
    err = parse_error(code)
    if err:
        raise ValueError(f"does not parse ({err})")
    tree = ast.parse(code)
    funcs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not funcs:
        raise ValueError("no top-level function definition")
    fn = funcs[0]
    doc = ast.get_docstring(fn)
    if not doc or len(doc.split()) < 4:
        raise ValueError(f"function {fn.name!r} has no docstring stating the task")
    body = fn.body[1:]
    if not body or all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                       for s in body):
        raise ValueError(f"function {fn.name!r} has no solution body (only a docstring, pass or ...)")
    lines = code.splitlines(keepends=True)
    doc_end = fn.body[0].end_lineno  # 1-based last line of the docstring statement
    # Everything up to the docstring (imports and helpers above the function included) is the prompt.
    prompt = "".join(lines[:doc_end])
    solution = "".join(lines[doc_end:fn.end_lineno])
    return {"prompt": prompt, "solution": solution, "entry_point": fn.name, "code": "".join(lines[:fn.end_lineno]),
            "n_doctests": _count_doctests(doc)}


def check_exercise_text(code: str, *, min_chars: int, max_chars: int) -> str | None:
    if len(code) < min_chars:
        return f"too short: {len(code)} chars < min_chars={min_chars}"
    if len(code) > max_chars:
        return f"too long: {len(code)} chars > max_chars={max_chars}"
    return None


def doctest_program(code: str) -> str:
    """A standalone program that defines `code`, then raises if any doctest of its functions fails.

    Whole-program mode of the sandbox: passing = running to the end without an exception.
    """
    return (code.rstrip("\n") + "\n\n\n"
            "import doctest as _dt\n"
            "_report = []\n"
            "_runner = _dt.DocTestRunner(optionflags=_dt.NORMALIZE_WHITESPACE | _dt.ELLIPSIS, verbose=False)\n"
            "for _name, _obj in list(globals().items()):\n"
            "    if callable(_obj) and getattr(_obj, '__module__', None) == __name__ and not _name.startswith('_'):\n"
            "        for _t in _dt.DocTestFinder().find(_obj, _name, globs=dict(globals())):\n"
            "            _runner.run(_t, out=_report.append)\n"
            "_res = _runner.summarize(verbose=False)\n"
            "if _res.failed:\n"
            "    _first = ' | '.join(l.strip() for l in ''.join(_report[:1]).splitlines()[2:9] if l.strip())\n"
            "    raise AssertionError(f'{_res.failed} of {_res.attempted} doctest examples failed: {_first}')\n")


def sandbox_available() -> bool:
    """Whether phi1lib.sandbox can run programs here (tests switch it off to exercise the parse-only path)."""
    return hasattr(sandbox, "run_many")


def run_doctests(codes: list[str], *, timeout_s: float = 5.0, workers: int = 2) -> list[str | None]:
    """Run each code's doctests in the sandbox; per code None (passed) or the failure reason.

    Call only when `sandbox_available()`; the code never runs in this process.
    """
    programs = [doctest_program(c) for c in codes]
    results = sandbox.run_many(programs, workers=workers, timeout_s=timeout_s)
    reasons: list[str | None] = []
    for res in results:
        if res.status == "passed":
            reasons.append(None)
        else:
            detail = (getattr(res, "reason", "") or "").strip() or (getattr(res, "stdout", "") or "")[-200:].strip()
            reasons.append(f"sandbox {res.status}: {detail[:300]}")
    return reasons
