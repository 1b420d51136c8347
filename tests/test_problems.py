"""Benchmark loading: HumanEval from the package, MBPP records from a local file in both prompt
styles (their canonical programs pass in the sandbox), and clear errors when data is missing."""

from __future__ import annotations

import json

import pytest

from phi1lib import problems as P
from phi1lib.errors import ConfigError, DataError

# Records in MBPP's original format (our own small tasks, not the dataset's).
ROWS = [
    {"task_id": 2, "text": "Write a function to double a number.", "code": "def double(x):\r\n    return 2 * x",
     "test_list": ["assert double(2) == 4", "assert double(0) == 0"], "test_setup_code": ""},
    {"task_id": 3, "text": "Write a function to reverse a string.", "code": "def rev(s):\n    return s[::-1]",
     "test_list": ["assert rev('ab') == 'ba'"], "test_setup_code": ""},
    {"task_id": 4, "text": "Write a function to get the maximum of a list.", "code": "def top(xs):\n    return max(xs)",
     "test_list": ["assert top([1, 3, 2]) == 3"], "test_setup_code": ""},
    {"task_id": 11, "text": "Write a function to find the unique even numbers of a list.",
     "code": "import math\ndef helper(x):\n    return x % 2 == 0\ndef evens(xs, limit=None):\n    return {x for x in xs if helper(x)}",
     "test_list": ["assert set(evens([1, 2, 2, 4])) == {2, 4}", "assert evens([]) == set()"],
     "test_setup_code": ""},
    {"task_id": 12, "text": "Write a function to compute the area of a circle.",
     "code": "import math\r\ndef area(r):\r\n    return math.pi * r * r",
     "test_list": ["assert math.isclose(area(1), 3.141592653589793)", "assert area(0) == 0"],
     "test_setup_code": "import math"},
    {"task_id": 13, "text": "Write a function to calculate the height of the given binary tree.",
     "code": "class Node:\r\n    def __init__(self, data):\r\n        self.data = data\r\n        self.left = None\r\n"
             "        self.right = None\r\ndef max_height(node):\r\n    if node is None:\r\n        return 0\r\n"
             "    return 1 + max(max_height(node.left), max_height(node.right))",
     "test_list": ["assert (max_height(root)) == 3", "assert (max_height(root1)) == 1"],
     # MBPP's setup code builds its trees from the class the program defines.
     "test_setup_code": "root = Node(1)\r\nroot.left = Node(2)\r\nroot.left.left = Node(4)\r\nroot1 = Node(9)"},
    {"task_id": 600, "text": "Not in the test split.", "code": "def z():\n    return 0", "test_list": ["assert z() == 0"]},
]


@pytest.fixture()
def mbpp_file(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return path


def test_humaneval_ships_offline():
    probs = P.load_humaneval()
    assert len(probs) == 164 and probs[0]["task_id"] == "HumanEval/0"
    assert all({"prompt", "test", "entry_point", "canonical_solution"} <= set(p) for p in probs)
    assert P.code_prefix(probs[0]) == probs[0]["prompt"]


def test_mbpp_entry_points_skip_builtins():
    assert P.mbpp_entry_point(ROWS[3]) == "evens"  # set(...) is called first
    assert P.mbpp_entry_point(ROWS[4]) == "area"  # math.isclose(...) wraps it


def test_mbpp_docstring_style(mbpp_file):
    probs = P.load_mbpp(mbpp_file, "docstring")
    assert [p["task_id"] for p in probs] == ["MBPP/11", "MBPP/12", "MBPP/13"]  # only ids 11-510
    p = probs[0]
    assert p["prompt"].startswith("def evens(xs, limit=None):\n    \"\"\"Write a function to find the unique even")
    assert "assert set(evens([1, 2, 2, 4])) == {2, 4}" in p["prompt"] and p["prompt"].endswith('"""\n')
    assert p["entry_point"] == "evens" and p["stop"] == list(P.CODEX_STOP)
    assert probs[1]["test"].startswith("import math\nassert math.isclose(area(1)")
    assert "\r" not in probs[1]["canonical_solution"]


def test_mbpp_3shot_style(mbpp_file):
    probs = P.load_mbpp(mbpp_file, "3shot")
    p = probs[1]
    assert p["prompt"].count("[BEGIN]") == 4 and p["prompt"].count("[DONE]") == 3
    assert p["prompt"].startswith("You are an expert Python programmer, and here is your task: Write a function to double")
    assert p["prompt"].endswith("Your code should pass these tests:\n\nassert math.isclose(area(1), 3.141592653589793)\n"
                                "assert area(0) == 0\n[BEGIN]\n")
    assert P.code_prefix(p) == "" and "[DONE]" in p["stop"]


@pytest.mark.parametrize("style", ["docstring", "3shot"])
def test_mbpp_canonical_programs_pass_and_empty_fails(mbpp_file, style):
    from phi1lib.evaluation.scoring import score_samples

    probs = P.load_mbpp(mbpp_file, style)
    samples = [{"task_id": p["task_id"], "completion": c} for p in probs for c in (p["canonical_solution"], "")]
    res = score_samples(samples, probs, workers=2, progress=False)
    assert [r["passed"] for r in res] == [True, False] * 3, [r["reason"] for r in res]
    assert "NameError: name 'Node' is not defined" in res[-1]["reason"]  # the empty program defines no Node


def test_mbpp_errors(mbpp_file, tmp_path):
    with pytest.raises(ConfigError, match="docstring, 3shot"):
        P.load_mbpp(mbpp_file, "5shot")
    with pytest.raises(DataError, match="not found"):
        P.load_mbpp(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_id": 11, "text": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: MBPP record lacks field\(s\) \['code', 'test_list'\]"):
        P.load_mbpp(bad)
    only_test = tmp_path / "test_only.jsonl"
    only_test.write_text("\n".join(json.dumps(r) for r in ROWS[3:5]) + "\n")
    assert len(P.load_mbpp(only_test, "docstring")) == 2
    with pytest.raises(DataError, match="tasks 2, 3, 4"):
        P.load_mbpp(only_test, "3shot")


def test_mbpp_offline_hub_gives_clear_error():
    # conftest sets HF_DATASETS_OFFLINE=1: the hub path must fail with a message naming the fix.
    with pytest.raises(DataError, match="--problems"):
        P.load_mbpp(None)


def test_load_benchmark_dispatch(mbpp_file, tmp_path):
    assert len(P.load_benchmark("humaneval")) == 164
    assert len(P.load_benchmark("mbpp", mbpp_file)) == 3
    with pytest.raises(ConfigError, match="path"):
        P.load_benchmark("jsonl")
    with pytest.raises(ConfigError, match="unknown benchmark"):
        P.load_benchmark("apps")
    own = tmp_path / "own.jsonl"
    own.write_text(json.dumps({"task_id": "X/0", "prompt": "def f():\n", "test": "assert f() == 1",
                               "entry_point": "f"}) + "\n")
    assert P.load_benchmark("jsonl", own)[0]["task_id"] == "X/0"
