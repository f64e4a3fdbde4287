"""Where a bench's cells run: ``local`` (this process, one after another), ``ray`` (Ray tasks on a
cluster) or ``hf-jobs`` (Hugging Face Jobs), all behind the ``Executor`` interface of
:mod:`gradience_hub.bench.cells` and all giving the same bench.json.

:func:`make_executor` is the one table from a name and its options to an executor;
:mod:`.portable` is what remote executors share (cells without a shared filesystem);
:mod:`.cell_command` is ``gradience-hub bench-cell``, what a Job runs.
"""

from __future__ import annotations

from typing import Any

from gradience_hub.bench.cells import Executor, LocalExecutor
from gradience_hub.bench.config import EXECUTORS, BenchConfig
from gradience_hub.errors import UsageError

__all__ = ["EXECUTORS", "driver_loads_task", "make_executor"]


def driver_loads_task(executor: Executor) -> bool:
    """Whether the protocol loads the task (and a model skeleton) on this machine: always,
    unless the executor's workers load it themselves (``remote_task``, the Jobs) and this
    install lacks the bench extra (the slim image dispatching Jobs)."""
    import importlib.util

    from gradience_hub.bench.train import BENCH_PACKAGES

    if not executor.remote_task:
        return True
    return all(importlib.util.find_spec(name) is not None for name in BENCH_PACKAGES)


def make_executor(name: str | None, config: BenchConfig, **options: Any) -> Executor:
    """The executor called ``name`` (the ``--executor`` flag; None: the config's ``executor``,
    else ``local``). ``options`` are the executor's own (``ray_address``; ``flavor``,
    ``image``, ``namespace``, ``job_timeout``, ``job_per``); ``None`` values are unset."""
    chosen = name or config.executor or "local"
    given = {k: v for k, v in options.items() if v is not None}
    if chosen == "local":
        return LocalExecutor()
    if chosen == "ray":
        from gradience_hub.bench.executors.ray_exec import RayExecutor

        return RayExecutor(
            given.get("ray_address"),
            gpus_per_cell=config.resources.gpus_per_cell,
            cpus_per_cell=config.resources.cpus_per_cell,
        )
    if chosen == "hf-jobs":
        from gradience_hub.bench.executors.hf_jobs import HFJobsExecutor

        return HFJobsExecutor(
            flavor=given.get("flavor", "a10g-small"),
            image=given.get("image"),
            namespace=given.get("namespace"),
            timeout=given.get("job_timeout"),
            job_per=given.get("job_per"),
        )
    raise UsageError(
        f"--executor must be one of {', '.join(EXECUTORS)}, got {chosen!r}",
        hint="--executor local",
    )
