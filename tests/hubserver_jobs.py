"""The Hugging Face Jobs API on the Hub stand-in (tests/hubserver.py), as huggingface_hub 2.4.0
calls it (``HfApi.run_job``, ``inspect_job``, ``list_jobs``, ``fetch_job_logs``, ``cancel_job``,
``wait_for_job``; ``_jobs_api.py`` for the shapes).

Routes (hooked into ``hubserver._route``; they run under the hub lock and only touch state; the
log stream is written by the handler afterwards, outside the lock, through the one-line hook in
``_HubHandler._send``):

- ``POST /api/jobs/{ns}`` ``{command, arguments, environment, flavor, secrets?, timeoutSeconds?,
  labels?, dockerImage | spaceId}`` -> JobInfo (stage SCHEDULING). Needs a write token of ``ns``.
- ``GET /api/jobs/{ns}/{id}`` -> JobInfo; ``GET /api/jobs/{ns}?label=k=v&stage=S`` -> [JobInfo]
  (every label must match, any stage may).
- ``GET /api/jobs/{ns}/{id}/logs[?tail=N]`` -> server-sent events ``data: {"data", "timestamp"}``:
  the log from its first line (or the last N), then each new line as the job writes it; the
  stream closes when the job has ended (the client re-checks the stage then, and skips lines it
  has already seen when it reconnects). The first line is ``===== Job started ...`` as on the
  Hub (the client drops it).
- ``POST /api/jobs/{ns}/{id}/cancel`` -> 200; a running job's process group is killed.

A job is the container stand-in: its ``command + arguments`` run as a local subprocess in a
fresh working directory and a fresh ``HF_HOME``, with only ``PATH`` (the test venv's ``bin``
first, so its python and console scripts are what the image would hold), ``HF_ENDPOINT`` (this
server: the "container" reaches the stand-in Hub), :attr:`JobsState.base_env` (what the tests
add, e.g. ``PYTHONPATH`` to the worktree) and then the job's ``environment`` and ``secrets`` as
environment variables. The image name is recorded, not pulled. A thread per job starts it
(outside the lock), reads its merged stdout/stderr line by line into the log, and sets the stage:
SCHEDULING -> RUNNING -> COMPLETED (exit 0) | ERROR (non-zero exit or ``timeoutSeconds``
exceeded) | CANCELED. JobInfo never carries a secret's value (names only, value ``None``).

Tests reach the state with :func:`jobs_of` (``jobs_of(hub).jobs``, ``.hold()``, ``.shutdown()``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.hubserver import HubError, HubServer, _Ctx, _json_response, _Response

__all__ = ["FLAVORS", "Job", "JobsState", "jobs_of", "jobs_route"]

# huggingface_hub's JobHardware (kept in sync with the Hub by its own check script).
FLAVORS = (
    "cpu-basic",
    "cpu-upgrade",
    "cpu-performance",
    "cpu-xl",
    "t4-small",
    "t4-medium",
    "l4x1",
    "l4x4",
    "l40sx1",
    "l40sx4",
    "l40sx8",
    "a10g-small",
    "a10g-large",
    "a10g-largex2",
    "a10g-largex4",
    "a100-large",
    "a100x4",
    "a100x8",
    "h200",
    "h200x2",
    "h200x4",
    "h200x8",
)
TERMINAL = ("COMPLETED", "CANCELED", "ERROR", "DELETED")


def _now_iso() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class Job:
    """One job: its spec as POSTed, its stage and its log lines ``(timestamp, text)``."""

    id: str
    owner: str
    spec: dict[str, Any]
    created_at: str
    stage: str = "SCHEDULING"
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    cancel_requested: bool = False
    workdir: str | None = None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.spec.get("labels") or {})

    @property
    def text(self) -> str:
        """The log as the program wrote it (without the Hub's ``===== Job started`` line)."""
        return "".join(line + "\n" for _, line in self.logs[1:])


class JobsState:
    """The jobs of one HubServer. ``base_env`` is added to every job's environment (under the
    job's own ``environment`` and ``secrets``); ``hold()`` keeps new jobs in SCHEDULING until
    ``release()``."""

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub
        self.jobs: dict[str, Job] = {}
        self.base_env: dict[str, str] = {}
        self._released = threading.Event()
        self._released.set()
        self._threads: list[threading.Thread] = []
        self._counter = 0

    # -- test controls -------------------------------------------------------------------

    def hold(self) -> None:
        """Keep jobs created from now on in SCHEDULING (a busy cluster)."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def wait_all(self, timeout: float = 120) -> None:
        """Wait for every job thread (the test's own synchronisation, not the client's)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def shutdown(self) -> None:
        """Kill every process still running and wait for the threads."""
        self._released.set()
        with self.hub._lock:
            for job in self.jobs.values():
                job.cancel_requested = True
                _kill(job)
        self.wait_all(30)

    # -- state (call with the hub lock held) -----------------------------------------------

    def create(self, owner: str, spec: dict[str, Any]) -> Job:
        self._counter += 1
        job_id = f"{int(time.time()):08x}{self._counter:016x}"
        job = Job(id=job_id, owner=owner, spec=spec, created_at=_now_iso())
        self.jobs[job_id] = job
        thread = threading.Thread(target=self._run, args=(job,), daemon=True, name=f"job:{job_id}")
        self._threads.append(thread)
        thread.start()
        return job

    def info(self, job: Job) -> dict[str, Any]:
        """The JobInfo JSON: the spec echoed back, secrets by name only."""
        spec = job.spec
        out: dict[str, Any] = {
            "id": job.id,
            "createdAt": job.created_at,
            "command": spec.get("command"),
            "arguments": spec.get("arguments") or [],
            "environment": spec.get("environment") or {},
            "secrets": {name: None for name in spec.get("secrets") or {}},
            "flavor": spec.get("flavor"),
            "labels": spec.get("labels") or None,
            "status": {"stage": job.stage, "message": job.message},
            "owner": {"id": f"{abs(hash(job.owner)) % 16**24:024x}", "name": job.owner},
        }
        out["owner"]["type"] = "user"
        for key in ("dockerImage", "spaceId", "timeoutSeconds"):
            if key in spec:
                out[key] = spec[key]
        if job.started_at:
            out["startedAt"] = job.started_at
        if job.finished_at:
            out["finishedAt"] = job.finished_at
        return out

    # -- the container stand-in (a thread per job, outside the lock) -----------------------

    def _environment(self, job: Job, workdir: str) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        env = {
            "PATH": os.pathsep.join([bin_dir, "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": workdir,
            "HF_HOME": os.path.join(workdir, ".cache", "huggingface"),
            "HF_ENDPOINT": self.hub.url,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        env.update(self.base_env)
        env.update({k: str(v) for k, v in (job.spec.get("environment") or {}).items()})
        env.update({k: str(v) for k, v in (job.spec.get("secrets") or {}).items()})
        return env

    def _append(self, job: Job, line: str) -> None:
        with self.hub._lock:
            job.logs.append((_now_iso(), line))

    def _finish(self, job: Job, stage: str, message: str | None) -> None:
        with self.hub._lock:
            if job.stage in TERMINAL:
                return
            job.stage, job.message, job.finished_at = stage, message, _now_iso()

    def _run(self, job: Job) -> None:
        while not self._released.wait(0.05):
            if job.cancel_requested:
                break
        workdir = tempfile.mkdtemp(prefix=f"hubjob-{job.id}-")
        with self.hub._lock:
            if job.cancel_requested:
                job.stage, job.finished_at = "CANCELED", _now_iso()
                return
            argv = [*job.spec["command"], *(job.spec.get("arguments") or [])]
            try:
                job.process = subprocess.Popen(
                    argv,
                    cwd=workdir,
                    env=self._environment(job, workdir),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # cancel kills the whole group
                )
            except OSError as exc:
                job.stage, job.message, job.finished_at = "ERROR", str(exc), _now_iso()
                return
            job.workdir = workdir
            job.stage, job.started_at = "RUNNING", _now_iso()
            job.logs.append((job.started_at, f"===== Job started at {job.started_at} ====="))
            process = job.process
        timeout = job.spec.get("timeoutSeconds")
        timer = None
        timed_out = threading.Event()
        if timeout:

            def expire() -> None:
                timed_out.set()
                with self.hub._lock:
                    _kill(job)

            timer = threading.Timer(float(timeout), expire)
            timer.daemon = True
            timer.start()
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self._append(job, raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        code = process.wait()
        if timer is not None:
            timer.cancel()
        with self.hub._lock:
            job.exit_code = code
            cancelled = job.cancel_requested
        if cancelled:
            self._finish(job, "CANCELED", None)
        elif timed_out.is_set():
            self._finish(job, "ERROR", f"Job timeout ({timeout}s)")
        elif code != 0:
            self._finish(job, "ERROR", f"Job failed with exit code: {code}")
        else:
            self._finish(job, "COMPLETED", None)


def _kill(job: Job) -> None:
    process = job.process
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def jobs_of(hub: HubServer) -> JobsState:
    """The Jobs state of ``hub`` (created on first use)."""
    with hub._lock:
        state = hub.__dict__.get("_jobs_state")
        if state is None:
            state = JobsState(hub)
            hub.__dict__["_jobs_state"] = state
        return state


# --------------------------------------------------------------------------- routes


def _check_namespace(hub: HubServer, ns: str, ctx: _Ctx, write: bool) -> None:
    user = ctx.user
    if user is None:
        raise HubError(401, "Invalid credentials in Authorization header")
    if ns != user.name:
        raise HubError(403, f"You don't have access to the namespace {ns}")
    if write and not user.write:
        raise HubError(403, "You need a token with write access to run jobs")


def _str_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise HubError(400, f"Invalid {name}: expected an object of strings")
    return value


def _validate(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise HubError(400, "Invalid job spec")
    command = spec.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise HubError(400, "Invalid command: expected a non-empty array of strings")
    if not isinstance(spec.get("arguments", []), list):
        raise HubError(400, "Invalid arguments")
    if spec.get("flavor") not in FLAVORS:
        raise HubError(400, f"Invalid flavor: {spec.get('flavor')!r}")
    if not (spec.get("dockerImage") or spec.get("spaceId")):
        raise HubError(400, "Either dockerImage or spaceId is required")
    for name in ("environment", "secrets", "labels"):
        _str_map(spec.get(name), name)
    timeout = spec.get("timeoutSeconds")
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise HubError(400, "Invalid timeoutSeconds")
    return spec


def _job(state: JobsState, ns: str, job_id: str) -> Job:
    job = state.jobs.get(job_id)
    if job is None or job.owner != ns:
        raise HubError(404, f"Job {job_id} not found")
    return job


@dataclass
class _EventStream(_Response):
    """An answer the handler streams instead of sending ``body`` (the hook in ``_send``)."""

    job: Job | None = None
    tail: int | None = None
    hub: HubServer | None = None

    def stream(self, handler: Any) -> None:
        """Write the log as server-sent events, then every new line as it comes, and close
        the stream once the job has ended (as the Hub does)."""
        assert self.job is not None and self.hub is not None
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        with self.hub._lock:
            sent = 0 if self.tail is None else max(0, len(self.job.logs) - self.tail)
        try:
            while True:
                with self.hub._lock:
                    events = self.job.logs[sent:]
                    ended = self.job.stage in TERMINAL
                sent += len(events)
                for ts, text in events:
                    payload = json.dumps({"data": text, "timestamp": ts})
                    handler.wfile.write(f"data: {payload}\n\n".encode())
                handler.wfile.flush()
                if ended and not events:
                    return
                time.sleep(0.05)
        except OSError:  # the client went away (no-follow reads stop early)
            return


def _logs(hub: HubServer, job: Job, ctx: _Ctx) -> _Response:
    tail = ctx.q("tail")
    try:
        n = None if tail is None else max(0, int(tail))
    except ValueError:
        raise HubError(400, "Invalid tail") from None
    return _EventStream(job=job, tail=n, hub=hub)


def jobs_route(hub: HubServer, method: str, segs: list[str], ctx: _Ctx) -> _Response:
    """``/api/jobs/...`` (``segs`` is what follows ``jobs``)."""
    state = jobs_of(hub)
    if not segs or segs == ["hardware"]:
        raise HubError(404, "Not found")
    ns = segs[0]
    _check_namespace(hub, ns, ctx, write=method != "GET")
    if len(segs) == 1 and method == "POST":
        job = state.create(ns, _validate(ctx.json()))
        ctx.mutated = True
        return _json_response(state.info(job))
    if len(segs) == 1 and method == "GET":
        labels = []
        for item in ctx.query.get("label", []):
            key, sep, value = item.partition("=")
            if not sep:
                raise HubError(400, f"Invalid label filter {item!r}: expected key=value")
            labels.append((key, value))
        stages = {s.upper() for s in ctx.query.get("stage", [])}
        found = [
            state.info(job)
            for job in state.jobs.values()
            if job.owner == ns
            and all(job.labels.get(k) == v for k, v in labels)
            and (not stages or job.stage in stages)
        ]
        return _json_response(found)
    if len(segs) >= 2:
        job = _job(state, ns, segs[1])
        rest = segs[2:]
        if not rest and method == "GET":
            return _json_response(state.info(job))
        if rest == ["logs"] and method == "GET":
            return _logs(hub, job, ctx)
        if rest == ["cancel"] and method == "POST":
            if job.stage not in TERMINAL:
                job.cancel_requested = True
                if job.process is None:  # still scheduling: it never starts
                    job.stage, job.finished_at = "CANCELED", _now_iso()
                else:
                    _kill(job)
                ctx.mutated = True
            return _json_response({})
    raise HubError(404, f"Not found: {method} /api/jobs/{'/'.join(segs)}")
