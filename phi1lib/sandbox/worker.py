"""Sandbox worker: a pre-started interpreter that forks a confined checker + program per job (stdlib only).

Run as `python -s -P worker.py` (a fresh environment: isolated like -I, PYTHONHASHSEED=0) by
`phi1lib.sandbox`; never imported by untrusted code.
Confinement primitives live in `confine`, the wire format in `protocol`, the
checker in `checker`, the program side in `program`.
Per job the worker (trusted, never runs job code) forks a *checker* C, which forks the
*program* P. P runs the untrusted source as another user (when root) in fresh pid/mount
namespaces with rlimits and an audit hook; C runs the benchmark's trusted test code and calls
P's functions over a socket, receiving only plain data (so an always-equal object, patched
builtins or a patched `math.isclose` in P cannot reach the tests; P's other objects reach C only
as `Remote` references). Only C can write the verdict,
on a pipe P never holds; the worker kills and reaps everything the job started.
"""

import io
import json
import math
import os
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback

# Warm imports: what benchmark programs typically import, so a forked child starts fast.
import bisect, collections, copy, datetime, decimal, fractions, functools, hashlib, heapq  # noqa: E401,F401
import itertools, operator, random, re, statistics, string, typing, unicodedata  # noqa: E401,F401

# Siblings by path: the worker runs as `python -s -P` (no script dir on sys.path).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from confine import (CAPS, CLONE_NEWNS, JOB_WORKDIR, PR_SET_DUMPABLE, PR_SET_PDEATHSIG,  # noqa: E402
                     _count_user_procs, _prctl, _static_filesystem, _unshare, covered_interpreter_dirs,
                     interpreter_dirs, probe, program_environment, sweep)
from protocol import MAX_FRAME, dec, enc, recv_frame, send_frame  # noqa: E402
from checker import _checker_main  # noqa: E402

# ---- the worker loop ---------------------------------------------------------------------------
def run_job(job, scratch):
    max_out = int(job.get("max_output", 65536))
    job["_ns"] = CAPS["pidns"]
    job["_keep"] = CAPS["keep"]
    job["_uid"] = CAPS["uid"]
    job["_home"] = CAPS.get("home") if CAPS["uid"] is None else None
    job["_nproc"] = 64 if CAPS["uid"] is not None else _count_user_procs(os.getuid()) + 64
    job["_workdir"] = None if job["_ns"] else tempfile.mkdtemp(dir=scratch)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ver_r, ver_w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            _prctl(PR_SET_DUMPABLE, 0)  # P (same uid in fallback) cannot read C's memory or fds
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (null, out_r, out_w, err_r, err_w, ver_r):
                os.close(fd)
            sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
            sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
            cpu = int(math.ceil(job["timeout_s"])) + 2
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            _checker_main(job, ver_w)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(71)
    for fd in (out_w, err_w, ver_w):
        os.close(fd)
    bufs = {out_r: bytearray(), err_r: bytearray(), ver_r: bytearray()}
    truncated = {out_r: False, err_r: False}
    open_fds = [out_r, err_r, ver_r]
    deadline = t0 + float(job["timeout_s"])
    timed_out = False

    def drain(fd):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        buf = bufs[fd]
        room = (MAX_FRAME if fd == ver_r else max_out) - len(buf)
        buf += chunk[:max(room, 0)]
        if len(chunk) > room and fd in truncated:
            truncated[fd] = True
        return True

    # Only C holds the verdict pipe's write end (P closes it first thing): a whole frame on it, or its EOF,
    # means C is done (it exits right after writing; no need to wait for that).
    while ver_r in open_fds and not _whole_frame(bufs[ver_r]):
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(open_fds, [], [], left)
        for fd in ready:
            if not drain(fd):
                open_fds.remove(fd)
    seconds = time.monotonic() - t0
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    sweep()
    for fd in list(open_fds):
        os.set_blocking(fd, False)
        while drain(fd):
            if not select.select([fd], [], [], 0)[0]:
                break
    for fd in (out_r, err_r, ver_r):
        os.close(fd)
    if job["_workdir"]:
        shutil.rmtree(job["_workdir"], ignore_errors=True)
    verdict = None
    raw = bytes(bufs[ver_r])
    if len(raw) >= 4 and struct.unpack(">I", raw[:4])[0] == len(raw) - 4:
        try:
            verdict = json.loads(raw[4:])
        except ValueError:
            verdict = None
    if verdict is not None:  # a verdict C wrote before the deadline stands
        status, reason = verdict["status"], verdict["reason"]
    elif timed_out:
        status, reason = "timeout", f"timed out after {job['timeout_s']:g} s"
    else:
        status, reason = "error", "the sandbox checker exited without a verdict"
    out = bytes(bufs[out_r]).decode("utf-8", "replace") + ("\n[output truncated]" if truncated[out_r] else "")
    err = bytes(bufs[err_r]).decode("utf-8", "replace") + ("\n[output truncated]" if truncated[err_r] else "")
    if status == "error" and err:
        reason += ": " + err.strip().splitlines()[-1][:300]
    return {"status": status, "reason": reason, "stdout": out, "stderr": err, "seconds": round(seconds, 4)}


def _whole_frame(buf):
    return len(buf) >= 4 and len(buf) - 4 >= struct.unpack(">I", bytes(buf[:4]))[0]


def _warm():
    """Pay once, in the worker, for what every forked child would otherwise pay per job: the first
    compile() builds all of CPython's AST types (~4 ms, copied again in each fork); then freeze
    what exists so a child's garbage collections never walk (and copy) the worker's objects."""
    interpreter_dirs()
    compile("def _f(x):\n    return [x, (x,), {x: x}]\n", "<warm>", "exec")
    dec(enc([1, (2,), {3: {4}}, b"", 2**64, float("inf")]))
    import gc
    gc.collect()
    gc.freeze()


def main():
    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started us exits (callers start
    # workers from pool threads). The worker ends on EOF of stdin instead, i.e. when its caller
    # closes the pipe or dies, after at most one job's timeout.
    try:
        import pwd
        CAPS["home"] = os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir)
    except (ImportError, KeyError):
        CAPS["home"] = None
    CAPS.update(probe(basic="--basic" in sys.argv[1:]))
    CAPS["keep"] = covered_interpreter_dirs() if CAPS["pidns"] else []  # bound back into each job's /tmp
    scratch = tempfile.mkdtemp(prefix="phi1-sandbox-")
    os.chmod(scratch, 0o711)
    if CAPS["pidns"]:
        if _unshare(CLONE_NEWNS):
            _static_filesystem()
        else:
            CAPS["pidns"] = False
    if CAPS["pidns"]:  # every program's workdir is the same path: set its environment once, here
        os.environ.clear()
        os.environ.update(program_environment(JOB_WORKDIR))
    _warm()
    send_frame(1, {"hello": CAPS})
    try:
        while True:
            msg = recv_frame(0, limit=1 << 30)
            if msg is None:
                break
            try:
                reply = run_job(msg, scratch)
            except Exception as exc:  # a worker bug must not take the pool down
                sweep()
                reply = {"status": "error", "reason": f"sandbox worker: {type(exc).__name__}: {exc}",
                         "stdout": "", "stderr": traceback.format_exc()[-2000:], "seconds": 0.0}
            send_frame(1, reply)
    finally:
        sweep()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
