"""Running the service: ``serve`` (uvicorn on a socket we bind) and ``serve --once``.

One process owns a state directory: ``serve.lock`` is held with ``flock`` for the life of
the process (the kernel drops it on ``kill -9``), so a second ``serve`` on the same directory
exits 2 instead of running the same jobs twice.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gradience_hub.errors import ConfigError, MissingExtraError, UsageError
from gradience_hub.serve.config import ServeConfig, ServeOptions, load_config
from gradience_hub.serve.events import PayloadError, parse_payload, route_event
from gradience_hub.serve.log import EventLog, forward_library_logs, service_secrets
from gradience_hub.serve.queue import Job, JobQueue


def require_serve_extra() -> None:
    """Exit 2 naming the ``serve`` extra when FastAPI or uvicorn is missing."""
    import importlib.util

    for package in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(package) is None:
            raise MissingExtraError(package, extra="serve")


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Hold ``state_dir/serve.lock`` exclusively, or exit 2 when another process has it."""
    import fcntl

    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(state_dir / "serve.lock", "a+")  # noqa: SIM115 - held for the process
    except OSError as exc:
        raise ConfigError(
            f"cannot use --state-dir {state_dir}: {exc}", hint="pass a writable directory"
        ) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(
                f"another gradience-hub serve is using {state_dir}",
                hint="stop it, or give this one its own --state-dir",
            ) from None
        yield
    finally:
        handle.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another --port (0: any free port) or --host",
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(options: ServeOptions, config: ServeConfig, log: EventLog) -> None:
    """Run the service until SIGINT/SIGTERM."""
    require_serve_extra()
    import uvicorn

    from gradience_hub.serve.app import Service, create_app
    from gradience_hub.serve.pool import WorkerPool

    with state_lock(options.state_dir):
        queue = JobQueue(options.state_dir, scrub=log.secrets.scrub)
        recovery = queue.recover(max_attempts=options.max_attempts)
        for job_id in recovery.failed:
            job = queue.get(job_id)
            assert job is not None
            log("job.failed", level="error", job=job.id, repo=job.repo, detail=job.detail)
        pool = WorkerPool(queue, config, options, log)
        app = create_app(Service(queue, config, options, pool, log))
        sock = _bind(options.host, options.port)
        host, port = sock.getsockname()[:2]
        counts = queue.counts()
        log(
            "serve.listening",
            host=host,
            port=port,
            url=f"http://{host}:{port}",
            workers=options.workers,
            state_dir=str(options.state_dir),
            queued=counts["queued"],
            recovered=len(recovery.requeued),
            gave_up=len(recovery.failed),
            watch=config.watch.ref,
            status_pages="on" if options.status_token else "off",
            job_timeout=options.job_timeout,
        )
        forward_library_logs(log)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=5,
                # the Hub's deliveries are small; slow clients must not hold the workers
                timeout_keep_alive=5,
            )
        )
        try:
            server.run(sockets=[sock])
        finally:
            pool.stop(timeout=0.0)  # the lifespan stopped it; this covers a failed start
            sock.close()
            queue.close()
        log("serve.stopped")


