"""Sandbox worker: a pre-started interpreter that forks a confined checker + program per job (stdlib only).

Run as `python -I sandbox_worker.py` by `phi1lib.sandbox`; never imported by untrusted code.
Confinement primitives live in `sandbox_confine`, the wire format in `sandbox_protocol`.
Per job the worker (trusted, never runs job code) forks a *checker* C, which forks the
*program* P. P runs the untrusted source as another user (when root) in fresh pid/mount
namespaces with rlimits and an audit hook; C runs the benchmark's trusted test code and calls
P's functions over a socket, receiving only plain data (so an always-equal object, patched
builtins or a patched `math.isclose` in P cannot reach the tests). Only C can write the verdict,
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
import socket
import struct
import sys
import tempfile
import time
import traceback

# Warm imports: what benchmark programs typically import, so a forked child starts fast.
import bisect, collections, copy, datetime, decimal, fractions, functools, hashlib, heapq  # noqa: E401,F401
import itertools, operator, random, re, statistics, string, typing, unicodedata  # noqa: E401,F401
import builtins

# Siblings by path: the worker runs as `python -I` (no script dir on sys.path).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sandbox_confine import (CAPS, CLONE_NEWNS, CLONE_NEWPID, FILE_LIMIT, PR_SET_DUMPABLE,  # noqa: E402
                             PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, _audit_guard, _count_user_procs,
                             _job_filesystem, interpreter_dirs, _prctl, _static_filesystem, _unshare, probe, sweep)
from sandbox_protocol import MAX_FRAME, NotPlain, dec, enc, recv_frame, send_frame  # noqa: E402

# ---- the program side (P): untrusted code runs here -------------------------------------------
def _program_main(job, sock_fd):
    """P: confine this process, define the untrusted source, then serve calls or report done."""
    ns_mode = job["_ns"]
    if ns_mode:  # we are pid 1 of a fresh pid namespace, in a private mount namespace
        workdir = _job_filesystem()
    else:
        workdir = job["_workdir"]
    uid = job["_uid"]
    if uid is not None:
        os.chown(workdir, uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.chmod(workdir, 0o700)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"})
    tempfile.tempdir = workdir
    cpu = int(math.ceil(job["timeout_s"])) + 1
    mem = job["memory_mb"] << 20
    limits = [(resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (mem, mem)),
              (resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT)), (resource.RLIMIT_NOFILE, (64, 64)),
              (resource.RLIMIT_CORE, (0, 0)), (resource.RLIMIT_NPROC, (job["_nproc"], job["_nproc"]))]
    for which, lim in limits:
        resource.setrlimit(which, lim)
    _audit_guard(workdir, None if uid is not None or ns_mode else job["_home"],
                 fork_cap=None if uid is not None else 32)

    send = lambda obj: send_frame(sock_fd, obj)  # noqa: E731
    name = "__main__" if job["mode"] == "program" else "solution"
    glb = {"__name__": name, "__builtins__": builtins}

    def report(exc, isinstance=isinstance, type=type, str=str, repr=repr):  # bound before the program runs
        if isinstance(exc, SystemExit):
            return ["exit", repr(exc.code)]
        if isinstance(exc, MemoryError):
            return ["memory", "MemoryError"]
        return ["raised", type(exc).__name__, str(exc)[:500], _where(exc, "<program>")]

    def flush():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass

    try:
        exec(compile(job["source"], "<program>", "exec"), glb)
    except BaseException as exc:  # the program's own failure, reported to C
        flush()
        send(report(exc))
        os._exit(0)
    flush()
    if job["mode"] == "program":
        send(["done"])
        os._exit(0)
    send(["ready"])
    while True:
        msg = recv_frame(sock_fd)
        if msg is None:
            os._exit(0)
        _, fname, args, kwargs = msg
        fn = glb.get(fname)
        if not callable(fn):
            send(["raised", "NameError", f"the program defines no function {fname!r}", ""])
            continue
        try:
            value = fn(*dec(args), **dec(kwargs))
        except BaseException as exc:
            flush()
            send(report(exc))
            continue
        try:
            reply = ["ret", enc(value)]
        except (NotPlain, RecursionError) as exc:
            reply = ["bad", f"{fname} returned a value of type {exc} that is not plain data "
                            "(only exact builtin types cross to the tests)"]
        flush()
        send(reply)


def _where(exc, filename, lines=None):
    """'line N: <source line>' of the deepest frame in `filename`, for failure reasons."""
    tb, lineno = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    if lineno is None:
        return ""
    text = lines[lineno - 1].strip() if lines and 0 < lineno <= len(lines) else ""
    return f"line {lineno}: {text}"[:300] if text else f"line {lineno}"


# ---- the checker side (C): trusted tests, untrusted answers ------------------------------------
class ProgramGone(BaseException):
    """P died or broke the protocol; a BaseException so test code cannot swallow it."""


_SIGNALS = {signal.SIGKILL: "SIGKILL (memory or CPU limit)", signal.SIGXCPU: "CPU time limit (SIGXCPU)",
            signal.SIGXFSZ: "file size limit (SIGXFSZ)", signal.SIGSEGV: "segmentation fault"}


def _exit_reason(pid):
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "failed", "the program vanished"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return "killed", "killed: " + _SIGNALS.get(sig, signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig))
    return "failed", f"the program exited (code {os.WEXITSTATUS(status)}) before its tests completed"


def _translate(msg):
    """A P report -> (status, reason) for anything but success (P's strings are untrusted: cut)."""
    try:
        kind = msg[0]
        if kind == "exit":
            return "failed", f"the program called sys.exit({str(msg[1])[:50]}) before its tests completed"
        if kind == "memory":
            return "killed", "killed: MemoryError (memory limit)"
        if kind == "raised":
            where = f" ({str(msg[3])[:300]})" if msg[3] else ""
            return "failed", f"{str(msg[1])[:60]}: {str(msg[2])[:500]}{where}".strip()
        if kind == "bad":
            return "failed", str(msg[1])[:300]
    except (IndexError, KeyError, TypeError):
        pass
    return "failed", f"protocol violation by the program: {str(msg)[:200]}"


def _checker_main(job, ver_fd):
    """C: make P, then either wait for it (program mode) or run the tests against it."""
    flags = CLONE_NEWPID | CLONE_NEWNS if job["_ns"] else 0
    if flags:
        if not _unshare(flags):  # the worker's mount namespace is already private
            job["_ns"] = False
    sock_c, sock_p = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ver_fd)  # P must never hold the verdict channel
            sock_c.close()
            _program_main(job, sock_p.fileno())
        except BaseException:
            traceback.print_exc()
        finally:  # whatever the program did, this process never returns into worker code
            os._exit(70)
    sock_p.close()
    fd = sock_c.fileno()

    def finish(status, reason):
        try:
            os.kill(pid, signal.SIGKILL)  # pid 1 of its namespace: takes every descendant with it
        except ProcessLookupError:
            pass
        send_frame(ver_fd, {"status": status, "reason": reason})
        os._exit(0)

    def first():
        try:
            msg = recv_frame(fd)
        except ValueError as exc:
            finish("failed", f"protocol violation by the program: {exc}")
        if msg is None:
            finish(*_exit_reason(pid))
        return msg

    msg = first()
    if not (type(msg) is list and msg and msg[0] in ("done", "ready", "raised", "exit", "memory")):
        finish("failed", f"protocol violation by the program: {str(msg)[:100]}")
    if job["mode"] == "program":
        finish(*(("passed", "") if msg == ["done"] else _translate(msg)))
    if msg != ["ready"]:
        finish(*_translate(msg))

    failure = []

    def proxy_for(fname):
        def proxy(*args, **kwargs):
            if failure:
                raise ProgramGone()
            try:
                payload = ["call", fname, enc(list(args)), enc(kwargs)]
            except NotPlain as exc:
                failure.append(("error", f"the test passes a {exc} argument, which cannot cross to the program"))
                raise ProgramGone()
            send_frame(fd, payload)
            try:
                reply = recv_frame(fd)
            except ValueError as exc:
                reply = ["bad", f"protocol violation by the program: {exc}"]
            if reply is None:
                failure.append(_exit_reason(pid))
                raise ProgramGone()
            if not (type(reply) is list and reply and reply[0] in ("ret", "raised", "bad", "exit", "memory")
                    and len(reply) == {"ret": 2, "raised": 4, "bad": 2, "exit": 2, "memory": 2}[reply[0]]):
                failure.append(("failed", f"protocol violation by the program: {str(reply)[:100]}"))
                raise ProgramGone()
            if reply[0] == "ret":
                try:
                    return dec(reply[1])
                except (NotPlain, ValueError, TypeError, RecursionError) as exc:
                    failure.append(("failed", f"malformed return value from the program: {exc}"))
                    raise ProgramGone()
            if reply[0] == "raised":
                typ = getattr(builtins, reply[1], None)
                if isinstance(typ, type) and issubclass(typ, Exception):
                    raise typ(reply[2])
                raise RuntimeError(f"{reply[1]}: {reply[2]}")
            failure.append(_translate(reply))
            raise ProgramGone()
        proxy.__name__ = fname
        return proxy

    entry = job["entry_point"]
    candidate = proxy_for(entry)
    glb = {"__name__": "__check__", "__builtins__": builtins}
    if job.get("prelude"):
        try:  # the benchmark's prompt: its helpers (e.g. HumanEval/38's encode_cyclic) are trusted
            exec(compile(job["prelude"], "<prompt>", "exec"), glb)
        except Exception:
            pass
    glb[entry] = candidate
    test_lines = job["test"].splitlines()
    try:
        exec(compile(job["test"], "<test>", "exec"), glb)
        if job.get("call_check", True) and callable(glb.get("check")):
            glb["check"](candidate)
    except ProgramGone:
        pass
    except AssertionError as exc:
        if not failure:
            detail = f": {exc}" if str(exc) else ""
            failure.append(("failed", f"failed assertion ({_where(exc, '<test>', test_lines)}){detail}"))
    except MemoryError:
        if not failure:
            failure.append(("error", "the test code ran out of memory"))
    except BaseException as exc:
        if not failure:
            failure.append(("failed", f"{type(exc).__name__}: {str(exc)[:300]} ({_where(exc, '<test>', test_lines)})"))
    if failure:
        finish(*failure[0])
    finish("passed", "")


# ---- the worker loop ---------------------------------------------------------------------------
def run_job(job, scratch):
    max_out = int(job.get("max_output", 65536))
    job["_ns"] = CAPS["pidns"]
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

    # Only C holds the verdict pipe's write end (P closes it first thing), so its EOF means C is done.
    while ver_r in open_fds:
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
    scratch = tempfile.mkdtemp(prefix="phi1-sandbox-")
    os.chmod(scratch, 0o711)
    if CAPS["pidns"]:
        if _unshare(CLONE_NEWNS):
            _static_filesystem()
        else:
            CAPS["pidns"] = False
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
