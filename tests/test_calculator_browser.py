"""costs/calculator.ipynb served by Voilà, opened in headless Chromium: type into a knob, see the total change.

Chromium is driven over its DevTools protocol (websocket-client, a jupyter_server dependency).
Voilà listens on 127.0.0.1 on a free port, fully offline, and both processes are ended here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from phi1lib.paths import costs_dir

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen) -> None:
    """Wait until something listens on 127.0.0.1:port (an HTTP GET of / would start a kernel)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"nothing listened on port {port} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


class CDP:
    """The few DevTools calls the test needs: evaluate JS, type text, press Enter."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expr: str):
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return res.get("result", {}).get("value")

    def wait_for(self, expr: str, pred, timeout: float, what: str):
        deadline, last = time.time() + timeout, None
        while time.time() < deadline:
            last = self.eval(expr)
            if pred(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; last value {last!r}")

    def close(self):
        self.ws.close()


@pytest.fixture
def voila_url(tmp_path):
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    notebook = costs_dir() / "calculator.ipynb"
    cmd = [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"]
    log = open(tmp_path / "voila.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_port(port, 120, proc)
        yield f"http://127.0.0.1:{port}/"
    except Exception:
        log.flush()
        print((tmp_path / "voila.log").read_text()[-3000:])
        raise
    finally:
        _stop(proc)
        log.close()


@pytest.fixture
def chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium; `make test` runs "
                    ".ci/system-deps for this)")
    pytest.importorskip("websocket", reason="websocket-client is needed to drive Chromium (pip install websocket-client)")
    profile = tempfile.mkdtemp(prefix="phi1-chromium-", dir=tmp_path)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
           "--remote-debugging-address=127.0.0.1", "--window-size=1400,1000", "about:blank"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        cdp = CDP(pages[0]["webSocketDebuggerUrl"])
        yield cdp
        cdp.close()
    finally:
        _stop(proc)
        shutil.rmtree(profile, ignore_errors=True)


TOTAL_JS = "(document.querySelector('.phi1-total') || {}).textContent || ''"
KNOB = ".phi1-knob-textbooks-tokens-out input"


def test_change_an_input_and_the_total_changes(voila_url, chromium):
    chromium.call("Page.enable")
    chromium.call("Runtime.enable")
    chromium.call("Page.navigate", url=voila_url)
    first = chromium.wait_for(TOTAL_JS, lambda v: v.startswith("$"), 240, "the calculator to render its total")
    assert first == "$6,478.10"
    chromium.wait_for(f"!!document.querySelector('{KNOB}')", bool, 60, "the textbook-tokens input")
    # Type like a user: focus, select the old value, insert new text, press Enter.
    chromium.eval(f"(() => {{ const el = document.querySelector('{KNOB}'); el.focus(); el.select(); }})()")
    chromium.call("Input.insertText", text="2000")
    for kind in ("keyDown", "keyUp"):
        chromium.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                      nativeVirtualKeyCode=13, text="\r" if kind == "keyDown" else "")
    chromium.eval(f"document.querySelector('{KNOB}').blur()")
    # 1B more textbook output tokens at $0.002/1K plus 0.1B input at $0.0015/1K: +$2,150.
    after = chromium.wait_for(TOTAL_JS, lambda v: v not in ("", first), 120, "the total to change")
    assert after == "$8,628.10"
    rows = chromium.eval("document.querySelectorAll('.phi1-line').length")
    assert rows == 8
