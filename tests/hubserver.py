"""A Hugging Face Hub-compatible HTTP server for tests, plus the pytest fixtures that use it.

Nothing in the test suite can reach the real Hub, and no open-source server speaks commits, pull
requests and discussions together, so this module implements the slice of the Hub HTTP API that
`huggingface_hub` (2.4.0) uses in our flows: whoami, model info, tree listing, file resolve
(HEAD/GET, with Range), validate-yaml, preupload, ndjson commits (direct, `create_pr`, commits to
`refs/pr/N`, `parentCommit` compare-and-swap), refs, commit history, paths-info, repo creation,
and discussions / pull requests (list, details with events and diff, create, comment, edit,
hide, status, title, merge).

The shapes were read from the installed client's source (`hf_api.py`, `file_download.py`,
`_snapshot_download.py`, `_commit_api.py`, `utils/_http.py`), because that is the contract the
product depends on: the client turns `X-Error-Code` headers into typed exceptions, trusts
`X-Repo-Commit`/`ETag`/`Content-Length` on resolve, skips unchanged files by `oid`, and so on.

State is a small in-memory git: every commit stores a full snapshot `{path: bytes}`, branches and
PR refs point at commits, and revisions resolve like on the Hub (branch, `refs/heads/x`,
`refs/pr/N`, URL-quoted or not, full sha, unique short sha of 7+ hex chars).

Tests drive the REAL client against it; they can also seed and inspect state directly
(`create_repo`, `push`, `read`, `prs`...), inject faults (`inject`) and assert on the request
log (`requests`, `write_requests()`, `mutations()`).

Behaviours of huggingface_hub 2.4.0 that tests/test_hubserver.py pins down (product code must
live with them): commits are POSTed once, never retried (5xx -> HfHubHTTPError, dropped
connection -> raw `httpx2.RemoteProtocolError`); preupload, tree listing and file GETs retry
429 after `Retry-After + 1` s; a file whose preupload `oid` matches is dropped and, if nothing is
left, no commit and no PR are made (`CommitInfo.pr_url is None`, `oid` = current head);
`snapshot_download` turns a 5xx on its model-info call into `LocalEntryNotFoundError` (an
`EntryNotFoundError`, not an `HfHubHTTPError`); API-created PRs start as "draft".

The server uses the standard library only (PyYAML, when importable, parses README front matter
into `cardData`; without it `cardData` is simply omitted).
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import hashlib
import html
import itertools
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

__all__ = [
    "Commit",
    "Discussion",
    "Event",
    "Fault",
    "Headers",
    "HubServer",
    "RecordedRequest",
    "User",
    "configure_client",
    "git_blob_sha",
    "hub_client_env",
    "hub_server",
]

# The Hub's exact wording matters: product code may match on it, and the client forwards it
# verbatim in exception messages.
PARENT_MISMATCH_MESSAGE = (
    "The branch was updated since you opened this page. Please refresh and try again."
)
INVALID_CREDENTIALS_MESSAGE = "Invalid credentials in Authorization header"
DISABLED_MESSAGE = "Access to this resource is disabled."

# Written into repos created through POST /api/repos/create, like the Hub's initial commit.
DEFAULT_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)

# Same front-matter rule as huggingface_hub.repocard.REGEX_YAML_BLOCK.
_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
_HEX = re.compile(r"[0-9a-f]+")
_PR_REF = re.compile(r"refs/pr/(\d+)")
# Path segments that follow a one-segment repo id (`gpt2/tree/...`) rather than a namespace.
_SUBRESOURCES = {
    "revision",
    "tree",
    "refs",
    "commits",
    "commit",
    "preupload",
    "discussions",
    "paths-info",
    "branch",
    "tag",
    "resolve",
}
# Requests the client makes on its own (agent registry, telemetry): served, but not logged,
# so that request-count assertions only see what the code under test asked for.
_HOUSEKEEPING = re.compile(r"^/api/(agent-harnesses|telemetry)(/|$)")

_EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)


def git_blob_sha(data: bytes) -> str:
    """The git blob sha1 of `data`: what the Hub sends as ETag/oid for non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso(when: datetime) -> str:
    """Hub-style timestamp (`2025-01-01T00:00:01.000Z`), parseable by `parse_datetime`."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _as_bytes(content: bytes | str) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else bytes(content)


def _truthy(value: str | None) -> bool:
    """Query booleans arrive as `true`/`True`/`1` depending on the client version."""
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def parse_card_data(readme: bytes | None) -> dict | None:
    """The YAML front matter of a README as a dict, or None (no block, bad YAML, no PyYAML)."""
    if readme is None:
        return None
    match = _YAML_BLOCK.search(readme.decode("utf-8", errors="replace"))
    if match is None:
        return None
    try:
        import yaml
    except ImportError:  # cardData is optional in the Hub's answer, so degrade quietly
        return None
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class User:
    """A Hub account with one token. `write=False` models a read-only ("read" role) token."""

    name: str
    token: str
    write: bool = True
    fullname: str | None = None

    def to_json(self) -> dict:
        """The author object embedded in discussions and events."""
        return {
            "_id": hashlib.sha1(self.name.encode()).hexdigest()[:24],
            "avatarUrl": f"/avatars/{self.name}.svg",
            "fullname": self.fullname or self.name,
            "name": self.name,
            "type": "user",
            "isPro": False,
            "isHf": False,
            "isOrgMember": False,
        }


@dataclass
class Commit:
    """One commit: its parents and the full snapshot of the repo after it."""

    oid: str
    parents: list[str]
    files: dict[str, bytes]
    title: str
    message: str
    author: str
    date: datetime


@dataclass
class Event:
    """A discussion event (comment, commit, status-change, title-change)."""

    id: str
    type: str
    author: str
    created_at: datetime
    data: dict = field(default_factory=dict)
    # Comment versions, oldest first: (raw markdown, time, editor). The last one is `latest`.
    versions: list[tuple[str, datetime, str]] = field(default_factory=list)
    hidden: bool = False

    @property
    def content(self) -> str | None:
        """Latest raw markdown of a comment (None for other event types)."""
        return self.versions[-1][0] if self.versions else None

    @property
    def edited(self) -> bool:
        return len(self.versions) > 1


@dataclass
class Discussion:
    """A discussion or pull request. A PR's `head` is what `refs/pr/{num}` points at."""

    num: int
    repo_id: str
    title: str
    author: str
    is_pull_request: bool
    status: str  # open | closed | merged | draft
    created_at: datetime
    events: list[Event] = field(default_factory=list)
    base_branch: str | None = None
    fork_point: str | None = None  # the commit the PR branched from
    head: str | None = None
    merge_commit: str | None = None

    @property
    def ref(self) -> str | None:
        return f"refs/pr/{self.num}" if self.is_pull_request else None

    def comments(self) -> list[Event]:
        return [e for e in self.events if e.type == "comment"]

    def commit_events(self) -> list[Event]:
        return [e for e in self.events if e.type == "commit"]


@dataclass
class _Repo:
    repo_id: str
    owner: str
    private: bool
    gated: str | bool
    disabled: bool
    created_at: datetime
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    discussions: dict[int, Discussion] = field(default_factory=dict)
    writers: set[str] = field(default_factory=set)
    gated_access: set[str] = field(default_factory=set)


class Headers(dict):
    """A dict of request headers whose lookups ignore case (`h["range"] == h["Range"]`).

    Keys are stored Title-Cased, whatever case the client sent (httpx sends lower case).
    """

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        super().__init__((k.title(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.title())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.title())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.title(), default)


@dataclass
class RecordedRequest:
    """One request as the server saw it. `Authorization` is redacted; `user` says whose it was."""

    method: str
    path: str  # URL-decoded path (refs%2Fpr%2F1 -> refs/pr/1)
    raw_path: str
    query: dict[str, str]
    headers: Headers
    body: bytes
    user: str | None = None
    status: int | None = None
    mutated: bool = False  # True only when the request changed server state
    fault: str | None = None  # "status", "drop" or "partial" when a fault was injected

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def ndjson(self) -> list[Any]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


@dataclass
class Fault:
    """An injected failure: the next `times` matching requests get it."""

    method: str | None
    pattern: re.Pattern
    status: int = 500
    times: int = 1
    drop: bool = False
    partial: int | None = None
    headers: dict[str, str] | None = None
    body: Any = None
    hits: int = 0

    def matches(self, method: str, path: str, raw_path: str) -> bool:
        if self.times <= 0:
            return False
        if self.method not in (None, "*") and self.method.upper() != method:
            return False
        return bool(self.pattern.search(path) or self.pattern.search(raw_path))


