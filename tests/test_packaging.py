"""A plain (non-editable) install finds the price books, scenarios and calculator outside the checkout."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phi1lib.paths import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip install --no-deps --target` of a copy of the source tree (no build files left in the repo)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    ignore = shutil.ignore_patterns(".git", ".venv", "runs", "book", "_build", "*.egg-info", "build", "__pycache__",
                                    ".pytest_cache", ".hypothesis", "notebooks", "tests", "benchmarks")
    shutil.copytree(REPO_ROOT, src, ignore=ignore)
    target = tmp / "site"
    # Offline build with the venv's own setuptools when it has one; else pip's isolated build env.
    offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *offline,
                           "--target", str(target), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.rmtree(src)  # the checkout copy is gone: only the install remains
    return target


def test_installed_package_prices_the_seed_from_anywhere(installed, tmp_path):
    code = (
        "import json, phi1lib, phi1lib.paths as p, phi1lib.budget as b\n"
        "book = b.load_prices()\n"
        "r = b.price_scenario(b.load_scenario('phi1-paper'), book)\n"
        "print(json.dumps({'pkg': phi1lib.__file__, 'costs': str(p.costs_dir()), 'total': r.total_usd,"
        " 'files': len(book.files), 'scenarios': sorted(b.list_scenarios()),"
        " 'app': (p.costs_dir() / 'calculator.ipynb').is_file()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PHI1_COSTS_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(installed)
    # -S: no site-packages, so the editable install of this checkout cannot leak in; the budget
    # model needs nothing outside the standard library.
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert Path(out["pkg"]).is_relative_to(installed)
    assert Path(out["costs"]).is_relative_to(installed), out["costs"]
    assert round(out["total"], 2) == 6478.10
    assert out["files"] == len(list((REPO_ROOT / "costs" / "prices").glob("*.toml")))
    assert {"phi1-paper", "phi1-2025"} <= set(out["scenarios"])
    assert out["app"], "costs/calculator.ipynb should ship with the package"
