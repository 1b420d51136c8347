"""Sandbox program side (P): confine this process, run the untrusted source, serve the checker.

Forked by the checker (`checker`) inside the worker (`worker`); stdlib only.
Untrusted code runs only here, after the walls are up: fresh pid/mount namespaces where the
kernel allows, another uid when root, rlimits, an empty environment, a throwaway working
directory and an audit hook (see `confine`).
"""

import builtins
import math
import os
import resource
import signal
import sys
import tempfile

from confine import (FILE_LIMIT, PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, _audit_guard, _job_filesystem, _prctl,
                     program_environment)
from protocol import MAX_REFS, NotPlain, builtin_exception, dec, enc, recv_frame, send_frame, where


def _program_main(job, sock_fd):
    """P: confine this process, define the untrusted source, then serve calls or report done."""
    ns_mode = job["_ns"]
    if ns_mode:  # we are pid 1 of a fresh pid namespace, in a private mount namespace
        workdir = _job_filesystem(job["_keep"])
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
    env = program_environment(workdir)
    if dict(os.environ) != env:  # namespace mode: the worker set it once for every job
        os.environ.clear()
        os.environ.update(env)
    tempfile.tempdir = workdir
    sys.dont_write_bytecode = True  # imports never try to write __pycache__ outside the workdir
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
        return ["raised", type(exc).__name__, str(exc)[:500], where(exc, "<program>")]

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
    refs, ref_ids = [], {}  # objects the checker holds references to (kept alive: ids stay unique)

    def store(obj):
        h = ref_ids.get(id(obj))
        if h is None:
            if len(refs) >= MAX_REFS:
                raise NotPlain(f"{type(obj).__name__} (more than {MAX_REFS} program objects referenced)")
            h = ref_ids[id(obj)] = len(refs)
            refs.append(obj)
        return [h, type(obj).__name__[:80]]

    def lookup(ref):
        return refs[ref[0]] if ref[0] >= 0 else checker_function(-ref[0] - 1)

    def checker_function(k):
        """A function the tests passed in (e.g. a key or predicate): calling it asks the checker to
        run it there, serving the checker's own requests meanwhile, until its answer comes."""
        def call_checker(*args, **kwargs):
            send(["callback", k, enc(list(args), store), enc(kwargs, store)])
            while True:
                msg = recv_frame(sock_fd)
                if msg is None:
                    os._exit(0)
                if msg[0] == "cb_ret":
                    return dec(msg[1], lookup)
                if msg[0] == "cb_raised":
                    raise builtin_exception(msg[1], msg[2])
                serve(msg)
        return call_checker

    def serve(msg):
        op = msg[0]
        try:
            if op == "call":
                target, args, kwargs = msg[1], msg[2], msg[3]
                fn = glb.get(target) if type(target) is str else lookup(target)
                if type(target) is str and not callable(fn):
                    send(["raised", "NameError", f"the program defines no function {target!r}", ""])
                    return
                value = fn(*dec(args, lookup), **dec(kwargs, lookup))
            elif op == "getattr":
                value = getattr(lookup(msg[1]), msg[2])
            elif op == "setattr":
                value = setattr(lookup(msg[1]), msg[2], dec(msg[3], lookup))
            elif op == "iter":  # e.g. a generator the function returned: its items, computed here
                value = list(lookup(msg[1]))
            elif op == "len":
                value = len(lookup(msg[1]))
            elif op == "getitem":
                value = lookup(msg[1])[dec(msg[2], lookup)]
            else:  # "names": the program's globals the tests use (plain values or references)
                value = {n: glb[n] for n in msg[1] if n in glb}
        except BaseException as exc:
            flush()
            send(report(exc))
            return
        try:
            reply = ["ret", enc(value, store)]
        except (NotPlain, RecursionError) as exc:
            reply = ["bad", f"{msg[1] if op == 'call' and type(msg[1]) is str else op} returned a value "
                            f"that cannot cross to the tests ({exc})"]
        flush()
        send(reply)

    while True:  # requests come from the trusted checker: their shape is known
        msg = recv_frame(sock_fd)
        if msg is None:
            os._exit(0)
        serve(msg)
