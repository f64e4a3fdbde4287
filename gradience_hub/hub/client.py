"""The client side every Hub call shares: the token, a fresh ``HfApi``, the one table that turns
huggingface_hub's exceptions into :class:`~gradience_hub.errors.HubError` (exit 3), and reads of
a repo (its sha, a file, its listing).

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` itself (the first
two at import), so nothing here re-implements them. The import is deferred to the functions so
that auditing a local directory never pays for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gradience_hub.errors import HubError


def reason(exc: BaseException) -> str:
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
            f"{repo_id} is gated: {reason(exc)}",
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
        raise HubError(f"file not found in {at}: {reason(exc)}", status=404) from None
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
            f"the Hub did not deliver {at}: {reason(exc)}",
            hint="the Hub or the network failed; retry later, or check HF_ENDPOINT",
        ) from None
    except hf_errors.EntryNotFoundError as exc:
        raise HubError(f"file not found in {at}: {reason(exc)}", status=404) from None
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = None
        if status in (401, 403):
            hint = "set HF_TOKEN to a token with write access to this repo"
        raise HubError(
            f"the Hub answered {status} for {at}: {reason(exc)}", hint=hint, status=status
        ) from None
    except (OSError, ConnectionError) as exc:
        raise HubError(
            f"cannot reach the Hub for {at}: {reason(exc)}",
            hint="check the network, HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache",
        ) from None
    except Exception as exc:
        # httpx2 transport errors do not subclass OSError; match them by module, not import,
        # because the transport library is an implementation detail of huggingface_hub.
        if type(exc).__module__.split(".")[0].startswith("httpx"):
            raise HubError(
                f"cannot reach the Hub for {at}: {reason(exc)}",
                hint="check the network and HF_ENDPOINT",
            ) from None
        raise


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


def passed_token() -> str | None:
    """The token of :func:`using_token`, or None: then every call leaves the lookup (HF_TOKEN,
    the saved login) to huggingface_hub, which does it per request."""
    return _TOKEN.get()


def token() -> str | None:
    """The token Hub calls send now: :func:`using_token`'s, else HF_TOKEN or the saved login
    (huggingface_hub's lookup). For scrubbing output and for handing to a Job as a secret;
    never for printing."""
    from huggingface_hub import get_token

    return passed_token() or get_token()


def api() -> Any:
    """A fresh HfApi: constants (HF_ENDPOINT) are read when the client is built, not here.

    It carries the token of :func:`using_token`, when one is set.
    """
    from huggingface_hub import HfApi

    return HfApi(token=passed_token())


def whoami() -> str:
    """The user name of the token (HF_TOKEN or the cached login)."""
    with hub_errors("whoami"):
        try:
            return str(api().whoami()["name"])
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
        info = api().model_info(repo_id, revision=revision)
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
            local = hf_hub_download(repo_id, path, revision=revision, token=passed_token())
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


def repo_url(repo_id: str) -> str:
    """The repo's web URL on the configured endpoint (HF_ENDPOINT)."""
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/{repo_id}"


def repo_files(repo_id: str, revision: str) -> list[str]:
    """Every file path of the repo at ``revision`` (the listing, no download)."""
    with hub_errors(repo_id, revision):
        info = api().model_info(repo_id, revision=revision)
    return [s.rfilename for s in (info.siblings or [])]
