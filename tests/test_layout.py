"""The layout holds (CONTRIBUTING.md, "Layout"): walk every import of phi1lib and check who may import whom.

A subpackage per stage (they never import each other), shared services that never import a
stage, a few small shared modules at the top, the pipeline as the only place that knows every
stage, no import cycle (imports inside functions count, and there must be none between phi1lib's
own modules), and pyproject listing every subpackage.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from phi1lib.paths import REPO_ROOT

PKG = REPO_ROOT / "phi1lib"
STAGES = {"filtering", "synthesis", "decontam", "training", "evaluation"}
SERVICES = {"budget", "llm", "sandbox", "dataflow"}
SHARED = {"errors", "paths", "jsonl", "presets", "paper", "problems", "embed", "runs", "stage"}
TOP = {"cli", "commands", "pipeline", "__main__", "__init__"}
# The sandbox worker runs as `python -I sandbox/worker.py` and imports its siblings by bare name.
WORKER_SIDE = {"worker", "checker", "program", "protocol", "confine"}


def _module(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, level: int, module: str | None, name: str | None) -> str | None:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level else []
    target = ".".join(base + (module.split(".") if module else []))
    if name and f"{target}.{name}" in MODULES:
        return f"{target}.{name}"
    return target if target in MODULES else None


def _imports() -> list[tuple[str, str, int, bool]]:
    """(importer, imported module, line, inside a function) for every import of a phi1lib module."""
    edges = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_pkg = path.name == "__init__.py"
        in_func: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_func |= {id(n) for n in ast.walk(node) if n is not node}
        for node in ast.walk(tree):
            targets: list[str | None] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    targets = [_resolve(mod, is_pkg, node.level, node.module, a.name) for a in node.names]
                elif node.module and node.module.startswith("phi1lib"):
                    targets = [_resolve(mod, is_pkg, 0, node.module, a.name) for a in node.names]
                elif node.module in WORKER_SIDE and mod.startswith("phi1lib.sandbox."):
                    targets = [f"phi1lib.sandbox.{node.module}"]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("phi1lib")]
            for target in targets:
                if target and target != mod:
                    edges.append((mod, target, node.lineno, id(node) in in_func))
    return edges


EDGES = _imports()


def _group(mod: str) -> str:
    parts = mod.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_every_module_is_placed():
    groups = {_group(m) for m in MODULES} - {"data", "_costs"}
    assert groups <= STAGES | SERVICES | SHARED | TOP, groups - (STAGES | SERVICES | SHARED | TOP)
    loose = sorted(p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(loose) <= 12, loose


def test_no_phi1lib_import_inside_a_function():
    inside = [f"{a}:{line} imports {b}" for a, b, line, in_func in EDGES if in_func]
    assert not inside, "imports between phi1lib modules go at the top of the file:\n" + "\n".join(inside)


@pytest.mark.parametrize("kind", ["stage", "service", "shared"])
def test_dependencies_point_one_way(kind):
    allowed = {"stage": SHARED | SERVICES, "service": SHARED | SERVICES, "shared": SHARED}[kind]
    members = {"stage": STAGES, "service": SERVICES, "shared": SHARED}[kind]
    bad = [f"{a}:{line} imports {b}" for a, b, line, _ in EDGES
           if _group(a) in members and _group(b) != _group(a) and _group(b) not in allowed | {"__init__"}]
    assert not bad, "\n".join(bad)


def test_nothing_imports_the_cli_or_the_calculator_view():
    bad = [f"{a} imports {b}" for a, b, _, _ in EDGES
           if (b in ("phi1lib.cli", "phi1lib.budget.view") or b.startswith("phi1lib.commands"))
           and not a.startswith("phi1lib.commands") and a not in ("phi1lib.__main__", "phi1lib.cli")]
    assert not bad, bad
    assert not [a for a, b, _, _ in EDGES if b == "phi1lib.budget.view"]


def test_no_import_cycle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for a, b, _, _ in EDGES:
        graph[a].add(b)
        # Importing a.b.c runs the packages a and a.b first (unless the importer is inside them).
        parts = b.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in MODULES and not a.startswith(parent + ".") and parent != a:
                graph[a].add(parent)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_pipeline_is_the_only_place_that_knows_every_stage():
    knows: dict[str, set[str]] = {}  # importer (a module; the pipeline as a whole) -> stages it imports
    for a, b, _, _ in EDGES:
        if _group(b) in STAGES and _group(a) not in STAGES:
            knows.setdefault("pipeline" if _group(a) == "pipeline" else a, set()).add(_group(b))
    assert knows.pop("pipeline") == STAGES
    assert all(len(stages) == 1 for stages in knows.values()), knows  # each stage command knows its stage


def test_pyproject_lists_every_subpackage():
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    listed = set(re.findall(r'"(phi1lib(?:\.[a-z_]+)*)"', text.split("[tool.setuptools.package-dir]")[0]))
    folders = {_module(p) for p in PKG.rglob("__init__.py")}
    assert folders <= listed, folders - listed


def test_each_stage_package_exposes_the_contract():
    import importlib

    for name in sorted(STAGES - {"training"}) + ["training"]:
        pkg = importlib.import_module(f"phi1lib.{name}")
        for attr in ("budget_lines", "estimate", "run"):
            assert callable(getattr(pkg, attr, None)), f"phi1lib.{name}.{attr}"
        configs = [v for k, v in vars(pkg).items() if k.endswith("Config")]
        results = [v for k, v in vars(pkg).items() if k.endswith("Result")]
        assert len(configs) == 1 and len(results) == 1, (name, configs, results)