class HubError(Exception):
    """An error answer. `code` goes to X-Error-Code, which is how the client picks its exception."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Response:
    hdrs = {"Content-Type": "application/json; charset=utf-8"}
    hdrs.update(headers or {})
    return _Response(status, json.dumps(obj).encode("utf-8"), hdrs)


def _error_response(err: HubError) -> _Response:
    # Header values cannot carry newlines; the body keeps the full message.
    headers = {"X-Error-Message": err.message.replace("\r", " ").replace("\n", " ")}
    if err.code:
        headers["X-Error-Code"] = err.code
    headers.update(err.headers)
    return _json_response({"error": err.message, **err.extra}, err.status, headers)


def _repo_not_found(status: int = 404) -> HubError:
    return HubError(status, "Repository not found", "RepoNotFound")


def _revision_not_found(rev: str) -> HubError:
    return HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

_DEFAULT = object()


class HubServer:
    """A Hub-compatible HTTP server on 127.0.0.1 (ephemeral port), state in memory.

    Use as a context manager or call `start()`/`stop()`. `url` is the endpoint to give the client
    (`HF_ENDPOINT`). Page sizes are small knobs so tests can exercise pagination.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tree_page_size: int = 1000,
        commits_page_size: int = 50,
        discussions_page_size: int = 50,
    ):
        self.host = host
        self.port = port
        self.tree_page_size = tree_page_size
        self.commits_page_size = commits_page_size
        self.discussions_page_size = discussions_page_size
        self.requests: list[RecordedRequest] = []
        self.internal_errors: list[str] = []
        self.default_token: str | None = None
        self._lock = threading.RLock()
        self._users: dict[str, User] = {}
        self._tokens: dict[str, User] = {}
        self._repos: dict[str, _Repo] = {}
        self._faults: list[Fault] = []
        self._gates: list[list[Any]] = []  # [method, pattern, barrier, timeout, arrivals]
        self._clock = _EPOCH
        self._counter = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._hf_home: str | None = None
        from tests.hubserver_webhooks import HubWebhooks  # webhook routes and deliveries

        self.webhooks = HubWebhooks(self)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer is not started")
        return f"http://{self.host}:{self.port}"

    endpoint = url

    @property
    def hf_home(self) -> str:
        """A private HF_HOME (cache, token file) for clients of this server, removed on stop."""
        if self._hf_home is None:
            self._hf_home = tempfile.mkdtemp(prefix="hubserver-hf-home-")
        return self._hf_home

    def start(self) -> HubServer:
        if self._httpd is not None:
            return self
        handler = type("BoundHubHandler", (_HubHandler,), {"hub": self})
        httpd = ThreadingHTTPServer((self.host, self.port), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"hubserver:{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        # Keep-alive connections would otherwise outlive the server; a later server bound to
        # the same port could then be reached through a stale pooled connection.
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.webhooks.stop()
        if self._hf_home is not None:
            shutil.rmtree(self._hf_home, ignore_errors=True)
            self._hf_home = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- users and repos ---------------------------------------------------------------------

    def add_user(
        self, name: str, token: str, write: bool = True, fullname: str | None = None
    ) -> User:
        """Register `name` with `token`. The first user added becomes `default_token`."""
        with self._lock:
            user = User(name, token, write, fullname)
            self._users[name] = user
            self._tokens[token] = user
            if self.default_token is None:
                self.default_token = token
            return user

    def create_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str] | None = None,
        *,
        private: bool = False,
        gated: bool | str = False,
        owner: str | None = None,
        disabled: bool = False,
        message: str = "Initial commit",
    ) -> str:
        """Create a model repo whose `main` holds exactly `files`; returns the commit sha.

        The owner defaults to the namespace of `repo_id`; the owner may write, and read it when
        private. `gated=True` means `"auto"` (as the Hub reports it); gated repos list and
        describe publicly but only serve files to users granted access (and writers).
        """
        with self._lock:
            if repo_id in self._repos:
                raise ValueError(f"repo {repo_id} already exists")
            owner = owner or repo_id.split("/")[0]
            repo = _Repo(
                repo_id=repo_id,
                owner=owner,
                private=private,
                gated="auto" if gated is True else gated,
                disabled=disabled,
                created_at=self._now(),
                writers={owner},
            )
            self._repos[repo_id] = repo
            snapshot = {p: _as_bytes(c) for p, c in (files or {}).items()}
            commit = self._new_commit(repo, [], snapshot, message, "", owner)
            repo.branches["main"] = commit.oid
            return commit.oid

    def grant_write(self, repo_id: str, user: str) -> None:
        """Make `user` a collaborator with write access."""
        with self._lock:
            self._repo(repo_id).writers.add(user)

    def grant_gated_access(self, repo_id: str, user: str) -> None:
        """Accept `user`'s access request to a gated repo."""
        with self._lock:
            self._repo(repo_id).gated_access.add(user)

    def set_repo(self, repo_id: str, **attrs: Any) -> None:
        """Flip repo settings (`private`, `gated`, `disabled`) mid-test."""
        with self._lock:
            repo = self._repo(repo_id)
            for key, value in attrs.items():
                if key not in {"private", "gated", "disabled"}:
                    raise ValueError(f"unknown repo attribute {key}")
                setattr(repo, key, "auto" if (key == "gated" and value is True) else value)

    def push(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str] | None = None,
        *,
        branch: str = "main",
        delete: Iterable[str] = (),
        message: str = "Update",
        author: str | None = None,
    ) -> str:
        """Commit on the server side, as if someone else pushed; returns the new sha.

        `branch` may be a branch name or `refs/pr/N`. Use it to make the client's
        `parent_commit` stale, or to move a PR under the code being tested.
        """
        with self._lock:
            repo = self._repo(repo_id)
            author = author or repo.owner
            adds = {p: _as_bytes(c) for p, c in (files or {}).items()}
            deletes = [(p, False) for p in delete]
            pr = _PR_REF.fullmatch(branch)
            if pr:
                disc = self._pr(repo, int(pr.group(1)))
                oid = self._commit_to_pr(repo, disc, adds, deletes, message, "", author)
                self.webhooks.commit_made(repo, oid)
                return oid
            name = branch.removeprefix("refs/heads/")
            if name not in repo.branches:
                raise KeyError(f"no branch {name!r} in {repo_id}")
            parent = repo.commits[repo.branches[name]]
            snapshot = self._apply(parent.files, adds, deletes)
            commit = self._new_commit(repo, [parent.oid], snapshot, message, "", author)
            repo.branches[name] = commit.oid
            self.webhooks.commit_made(repo, commit.oid)
            return commit.oid

    def create_branch(self, repo_id: str, branch: str, revision: str = "main") -> str:
        with self._lock:
            repo = self._repo(repo_id)
            sha = self._resolve(repo, revision)
            repo.branches[branch] = sha
            return sha

    def create_tag(self, repo_id: str, tag: str, revision: str = "main") -> str:
        with self._lock:
            repo = self._repo(repo_id)
            sha = self._resolve(repo, revision)
            repo.tags[tag] = sha
            return sha

    # -- inspection --------------------------------------------------------------------------

    def resolve(self, repo_id: str, revision: str = "main") -> str | None:
        """The sha a revision resolves to, or None."""
        with self._lock:
            try:
                return self._resolve(self._repo(repo_id), revision)
            except HubError:
                return None

    def head_sha(self, repo_id: str, revision: str = "main") -> str:
        sha = self.resolve(repo_id, revision)
        if sha is None:
            raise KeyError(f"{repo_id}@{revision} does not resolve")
        return sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The full snapshot at `revision`."""
        with self._lock:
            repo = self._repo(repo_id)
            return dict(repo.commits[self._resolve(repo, revision)].files)

    def read(self, repo_id: str, path: str, revision: str = "main") -> bytes | None:
        return self.files(repo_id, revision).get(path)

    def commits(self, repo_id: str, revision: str = "main") -> list[Commit]:
        """First-parent history of `revision`, newest first (like `list_repo_commits`)."""
        with self._lock:
            repo = self._repo(repo_id)
            return list(self._history(repo, self._resolve(repo, revision)))

    def discussions(self, repo_id: str) -> list[Discussion]:
        """All discussions and PRs, newest first."""
        with self._lock:
            repo = self._repo(repo_id)
            return [repo.discussions[n] for n in sorted(repo.discussions, reverse=True)]

    def prs(self, repo_id: str) -> list[Discussion]:
        return [d for d in self.discussions(repo_id) if d.is_pull_request]

    def discussion(self, repo_id: str, num: int) -> Discussion:
        with self._lock:
            return self._discussion(self._repo(repo_id), num)

    def repo_exists(self, repo_id: str) -> bool:
        with self._lock:
            return repo_id in self._repos

    # -- seeding discussions -----------------------------------------------------------------

    def open_discussion(
        self,
        repo_id: str,
        title: str,
        *,
        author: str,
        description: str = "",
        pull_request: bool = False,
        status: str | None = None,
    ) -> int:
        """Open a discussion (or an empty draft PR at `main`) as `author`; returns its number."""
        with self._lock:
            repo = self._repo(repo_id)
            disc = self._open_discussion(repo, title, author, description, pull_request)
            if status is not None:
                disc.status = status
            return disc.num

    def open_pr(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str] | None = None,
        *,
        author: str,
        title: str = "Update files",
        description: str = "",
        delete: Iterable[str] = (),
        base: str = "main",
    ) -> int:
        """Open a PR with one commit, like `create_commit(create_pr=True)` would."""
        with self._lock:
            repo = self._repo(repo_id)
            start = repo.branches[base]
            disc = self._open_discussion(
                repo, title, author, description, True, base_branch=base, start=start
            )
            adds = {p: _as_bytes(c) for p, c in (files or {}).items()}
            self._commit_to_pr(repo, disc, adds, [(p, False) for p in delete], title, "", author)
            return disc.num

    def add_comment(self, repo_id: str, num: int, text: str, *, author: str) -> str:
        """Comment as `author`; returns the event id (what `edit_discussion_comment` takes)."""
        with self._lock:
            disc = self._discussion(self._repo(repo_id), num)
            return self._comment(disc, author, text).id

    def set_discussion_status(self, repo_id: str, num: int, status: str, *, author: str) -> None:
        with self._lock:
            disc = self._discussion(self._repo(repo_id), num)
            disc.status = status
            self._event(disc, "status-change", author, {"status": status})

    # -- fault injection ---------------------------------------------------------------------

    def inject(
        self,
        method: str | None,
        path_regex: str,
        status: int = 500,
        times: int = 1,
        drop: bool = False,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        partial: int | None = None,
    ) -> Fault:
        """Make the next `times` requests matching `method` and `path_regex` fail.

        The regex is searched in the URL-decoded path and in the raw path (no query string).
        `drop=True` reads the request and closes the socket without answering (the client sees
        `httpx2.RemoteProtocolError`). `partial=N` serves the real response but cuts the body
        after N bytes (what a download resume with `Range` recovers from). Otherwise the answer
        is `status` with a JSON body (`body`, default `{"error": ...}`); 429 gets
        `Retry-After: 0` unless `headers` says otherwise. Returns the Fault (see `.hits`).
        """
        fault = Fault(
            method=method,
            pattern=re.compile(path_regex),
            status=status,
            times=times,
            drop=drop,
            partial=partial,
            headers=dict(headers or {}),
            body=body,
        )
        if status == 429 and not any(k.lower() == "retry-after" for k in fault.headers):
            fault.headers["Retry-After"] = "0"
        with self._lock:
            self._faults.append(fault)
        return fault

    def gate(self, method: str | None, path_regex: str, parties: int = 2, timeout: float = 10.0):
        """Hold the next `parties` matching requests until all have arrived, then release them
        together (outside the hub lock): two clients that both read before either writes, the
        interleaving a race needs, on demand rather than by luck. Used once."""
        with self._lock:
            barrier = threading.Barrier(parties)
            self._gates.append([method, re.compile(path_regex), barrier, timeout, 0])

    def _wait_at_gate(self, method: str, path: str) -> None:
        with self._lock:
            gate = next(
                (g for g in self._gates if g[0] in (None, method) and g[1].search(path)), None
            )
            if gate is not None:
                gate[4] += 1
            if gate is not None and gate[4] >= gate[2].parties:
                self._gates.remove(gate)  # the last party: the gate opens and is gone
        if gate is not None:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate[2].wait(gate[3])

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- request log -------------------------------------------------------------------------

    def write_requests(self) -> list[RecordedRequest]:
        """Every request other than GET/HEAD, including write-flow ones that change nothing
        (validate-yaml, preupload) and ones that failed."""
        with self._lock:
            return [r for r in self.requests if r.method not in ("GET", "HEAD")]

    def mutations(self) -> list[RecordedRequest]:
        """Only the requests that changed state: commits, repo creation, discussion writes."""
        with self._lock:
            return [r for r in self.requests if r.mutated]

    def requests_to(self, path_regex: str, method: str | None = None) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method.upper())
                and (pattern.search(r.path) or pattern.search(r.raw_path))
            ]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- client environment ------------------------------------------------------------------

    def subprocess_env(
        self,
        token: str | object | None = _DEFAULT,
        *,
        hf_home: str | os.PathLike | None = None,
        **extra: str,
    ) -> dict[str, str]:
        """Environment for running the CLI as a subprocess against this server.

        huggingface_hub reads HF_ENDPOINT, HF_HOME and friends once, at import, so a subprocess
        must get them in its environment. `token` defaults to `default_token` (the first user
        added); pass None for an anonymous client. HF_HOME is a private temp dir unless given,
        so a developer's real token file or cache never leaks in.
        """
        env = dict(os.environ)
        home = str(hf_home) if hf_home is not None else self.hf_home
        for key in _CLIENT_ENV_DROP:
            env.pop(key, None)
        env.update(_client_env(self.url, home))
        token = self.default_token if token is _DEFAULT else token
        if token is not None:
            env["HF_TOKEN"] = str(token)
        env.update(extra)
        return env

    # -- internals: state helpers (call with self._lock held) ---------------------------------

    def _now(self) -> datetime:
        """A logical clock: strictly increasing, deterministic timestamps."""
        self._clock += timedelta(seconds=1)
        return self._clock

    def _next_id(self) -> str:
        """Lower-case 24-hex ids, like the Hub's (the client lower-cases comment ids)."""
        self._counter += 1
        return f"{self._counter:024x}"

    def _repo(self, repo_id: str) -> _Repo:
        try:
            return self._repos[repo_id]
        except KeyError:
            raise KeyError(f"no repo {repo_id}") from None

    def _new_commit(
        self,
        repo: _Repo,
        parents: list[str],
        files: dict[str, bytes],
        title: str,
        message: str,
        author: str,
    ) -> Commit:
        self._counter += 1
        digest = hashlib.sha1()
        digest.update(f"commit {self._counter}\n{' '.join(parents)}\n{title}\n{message}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_sha(files[path])}\n".encode())
        commit = Commit(
            digest.hexdigest(), parents, dict(files), title, message, author, self._now()
        )
        repo.commits[commit.oid] = commit
        return commit

    @staticmethod
    def _apply(
        files: dict[str, bytes], adds: dict[str, bytes], deletes: list[tuple[str, bool]]
    ) -> dict[str, bytes]:
        snapshot = dict(files)
        for path, is_folder in deletes:
            path = path.strip("/") if is_folder else path
            if is_folder:
                doomed = [p for p in snapshot if p.startswith(path + "/")]
                if not doomed:
                    raise HubError(404, "A folder with this name doesn't exist", "EntryNotFound")
                for p in doomed:
                    del snapshot[p]
            else:
                if path not in snapshot:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                del snapshot[path]
        snapshot.update(adds)
        return snapshot

    def _resolve(self, repo: _Repo, revision: str) -> str:
        """Branch, refs/heads/x, tag, refs/tags/x, refs/pr/N, full or unique short (7+) sha."""
        rev = unquote(revision)
        name = rev.removeprefix("refs/heads/")
        if name in repo.branches:
            return repo.branches[name]
        tag = rev.removeprefix("refs/tags/")
        if tag in repo.tags:
            return repo.tags[tag]
        pr = _PR_REF.fullmatch(rev)
        if pr:
            disc = repo.discussions.get(int(pr.group(1)))
            if disc is not None and disc.head is not None:
                return disc.head
            raise _revision_not_found(rev)
        if 7 <= len(rev) <= 40 and _HEX.fullmatch(rev):
            hits = [oid for oid in repo.commits if oid.startswith(rev)]
            if len(hits) == 1:
                return hits[0]
        raise _revision_not_found(rev)

    def _history(self, repo: _Repo, sha: str) -> Iterator[Commit]:
        seen: set[str] = set()
        current: str | None = sha
        while current is not None and current not in seen:
            seen.add(current)
            commit = repo.commits[current]
            yield commit
            current = commit.parents[0] if commit.parents else None

    def _discussion(self, repo: _Repo, num: int) -> Discussion:
        disc = repo.discussions.get(num)
        if disc is None:
            raise HubError(404, "Discussion not found")
        return disc

    def _pr(self, repo: _Repo, num: int) -> Discussion:
        disc = repo.discussions.get(num)
        if disc is None or not disc.is_pull_request:
            raise _revision_not_found(f"refs/pr/{num}")
        return disc

    def _event(self, disc: Discussion, type_: str, author: str, data: dict) -> Event:
        event = Event(self._next_id(), type_, author, self._now(), data)
        disc.events.append(event)
        return event

    def _comment(self, disc: Discussion, author: str, text: str) -> Event:
        event = self._event(disc, "comment", author, {})
        event.versions.append((text, event.created_at, author))
        return event

    def _open_discussion(
        self,
        repo: _Repo,
        title: str,
        author: str,
        description: str,
        is_pr: bool,
        *,
        base_branch: str = "main",
        start: str | None = None,
    ) -> Discussion:
        # PRs and discussions share one numbering per repo, as on the Hub.
        num = max(repo.discussions, default=0) + 1
        disc = Discussion(
            num=num,
            repo_id=repo.repo_id,
            title=title,
            author=author,
            is_pull_request=is_pr,
            # The Hub opens API-created PRs as drafts; a commit on the PR makes it open.
            status="draft" if is_pr else "open",
            created_at=self._now(),
        )
        if is_pr:
            start = start or repo.branches[base_branch]
            disc.base_branch, disc.fork_point, disc.head = base_branch, start, start
        repo.discussions[num] = disc
        # The description is the first comment, which is how the Hub shows it.
        self._comment(disc, author, description)
        return disc

    def _commit_to_pr(
        self,
        repo: _Repo,
        disc: Discussion,
        adds: dict[str, bytes],
        deletes: list[tuple[str, bool]],
        title: str,
        message: str,
        author: str,
    ) -> str:
        assert disc.head is not None
        parent = repo.commits[disc.head]
        snapshot = self._apply(parent.files, adds, deletes)
        commit = self._new_commit(repo, [parent.oid], snapshot, title, message, author)
        disc.head = commit.oid
        self._event(disc, "commit", author, {"subject": title, "oid": commit.oid})
        if disc.status == "draft":
            disc.status = "open"
        return commit.oid

    def _conflicts(self, repo: _Repo, disc: Discussion) -> list[str]:
        """Paths changed both on the PR and on its base since the fork point, differently."""
        if disc.status == "merged" or disc.base_branch not in repo.branches:
            return []
        base = repo.commits[disc.fork_point].files  # type: ignore[index]
        ours = repo.commits[repo.branches[disc.base_branch]].files
        theirs = repo.commits[disc.head].files  # type: ignore[index]
        paths = set(base) | set(ours) | set(theirs)
        return sorted(
            p
            for p in paths
            if base.get(p) != theirs.get(p)
            and base.get(p) != ours.get(p)
            and ours.get(p) != theirs.get(p)
        )

    def _diff(self, repo: _Repo, disc: Discussion) -> str:
        """A git-style unified diff of the PR head against its fork point."""
        before = repo.commits[disc.fork_point].files  # type: ignore[index]
        after = repo.commits[disc.head].files  # type: ignore[index]
        chunks = []
        for path in sorted(set(before) | set(after)):
            old, new = before.get(path), after.get(path)
            if old == new:
                continue
            header = f"diff --git a/{path} b/{path}\n"
            try:
                old_lines = (old or b"").decode("utf-8").splitlines(keepends=True)
                new_lines = (new or b"").decode("utf-8").splitlines(keepends=True)
            except UnicodeDecodeError:
                chunks.append(header + f"Binary files a/{path} and b/{path} differ\n")
                continue
            lines = difflib.unified_diff(
                old_lines,
                new_lines,
                fromfile="/dev/null" if old is None else f"a/{path}",
                tofile="/dev/null" if new is None else f"b/{path}",
            )
            chunks.append(
                header + "".join(line if line.endswith("\n") else line + "\n" for line in lines)
            )
        return "".join(chunks)

    # -- internals: access control -----------------------------------------------------------

    def _can_read(self, repo: _Repo, user: User | None) -> bool:
        return not repo.private or (user is not None and user.name in repo.writers)

    def _check_read(self, repo_id: str, user: User | None) -> _Repo:
        """Hub semantics: missing -> 404; private and anonymous -> 401; private and someone
        else -> 404 (the Hub does not reveal that the repo exists). All say RepoNotFound."""
        repo = self._repos.get(repo_id)
        if repo is None:
            raise _repo_not_found(404)
        if not self._can_read(repo, user):
            raise _repo_not_found(401 if user is None else 404)
        if repo.disabled:
            raise HubError(403, DISABLED_MESSAGE)
        return repo

    def _check_download(self, repo: _Repo, user: User | None) -> None:
        """Gated repos describe publicly but serve files only to granted users."""
        if not repo.gated or (
            user is not None and (user.name in repo.writers or user.name in repo.gated_access)
        ):
            return
        if user is None:
            raise HubError(
                401,
                f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in.",
                "GatedRepo",
            )
        raise HubError(
            403,
            f"Access to model {repo.repo_id} is restricted and you are not in the authorized "
            f"list. Visit {self.url}/{repo.repo_id} to ask for access.",
            "GatedRepo",
        )

    @staticmethod
    def _require_write_token(user: User | None, action: str) -> User:
        if user is None:
            raise HubError(401, f"You must be authenticated to {action}")
        if not user.write:
            raise HubError(403, f"You don't have the rights to {action}: your token is read-only")
        return user

    def _require_writer(self, repo: _Repo, user: User | None, action: str) -> User:
        user = self._require_write_token(user, action)
        if user.name not in repo.writers:
            raise HubError(403, f"You don't have the rights to {action} in {repo.repo_id}")
        return user

    # -- internals: JSON shapes --------------------------------------------------------------

    def _user_json(self, name: str) -> dict:
        user = self._users.get(name) or User(name, "", False)
        return user.to_json()

    def _event_json(self, event: Event) -> dict:
        out = {
            "id": event.id,
            "type": event.type,
            "createdAt": _iso(event.created_at),
            "author": self._user_json(event.author),
            "data": dict(event.data),
        }
        if event.type == "comment":
            versions = [
                {
                    "raw": r,
                    "html": f"<p>{html.escape(r)}</p>\n",
                    "updatedAt": _iso(t),
                    "author": self._user_json(a),
                }
                for r, t, a in event.versions
            ]
            out["data"] = {
                "edited": event.edited,
                "hidden": event.hidden,
                "latest": versions[-1],
                "numEdits": len(event.versions) - 1,
                "editors": sorted({a for _, _, a in event.versions}),
                "editorAvatarUrls": [],
                "reactions": [],
                "isReport": False,
                "history": list(reversed(versions)),
            }
        return out

    def _discussion_json(self, repo: _Repo, disc: Discussion) -> dict:
        return {
            "num": disc.num,
            "title": disc.title,
            "status": disc.status,
            "isPullRequest": disc.is_pull_request,
            "createdAt": _iso(disc.created_at),
            "author": self._user_json(disc.author),
            "repo": {"name": repo.repo_id, "type": "model"},
            "pinned": False,
            "numComments": len(disc.comments()),
            "topReactions": [],
            "numReactionUsers": 0,
            "repoOwner": {"name": repo.owner, "type": "user", "isParticipating": False},
        }

    def _model_info_json(self, repo: _Repo, sha: str, query: dict[str, list[str]]) -> dict:
        commit = repo.commits[sha]
        card = parse_card_data(commit.files.get("README.md"))
        library = card.get("library_name") if card else None
        tags: list[str] = []
        card_tags = card.get("tags") if card else None
        if isinstance(card_tags, str):
            card_tags = [card_tags]
        for tag in [*(card_tags or []), *([library] if isinstance(library, str) else [])]:
            if isinstance(tag, str) and tag not in tags:
                tags.append(tag)
        blobs = _truthy((query.get("blobs") or [None])[-1])
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling["size"] = len(commit.files[path])
                sibling["blobId"] = git_blob_sha(commit.files[path])
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else repo.owner,
            "sha": sha,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created_at),
            "private": repo.private,
            "gated": repo.gated,
            "disabled": repo.disabled,
            "downloads": 0,
            "likes": 0,
            "tags": tags,
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(len(b) for b in commit.files.values()),
        }
        if library is not None:
            info["library_name"] = library
        if card is not None:
            info["cardData"] = card
            if isinstance(card.get("pipeline_tag"), str):
                info["pipeline_tag"] = card["pipeline_tag"]
        expand = [*query.get("expand", []), *query.get("expand[]", [])]
        if "evalResults" in expand:  # the .eval_results/*.yaml files (tests/hubserver_evals.py)
            from tests.hubserver_evals import eval_results

            info["evalResults"] = eval_results(commit.files)
        if expand:  # the Hub then returns only the requested properties
            info = {k: v for k, v in info.items() if k in {"_id", "id", *expand}}
        return info

    def _tree_entries(self, repo: _Repo, sha: str, path: str, recursive: bool, expand: bool):
        files = repo.commits[sha].files
        prefix = f"{path}/" if path else ""
        if path and not any(p.startswith(prefix) for p in files):
            raise HubError(
                404,
                f"Entry not found: {path} is not a directory",
                "EntryNotFound",
                headers={"X-Repo-Commit": sha},
            )
        dirs: dict[str, list[str]] = {}
        entries: list[tuple[str, str]] = []
        for p in sorted(files):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix) :]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                d = prefix + "/".join(parts[:depth])
                dirs.setdefault(d, []).append(p)
            if recursive or len(parts) == 1:
                entries.append(("file", p))
        for d in dirs:
            if recursive or "/" not in d[len(prefix) :]:
                entries.append(("directory", d))
        entries.sort(key=lambda e: (e[1].count("/") if not recursive else 0, e[1]))
        out = []
        for kind, p in entries:
            if kind == "file":
                item: dict[str, Any] = {
                    "type": "file",
                    "oid": git_blob_sha(files[p]),
                    "size": len(files[p]),
                    "path": p,
                }
            else:
                digest = hashlib.sha1()
                for child in dirs[p]:
                    digest.update(f"{child}\0{git_blob_sha(files[child])}\n".encode())
                item = {"type": "directory", "oid": digest.hexdigest(), "size": 0, "path": p}
            if expand:
                last = self._last_commit(repo, sha, p, kind == "directory")
                item["lastCommit"] = {"id": last.oid, "title": last.title, "date": _iso(last.date)}
            out.append(item)
        return out

    def _last_commit(self, repo: _Repo, sha: str, path: str, is_dir: bool) -> Commit:
        def view(commit: Commit) -> dict[str, bytes]:
            if not is_dir:
                return {path: commit.files[path]} if path in commit.files else {}
            return {p: b for p, b in commit.files.items() if p.startswith(path + "/")}

        history = list(self._history(repo, sha))
        for commit, older in itertools.pairwise(history):
            if view(commit) != view(older):
                return commit
        return history[-1]


