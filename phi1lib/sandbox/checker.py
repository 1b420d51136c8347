"""Sandbox checker side (C): trusted test code, untrusted answers (stdlib only).

Forked by the worker per job; forks the program P (`program`), runs the benchmark's
test code and calls P's functions over a socket. P's answers arrive as plain data or as
`Remote` references, so nothing P defines can take part in a test's comparison; functions the
tests pass to P stay here and P calls them back; the verdict goes to the worker on a pipe P
never holds.
"""

import builtins
import os
import signal
import socket
import sys
import traceback

from confine import CLONE_NEWNS, CLONE_NEWPID, _unshare
from program import _program_main
from protocol import MAX_REFS, NotPlain, builtin_exception, dec, enc, recv_frame, send_frame, where


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
    remotes = {}  # reference id -> its one Remote, so `is` works on the checker's side
    non_plain = []  # type names of program objects the entry point returned

    callbacks = []  # functions the tests passed to the program; it calls them back by index

    def ref(obj):
        if type(obj) is Remote:
            return [obj._ref[0], ""]
        if callable(obj) and not isinstance(obj, type):  # a key, predicate, ...: runs here when called
            callbacks.append(obj)
            return [-len(callbacks), "function"]
        raise NotPlain(type(obj).__name__)

    def to_program(value):
        try:
            return enc(value, ref)
        except NotPlain as exc:
            failure.append(("error", f"the test passes a {exc} argument, which cannot cross to the program"))
            raise ProgramGone()

    def run_callback(reply):
        """The program calls a function the tests gave it: run it here on what it sent."""
        k = reply[1]
        if type(k) is not int or not 0 <= k < len(callbacks):
            failure.append(("failed", f"protocol violation by the program: no callback {str(k)[:20]}"))
            raise ProgramGone()
        try:
            args, kwargs = dec(reply[2], from_program), dec(reply[3], from_program)
            if type(args) is not list or type(kwargs) is not dict:
                raise TypeError("callback arguments")
        except (NotPlain, ValueError, TypeError, IndexError, RecursionError) as exc:
            failure.append(("failed", f"malformed callback from the program: {exc}"))
            raise ProgramGone()
        try:
            answer = ["cb_ret", enc(callbacks[k](*args, **kwargs), ref)]
        except ProgramGone:
            raise
        except Exception as exc:  # the test's function raised (or returned what cannot cross)
            answer = ["cb_raised", type(exc).__name__, str(exc)[:500]]
        send_frame(fd, answer)

    def from_program(ref):
        h = ref[0]
        if type(h) is not int or not 0 <= h < MAX_REFS:
            raise ValueError(f"bad reference {str(ref)[:50]}")
        if h not in remotes:
            remotes[h] = Remote((h, str(ref[1])[:80]), request, to_program)
        return remotes[h]

    def request(payload):
        if failure:
            raise ProgramGone()
        send_frame(fd, payload)
        while True:
            try:
                reply = recv_frame(fd)
            except ValueError as exc:
                reply = ["bad", f"protocol violation by the program: {exc}"]
            if reply is None:
                failure.append(_exit_reason(pid))
                raise ProgramGone()
            if not (type(reply) is list and len(reply) == 4 and reply[0] == "callback"):
                break
            run_callback(reply)
        if not (type(reply) is list and reply and reply[0] in ("ret", "raised", "bad", "exit", "memory")
                and len(reply) == {"ret": 2, "raised": 4, "bad": 2, "exit": 2, "memory": 2}[reply[0]]):
            failure.append(("failed", f"protocol violation by the program: {str(reply)[:100]}"))
            raise ProgramGone()
        if reply[0] == "ret":
            try:
                return dec(reply[1], from_program)
            except (NotPlain, ValueError, TypeError, IndexError, RecursionError) as exc:
                failure.append(("failed", f"malformed return value from the program: {exc}"))
                raise ProgramGone()
        if reply[0] == "raised":
            raise builtin_exception(reply[1], reply[2])
        failure.append(_translate(reply))
        raise ProgramGone()

    entry = job["entry_point"]

    def candidate(*args, **kwargs):
        value = request(["call", entry, to_program(list(args)), to_program(kwargs)])
        if type(value) is Remote:
            non_plain.append(value._ref[1])
        return value
    candidate.__name__ = entry

    glb = {"__name__": "__check__", "__builtins__": builtins}
    if job.get("prelude"):
        try:  # the benchmark's prompt: its helpers (e.g. HumanEval/38's encode_cyclic) are trusted
            exec(compile(job["prelude"], "<prompt>", "exec"), glb)
        except Exception:
            pass
    glb[entry] = candidate
    test_lines = job["test"].splitlines()
    try:
        _program_names(job.get("names") or [], glb, request)
        exec(compile(job["test"], "<test>", "exec"), glb)
        if job.get("call_check", True) and callable(glb.get("check")):
            glb["check"](candidate)
    except ProgramGone:
        pass
    except MemoryError:
        if not failure:
            failure.append(("error", "the test code ran out of memory"))
    except BaseException as exc:
        if failure:
            pass
        elif non_plain:  # the likeliest cause, e.g. an always-equal object compared by a test
            failure.append(("failed", f"{entry} returned a value of type {non_plain[0]} that is not plain data "
                                      "(builtin values, their subclasses, numpy scalars, Fraction and Decimal cross "
                                      "to the tests by value; any other object equals only itself there)"))
        elif isinstance(exc, AssertionError):
            detail = f": {exc}" if str(exc) else ""
            failure.append(("failed", f"failed assertion ({where(exc, '<test>', test_lines)}){detail}"))
        else:
            failure.append(("failed", f"{type(exc).__name__}: {str(exc)[:300]} ({where(exc, '<test>', test_lines)})"))
    if failure:
        finish(*failure[0])
    finish("passed", "")


