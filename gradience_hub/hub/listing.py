"""The Hub side of ``scan``: listings, lean downloads and the dataset push.

Part of the Hub layer, the only importer of huggingface_hub, for :mod:`gradience_hub.scan`. A
scan reads thousands of repos, so each costs as few requests as possible: one model
info call (``blobs=true``: the file listing with sizes, the commit sha and the card's
``base_model``), then one plain GET per file the audit reads, pinned to that sha. Not
``snapshot_download``/``hf_hub_download``: they add a model-info call, a tree listing and a HEAD
per file, and they fill the shared HF cache with every adapter of an org. Every request goes
through huggingface_hub's ``http_backoff``/``http_stream_backoff``, which wait out a 429 for its
``Retry-After`` (or the ``RateLimit`` header) and retry 5xx and dropped connections.

Failures of one repo become a :class:`Skip` (a kind and a reason, recorded in the dataset);
only a failed listing or push is a :class:`~gradience_hub.errors.HubError` (exit 3).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gradience_hub.errors import HubError

# Retries of one request (429, 5xx, dropped connection) before the repo is recorded as a Hub
# failure; each 429 waits its Retry-After, so a rate-limited scan slows down instead of failing.
MAX_RETRIES = 5
# The Range read of a safetensors header: the client's own first guess (get_safetensors_metadata)
HEADER_PROBE_BYTES = 100_000
# A header longer than this is not an adapter's (a LoRA of 10k tensors has a ~1 MB header).
MAX_HEADER_BYTES = 25_000_000
_CHUNK = 1 << 20

# What a skipped repo is recorded as. Transient kinds are redone by --resume; the others are
# facts about the repo and are kept.
TRANSIENT_KINDS = frozenset({"hub-error"})


class Skip(Exception):
    """A repo (or one adapter of it) that is recorded instead of audited: ``kind`` is one of
    ``not-an-adapter``, ``gated``, ``private``, ``not-found``, ``disabled``, ``too-large``,
    ``broken``, ``hub-error``; ``reason`` says why in a line."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason

    @property
    def transient(self) -> bool:
        """True when a later run may succeed (the Hub failed), so --resume redoes it."""
        return self.kind in TRANSIENT_KINDS


@dataclass(frozen=True)
class Listed:
    """One repo of a listing: its id and what the listing said about it."""

    repo_id: str
    sha: str | None = None
    private: bool = False
    gated: bool = False


@dataclass(frozen=True)
class RepoInfo:
    """A repo at one commit: its files (path -> size in bytes) and the card's base model."""

    repo_id: str
    sha: str
    files: Mapping[str, int | None] = field(default_factory=dict)
    base_model: str | None = None
    gated: bool = False
    private: bool = False


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def _headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The client's headers (user agent, the token from HF_TOKEN or the saved login)."""
    from huggingface_hub.utils import build_hf_headers

    headers = dict(build_hf_headers())
    headers.update(extra or {})
    return headers


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "server_message", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _skip_for(exc: BaseException, repo_id: str) -> Skip:
    """The Skip a failed request of ``repo_id`` stands for (one table, most specific first:
    GatedRepoError subclasses RepositoryNotFoundError, which subclasses HfHubHTTPError)."""
    from huggingface_hub import errors as hf

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, hf.GatedRepoError):
        return Skip("gated", f"gated: accept its conditions on the Hub to audit it ({status})")
    if isinstance(exc, hf.RepositoryNotFoundError):
        if status == 401:
            return Skip("private", "private or missing; set HF_TOKEN to a token that can read it")
        return Skip("not-found", f"not found, or private to another account ({status})")
    if isinstance(exc, hf.HfHubHTTPError):
        message = _first_line(exc)
        if status == 403 and "disabled" in message.lower():
            return Skip("disabled", "disabled on the Hub")
        return Skip("hub-error", f"the Hub answered {status}: {message}")
    return Skip("hub-error", f"cannot reach the Hub: {_first_line(exc)}")


def _get(url: str, repo_id: str, *, params: Mapping[str, str] | None = None, **headers: str) -> Any:
    """One GET with the client's backoff; a failure is the repo's :class:`Skip`."""
    from huggingface_hub.utils import hf_raise_for_status, http_backoff

    try:
        response = http_backoff(
            "GET", url, headers=_headers(headers), params=params, max_retries=MAX_RETRIES
        )
        hf_raise_for_status(response)
    except Exception as exc:
        raise _skip_for(exc, repo_id) from None
    return response