_CLIENT_ENV_DROP = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_OIDC_RESOURCE",
    "HF_OIDC_ID_TOKEN",
    "HUGGINGFACE_CO_STAGING",
    "HUGGINGFACE_HUB_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_ASSETS_CACHE",
    "HF_TOKEN_PATH",
    "HF_STORED_TOKENS_PATH",
    "HF_XET_CACHE",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN",
)


def _client_env(url: str, hf_home: str) -> dict[str, str]:
    no_proxy = ",".join(x for x in (os.environ.get("NO_PROXY"), "127.0.0.1", "localhost") if x)
    return {
        "HF_ENDPOINT": url,
        "HF_HOME": hf_home,
        "HF_HUB_CACHE": os.path.join(hf_home, "hub"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
    }


# --------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------


class _Ctx:
    """Per-request data handed to route functions."""

    def __init__(self, record: RecordedRequest, query: dict[str, list[str]], user: User | None):
        self.record = record
        self.query = query
        self.user = user
        self.body = record.body
        self.mutated = False

    def q(self, key: str) -> str | None:
        values = self.query.get(key)
        return values[-1] if values else None

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise HubError(400, "Invalid JSON body") from None


class _HubHandler(BaseHTTPRequestHandler):
    """Parses, logs, injects faults, routes under the hub lock, then writes the answer."""

    hub: HubServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub; every answer has Content-Length
    server_version = "hubserver/1"

    def setup(self) -> None:
        super().setup()
        # Small keep-alive exchanges otherwise stall on Nagle + delayed ACK (~40 ms each).
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.hub._lock:
                self.hub._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is `hub.requests`; stderr noise helps nobody

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        hub = self.hub
        body = self._read_body()
        parts = urlsplit(self.path)
        raw_path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        headers = Headers(
            (k, "REDACTED" if k.lower() == "authorization" else v) for k, v in self.headers.items()
        )
        record = RecordedRequest(
            method=method,
            path=unquote(raw_path),
            raw_path=raw_path,
            query={k: v[-1] for k, v in query.items()},
            headers=headers,
            body=body,
        )
        housekeeping = bool(_HOUSEKEEPING.match(raw_path))
        hub._wait_at_gate(method, record.path)
        with hub._lock:
            if not housekeeping:
                hub.requests.append(record)
            fault = next((f for f in hub._faults if f.matches(method, record.path, raw_path)), None)
            if fault is not None:
                fault.times -= 1
                fault.hits += 1

        if fault is not None:
            try:  # best effort: a fault answers before authentication would
                user = self._authenticate()
                record.user = user.name if user else None
            except HubError:
                pass
        if fault is not None and fault.drop:
            record.fault = "drop"
            self._drop()
            return
        if fault is not None and fault.partial is None:
            record.fault = "status"
            record.status = fault.status
            payload = (
                fault.body
                if fault.body is not None
                else {"error": f"Injected failure ({fault.status})"}
            )
            if isinstance(payload, (bytes, str)):
                resp = _Response(fault.status, _as_bytes(payload), {"Content-Type": "text/plain"})
            else:
                resp = _json_response(payload, fault.status)
            resp.headers.update(fault.headers or {})
            self._send(method, resp)
            return

        try:
            user = self._authenticate()
            record.user = user.name if user else None
            ctx = _Ctx(record, query, user)
            with hub._lock:
                resp = _route(hub, method, raw_path, ctx)
            record.mutated = ctx.mutated
        except HubError as err:
            resp = _error_response(err)
        except Exception:  # a server bug: answer 500 and keep it for the fixture to report
            tb = traceback.format_exc()
            with hub._lock:
                hub.internal_errors.append(f"{method} {self.path}\n{tb}")
            resp = _error_response(HubError(500, "Internal test-server error"))
        record.status = resp.status
        if fault is not None:
            record.fault = "partial"
            self._send(method, resp, cut=fault.partial)
        else:
            self._send(method, resp)

    def _authenticate(self) -> User | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        user = self.hub._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, INVALID_CREDENTIALS_MESSAGE)
        return user

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, method: str, resp: _Response, cut: int | None = None) -> None:
        if getattr(resp, "stream", None) is not None:  # server-sent events (hubserver_jobs)
            return resp.stream(self)  # type: ignore[attr-defined]
        self.send_response(resp.status)
        headers = {"Content-Type": "application/octet-stream", **resp.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(resp.body)))
        # Headers and body leave in one write, for the same reason as TCP_NODELAY above.
        self._headers_buffer.append(b"\r\n")
        if method != "HEAD":
            self._headers_buffer.append(resp.body if cut is None else resp.body[:cut])
        self.flush_headers()
        self.wfile.flush()
        if cut is not None:
            self._drop()


