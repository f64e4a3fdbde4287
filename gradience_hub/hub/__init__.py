"""The Hugging Face Hub: the only module that imports huggingface_hub.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` itself (the first
two at import), so nothing here re-implements them. Every Hub exception is turned into a
:class:`~gradience_hub.errors.HubError` (exit 3) with the Hub's reason by :func:`hub_errors`,
one table in one place. The import is deferred to the functions so that auditing a local
directory never pays for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import logging
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradience_hub.errors import HubError

# What snapshot_download fetches: an adapter's files only, never a base model's shards.
ADAPTER_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "README.md",
)


def _reason(exc: BaseException) -> str:
    """The Hub's own message, first line, without the client's request-id boilerplate."""
    server_message = getattr(exc, "server_message", None)
    text = str(server_message or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _QuietClient(logging.Filter):
    """Drop huggingface_hub's WARNING chatter ("No files have been modified since last
    commit", "Repo card metadata block was not found") while our calls run: each case is
    handled and reported by us in our own words, and third-party lines on stderr read as
    problems to a user. Installed per call, never at import, and removed afterwards."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING


@contextlib.contextmanager
def quiet_client() -> Iterator[None]:
    """Silence huggingface_hub warnings for the duration of the block (see _QuietClient)."""
    hf_logger = logging.getLogger("huggingface_hub")
    quiet = _QuietClient()
    handlers = list(hf_logger.handlers)
    hf_logger.addFilter(quiet)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        hf_logger.removeFilter(quiet)
        for handler in handlers:
            handler.removeFilter(quiet)


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Translate huggingface_hub and network exceptions into :class:`HubError`, with the
    client's warnings kept off stderr (:func:`quiet_client`).

    Order matters: GatedRepoError subclasses RepositoryNotFoundError, and the *NotFound errors
    subclass HfHubHTTPError.
    """
    from huggingface_hub import errors as hf_errors

    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
        with quiet_client():
            yield
    except hf_errors.GatedRepoError as exc:
        raise HubError(
            f"{repo_id} is gated: {_reason(exc)}",
            hint="accept the conditions on the Hub and set HF_TOKEN to a token of that account",
            status=403,
        ) from None
    except hf_errors.RepositoryNotFoundError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise HubError(
            f"repository {repo_id} not found on the Hub, or private ({status or 404})",
            hint="check the repo id (a local directory of that name does not exist either); for a "
            "private repo set HF_TOKEN",
            status=status or 404,
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise HubError(
            f"revision '{revision}' not found in {repo_id}",
            hint="use a branch, tag or commit sha that exists in the repo",
            status=404,
        ) from None
    except hf_errors.RemoteEntryNotFoundError as exc:
        raise HubError(f"file not found in {at}: {_reason(exc)}", status=404) from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled) as exc:
        # snapshot_download also raises LocalEntryNotFoundError when the Hub answers 5xx/429 to
        # its first call: it is "could not get it", not "it does not exist".
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise HubError(
                f"{at} is not in the local cache and HF_HUB_OFFLINE is set",
                hint="unset HF_HUB_OFFLINE or download the adapter once while online",
            ) from None
        raise HubError(
            f"the Hub did not deliver {at}: {_reason(exc)}",
            hint="the Hub or the network failed; retry later, or check HF_ENDPOINT",
        ) from None
    except hf_errors.EntryNotFoundError as exc:
        raise HubError(f"file not found in {at}: {_reason(exc)}", status=404) from None
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = None
        if status in (401, 403):
            hint = "set HF_TOKEN to a token with write access to this repo"
        raise HubError(
            f"the Hub answered {status} for {at}: {_reason(exc)}", hint=hint, status=status
        ) from None
    except (OSError, ConnectionError) as exc:
        raise HubError(
            f"cannot reach the Hub for {at}: {_reason(exc)}",
            hint="check the network, HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache",
        ) from None
    except Exception as exc:
        # httpx2 transport errors do not subclass OSError; match them by module, not import,
        # because the transport library is an implementation detail of huggingface_hub.
        if type(exc).__module__.split(".")[0].startswith("httpx"):
            raise HubError(
                f"cannot reach the Hub for {at}: {_reason(exc)}",
                hint="check the network and HF_ENDPOINT",
            ) from None
        raise


@dataclass(frozen=True)
class Download:
    """A downloaded adapter snapshot: local directory (None when the repo's listing holds no
    adapter file, so nothing was downloaded), the commit sha it came from, and what choosing
    its LoRA file skipped or left unprobed (warnings for the report)."""

    path: Path | None
    repo_id: str
    revision: str | None
    sha: str
    warnings: tuple[str, ...] = ()


def download_adapter(
    repo_id: str, revision: str | None = None, adapter_name: str | None = None
) -> Download:
    """Download only an adapter's files from the Hub at ``revision`` (default branch if None).

    The revision is resolved to a commit sha first, so the files and the reported sha are
    guaranteed to match even when the branch moves during the download.
    """
    from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    patterns = list(ADAPTER_FILES)
    if adapter_name and adapter_name != "default":
        patterns = [f"{adapter_name}/{name}" for name in ADAPTER_FILES]
    elif adapter_name is None:
        patterns += [f"*/{name}" for name in ADAPTER_FILES if name != "README.md"]
    with hub_errors(repo_id, revision):
        token = _token()
        if constants.HF_HUB_OFFLINE:
            cached = Path(
                snapshot_download(repo_id, revision=revision, allow_patterns=patterns, token=token)
            )
            return Download(path=cached, repo_id=repo_id, revision=revision, sha=cached.name)
        api = HfApi(token=token)
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
        sha = info.sha or (revision or "")
        files = {s.rfilename: s.size for s in info.siblings or []}
        warnings: list[str] = []
        lora = None
        if adapter_name is None and not any(f.endswith(ADAPTER_FILES[0]) for f in files):
            lora = _lora_file(api, repo_id, sha, files, warnings)
        wanted = [
            f for f in filter_repo_objects(files, allow_patterns=patterns) if f != "README.md"
        ]
        path: Path | None = None  # no adapter file in the listing: nothing worth downloading
        if lora is not None:
            # a kohya/diffusers LoRA repo: that one file and the card, by name. Not through
            # snapshot_download, which pages through the whole tree listing (a request per
            # thousand files) to match its patterns; the listing above already named them.
            for name in [n for n in ("README.md", lora) if n in files]:
                local = hf_hub_download(repo_id, name, revision=sha, token=token)
            path = Path(local).parent  # the snapshot folder of ``sha``: both are top level
        elif wanted:
            path = Path(
                snapshot_download(repo_id, revision=sha, allow_patterns=patterns, token=token)
            )
    return Download(
        path=path, repo_id=repo_id, revision=revision, sha=sha, warnings=tuple(warnings)
    )


# A LoRA file is a few MB to ~1.5 GB (SDXL at rank 256 in fp32); base models are larger, and
# their files have these names (diffusers' components, transformers' shards). Below the minimum
# a file cannot hold one pair of named factors (8-byte length + a header naming two tensors).
MAX_LORA_FILE_BYTES = 2 * 1024**3
MIN_LORA_FILE_BYTES = 64
_BASE_MODEL_FILE = re.compile(
    r"(^|/)(diffusion_pytorch_model|model)([.-].*)?\.safetensors$|-of-\d+\.safetensors$"
)
# Header reads (Range requests) per repo: each is a request to the Hub, a webhook push repeats
# them, and the Hub answers 429 long before thousands. Files named like a LoRA are read first.
MAX_HEADER_PROBES = 8
PREFERRED_LORA_FILE = "pytorch_lora_weights.safetensors"
_LORA_NAME = re.compile(r"lora", re.IGNORECASE)


def lora_file_candidates(files: dict[str, int | None]) -> list[str]:
    """The files of a listing (path -> size) that may be a kohya/diffusers LoRA file, in the
    order to probe them: top-level ``*.safetensors`` between :data:`MIN_LORA_FILE_BYTES` and
    :data:`MAX_LORA_FILE_BYTES` that are not base-model files,
    ``pytorch_lora_weights.safetensors`` first, then names containing "lora", then the rest,
    each by name."""
    names = sorted(
        f
        for f, size in files.items()
        if f.endswith(".safetensors")
        and "/" not in f
        and not _BASE_MODEL_FILE.search(f)
        and (size is None or MIN_LORA_FILE_BYTES <= size <= MAX_LORA_FILE_BYTES)
    )
    return sorted(names, key=lambda f: (f != PREFERRED_LORA_FILE, not _LORA_NAME.search(f), f))


def _lora_file(
    api: Any, repo_id: str, sha: str, files: dict[str, int | None], warnings: list[str]
) -> str | None:
    """The LoRA weight file of a repo without adapter_config.json, chosen from its file listing
    (:func:`lora_file_candidates`): ``pytorch_lora_weights.safetensors`` by name, the others
    when their header's tensor names are kohya or diffusers LoRA keys, read with a Range
    request (the weights of a file that is not chosen are never downloaded), at most
    :data:`MAX_HEADER_PROBES` of them. A file whose header cannot be parsed is skipped with a
    warning in ``warnings``: a file we only sniff never fails the run."""
    from huggingface_hub.errors import SafetensorsParsingError

    from gradience_hub.adapter.lorafile import is_lora_file

    candidates = lora_file_candidates(files)
    if candidates and candidates[0] == PREFERRED_LORA_FILE:
        return PREFERRED_LORA_FILE
    for name in candidates[:MAX_HEADER_PROBES]:
        try:
            header = api.parse_safetensors_file_metadata(repo_id, name, revision=sha)
            tensor_names = [str(key) for key in header.tensors]
        # huggingface_hub turns only KeyError/IndexError/bad JSON into SafetensorsParsingError;
        # a header that is valid JSON of another shape ({"x": 1}, a list, null, non-list
        # data_offsets) fails in its dataclasses with TypeError/AttributeError, an integer past
        # Python's digit limit with ValueError, deep nesting with RecursionError. HTTP errors
        # are not among these: they are the Hub failing, reported as such (exit 3).
        except (
            SafetensorsParsingError,
            TypeError,
            ValueError,
            AttributeError,
            RecursionError,
        ) as exc:
            warnings.append(f"skipped {name}: its safetensors header cannot be read ({_why(exc)})")
            continue
        if is_lora_file(tensor_names):
            return name
    unprobed = len(candidates) - MAX_HEADER_PROBES
    if unprobed > 0:
        warnings.append(
            f"{unprobed} of {len(candidates)} .safetensors files were not probed: at most "
            f"{MAX_HEADER_PROBES} headers are read per repo, names containing 'lora' first; "
            "download the LoRA file and audit it as a local path"
        )
    return None


def _why(exc: BaseException) -> str:
    """A header parse failure in a few words, without the client's repo/revision context."""
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    if isinstance(exc, (TypeError, AttributeError)):
        return "it is JSON, but its entries are not tensor descriptions"
    # "Failed to parse safetensors header for 'f' (repo 'r', revision 's'): header is not ..."
    text = _reason(exc).split("): ", 1)[-1]
    return text.split(". ", 1)[0][:160]


