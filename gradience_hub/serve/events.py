"""Which Hub webhook events become jobs: the payload (version 3) read as raw JSON, one rule.

huggingface_hub's pydantic ``WebhookPayload`` names the repo's head ``head_sha`` without an
alias, so it reads None for the Hub's ``headSha``; this module reads the JSON itself and
needs no pydantic.

An event is queued when it is a ``repo.content`` update of a model repo whose ``updatedRefs``
include the watched branch and whose repo matches a config rule. Everything else is
acknowledged and ignored with a reason: discussions and comments, ``refs/pr/N`` updates (the
commits we push to our own Hub PR fire these), other branches, tags, datasets and spaces.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gradience_hub.serve.config import ServeConfig

# The Hub's repo ids: namespace/name, no path tricks (a name is also never a local path for us).
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9_.][A-Za-z0-9_.-]{0,95}$")
SHA = re.compile(r"^[0-9a-f]{40}$")
NULL_SHA = "0" * 40


class PayloadError(ValueError):
    """The body is not a webhook payload we can act on (HTTP 400 with this reason)."""


@dataclass(frozen=True)
class Decision:
    """What to do with one event: ``queue`` it (repo at sha) or ``ignore`` it (reason)."""

    action: str  # "queue" | "ignore"
    reason: str
    repo: str | None = None
    sha: str | None = None
    ref: str | None = None
    webhook_id: str | None = None
    old_sha: str | None = None  # the ref's previous commit (orders late deliveries)

    @property
    def queued(self) -> bool:
        """True when the event becomes a job."""
        return self.action == "queue"


def parse_payload(body: bytes | str) -> Any:
    """The body parsed as JSON; PayloadError (bad input) for anything that is not JSON we can
    read: malformed text, bytes that are not UTF-8, or nesting deeper than the parser goes.

    Every way a parse can fail on hostile input is bad input, never an internal error: the
    parser gives up on deep nesting (``[`` repeated 100,000 times fits in the 1 MB body limit)
    with RecursionError, which is no ValueError.
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise PayloadError("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise PayloadError(f"malformed JSON: {exc}") from None


def _field(obj: Any, path: str) -> Any:
    """``obj[a][b]`` for path ``a.b``; PayloadError naming the path when it is missing."""
    current = obj
    walked = []
    for part in path.split("."):
        walked.append(part)
        if not isinstance(current, dict) or part not in current:
            raise PayloadError(f"the payload has no {'.'.join(walked)}")
        current = current[part]
    return current


def _text(obj: Any, path: str) -> str:
    value = _field(obj, path)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{path} must be a non-empty string")
    return value


def _ignore(reason: str, repo: str | None = None, webhook_id: str | None = None) -> Decision:
    return Decision("ignore", reason, repo=repo, webhook_id=webhook_id)


def route_event(payload: Any, config: ServeConfig) -> Decision:
    """Queue or ignore one parsed payload; PayloadError when required fields are missing."""
    if not isinstance(payload, dict):
        raise PayloadError("the payload must be a JSON object")
    action, scope = _text(payload, "event.action"), _text(payload, "event.scope")
    repo_type, repo = _text(payload, "repo.type"), _text(payload, "repo.name")
    hook = payload.get("webhook")
    webhook_id = hook.get("id") if isinstance(hook, dict) else None
    webhook_id = webhook_id if isinstance(webhook_id, str) else None
    if scope != "repo.content":
        return _ignore(f"event {scope}.{action} is not a push", repo, webhook_id)
    if action != "update":
        return _ignore(f"repo.content action {action} is not a push", repo, webhook_id)
    if repo_type != "model":
        return _ignore(f"{repo_type} repos are not audited (models only)", repo, webhook_id)
    if not REPO_ID.match(repo) or ".." in repo:
        raise PayloadError("repo.name is not a Hub repo id (namespace/name)")
    refs = payload.get("updatedRefs")
    if refs is None:
        return _ignore("the payload has no updatedRefs", repo, webhook_id)
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise PayloadError("updatedRefs must be a list of {ref, oldSha, newSha} objects")
    watched = config.watch.ref
    for i, item in enumerate(refs):
        if item.get("ref") != watched:
            continue
        sha = item.get("newSha")
        if sha is None or sha == NULL_SHA:
            return _ignore(f"{watched} was deleted", repo, webhook_id)
        if not isinstance(sha, str) or not SHA.match(sha):
            raise PayloadError(f"updatedRefs[{i}].newSha is not a commit sha")
        if config.rule_for(repo) is None:
            return _ignore("the repo matches no rule of the config", repo, webhook_id)
        old = item.get("oldSha")
        old = old if isinstance(old, str) and SHA.match(old) and old != NULL_SHA else None
        return Decision("queue", "push to the watched branch", repo, sha, watched, webhook_id, old)
    names = [str(r.get("ref")) for r in refs]
    if names and all(n.startswith("refs/pr/") for n in names):
        return _ignore(f"{', '.join(names)}: a pull request update", repo, webhook_id)
    shown = ", ".join(names) or "no refs"
    return _ignore(f"{shown}: not the watched branch {watched}", repo, webhook_id)
