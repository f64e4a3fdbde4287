"""The Hugging Face Jobs executor: cells run as Jobs on the Hub's GPUs (``HfApi.run_job``).

Inputs go through a private scratch model repo, ``{namespace}/gradience-bench-{run id}``: the
driver commits ``spec.json`` (the config and the variant plans, JSON; see
:func:`~gradience_hub.bench.executors.portable.runner_inputs`), the local files the config
names (``config/``: the lm-eval task folder, a local train or dataset file; a config whose
files cannot travel is refused before anything runs) and the adapter directories the cells
read, in one commit, and each Job runs ``gradience-hub bench-cell --inputs REPO
--revision SHA --cell KEY ...`` in the image. ``HF_TOKEN`` reaches the Job only as a Job
secret (never in ``env`` or the command line). A Job prints each finished cell as one line
``GRADIENCE_CELL_RESULT {json}``; the driver reads it with ``fetch_job_logs`` once the Job has
ended, and an adapter trained by the Job (retrain) comes back as files in the scratch repo
(``results/<cell>/``), which the driver downloads to ``OUTPUT/retrain/<cell>/``.

The driver polls ``inspect_job`` with backoff, cancels its outstanding Jobs on Ctrl-C, and
treats ERROR, CANCELED and timeouts as failed cells whose message carries the Job's URL (exit
3). Jobs carry the labels ``gradience-run`` (the run id, kept in ``OUTPUT/cells/hf-jobs.state``),
``gradience-cells`` (the cell or the seed and stage they run) and ``gradience-inputs`` (the
inputs commit), so ``--resume`` finds the Jobs of the run that already finished (their results
are read, not rerun) or are still running (they are waited for).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradience_hub import __version__
from gradience_hub.bench.cells import CELLS_DIR, PROBE, Cell, CellResult, CellRunner, JobLink
from gradience_hub.bench.config import BenchConfig
from gradience_hub.bench.executors import portable
from gradience_hub.errors import EXIT_REMOTE, CellError, HubError, UsageError

DEFAULT_IMAGE = f"ghcr.io/gradience/audit-action:v{__version__}-bench-cuda"
"""The CUDA bench variant of the Action's image at this very version (``Dockerfile`` with
``VARIANT=bench TORCH=cu128``, pushed by ``.github/workflows/release.yml``): the Job runs the
same gradience-hub as the driver."""
DEFAULT_FLAVOR = "a10g-small"
DEFAULT_TIMEOUT = "2h"
RESULT_MARK = "GRADIENCE_CELL_RESULT "
RESULT_SCHEMA = "gradience-hub/cell-result/v1"
RUN_LABEL = "gradience-run"
CELLS_LABEL = "gradience-cells"
INPUTS_LABEL = "gradience-inputs"
# Not a .json name: cell files are <key>.json, and the cell store lists those.
STATE_FILE = "hf-jobs.state"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_duration(value: str | int) -> int:
    """Seconds from ``5400``, ``"90m"``, ``"2h"``, ``"1d"`` (the units of ``run_job``)."""
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text)
    if not match or float(match[1]) <= 0:
        raise UsageError(
            f"--job-timeout must be a duration like 2h, 30m or 5400, got {value!r}",
            hint="--job-timeout 2h",
        )
    return int(float(match[1]) * _UNITS[match[2] or "s"])


def result_line(
    key: str,
    result: CellResult,
    adapter: dict[str, str] | None,
    task: dict[str, Any] | None = None,
) -> str:
    """The one log line that carries a finished cell back to the driver; ``task`` is what the
    driver would have learnt by loading the task itself (``pool_size``, ``warnings``)."""
    doc = {
        "schema": RESULT_SCHEMA,
        "cell": key,
        "result": result.to_dict(),
        "adapter": adapter,
        "task": task,
    }
    return RESULT_MARK + json.dumps(doc, separators=(",", ":"))


def parse_results(lines: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The marked result lines of a Job's log, by cell key (malformed lines are skipped: the
    cell then counts as missing)."""
    found: dict[str, dict[str, Any]] = {}
    for line in lines:
        if not line.startswith(RESULT_MARK):
            continue
        try:
            doc = json.loads(line[len(RESULT_MARK) :])
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("schema") == RESULT_SCHEMA:
            found[str(doc.get("cell"))] = doc
    return found