# --------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------


def _route(hub: HubServer, method: str, raw_path: str, ctx: _Ctx) -> _Response:
    segs = raw_path.strip("/").split("/") if raw_path.strip("/") else []
    if segs[:1] == ["api"]:
        rest = segs[1:]
        from tests.hubserver_listing import listing_route  # GET /api/models, dataset repos

        if (listed := listing_route(hub, method, rest, ctx)) is not None:
            return listed
        if rest == ["whoami-v2"] and method == "GET":
            return _whoami(hub, ctx)
        if rest == ["agent-harnesses"] and method == "GET":
            return _json_response({"standardEnvVars": [], "harnesses": {}})
        if rest[:1] == ["telemetry"]:
            return _json_response({})
        if rest == ["validate-yaml"] and method == "POST":
            return _validate_yaml(ctx)
        if rest == ["repos", "create"] and method == "POST":
            return _create_repo(hub, ctx)
        if rest[:1] == ["models"] and len(rest) >= 2:
            return _model_api(hub, method, rest[1:], ctx)
        if rest[:2] == ["settings", "webhooks"]:  # tests/hubserver_webhooks.py
            return _json_response(hub.webhooks.route(method, rest[2:], ctx))
        if rest[:1] == ["jobs"]:  # the Jobs API: tests/hubserver_jobs.py (imports this module)
            from tests.hubserver_jobs import jobs_route

            return jobs_route(hub, method, rest[1:], ctx)
        if rest[:1] in (["datasets"], ["spaces"], ["kernels"]):
            raise _repo_not_found()  # this server only hosts model repos
        raise HubError(404, f"Not found: {method} {raw_path}")
    if segs[:1] in (["datasets"], ["spaces"], ["kernels"]) and "resolve" in segs:
        raise _repo_not_found()
    if method in ("GET", "HEAD") and "resolve" in segs[1:3]:
        at = segs.index("resolve", 1)
        if len(segs) >= at + 3:
            repo_id = unquote("/".join(segs[:at]))
            return _resolve_file(hub, method, repo_id, segs[at + 1], segs[at + 2 :], ctx)
    raise HubError(404, f"Not found: {method} {raw_path}")


