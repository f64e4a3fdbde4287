"""One commit of files: into our PR, as a new PR, or directly on a branch with the expected
parent; its failures classified for the retry policy (412: the branch moved; 429, 5xx and
dropped connections: transient, with the Hub's ``Retry-After``)."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

from gradience_hub.errors import HubError
from gradience_hub.hub.client import api, hub_errors, reason
from gradience_hub.hub.discussions import HubPR


@dataclass(frozen=True)
class CommitOutcome:
    """What one publish attempt did."""

    changed: bool
    commit_url: str | None
    pr_url: str | None
    pr_num: int | None
    oid: str | None


class ParentMoved(Exception):
    """The branch moved since we read it (412): splice again on the new head and retry."""


class Transient(Exception):
    """A 429, a 5xx or a dropped connection: back off and retry.

    ``outcome_unknown``: the request may have been applied (a 5xx or a lost answer, unlike a
    429, which the Hub answers without acting), so a retry may find our own commit.
    """

    def __init__(
        self, message: str, retry_after: float | None = None, outcome_unknown: bool = True
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown


def parse_retry_after(value: Any, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110: delay-seconds or an
    HTTP-date), or None when it is absent or not a usable, finite, non-negative delay
    (``nan``, ``inf``, ``-5``, garbage): the caller then uses its own backoff."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        # an HTTP-date is rare; importing email.utils (socket, random) cost every run 10 ms
        import email.utils

        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def classify(exc: BaseException) -> BaseException:
    """Map a commit failure to ParentMoved / Transient, or leave it for hub_errors."""
    from huggingface_hub import errors as hf_errors

    if isinstance(exc, hf_errors.HfHubHTTPError):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status == 412:
            return ParentMoved(reason(exc))
        if status == 429 or (status is not None and status >= 500):
            headers = getattr(response, "headers", None) or {}
            retry_after = parse_retry_after(headers.get("Retry-After"))
            return Transient(
                f"the Hub answered {status}: {reason(exc)}", retry_after, status != 429
            )
        return exc
    if type(exc).__module__.split(".")[0].startswith("httpx") or isinstance(exc, ConnectionError):
        return Transient(f"connection to the Hub failed: {reason(exc)}")
    return exc


def commit_files(
    repo_id: str,
    files: dict[str, bytes],
    *,
    parent_sha: str,
    message: str,
    description: str,
    create_pr: bool,
    pr: HubPR | None = None,
    branch: str | None = None,
) -> CommitOutcome:
    """Commit ``files`` in ONE commit: into our PR ``pr``, as a new PR from ``parent_sha``, or
    directly on ``branch`` with ``parent_sha`` as the expected head (412 if it moved).

    Files identical to the target's are dropped by the client; when nothing is left no commit
    (and no PR) is made and ``changed`` is False. Raises ParentMoved, Transient or HubError.
    """
    from huggingface_hub import CommitOperationAdd

    operations = [
        CommitOperationAdd(path_in_repo=p, path_or_fileobj=data) for p, data in files.items()
    ]
    kwargs: dict = {"commit_message": message, "commit_description": description}
    if pr is not None:
        kwargs.update(revision=pr.ref, parent_commit=parent_sha)
    elif create_pr:
        kwargs.update(create_pr=True, parent_commit=parent_sha)
    else:
        kwargs.update(revision=branch, parent_commit=parent_sha)
    with hub_errors(repo_id, kwargs.get("revision")):
        try:
            info = api().create_commit(repo_id, operations, **kwargs)
        except Exception as exc:
            mapped = classify(exc)
            if mapped is exc:
                raise
            raise mapped from None
    # When every file equals the branch head's, the client sends no commit and answers with
    # the head it found, which is another run's commit when the branch moved since we read
    # it: reporting that as ours would print somebody else's commit. The client marks the
    # operations it actually committed (CommitOperationAdd._is_committed, set only after the
    # commit request succeeded); there is no public flag for it.
    committed = all(getattr(op, "_is_committed", True) for op in operations)
    changed = committed and info.oid != parent_sha
    pr_url = info.pr_url or (pr.url if pr is not None else None)
    pr_num = info.pr_num or (pr.num if pr is not None else None)
    return CommitOutcome(
        changed=changed,
        commit_url=info.commit_url if changed else None,
        pr_url=pr_url if (changed or pr is not None) else None,
        pr_num=pr_num,
        oid=info.oid,
    )


def retry_after(exc: BaseException) -> float | None:
    """The Hub's ``Retry-After`` (seconds) behind a HubError, when it sent one.

    :func:`hub_errors` raises ``from None``, which hides the client's exception from
    tracebacks but keeps it as ``__context__``: walk that chain for a :class:`Transient` or
    an HTTP error whose response carries the header.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, Transient) and current.retry_after is not None:
            return current.retry_after
        headers = getattr(getattr(current, "response", None), "headers", None) or {}
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            return float(headers.get("Retry-After", ""))
        current = current.__cause__ or current.__context__
    return None


# --------------------------------------------------------------------------- the retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """How a publish retries its commit: a 412 (the branch moved since we read it) is spliced
    again on the new head at most ``max_parent_retries`` times; a 429, a 5xx or a dropped
    connection waits the Hub's ``Retry-After`` (else ``backoff * 2**n`` seconds, at most 30)
    at most ``max_transient_retries`` times. Past either, the publish gives up with a
    :class:`~gradience_hub.errors.HubError` (exit 3)."""

    backoff: float = 1.0
    max_parent_retries: int = 3
    max_transient_retries: int = 4

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before transient retry number ``attempt`` (0-based)."""
        if retry_after is not None and math.isfinite(retry_after):
            return min(max(retry_after, 0.0), 30.0)
        return min(self.backoff * 2**attempt, 30.0)


@dataclass
class Retries:
    """One publish's retries under a :class:`RetryPolicy`: each failure is counted here, and
    here it is decided whether to try again.

    ``unanswered``: a commit whose answer was lost (a 5xx, a dropped connection) may have
    landed, so a retry that then finds nothing to commit has found our own commit.
    """

    repo_id: str
    policy: RetryPolicy = RetryPolicy()
    parent_moved: int = 0
    transient: int = 0
    unanswered: bool = False

    def after_parent_moved(self, exc: ParentMoved) -> None:
        """Count a 412; raise HubError (status 412, exit 3) once the policy's tries are spent."""
        self.parent_moved += 1
        if self.parent_moved > self.policy.max_parent_retries:
            raise HubError(
                f"{self.repo_id} kept changing while publishing: {exc}",
                hint="retry when the repo is quiet",
                status=412,
            ) from None

    def after_transient(self, exc: Transient) -> float:
        """Count a transient failure and return the seconds to wait before the next try; raise
        HubError (exit 3) once the policy's tries are spent."""
        if self.transient >= self.policy.max_transient_retries:
            raise HubError(
                f"publishing to {self.repo_id} failed: {exc}",
                hint="the Hub is busy or down; retry later",
            ) from None
        self.unanswered = self.unanswered or exc.outcome_unknown
        delay = self.policy.delay(self.transient, exc.retry_after)
        self.transient += 1
        return delay
