"""The ASGI app (FastAPI): ``POST /webhook``, ``GET /healthz``, ``GET /runs``, ``GET /``.

``POST /webhook`` answers, in this order: 401 without ``X-Webhook-Secret``, 403 when it is
wrong (compared in constant time; nothing is read or queued), 413 for a body over 1 MB, 400
for a body that is not JSON we can read (malformed, not UTF-8, nested too deeply) or a payload
without the fields it needs, 503 when the queue is full, 202 ``{"status": "queued", "job_id"}``
for a new job, 200 ``{"status": "ignored", "reason"}`` for everything else (other events,
other branches, duplicates of a (repo, sha) already seen).

What is open: ``/healthz`` (counts only, no repo names) and ``/webhook`` (its secret). The
status pages ``/`` and ``/runs`` list every repo the service audited, private ones included,
with their shas, PR links and errors: they answer only the operator, who holds STATUS_TOKEN
(``Authorization: Bearer TOKEN``, or HTTP Basic with the token as the password so that a
browser asks for it; compared in constant time). Without STATUS_TOKEN they are off: 404 with
a message that says how to turn them on. Every job served is passed through the service's
secret scrubber first.

FastAPI is imported here only; :mod:`gradience_hub.serve` itself stays light.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import html
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from gradience_hub import __version__
from gradience_hub.serve.config import ServeConfig, ServeOptions
from gradience_hub.serve.events import Decision, PayloadError, parse_payload, route_event
from gradience_hub.serve.log import EventLog
from gradience_hub.serve.pool import WorkerPool
from gradience_hub.serve.queue import Job, JobQueue, QueueFull

MAX_PAGE = 200
REALM = "gradience-hub serve"


@dataclass
class Service:
    """Everything the routes share: the queue, the config, the options, workers and log."""

    queue: JobQueue
    config: ServeConfig
    options: ServeOptions
    pool: WorkerPool
    log: EventLog


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def check_secret(expected: str | None, given: str | None) -> JSONResponse | None:
    """None when the request may pass; else the 401/403 answer."""
    if expected is None:  # --insecure-no-secret
        return None
    if given is None:
        return _error(401, "the X-Webhook-Secret header is missing")
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        return _error(403, "the X-Webhook-Secret header is wrong")
    return None


def _presented(authorization: str | None) -> str | None:
    """The credential in an ``Authorization`` header: a Bearer token, or a Basic password."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def check_status_credential(expected: str | None, authorization: str | None) -> Response | None:
    """None when the caller may read the status pages; else the 404 (they are off) or 401."""
    if expected is None:
        return _error(
            404,
            "the status pages are off: they list every repo the service audited; set "
            "STATUS_TOKEN to turn them on for whoever holds it (/healthz stays open)",
        )
    given = _presented(authorization)
    if given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        return None
    denied = _error(
        401,
        "the status pages need the operator's STATUS_TOKEN: send Authorization: Bearer TOKEN"
        if given is None
        else "the credential is wrong",
    )
    # a browser asks for Basic (any user name, the token as password); scripts send Bearer
    denied.headers.append("WWW-Authenticate", f'Bearer realm="{REALM}"')
    denied.headers.append("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
    return denied


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _link(url: str | None, text: str) -> str:
    if not url or not url.startswith(("https://", "http://")):
        return ""
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(text)}</a>'


def status_page(jobs: list[Job], counts: dict[str, int]) -> str:
    """The small HTML status page: queue depth and the recent jobs, every string escaped."""
    rows = []
    for job in jobs:
        rows.append(
            "<tr>"
            f"<td>{job.id}</td><td>{html.escape(job.repo)}</td>"
            f"<td><code>{html.escape(job.sha[:7])}</code></td>"
            f'<td class="{html.escape(job.status)}">{html.escape(job.status)}</td>'
            f"<td>{job.attempts}</td><td>{_when(job.updated_at)}</td>"
            f"<td>{_link(job.pr_url, 'PR') or _link(job.commit_url, 'commit')}</td>"
            f"<td>{html.escape(job.detail or '')}</td>"
            "</tr>"
        )
    summary = ", ".join(f"{html.escape(k)}: {v}" for k, v in counts.items())
    body = "\n".join(rows) or '<tr><td colspan="8">no jobs yet</td></tr>'
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        "<title>gradience-hub serve</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .6em;"
        "text-align:left}.failed{color:#b00}.done{color:#070}</style></head><body>"
        f"<h1>gradience-hub serve</h1><p>Version {html.escape(__version__)}. {summary}</p>"
        "<table><tr><th>job</th><th>repo</th><th>sha</th><th>status</th><th>attempts</th>"
        f"<th>updated</th><th>link</th><th>detail</th></tr>\n{body}\n</table>"
        '<p><a href="/runs">/runs</a> (JSON) · <a href="/healthz">/healthz</a></p>'
        "</body></html>\n"
    )


