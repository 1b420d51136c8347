"""Sandbox confinement primitives: namespaces, mounts, prctl, the audit hook, the process sweep, the probe.

Stdlib only; imported by `worker` (trusted). `probe()` finds out what this kernel grants
and fills CAPS, which the rest reads.
"""

import ctypes
import os
import signal
import sys

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 0x4000, 1 << 18
MS_MOVE = 8192
FILE_LIMIT = 16 << 20  # largest file a program may write (bytes)
TMPFS_SIZE = "64m"  # the program's whole writable space in namespace mode
CAPS = {}  # what isolation this kernel allowed; filled by probe()


def _prctl(option, value):
    return _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0


def _unshare(flags):
    return _libc.unshare(flags) == 0


def _mount(src, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    if _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")


# ---- plain-data transfer: exact builtin types only, rebuilt fresh on the other side ----------


_INTERPRETER_DIRS = []


def interpreter_dirs():
    """The interpreter's own directories (readable even inside a blocked home), resolved once in
    the worker so no forked program pays for the realpath calls."""
    if not _INTERPRETER_DIRS:
        real = os.path.realpath
        _INTERPRETER_DIRS.append(tuple({real(p) for p in [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path] if p}))
    return _INTERPRETER_DIRS[0]


def _audit_guard(workdir, home, fork_cap=None):
    """An audit hook confining file writes, processes, sockets and signals (defence in depth;
    the namespaces and the dropped uid are the primary walls where the kernel allows them)."""
    realpath, fsdecode, getpid = os.path.realpath, os.fsdecode, os.getpid
    root = realpath(workdir)
    devs = {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/tty"}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    readable = interpreter_dirs()
    path_events = {"os.remove", "os.rmdir", "os.rename", "os.truncate", "os.chmod", "os.chown", "os.link",
                   "os.symlink", "os.mkdir", "os.utime", "shutil.rmtree", "os.chflags", "os.lchmod", "os.mknod"}
    blocked = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile",
               "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "os.killpg", "os.setuid",
               "pty.spawn", "os.forkpty", "sys.remote_exec", "winreg.ConnectRegistry"}
    opened = [0]
    forks = [0]
    origin = os.getpid()

    def inside(p):
        return p == root or p.startswith(root + "/")

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            if path is None or isinstance(path, int):
                return
            p = realpath(fsdecode(path))
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if p.startswith("/proc/") and p.split("/")[2].isdigit() and p.split("/")[2] != str(getpid()):
                raise PermissionError(f"sandbox: another process's /proc entry is off limits: {p}")
            if writing and p not in devs and not inside(p):
                raise PermissionError(f"sandbox: writing outside the working directory is blocked: {p}")
            if writing:
                opened[0] += 1
                if opened[0] > 1000:
                    raise PermissionError("sandbox: too many files opened for writing")
            if home and not writing and (p == home or p.startswith(home + "/")) and not p.startswith(readable):
                raise PermissionError(f"sandbox: reading the user's home directory is blocked: {p}")
        elif event in path_events:
            for a in args[:2]:
                if isinstance(a, (str, bytes)) and not inside(realpath(fsdecode(a))):
                    raise PermissionError(f"sandbox: {event} outside the working directory is blocked: {a!r}")
        elif event == "os.fork" and fork_cap is not None:
            # Without a dropped uid RLIMIT_NPROC may not bind (root): only the program's own
            # process may fork, a bounded number of times, so a fork bomb cannot grow.
            forks[0] += 1
            if getpid() != origin or forks[0] > fork_cap:
                raise PermissionError("sandbox: process limit reached (fork refused)")
        elif event in blocked or event.startswith("ctypes."):
            raise PermissionError(f"sandbox: {event} is not allowed here")
        elif event == "os.kill":
            pid = args[0]
            if pid != getpid():  # only the program's own descendants may be signalled
                try:
                    cur = int(pid)
                    for _ in range(64):
                        if cur <= 1:
                            break
                        with open(f"/proc/{cur}/stat") as fh:
                            cur = int(fh.read().rsplit(")", 1)[1].split()[1])
                        if cur == getpid():
                            return
                except (OSError, ValueError, IndexError):
                    pass
                raise PermissionError(f"sandbox: signalling process {pid} is not allowed")

    sys.addaudithook(hook)


def _static_filesystem():
    """Once per worker, in its own mount namespace: `/` read-only and the caller's home hidden
    behind an empty tmpfs except the interpreter's own directories (pyenv/venv installs often
    live there), re-exposed read-only. Every job's namespace is a copy of this one."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    try:
        _mount("none", "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    except OSError:
        pass  # the dropped uid still keeps root-owned files safe
    home = CAPS.get("home")
    if home and home != "/" and os.path.isdir(home):
        real = os.path.realpath
        keep = sorted({real(p) for p in [sys.base_prefix, sys.prefix, sys.exec_prefix, *sys.path]
                       if p and os.path.isdir(p) and (real(p) + "/").startswith(home + "/")})
        keep = [p for i, p in enumerate(keep) if not any(p.startswith(q + "/") for q in keep[:i])]
        stage = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
        _mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=700")
        for i, p in enumerate(keep):
            os.mkdir(f"{stage}/{i}")
            _mount(p, f"{stage}/{i}", None, MS_BIND | MS_REC)
        _mount("tmpfs", home, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        for i, p in enumerate(keep):
            os.makedirs(p, exist_ok=True)
            _mount(f"{stage}/{i}", p, None, MS_MOVE)
        try:
            _mount(None, home, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        except OSError:
            pass


SCRATCH_DIRS = ("/tmp", "/dev/shm")  # each job gets fresh, size-capped copies of these
JOB_WORKDIR = "/tmp/work"  # a program's working directory in namespace mode (its own tmpfs)


def program_environment(workdir):
    """The whole environment a program sees: no secrets, its workdir as HOME and TMPDIR, installed packages'
    native thread pools at one thread (the reference harness sets OMP_NUM_THREADS=1 too; rlimits count threads)."""
    return {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            **{v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}


def covered_interpreter_dirs():
    """The interpreter's directories (as sys.path spells them and resolved) that lie under a
    scratch dir a job's tmpfs would hide, outermost only: a venv or a checkout under /tmp must
    stay importable (read-only) by programs, as it is in the reference harness."""
    found = set()
    for p in [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]:
        for q in {p, os.path.realpath(p)} if p else ():
            if os.path.isdir(q) and any(q.startswith(d + "/") for d in SCRATCH_DIRS):
                found.add(q)
    ordered = sorted(found)
    return [p for i, p in enumerate(ordered) if not any(p.startswith(q + "/") for q in ordered[:i])]


def _job_filesystem(keep=()):
    """Per job, in P (pid 1 of a new pid namespace, own mount namespace): a /proc showing only
    the job's processes and size-capped tmpfs on /tmp and /dev/shm, with the interpreter's
    directories under them (`keep`) bound back read-only. Returns the workdir."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV)
    held = []  # opened before the tmpfs hides them; bound back through /proc/self/fd
    for p in keep:
        try:
            held.append((p, os.open(p, os.O_PATH | os.O_DIRECTORY)))
        except OSError:
            pass
    for d in SCRATCH_DIRS:
        if os.path.isdir(d):
            _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={TMPFS_SIZE},mode=1777")
    for p, fd in held:
        os.makedirs(p, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
        try:
            _mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        except OSError:
            pass  # `/` is read-only already and the program runs as another uid
        os.close(fd)
    os.mkdir(JOB_WORKDIR)
    return JOB_WORKDIR


def _children():
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        kids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as fh:
                        if int(fh.read().rsplit(")", 1)[1].split()[1]) == me:
                            kids.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        return kids


def sweep():
    """Kill and reap every process the jobs left behind. As a child subreaper the worker
    inherits all orphans (double-forked daemons included), so its children are all of them."""
    for _ in range(10000):
        kids = _children()
        if not kids:
            break
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in kids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def _count_user_procs(uid):
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                n += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return n


def _read_stdlib(uid):
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    with open(os.path.join(os.path.dirname(os.__file__), "stringprep.py"), "rb"):
        pass


def _ns_check(uid):
    """In a child: the same namespaces and filesystem a program gets, then a stdlib read."""
    if not _unshare(CLONE_NEWPID | CLONE_NEWNS):
        raise OSError("unshare")
    _static_filesystem()
    inner = os.fork()
    if inner == 0:
        try:
            _job_filesystem(covered_interpreter_dirs())
            if uid is not None:
                _read_stdlib(uid)
            os._exit(0)
        except BaseException:
            os._exit(1)
    if os.waitpid(inner, 0)[1] != 0:
        raise OSError("namespace setup failed")


def _try(fn):
    """Run fn in a throwaway child; 'ok' if it returned normally."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = b"0"
        try:
            fn()
            ok = b"1"
        except BaseException:
            pass
        finally:
            os.write(w, ok)
            os._exit(0)
    os.close(w)
    ok = os.read(r, 1) == b"1"
    os.close(r)
    os.waitpid(pid, 0)
    return "ok" if ok else "no"


def probe(basic=False):
    """Which walls this kernel grants: a private network for the worker, and per-job pid/mount
    namespaces and uid drop, each tried for real in a throwaway child. basic=True skips them
    all (the fallback: session, rlimits, subreaper sweep and the audit hook only)."""
    caps = {"netns": False, "pidns": False, "uid": None, "userns": False, "subreaper": _prctl(PR_SET_CHILD_SUBREAPER, 1)}
    if basic:
        return caps
    if os.geteuid() == 0:
        caps["netns"] = _unshare(CLONE_NEWNET)
        caps["uid"] = 1_000_000 + os.getpid()  # a uid no one else uses: own process quota, no files
    else:
        uid, gid = os.getuid(), os.getgid()
        if _unshare(CLONE_NEWUSER | CLONE_NEWNET):
            try:
                with open("/proc/self/setgroups", "w") as fh:
                    fh.write("deny")
                with open("/proc/self/uid_map", "w") as fh:
                    fh.write(f"{uid} {uid} 1")
                with open("/proc/self/gid_map", "w") as fh:
                    fh.write(f"{gid} {gid} 1")
                caps["netns"] = caps["userns"] = True
            except OSError:
                pass
    if os.geteuid() == 0 or caps["userns"]:
        caps["pidns"] = _try(lambda: _ns_check(caps["uid"])) == "ok"
    if caps["uid"] is not None:  # can the dropped uid still read the interpreter?
        if _try(lambda: _ns_check(caps["uid"]) if caps["pidns"] else _read_stdlib(caps["uid"])) != "ok":
            caps["uid"] = None
    return caps
