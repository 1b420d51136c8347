"""The sandbox: untrusted Python (model completions, synthetic solutions) run confined, with verdicts from a trusted checker.

Two sides. The parent side is `pool` (Sandbox, run_program, run_many), imported as a package.
The worker side runs in a separate interpreter, `python -s -P sandbox/worker.py` (isolated like -I,
with a fixed hash seed), which imports its siblings by bare name (stdlib only, no phi1lib): `worker` (job loop, forks per job),
`checker` (process C: runs the benchmark's tests), `program` (process P: the untrusted code),
`protocol` (the wire format between C and P), `confine` (namespaces, rlimits, audit hook).
"""

from .pool import (DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, STATUSES, WORKER, Sandbox, SandboxResult, default_sandbox,
                   isolation, make_job, run_many, run_program, test_names)

__all__ = ["Sandbox", "SandboxResult", "run_program", "run_many", "isolation", "make_job", "test_names",
           "default_sandbox", "STATUSES", "WORKER", "DEFAULT_TIMEOUT_S", "DEFAULT_MEMORY_MB"]