# --------------------------------------------------------------------------- publishing

PR_TITLE_PREFIX = "Gradience audit"


_TOKEN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gradience_hf_token", default=None
)


@contextlib.contextmanager
def using_token(token: str | None) -> Iterator[None]:
    """Pass ``token`` to every Hub call made inside the block (``token=`` on each call).

    The Action gets its token as an input; exporting it as ``HF_TOKEN`` would change the
    process for everything else in it. Without a token (None or empty) huggingface_hub's own
    lookup (HF_TOKEN, the saved login) applies.
    """
    reset = _TOKEN.set(token or None)
    try:
        yield
    finally:
        _TOKEN.reset(reset)


def _token() -> str | None:
    return _TOKEN.get()


def token() -> str | None:
    """The token Hub calls send now: :func:`using_token`'s, else HF_TOKEN or the saved login
    (huggingface_hub's lookup). For scrubbing output and for handing to a Job as a secret;
    never for printing."""
    from huggingface_hub import get_token

    return _token() or get_token()


def _api() -> Any:
    """A fresh HfApi: constants (HF_ENDPOINT) are read when the client is built, not here.

    It carries the token of :func:`using_token`, when one is set.
    """
    from huggingface_hub import HfApi

    return HfApi(token=_token())


def whoami() -> str:
    """The user name of the token (HF_TOKEN or the cached login)."""
    with hub_errors("whoami"):
        try:
            return str(_api().whoami()["name"])
        except Exception as exc:
            from huggingface_hub import errors as hf_errors

            if isinstance(exc, (hf_errors.LocalTokenNotFoundError,)) or (
                isinstance(exc, hf_errors.HfHubHTTPError)
                and getattr(exc.response, "status_code", None) == 401
            ):
                raise HubError(
                    "no valid Hugging Face token: publishing needs one",
                    hint="set HF_TOKEN to a token with write access to the repo",
                    status=401,
                ) from None
            raise