def _split_repo(hub: HubServer, segs: list[str]) -> tuple[str, list[str]]:
    """`alice/model/tree/main` -> ("alice/model", ["tree", "main"]); one-segment ids too."""
    two = unquote("/".join(segs[:2]))
    if len(segs) >= 2 and (two in hub._repos or segs[1] not in _SUBRESOURCES):
        return two, segs[2:]
    return unquote(segs[0]), segs[1:]


def _model_api(hub: HubServer, method: str, segs: list[str], ctx: _Ctx) -> _Response:
    repo_id, rest = _split_repo(hub, segs)
    head = rest[0] if rest else None
    if head is None and method == "GET":
        return _model_info(hub, repo_id, "main", ctx)
    if head == "revision" and len(rest) >= 2 and method == "GET":
        return _model_info(hub, repo_id, "/".join(rest[1:]), ctx)
    if head == "tree" and len(rest) >= 2 and method == "GET":
        return _tree(hub, repo_id, rest[1], unquote("/".join(rest[2:])), ctx)
    if head == "refs" and len(rest) == 1 and method == "GET":
        return _refs(hub, repo_id, ctx)
    if head == "commits" and len(rest) >= 2 and method == "GET":
        return _commit_list(hub, repo_id, "/".join(rest[1:]), ctx)
    if head == "preupload" and len(rest) >= 2 and method == "POST":
        return _preupload(hub, repo_id, "/".join(rest[1:]), ctx)
    if head == "commit" and len(rest) >= 2 and method == "POST":
        return _commit(hub, repo_id, "/".join(rest[1:]), ctx)
    if head == "paths-info" and len(rest) >= 2 and method == "POST":
        return _paths_info(hub, repo_id, "/".join(rest[1:]), ctx)
    if head == "branch" and len(rest) >= 2 and method in ("POST", "DELETE"):
        return _branch(hub, method, repo_id, unquote("/".join(rest[1:])), ctx)
    if head == "discussions":
        return _discussions_api(hub, method, repo_id, rest[1:], ctx)
    raise HubError(404, f"Not found: {method} /api/models/{'/'.join(segs)}")