def run_once(
    payload_text: str | None, config: ServeConfig, options: ServeOptions, log: EventLog
) -> tuple[int, dict[str, Any]]:
    """``serve --once``: decide and run the one event in WEBHOOK_PAYLOAD (a Hub Job's input).

    Returns (exit code, the JSON the command prints): 0 when done, skipped or ignored; the
    error's exit code (3 for the Hub, 2 for bad input) when the job failed.
    """
    import time

    from gradience_hub.serve.worker import describe, run_inline

    if not payload_text:
        raise UsageError(
            "WEBHOOK_PAYLOAD is not set",
            hint="serve --once runs the event a webhook-triggered Job receives in WEBHOOK_PAYLOAD",
        )
    try:
        decision = route_event(parse_payload(payload_text), config)
    except PayloadError as exc:
        raise UsageError(f"WEBHOOK_PAYLOAD: {exc}", hint="pass the Hub's webhook JSON") from None
    if not decision.queued:
        log("webhook.ignored", repo=decision.repo, reason=decision.reason)
        return 0, {"status": "ignored", "reason": decision.reason}
    assert decision.repo and decision.sha and decision.ref
    now = time.time()
    job = Job(
        id=0,
        repo=decision.repo,
        sha=decision.sha,
        ref=decision.ref,
        old_sha=decision.old_sha,
        status="running",
        attempts=1,
        created_at=now,
        updated_at=now,
        started_at=now,
        finished_at=None,
        not_before=None,
        webhook_id=decision.webhook_id,
        pr_url=None,
        commit_url=None,
        detail=None,
    )
    log("job.started", repo=job.repo, sha=job.sha)
    outcome = run_inline(job, config, options, log)
    log(
        f"job.{outcome.status}",
        repo=job.repo,
        sha=job.sha,
        detail=outcome.detail,
        pr_url=outcome.pr_url,
        commit_url=outcome.commit_url,
    )
    out = {"repo": job.repo, "sha": job.sha, **describe(outcome)}
    return (outcome.exit_code or 1) if outcome.status == "failed" else 0, out


def stdout_json(data: dict[str, Any], scrub: Callable[[str], str] | None = None) -> None:
    """Print one JSON line on stdout (through ``scrub``, the service's secret scrubber)."""
    line = json.dumps(data)
    sys.stdout.write((scrub(line) if scrub is not None else line) + "\n")
    sys.stdout.flush()


def environment_secret(insecure: bool, log: EventLog | None = None) -> str | None:
    """WEBHOOK_SECRET from the environment; without it, exit 2 unless ``insecure``."""
    secret = os.environ.get("WEBHOOK_SECRET")
    if secret:
        return secret
    if not insecure:
        raise UsageError(
            "WEBHOOK_SECRET is not set: the service would accept webhooks from anyone",
            hint="set WEBHOOK_SECRET to the webhook's secret (or pass --insecure-no-secret)",
        )
    if log is not None:
        log(
            "serve.insecure",
            level="warning",
            message="WARNING: --insecure-no-secret: ANYONE who can reach this port can queue "
            "jobs that publish with HF_TOKEN. Use it on a private network only.",
        )
    return None


def parse_watch(items: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """``--watch org:NAME|user:NAME|model:ORG/NAME`` values as (type, name) pairs."""
    watched = []
    for item in items:
        kind, _, name = item.partition(":")
        if kind not in ("org", "user", "model") or not name:
            raise UsageError(
                f"--watch {item!r}: use org:NAME, user:NAME or model:ORG/NAME",
                hint="e.g. --watch org:my-org --watch model:my-org/my-adapter",
            )
        watched.append((kind, name))
    return watched


def run_command(config_path: str | None, *, once: bool, insecure: bool, **options: Any) -> int:
    """``gradience-hub serve``: read the config and the secrets, then serve (or run --once).

    Returns the exit code. The secrets come from the environment only: WEBHOOK_SECRET is
    checked here, STATUS_TOKEN (optional) opens the status pages to whoever holds it, HF_TOKEN
    is read by huggingface_hub itself on every request.
    """
    config = load_config(config_path)
    log = EventLog(secrets=service_secrets())
    secret = None if once else environment_secret(insecure, log)
    settings = ServeOptions(
        secret=secret, status_token=os.environ.get("STATUS_TOKEN") or None, **options
    )
    if once:
        code, out = run_once(os.environ.get("WEBHOOK_PAYLOAD"), config, settings, log)
        stdout_json(out, log.secrets.scrub)
        return code
    if not os.environ.get("HF_TOKEN"):
        log("serve.no_token", level="warning", message="HF_TOKEN is not set: jobs cannot publish")
    serve(settings, config, log)
    return 0
