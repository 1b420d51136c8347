"""evaluation.diagnose: the model's next-token choice and the training text's commonest indented line starts."""

from __future__ import annotations

import json

import pytest

from phi1lib.errors import DataError
from phi1lib.evaluation import diagnose
from phi1lib.evaluation.completions import generate_local, load_model
from phi1lib.problems import load_humaneval

FUNCS = [
    'def add(a, b):\n    """Add."""\n    return a + b\n',
    'def first(xs):\n    """\n    The first item.\n    """\n    if xs:\n        return xs[0]\n    return None\n',
]


def test_line_starts_counts_lines_at_exactly_that_indent():
    rows = diagnose.line_starts(FUNCS, indent=4)
    # 4-space lines: '"""Add."""', 'return a + b', '"""', 'The first', '"""', 'if xs:', 'return None' (8-space skipped)
    got = {r["line starts with"]: (r["lines"], r["share of lines"]) for r in rows}
    assert got['"""'] == (3, round(3 / 7, 4))
    assert got["return"] == (2, round(2 / 7, 4))
    assert rows[0]["line starts with"] == '"""'
    assert sum(r["lines"] for r in diagnose.line_starts(FUNCS, indent=8)) == 1


def test_line_starts_reads_a_jsonl_file_and_refuses_text_without_such_lines(tmp_path):
    path = tmp_path / "ex.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in FUNCS))
    assert diagnose.file_line_starts(path, k=1)[0]["lines"] == 3
    with pytest.raises(DataError, match="no line indented by exactly 4 spaces"):
        diagnose.line_starts(["x = 1\n"])


def test_next_tokens_ranks_the_models_choices_and_the_first_is_greedys(tiny_model):
    prompt = load_humaneval()[0]["prompt"]
    loaded = load_model(tiny_model, "cpu")
    rows = diagnose.next_tokens(tiny_model, prompt + "    return", k=4, model=loaded)
    probs = [r["probability"] for r in rows]
    assert len(rows) == 4 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert len({r["token"] for r in rows}) == 4
    # Greedy generation from the same text writes the top-ranked token first.
    problem = dict(load_humaneval()[0], prompt=prompt + "    return")
    [done] = generate_local([problem], tiny_model, max_new_tokens=1, progress=False, threads=1)
    first = eval(rows[0]["token"])  # noqa: S307 - the repr of a string this test produced
    assert done["raw"].startswith(first) or first.startswith(done["raw"])
    with pytest.raises(DataError, match="the text is empty"):
        diagnose.next_tokens(tiny_model, "", model=loaded)


def test_next_tokens_after_an_indent_sees_the_line_as_the_tokenizer_cuts_it(tiny_model):
    loaded = load_model(tiny_model, "cpu")
    _, tok = loaded
    prompt = load_humaneval()[0]["prompt"]
    # A real body line, tokenized: the context is every token that ends before the word's own token.
    enc = tok(prompt + "    return numbers", add_special_tokens=False, return_offsets_mapping=True)
    cut = next(k for k, (_, end) in enumerate(enc["offset_mapping"]) if end > len(prompt) + 4)
    prefix = tok.decode(enc["input_ids"][:cut])
    assert tok(prefix, add_special_tokens=False)["input_ids"] == enc["input_ids"][:cut]
    assert diagnose.next_tokens(tiny_model, prompt, indent=4, model=loaded) == \
        diagnose.next_tokens(tiny_model, prefix, model=loaded)
