"""What a job does, and the worker threads that run the queue.

A job is ``annotate`` of one repo, by Hub PR (default) or on the branch (``direct: true``),
with the bench of its config rule: the same card section, files and commit the CLI writes
(:func:`gradience_hub.publish.annotate.annotate`). It audits the head of the watched branch as
the Hub reports it when the job starts, not the sha of the event that queued it: the Hub may
deliver pushes out of order, and the newest commit must win whatever the order (the job
records what it audited in ``audited_sha``). Jobs of one repo never run at once (the queue), so
a card is never built from an older commit than the one a previous job published. Repos
without an adapter (no ``adapter_config.json`` and no LoRA weight file) are recorded as
skipped.

The worker threads (:mod:`.pool`) run each job in a process of their own, under a wall-clock
limit (``--job-timeout``): a job that hangs is stopped and failed, one that kills its process
(out of memory) costs an attempt, and the service goes on with the other jobs.

Failures are sorted once, in :func:`classify_failure`: 429, 5xx, 412 and dropped connections
are transient (the job goes back to the queue with a backoff that honours ``Retry-After``);
401, 403 and 404 are permanent and recorded, not retried; bad adapters, records and configs
fail for good. annotate's own retry loop is turned off (``max_transient_retries=0``) so that
one slow repo backs off in the durable queue instead of holding a worker.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from gradience_hub.errors import GradienceError, HubError, RecordError
from gradience_hub.serve.config import RepoRule, ServeConfig, ServeOptions
from gradience_hub.serve.queue import Job, JobQueue

# HTTP statuses that will not change by waiting: recorded, never retried.
PERMANENT = (400, 401, 403, 404, 409, 422)
MAX_DELAY = 300.0  # seconds: a Retry-After beyond this is capped
MAX_BENCH_JSON = 10 * 1024 * 1024

Log = Callable[..., None]


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: a final status, or ``retry`` after ``delay`` seconds."""

    status: str  # "done" | "failed" | "skipped" | "retry"
    detail: str
    pr_url: str | None = None
    commit_url: str | None = None
    delay: float = 0.0
    exit_code: int = 0
    seconds: float | None = None  # the attempt's wall time
    annotate_seconds: float | None = None  # of which annotate itself
    audited_sha: str | None = None  # the branch head the attempt read and audited


def is_adapter_listing(paths: list[str]) -> bool:
    """Whether a repo's files include an adapter: an adapter_config.json, or a LoRA weight
    file (PEFT's adapter_model.*, diffusers' pytorch_lora_weights.*, kohya's *lora*.safetensors)."""
    for path in paths:
        name = PurePosixPath(path).name.lower()
        if name == "adapter_config.json":
            return True
        if name.endswith((".safetensors", ".bin")) and (
            name.startswith("adapter_model.") or "lora" in name
        ):
            return True
    return False


