"""One place that turns an executor kind and its settings into a datatrove executor.

    make_executor("local", pipeline, tasks=8, workers=2, logging_dir=...)       # this machine
    make_executor("slurm", pipeline, tasks=512, logging_dir=..., partition="cpu", time="4:00:00")
    make_executor("ray", pipeline, tasks=512, logging_dir=...)

The same pipeline runs under each; `depends` chains stages (MinHash's four steps). Slurm and Ray need
their own packages and a cluster; the local executor is what the tiny preset and the tests use.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import ConfigError, MissingDependency

EXECUTORS = ("local", "slurm", "ray")


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
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(**common, workers=workers or tasks, start_method="spawn")
    try:
        if kind == "slurm":
            from datatrove.executor import SlurmPipelineExecutor as Executor
        else:
            from datatrove.executor import RayPipelineExecutor as Executor
    except ImportError as exc:  # pragma: no cover - depends on the cluster's packages
        raise MissingDependency(f"executor {kind}: {exc}; install datatrove with its {kind} extra on the cluster") \
            from None
    return Executor(**common, **cluster)