def _clean(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


@dataclass
class _Group:
    """The cells one Job runs."""

    label: str
    cells: list[Cell]


@dataclass
class _Running:
    group: _Group
    job: Any  # hub.JobRef
    deadline: float


class HFJobsExecutor:
    """Runs cells as Hugging Face Jobs; see the module docstring."""

    name = "hf-jobs"

    def __init__(
        self,
        *,
        flavor: str = DEFAULT_FLAVOR,
        image: str | None = None,
        namespace: str | None = None,
        timeout: str | int | None = None,
        job_per: str | None = None,
        poll_interval: float = 2.0,
        max_poll_interval: float = 30.0,
    ) -> None:
        if job_per not in (None, "cell", "seed"):
            raise UsageError(f"--job-per must be cell or seed, got {job_per!r}")
        self.flavor = flavor
        self.image = image or DEFAULT_IMAGE
        self.namespace = namespace
        self.timeout = parse_duration(timeout if timeout is not None else DEFAULT_TIMEOUT)
        self.job_per = job_per
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        # The cells run on the Job's hardware: CPU flavors are cpu-*, every other has a GPU.
        self.device: str | None = "cpu" if flavor.startswith("cpu") else "cuda"
        self._jobs: list[JobLink] = []  # every Job this run submitted or adopted
        # The Jobs load the task and the model, so the driver needs neither the bench extra
        # nor the dataset: the protocol skips its own task load, and the Jobs report the
        # eval pool's size and the task's warnings with their results.
        self.remote_task = True
        self.pool_size: int | None = None
        self.task_warnings: list[str] = []

    @property
    def jobs(self) -> tuple[JobLink, ...]:
        """Every Job this run submitted or adopted, in submission order."""
        return tuple(self._jobs)

    def check_config(self, config: BenchConfig) -> None:
        """Refuse, before anything runs or is written, a config whose local files could not
        travel to the Jobs (a local base model, a data file outside its task folder); the
        ConfigError names the key and the path."""
        portable.pack_config(config)

    # -- the run's state -------------------------------------------------------------------

    def _state(self, output_dir: Path, namespace: str) -> dict[str, Any]:
        """``OUTPUT/cells/hf-jobs.state``: the run id (a fresh run starts a fresh cells dir)."""
        path = output_dir / CELLS_DIR / STATE_FILE
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(state, dict) and state.get("namespace") == namespace:
                return state
        run_id = secrets.token_hex(6)
        state = {
            "run_id": run_id,
            "namespace": namespace,
            "scratch_repo": f"{namespace}/gradience-bench-{run_id}",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(state) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return state

    def _groups(self, cells: Sequence[Cell], protocol: str) -> list[_Group]:
        """One Job per cell, or per seed (and stage; posthoc's seed-free cells are one group).
        The default is per seed for posthoc (one Job loads the base model once and scores
        every adapter) and per cell for retrain (every adapter trains on its own GPU at
        once)."""
        per = self.job_per or ("seed" if protocol == "posthoc" else "cell")
        if per == "cell":
            return [_Group(cell.key, [cell]) for cell in cells]
        by_seed: dict[int | None, list[Cell]] = {}
        for cell in cells:
            by_seed.setdefault(cell.seed, []).append(cell)
        groups = []
        for seed, members in by_seed.items():
            probes = sum(c.variant == PROBE for c in members)
            stage = "probes" if probes == len(members) else "variants" if not probes else "all"
            # seed-free cells (posthoc: one per model) share one Job: one base-model load
            label = "all-models" if seed is None else f"seed-{seed}-{stage}"
            groups.append(_Group(label, members))
        return groups

    # -- map -------------------------------------------------------------------------------

    def map(
        self, cells: Sequence[Cell], runner: Callable[[Cell], CellResult]
    ) -> Iterator[CellResult]:
        """Submit a Job per group of cells (or adopt the run's earlier ones), then yield
        results as Jobs finish."""
        if not cells:
            return
        if not isinstance(runner, CellRunner):
            raise UsageError("the hf-jobs executor runs the bench's own cells only")
        from gradience_hub import hub

        token = hub.token()
        if not token:
            raise HubError(
                "--executor hf-jobs needs a Hugging Face token (the Jobs run as you)",
                hint="set HF_TOKEN to a token with write access (it reaches the Jobs as a secret)",
                status=401,
            )
        namespace = self.namespace or hub.whoami()
        state = self._state(runner.output_dir, namespace)
        scratch = str(state["scratch_repo"])
        revision = self._upload_inputs(hub, scratch, runner, cells)
        labels = {RUN_LABEL: str(state["run_id"]), INPUTS_LABEL: revision[:12]}
        earlier = self._earlier_jobs(hub, namespace, labels)
        running: dict[str, _Running] = {}
        failures: dict[str, str] = {}
        try:
            for group in self._groups(cells, runner.protocol):
                job = earlier.get(group.label)
                if job is None:
                    job = hub.run_job(
                        self.image,
                        self._command(scratch, revision, group),
                        namespace=namespace,
                        flavor=self.flavor,
                        env={"PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
                        secrets={"HF_TOKEN": token},
                        timeout=self.timeout,
                        labels={**labels, CELLS_LABEL: group.label},
                    )
                self._jobs.append(JobLink(job.id, job.url))
                # The Hub enforces the timeout once the Job runs; this bounds a stuck queue.
                deadline = time.monotonic() + self.timeout + 3600
                running[job.id] = _Running(group, job, deadline)
            delay = self.poll_interval
            while running:
                finished = False
                for job_id in list(running):
                    item = running[job_id]
                    job = hub.inspect_job(job_id, namespace)
                    if not job.finished and time.monotonic() < item.deadline:
                        continue
                    del running[job_id]
                    finished = True
                    if not job.finished:
                        hub.cancel_job(job_id, namespace)
                    yield from self._collect(hub, job, item.group, runner, scratch, failures)
                if running:
                    delay = (
                        self.poll_interval if finished else min(delay * 1.5, self.max_poll_interval)
                    )
                    time.sleep(delay)
        finally:
            for job_id in running:  # Ctrl-C or an error: the Jobs would run (and bill) on
                with contextlib.suppress(Exception):
                    hub.cancel_job(job_id, namespace)
        if failures:
            raise CellError(
                failures,
                exit_code=EXIT_REMOTE,
                hint="the finished cells are saved: rerun with --resume after fixing the cause",
            )

    def _command(self, scratch: str, revision: str, group: _Group) -> list[str]:
        command = ["gradience-hub", "bench-cell", "--inputs", scratch, "--revision", revision]
        for cell in group.cells:
            command += ["--cell", cell.key]
        return [*command, "--device", self.device or "cuda"]

    def _upload_inputs(
        self, hub: Any, scratch: str, runner: CellRunner, cells: Sequence[Cell]
    ) -> str:
        spec, files = portable.runner_inputs(runner)  # the config's local files travel too
        files["spec.json"] = json.dumps(spec, sort_keys=True).encode()
        for cell in cells:
            for prefix, path in portable.cell_sources(runner, cell).items():
                for name, data in portable.dir_files(path).items():
                    files[f"{prefix}/{name}"] = data
        hub.create_scratch_repo(scratch)
        return str(hub.upload_files(scratch, files, "gradience-hub bench: cell inputs"))

    def _earlier_jobs(self, hub: Any, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
        """The run's Jobs on the same inputs that finished or still run, by cells label
        (a completed one preferred); failed ones are submitted again."""
        best: dict[str, Any] = {}
        for job in hub.list_jobs(namespace, labels):
            label = job.labels.get(CELLS_LABEL)
            if not label or job.stage in ("ERROR", "CANCELED", "DELETED"):
                continue
            if label not in best or job.stage == "COMPLETED":
                best[label] = job
        return best

    def _collect(
        self,
        hub: Any,
        job: Any,
        group: _Group,
        runner: CellRunner,
        scratch: str,
        failures: dict[str, str],
    ) -> Iterator[CellResult]:
        """The results of an ended Job; its cells without one become failures."""
        lines: list[str] = []
        with contextlib.suppress(HubError):
            lines = hub.job_logs(job.id, job.namespace)
        found = parse_results(lines) if job.stage == "COMPLETED" else {}
        for cell in group.cells:
            doc = found.get(cell.key)
            if doc is None:
                failures[cell.key] = self._why(job, lines)
                continue
            try:
                result = CellResult.from_dict(doc["result"])
                trained = self._trained(hub, scratch, doc.get("adapter"))
                self._task_facts(doc.get("task"))
            except (KeyError, TypeError, ValueError) as exc:
                failures[cell.key] = f"unreadable result from job {job.url}: {exc}"
                continue
            portable.adopt(runner, cell, result, trained)
            yield result

    def _task_facts(self, task: Any) -> None:
        if not isinstance(task, dict):
            return
        if isinstance(task.get("pool_size"), int):
            self.pool_size = task["pool_size"]
        for warning in task.get("warnings") or []:
            if isinstance(warning, str) and warning not in self.task_warnings:
                self.task_warnings.append(_clean(warning))

    @staticmethod
    def _why(job: Any, lines: list[str]) -> str:
        if job.stage == "COMPLETED":
            what = "the job completed without a result line for it"
        elif job.finished:
            what = f"job {job.stage}" + (f" ({_clean(job.message)})" if job.message else "")
        else:
            what = "the job timed out (cancelled)"
        errors = [_clean(x) for x in lines if x.startswith("Error:")]
        last = errors[-1] if errors else (_clean(lines[-1]) if lines else "")
        return f"{what}: {job.url}" + (f"; its log ends: {last[:300]}" if last else "")

    @staticmethod
    def _trained(hub: Any, scratch: str, adapter: Any) -> dict[str, bytes]:
        """The files of the adapter a Job trained, downloaded from the scratch repo."""
        if not adapter:
            return {}
        path = portable.safe_relpath(str(adapter["path"]))
        with tempfile.TemporaryDirectory(prefix="gradience-trained-") as tmp:
            hub.download_files(scratch, str(adapter["revision"]), [f"{path}/*"], Path(tmp))
            return portable.dir_files(Path(tmp) / path)
