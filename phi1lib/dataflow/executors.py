"""One place that turns an executor kind and its settings into a datatrove executor, and runs it to the end.

    make_executor("local", pipeline, tasks=8, workers=2, logging_dir=...)       # this machine
    make_executor("slurm", pipeline, tasks=512, logging_dir=..., partition="cpu", time="4:00:00")
    make_executor("ray", pipeline, tasks=512, logging_dir=...)
    run_to_completion(executor)     # every task finished, else DataError naming the unfinished ones

The same pipeline runs under each; `depends` chains stages (MinHash's four steps). Slurm needs `sbatch` on
this machine's PATH and Ray its package (`pip install "datatrove[ray]"`); without them the kind is refused with
MissingDependency before any work. The local executor is what the tiny preset and the tests use.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from typing import Any, Callable, Sequence

from ..errors import ConfigError, DataError, MissingDependency

EXECUTORS = ("local", "slurm", "ray")
SLURM_REQUIRED = ("partition", "time")  # SlurmPipelineExecutor has no default for these


FORKSERVER_PRELOAD = ("datatrove.io", "datatrove.pipeline.readers", "datatrove.pipeline.writers", "phi1lib.dataflow")


def make_executor(kind: str, pipeline: Sequence[Any], *, tasks: int, logging_dir: str, workers: int | None = None,
                  depends=None, **cluster: Any):
    """A datatrove executor of `kind` for `pipeline` split into `tasks` (local: `workers` at once, default
    all tasks). `cluster` passes the Slurm/Ray executor's own settings (partition, time, cpus_per_task, ...)."""
    if kind not in EXECUTORS:
        raise ConfigError(f"executor {kind!r}: expected one of {', '.join(EXECUTORS)}")
    if tasks < 1 or (workers is not None and workers < 1):
        raise ConfigError(f"executor: tasks={tasks} and workers={workers} must be >= 1")
    common = dict(pipeline=list(pipeline), tasks=tasks, logging_dir=logging_dir, depends=depends)
    if kind == "local":
        if cluster:
            raise ConfigError(f"executor local: unknown settings {sorted(cluster)} (they are for slurm or ray)")
        import multiprocess
        from datatrove.executor import LocalPipelineExecutor

        # forkserver, not fork: the server is a fresh interpreter (no torch, no CUDA context, no threads of this
        # process), so it is as safe as spawn; it imports datatrove and phi1lib.dataflow once and forks every
        # worker from there, instead of each spawned worker importing them again (~3-4 s per stage -> ~0.4 s).
        multiprocess.set_forkserver_preload(list(FORKSERVER_PRELOAD))
        return LocalPipelineExecutor(**common, workers=workers or tasks, start_method="forkserver")
    check_available(kind)
    if kind == "slurm":
        missing = [k for k in SLURM_REQUIRED if k not in cluster]
        if missing:
            raise ConfigError(f"executor slurm: cluster settings {missing} missing; give them, e.g. "
                              f"cluster={{'partition': 'cpu', 'time': '4:00:00'}}")
        from datatrove.executor import SlurmPipelineExecutor as Executor
    else:
        from datatrove.executor import RayPipelineExecutor as Executor
    return Executor(**common, **cluster)


def check_available(kind: str) -> None:
    """MissingDependency (one line) when the cluster executor `kind` cannot run from this machine (local always can)."""
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise MissingDependency("executor slurm: `sbatch` is not on this machine's PATH; run from a Slurm login "
                                "node, or use executor=local")
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        raise MissingDependency('executor ray: the ray package is not installed; pip install "datatrove[ray]" '
                                "(and start or join a Ray cluster), or use executor=local")


def _slurm_queued(job_id: str | None) -> bool:
    """Whether Slurm still lists the job (pending or running)."""
    if not job_id:
        return False
    out = subprocess.run(["squeue", "-h", "-j", str(job_id)], capture_output=True, text=True, check=False)
    return bool(out.stdout.strip())


def run_to_completion(executor, *, what: str = "pipeline", poll_s: float = 60.0,
                      queued: Callable[[Any], bool] | None = None) -> None:
    """Run `executor` and return only once every task has finished (datatrove's completion marks).

    The local and Ray executors block until their tasks are done (a task that raised re-raises here);
    a Slurm executor only submits its job array, so this polls until Slurm no longer lists the job.
    A task left unfinished raises DataError naming the tasks and the log folder; a rerun redoes only those
    (finished tasks are skipped)."""
    executor.run()
    queued = queued or (lambda ex: _slurm_queued(getattr(ex, "job_id", None)))
    while executor.get_incomplete_ranks(skip_completed=True) and getattr(executor, "job_id", None) \
            and queued(executor):
        time.sleep(poll_s)
    left = executor.get_incomplete_ranks(skip_completed=True)
    if left:
        shown = ", ".join(map(str, left[:10])) + (" ..." if len(left) > 10 else "")
        raise DataError(f"{what}: {len(left)} of {executor.world_size} tasks did not finish (ranks {shown}); see "
                        f"{executor.logging_dir.path}/logs; a rerun redoes only those")
