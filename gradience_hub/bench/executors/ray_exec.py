"""The Ray executor: every cell is a Ray task on a cluster (``pip install 'gradience-hub[ray]'``).

Tasks ask for ``resources.gpus_per_cell`` / ``cpus_per_cell`` of the config (``num_gpus`` /
``num_cpus``). No shared filesystem is assumed: each adapter directory a cell reads is put in
the object store once (:func:`~gradience_hub.bench.executors.portable.cell_sources`), and so
are the config's local files (task data, lm-eval task folders:
:func:`~gradience_hub.bench.executors.portable.pack_config`), and the task returns its
:class:`~gradience_hub.bench.cells.CellResult` with the files of any adapter it trained. A base
model given as a local directory is read at its absolute path where the worker runs (a
one-machine cluster, or a filesystem every node shares); on other clusters name a Hub repo.
Results are yielded as tasks finish, so the driver's cell store saves each at once and
``--resume`` continues a killed or interrupted run.

Failures: a task whose worker process dies (OOM kill, preempted node) is retried up to
``max_retries`` times by Ray; an exception raised by a cell is not retried (it would raise
again), it is recorded with its message and, once the other cells have finished, the run stops
with :class:`~gradience_hub.errors.CellError` naming the cells. Ctrl-C cancels the outstanding
tasks before the interrupt propagates.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gradience_hub.bench.cells import Cell, CellResult, CellRunner, JobLink
from gradience_hub.bench.executors import portable
from gradience_hub.errors import CellError, GradienceError, MissingExtraError, UsageError

DEFAULT_MAX_RETRIES = 3


# Per worker process: the task and the model pool (base model loaded once) of the bench whose
# cells this worker ran last, so its later cells swap adapters instead of reloading the base.
_SHARED: dict[str, tuple[Any, Any]] = {}


def _run_task(
    runner: CellRunner,
    cell: Cell,
    config: dict[str, Any],
    prefixes: list[str],
    *blobs: dict[str, bytes],
) -> tuple[CellResult, dict[str, bytes]]:
    """The body of one Ray task: lay the packed files out (the config's under
    ``CONFIG_PREFIX``, then the adapters'), read ``config`` (:func:`portable.pack_config`'s
    data) from them, run the cell, pack the result."""
    key = json.dumps(
        [runner.protocol, portable.config_data(runner.config), runner.device],
        sort_keys=True,
        default=str,
    )
    with tempfile.TemporaryDirectory(prefix=f"gradience-{cell.key}-") as tmp:
        root = Path(tmp)
        for prefix, files in zip(prefixes, blobs, strict=True):
            portable.write_files({f"{prefix}/{name}": data for name, data in files.items()}, root)
        local = portable.localize(runner, root, config=portable.config_from_data(config, root))
        if key in _SHARED:
            local.adopt(*_SHARED[key])
        try:
            return portable.run_portable(local, cell)
        finally:
            _SHARED.clear()  # one bench per worker at a time: never grow on a shared cluster
            _SHARED[key] = local.loaded()


def connect(address: str | None) -> Any:
    """Connect to the Ray cluster at ``address``; without one, to a running cluster
    (``auto``) or else a new local one. Reuses a connection this process already has."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError("ray", "ray") from None
    if ray.is_initialized():
        return ray
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UsageError(
                f"cannot connect to the Ray cluster at {address}: {exc}".splitlines()[0],
                hint="check --ray-address (ray://host:10001 or host:6379), or omit it",
            ) from None
        return ray
    try:
        ray.init(address="auto", log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError):
        ray.init(log_to_driver=False)
    return ray


class RayExecutor:
    """Runs cells as Ray tasks; see the module docstring."""

    name = "ray"
    jobs: tuple[JobLink, ...] = ()  # Ray tasks have no page of their own to link

    def __init__(
        self,
        address: str | None = None,
        *,
        gpus_per_cell: float = 0.0,
        cpus_per_cell: float = 1.0,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self.address = address
        self.gpus_per_cell = gpus_per_cell
        self.cpus_per_cell = cpus_per_cell
        self.max_retries = max_retries
        # The device the cells run on is the workers', not the driver's.
        self.device: str | None = "cuda" if gpus_per_cell > 0 else "cpu"
        self.submitted: list[str] = []  # cell keys, in submission order
        self.cancelled: list[str] = []  # cell keys whose tasks were cancelled (Ctrl-C)
        # The workers' task is loaded from the same config the driver loads it from.
        self.remote_task = False
        self.pool_size: int | None = None
        self.task_warnings: list[str] = []

    def check_config(self, config: Any) -> None:
        """Refuse, before anything runs, a config whose local files could not travel with the
        cells (a data file outside its task folder, over 2 GiB); the ConfigError names the
        key and the path."""
        portable.pack_config(config, local_model=True)

    def map(
        self, cells: Sequence[Cell], runner: Callable[[Cell], CellResult]
    ) -> Iterator[CellResult]:
        """Submit every cell, then yield results as tasks finish."""
        if not cells:
            return
        if not isinstance(runner, CellRunner):
            raise UsageError("the Ray executor runs the bench's own cells only")
        ray = connect(self.address)
        remote = ray.remote(_run_task).options(
            num_cpus=self.cpus_per_cell,
            num_gpus=self.gpus_per_cell,
            max_retries=self.max_retries,
            retry_exceptions=False,
        )
        config, config_files = portable.pack_config(runner.config, local_model=True)
        config_ref = ray.put(config_files)  # the config's local files, once for every cell
        refs: dict[str, Any] = {}  # driver directory -> object ref of its packed files
        pending: dict[Any, Cell] = {}
        failures: dict[str, str] = {}
        exit_code = 2
        try:
            for cell in cells:
                sources = portable.cell_sources(runner, cell)
                for path in sources.values():
                    if str(path) not in refs:
                        refs[str(path)] = ray.put(portable.dir_files(path))
                blobs = [config_ref, *(refs[str(p)] for p in sources.values())]
                prefixes = [portable.CONFIG_PREFIX, *sources]
                pending[remote.remote(runner, cell, config, prefixes, *blobs)] = cell
                self.submitted.append(cell.key)
            while pending:
                # A timeout hands control back to Python every second, so Ctrl-C lands here.
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                if not ready:
                    continue
                cell = pending.pop(ready[0])
                done = ready[0]
                try:
                    result, trained = ray.get(done)
                except Exception as exc:  # the cell's own error, or its worker kept dying
                    why, code = _cause(exc, self.max_retries)
                    failures[cell.key] = why
                    exit_code = max(exit_code, code)
                    continue
                portable.adopt(runner, cell, result, trained)
                yield result
        finally:
            for ref, cell in pending.items():  # Ctrl-C, or the consumer stopped: free the cluster
                ray.cancel(ref, force=True)
                self.cancelled.append(cell.key)
        if failures:
            raise CellError(failures, exit_code=exit_code)


def _cause(exc: BaseException, retries: int) -> tuple[str, int]:
    """A failed task's message and exit code: the cell's own GradienceError when it raised
    one, else the exception's type and text."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, GradienceError):
        return cause.message, cause.exit_code
    text = str(cause).strip().splitlines()
    if type(exc).__name__ in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError"):
        return f"its Ray worker died (retried {retries} times): {type(exc).__name__}", 3
    return f"{type(cause).__name__}: {text[-1] if text else ''}".rstrip(": "), 2