def _whoami(hub: HubServer, ctx: _Ctx) -> _Response:
    user = ctx.user
    if user is None:
        raise HubError(401, INVALID_CREDENTIALS_MESSAGE)
    return _json_response(
        {
            "type": "user",
            "id": user.to_json()["_id"],
            "name": user.name,
            "fullname": user.fullname or user.name,
            "email": f"{user.name}@example.com",
            "emailVerified": True,
            "canPay": False,
            "isPro": False,
            "periodEnd": None,
            "avatarUrl": f"/avatars/{user.name}.svg",
            "orgs": [],
            "auth": {
                "type": "access_token",
                "accessToken": {
                    "displayName": f"{user.name}-token",
                    "role": "write" if user.write else "read",
                    "createdAt": _iso(_EPOCH),
                },
            },
        }
    )


def _validate_yaml(ctx: _Ctx) -> _Response:
    payload = ctx.json()
    content = payload.get("content") or ""
    match = _YAML_BLOCK.search(content)
    if match is None or not match.group(2).strip():
        return _json_response(
            {
                "errors": [],
                "warnings": [{"message": "empty or missing yaml metadata in repo card"}],
            }
        )
    try:
        import yaml
    except ImportError:
        return _json_response({"errors": [], "warnings": []})
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        message = f"Invalid YAML in README.md: {exc}".replace("\n", " ")
        return _json_response(
            {"error": message, "errors": [{"message": message}], "warnings": []},
            400,
            {"X-Error-Message": message},
        )
    if not isinstance(data, dict):
        message = "YAML metadata must be a mapping"
        return _json_response(
            {"error": message, "errors": [{"message": message}], "warnings": []},
            400,
            {"X-Error-Message": message},
        )
    return _json_response({"errors": [], "warnings": []})


def _create_repo(hub: HubServer, ctx: _Ctx) -> _Response:
    user = hub._require_write_token(ctx.user, "create a repo")
    payload = ctx.json()
    if payload.get("type") not in (None, "model"):
        raise HubError(400, "This test server only hosts model repos")
    namespace = payload.get("organization") or user.name
    if namespace != user.name:
        raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
    repo_id = f"{namespace}/{payload['name']}"
    if repo_id in hub._repos:
        raise HubError(
            409, "You already created this model repo", extra={"url": f"{hub.url}/{repo_id}"}
        )
    private = payload.get("visibility") == "private" or bool(payload.get("private"))
    hub.create_repo(
        repo_id, {".gitattributes": DEFAULT_GITATTRIBUTES}, private=private, owner=user.name
    )
    ctx.mutated = True
    return _json_response({"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id})


def _model_info(hub: HubServer, repo_id: str, rev: str, ctx: _Ctx) -> _Response:
    repo = hub._check_read(repo_id, ctx.user)
    sha = hub._resolve(repo, rev)
    return _json_response(hub._model_info_json(repo, sha, ctx.query))


def _tree(hub: HubServer, repo_id: str, rev: str, path: str, ctx: _Ctx) -> _Response:
    repo = hub._check_read(repo_id, ctx.user)
    sha = hub._resolve(repo, rev)
    recursive, expand = _truthy(ctx.q("recursive")), _truthy(ctx.q("expand"))
    entries = hub._tree_entries(repo, sha, path.strip("/"), recursive, expand)
    return _paged(hub, ctx, entries, hub.tree_page_size)


def _paged(hub: HubServer, ctx: _Ctx, items: list, page_size: int) -> _Response:
    """One page of `items`, with a GitHub-style `Link: <...>; rel="next"` when more remain."""
    cursor = ctx.q("cursor")
    try:
        start = int(base64.urlsafe_b64decode(cursor.encode()).decode()) if cursor else 0
    except ValueError:
        raise HubError(400, "Invalid cursor") from None
    page = items[start : start + page_size]
    headers = {}
    if start + page_size < len(items):
        params = [(k, v) for k, vs in ctx.query.items() if k != "cursor" for v in vs]
        next_cursor = base64.urlsafe_b64encode(str(start + page_size).encode()).decode()
        params.append(("cursor", next_cursor))
        qs = "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in params)
        headers["Link"] = f'<{hub.url}{ctx.record.raw_path}?{qs}>; rel="next"'
    return _json_response(page, headers=headers)


def _refs(hub: HubServer, repo_id: str, ctx: _Ctx) -> _Response:
    repo = hub._check_read(repo_id, ctx.user)
    out: dict[str, Any] = {
        "branches": [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
            for n, s in sorted(repo.branches.items())
        ],
        "converts": [],
        "tags": [
            {"name": n, "ref": f"refs/tags/{n}", "targetCommit": s}
            for n, s in sorted(repo.tags.items())
        ],
    }
    if _truthy(ctx.q("include_prs")):
        out["pullRequests"] = [
            {"name": d.ref, "ref": d.ref, "targetCommit": d.head}
            for d in sorted(repo.discussions.values(), key=lambda d: d.num)
            if d.is_pull_request and d.head
        ]
    return _json_response(out)


def _commit_list(hub: HubServer, repo_id: str, rev: str, ctx: _Ctx) -> _Response:
    repo = hub._check_read(repo_id, ctx.user)
    sha = hub._resolve(repo, rev)
    items = [
        {
            "id": c.oid,
            "title": c.title,
            "message": c.message,
            "authors": [{"user": c.author, "avatar": f"/avatars/{c.author}.svg"}],
            "date": _iso(c.date),
        }
        for c in hub._history(repo, sha)
    ]
    return _paged(hub, ctx, items, hub.commits_page_size)


def _paths_info(hub: HubServer, repo_id: str, rev: str, ctx: _Ctx) -> _Response:
    repo = hub._check_read(repo_id, ctx.user)
    sha = hub._resolve(repo, rev)
    form = parse_qs(ctx.body.decode("utf-8"), keep_blank_values=True)
    wanted = form.get("paths", [])
    files = repo.commits[sha].files
    out = []
    for path in wanted:
        path = path.strip("/")
        if path in files:
            out.append(
                {
                    "type": "file",
                    "oid": git_blob_sha(files[path]),
                    "size": len(files[path]),
                    "path": path,
                }
            )
        elif any(p.startswith(path + "/") for p in files):
            oid = hashlib.sha1(f"{sha}:{path}".encode()).hexdigest()
            out.append({"type": "directory", "oid": oid, "size": 0, "path": path})
    return _json_response(out)


def _branch(hub: HubServer, method: str, repo_id: str, branch: str, ctx: _Ctx) -> _Response:
    repo = hub._check_read(repo_id, ctx.user)
    hub._require_writer(repo, ctx.user, "manage branches")
    if method == "DELETE":
        if branch not in repo.branches or branch == "main":
            raise _revision_not_found(branch)
        del repo.branches[branch]
    else:
        if branch in repo.branches:
            raise HubError(409, f"Branch {branch} already exists")
        start = (ctx.json() or {}).get("startingPoint") or "main"
        repo.branches[branch] = hub._resolve(repo, start)
    ctx.mutated = True
    return _json_response({})


def _resolve_file(
    hub: HubServer, method: str, repo_id: str, rev: str, path_segs: list[str], ctx: _Ctx
) -> _Response:
    repo = hub._check_read(repo_id, ctx.user)
    sha = hub._resolve(repo, rev)
    hub._check_download(repo, ctx.user)
    path = unquote("/".join(path_segs))
    data = repo.commits[sha].files.get(path)
    if data is None:
        # X-Repo-Commit on the 404 lets the client cache the file's absence for this commit.
        raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": sha})
    headers = {
        "X-Repo-Commit": sha,
        "ETag": f'"{git_blob_sha(data)}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": (
            f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}; "
            f'filename="{path.rsplit("/", 1)[-1]}"'
        ),
    }
    range_header = ctx.record.headers.get("Range")
    if method == "GET" and range_header:
        span = _parse_range(range_header, len(data))
        if span is None:
            headers["Content-Range"] = f"bytes */{len(data)}"
            return _json_response({"error": "Range Not Satisfiable"}, 416, headers)
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return _Response(206, data[start : end + 1], headers)
    return _Response(200, data, headers)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not match or not (match.group(1) or match.group(2)):
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    else:
        start, end = max(size - int(last), 0), size - 1
    if start >= size or start > end:
        return None
    return start, end


