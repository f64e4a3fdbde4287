"""Which adapter a record measured: the adapter content hash, and the check that a bench.json
published beside an audit belongs to that audit's adapter.

The hash (``adapter.content_sha256`` in bench.json, ``source.content_sha256`` in audit.json)
is defined here and only here. It is the SHA-256 of three lines of text::

    gradience-adapter/v1
    <sha256 hex of adapter_config.json's bytes, or "-" for a LoRA file without one>
    <sha256 hex of the weights file's bytes>

so it names the bytes a bench read, whatever the files are called, and anyone can recompute
it with coreutils::

    printf 'gradience-adapter/v1\\n%s\\n%s\\n' \\
        "$(sha256sum adapter_config.json | cut -c1-64)" \\
        "$(sha256sum adapter_model.safetensors | cut -c1-64)" | sha256sum

A record that names another hash than the audited adapter's is refused
(:class:`~gradience_hub.errors.RecordMismatch`, exit 2, naming both). A record without one
(gradience 0.11's, ours before the hash, a retrain record whose adapters were trained from its
config) cannot be checked: it is accepted with a warning that says so, shown on the card.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gradience_hub.errors import RecordMismatch

HASH_KEY = "content_sha256"
"""The key of the hash in bench.json's ``adapter`` and audit.json's ``source``."""
HASH_VERSION = "gradience-adapter/v1"
HASH_RE = re.compile(r"^[0-9a-f]{64}$")
CONFIG_FILE = "adapter_config.json"
# The beginning every warning of this module shares (so a re-read record gets it once).
UNCHECKED = "gradience-hub could not check that this bench record measured this adapter"


def file_sha256(path: Path) -> str:
    """SHA-256 hex of a file's bytes, read in 1 MiB chunks (weights can be gigabytes)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(config: Path | None, weights: Path) -> str:
    """The adapter content hash (see the module docstring) of ``config``
    (adapter_config.json; None for a kohya/diffusers LoRA file) and ``weights``."""
    lines = [HASH_VERSION, file_sha256(config) if config is not None else "-", file_sha256(weights)]
    return hashlib.sha256(("\n".join(lines) + "\n").encode("ascii")).hexdigest()


def adapter_content_sha256(adapter: Any) -> str:
    """The content hash of an opened :class:`~gradience_hub.adapter.Adapter`: its
    adapter_config.json (PEFT) and its weights file."""
    config = Path(adapter.directory) / CONFIG_FILE if adapter.format == "peft" else None
    return content_sha256(config, Path(adapter.weights_path))


# --------------------------------------------------------------------------- the link


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _hash(value: Any) -> str | None:
    return value if isinstance(value, str) and HASH_RE.match(value) else None


def record_names(bench: Mapping[str, Any]) -> str:
    """The adapter a bench.json names, in words: ``source @ rev7 (sha256 0123abcd...)``."""
    adapter = _mapping(bench.get("adapter"))
    source = adapter.get("source")
    if source and source == adapter.get("base_model"):
        # gradience 0.11's records only knew the base model: never call it the adapter
        text = f"an adapter of {source}"
    else:
        text = str(source or "an unnamed adapter")
    revision = adapter.get("revision")
    if isinstance(revision, str) and revision:
        text += f" @ {revision[:7] if re.fullmatch(r'[0-9a-f]{40}', revision) else revision}"
    digest = _hash(adapter.get(HASH_KEY))
    return text + (f" (sha256 {digest[:12]})" if digest else "")


def audit_names(audit: Mapping[str, Any]) -> str:
    """The adapter an audit.json describes, in words: ``org/name @ rev7 (sha256 ...)``."""
    source = _mapping(audit.get("source"))
    text = str(source.get("display") or source.get("repo_id") or source.get("path") or "?")
    digest = _hash(source.get(HASH_KEY))
    return text + (f" (sha256 {digest[:12]})" if digest else "")


def unchecked_reason(bench: Mapping[str, Any], audit: Mapping[str, Any]) -> str | None:
    """Why the link between ``bench`` and the audited adapter cannot be checked, or None when
    both carry the hash."""
    if _hash(_mapping(audit.get("source")).get(HASH_KEY)) is None:
        return (
            "the audit.json carries no adapter hash (written before gradience-hub hashed adapters)"
        )
    if _hash(_mapping(bench.get("adapter")).get(HASH_KEY)) is not None:
        return None
    tool = _mapping(bench.get("tool"))
    if tool.get("name") not in (None, "gradience-hub"):
        return f"it was written by {tool.get('name')} {tool.get('version') or ''}".rstrip() + (
            ", which records no adapter hash"
        )
    if _mapping(bench.get("protocol")).get("kind") == "retrain":
        return "its adapters were trained from its bench config (retrain), not read from this one"
    return "it carries no adapter hash (written before gradience-hub hashed adapters)"


def check_link(bench: Mapping[str, Any], audit: Mapping[str, Any]) -> str | None:
    """Check that ``bench`` (a bench.json v1 dict) measured the adapter ``audit`` (an
    audit.json dict) describes.

    Returns None when the hashes match, a warning for the card when the link cannot be checked,
    and raises :class:`~gradience_hub.errors.RecordMismatch` (exit 2, naming both adapters)
    when the record names another adapter's hash.
    """
    reason = unchecked_reason(bench, audit)
    if reason is not None:
        return f"{UNCHECKED} ({record_names(bench)}): {reason}"
    theirs = _mapping(bench.get("adapter")).get(HASH_KEY)
    ours = _mapping(audit.get("source")).get(HASH_KEY)
    if theirs != ours:
        raise RecordMismatch(record_names(bench), audit_names(audit))
    return None


def link_bench(bench: dict[str, Any], audit: Mapping[str, Any]) -> dict[str, Any]:
    """``bench`` checked against ``audit`` (:func:`check_link`): a copy that carries the
    warning in its ``warnings`` when the link cannot be checked (once), else ``bench``."""
    warning = check_link(bench, audit)
    if warning is None:
        return bench
    warnings = [w for w in bench.get("warnings") or [] if not str(w).startswith(UNCHECKED)]
    return {**bench, "warnings": [*warnings, warning]}