def resolve_sha(repo_id: str, revision: str | None = None) -> str:
    """The commit sha that ``revision`` (default: the main branch) points to now."""
    with hub_errors(repo_id, revision):
        info = _api().model_info(repo_id, revision=revision)
    if not info.sha:
        raise HubError(f"the Hub did not report a commit for {repo_id}@{revision or 'main'}")
    return str(info.sha)


def read_bytes(repo_id: str, path: str, revision: str) -> bytes | None:
    """A file of the repo at ``revision``, as bytes, or None when the file does not exist.

    Bytes, not text: the caller decides what an undecodable file means (README.md is bad
    input; a published gradience/*.json we would replace anyway is simply unreadable).
    """
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    with hub_errors(repo_id, revision):
        try:
            local = hf_hub_download(repo_id, path, revision=revision, token=_token())
        except hf_errors.RemoteEntryNotFoundError:
            return None
    return Path(local).read_bytes()


def read_text(repo_id: str, path: str, revision: str) -> str | None:
    """A UTF-8 text file of the repo at ``revision`` (line endings kept), or None when absent.

    Raises UnicodeDecodeError for a file that is not UTF-8; callers that must tell bad
    bytes apart use :func:`read_bytes`.
    """
    data = read_bytes(repo_id, path, revision)
    return None if data is None else data.decode("utf-8")