def create_app(service: Service) -> FastAPI:
    """The FastAPI app over ``service``; the lifespan starts and stops the workers."""
    app = FastAPI(
        title="gradience-hub serve",
        version=__version__,
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service
    app.include_router(_router)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the workers with the app; stop them when it shuts down."""
    service: Service = app.state.service
    service.pool.start()
    yield
    # the workers finish their current job in a thread: do not block the event loop
    await run_in_threadpool(service.pool.stop)


def _service(request: Request) -> Service:
    """The :class:`Service` of the app that received ``request`` (set by :func:`create_app`)."""
    service: Service = request.app.state.service
    return service


def _served(service: Service, jobs: list[Job]) -> list[Job]:
    """``jobs`` as the status pages show them, secrets scrubbed."""
    # rows stored before the queue scrubbed on write, or a secret added since: scrub again
    scrub = service.log.secrets.scrub
    return [job.redacted(scrub) for job in jobs]


_router = APIRouter()


@_router.post("/webhook")
async def webhook(request: Request) -> JSONResponse:
    """Check the secret, read the event and queue the audit it asks for (see the module
    docstring for every answer)."""
    service = _service(request)
    log, options = service.log, service.options
    denied = check_secret(options.secret, request.headers.get("x-webhook-secret"))
    if denied is not None:
        log("webhook.denied", level="warning", status=denied.status_code)
        return denied
    body = await _read_body(request, options.max_body)
    if body is None:
        return _error(413, f"the body is larger than {options.max_body} bytes")
    try:
        decision = route_event(parse_payload(body), service.config)
    except PayloadError as exc:
        log("webhook.bad_request", level="warning", reason=str(exc))
        return _error(400, str(exc))
    if not decision.queued:
        log("webhook.ignored", repo=decision.repo, reason=decision.reason)
        return JSONResponse({"status": "ignored", "reason": decision.reason})
    return await _enqueue(service, decision)


async def _enqueue(service: Service, decision: Decision) -> JSONResponse:
    """Queue the job a push asks for: 202 when queued, 200 ignored for a duplicate or a late
    delivery, 503 when the queue is full."""
    log = service.log
    assert decision.repo and decision.sha and decision.ref
    try:
        done = await run_in_threadpool(
            service.queue.enqueue,
            decision.repo,
            decision.sha,
            decision.ref,
            webhook_id=decision.webhook_id,
            old_sha=decision.old_sha,
            max_queue=service.options.max_queue,
        )
    except QueueFull as exc:
        log("webhook.queue_full", level="warning", repo=decision.repo, reason=str(exc))
        return JSONResponse(
            {"error": f"the queue is full: {exc}"},
            status_code=503,
            headers={"Retry-After": "60"},
        )
    job = done.job
    if not done.created:
        reason = f"duplicate: {job.repo}@{job.sha[:7]} is job {job.id} ({job.status})"
        log("webhook.duplicate", repo=job.repo, sha=job.sha, job=job.id)
        return JSONResponse({"status": "ignored", "reason": reason, "job_id": job.id})
    if job.status == "skipped":  # a late delivery of a push that was already followed
        log("webhook.late", repo=job.repo, sha=job.sha, job=job.id, reason=job.detail)
        return JSONResponse({"status": "ignored", "reason": job.detail, "job_id": job.id})
    service.pool.wake()
    log(
        "webhook.queued",
        repo=job.repo,
        sha=job.sha,
        job=job.id,
        superseded=list(done.superseded) or None,
    )
    return JSONResponse(
        {"status": "queued", "job_id": job.id, "repo": job.repo, "sha": job.sha},
        status_code=202,
    )


@_router.get("/healthz")
def healthz(request: Request) -> dict[str, Any]:
    """Liveness and queue counts: open to anyone, so no repo names."""
    service = _service(request)
    counts = service.queue.counts()
    return {
        "status": "ok",
        "version": __version__,
        "queue_depth": counts["queued"] + counts["running"],
        "counts": counts,
        "workers": service.options.workers,
    }


@_router.get("/runs", response_model=None)
def runs(request: Request, limit: int = 50, offset: int = 0) -> Response:
    """A page of jobs as JSON, for the operator only."""
    service = _service(request)
    options, queue = service.options, service.queue
    denied = check_status_credential(options.status_token, request.headers.get("authorization"))
    if denied is not None:
        return denied
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        return _error(400, f"limit must be 1..{MAX_PAGE} and offset >= 0")
    jobs, total = queue.page(limit, offset)
    following = offset + limit if offset + limit < total else None
    return JSONResponse(
        {
            "runs": [j.to_dict() for j in _served(service, jobs)],
            "total": total,
            "limit": limit,
            "offset": offset,
            "next": None if following is None else f"/runs?limit={limit}&offset={following}",
        }
    )


@_router.get("/", response_model=None)
def index(request: Request) -> Response:
    """The HTML status page, for the operator only."""
    service = _service(request)
    options, queue = service.options, service.queue
    denied = check_status_credential(options.status_token, request.headers.get("authorization"))
    if denied is not None:
        return denied
    jobs, _ = queue.page(50, 0)
    return HTMLResponse(status_page(_served(service, jobs), queue.counts()))
