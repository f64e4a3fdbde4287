"""SOURCE: a local directory or a Hub repo id at a revision, opened as an :class:`Adapter`.

Hub sources are downloaded by :mod:`gradience_hub.hub` (the only module that imports
huggingface_hub) and then read like any local directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradience_hub.adapter.config import CONFIG_NAME, SAFETENSORS_NAME
from gradience_hub.errors import AdapterError


@dataclass(frozen=True)
class SourceSpec:
    """What the user named: a local directory, or a Hub repo id at an optional revision."""

    raw: str
    local_path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        """True for a local directory SOURCE."""
        return self.local_path is not None


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_source(source: str, revision: str | None = None) -> SourceSpec:
    """Parse ``org/name``, ``org/name@rev`` or a local directory; an existing path wins.

    A PEFT weights file (``adapter_model.safetensors``) with ``adapter_config.json`` beside it
    stands for its directory. A SOURCE that looks like a path (:func:`looks_like_path`) and does
    not exist is a missing local path (exit 2), never a Hub id.
    """
    if not source:
        raise AdapterError(
            "no SOURCE given", hint="pass a local adapter directory or a Hub id org/name"
        )
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir() and path.suffix != ".safetensors":
            raise AdapterError(
                f"{source} is a file, not an adapter directory or a .safetensors LoRA file",
                hint="pass the directory that holds adapter_config.json, or a LoRA file",
            )
        if path.name == SAFETENSORS_NAME and (path.parent / CONFIG_NAME).is_file():
            path = path.parent  # the PEFT weights file: audit its adapter, config and all
        return SourceSpec(raw=source, local_path=path.resolve(), revision=revision)
    repo, _, at_rev = source.partition("@")
    if looks_like_path(source):
        hint = _missing_path_hint(path)
        if _REPO_ID.match(repo) and not source.startswith((".", "/", "~")):
            hint += f" (for the Hub repo {repo}, run from a directory without {path.parts[0]}/)"
        raise AdapterError(f"no such local directory or file: {source}", hint=hint)
    if at_rev and revision and at_rev != revision:
        raise AdapterError(
            f"two revisions given: '@{at_rev}' in SOURCE and --revision {revision}",
            hint="give the revision once",
        )
    if _REPO_ID.match(repo) and ".." not in repo:
        return SourceSpec(raw=source, repo_id=repo, revision=at_rev or revision)
    raise AdapterError(
        f"no such local directory or file: {source}",
        hint="pass an existing adapter directory, or a Hub repo id like org/name[@revision]",
    )


def looks_like_path(source: str) -> bool:
    """True when SOURCE names a local path rather than a Hub id: it starts with ``.``, ``/`` or
    ``~``, its part before ``@`` holds more than one ``/``, or its first component exists here."""
    repo = source.partition("@")[0]
    if source.startswith((".", "/", "~")) or repo.count("/") > 1 or "\\" in repo:
        return True
    first = Path(source).parts[0] if Path(source).parts else ""
    return "/" in source and bool(first) and Path(first).exists()


def _missing_path_hint(path: Path) -> str:
    """Name the deepest part of ``path`` that exists (``demo-output/ exists but has no x``)."""
    parts = path.parts
    for i in range(len(parts) - 1, 0, -1):
        head = Path(*parts[:i])
        if head.is_dir():
            shown = str(head).rstrip("/") + "/"
            return f"{shown} exists but has no {parts[i]}"
        if head.exists():
            return f"{head} is a file, not a directory"
    return "check the path (a Hub id is org/name[@revision])"


@dataclass(frozen=True)
class SourceInfo:
    """Where an opened adapter came from, as recorded in audit.json's ``source``."""

    kind: str  # "local" | "hub"
    path: str
    repo_id: str | None = None
    revision: str | None = None
    sha: str | None = None
    adapter_name: str | None = None
    # what opening it skipped (a Hub file whose header could not be read, files left unprobed):
    # warnings for the report, not part of audit.json's source
    warnings: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        """``org/name @ 3f2a1c9`` for the Hub, the directory for local sources."""
        if self.kind == "hub":
            return f"{self.repo_id} @ {(self.sha or self.revision or 'main')[:7]}"
        return self.path

    def to_dict(self) -> dict[str, Any]:
        """JSON form (audit.json ``source``)."""
        return {
            "kind": self.kind,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "sha": self.sha,
            "path": self.path if self.kind == "local" else None,
            "adapter_name": self.adapter_name,
            "display": self.display,
        }