@dataclass(frozen=True)
class HubPR:
    """One of our open Hub pull requests."""

    num: int
    url: str
    ref: str  # refs/pr/N


def list_open_prs(repo_id: str, author: str) -> list[HubPR]:
    """Our open PRs (same author, title starting with PR_TITLE_PREFIX), oldest first."""
    found: list[HubPR] = []
    with hub_errors(repo_id):
        for disc in _api().get_repo_discussions(
            repo_id, author=author, discussion_type="pull_request", discussion_status="open"
        ):
            # the author filter is the server's; check again so a Hub that ignores it cannot
            # make us commit into somebody else's PR
            if disc.author == author and disc.title.startswith(PR_TITLE_PREFIX):
                found.append(HubPR(num=disc.num, url=disc.url, ref=f"refs/pr/{disc.num}"))
    return sorted(found, key=lambda pr: pr.num)


def find_open_pr(repo_id: str, author: str) -> HubPR | None:
    """Our oldest open PR, or None. The oldest, so that runs racing to open one all end up
    committing to the same PR (see :func:`close_pr` for the duplicates)."""
    prs = list_open_prs(repo_id, author)
    return prs[0] if prs else None


def close_pr(repo_id: str, num: int, comment: str) -> None:
    """Close our Hub PR ``num`` with ``comment`` (a duplicate another run opened first)."""
    with hub_errors(repo_id):
        _api().change_discussion_status(repo_id, num, "closed", comment=comment)


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
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _classify(exc: BaseException) -> BaseException:
    """Map a commit failure to ParentMoved / Transient, or leave it for hub_errors."""
    from huggingface_hub import errors as hf_errors

    if isinstance(exc, hf_errors.HfHubHTTPError):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status == 412:
            return ParentMoved(_reason(exc))
        if status == 429 or (status is not None and status >= 500):
            headers = getattr(response, "headers", None) or {}
            retry_after = parse_retry_after(headers.get("Retry-After"))
            return Transient(
                f"the Hub answered {status}: {_reason(exc)}", retry_after, status != 429
            )
        return exc
    if type(exc).__module__.split(".")[0].startswith("httpx") or isinstance(exc, ConnectionError):
        return Transient(f"connection to the Hub failed: {_reason(exc)}")
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
            info = _api().create_commit(repo_id, operations, **kwargs)
        except Exception as exc:
            mapped = _classify(exc)
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


