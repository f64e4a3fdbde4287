"""The only module in gradience-hub that talks to the GitHub API.

It keeps one sticky comment per pull request up to date (:meth:`GitHubClient.upsert_sticky_comment`)
and reads pull request numbers out of GitHub Actions event payloads
(:func:`pr_number_from_event`). HTTP, pagination and rate-limit handling are PyGithub's; this
module decides *what* to ask, how often to retry, and how failures read to a user: every failure
leaves as a :class:`~gradience_hub.errors.GitHubError` (exit code 3) carrying the API's status and
message, and a token that may not write raises :class:`GitHubPermissionError` so the Action can
warn and carry on (the read-only ``GITHUB_TOKEN`` of a pull request from a fork is normal, not an
error of the audit). The token never appears in a message.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import requests
from github import Auth, Github, GithubException, GithubRetry
from github.IssueComment import IssueComment
from github.Requester import Requester
from urllib3.util.retry import Retry

from gradience_hub import __version__
from gradience_hub.errors import GitHubError, UsageError
from gradience_hub.markers import COMMENT_MARKER

MARKER = COMMENT_MARKER
"""Hidden HTML comment that makes a PR comment ours to update (docs/architecture.md, "Sticky
comments"); defined in :mod:`gradience_hub.markers`."""

DEFAULT_API_URL = "https://api.github.com"
"""REST base URL of github.com; GitHub Enterprise Server uses ``https://HOST/api/v3``."""

ACTIONS_BOT_LOGIN = "github-actions[bot]"
"""Author of comments made with the Actions ``GITHUB_TOKEN``."""

# GitHub's per_page maximum: a PR with 130 comments is 2 requests instead of 5 at the default 30.
_PER_PAGE = 100
# A refusal is an answer GitHub gives *before* acting (rate limits), so repeating the request
# cannot duplicate its effect. 5xx after a POST gives no such promise.
_REFUSAL_STATUSES = frozenset({403, 429})
_REPO_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_PR_EVENTS = frozenset(
    {"pull_request", "pull_request_target", "pull_request_review", "pull_request_review_comment"}
)

# PyGithub attaches a console handler at INFO to its "github" logger, so every retried or refused
# request prints "Request GET /user failed with 403" - on every Actions run, where GET /user is
# refused by design. Our errors say what failed; keep the retry chatter for those who ask for it.
# A filter on the logger while a client is open (added by GitHubClient, removed by close()):
# nothing is changed at import, and a user's own logging set-up is left as it was.
_RETRY_LOGGER = "github.GithubRetry"


class _QuietRetries(logging.Filter):
    """Drop PyGithub's INFO-level retry lines; warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


class GitHubPermissionError(GitHubError):
    """The token may not do this (HTTP 403 that is not a rate limit).

    Typical cause: the read-only ``GITHUB_TOKEN`` that GitHub gives workflows triggered by a pull
    request from a fork ("Resource not accessible by integration"), or a job without
    ``permissions: pull-requests: write``. Callers may warn and carry on.
    """


@dataclass(frozen=True)
class CommentResult:
    """What :meth:`GitHubClient.upsert_sticky_comment` did.

    ``url`` is the comment's web address (``html_url``), ``id`` its REST id and ``action`` one of
    ``"created"``, ``"updated"`` or ``"unchanged"``.
    """

    url: str
    id: int
    action: Literal["created", "updated", "unchanged"]


class _StickyRetry(GithubRetry):
    """PyGithub's retry policy, except that a POST is only repeated after a refusal.

    GithubRetry already retries 5xx and recognises secondary rate limits (403 with
    ``Retry-After`` or a rate-limit message) while letting a plain 403 through. But it also
    repeats POSTs after a 5xx or a read timeout, and a 502 on "create comment" often means the
    comment *was* created behind the gateway: a blind retry posts a duplicate, the one thing a
    sticky comment must not do. So POST is left out of the retried methods (which also stops
    read-error retries) and let back in only for 403/429, which GitHub answers without acting;
    :meth:`GitHubClient.upsert_sticky_comment` re-reads the comments before posting again.
    """

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if method.upper() == "POST":
            return status_code in _REFUSAL_STATUSES
        return super().is_retry(method, status_code, has_retry_after)


def ensure_marker(body: str) -> str:
    """Return ``body`` with :data:`MARKER` in it, prepended on its own line when missing."""
    return body if MARKER in body else f"{MARKER}\n{body}"


class GitHubClient:
    """A GitHub REST client for one token and one API base URL, built on PyGithub.

    :param token: a GitHub token (PAT, App installation token or the Actions ``GITHUB_TOKEN``).
    :param api_url: REST base URL; ``GITHUB_API_URL`` in Actions. Defaults to github.com's.
    :param retries: attempts after the first for 5xx answers, rate limits and connection errors.
    :param backoff_factor: exponential backoff between retries, in seconds (urllib3's
        meaning: 0, 2x, 4x, ... this factor). Tests pass 0.
    :param secondary_rate_wait: seconds to wait after a secondary rate limit that carries no
        ``Retry-After`` header (GitHub asks for at least a minute). ``Retry-After`` always wins.
    :param max_rate_limit_wait: give up (GitHubError) instead of sleeping when a rate limit asks
        for a longer wait than this; the primary limit can ask for up to an hour, longer than a
        sticky comment is worth holding a CI job for. None waits as long as GitHub says.
    :param min_request_interval: minimum seconds between two requests (PyGithub's default).
    :param min_write_interval: minimum seconds between two writes; GitHub's guidance against
        secondary rate limits is one second.
    :param timeout: seconds to wait for one HTTP answer.
    :param bot_login: the identity assumed when the token cannot read ``GET /user`` (an App
        installation token); see :meth:`whoami`.
    """

    def __init__(
        self,
        token: str,
        api_url: str | None = None,
        *,
        retries: int = 5,
        backoff_factor: float = 1.0,
        secondary_rate_wait: float = 60.0,
        max_rate_limit_wait: float | None = 300.0,
        min_request_interval: float = 0.25,
        min_write_interval: float = 1.0,
        timeout: int = 30,
        bot_login: str = ACTIONS_BOT_LOGIN,
    ) -> None:
        if not token:
            raise UsageError(
                "no GitHub token was given",
                hint="set GITHUB_TOKEN (in a workflow: env: GITHUB_TOKEN: ${{ github.token }})",
            )
        api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        if not re.match(r"https?://[^/]+", api_url):
            raise UsageError(
                f"GitHub API URL {api_url!r} is not an http(s) URL",
                hint="GITHUB_API_URL looks like https://api.github.com or https://HOST/api/v3",
            )
        self.api_url = api_url
        self.bot_login = bot_login
        self._token = token
        self._retries = retries
        self._backoff_factor = backoff_factor
        self._login: str | None = None
        cap: dict[str, Any] = {}
        # max_rate_limit_wait is new in PyGithub 2.10; older releases simply wait uncapped.
        if "max_rate_limit_wait" in inspect.signature(GithubRetry.__init__).parameters:
            cap["max_rate_limit_wait"] = max_rate_limit_wait
        retry = _StickyRetry(
            total=retries,
            backoff_factor=backoff_factor,
            secondary_rate_wait=secondary_rate_wait,
            **cap,
            status_forcelist=[*range(500, 600), 429],
            # PATCH replaces the body with the same text, so repeating it is harmless.
            allowed_methods=Retry.DEFAULT_ALLOWED_METHODS | {"PATCH"},
        )
        self._quiet = _QuietRetries()
        logging.getLogger(_RETRY_LOGGER).addFilter(self._quiet)
        self._gh = Github(
            auth=Auth.Token(token),
            base_url=api_url,
            timeout=timeout,
            user_agent=f"gradience-hub/{__version__}",
            per_page=_PER_PAGE,
            retry=retry,
            seconds_between_requests=min_request_interval or None,
            seconds_between_writes=min_write_interval or None,
            # Lazy objects: reaching a PR's comments costs no GET of the repo or the issue.
            lazy=True,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> GitHubClient:
        """A client for ``GITHUB_TOKEN`` and ``GITHUB_API_URL`` (``os.environ`` by default).

        Keyword arguments are passed to the constructor.
        """
        env = os.environ if environ is None else environ
        return cls(env.get("GITHUB_TOKEN", ""), env.get("GITHUB_API_URL") or None, **kwargs)

    def close(self) -> None:
        """Close the HTTP connections (and stop filtering PyGithub's retry lines)."""
        logging.getLogger(_RETRY_LOGGER).removeFilter(self._quiet)
        self._gh.close()

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # Never the token: reprs end up in logs and tracebacks.
        return f"GitHubClient(api_url={self.api_url!r})"

    def whoami(self) -> str:
        """The login our comments are authored by (cached after the first call).

        A user token (PAT, OAuth) answers ``GET /user`` with its login. An App installation token,
        and the Actions ``GITHUB_TOKEN`` is one, gets ``403 Resource not accessible by
        integration`` there: an installation has no user, and its comments are authored by
        ``<app-slug>[bot]``. The Actions token's app is ``github-actions``, so we then take
        :attr:`bot_login` (``github-actions[bot]`` unless the caller knows better, e.g. a custom
        App's ``my-app[bot]``). The guess is safe: it only decides which of *our marked*
        comments may be edited, and a wrong guess means a new comment, never someone else's
        edited one.
        """
        if self._login is None:
            try:
                with self._translate("identifying the token's user (GET /user)"):
                    self._login = self._gh.get_user().login
            except GitHubPermissionError as exc:
                if "not accessible by integration" not in exc.message.lower():
                    raise
                self._login = self.bot_login
        return self._login

    def upsert_sticky_comment(
        self, repo_full_name: str, pr_number: int, body: str
    ) -> CommentResult:
        """Create or update our sticky comment on pull request ``pr_number``.

        ``body`` gets :data:`MARKER` if it lacks it. All the PR's comments are read (every page);
        the first one that carries the marker *and* is authored by :meth:`whoami` is edited,
        unless its body is already ``body`` (then nothing is written). Comments by anyone else
        are never edited, marker or not. Without such a comment a new one is created.

        :raises GitHubPermissionError: the token may not read or write the comments (403).
        :raises GitHubError: any other API or network failure (exit code 3).
        :raises UsageError: ``repo_full_name`` is not ``owner/name`` or ``pr_number`` not > 0.
        """
        if not isinstance(repo_full_name, str) or not _REPO_NAME.fullmatch(repo_full_name):
            raise UsageError(f"repository must be 'owner/name', not {repo_full_name!r}")
        if isinstance(pr_number, bool) or not isinstance(pr_number, int) or pr_number < 1:
            raise UsageError(f"pull request number must be a positive integer, not {pr_number!r}")
        body = ensure_marker(body)
        where = f"{repo_full_name}#{pr_number}"
        login = self.whoami()
        issue = self._gh.get_repo(repo_full_name).get_issue(pr_number)

        # Find-then-act is idempotent, so after a create whose outcome is unknown (5xx, lost
        # connection) the whole step is repeated: the re-read finds the comment if it landed.
        tried_create = False
        for attempt in range(self._retries + 1):
            with self._translate(f"reading the comments of {where}"):
                mine = _first_own_marked(issue.get_comments(), login)
            if mine is not None:
                if _same_text(mine.body, body):
                    # Found our own POST that "failed" with a 5xx: it was created by this call.
                    if tried_create:
                        return CommentResult(mine.html_url, mine.id, "created")
                    return CommentResult(mine.html_url, mine.id, "unchanged")
                with self._translate(f"editing comment {mine.id} on {where}"):
                    mine.edit(body)
                return CommentResult(mine.html_url, mine.id, "updated")
            tried_create = True
            try:
                with self._translate(f"commenting on {where}"):
                    created = issue.create_comment(body)
            except GitHubError as exc:
                outcome_unknown = exc.status is None or exc.status >= 500
                if not outcome_unknown or attempt == self._retries:
                    raise
                time.sleep(self._backoff_factor * 2**attempt)
                continue
            return self._converge(issue, login, created, body, where)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _converge(
        self, issue: Any, login: str, created: IssueComment, body: str, where: str
    ) -> CommentResult:
        """After posting: when a concurrent run posted its sticky comment first, delete ours
        (the newer) and keep theirs, so the PR ends with one. Every racing run keeps the
        oldest of our marked comments, whichever finishes first."""
        with self._translate(f"reading the comments of {where}"):
            own = sorted(_own_marked(issue.get_comments(), login), key=lambda c: c.id)
        if not own or own[0].id == created.id:
            return CommentResult(created.html_url, created.id, "created")
        keep = own[0]
        with self._translate(f"deleting duplicate comment {created.id} on {where}"):
            created.delete()
        if _same_text(keep.body, body):
            return CommentResult(keep.html_url, keep.id, "unchanged")
        with self._translate(f"editing comment {keep.id} on {where}"):
            keep.edit(body)
        return CommentResult(keep.html_url, keep.id, "updated")

    # -- errors ----------------------------------------------------------------------------

    @contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        """Turn PyGithub and requests failures into GitHubError (one place, one wording)."""
        try:
            yield
        except GithubException as exc:
            raise self._api_error(exc, doing) from exc
        except requests.exceptions.RetryError as exc:
            # Retries ran out; urllib3 says "too many 502 error responses".
            found = re.search(r"too many (\d{3}) error responses", str(exc))
            status = int(found[1]) if found else None
            raise GitHubError(
                self._scrub(
                    f"{doing} failed: GitHub kept answering "
                    f"{status or 'errors'} after {self._retries} retries"
                ),
                hint="GitHub may be degraded or rate limiting; re-run the job later",
                status=status,
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise GitHubError(
                self._scrub(
                    f"{doing} failed: could not reach GitHub at {self.api_url} "
                    f"({type(exc).__name__})"
                ),
                hint="check the network and GITHUB_API_URL",
            ) from exc

    def _api_error(self, exc: GithubException, doing: str) -> GitHubError:
        status = exc.status
        message = self._scrub(_api_message(exc))
        text = f"{doing} failed: GitHub API {status}: {message}"
        if status == 401:
            return GitHubError(
                text,
                hint="the token is invalid or expired, or belongs to another GitHub than "
                "GITHUB_API_URL",
                status=status,
            )
        if status in _REFUSAL_STATUSES and _is_rate_limit(exc, message):
            return GitHubError(
                text, hint="GitHub's rate limit was hit; re-run the job later", status=status
            )
        if status == 403:
            return GitHubPermissionError(
                text,
                hint="the token may not do this; pull requests from forks get a read-only "
                "GITHUB_TOKEN, and same-repo jobs need 'permissions: pull-requests: write'",
                status=status,
            )
        if status == 404:
            return GitHubError(
                text,
                hint="check the repository and pull request number, and that the token can "
                "see the repository",
                status=status,
            )
        return GitHubError(text, status=status)

    def _scrub(self, text: str) -> str:
        # Defence in depth: nothing we format should hold the token, but make sure.
        return text.replace(self._token, "***") if self._token else text


def _api_message(exc: GithubException) -> str:
    """The API's own words: ``message`` plus any validation ``errors``."""
    data = exc.data
    if isinstance(data, dict):
        message = str(data.get("message") or "")
        details = [
            str(err.get("message") or err.get("code"))
            for err in data.get("errors") or []
            if isinstance(err, dict) and (err.get("message") or err.get("code"))
        ]
        if details:
            message = f"{message} ({'; '.join(details)})" if message else "; ".join(details)
    elif data:
        message = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
    else:
        message = ""
    return " ".join((message or exc.message or "no message").split())


def _is_rate_limit(exc: GithubException, message: str) -> bool:
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    return (
        Requester.isRateLimitError(message)
        or "retry-after" in headers
        or str(headers.get("x-ratelimit-remaining")) == "0"
        or exc.status == 429
    )


def _own_marked(comments: Iterable[IssueComment], login: str) -> Iterator[IssueComment]:
    """The comments that carry the marker and are authored by ``login``, in list order.

    Logins compare case-insensitively, as GitHub treats them.
    """
    wanted = login.casefold()
    for comment in comments:
        author = comment.user.login if comment.user is not None else ""
        if MARKER in (comment.body or "") and author.casefold() == wanted:
            yield comment


def _first_own_marked(comments: Iterable[IssueComment], login: str) -> IssueComment | None:
    """The first comment that carries the marker and is authored by ``login``."""
    return next(_own_marked(comments, login), None)


def _same_text(current: str | None, wanted: str) -> bool:
    # Bodies edited in the web UI come back with CRLF line ends; that is not a change of ours.
    return (current or "").replace("\r\n", "\n") == wanted.replace("\r\n", "\n")


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else None


def _dig(data: Any, *keys: str | int) -> Any:
    for key in keys:
        if isinstance(key, int):
            if not isinstance(data, list) or len(data) <= key:
                return None
        elif not isinstance(data, dict):
            return None
        data = data[key] if isinstance(key, int) else data.get(key)
    return data


def pr_number_from_event(event_name: str, event: Mapping[str, Any]) -> int | None:
    """The pull request number an Actions event is about, or None.

    ``event_name`` is ``GITHUB_EVENT_NAME``; ``event`` the JSON of ``GITHUB_EVENT_PATH``.

    - ``pull_request``, ``pull_request_target`` (and the review events):
      ``event["pull_request"]["number"]``, else ``event["number"]``;
    - ``issue_comment``: ``event["issue"]["number"]`` when the issue is a pull request (it has a
      ``pull_request`` key), None for a comment on a plain issue;
    - ``workflow_run``: ``event["workflow_run"]["pull_requests"][0]["number"]``. GitHub leaves
      that list empty for runs triggered from forks, so this is None there;
    - anything else (push, schedule, workflow_dispatch...): None.
    """
    if event_name in _PR_EVENTS:
        return _positive_int(_dig(event, "pull_request", "number")) or _positive_int(
            _dig(event, "number")
        )
    if event_name == "issue_comment":
        if _dig(event, "issue", "pull_request") is None:
            return None
        return _positive_int(_dig(event, "issue", "number"))
    if event_name == "workflow_run":
        return _positive_int(_dig(event, "workflow_run", "pull_requests", 0, "number"))
    return None