def list_repos(
    *,
    author: str | None = None,
    search: str | None = None,
    filters: tuple[str, ...] = (),
    limit: int | None = None,
) -> Iterator[Listed]:
    """The model repos matching the query, lazily: huggingface_hub's ``list_models`` follows
    the ``Link: rel="next"`` pages as they are consumed, so a Hub-wide listing is never held."""
    from huggingface_hub import HfApi

    what = " ".join(
        x
        for x in (
            f"author={author}" if author else "",
            f"search={search}" if search else "",
            *(f"filter={f}" for f in filters),
        )
        if x
    )
    items = HfApi(endpoint=_endpoint()).list_models(
        author=author, search=search, filter=list(filters) or None, limit=limit
    )
    try:
        for item in items:
            yield Listed(
                repo_id=item.id,
                sha=item.sha,
                private=bool(item.private),
                gated=bool(item.gated),
            )
    except Exception as exc:
        skip = _skip_for(exc, what)
        raise HubError(
            f"listing the Hub's models ({what}) failed: {skip.reason}",
            hint="retry later with --resume: finished repos are kept",
        ) from None


def repo_info(repo_id: str, revision: str | None = None) -> RepoInfo:
    """The repo's files with sizes, its commit sha and the card's ``base_model`` (one request,
    what ``HfApi.model_info(files_metadata=True)`` sends)."""
    url = f"{_endpoint()}/api/models/{repo_id}"
    if revision:
        url += f"/revision/{quote(revision, safe='')}"
    data = _get(url, repo_id, params={"blobs": "true"}).json()
    files = {
        str(s["rfilename"]): (s.get("size") if isinstance(s.get("size"), int) else None)
        for s in data.get("siblings") or []
        if isinstance(s, dict) and isinstance(s.get("rfilename"), str)
    }
    card = data.get("cardData") if isinstance(data.get("cardData"), dict) else {}
    base = card.get("base_model")
    if isinstance(base, list):
        base = base[0] if base and isinstance(base[0], str) else None
    return RepoInfo(
        repo_id=repo_id,
        sha=str(data.get("sha") or revision or ""),
        files=files,
        base_model=base if isinstance(base, str) else None,
        gated=bool(data.get("gated")),
        private=bool(data.get("private")),
    )


def _file_url(repo_id: str, sha: str, path: str) -> str:
    return f"{_endpoint()}/{repo_id}/resolve/{sha}/{quote(path)}"


def download(info: RepoInfo, paths: list[str], dest: Path) -> int:
    """Stream ``paths`` of ``info`` at its sha into ``dest`` (one GET each); returns the bytes.

    A file is written to a ``.part`` name and renamed when complete, so a killed scan never
    leaves a truncated file that a later read would take for the whole one.
    """
    from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff

    total = 0
    for path in paths:
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        url = _file_url(info.repo_id, info.sha, path)
        try:
            with http_stream_backoff(
                "GET", url, headers=_headers(), max_retries=MAX_RETRIES
            ) as response:
                hf_raise_for_status(response)
                with part.open("wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)
                        total += len(chunk)
        except Exception as exc:
            part.unlink(missing_ok=True)
            raise _skip_for(exc, info.repo_id) from None
        part.replace(target)
    return total


def header_tensor_names(info: RepoInfo, path: str) -> list[str] | None:
    """The tensor names in the safetensors header of ``path``, read by Range (one request, two
    for a header past 100 kB); None when the bytes are not a safetensors header."""
    url = _file_url(info.repo_id, info.sha, path)
    head = _get(url, info.repo_id, Range=f"bytes=0-{HEADER_PROBE_BYTES - 1}").content
    if len(head) < 8:
        return None
    (length,) = struct.unpack("<Q", head[:8])
    if length > MAX_HEADER_BYTES:
        return None
    if 8 + length > len(head):
        head = head[:8] + _get(url, info.repo_id, Range=f"bytes=8-{length + 7}").content
    try:
        header = json.loads(head[8 : 8 + length])
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    return [str(k) for k in header if k != "__metadata__"]


def push_dataset(repo_id: str, files: Mapping[str, Path], message: str) -> str:
    """Create the dataset repo if needed and commit ``files`` (repo path -> local file) in one
    commit on main; returns the commit URL. Unchanged files are dropped by the client (a
    re-run with the same results makes no commit)."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub import errors as hf

    api = HfApi(endpoint=_endpoint())
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        info = api.create_commit(
            repo_id,
            [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in files.items()],
            commit_message=message,
            repo_type="dataset",
        )
    except hf.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = "set HF_TOKEN to a token with write access" if status in (401, 403) else None
        raise HubError(
            f"pushing the dataset to {repo_id} failed ({status}): {_first_line(exc)}",
            hint=hint or "the results are written locally; retry the push later",
            status=status,
        ) from None
    except (OSError, ConnectionError) as exc:
        raise HubError(f"cannot reach the Hub to push {repo_id}: {_first_line(exc)}") from None
    return str(info.commit_url)