def upsert_comment(repo_id: str, num: int, body: str, marker: str, me: str) -> str:
    """Post ``body`` on Hub discussion/PR ``num``, or edit our earlier comment there.

    Ours = authored by ``me``, not hidden, containing ``marker``; other people's comments are
    never edited. Returns the discussion URL with the comment anchor.
    """
    from huggingface_hub.community import DiscussionComment

    api = _api()
    with hub_errors(repo_id):
        details = api.get_discussion_details(repo_id, num)
        for event in details.events:
            if (
                isinstance(event, DiscussionComment)
                and event.author == me
                and not event.hidden
                and marker in event.content
            ):
                if event.content != body:
                    api.edit_discussion_comment(repo_id, num, event.id, body)
                return f"{details.url}#{event.id}"
        comment = api.comment_discussion(repo_id, num, body)
    return f"{details.url}#{comment.id}"


def repo_url(repo_id: str) -> str:
    """The repo's web URL on the configured endpoint (HF_ENDPOINT)."""
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/{repo_id}"


# --------------------------------------------------------------------------- webhooks (serve)


def repo_files(repo_id: str, revision: str) -> list[str]:
    """Every file path of the repo at ``revision`` (the listing, no download)."""
    with hub_errors(repo_id, revision):
        info = _api().model_info(repo_id, revision=revision)
    return [s.rfilename for s in (info.siblings or [])]


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


@dataclass(frozen=True)
class Webhook:
    """A Hub webhook as ``webhook list`` shows it (never its secret)."""

    id: str
    url: str | None
    watched: tuple[tuple[str, str], ...]  # (type, name): ("org", "my-org"), ("model", "o/n")
    domains: tuple[str, ...]
    disabled: bool
    has_secret: bool


def _webhook(info: Any) -> Webhook:
    return Webhook(
        id=str(info.id),
        url=info.url,
        watched=tuple((w.type, w.name) for w in info.watched),
        domains=tuple(info.domains or ()),
        disabled=bool(info.disabled),
        has_secret=bool(info.secret),
    )


def create_webhook(
    url: str,
    watched: list[tuple[str, str]],
    secret: str | None,
    domains: tuple[str, ...] = ("repo",),
) -> Webhook:
    """Register a webhook (``HfApi.create_webhook``) that POSTs the Hub's events to ``url``."""
    from huggingface_hub import WebhookWatchedItem

    items = [WebhookWatchedItem(type=t, name=n) for t, n in watched]  # type: ignore[arg-type]
    with hub_errors("webhooks"):
        info = _api().create_webhook(url=url, watched=items, domains=list(domains), secret=secret)
    return _webhook(info)


def list_webhooks() -> list[Webhook]:
    """The token owner's webhooks."""
    with hub_errors("webhooks"):
        return [_webhook(info) for info in _api().list_webhooks()]


def delete_webhook(webhook_id: str) -> None:
    """Delete one of the token owner's webhooks."""
    with hub_errors(f"webhook {webhook_id}"):
        _api().delete_webhook(webhook_id)