def _write_target(hub: HubServer, repo: _Repo, rev: str, ctx: _Ctx) -> tuple[str, Any]:
    """Where a preupload/commit on `rev` lands, after permission checks.

    Returns ("pr", discussion) for refs/pr/N, ("new-pr", base branch) with create_pr, or
    ("branch", name). A PR's ref accepts commits from its author and repo writers; opening a
    PR needs any write token; committing to a branch needs write access to the repo.
    """
    rev = unquote(rev)
    create_pr = _truthy(ctx.q("create_pr"))
    pr = _PR_REF.fullmatch(rev)
    if pr:
        disc = hub._pr(repo, int(pr.group(1)))
        if create_pr:
            raise HubError(
                400, f"Cannot open a pull request from {rev}: commit to it without create_pr"
            )
        user = hub._require_write_token(ctx.user, "push to this pull request")
        if user.name != disc.author and user.name not in repo.writers:
            raise HubError(403, f"Only the author of {rev} or a repo writer can push to it")
        return "pr", disc
    branch = rev.removeprefix("refs/heads/")
    if branch not in repo.branches:
        raise _revision_not_found(rev)
    if create_pr:
        hub._require_write_token(ctx.user, "open a pull request")
        return "new-pr", branch
    hub._require_writer(repo, ctx.user, "commit")
    return "branch", branch


def _preupload(hub: HubServer, repo_id: str, rev: str, ctx: _Ctx) -> _Response:
    repo = hub._check_read(repo_id, ctx.user)
    kind, target = _write_target(hub, repo, rev, ctx)
    sha = target.head if kind == "pr" else repo.branches[target]
    files = repo.commits[sha].files
    out = []
    for item in ctx.json().get("files", []):
        path = item["path"]
        entry: dict[str, Any] = {"path": path, "uploadMode": "regular", "shouldIgnore": False}
        if path in files:
            entry["oid"] = git_blob_sha(files[path])
        out.append(entry)
    return _json_response({"files": out, "commitOid": sha})


def _commit(hub: HubServer, repo_id: str, rev: str, ctx: _Ctx) -> _Response:
    repo = hub._check_read(repo_id, ctx.user)
    kind, target = _write_target(hub, repo, rev, ctx)
    author = ctx.user.name  # type: ignore[union-attr] - _write_target required a user
    try:
        lines = [json.loads(line) for line in ctx.body.splitlines() if line.strip()]
    except ValueError:
        raise HubError(400, "Invalid ndjson body") from None
    if not lines or lines[0].get("key") != "header":
        raise HubError(400, "The first ndjson line must be the header")
    header = lines[0].get("value") or {}
    summary = (header.get("summary") or "").strip()
    if not summary:
        raise HubError(400, "A commit summary is required")
    description = header.get("description") or ""
    adds: dict[str, bytes] = {}
    deletes: list[tuple[str, bool]] = []
    for line in lines[1:]:
        key, value = line.get("key"), line.get("value") or {}
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
            adds[value["path"]] = base64.b64decode(value["content"])
        elif key in ("deletedFile", "deletedFolder"):
            deletes.append((value["path"], key == "deletedFolder"))
        elif key == "lfsFile":
            raise HubError(422, "LFS uploads are not supported by the test server")
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")

    parent_arg = header.get("parentCommit")
    parent = None
    if parent_arg:
        try:
            parent = hub._resolve(repo, parent_arg) if _HEX.fullmatch(parent_arg) else None
        except HubError:
            parent = None

    if kind == "new-pr":
        if parent_arg and parent is None:
            raise HubError(400, f"Invalid parentCommit: {parent_arg}")
        start = parent or repo.branches[target]
        hub._apply(repo.commits[start].files, adds, deletes)  # validate before opening the PR
        disc = hub._open_discussion(
            repo, summary, author, description, True, base_branch=target, start=start
        )
        oid = hub._commit_to_pr(repo, disc, adds, deletes, summary, description, author)
        pr_url = f"{hub.url}/{repo.repo_id}/discussions/{disc.num}"
    else:
        head = target.head if kind == "pr" else repo.branches[target]
        if parent_arg and parent != head:
            raise HubError(412, PARENT_MISMATCH_MESSAGE)
        if kind == "pr":
            oid = hub._commit_to_pr(repo, target, adds, deletes, summary, description, author)
        else:
            snapshot = hub._apply(repo.commits[head].files, adds, deletes)
            oid = hub._new_commit(repo, [head], snapshot, summary, description, author).oid
            repo.branches[target] = oid
        pr_url = None
    ctx.mutated = True
    hub.webhooks.commit_made(repo, oid)
    out = {
        "success": True,
        "commitOid": oid,
        "commitUrl": f"{hub.url}/{repo.repo_id}/commit/{oid}",
        "hookOutput": "",
    }
    if pr_url is not None:
        out["pullRequestUrl"] = pr_url
    return _json_response(out)


def _discussions_api(
    hub: HubServer, method: str, repo_id: str, rest: list[str], ctx: _Ctx
) -> _Response:
    repo = hub._check_read(repo_id, ctx.user)
    if not rest:
        if method == "GET":
            return _list_discussions(hub, repo, ctx)
        if method == "POST":
            return _create_discussion(hub, repo, ctx)
        raise HubError(405, "Method not allowed")
    try:
        num = int(rest[0])
    except ValueError:
        raise HubError(404, "Discussion not found") from None
    disc = hub._discussion(repo, num)
    action = rest[1:]
    if not action and method == "GET":
        return _discussion_details(hub, repo, disc, ctx)
    if method != "POST":
        raise HubError(405, "Method not allowed")
    if action == ["comment"]:
        user = hub._require_write_token(ctx.user, "comment")
        text = (ctx.json().get("comment") or "").strip()
        if not text:
            raise HubError(400, "Comment cannot be empty")
        event = hub._comment(disc, user.name, text)
        ctx.mutated = True
        return _json_response({"newMessage": hub._event_json(event)})
    if len(action) == 3 and action[0] == "comment" and action[2] in ("edit", "hide"):
        user = hub._require_write_token(ctx.user, "edit comments")
        event = next((e for e in disc.events if e.id == action[1] and e.type == "comment"), None)
        if event is None:
            raise HubError(404, "Comment not found")
        if action[2] == "edit":
            if event.author != user.name:
                raise HubError(403, "Only the author of a comment can edit it")
            content = ctx.json().get("content")
            if not isinstance(content, str) or not content.strip():
                raise HubError(400, "Comment cannot be empty")
            event.versions.append((content, hub._now(), user.name))
        else:
            if event.author != user.name and user.name not in repo.writers:
                raise HubError(403, "Only the author or a repo writer can hide a comment")
            event.hidden = True
        ctx.mutated = True
        return _json_response({"updatedComment": hub._event_json(event)})
    if action == ["status"]:
        user = hub._require_write_token(ctx.user, "change the status")
        if user.name != disc.author and user.name not in repo.writers:
            raise HubError(403, "Only the author or a repo writer can change the status")
        payload = ctx.json()
        status = payload.get("status")
        if status not in ("open", "closed"):
            raise HubError(400, f"Invalid status {status!r}")
        if disc.status == "merged":
            raise HubError(400, "A merged pull request cannot change status")
        disc.status = status
        event = hub._event(disc, "status-change", user.name, {"status": status})
        if (payload.get("comment") or "").strip():
            hub._comment(disc, user.name, payload["comment"].strip())
        ctx.mutated = True
        return _json_response({"newStatus": hub._event_json(event)})
    if action == ["title"]:
        user = hub._require_write_token(ctx.user, "rename")
        if user.name != disc.author and user.name not in repo.writers:
            raise HubError(403, "Only the author or a repo writer can rename")
        title = (ctx.json().get("title") or "").strip()
        if not 3 <= len(title) <= 200:
            raise HubError(400, "Title must be between 3 and 200 characters")
        event = hub._event(disc, "title-change", user.name, {"from": disc.title, "to": title})
        disc.title = title
        ctx.mutated = True
        return _json_response({"newTitle": hub._event_json(event)})
    if action == ["merge"]:
        return _merge(hub, repo, disc, ctx)
    raise HubError(404, "Not found")


