"""Webhooks for the Hub stand-in (tests/hubserver.py): management routes and deliveries.

Management, as `HfApi.create_webhook` and friends call it (huggingface_hub 2.4.0, `hf_api.py`):
`POST /api/settings/webhooks` `{watched: [{type, name}], domains, url, secret?}` -> `{webhook}`;
`GET /api/settings/webhooks` -> a JSON list; `GET|POST|DELETE /api/settings/webhooks/{id}`
(get, update, delete) and `POST .../{id}/enable|disable` -> `{webhook}`. A webhook belongs to
the token's user; every route needs a token (401), changes need a write token (403).

Deliveries, as the Hub sends them (payload version 3, `_webhooks_payload.py`): after every
commit that moves a branch or a `refs/pr/N` ref, each enabled webhook whose `watched` covers
the repo (user/org = its namespace, model = its id) and whose `domains` has "repo" gets
`{event: {action: "update", scope: "repo.content"}, repo: {type, name, id, private, headSha,
url: {web, api}, owner: {id}}, updatedRefs: [{ref, oldSha, newSha}], webhook: {id, version: 3}}`
POSTed with `X-Webhook-Secret`; a new pull request also sends a `discussion` create event to
webhooks with the "discussion" domain. Commits to our own PR therefore fire webhooks, as on the
Hub. Deliveries are made by one background thread, in order, never while the hub lock is held
(the receiver may call the Hub back); `deliveries` records each answer; `wait_idle()` waits
until the queue is drained.

The stand-in calls `commit_made(repo, oid)` under its lock right after a commit is made; that
only builds the payloads and queues them.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

DOMAINS = ("repo", "discussion")
WATCH_TYPES = ("user", "org", "model", "dataset", "space")


@dataclass
class Webhook:
    """A registered webhook."""

    id: str
    owner: str
    url: str
    watched: list[dict[str, str]]
    domains: list[str]
    secret: str | None
    disabled: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "watched": [dict(w) for w in self.watched],
            "domains": list(self.domains),
            "secret": self.secret,
            "disabled": self.disabled,
            "job": None,
        }

    def covers(self, repo_id: str) -> bool:
        namespace = repo_id.split("/")[0]
        for item in self.watched:
            if item["type"] in ("user", "org") and item["name"] == namespace:
                return True
            if item["type"] == "model" and item["name"] == repo_id:
                return True
        return False


@dataclass
class Delivery:
    """One POST to a webhook URL and what came back (status None: no answer)."""

    webhook_id: str
    url: str
    payload: dict[str, Any]
    status: int | None = None
    body: bytes = b""
    error: str | None = None
    sent_at: float = field(default_factory=time.time)


class HubWebhooks:
    """The webhook state of one HubServer (``hub.webhooks``)."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.hooks: dict[str, Webhook] = {}
        self.deliveries: list[Delivery] = []
        self.timeout = 10.0
        self._outbox: queue.Queue[tuple[Webhook, dict[str, Any]] | None] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._counter = 0
        self._lock = threading.RLock()  # the hooks table; the hub's lock guards repo state

    # -- seeding and inspection -------------------------------------------------------------

    def add(
        self,
        owner: str,
        url: str,
        watched: list[dict[str, str]],
        secret: str | None = None,
        domains: list[str] | None = None,
    ) -> Webhook:
        """Register a webhook directly (as if created in the Hub's settings page)."""
        with self._lock:
            self._counter += 1
            hook_id = hashlib.sha1(f"webhook {self._counter}".encode()).hexdigest()[:24]
            hook = Webhook(hook_id, owner, url, watched, list(domains or DOMAINS), secret)
            self.hooks[hook_id] = hook
            return hook

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until every queued delivery was made (TimeoutError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self._pending} webhook deliveries still pending")
                self._cond.wait(left)

    def delivered(self, repo_id: str | None = None) -> list[Delivery]:
        """Deliveries made so far (for ``repo_id`` only, when given)."""
        with self._cond:
            items = list(self.deliveries)
        return [d for d in items if repo_id is None or d.payload["repo"]["name"] == repo_id]

    def stop(self) -> None:
        """Stop the delivery thread (pending deliveries are dropped)."""
        if self._thread is not None:
            self._outbox.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    # -- the hook the stand-in calls (hub lock held) ----------------------------------------

    def commit_made(self, repo: Any, oid: str) -> None:
        """Queue the payloads for commit ``oid`` of ``repo`` (the stand-in's repo object)."""
        refs = [f"refs/heads/{b}" for b, sha in repo.branches.items() if sha == oid]
        new_prs = []
        for disc in repo.discussions.values():
            if disc.is_pull_request and disc.head == oid:
                refs.append(disc.ref)
                if len(disc.commit_events()) == 1:
                    new_prs.append(disc)
        parents = repo.commits[oid].parents
        old = parents[0] if parents else None
        with self._lock:
            hooks = [h for h in self.hooks.values() if not h.disabled and h.covers(repo.repo_id)]
        for hook in hooks:
            if "repo" in hook.domains and refs:
                payload = self._payload(hook, repo, "update", "repo.content")
                payload["updatedRefs"] = [{"ref": r, "oldSha": old, "newSha": oid} for r in refs]
                self._send(hook, payload)
            if "discussion" in hook.domains:
                for disc in new_prs:
                    payload = self._payload(hook, repo, "create", "discussion")
                    payload["discussion"] = self._discussion(repo, disc)
                    self._send(hook, payload)

    def _payload(self, hook: Webhook, repo: Any, action: str, scope: str) -> dict[str, Any]:
        base = self.hub.url
        repo_hash = hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24]
        owner_hash = hashlib.sha1(repo.owner.encode()).hexdigest()[:24]
        return {
            "event": {"action": action, "scope": scope},
            "repo": {
                "type": "model",
                "name": repo.repo_id,
                "id": repo_hash,
                "private": repo.private,
                "headSha": repo.branches.get("main"),
                "url": {
                    "web": f"{base}/{repo.repo_id}",
                    "api": f"{base}/api/models/{repo.repo_id}",
                },
                "owner": {"id": owner_hash},
            },
            "webhook": {"id": hook.id, "version": 3},
        }

    def _discussion(self, repo: Any, disc: Any) -> dict[str, Any]:
        base = self.hub.url
        return {
            "id": hashlib.sha1(f"{repo.repo_id}#{disc.num}".encode()).hexdigest()[:24],
            "num": disc.num,
            "author": {"id": hashlib.sha1(disc.author.encode()).hexdigest()[:24]},
            "title": disc.title,
            "isPullRequest": disc.is_pull_request,
            "status": disc.status,
            "url": {
                "web": f"{base}/{repo.repo_id}/discussions/{disc.num}",
                "api": f"{base}/api/models/{repo.repo_id}/discussions/{disc.num}",
            },
            "changes": {"base": f"refs/heads/{disc.base_branch}"},
        }

    def _send(self, hook: Webhook, payload: dict[str, Any]) -> None:
        with self._cond:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._deliver_loop, daemon=True, name="hubserver-webhooks"
                )
                self._thread.start()
        self._outbox.put((hook, payload))

    def _deliver_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            hook, payload = item
            delivery = Delivery(hook.id, hook.url, payload)
            headers = {"Content-Type": "application/json", "User-Agent": "hubserver-webhooks"}
            if hook.secret is not None:
                headers["X-Webhook-Secret"] = hook.secret
            request = urllib.request.Request(
                hook.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    delivery.status, delivery.body = response.status, response.read()
            except urllib.error.HTTPError as exc:
                delivery.status, delivery.body = exc.code, exc.read()
            except OSError as exc:
                delivery.error = f"{type(exc).__name__}: {exc}"
            with self._cond:
                self.deliveries.append(delivery)
                self._pending -= 1
                self._cond.notify_all()

    # -- the routes (hub lock held) ------------------------------------------------------------

    def route(self, method: str, rest: list[str], ctx: Any) -> Any:
        """`/api/settings/webhooks[/{id}[/enable|disable]]`; the JSON to answer."""
        from tests.hubserver import HubError

        user = ctx.user
        if user is None:
            raise HubError(401, "You must be authenticated to manage webhooks")
        if not rest:
            if method == "GET":
                return [h.to_json() for h in self.hooks.values() if h.owner == user.name]
            if method == "POST":
                self._require_write(user)
                body = self._validated(ctx.json(), creating=True)
                hook = self.add(
                    user.name, body["url"], body["watched"], body.get("secret"), body["domains"]
                )
                ctx.mutated = True
                return {"webhook": hook.to_json()}
            raise HubError(405, "Method not allowed")
        hook = self.hooks.get(rest[0])
        if hook is None or hook.owner != user.name:
            raise HubError(404, "Webhook not found")
        if len(rest) == 1 and method == "GET":
            return {"webhook": hook.to_json()}
        self._require_write(user)
        ctx.mutated = True
        if len(rest) == 1 and method == "DELETE":
            del self.hooks[hook.id]
            return {}
        if len(rest) == 1 and method == "POST":
            body = self._validated(ctx.json(), creating=False)
            hook.url = body.get("url", hook.url)
            hook.watched = body.get("watched") or hook.watched
            hook.domains = body.get("domains", hook.domains)
            hook.secret = body.get("secret", hook.secret)
            return {"webhook": hook.to_json()}
        if len(rest) == 2 and method == "POST" and rest[1] in ("enable", "disable"):
            hook.disabled = rest[1] == "disable"
            return {"webhook": hook.to_json()}
        ctx.mutated = False
        raise HubError(404, "Not found")

    @staticmethod
    def _require_write(user: Any) -> None:
        from tests.hubserver import HubError

        if not user.write:
            raise HubError(403, "You don't have the rights to manage webhooks: read-only token")

    @staticmethod
    def _validated(body: Any, creating: bool) -> dict[str, Any]:
        from tests.hubserver import HubError

        if not isinstance(body, dict):
            raise HubError(400, "Invalid JSON body")
        if creating or body.get("watched"):
            watched = body.get("watched")
            if not isinstance(watched, list) or not watched:
                raise HubError(400, "watched must be a non-empty list")
            for item in watched:
                if not isinstance(item, dict) or item.get("type") not in WATCH_TYPES:
                    raise HubError(400, f"Invalid watched item {item!r}")
                if not isinstance(item.get("name"), str) or not item["name"]:
                    raise HubError(400, f"Invalid watched item {item!r}")
        if creating:
            if "jobSourceId" in body:
                raise HubError(400, "Job webhooks are not supported by the test server")
            url = body.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise HubError(400, "url must be an http(s) URL")
            domains = body.get("domains")
            if not isinstance(domains, list) or not domains or set(domains) - set(DOMAINS):
                raise HubError(400, f"domains must be a non-empty subset of {list(DOMAINS)}")
        return body
