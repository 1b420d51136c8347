"""Issue #13 item 7: in the built book, code cells and the budget calculator are not clipped by the content column.

A stage chapter of the built book (from $PHI1_BOOK_HTML, e.g. after `make book`, else the smoke build of
tests/test_book.py) is opened in headless Chromium with a probe script appended to a copy of the page: after
the widgets are drawn it measures every code cell's input and the calculator's boxes and writes the ones
wider than what they show (scrollWidth > clientWidth) into the DOM, which Chromium dumps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from test_book import STAGES, _build_smoke_book, _chromium

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const sel = ".cell_input pre, .cell_output .widget-gridbox, .cell_output .widget-vbox, .cell_output .jupyter-widgets";
  const wide = [...document.querySelectorAll(sel)].filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => e.className + ": " + e.scrollWidth + " > " + e.clientWidth + " px; " + e.textContent.slice(0, 60));
  const out = document.createElement("pre");
  out.id = "phi1-clip-probe";
  out.setAttribute("data-checked", document.querySelectorAll(sel).length);
  out.textContent = JSON.stringify(wide);
  document.body.appendChild(out);
}, 8000));
</script>"""


def _dump_dom(page: Path) -> str:
    profile = Path(tempfile.mkdtemp(prefix="chr"))  # short: Chromium's socket path under it has a length limit
    try:
        proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=20000",
                               "--window-size=1280,2000", "--dump-dom", page.as_uri()],
                              capture_output=True, text=True, timeout=180, env=dict(os.environ, TMPDIR=str(profile)))
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_code_cells_and_calculator_fit_the_content_column(tmp_path):
    if not _chromium():
        pytest.skip("Debian's chromium is not installed (make system-deps / apt-get install chromium)")
    given = os.environ.get("PHI1_BOOK_HTML")
    html = Path(given) if given else _build_smoke_book(tmp_path)
    chapter = next(html / "notebooks" / f"{s}.html" for s in STAGES if (html / "notebooks" / f"{s}.html").is_file())
    probe = chapter.with_name("_clip_probe.html")  # beside the chapter, so its relative links still resolve
    probe.write_text(chapter.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = _dump_dom(probe)
    finally:
        probe.unlink()
    found = re.search(r'<pre id="phi1-clip-probe" data-checked="(\d+)">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run (page failed to load?)"
    assert int(found.group(1)) >= 2, "no code cell or calculator found on the page"
    assert found.group(2) == "[]", f"{chapter.name}: clipped by the content column: {found.group(2)}"
