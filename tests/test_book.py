"""The Jupyter Book: its table of contents, offline widget JavaScript, results page, and a reader's check.

The reader's check builds the book (or takes an existing build from $PHI1_BOOK_HTML, e.g. after
`make book`) and opens it in headless Chromium through book/screenshot.sh: the pages must
render, show their titles, and load the widget JavaScript from the book's own folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phi1lib.paths import REPO_ROOT

BOOK = REPO_ROOT / "book"
STAGES = ["00_budget", "01_filtering", "02_synthesis", "03_pretraining", "04_finetuning", "05_evaluation"]
CDN_HOSTS = ("cdn.jsdelivr.net", "cdnjs.cloudflare.com", "unpkg.com/@jupyter-widgets", "unpkg.com/requirejs",
             "unpkg.com/mathjax")


def _yaml(path: Path):
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _toc_files(toc: dict) -> list[str]:
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    return files


# -- configuration (fast) -------------------------------------------------------------------

def test_toc_lists_intro_every_stage_results_and_a100():
    files = _toc_files(_yaml(BOOK / "_toc.yml"))
    assert files[0] == "intro"
    assert [f for f in files if f.startswith("notebooks/")] == [f"notebooks/{s}" for s in STAGES]
    assert {"results", "a100"} <= set(files)
    for narrative in ("intro.md", "a100.md", "results.ipynb"):
        assert (BOOK / narrative).is_file(), narrative
    # Chapters are reached through a symlink so `jupyter-book build book` sees ../notebooks.
    assert (BOOK / "notebooks").resolve() == (REPO_ROOT / "notebooks").resolve()


def test_widget_javascript_is_vendored_not_fetched():
    sphinx = _yaml(BOOK / "_config.yml")["sphinx"]["config"]
    scripts = sphinx["nb_ipywidgets_js"]
    assert len(scripts) == 2
    extra = [BOOK / p for p in sphinx["html_extra_path"]]
    for src, attrs in scripts.items():
        assert "://" not in src, f"{src} would be loaded from the network"
        assert not any("cdn" in str(v) for v in (attrs or {}).values()), attrs
        # Sphinx prefixes "_static/"; "../" climbs back to the HTML root, which html_extra_path fills.
        rel = Path(os.path.normpath(Path("_static") / src))
        assert rel.parts[0] != "_static", f"{src}: _static .js files are auto-loaded on every page (double render)"
        assert any((root / rel).is_file() for root in extra), f"{src} not found under {extra}"
    assert not (BOOK / "_static").exists() or not list((BOOK / "_static").rglob("*.js"))
    mathjax = Path(os.path.normpath(Path("_static") / sphinx["mathjax_path"]))
    assert "://" not in sphinx["mathjax_path"] and any((root / mathjax).is_file() for root in extra)


def test_vendored_versions_match_readme_and_ipywidgets():
    import ipywidgets

    folder = BOOK / "_extra" / "_widgets"
    readme = (BOOK / "_extra" / "README.md").read_text(encoding="utf-8")
    require_version = re.search(r"RequireJS (\d+\.\d+\.\d+)", (folder / "require.js").read_text()[:400]).group(1)
    assert f"`requirejs` | {require_version}" in readme
    manager = re.search(r"`@jupyter-widgets/html-manager` \(`dist/`\) \| (\d+)\.\d+\.\d+", readme)
    # html-manager 1.x draws the state that ipywidgets 8 saves (protocol 2.0.0).
    assert manager and int(manager.group(1)) == int(ipywidgets.__version__.split(".")[0]) - 7
    assert (folder / "embed-amd.js").stat().st_size > 1_000_000
    mathjax = (BOOK / "_extra" / "_mathjax" / "tex-mml-chtml.js").read_text(encoding="utf-8")
    version = re.search(r'VERSION="?(\d+\.\d+\.\d+)', mathjax) or re.search(r"version:\s*\"(\d+\.\d+\.\d+)", mathjax)
    assert version and f"`mathjax` | {version.group(1)}" in readme
    assert list((BOOK / "_extra" / "_mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


def test_committed_notebooks_in_book_have_no_outputs():
    import nbformat

    nb = nbformat.read(BOOK / "results.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def test_every_chapter_names_its_preset_in_one_parameters_cell():
    """One cell per notebook, tagged `parameters` (papermill's convention), sets the preset the chapter runs and
    its run folder; no other code cell names the book's preset (chapters still show the GPU presets' plans by
    name), so a reader changes one line to run a chapter on another preset."""
    import nbformat

    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")) + [BOOK / "results.ipynb"]:
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "tiny" in tagged[0].source, path.name
        naming = [c for c in cells if '"tiny"' in c.source or "'tiny'" in c.source]
        assert naming == tagged, path.name


# -- the results page (executes a kernel: slow) ---------------------------------------------

def _execute(notebook: Path, run_dir: Path):
    import nbclient
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    old = os.environ.get("PHI1_RUN_DIR")
    os.environ["PHI1_RUN_DIR"] = str(run_dir)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(notebook.parent)}}).execute()
    finally:
        os.environ.pop("PHI1_RUN_DIR") if old is None else os.environ.__setitem__("PHI1_RUN_DIR", old)
    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            images += "image/png" in data
            texts += [out.get("text", ""), data.get("text/markdown", ""), data.get("text/html", ""),
                      data.get("text/plain", "")]
    return "\n".join(texts), images


def _fake_report(rng) -> dict:
    from phi1lib.pipeline.ablation import compare_rows

    models = ["unfiltered", "filtered", "filtered+textbooks", "filtered+textbooks+exercises"]
    rows = [{"model": m, "seeds": [0, 1, 2], "humaneval_bpb": [round(rng.uniform(2, 3), 4) for _ in range(3)],
             "pass_at_1": round(rng.uniform(0, 2), 2), "paper_pass_at_1": round(rng.uniform(10, 50), 2)}
            for m in models]
    compare_rows(rows)
    stages = {s: {"status": "ran", "seconds": round(rng.uniform(5, 300), 1), "estimate_usd": 0.0,
                  "estimate_wall_hours": 0.01, "estimate_gpu_hours": 0.0, "measured_usd": 0.0, "stand_in": None}
              for s in ("filtering", "synthesis", "pretrain", "finetune", "evaluation", "ablation")}
    return {"preset": "tiny", "run_dir": "x", "total_seconds": 1.0, "stages_seconds": 1.0, "stages": stages,
            "ablation": rows, "ablation_notes": [f"note {rng.randint(1000, 9999)}"], "evaluation": {},
            "spent_usd": 0.0}


@pytest.mark.slow
def test_results_page_renders_the_report_it_finds(tmp_path):
    import random

    report = _fake_report(random.Random(7))
    (tmp_path / "report.json").write_text(json.dumps(report))
    text, images = _execute(BOOK / "results.ipynb", tmp_path)
    assert images >= 2  # time per stage, ablation bars
    for row in report["ablation"]:
        assert f"{row['humaneval_bpb_mean']:.4f} ± {row['humaneval_bpb_ci']:.4f}" in text
        assert f"{row['paper_pass_at_1']:.2f}" in text
    for stage in report["stages"].values():
        assert f"{stage['seconds']:,.1f}" in text
    assert report["ablation_notes"][0] in text
    for row in report["ablation"][1:]:
        assert f"**{row['model']}**: {row['step_verdict']}" in text
    assert "No run report yet" not in text


@pytest.mark.slow
def test_results_page_says_clearly_when_there_is_no_report(tmp_path):
    text, images = _execute(BOOK / "results.ipynb", tmp_path / "empty-run")
    assert "No run report yet" in text and str(tmp_path / "empty-run" / "report.json") in text
    assert "phi1 run --preset tiny" in text
    assert images == 0


# -- the reader's check in a browser (slow, needs chromium) ---------------------------------

def _chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _build_smoke_book(tmp: Path) -> Path:
    """Build a copy of the book: the first stage notebook that exists, intro, A100 and results
    executed for real; the other stage notebooks rendered without executing (they run the whole
    pipeline, which `make book` does)."""
    book = tmp / "book"
    # symlinks=False: the copy gets real files for book/notebooks -> ../notebooks.
    shutil.copytree(BOOK, book, symlinks=False, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    present = [s for s in STAGES if (book / "notebooks" / f"{s}.ipynb").is_file()]
    if not present:
        pytest.skip("no stage notebook exists yet in notebooks/")
    for stage in set(STAGES) - set(present):  # a stage not written yet: a page saying so, in the copy only
        (book / "notebooks" / f"{stage}.md").write_text(f"# {stage} (not written yet)\n")
    import yaml

    config = _yaml(book / "_config.yml")
    config["execute"]["exclude_patterns"] = [f"notebooks/{s}.ipynb" for s in present[1:]]
    (book / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    run = tmp / "run"
    run.mkdir()
    env = dict(os.environ, PHI1_RUN_DIR=str(run))
    proc = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(book),
                           "--warningiserror"], capture_output=True, text=True, env=env, timeout=1200)
    log = proc.stdout + proc.stderr
    why = [line for line in log.splitlines() if re.search(r"WARNING:|ERROR:|treated as error|SphinxWarning", line)]
    assert proc.returncode == 0, "\n".join(why[-20:]) or log[-6000:]
    return book / "_build" / "html"


def _h1_texts(dom_file: Path) -> list[str]:
    """Text of each <h1> in a dumped DOM, tags removed (section numbers, header links)."""
    import html as html_lib

    dom = dom_file.read_text(encoding="utf-8")
    return [html_lib.unescape(re.sub(r"<[^>]+>", "", h)).replace("#", "").strip()
            for h in re.findall(r"<h1[^>]*>(.*?)</h1>", dom, re.S)]


def _not_blank(png: Path) -> None:
    from PIL import Image

    img = Image.open(png).convert("L")
    assert img.size == (1280, 2000)
    hist = img.histogram()
    dark = sum(hist[:200]) / sum(hist)
    assert dark > 0.005, f"{png}: almost nothing but background ({dark:.2%} non-white)"
    assert sum(1 for n in hist if n) > 20, f"{png}: too few shades to be a rendered page"


@pytest.mark.slow
@pytest.mark.browser
def test_built_book_in_headless_chromium(tmp_path):
    if not _chromium():
        pytest.skip("Debian's chromium is not installed (make system-deps / apt-get install chromium)")
    given = os.environ.get("PHI1_BOOK_HTML")
    html = Path(given) if given else _build_smoke_book(tmp_path)
    assert (html / "index.html").is_file(), f"no built book at {html}"
    chapter = next(f"notebooks/{s}.html" for s in STAGES if (html / "notebooks" / f"{s}.html").is_file())
    shots = tmp_path / "shots"
    proc = subprocess.run(["bash", str(BOOK / "screenshot.sh"), str(html), str(shots), "index.html", chapter],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr

    # index.html redirects to the introduction; the browser must land there and draw it.
    intro_title = re.search(r"^# (.+)$", (BOOK / "intro.md").read_text(), re.M).group(1)
    assert intro_title in _h1_texts(shots / "index.dom.html")
    _not_blank(shots / "index.png")

    import nbformat

    name = chapter[:-5].replace("/", "_")
    # The notebook the page was built from: beside the build (book/_build/html -> book/notebooks).
    source = html.parent.parent / chapter.replace(".html", ".ipynb")
    nb = nbformat.read(source if source.is_file() else REPO_ROOT / chapter.replace(".html", ".ipynb"), as_version=4)
    heading = next(m.group(1) for c in nb.cells if c.cell_type == "markdown"
                   for m in [re.search(r"^# (.+)$", c.source, re.M)] if m)
    title = re.sub(r"[`*_]", "", heading).strip()
    assert any(title in h for h in _h1_texts(shots / f"{name}.dom.html")), (title, _h1_texts(shots / f"{name}.dom.html"))
    _not_blank(shots / f"{name}.png")
    dom = (shots / f"{name}.dom.html").read_text(encoding="utf-8")

    raw = (html / chapter).read_text(encoding="utf-8")
    assert re.search(r'<script src="[^"]*_widgets/require\.js', raw)
    assert re.search(r'<script src="[^"]*_widgets/embed-amd\.js', raw)
    for host in CDN_HOSTS:
        assert host not in raw, f"{chapter} references {host}"
    # Nothing the page loads comes from the network (sphinx-thebe's inert THEBE_JS_URL string
    # is only fetched when a reader starts a live kernel, which this book does not offer).
    assert not re.search(r'<(script|img)[^>]+src="https?://', raw)
    assert not re.search(r'<link[^>]+href="https?://[^"]+\.css', raw)
    # Each embedded widget view is drawn exactly once (vendored JS loaded once, not from _static).
    views = raw.count('type="application/vnd.jupyter.widget-view+json"')
    assert views >= 1, "the stage chapter shows no widget (the budget calculator opens every stage chapter)"
    assert dom.count('class="widget-subarea"') == views


def test_dollar_amounts_stay_text_but_math_still_renders():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    sphinx = _yaml(BOOK / "_config.yml")["sphinx"]["config"]
    md = MarkdownIt().use(dollarmath_plugin, allow_space=sphinx["myst_dmath_allow_space"],
                          allow_digits=sphinx["myst_dmath_allow_digits"])

    def maths(text):
        return [t.type for t in md.parseInline(text)[0].children if "math" in t.type]

    assert maths("GPT-3.5 cost $0.002 and $0.0015 per 1K tokens, not $29,300.") == []
    assert maths("from $5 to $6") == []
    assert maths("pass@k is $1 - \\binom{n-c}{k} / \\binom{n}{k}$ per problem") == ["math_inline"]
