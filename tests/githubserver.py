"""A GitHub REST API test server: the slice of api.github.com that gradience-hub uses.

Real PyGithub talks to it over real HTTP on 127.0.0.1, so the tests exercise the client's URLs,
headers, pagination, retries and error handling rather than a mock's idea of them. It is
deliberately faithful where clients go wrong:

* tokens are sent as ``Authorization: token X`` (or ``Bearer X``); an unknown token answers
  ``401 {"message": "Bad credentials"}`` on every endpoint, as GitHub does;
* a ``read`` token answers ``403 "Resource not accessible by integration"`` on writes (the
  read-only ``GITHUB_TOKEN`` of a pull request from a fork);
* an *installation* token (``add_user(..., installation=True)``, like the Actions
  ``GITHUB_TOKEN``) gets the same 403 from ``GET /user`` and authors comments as a ``Bot``;
* list endpoints honour ``per_page`` (default 30, at most 100) and ``page`` and send a ``Link``
  header whose URLs use ``/repositories/{id}/...``, as GitHub's do, so clients must follow the
  header rather than build page URLs themselves;
* any token with write access may edit any comment (that is GitHub's rule); refusing to edit
  other people's comments is the client's job;
* the API can live under a path prefix (``/api/v3``, GitHub Enterprise Server style).

Faults are injected with :meth:`GitHubServer.inject` (a 502, a secondary rate limit...) and
every request is logged in :attr:`GitHubServer.requests` with the Authorization header redacted.

The module is a pytest plugin: it provides the function-scoped fixtures ``github_server`` and
``github_enterprise_server`` (API under ``/api/v3``). Register it with
``pytest_plugins = ["tests.githubserver"]`` or ``-p tests.githubserver``.
"""

from __future__ import annotations

import base64
import contextlib
import http
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest

DOCS = "https://docs.github.com/rest"
# GitHub's limit on an issue comment body (characters).
MAX_BODY = 65536
# The real identity behind the Actions GITHUB_TOKEN, so tests can use realistic ids.
ACTIONS_BOT_LOGIN = "github-actions[bot]"
ACTIONS_BOT_ID = 41898282
ACTIONS_APP = {
    "id": 15368,
    "slug": "github-actions",
    "node_id": "MDM6QXBwMTUzNjg=",
    "name": "GitHub Actions",
    "description": "Automate your workflow from idea to production",
    "external_url": "https://help.github.com/en/actions",
    "html_url": "https://github.com/apps/github-actions",
    "created_at": "2018-07-30T09:30:17Z",
    "updated_at": "2024-04-10T20:33:16Z",
    "permissions": {"issues": "write", "pull_requests": "write", "metadata": "read"},
    "events": [],
}


@dataclass
class User:
    """An account the server knows; ``token`` is None for accounts that only author comments."""

    login: str
    id: int
    token: str | None
    permission: str  # "write" or "read"
    installation: bool

    @property
    def type(self) -> str:
        return "Bot" if self.installation or self.login.endswith("[bot]") else "User"


@dataclass
class Issue:
    """An issue or pull request of a repository (they share a number space on GitHub)."""

    number: int
    id: int
    title: str
    author: str
    is_pr: bool
    created_at: str


@dataclass
class Repo:
    """A repository; every repository is public here, so anonymous reads are allowed."""

    owner: str
    name: str
    id: int
    issues: dict[int, Issue] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Comment:
    """An issue comment as stored; :meth:`GitHubServer._comment_json` renders the API shape."""

    id: int
    repo: str
    number: int
    author: str
    body: str
    created_at: str
    updated_at: str


@dataclass
class Fault:
    """One injected failure: answered instead of the real response while ``times`` lasts."""

    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    headers: dict[str, str]
    body: Any
    process: bool


@dataclass
class RecordedRequest:
    """One request as the server saw it (Authorization redacted) and the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0


class _Reply(Exception):
    """Raised inside a route to answer with an error status (keeps routes linear)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_id(prefix: str, number: int) -> str:
    # GitHub's node ids are opaque base64 strings with a type prefix; the shape is all that matters.
    return prefix + base64.b64encode(number.to_bytes(8, "big")).decode().rstrip("=")


def _error(message: str, doc: str = DOCS, status: int | None = None, **extra: Any) -> dict:
    body = {"message": message, "documentation_url": doc, **extra}
    if status is not None:
        body["status"] = str(status)
    return body