# --------------------------------------------------------------------------- Jobs and scratch


@dataclass(frozen=True)
class JobRef:
    """A Hugging Face Job as the bench sees it: id, web URL, stage (SCHEDULING, RUNNING,
    COMPLETED, ERROR, CANCELED, DELETED), the Hub's message, labels."""

    id: str
    namespace: str
    url: str
    stage: str
    message: str | None
    labels: dict[str, str]

    @property
    def finished(self) -> bool:
        """The job has reached a terminal stage and will not run further."""
        return self.stage in ("COMPLETED", "ERROR", "CANCELED", "DELETED")


def _job_ref(info: Any, namespace: str) -> JobRef:
    stage = getattr(info.status.stage, "value", info.status.stage)
    return JobRef(
        id=str(info.id),
        namespace=namespace,
        url=str(info.url),
        stage=str(stage),
        message=info.status.message,
        labels=dict(info.labels or {}),
    )


def run_job(
    image: str,
    command: list[str],
    *,
    namespace: str,
    flavor: str,
    env: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    timeout: int | None = None,
    labels: dict[str, str] | None = None,
) -> JobRef:
    """Start a Job (``HfApi.run_job``). ``secrets`` reach the container as environment
    variables and are never shown back; put tokens there, never in ``env`` or ``command``."""
    with hub_errors(f"jobs/{namespace}"):
        info = _api().run_job(
            image=image,
            command=command,
            env=env,
            secrets=secrets,
            flavor=flavor,
            timeout=timeout,
            labels=labels,
            namespace=namespace,
        )
    return _job_ref(info, namespace)


def inspect_job(job_id: str, namespace: str) -> JobRef:
    """The job's current stage (``HfApi.inspect_job``)."""
    with hub_errors(f"jobs/{namespace}/{job_id}"):
        return _job_ref(_api().inspect_job(job_id=job_id, namespace=namespace), namespace)


def list_jobs(namespace: str, labels: dict[str, str] | None = None) -> list[JobRef]:
    """The namespace's jobs carrying every label in ``labels`` (``HfApi.list_jobs``)."""
    with hub_errors(f"jobs/{namespace}"):
        return [
            _job_ref(info, namespace)
            for info in _api().list_jobs(labels=labels, namespace=namespace)
        ]


def job_logs(job_id: str, namespace: str) -> list[str]:
    """The job's log lines so far (``HfApi.fetch_job_logs`` without following)."""
    with hub_errors(f"jobs/{namespace}/{job_id}"):
        return list(_api().fetch_job_logs(job_id=job_id, namespace=namespace, follow=False))


def cancel_job(job_id: str, namespace: str) -> None:
    """Cancel a job (``HfApi.cancel_job``); a job that has already ended stays as it is."""
    with hub_errors(f"jobs/{namespace}/{job_id}"):
        _api().cancel_job(job_id=job_id, namespace=namespace)


def create_scratch_repo(repo_id: str) -> None:
    """Create the private model repo ``repo_id`` (kept when it exists) for a bench's inputs
    and results."""
    with hub_errors(repo_id):
        _api().create_repo(repo_id, private=True, exist_ok=True)


def upload_files(repo_id: str, files: dict[str, bytes], message: str) -> str:
    """Commit ``files`` to the main branch of ``repo_id`` in one commit; returns its sha."""
    from huggingface_hub import CommitOperationAdd

    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=b) for p, b in files.items()]
    with hub_errors(repo_id):
        info = _api().create_commit(repo_id, operations, commit_message=message)
    return str(info.oid)


def download_files(repo_id: str, revision: str, patterns: list[str], local_dir: Path) -> Path:
    """Download the files of ``repo_id``@``revision`` matching ``patterns`` into
    ``local_dir`` (their repo paths kept)."""
    from huggingface_hub import snapshot_download

    with hub_errors(repo_id, revision):
        snapshot_download(
            repo_id, revision=revision, allow_patterns=patterns, local_dir=str(local_dir)
        )
    return local_dir
