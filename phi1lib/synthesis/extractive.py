"""OFFLINE STAND-IN for the synthesizer LLM: builds textbook- and exercise-shaped replies from real code.

Not a language model. It answers each synthesis prompt with text extracted from the filtered
code of stage 1 (module and function docstrings, function source, doctests), in the same
reply format an LLM is asked for, so the rest of the pipeline (cache, ledger, parsing, quality
checks, dedup, decontamination) runs unchanged offline. Records it produces are marked
`generator: "extractive-stand-in"`. Plugs into the LLM layer as a `FunctionProvider`.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Sequence

STAND_IN_NAME = "extractive"  # model name: priced at $0 by costs/prices/local.toml
GENERATOR = "extractive-stand-in"


@dataclass(frozen=True)
class Unit:
    """One extractable piece of source: a documented top-level function, or a module's documented functions."""

    source_id: str
    kind: str  # "textbook" | "exercise"
    name: str
    text: str  # what the stand-in will reply


def _first_paragraph(doc: str) -> str:
    para = doc.strip().split("\n\n")[0]
    return " ".join(para.split())


def _doctest_lines(doc: str) -> str:
    """The >>> examples (with their expected output) of a docstring, or ''."""
    out, keep = [], False
    for line in textwrap.dedent(doc).splitlines():
        s = line.strip()
        if s.startswith(">>>") or s.startswith("..."):
            keep = True
            out.append(s)
        elif keep and s:
            out.append(s)
        else:
            keep = False
    return "\n".join(out)


def _documented_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    fns = []
    for node in tree.body:
        # Private helpers (_name) make poor exercises: their task is rarely stated on its own terms.
        if isinstance(node, ast.FunctionDef) and ast.get_docstring(node) and not node.name.startswith("_"):
            args = node.args.posonlyargs + node.args.args
            if args and args[0].arg in ("self", "cls"):
                continue
            fns.append(node)
    return fns


def _segment(lines: list[str], node: ast.AST) -> str:
    start = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
    return textwrap.dedent("".join(lines[start - 1:node.end_lineno]))


def _needed_imports(fn: ast.FunctionDef, imports: list, lines: list[str]) -> str:
    """The module's import statements that bind a name the function uses (so it runs standalone)."""
    used = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
    keep = []
    for imp in imports:
        bound = {(a.asname or a.name).split(".")[0] for a in imp.names}
        if bound & used and not (isinstance(imp, ast.ImportFrom) and imp.level):  # relative imports cannot run
            keep.append("".join(lines[imp.lineno - 1:imp.end_lineno]).strip() + "\n")
    return "".join(keep) + ("\n\n" if keep else "")


def units_from_source(source_id: str, code: str, *, max_body_lines: int = 40,
                      max_textbook_functions: int = 3) -> list[Unit]:
    """The textbook unit and exercise units one code sample yields (none if it does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return []
    lines = code.splitlines(keepends=True)
    fns = _documented_functions(tree)
    units: list[Unit] = []
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    for fn in fns:
        body_lines = fn.end_lineno - fn.body[0].end_lineno
        if 1 <= body_lines <= max_body_lines and len(ast.get_docstring(fn).split()) >= 4:
            header = _needed_imports(fn, imports, lines)
            units.append(Unit(source_id, "exercise", fn.name, f"```python\n{header}{_segment(lines, fn)}```\n"))
    module_doc = ast.get_docstring(tree)
    if fns:
        parts = []
        title = fns[0].name.replace("_", " ")
        parts.append(f"## {title[:1].upper() + title[1:]}\n")
        if module_doc:
            parts.append(_first_paragraph(module_doc) + "\n")
        examples = []
        for fn in fns[:max_textbook_functions]:
            doc = ast.get_docstring(fn)
            parts.append(f"The function `{fn.name}` works as follows. {_first_paragraph(doc)}\n")
            parts.append(f"```python\n{_segment(lines, fn)}```\n")
            ex = _doctest_lines(doc)
            if ex:
                examples.append(ex)
        if examples:
            parts.append("Example usage and its expected output:\n")
            parts.append("```python\n" + "\n".join(examples) + "\n```\n")
        units.append(Unit(source_id, "textbook", fns[0].name, "\n".join(parts)))
    return units


def extract_units(samples: Sequence[tuple[str, str]], **kw) -> dict[str, list[Unit]]:
    """All units of (id, code) samples, grouped by kind, in sample order, exact duplicates dropped."""
    out: dict[str, list[Unit]] = {"textbook": [], "exercise": []}
    seen: set[str] = set()
    for sid, code in samples:
        for u in units_from_source(str(sid), code, **kw):
            if u.text not in seen:
                seen.add(u.text)
                out[u.kind].append(u)
    return out


_WORD = re.compile(r"[a-z]{3,}")


def _words(text: str) -> str:
    return " ".join(_WORD.findall(text.replace("_", " ").lower()))


def assign_units(prompts: Sequence[Any], units: Sequence[Unit]) -> list[Unit | None]:
    """Give each prompt the most topic-relevant unused unit (TF-IDF cosine, greedy in prompt order).

    Exercise prompts prefer functions whose name starts with the prompt's name prefix, so the
    stand-in honours the function-name constraint where the corpus allows. Prompts left over
    once the units run out get None (the stand-in is capped by its source code).
    """
    if not prompts or not units:
        return [None] * len(prompts)
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer()
    unit_m = vec.fit_transform([_words(u.name + " " + u.text) for u in units])
    prompt_m = vec.transform([_words(p.topic) for p in prompts])
    scores = (prompt_m @ unit_m.T).toarray()
    for i, p in enumerate(prompts):
        prefix = getattr(p, "name_prefix", None)
        if prefix:
            scores[i] += np.array([1.0 if u.name.startswith(prefix) else 0.0 for u in units])
    used = np.zeros(len(units), dtype=bool)
    out: list[Unit | None] = []
    for i in range(len(prompts)):
        if used.all():
            out.append(None)
            continue
        row = np.where(used, -np.inf, scores[i])
        j = int(np.argmax(row))
        used[j] = True
        out.append(units[j])
    return out


class ExtractiveStandIn:
    """Callable for `FunctionProvider(fn, name="extractive")`: reply = the unit named in request.meta."""

    name = STAND_IN_NAME

    def __init__(self, units: Sequence[Unit]):
        self.by_key = {(u.kind, u.source_id, u.name): u for u in units}

    def __call__(self, request: Any) -> str:
        meta = request.get("meta") if isinstance(request, dict) else getattr(request, "meta", None)
        meta = meta or {}
        key = (meta.get("kind"), meta.get("source_id"), meta.get("source_name"))
        unit = self.by_key.get(key)
        if unit is None:
            raise KeyError(f"extractive stand-in: no source unit for {key}")
        return unit.text
