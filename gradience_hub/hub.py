"""The Hugging Face Hub: the only module that imports huggingface_hub.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` itself (the first
two at import), so nothing here re-implements them. Every Hub exception is turned into a
:class:`~gradience_hub.errors.HubError` (exit 3) with the Hub's reason by :func:`hub_errors`,
one table in one place. The import is deferred to the functions so that auditing a local
directory never pays for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Translate huggingface_hub and network exceptions into :class:`HubError`.

    Order matters: GatedRepoError subclasses RepositoryNotFoundError, and the *NotFound errors
    subclass HfHubHTTPError.
    """
    from huggingface_hub import errors as hf_errors

    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
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
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled) as exc:
        raise HubError(
            f"{at} is not in the local cache and the Hub cannot be reached: {_reason(exc)}",
            hint="unset HF_HUB_OFFLINE or download the adapter once while online",
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
    """A downloaded adapter snapshot: local directory and the commit sha it came from."""

    path: Path
    repo_id: str
    revision: str | None
    sha: str


def download_adapter(
    repo_id: str, revision: str | None = None, adapter_name: str | None = None
) -> Download:
    """Download only an adapter's files from the Hub at ``revision`` (default branch if None).

    The revision is resolved to a commit sha first, so the files and the reported sha are
    guaranteed to match even when the branch moves during the download.
    """
    from huggingface_hub import HfApi, constants, snapshot_download

    patterns = list(ADAPTER_FILES)
    if adapter_name and adapter_name != "default":
        patterns = [f"{adapter_name}/{name}" for name in ADAPTER_FILES]
    elif adapter_name is None:
        patterns += [f"*/{name}" for name in ADAPTER_FILES if name != "README.md"]
    with hub_errors(repo_id, revision):
        if constants.HF_HUB_OFFLINE:
            path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
            return Download(path=path, repo_id=repo_id, revision=revision, sha=path.name)
        info = HfApi().model_info(repo_id, revision=revision)
        sha = info.sha or (revision or "")
        path = Path(snapshot_download(repo_id, revision=sha, allow_patterns=patterns))
    return Download(path=path, repo_id=repo_id, revision=revision, sha=sha)
