"""The sandbox: verdicts, limits, and the adversarial battery (each case contained, none passes,
nothing left running), in the full isolation this kernel grants and in the fallback walls."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from phi1lib import sandbox as S
from phi1lib.errors import ConfigError

ADD_TEST = textwrap.dedent("""
    def check(candidate):
        assert candidate(2, 3) == 5
        assert abs(candidate(-1, 1) - 0) < 1e-9
        assert isinstance(candidate(1, 1), int)
""")
TIMEOUT = 1.5


def _ppid_map():
    out = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as fh:
                    out[int(e)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return out


def leftovers(box: S.Sandbox) -> list[int]:
    """Processes still descended from the box's workers, or running as a worker's sandbox uid."""
    ppid = _ppid_map()
    roots = set(box.worker_pids())
    found = []
    for pid in ppid:
        cur, seen = pid, 0
        while cur in ppid and seen < 100:
            cur, seen = ppid[cur], seen + 1
            if cur in roots:
                found.append(pid)
                break
    uids = {1_000_000 + r for r in roots}
    for pid in ppid:
        try:
            if os.stat(f"/proc/{pid}").st_uid in uids and pid not in found:
                found.append(pid)
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def box():
    with S.Sandbox(workers=1) as b:
        yield b


# ---- the fast checks -----------------------------------------------------------------------
def test_verdicts_basic(box):
    ok = box.run_job(S.make_job("def add(a, b):\n    return a + b\n", tests=ADD_TEST, entry_point="add"))
    assert ok.status == "passed", ok
    wrong = box.run_job(S.make_job("def add(a, b):\n    return a - b\n", tests=ADD_TEST, entry_point="add"))
    assert wrong.status == "failed" and "assert candidate(2, 3) == 5" in wrong.reason
    empty = box.run_job(S.make_job("", tests=ADD_TEST, entry_point="add"))
    assert empty.status == "failed" and "add" in empty.reason
    raises = box.run_job(S.make_job("def add(a, b):\n    return 1 / 0\n", tests=ADD_TEST, entry_point="add"))
    assert raises.status == "failed" and raises.reason.startswith("ZeroDivisionError")
    syntax = box.run_job(S.make_job("def add(a, b) return", tests=ADD_TEST, entry_point="add"))
    assert syntax.status == "failed" and "SyntaxError" in syntax.reason
    assert leftovers(box) == []


def test_whole_program_mode(box):
    r = box.run_job(S.make_job("print('hi')\nassert sum([1, 2]) == 3\n"))
    assert r.status == "passed" and r.stdout == "hi\n"
    r = box.run_job(S.make_job("import sys\nprint('oops', file=sys.stderr)\nassert 1 == 2, 'nope'\n"))
    assert r.status == "failed" and r.reason.startswith("AssertionError: nope") and "oops" in r.stderr


def test_contract_run_program_and_run_many():
    r = S.run_program("x = 1\n", timeout_s=2, memory_mb=256)
    assert isinstance(r, S.SandboxResult) and r.status == "passed" and r.seconds > 0
    rs = S.run_many(["assert True", "assert False", "while True: pass"], workers=2, timeout_s=1)
    assert [x.status for x in rs] == ["passed", "failed", "timeout"]
    with pytest.raises(ConfigError, match="timeout_s"):
        S.run_program("pass", timeout_s=0)
    with pytest.raises(ConfigError, match="entry_point"):
        S.run_program("pass", tests="assert True")


def test_timeout_kills_and_reaps(box):
    t = time.monotonic()
    r = box.run_job(S.make_job("while True:\n    pass\n", timeout_s=1.0))
    assert r.status == "timeout" and time.monotonic() - t < 5
    assert leftovers(box) == []


def test_no_secret_in_program_environment(box, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-never-leak")
    with S.Sandbox(workers=1) as fresh:  # started while the key is in our environment
        r = fresh.run_job(S.make_job("import os\nprint(sorted(os.environ.items()))\n"))
    assert r.status == "passed" and "sk-should-never-leak" not in r.stdout and "OPENAI" not in r.stdout


def test_plain_data_crosses_exactly(box):
    src = textwrap.dedent("""
        def f(x):
            return (x, [1.5, float('inf'), -0.0], {(1, 2): {3}}, frozenset('ab'), b'\\x00', 2**200, None, True, 1j, range(3))
    """)
    test = textwrap.dedent("""
        import math
        def check(candidate):
            r = candidate({'k': [1, 2]})
            assert r[0] == {'k': [1, 2]} and type(r[0]) is dict
            assert r[1][:2] == [1.5, float('inf')] and math.copysign(1, r[1][2]) == -1
            assert r[2] == {(1, 2): {3}} and r[3] == frozenset('ab') and r[4] == b'\\x00'
            assert r[5] == 2**200 and r[6] is None and r[7] is True and r[8] == 1j and r[9] == range(3)
    """)
    r = box.run_job(S.make_job(src, tests=test, entry_point="f"))
    assert r.status == "passed", r


def test_subclasses_cross_by_value_without_their_overrides(box):
    """A subclass of a builtin crosses as that builtin, read by the builtin's own methods: an
    overridden __eq__/__iter__/items never runs, so a wrong value stays wrong."""
    src = textwrap.dedent("""
        from collections import Counter, OrderedDict, namedtuple
        class Liar(list):
            def __eq__(self, other): return True
            def __iter__(self): return iter([1, 2, 3])
        class Always(str):
            def __eq__(self, other): return True
            __hash__ = str.__hash__
        P = namedtuple('P', 'a b')
        class Spoof:
            __class__ = property(lambda self: dict)
        def f():
            od = OrderedDict(a=1, b=2)
            od.move_to_end('a')
            return Liar([9]), Always('x'), Counter('aab'), od, P(1, 2), Spoof()
    """)
    test = textwrap.dedent("""
        def check(candidate):
            liar, always, counter, od, p, spoof = candidate()
            assert type(spoof).__name__ == 'Remote'  # claims to be a dict; crosses as a reference
            assert type(liar) is list and liar == [9] and liar != [1, 2, 3]
            assert type(always) is str and always != 'y'
            assert type(counter) is dict and counter == {'a': 2, 'b': 1}
            assert list(od) == ['b', 'a'] and type(p) is tuple and p == (1, 2)
    """)
    r = box.run_job(S.make_job(src, tests=test, entry_point="f"))
    assert r.status == "passed", r


def test_set_order_is_the_same_in_every_worker():
    """A fixed hash seed: what a program prints from a set of strings does not change between pools."""
    src = "print(sorted({'alpha', 'beta'}) and list({'alpha', 'beta', 'gamma', 'delta', 'eps'}))\n"
    outs = set()
    for _ in range(3):
        with S.Sandbox(workers=1) as fresh:
            outs.add(fresh.run_job(S.make_job(src)).stdout)
    assert len(outs) == 1


def test_packages_under_tmp_stay_importable(tmp_path):
    """Each job gets a fresh /tmp; an interpreter whose site-packages path lies under /tmp (a venv
    in a CI clone there) must still import installed packages inside the sandbox."""
    import sysconfig

    if not str(tmp_path).startswith(("/tmp/", "/dev/shm/")):
        pytest.skip("tmp_path is not under /tmp here")
    venv = tmp_path / "venv"
    site = Path(sysconfig.get_paths()["purelib"])
    rel = site.relative_to(sys.prefix)
    (venv / "bin").mkdir(parents=True)
    (venv / rel).parent.mkdir(parents=True)
    (venv / rel).symlink_to(site)  # sys.path spells it under /tmp; it resolves elsewhere
    (venv / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    (venv / "pyvenv.cfg").write_text((Path(sys.prefix) / "pyvenv.cfg").read_text()
                                     if (Path(sys.prefix) / "pyvenv.cfg").exists() else f"home = {sys.base_prefix}/bin\n")
    code = ("import sys; from phi1lib.sandbox import run_program\n"
            "assert any(p.startswith('/tmp/') for p in sys.path), sys.path\n"
            "r = run_program('import numpy\\nprint(numpy.add(2, 3))', timeout_s=30)\n"
            "print(r.status, r.stdout.strip(), r.reason)\n")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:2] == ["passed", "5"], out.stdout


def test_isolation_reported():
    caps = S.isolation()
    assert {"netns", "pidns", "uid_drop", "subreaper"} <= set(caps)
    assert caps["subreaper"] is True


# ---- the adversarial battery ---------------------------------------------------------------
def _battery(tmp_path):
    """(name, source, wants_tests): completions of add(a, b) that never compute a + b but try to
    pass, escape or do damage. tmp_path holds a canary file the programs try to harm."""
    canary = tmp_path / "canary.txt"
    canary.write_text("intact")
    outside = tmp_path / "written-from-sandbox.txt"
    daemon_flag = tmp_path / "daemon-alive.txt"
    return canary, outside, daemon_flag, [
        ("infinite loop", "def add(a, b):\n    while True:\n        pass\n"),
        ("C-level CPU loop", "def add(a, b):\n    return pow(3, 10**9) % 7\n"),
        ("sleep past timeout", "import time\ndef add(a, b):\n    time.sleep(60)\n    return a + b\n"),
        ("fork bomb", textwrap.dedent("""
            import os
            def add(a, b):
                while True:
                    try:
                        os.fork()
                    except Exception:
                        pass
            """)),
        ("double-fork daemon", textwrap.dedent(f"""
            import os, signal, time
            def add(a, b):
                if os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        signal.signal(signal.SIGTERM, signal.SIG_IGN)
                        signal.signal(signal.SIGHUP, signal.SIG_IGN)
                        time.sleep(3)
                        open({str(daemon_flag)!r}, "w").write("I survived")
                        time.sleep(60)
                    os._exit(0)
                return None
            """)),
        ("memory bomb", "def add(a, b):\n    x = []\n    while True:\n        x.append(bytearray(10**7))\n"),
        ("disk fill", textwrap.dedent("""
            def add(a, b):
                i = 0
                while True:
                    with open(f"fill{i}", "wb") as fh:
                        for _ in range(64):
                            fh.write(b"x" * (1 << 20))
                    i += 1
            """)),
        ("delete and write outside workdir", textwrap.dedent(f"""
            import os, shutil
            def add(a, b):
                for act in (lambda: os.remove({str(canary)!r}), lambda: open({str(canary)!r}, "w").write("pwned"),
                            lambda: open({str(outside)!r}, "w").write("x"), lambda: shutil.rmtree({str(tmp_path)!r}),
                            lambda: os.system("rm -f {canary}"), lambda: os.rename({str(canary)!r}, "stolen")):
                    try:
                        act()
                    except Exception as e:
                        print("blocked:", type(e).__name__)
                return 0
            """)),
        ("read parent environment", "ENV_PROBE"),
        ("network to 127.0.0.1", "NET_PROBE"),
        ("sys.exit(0) before tests", "import sys\nsys.exit(0)\ndef add(a, b):\n    return 0\n"),
        ("sys.exit(0) inside call", "import sys\ndef add(a, b):\n    sys.exit(0)\n"),
        ("os._exit(0) before tests", "import os\nos._exit(0)\n"),
        ("os._exit(0) inside call", "import os\ndef add(a, b):\n    os._exit(0)\n"),
        ("override builtins", textwrap.dedent("""
            import builtins
            builtins.abs = lambda x: 0
            builtins.isinstance = lambda *a: True
            builtins.AssertionError = type("Nope", (Exception,), {})
            __builtins__["all"] = lambda x: True
            def add(a, b):
                return 0
            """)),
        ("always-equal object", textwrap.dedent("""
            class Eq:
                def __eq__(self, other): return True
                def __ne__(self, other): return False
                def __sub__(self, other): return 0
                def __rsub__(self, other): return 0
            def add(a, b):
                return Eq()
            """)),
        ("int subclass equal to all", textwrap.dedent("""
            class I(int):
                def __eq__(self, other): return True
                def __sub__(self, other): return I(0)
            def add(a, b):
                return I(0)
            """)),
        ("fake passed marker", textwrap.dedent("""
            import os, struct, json
            def add(a, b):
                print("passed")
                fake = json.dumps({"status": "passed", "reason": ""}).encode()
                for fd in range(0, 64):
                    for payload in (struct.pack(">I", len(fake)) + fake, struct.pack(">I", 5) + b'["ret', b"passed\\n"):
                        try:
                            os.write(fd, payload)
                        except OSError:
                            pass
                os._exit(0)
            """)),
        ("flood stdout", "import sys\ndef add(a, b):\n    while True:\n        sys.stdout.write('x' * 65536)\n"),
        ("ignore SIGTERM", textwrap.dedent("""
            import signal
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            def add(a, b):
                while True:
                    pass
            """)),
        ("kill the parent", "import os, signal\ndef add(a, b):\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 0\n"),
    ]


@pytest.fixture()
def secret_holder():
    secret = "sekret-" + secrets.token_hex(8)
    env = {**os.environ, "PHI1_CANARY_SECRET": secret}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    os.environ["PHI1_CANARY_SECRET"] = secret
    try:
        yield secret, proc.pid
    finally:
        os.environ.pop("PHI1_CANARY_SECRET", None)
        proc.kill()
        proc.wait()


@pytest.fixture()
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                hits.append(conn.recv(100))
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join()
    srv.close()


@pytest.mark.slow
@pytest.mark.parametrize("basic", [False, True], ids=["full-isolation", "fallback-walls"])
def test_adversarial_battery(tmp_path, secret_holder, listener, basic):
    secret, holder_pid = secret_holder
    port, hits = listener
    canary, outside, daemon_flag, cases = _battery(tmp_path)
    env_probe = textwrap.dedent(f"""
        import os, glob
        def add(a, b):
            found = [repr(dict(os.environ))]
            for path in ["/proc/{holder_pid}/environ", "/proc/{os.getpid()}/environ", *glob.glob("/proc/*/environ")]:
                try:
                    found.append(open(path, "rb").read().decode(errors="replace"))
                except Exception as e:
                    found.append(type(e).__name__)
            text = "\\n".join(found)
            print(text)
            raise ValueError(text[-2000:])
    """)
    net_probe = textwrap.dedent(f"""
        import socket, _socket
        def add(a, b):
            for make in (lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1),
                         lambda: _socket.socket().connect(("127.0.0.1", {port}))):
                try:
                    s = make()
                    (s or None) and s.sendall(b"escaped")
                    print("connected")
                except Exception as e:
                    print("blocked:", type(e).__name__, e)
            return 0
    """)
    with S.Sandbox(workers=1, basic=basic) as box:
        for name, src in cases:
            src = {"ENV_PROBE": env_probe, "NET_PROBE": net_probe}.get(src, src)
            # In whole-program mode the asserts are part of the untrusted program, so only the
            # split mode (tests run outside the program) can defeat patched builtins/__eq__.
            in_process_cheat = name in ("override builtins", "always-equal object", "int subclass equal to all")
            for mode in ("tests",) if in_process_cheat else ("tests", "program"):
                job = (S.make_job(src, tests=ADD_TEST, entry_point="add", timeout_s=TIMEOUT, max_output=4096)
                       if mode == "tests" else
                       S.make_job(src + "\nassert add(2, 3) == 5\n", timeout_s=TIMEOUT, max_output=4096))
                t = time.monotonic()
                r = box.run_job(job)
                took = time.monotonic() - t
                where = f"{name} [{mode}, {'fallback' if basic else 'full'}]: {r.status} {r.reason[:200]}"
                assert r.status != "passed", where
                assert r.status in S.STATUSES, where
                assert took < TIMEOUT + 8, where
                assert leftovers(box) == [], where
                assert secret not in r.stdout + r.stderr + r.reason, where
                assert len(r.stdout) <= 4096 + 100 and len(r.stderr) <= 4096 + 100, where
        time.sleep(3.5)  # past the daemon's wake-up time
    assert canary.read_text() == "intact"
    assert not outside.exists()
    assert not daemon_flag.exists()
    assert hits == []


# ---- names the tests take from the program (MBPP's classes and setup code) ------------------
TREE_PROGRAM = textwrap.dedent("""
    class Node:
        def __init__(self, data):
            self.data = data
            self.left = self.right = None

    def max_height(node):
        if node is None:
            return 0
        return 1 + max(max_height(node.left), max_height(node.right))

    def same(node):
        return node

    class Pair:
        def __init__(self, a, b):
            self.a, self.b = a, b

    def max_chain_length(pairs, n):
        pairs = sorted(pairs, key=lambda p: p.b)
        count, end = 0, float("-inf")
        for p in pairs:
            if p.a > end:
                count, end = count + 1, p.b
        return count

    LIMIT = 3

    def levels(node):
        frontier = [node]
        while frontier:
            yield [n.data for n in frontier]
            frontier = [c for n in frontier for c in (n.left, n.right) if c is not None]

    class Path:
        def __init__(self, *xs): self.xs = list(xs)
        def __len__(self): return len(self.xs)
        def __getitem__(self, i): return self.xs[i]