def _list_discussions(hub: HubServer, repo: _Repo, ctx: _Ctx) -> _Response:
    kind, status, author = ctx.q("type"), ctx.q("status"), ctx.q("author")
    items = sorted(repo.discussions.values(), key=lambda d: d.num, reverse=True)
    if kind == "pull_request":
        items = [d for d in items if d.is_pull_request]
    elif kind == "discussion":
        items = [d for d in items if not d.is_pull_request]
    if status == "open":  # drafts are listed with open ones, as in the Hub's "Open" tab
        items = [d for d in items if d.status in ("open", "draft")]
    elif status == "closed":
        items = [d for d in items if d.status in ("closed", "merged")]
    if author:
        items = [d for d in items if d.author.lower() == author.lower()]
    try:
        page = int(ctx.q("p") or 0)
    except ValueError:
        raise HubError(400, "Invalid page") from None
    start = page * hub.discussions_page_size
    chunk = items[start : start + hub.discussions_page_size]
    return _json_response(
        {
            "discussions": [hub._discussion_json(repo, d) for d in chunk],
            "count": len(items),
            "start": start,
            "numClosedDiscussions": sum(d.status in ("closed", "merged") for d in items),
        }
    )


def _discussion_details(hub: HubServer, repo: _Repo, disc: Discussion, ctx: _Ctx) -> _Response:
    out = hub._discussion_json(repo, disc)
    out["events"] = [hub._event_json(e) for e in disc.events]
    out["locked"] = False
    out["isReport"] = False
    if disc.is_pull_request:
        changes: dict[str, Any] = {"base": f"refs/heads/{disc.base_branch}"}
        if disc.merge_commit:
            changes["mergeCommitId"] = disc.merge_commit
        out["changes"] = changes
        out["filesWithConflicts"] = hub._conflicts(repo, disc)
        if _truthy(ctx.q("diff")):
            out["diff"] = hub._diff(repo, disc)
    return _json_response(out)


def _create_discussion(hub: HubServer, repo: _Repo, ctx: _Ctx) -> _Response:
    user = hub._require_write_token(ctx.user, "open a discussion")
    payload = ctx.json()
    title = (payload.get("title") or "").strip()
    if not 3 <= len(title) <= 200:
        raise HubError(400, "Title must be between 3 and 200 characters")
    is_pr = bool(payload.get("pullRequest"))
    disc = hub._open_discussion(repo, title, user.name, payload.get("description") or "", is_pr)
    ctx.mutated = True
    return _json_response(
        {
            "num": disc.num,
            "pullRequest": is_pr,
            "url": f"{hub.url}/{repo.repo_id}/discussions/{disc.num}",
        }
    )


def _merge(hub: HubServer, repo: _Repo, disc: Discussion, ctx: _Ctx) -> _Response:
    user = hub._require_writer(repo, ctx.user, "merge pull requests")
    if not disc.is_pull_request or disc.status not in ("open", "draft"):
        raise HubError(400, "Only open pull requests can be merged")
    conflicts = hub._conflicts(repo, disc)
    if conflicts:
        raise HubError(409, f"Merge conflicts in: {', '.join(conflicts)}")
    base_head = repo.branches[disc.base_branch]  # type: ignore[index]
    fork = repo.commits[disc.fork_point].files  # type: ignore[index]
    theirs = repo.commits[disc.head].files  # type: ignore[index]
    merged = dict(repo.commits[base_head].files)
    for path in set(fork) | set(theirs):
        if fork.get(path) != theirs.get(path):
            if path in theirs:
                merged[path] = theirs[path]
            else:
                merged.pop(path, None)
    commit = hub._new_commit(
        repo,
        [base_head, disc.head],
        merged,
        f"Merge pull request #{disc.num}",
        disc.title,
        user.name,
    )
    repo.branches[disc.base_branch] = commit.oid  # type: ignore[index]
    disc.merge_commit = commit.oid
    disc.status = "merged"
    hub.webhooks.commit_made(repo, commit.oid)
    hub._event(disc, "status-change", user.name, {"status": "merged"})
    comment = (ctx.json() or {}).get("comment") if ctx.body else None
    if comment:
        hub._comment(disc, user.name, comment)
    ctx.mutated = True
    return _json_response({})


# --------------------------------------------------------------------------------------------
# Pointing the in-process client at a server, and the fixtures
# --------------------------------------------------------------------------------------------


def configure_client(
    monkeypatch: pytest.MonkeyPatch,
    server: HubServer,
    hf_home: str | os.PathLike,
    token: str | object | None = _DEFAULT,
) -> None:
    """Point the already-imported huggingface_hub at `server`, undone by `monkeypatch`.

    huggingface_hub 2.4.0 reads its environment once, at import: `constants.ENDPOINT` and
    `HUGGINGFACE_CO_URL_TEMPLATE` (hf_hub_download, ModelCard.load/validate), the default
    `hf_api.api = HfApi()` behind module-level helpers (`huggingface_hub.whoami`, ...), the
    cache and token paths, the offline/telemetry/progress-bar switches, and two copies taken by
    `from ..constants import X` (utils.tqdm, utils._cache_manager). Environment variables are set
    as well, for code that reads them at call time (HF_TOKEN is read on every request).
    """
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _http, close_session

    home = str(hf_home)
    Path(home).mkdir(parents=True, exist_ok=True)
    url = server.url
    for key in _CLIENT_ENV_DROP:
        monkeypatch.delenv(key, raising=False)
    for key, value in _client_env(url, home).items():
        monkeypatch.setenv(key, value)
    token = server.default_token if token is _DEFAULT else token
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", str(token))

    hub_cache = os.path.join(home, "hub")
    patches: dict[str, Any] = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": home,
        "HF_HUB_CACHE": hub_cache,
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HF_ASSETS_CACHE": os.path.join(home, "assets"),
        "HUGGINGFACE_ASSETS_CACHE": os.path.join(home, "assets"),
        "HF_TOKEN_PATH": os.path.join(home, "token"),
        "HF_STORED_TOKENS_PATH": os.path.join(home, "stored_tokens"),
        "HF_XET_CACHE": os.path.join(home, "xet"),
        "AGENT_HARNESSES_PATH": os.path.join(home, ".agent_harnesses.json"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_PROGRESS_BARS": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
    }
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value, raising=False)
    hosts = getattr(constants, "HF_URL_HOSTS", None)
    if isinstance(hosts, frozenset):
        monkeypatch.setattr(constants, "HF_URL_HOSTS", hosts | {server.host})
    origins = getattr(_http, "_HUB_ORIGINS", None)
    if isinstance(origins, frozenset):
        monkeypatch.setattr(_http, "_HUB_ORIGINS", origins | {("http", server.host, server.port)})
    monkeypatch.setattr(hf_api.api, "endpoint", url)

    import huggingface_hub.utils._cache_manager as cache_manager
    import huggingface_hub.utils.tqdm as hf_tqdm

    monkeypatch.setattr(hf_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", True, raising=False)
    monkeypatch.setattr(cache_manager, "HF_HUB_CACHE", hub_cache, raising=False)
    # The shared httpx client pools keep-alive connections; start from a fresh one so nothing
    # talks to a previous test's server, and drop it again when the test ends.
    close_session()


@pytest.fixture
def hub_server():
    """A started HubServer with users alice (write token) and bob (read-only token).

    Fails the test if the server hit an internal error, so server bugs never pass silently.
    """
    server = HubServer()
    server.add_user("alice", "hf_alice_write_token", write=True, fullname="Alice")
    server.add_user("bob", "hf_bob_read_token", write=False, fullname="Bob")
    with server:
        yield server
    if server.internal_errors:
        pytest.fail("hub test server internal errors:\n" + "\n".join(server.internal_errors))


@pytest.fixture
def hub_client_env(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Point the in-process huggingface_hub at `hub_server` as alice; yields the server.

    HfApi(), module-level helpers (snapshot_download, hf_hub_download, ModelCard.load, whoami)
    and a private HF_HOME under tmp_path all go to the test server.
    """
    from huggingface_hub.utils import close_session

    configure_client(monkeypatch, hub_server, tmp_path / "hf_home")
    yield hub_server
    close_session()
