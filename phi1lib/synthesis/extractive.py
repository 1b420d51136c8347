"""OFFLINE STAND-IN for the synthesizer LLM: builds textbook- and exercise-shaped replies from real code.

Not a language model. It answers each synthesis prompt with text extracted from the filtered
code of stage 1 (module and function docstrings, function source, doctests), in the same
reply format an LLM is asked for, so the rest of the pipeline (cache, ledger, parsing, quality
checks, dedup, decontamination) runs unchanged offline. Records it produces are marked
`generator: "extractive-stand-in"`. Plugs into the LLM layer as a `FunctionProvider`.

Which code answers which prompt is retrieval, not writing (`assign_units`): each unit's names
and docstrings are matched against the prompt's topic by the IDF-weighted share of the topic's
content words they contain (`relevance`). A prompt whose topic no unused unit matches well
enough (`min_relevance`) gets no answer and is reported as such, rather than unrelated code;
each answered record carries its `source_relevance` and the topic words it matched. The stand-in
cannot write *for* an audience: the audience only breaks ties between equally relevant units.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

STAND_IN_NAME = "extractive"  # model name: priced at $0 by costs/prices/local.toml
GENERATOR = "extractive-stand-in"
MIN_RELEVANCE = 0.4  # default share (IDF-weighted) of a topic's content words a unit must contain to answer it
AUDIENCE_WEIGHT = 0.1  # the audience's relevance only breaks ties between units relevant to the topic


@dataclass(frozen=True)
class Unit:
    """One extractable piece of source: a documented top-level function, or a module's documented functions."""

    source_id: str
    kind: str  # "textbook" | "exercise"
    name: str
    text: str  # what the stand-in will reply
    about: str = ""  # what retrieval matches a topic against: the function names and docstrings (not the code)


@dataclass(frozen=True)
class Match:
    """The unit retrieved for one prompt, how relevant it is to the topic and which topic words it contains."""

    unit: Unit
    relevance: float  # IDF-weighted share of the topic's content words found in unit.about, in [0, 1]
    matched: tuple[str, ...]  # those words (normalised)

    def meta(self) -> dict:
        """What a record made from this match carries about its source."""
        return {"source": f"{self.unit.source_id}:{self.unit.name}", "source_relevance": round(self.relevance, 3),
                "source_matched": list(self.matched)}


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
        # Private helpers (_name) make poor exercises: their task is rarely stated on its own terms; nor do
        # test cases (test_name), whose docstring describes a check of other code, not a task.
        if isinstance(node, ast.FunctionDef) and ast.get_docstring(node) and not node.name.startswith(("_", "test")):
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
            units.append(Unit(source_id, "exercise", fn.name, f"```python\n{header}{_segment(lines, fn)}```\n",
                              about=f"{fn.name} {ast.get_docstring(fn)}"))
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
        about = [_first_paragraph(module_doc) if module_doc else ""]
        about += [f"{fn.name} {ast.get_docstring(fn)}" for fn in fns[:max_textbook_functions]]
        units.append(Unit(source_id, "textbook", fns[0].name, "\n".join(parts), about=" ".join(about)))
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
_CAMEL = re.compile(r"([a-z])([A-Z])")


def content_words(text: str) -> list[str]:
    """Lower-case words of 3+ letters, snake_case and camelCase split, English stop words dropped,
    plurals folded ("palindromes" -> "palindrome", "queries" -> "query", "classes" -> "class"; "matrices" stays)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = _WORD.findall(_CAMEL.sub(r"\1 \2", text).replace("_", " ").lower())
    out = []
    for w in words:
        if w in ENGLISH_STOP_WORDS:
            continue
        if w.endswith("ies") and len(w) > 4:
            w = w[:-3] + "y"
        elif w.endswith(("sses", "xes", "ches", "shes")):
            w = w[:-2]
        elif w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
            w = w[:-1]
        out.append(w)
    return out


class DocIndex(NamedTuple):
    """What `relevance` scores queries against: built once per set of docs by `doc_index`."""

    vectorizer: Any  # sklearn CountVectorizer (analyzer=content_words, binary) fitted on the docs
    matrix: Any  # scipy sparse, docs x words, 1 where the doc contains the word
    idf: Any  # numpy array, the smoothed idf of each word


def relevance(queries: Sequence[str], docs: "Sequence[str] | DocIndex"):
    """(scores, query word sets): scores[i, j] = the IDF-weighted share of query i's content words
    found in doc j (1.0 = every word; words no doc contains weigh the most, so they pull the share down).
    `docs` may be a `doc_index(docs)` already built (to score several query sets against one index)."""
    import numpy as np

    vec, doc_m, idf = docs if isinstance(docs, DocIndex) else doc_index(docs)
    unseen = np.log(1 + doc_m.shape[0]) + 1.0  # the idf of a word no doc contains
    words = [set(content_words(q)) for q in queries]
    totals = np.array([sum(idf[vec.vocabulary_[w]] if w in vec.vocabulary_ else unseen for w in ws) or 1.0
                       for ws in words])
    scores = (vec.transform(queries).multiply(idf) @ doc_m.T).toarray() / totals[:, None]
    return scores, words


def doc_index(docs: Sequence[str]) -> DocIndex:
    """The index `relevance` scores against: vectorizer, binary doc x word matrix, smoothed idf per word."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(analyzer=content_words, binary=True)
    doc_m = vec.fit_transform(docs)
    idf = np.log((1 + doc_m.shape[0]) / (1 + np.asarray(doc_m.sum(axis=0)).ravel())) + 1.0
    return DocIndex(vec, doc_m, idf)


def assign_units(prompts: Sequence[Any], units: Sequence[Unit], *,
                 min_relevance: float = MIN_RELEVANCE) -> list[Match | None]:
    """Give each prompt the most topic-relevant unused unit (greedy in prompt order), or None when no
    unused unit reaches `min_relevance` (see `relevance`): the stand-in then says it has no code on
    that topic instead of answering with unrelated code.

    Among relevant units, exercise prompts prefer functions whose name starts with the prompt's
    name prefix (the paper's function-name constraint, where the corpus allows), and textbook
    prompts those whose docstrings also mention the audience's words (a tie-breaker only).
    """
    if not prompts or not units:
        return [None] * len(prompts)
    import numpy as np

    abouts = [u.about or f"{u.name} {u.text}" for u in units]
    index = doc_index(abouts)
    topic, topic_words = relevance([p.topic for p in prompts], index)
    relevant = topic >= min_relevance
    rank = topic.copy()
    audiences = [getattr(p, "audience", None) or "" for p in prompts]
    if any(audiences):
        rank += AUDIENCE_WEIGHT * relevance(audiences, index)[0] * relevant
    for i, p in enumerate(prompts):
        prefix = getattr(p, "name_prefix", None)
        if prefix:
            rank[i] += np.array([1.0 if u.name.startswith(prefix) else 0.0 for u in units]) * relevant[i]
    used = np.zeros(len(units), dtype=bool)
    out: list[Match | None] = []
    for i in range(len(prompts)):
        row = np.where(used | ~relevant[i], -np.inf, rank[i])
        j = int(np.argmax(row))
        if not np.isfinite(row[j]):
            out.append(None)
            continue
        used[j] = True
        vocabulary = index.vectorizer.vocabulary_
        matched = tuple(sorted(w for w in topic_words[i] if w in vocabulary and index.matrix[j, vocabulary[w]]))
        out.append(Match(units[j], float(topic[i, j]), matched))
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