def backoff(attempt: int, base: float, retry_after: float | None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: the Hub's Retry-After when it sent one,
    else ``base * 2**(attempt-1)``; capped at MAX_DELAY."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_DELAY)
    return min(base * 2 ** max(attempt - 1, 0), MAX_DELAY)


def classify_failure(exc: BaseException, attempt: int, options: ServeOptions) -> Outcome:
    """Turn an exception of one attempt into the job's next step."""
    from gradience_hub import hub

    if isinstance(exc, HubError):
        status = exc.status
        if status in PERMANENT:
            return Outcome("failed", exc.message, exit_code=exc.exit_code)
        if attempt >= options.max_attempts:
            return Outcome(
                "failed", f"gave up after {attempt} attempts: {exc.message}", exit_code=3
            )
        delay = backoff(attempt, options.retry_base, hub.retry_after(exc))
        return Outcome("retry", exc.message, delay=delay, exit_code=exc.exit_code)
    if isinstance(exc, GradienceError):
        return Outcome("failed", exc.message, exit_code=exc.exit_code)
    return Outcome("failed", f"internal error: {type(exc).__name__}: {exc}", exit_code=70)


def interrupted(job: Job, options: ServeOptions, why: str) -> Outcome:
    """The next step of a job whose process died under it: the attempt was counted when the
    job was claimed; below ``max_attempts`` it is tried again after a backoff, at it failed."""
    if job.attempts >= options.max_attempts:
        return Outcome("failed", f"gave up after {job.attempts} attempts: {why}", exit_code=70)
    return Outcome("retry", why, delay=backoff(job.attempts, options.retry_base, None))


def timed_out(limit: float) -> Outcome:
    """A job stopped at its wall-clock limit: failed, not retried (it would hang again)."""
    return Outcome(
        "failed",
        f"stopped after the wall-clock limit of {limit:g} s (--job-timeout)",
        exit_code=3,
    )


def _fetch_bench_json(repo: str, sha: str, where: str, directory: Path) -> str:
    """The rule's bench_json as a local file: a path in the repo at ``sha``, or a URL."""
    target = directory / "bench.json"
    if where.startswith(("https://", "http://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(where, timeout=30) as response:
                data = response.read(MAX_BENCH_JSON + 1)
        except (urllib.error.URLError, OSError) as exc:
            raise HubError(f"cannot download bench_json {where}: {exc}") from None
        if len(data) > MAX_BENCH_JSON:
            raise RecordError(f"bench_json {where} is larger than 10 MB")
        target.write_bytes(data)
        return str(target)
    from gradience_hub import hub

    text = hub.read_text(repo, where, sha)
    if text is None:
        raise HubError(f"{repo} has no {where} at {sha[:7]} (bench_json of the config)", status=404)
    target.write_text(text, encoding="utf-8")
    return str(target)


def run_job(job: Job, rule: RepoRule | None, log: Log) -> Outcome:
    """One attempt at a job; raises whatever annotate raises (see :func:`classify_failure`)."""
    from gradience_hub import hub
    from gradience_hub.publish.annotate import annotate

    if rule is None:
        return Outcome("skipped", "the repo no longer matches a rule of the config")
    if os.path.exists(job.repo):
        # annotate reads an existing path as a local directory: never let a repo name
        # from a webhook make the service write into the machine's files
        return Outcome("failed", "a local path of that name exists in the working directory")
    branch = job.ref.removeprefix("refs/heads/")
    # The branch head now, not the event's sha: deliveries may come out of order, and an
    # older event run last would otherwise publish a stale card over a newer one.
    head = hub.resolve_sha(job.repo, branch)
    if head != job.sha:
        log("job.head", job=job.id, repo=job.repo, sha=job.sha, head=head)
    if not is_adapter_listing(hub.repo_files(job.repo, head)):
        return Outcome(
            "skipped", f"not an adapter: no adapter_config.json at {head[:7]}", audited_sha=head
        )
    with tempfile.TemporaryDirectory(prefix="gradience-serve-") as tmp:
        bench_json = (
            _fetch_bench_json(job.repo, head, rule.bench_json, Path(tmp))
            if rule.bench_json
            else None
        )
        started = time.perf_counter()
        result = annotate(
            job.repo,
            # a Hub PR branches from the head read above; a direct commit goes on the branch
            revision=(branch if rule.direct else head),
            create_pr=not rule.direct,
            bench_json=bench_json,
            bench_config=rule.bench_config,
            max_transient_retries=0,
            log=lambda msg: log("job.progress", job=job.id, repo=job.repo, message=msg),
        )
    if not result.changed:
        detail = "up to date: nothing to commit"
    elif result.target == "pr":
        detail = f"Hub PR updated ({result.status})"
    else:
        detail = f"committed to {job.ref} ({result.status})"
    if head != job.sha:
        detail += f"; audited the branch head {head[:7]}, newer than this push"
    return Outcome(
        "done",
        detail,
        pr_url=result.pr_url,
        commit_url=result.commit_url,
        annotate_seconds=time.perf_counter() - started,
        audited_sha=head,
    )


def attempt(job: Job, rule: RepoRule | None, options: ServeOptions, log: Log) -> Outcome:
    """Run one attempt and classify its failure; never raises."""
    started = time.perf_counter()
    try:
        outcome = run_job(job, rule, log)
    except Exception as exc:
        outcome = classify_failure(exc, job.attempts, options)
        if outcome.exit_code == 70:
            log("job.internal_error", level="error", job=job.id, trace=traceback.format_exc())
    return replace(outcome, seconds=time.perf_counter() - started)


def record(queue: JobQueue, job: Job, outcome: Outcome, log: Log) -> None:
    """Write an attempt's outcome to the queue and the log."""
    if outcome.status == "retry":
        if not queue.retry(job.id, outcome.delay, outcome.detail):
            log("job.superseded", job=job.id, repo=job.repo, detail=outcome.detail)
            return
        log(
            "job.retry",
            level="warning",
            job=job.id,
            repo=job.repo,
            attempt=job.attempts,
            delay=round(outcome.delay, 3),
            detail=outcome.detail,
        )
        return
    queue.finish(
        job.id,
        outcome.status,
        outcome.detail,
        pr_url=outcome.pr_url,
        commit_url=outcome.commit_url,
        audited_sha=outcome.audited_sha,
    )
    log(
        f"job.{outcome.status}",
        level="error" if outcome.status == "failed" else "info",
        job=job.id,
        repo=job.repo,
        sha=job.sha,
        audited_sha=outcome.audited_sha,
        attempt=job.attempts,
        detail=outcome.detail,
        pr_url=outcome.pr_url,
        commit_url=outcome.commit_url,
        seconds=_rounded(outcome.seconds),
        annotate_seconds=_rounded(outcome.annotate_seconds),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def warm_up(log: Log) -> None:
    """Import what a job needs (annotate, the Hub client, matplotlib) before the first event,
    so that the first push is not seconds slower than the next ones."""
    try:
        import matplotlib.figure  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401

        from gradience_hub import hub  # noqa: F401
        from gradience_hub.publish import annotate, render  # noqa: F401
    except Exception as exc:  # a missing piece shows up as the job's own error later
        log("worker.warm_up", level="warning", error=f"{type(exc).__name__}: {exc}")


def run_inline(job: Job, config: ServeConfig, options: ServeOptions, log: Log) -> Outcome:
    """Run one job to the end in this thread (``serve --once``): retry with backoff in place."""
    current, rule = job, config.rule_for(job.repo)
    while True:
        outcome = attempt(current, rule, options, log)
        if outcome.status != "retry":
            return outcome
        log(
            "job.retry",
            level="warning",
            repo=job.repo,
            attempt=current.attempts,
            delay=round(outcome.delay, 3),
            detail=outcome.detail,
        )
        time.sleep(outcome.delay)
        current = Job(**{**current.to_dict(), "attempts": current.attempts + 1})


def describe(outcome: Outcome) -> dict[str, Any]:
    """The JSON line ``serve --once`` prints."""
    return {
        "status": outcome.status,
        "detail": outcome.detail,
        "pr_url": outcome.pr_url,
        "commit_url": outcome.commit_url,
    }