class Remote:
    """The checker's handle on an object that stays in the program (e.g. an MBPP test's
    `Node(1)` when the program defines Node): it can be called, its attributes read and set,
    iterated (the program lists the items: a returned generator works), measured, indexed, and
    passed back to the program. What comes back is plain data or another handle. Comparison
    and hashing are the handle's own (identity), so an always-equal object in the program can
    never make a test's `==` true."""

    __slots__ = ("_ref", "_request", "_encode")

    def __init__(self, ref, request, encode):
        object.__setattr__(self, "_ref", ref)  # (id, type name)
        object.__setattr__(self, "_request", request)  # the checker's round trip to the program
        object.__setattr__(self, "_encode", encode)  # test values -> wire format

    def __call__(self, *args, **kwargs):
        return self._request(["call", [self._ref[0], ""], self._encode(list(args)), self._encode(kwargs)])

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._request(["getattr", [self._ref[0], ""], name])

    def __setattr__(self, name, value):
        self._request(["setattr", [self._ref[0], ""], name, self._encode(value)])

    def __iter__(self):
        return iter(self._request(["iter", [self._ref[0], ""]]))

    def __len__(self):
        return self._request(["len", [self._ref[0], ""]])

    def __getitem__(self, key):
        return self._request(["getitem", [self._ref[0], ""], self._encode(key)])

    def __repr__(self):
        return f"<program's {self._ref[1]} object #{self._ref[0]}>"


def _program_names(names, glb, request):
    """Give the tests the globals they use but do not define themselves: a standard-library
    module is imported here (the program's copy might be patched); anything else the program
    defines (a class such as MBPP's Node, a helper, a constant) is fetched from it, plain
    values by value, the rest as Remote references. Builtins and the prompt's names are never
    taken from the program."""
    wanted = []
    for name in names:
        if name in glb or hasattr(builtins, name):
            continue
        if name in sys.stdlib_module_names:
            try:
                glb[name] = __import__(name)
                continue
            except ImportError:
                pass
        wanted.append(name)
    if wanted:
        got = request(["names", wanted])
        if type(got) is dict:
            for name in wanted:
                if name in got:
                    glb[name] = got[name]
