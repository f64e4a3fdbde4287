"""SOURCE: a local directory or a Hub repo id at a revision, opened as an :class:`Adapter`.

Hub sources are downloaded by :mod:`gradience_hub.hub` (the only module that imports
huggingface_hub) and then read like any local directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """Parse ``org/name``, ``org/name@rev`` or a local directory; an existing path wins."""
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
        return SourceSpec(raw=source, local_path=path.resolve(), revision=revision)
    repo, _, at_rev = source.partition("@")
    if at_rev and revision and at_rev != revision:
        raise AdapterError(
            f"two revisions given: '@{at_rev}' in SOURCE and --revision {revision}",
            hint="give the revision once",
        )
    if _REPO_ID.match(repo) and ".." not in repo:
        return SourceSpec(raw=source, repo_id=repo, revision=at_rev or revision)
    raise AdapterError(
        f"directory not found: {source}",
        hint="pass an existing adapter directory, or a Hub repo id like org/name[@revision]",
    )


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