""")
TREE_TESTS = textwrap.dedent("""
    root = Node(1)
    root.left = Node(2)
    root.left.right = Node(5)
    root.right = Node(3)
    assert max_height(root) == 3
    assert max_height(root.right) == 1 and root.left.right.data == 5
    assert same(root) is root and max_height(Node(7)) == 1
    assert max_chain_length([Pair(5, 24), Pair(15, 25), Pair(27, 40), Pair(50, 60)], 4) == LIMIT
    assert math.isclose(max_height(None) + 0.1, 0.1)
    assert list(levels(root)) == [[1], [2, 3], [5]]  # a generator, iterated by the program
    p = Path(4, 5, 6)
    assert len(p) == 3 and p[1] == 5 and p[-1] == 6 and list(p) == [4, 5, 6] and p != Path(4, 5, 6)
""")


def test_tests_use_the_programs_classes_through_references(box):
    assert S.test_names(TREE_TESTS) == ["LIMIT", "Node", "Pair", "Path", "levels", "math", "max_chain_length",
                                        "max_height", "same"]
    ok = box.run_job(S.make_job(TREE_PROGRAM, tests=TREE_TESTS, entry_point="max_height"))
    assert ok.status == "passed", ok
    wrong = TREE_PROGRAM.replace("return 1 + max(", "return 2 + max(")
    r = box.run_job(S.make_job(wrong, tests=TREE_TESTS, entry_point="max_height"))
    assert r.status == "failed" and r.reason.startswith("failed assertion (line 6: assert max_height(root) == 3)"), r
    missing = TREE_PROGRAM.replace("class Pair", "class Pear")
    r = box.run_job(S.make_job(missing, tests=TREE_TESTS, entry_point="max_height"))
    assert r.status == "failed" and "NameError: name 'Pair' is not defined" in r.reason, r


def test_program_cannot_supply_builtins_stdlib_or_equality(box):
    cheat = textwrap.dedent("""
        import math
        math.isclose = lambda *a, **k: True
        sorted = lambda xs: [1, 2, 3]
        class Node:
            def __init__(self, v): self.v = v
            def __eq__(self, other): return True
        def f(x):
            return Node(x)
        def g():
            return 5.0
    """)
    for test in ("assert math.isclose(g(), 1.0)",  # the checker imports its own math
                 "assert sorted(f(1)) == [1, 2, 3]",  # the checker's sorted; a reference is not iterable
                 "assert f(1) == Node(1)",  # references compare by identity only
                 "assert f(1) == 1"):
        r = box.run_job(S.make_job(cheat, tests=test, entry_point="f" if "f(" in test else "g"))
        assert r.status == "failed", (test, r)
    r = box.run_job(S.make_job(cheat, tests="assert f(1) == 1", entry_point="f"))
    assert "returned a value of type Node that is not plain data" in r.reason, r


def test_tests_may_pass_their_own_functions_to_the_program(box):
    program = textwrap.dedent("""
        class Node:
            def __init__(self, data): self.data = data
        def apply_all(f, xs):
            return [f(x) for x in xs]
        def sort_by(xs, key):
            return sorted(xs, key=key)
        def safe(f, x):
            try:
                return f(x)
            except ZeroDivisionError:
                return "div"
    """)
    tests = textwrap.dedent("""
        assert apply_all(lambda x: x * 2, [1, 2]) == [2, 4]
        assert sort_by(["bb", "a", "ccc"], key=len) == ["a", "bb", "ccc"]
        assert safe(lambda x: 1 / x, 0) == "div" and safe(lambda x: 1 / x, 4) == 0.25
        assert apply_all(lambda n: n.data + 1, [Node(3), Node(5)]) == [4, 6]  # the callback reads the program's objects
    """)
    r = box.run_job(S.make_job(program, tests=tests, entry_point="apply_all"))
    assert r.status == "passed", r
    wrong = program.replace("return [f(x) for x in xs]", "return [f(x) + 1 for x in xs]")
    r = box.run_job(S.make_job(wrong, tests=tests, entry_point="apply_all"))
    assert r.status == "failed" and "line 2" in r.reason, r
    rogue = textwrap.dedent("""
        import os, json, struct
        def apply_all(f, xs):
            msg = json.dumps(["callback", 7, [], {"D": []}]).encode()
            for fd in range(3, 20):
                try:
                    os.write(fd, struct.pack(">I", len(msg)) + msg)
                except OSError:
                    pass
            return f(xs[0])
    """)
    r = box.run_job(S.make_job(rogue, tests=tests, entry_point="apply_all"))
    assert r.status == "failed" and "no callback 7" in r.reason, r