class GitHubServer:
    """In-memory GitHub REST server on 127.0.0.1 (ephemeral port, daemon thread).

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``prefix`` serves the API
    under a path such as ``/api/v3`` (GitHub Enterprise Server); :attr:`api_url` is what a
    client takes as its base URL (``GITHUB_API_URL``).
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._users: dict[str, User] = {}  # by login
        self._tokens: dict[str, str] = {}  # token -> login
        self._repos: dict[str, Repo] = {}  # by lower-case full name (GitHub is case-insensitive)
        self._comments: dict[int, Comment] = {}
        self._faults: list[Fault] = []
        self._gates: list[list[Any]] = []  # [method, pattern, barrier, timeout, arrivals]
        # Separate counters, started apart, so ids of different kinds never collide by accident.
        self._next = {"user": 1001, "repo": 500001, "issue": 900001, "comment": 1_000_000_001}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> GitHubServer:
        """Bind an ephemeral port on 127.0.0.1 and serve from a daemon thread."""
        handler = type("Handler", (_Handler,), {"github": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> GitHubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``; the web (``html_url``) side lives here."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The API base URL, prefix included: what ``GITHUB_API_URL`` would hold."""
        return self.origin + self.prefix

    url = api_url

    # -- set-up helpers --------------------------------------------------------------------

    def add_user(
        self,
        login: str,
        token: str | None = None,
        permission: str = "write",
        installation: bool = False,
    ) -> dict:
        """Add an account; with ``token`` requests may authenticate as it.

        ``permission`` is "write" or "read" (read answers 403 on writes). ``installation=True``
        makes an App installation identity like the Actions ``GITHUB_TOKEN``: ``GET /user``
        answers 403 and its comments are authored by a ``Bot`` (``github-actions[bot]`` gets the
        real bot id). Returns the user's API JSON.
        """
        if permission not in ("write", "read"):
            raise ValueError(f"permission must be 'write' or 'read', not {permission!r}")
        with self._lock:
            if login == ACTIONS_BOT_LOGIN:
                uid = ACTIONS_BOT_ID
            elif login in self._users:
                uid = self._users[login].id
            else:
                uid = self._take("user")
            user = User(login, uid, token, permission, installation)
            self._users[login] = user
            if token is not None:
                self._tokens[token] = login
            return self._user_json(user)

    def add_repo(self, repo_full_name: str) -> dict:
        """Add a public repository (idempotent); returns its API JSON."""
        return self._repo_json(self._ensure_repo(repo_full_name))

    def add_pr(self, repo_full_name: str, number: int, title: str | None = None) -> dict:
        """Add pull request ``number`` (creating the repository if needed); returns its JSON."""
        return self._add_issue(repo_full_name, number, title, is_pr=True)

    def add_issue(self, repo_full_name: str, number: int, title: str | None = None) -> dict:
        """Add a plain issue (not a pull request); returns its issue JSON."""
        return self._add_issue(repo_full_name, number, title, is_pr=False)

    def add_comment(self, repo_full_name: str, number: int, author_login: str, body: str) -> dict:
        """Add a comment by ``author_login`` (an unknown login becomes a token-less user).

        Returns the comment's API JSON.
        """
        with self._lock:
            repo = self._repo_or_fail(repo_full_name)
            if number not in repo.issues:
                raise KeyError(f"{repo_full_name}#{number} does not exist; add_pr() it first")
            if author_login not in self._users:
                self.add_user(author_login)
            return self._comment_json(self._store_comment(repo, number, author_login, body))

    def comments(self, repo_full_name: str, number: int) -> list[dict]:
        """All comments of an issue or PR, oldest first, as the API renders them."""
        with self._lock:
            repo = self._repo_or_fail(repo_full_name)
            return [
                self._comment_json(c)
                for c in sorted(self._comments.values(), key=lambda c: c.id)
                if c.repo == repo.full_name and c.number == number
            ]

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        process: bool = False,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` instead.

        ``method`` is an HTTP method or "*"; ``path_regex`` is searched (``re.search``) in the
        request path without the query string, prefix included. ``body`` defaults to
        ``{"message": <reason phrase>}``. With ``process=True`` the request is carried out
        first and only its answer is replaced: a gateway that times out after the backend
        committed, the case that makes blind POST retries post duplicates.
        """
        if body is None:
            body = {"message": http.HTTPStatus(status).phrase}
        with self._lock:
            self._faults.append(
                Fault(
                    method.upper(),
                    re.compile(path_regex),
                    status,
                    times,
                    dict(headers or {}),
                    body,
                    process,
                )
            )

    def gate(self, method: str, path_regex: str, parties: int = 2, timeout: float = 10.0) -> None:
        """Hold the next ``parties`` matching requests until all of them have arrived, then
        let them through together: two clients that both read before either writes, the
        interleaving a race needs, on demand rather than by luck. Used once."""
        with self._lock:
            self._gates.append(
                [method.upper(), re.compile(path_regex), threading.Barrier(parties), timeout, 0]
            )

    def _wait_at_gate(self, method: str, path: str) -> None:
        with self._lock:
            gate = next(
                (g for g in self._gates if g[0] in ("*", method) and g[1].search(path)), None
            )
            if gate is not None:
                gate[4] += 1
            if gate is not None and gate[4] >= gate[2].parties:
                self._gates.remove(gate)  # the last party: the gate opens and is gone
        if gate is not None:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate[2].wait(gate[3])

    def count(self, method: str, path_regex: str = "") -> int:
        """How many logged requests have ``method`` and a path matching ``path_regex``."""
        return len(self.requests_matching(method, path_regex))

    def requests_matching(self, method: str, path_regex: str = "") -> list[RecordedRequest]:
        """Logged requests with ``method`` ("*" for any) whose path matches ``path_regex``."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method == "*" or r.method == method.upper()) and re.search(path_regex, r.path)
            ]

    # -- state internals -------------------------------------------------------------------

    def _take(self, kind: str) -> int:
        value = self._next[kind]
        self._next[kind] += 1
        return value

    def _ensure_repo(self, full_name: str) -> Repo:
        owner, sep, name = full_name.partition("/")
        if not sep or not owner or not name or "/" in name:
            raise ValueError(f"repository must be 'owner/name', not {full_name!r}")
        with self._lock:
            key = full_name.lower()
            if key not in self._repos:
                self._repos[key] = Repo(owner, name, self._take("repo"))
            return self._repos[key]

    def _repo_or_fail(self, full_name: str) -> Repo:
        repo = self._repos.get(full_name.lower())
        if repo is None:
            raise KeyError(f"unknown repository {full_name!r}; add_pr() or add_repo() it first")
        return repo

    def _add_issue(self, full_name: str, number: int, title: str | None, is_pr: bool) -> dict:
        with self._lock:
            repo = self._ensure_repo(full_name)
            kind = "pull request" if is_pr else "issue"
            issue = Issue(
                number,
                self._take("issue"),
                title or f"Test {kind} {number}",
                repo.owner,
                is_pr,
                _now(),
            )
            repo.issues[number] = issue
            return self._issue_json(repo, issue)

    def _store_comment(self, repo: Repo, number: int, author: str, body: str) -> Comment:
        stamp = _now()
        comment = Comment(self._take("comment"), repo.full_name, number, author, body, stamp, stamp)
        self._comments[comment.id] = comment
        return comment

    # -- JSON shapes (fields as GitHub sends them; PyGithub reads these names) ----------------

    def _user_json(self, user: User) -> dict:
        api, login = self.api_url, quote(user.login)
        if user.type == "Bot":
            html = f"{self.origin}/apps/{user.login.removesuffix('[bot]')}"
        else:
            html = f"{self.origin}/{user.login}"
        return {
            "login": user.login,
            "id": user.id,
            "node_id": _node_id("U_kgDO" if user.type == "User" else "BOT_kgDO", user.id),
            "avatar_url": f"{self.origin}/avatars/u/{user.id}?v=4",
            "gravatar_id": "",
            "url": f"{api}/users/{login}",
            "html_url": html,
            "followers_url": f"{api}/users/{login}/followers",
            "repos_url": f"{api}/users/{login}/repos",
            "type": user.type,
            "user_view_type": "public",
            "site_admin": False,
        }

    def _repo_json(self, repo: Repo) -> dict:
        owner = self._users.get(repo.owner) or User(repo.owner, 1, None, "read", False)
        base = f"{self.api_url}/repos/{repo.full_name}"
        return {
            "id": repo.id,
            "node_id": _node_id("R_kgDO", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": False,
            "owner": self._user_json(owner),
            "html_url": f"{self.origin}/{repo.full_name}",
            "description": None,
            "fork": False,
            "url": base,
            "issue_comment_url": f"{base}/issues/comments{{/number}}",
            "issues_url": f"{base}/issues{{/number}}",
            "pulls_url": f"{base}/pulls{{/number}}",
            "default_branch": "main",
            "visibility": "public",
            "has_issues": True,
            "archived": False,
        }

    def _issue_json(self, repo: Repo, issue: Issue) -> dict:
        base = f"{self.api_url}/repos/{repo.full_name}"
        kind = "pull" if issue.is_pr else "issues"
        author = self._users.get(issue.author) or User(issue.author, 1, None, "read", False)
        data = {
            "url": f"{base}/issues/{issue.number}",
            "repository_url": base,
            "comments_url": f"{base}/issues/{issue.number}/comments",
            "html_url": f"{self.origin}/{repo.full_name}/{kind}/{issue.number}",
            "id": issue.id,
            "node_id": _node_id("PR_kwDO" if issue.is_pr else "I_kwDO", issue.id),
            "number": issue.number,
            "title": issue.title,
            "user": self._user_json(author),
            "state": "open",
            "locked": False,
            "comments": sum(
                1
                for c in self._comments.values()
                if c.repo == repo.full_name and c.number == issue.number
            ),
            "created_at": issue.created_at,
            "updated_at": issue.created_at,
            "closed_at": None,
            "author_association": "OWNER",
            "body": None,
        }
        if issue.is_pr:
            data["pull_request"] = {
                "url": f"{base}/pulls/{issue.number}",
                "html_url": f"{self.origin}/{repo.full_name}/pull/{issue.number}",
                "diff_url": f"{self.origin}/{repo.full_name}/pull/{issue.number}.diff",
                "patch_url": f"{self.origin}/{repo.full_name}/pull/{issue.number}.patch",
                "merged_at": None,
            }
        return data

    def _pull_json(self, repo: Repo, issue: Issue) -> dict:
        data = self._issue_json(repo, issue)
        data.pop("pull_request")
        base = f"{self.api_url}/repos/{repo.full_name}"
        data.update(
            {
                "url": f"{base}/pulls/{issue.number}",
                "issue_url": f"{base}/issues/{issue.number}",
                "comments_url": f"{base}/issues/{issue.number}/comments",
                "review_comments_url": f"{base}/pulls/{issue.number}/comments",
                "merged": False,
                "draft": False,
                "head": {"ref": "feature", "sha": "0" * 40, "label": f"{repo.owner}:feature"},
                "base": {"ref": "main", "sha": "1" * 40, "label": f"{repo.owner}:main"},
            }
        )
        return data

    def _comment_json(self, comment: Comment) -> dict:
        repo = self._repos[comment.repo.lower()]
        issue = repo.issues[comment.number]
        author = self._users[comment.author]
        base = f"{self.api_url}/repos/{comment.repo}"
        kind = "pull" if issue.is_pr else "issues"
        url = f"{base}/issues/comments/{comment.id}"
        return {
            "url": url,
            "html_url": f"{self.origin}/{comment.repo}/{kind}/{comment.number}"
            f"#issuecomment-{comment.id}",
            "issue_url": f"{base}/issues/{comment.number}",
            "id": comment.id,
            "node_id": _node_id("IC_kwDO", comment.id),
            "user": self._user_json(author),
            "created_at": comment.created_at,
            "updated_at": comment.updated_at,
            "author_association": "NONE" if author.type == "Bot" else "COLLABORATOR",
            "body": comment.body,
            "reactions": {
                "url": f"{url}/reactions",
                "total_count": 0,
                **dict.fromkeys(
                    ("+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes"), 0
                ),
            },
            "performed_via_github_app": ACTIONS_APP if author.installation else None,
        }

    # -- request handling ------------------------------------------------------------------

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.method in ("*", method) and fault.pattern.search(path):
                    fault.times -= 1
                    return fault
        return None

    def _authenticate(self, header: str | None) -> User | None:
        """The user behind an Authorization header; None for anonymous; 401 for a bad token."""
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        login = self._tokens.get(token.strip()) if scheme.lower() in ("token", "bearer") else None
        if login is None:
            raise _Reply(401, _error("Bad credentials", status=401))
        return self._users[login]

    def handle(
        self, method: str, path: str, query: dict[str, str], auth: str | None, raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Answer one request: (status, JSON body or None, extra headers)."""
        try:
            if self.prefix and not (path == self.prefix or path.startswith(self.prefix + "/")):
                raise _Reply(404, _error("Not Found", status=404))
            route = path[len(self.prefix) :] or "/"
            user = self._authenticate(auth)
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise _Reply(400, _error("Problems parsing JSON", status=400)) from None
            with self._lock:
                return self._route(method, route, query, user, body)
        except _Reply as reply:
            return reply.status, reply.body, reply.headers

    def _route(
        self, method: str, route: str, query: dict[str, str], user: User | None, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if route == "/user" and method == "GET":
            return self._get_user(user)
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", route)
        if match:
            repo = self._repos.get(f"{match[1]}/{match[2]}".lower())
            rest = match[3] or ""
        else:
            # GitHub's Link headers point at /repositories/{id}/...; clients must follow them.
            match = re.fullmatch(r"/repositories/(\d+)(/.*)?", route)
            if not match:
                raise _Reply(404, _error("Not Found", status=404))
            repo = next((r for r in self._repos.values() if r.id == int(match[1])), None)
            rest = match[2] or ""
        if repo is None:
            raise _Reply(404, _error("Not Found", f"{DOCS}/repos/repos#get-a-repository", 404))

        if rest == "" and method == "GET":
            return 200, self._repo_json(repo), {}
        if m := re.fullmatch(r"/(issues|pulls)/(\d+)", rest):
            issue = repo.issues.get(int(m[2]))
            if method != "GET" or issue is None or (m[1] == "pulls" and not issue.is_pr):
                raise _Reply(404, _error("Not Found", f"{DOCS}/issues/issues#get-an-issue", 404))
            shape = self._pull_json if m[1] == "pulls" else self._issue_json
            return 200, shape(repo, issue), {}
        if m := re.fullmatch(r"/issues/(\d+)/comments", rest):
            issue = repo.issues.get(int(m[1]))
            if issue is None:
                raise _Reply(404, _error("Not Found", f"{DOCS}/issues/comments", 404))
            if method == "GET":
                return self._list_comments(repo, issue, query, route)
            if method == "POST":
                author = self._require_write(user, "issues/comments#create-an-issue-comment")
                text = self._body_text(body)
                comment = self._store_comment(repo, issue.number, author.login, text)
                data = self._comment_json(comment)
                return 201, data, {"Location": data["url"]}
        if m := re.fullmatch(r"/issues/comments/(\d+)", rest):
            comment = self._comments.get(int(m[1]))
            if comment is None or comment.repo != repo.full_name:
                raise _Reply(404, _error("Not Found", f"{DOCS}/issues/comments", 404))
            if method == "GET":
                return 200, self._comment_json(comment), {}
            if method == "PATCH":
                # Real GitHub: anyone with write access may edit any comment.
                self._require_write(user, "issues/comments#update-an-issue-comment")
                comment.body = self._body_text(body)
                comment.updated_at = _now()
                return 200, self._comment_json(comment), {}
            if method == "DELETE":
                self._require_write(user, "issues/comments#delete-an-issue-comment")
                del self._comments[comment.id]
                return 204, None, {}
        raise _Reply(404, _error("Not Found", status=404))

    def _get_user(self, user: User | None) -> tuple[int, Any, dict[str, str]]:
        doc = f"{DOCS}/users/users#get-the-authenticated-user"
        if user is None:
            raise _Reply(401, _error("Requires authentication", doc, 401))
        if user.installation:
            # What the Actions GITHUB_TOKEN (an App installation token) gets from GET /user.
            raise _Reply(403, _error("Resource not accessible by integration", doc, 403))
        data = self._user_json(user)
        data.update({"name": user.login.title(), "email": None, "public_repos": 1})
        return 200, data, {"X-OAuth-Scopes": "repo" if user.permission == "write" else ""}

    def _require_write(self, user: User | None, doc: str) -> User:
        if user is None:
            raise _Reply(401, _error("Requires authentication", f"{DOCS}/{doc}", 401))
        if user.permission != "write":
            raise _Reply(
                403, _error("Resource not accessible by integration", f"{DOCS}/{doc}", 403)
            )
        return user

    @staticmethod
    def _body_text(body: Any) -> str:
        doc = f"{DOCS}/issues/comments"
        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
            raise _Reply(422, _error('Invalid request.\n\n"body" wasn\'t supplied.', doc, 422))
        text = body["body"]
        if len(text) > MAX_BODY:
            raise _Reply(
                422,
                _error(
                    "Validation Failed",
                    doc,
                    422,
                    errors=[
                        {
                            "resource": "IssueComment",
                            "code": "custom",
                            "field": "body",
                            "message": f"body is too long (maximum is {MAX_BODY} characters)",
                        }
                    ],
                ),
            )
        return text

    def _list_comments(
        self, repo: Repo, issue: Issue, query: dict[str, str], route: str
    ) -> tuple[int, Any, dict[str, str]]:
        items = sorted(
            (c for c in self._comments.values() if c.repo == repo.full_name),
            key=lambda c: c.id,
        )
        items = [c for c in items if c.number == issue.number]
        if "since" in query:
            items = [c for c in items if c.updated_at >= query["since"]]
        try:
            per_page = min(max(int(query.get("per_page", 30)), 1), 100)
            page = max(int(query.get("page", 1)), 1)
        except ValueError:
            raise _Reply(422, _error("Invalid per_page or page", status=422)) from None
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max((len(items) + per_page - 1) // per_page, 1)
        # Link URLs: GitHub rewrites them to /repositories/{id}/..., keeping the other params.
        link_path = f"{self.api_url}/repositories/{repo.id}/issues/{issue.number}/comments"
        params = {k: v for k, v in query.items() if k != "page"}
        params["per_page"] = str(per_page)

        def link(target: int, rel: str) -> str:
            return f'<{link_path}?{urlencode({**params, "page": target})}>; rel="{rel}"'

        links = []
        if page > 1:
            links.append(link(page - 1, "prev"))
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links.append(link(1, "first"))
        headers = {"Link": ", ".join(links)} if links else {}
        return 200, [self._comment_json(c) for c in chunk], headers


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 front end (keep-alive, as requests' connection pool expects)."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's
    # delayed ACK (~40 ms a request on loopback).
    disable_nagle_algorithm = True
    server_version = "GitHub.com"
    sys_version = ""
    github: GitHubServer  # set on the subclass made by GitHubServer.start()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the request log is GitHubServer.requests

    def _serve(self) -> None:
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = dict(self.headers.items())
        for key in list(headers):
            if key.lower() == "authorization":
                scheme = headers[key].partition(" ")[0]
                headers[key] = f"{scheme} <redacted>"
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        record = RecordedRequest(self.command, split.path, query, headers, parsed)
        with self.github._lock:
            self.github.requests.append(record)

        self.github._wait_at_gate(self.command, split.path)
        fault = self.github._fault_for(self.command, split.path)
        if fault is None or fault.process:
            status, body, extra = self.github.handle(
                self.command, split.path, query, self.headers.get("Authorization"), raw
            )
        if fault is not None:
            status, body, extra = fault.status, fault.body, fault.headers
        record.status = status
        self._send(status, body, extra)

    def _send(self, status: int, body: Any, extra: dict[str, str]) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Length": str(len(payload)),
            "X-GitHub-Media-Type": "github.v3; format=json",
            "X-GitHub-Api-Version-Selected": "2022-11-28",
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "4999",
            "X-RateLimit-Reset": str(int(time.time()) + 3600),
            "X-RateLimit-Used": "1",
            "X-RateLimit-Resource": "core",
            "X-GitHub-Request-Id": f"TEST:{id(self):X}",
        }
        if not payload:
            del headers["Content-Type"]
        # Injected or route headers replace the defaults (case-insensitively), never duplicate.
        for key, value in extra.items():
            for existing in [k for k in headers if k.lower() == key.lower()]:
                del headers[existing]
            headers[key] = value
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve


@pytest.fixture
def github_server() -> Iterator[GitHubServer]:
    """A running :class:`GitHubServer` with the API at the root (like api.github.com)."""
    with GitHubServer() as server:
        yield server


@pytest.fixture
def github_enterprise_server() -> Iterator[GitHubServer]:
    """A running :class:`GitHubServer` with the API under ``/api/v3`` (GitHub Enterprise)."""
    with GitHubServer(prefix="/api/v3") as server:
        yield server
