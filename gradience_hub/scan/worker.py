"""One repo of a scan: choose the files the audit reads, fetch them, audit every adapter.

Runs on a worker thread or in a Ray task, so it takes plain arguments and returns a
:class:`~gradience_hub.scan.records.RepoResult` of plain rows. Nothing a repo holds can stop
the scan: every failure becomes a row with its reason (:class:`~gradience_hub.hub.listing.Skip`).
The downloaded files live in a temporary directory removed when the repo is done, so disk use
is one repo's adapters, not the org's.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from gradience_hub.adapter import (
    BIN_NAME,
    CONFIG_NAME,
    SAFETENSORS_NAME,
    SourceInfo,
    list_adapters,
    open_adapter,
)
from gradience_hub.adapter.lorafile import is_lora_file
from gradience_hub.audit import audit_adapter
from gradience_hub.errors import GradienceError
from gradience_hub.hub import (
    MAX_HEADER_PROBES,
    MAX_LORA_FILE_BYTES,
    PREFERRED_LORA_FILE,
    listing,
    lora_file_candidates,
)
from gradience_hub.hub.listing import RepoInfo, Skip
from gradience_hub.scan.records import RepoResult, audit_rows, skipped_row

DEFAULT_MAX_BYTES = MAX_LORA_FILE_BYTES


def _peft_files(files: dict[str, int | None]) -> dict[str, list[str]]:
    """Adapter name -> the files to read, for every adapter_config.json at the top level
    (``default``) or one folder down (``PeftModel.save_pretrained`` with several adapters), as
    :func:`~gradience_hub.adapter.list_adapters` finds them."""
    found: dict[str, list[str]] = {}
    for path in sorted(files):
        folder, _, name = path.rpartition("/")
        if name != CONFIG_NAME or "/" in folder:
            continue
        prefix = f"{folder}/" if folder else ""
        weights = next(
            (prefix + w for w in (SAFETENSORS_NAME, BIN_NAME) if prefix + w in files), None
        )
        found[folder or "default"] = [path] + ([weights] if weights else [])
    return found


def _lora_file(info: RepoInfo) -> str | None:
    """The kohya/diffusers LoRA file the single audit would choose (same candidates, same
    order, the same cap on header reads), or None."""
    candidates = lora_file_candidates(dict(info.files))
    if candidates and candidates[0] == PREFERRED_LORA_FILE:
        return PREFERRED_LORA_FILE
    for name in candidates[:MAX_HEADER_PROBES]:
        names = listing.header_tensor_names(info, name)
        if names is not None and is_lora_file(names):
            return name
    return None


def _choose(info: RepoInfo) -> dict[str, list[str]]:
    """Adapter name -> the repo files its audit reads; raises Skip when there is none."""
    peft = _peft_files(dict(info.files))
    if peft:
        return peft
    lora = _lora_file(info)
    if lora is None:
        raise Skip("not-an-adapter", "no adapter_config.json and no kohya/diffusers LoRA file")
    return {lora: [lora]}


def _audit_dir(
    directory: Path,
    adapter_name: str | None,
    name: str,
    *,
    repo: str,
    source: str,
    sha: str | None,
    energy: float,
    base_model: str | None,
    info: SourceInfo,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Audit one adapter of ``directory``; a broken one is its row with the reason."""
    try:
        adapter = open_adapter(directory, adapter_name)
        report = audit_adapter(adapter, info, energy)
        weights = adapter.weights_path.stat().st_size
    except GradienceError as exc:
        return skipped_row(repo, name, source, sha, "broken", exc.message), []
    except (OSError, ValueError, KeyError, TypeError, MemoryError) as exc:
        # a reader fed hostile bytes can fail below our checks; the repo is recorded, the
        # scan goes on
        return skipped_row(repo, name, source, sha, "broken", f"{type(exc).__name__}: {exc}"), []
    return audit_rows(report, repo, name, source, sha, weights, base_model)


def scan_hub_repo(
    repo_id: str,
    *,
    energy: float = 0.9,
    max_bytes: int = DEFAULT_MAX_BYTES,
    revision: str | None = None,
) -> RepoResult:
    """Audit every adapter of the Hub repo ``repo_id``, reading only the files each reads."""
    result = RepoResult(repo=repo_id)
    sha: str | None = None
    try:
        info = listing.repo_info(repo_id, revision)
        sha = info.sha
        chosen = _choose(info)
        wanted = sorted({p for paths in chosen.values() for p in paths})
        size = sum(info.files.get(p) or 0 for p in wanted)
        if size > max_bytes:
            raise Skip(
                "too-large",
                f"its adapter files hold {size} bytes, over the {max_bytes}-byte cap (--max-bytes)",
            )
        with tempfile.TemporaryDirectory(prefix="gradience-scan-") as tmp:
            root = Path(tmp)
            listing.download(info, wanted, root)
            for name, paths in chosen.items():
                is_peft = paths[0].endswith(CONFIG_NAME)
                if is_peft and len(paths) == 1:
                    result.adapters.append(
                        skipped_row(
                            repo_id,
                            name,
                            "hub",
                            sha,
                            "broken",
                            f"{paths[0]} has no {SAFETENSORS_NAME} or {BIN_NAME} beside it",
                        )
                    )
                    continue
                src = SourceInfo(
                    kind="hub",
                    path=str(root / (name if is_peft and name != "default" else "")),
                    repo_id=repo_id,
                    revision=revision,
                    sha=sha,
                    adapter_name=name if is_peft else None,
                )
                row, modules = _audit_dir(
                    root,
                    name if is_peft else None,
                    name,
                    repo=repo_id,
                    source="hub",
                    sha=sha,
                    energy=energy,
                    base_model=info.base_model,
                    info=src,
                )
                result.adapters.append(row)
                result.modules.extend(modules)
    except Skip as skip:
        result.adapters = [skipped_row(repo_id, "", "hub", sha, skip.kind, skip.reason)]
        result.modules = []
        result.transient = skip.transient
    return result


def local_entries(root: Path) -> list[str]:
    """The adapters under ``root``, as paths relative to it: every folder holding
    adapter_config.json, and every ``.safetensors`` file in a folder without one."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        here = Path(folder)
        rel = here.relative_to(root).as_posix()
        if CONFIG_NAME in files:
            found.append(rel)
            continue
        for name in sorted(files):
            if name.endswith(".safetensors"):
                found.append(f"{rel}/{name}" if rel != "." else name)
    return found


def scan_local_entry(root: Path, entry: str, *, energy: float = 0.9) -> RepoResult:
    """Audit the adapter ``entry`` (from :func:`local_entries`) under ``root``."""
    path = root / entry
    result = RepoResult(repo=entry)
    is_file = path.is_file()
    if not is_file and not list_adapters(path):
        result.adapters = [
            skipped_row(entry, "default", "local", None, "not-an-adapter", "no adapter found")
        ]
        return result
    name = path.name if is_file else "default"
    info = SourceInfo(kind="local", path=str(path))
    try:
        adapter = open_adapter(path)
    except GradienceError as exc:
        # a .safetensors file without LoRA factors is a model or an embedding, not a break
        kind = "not-an-adapter" if is_file and "holds" in exc.message else "broken"
        result.adapters = [skipped_row(entry, name, "local", None, kind, exc.message)]
        return result
    except (OSError, ValueError, KeyError, TypeError) as exc:
        result.adapters = [
            skipped_row(entry, name, "local", None, "broken", f"{type(exc).__name__}: {exc}")
        ]
        return result
    try:
        report = audit_adapter(adapter, info, energy)
        weights = adapter.weights_path.stat().st_size
    except GradienceError as exc:
        result.adapters = [skipped_row(entry, name, "local", None, "broken", exc.message)]
        return result
    except (OSError, ValueError, KeyError, TypeError, MemoryError) as exc:
        result.adapters = [
            skipped_row(entry, name, "local", None, "broken", f"{type(exc).__name__}: {exc}")
        ]
        return result
    row, modules = audit_rows(report, entry, name, "local", None, weights, None)
    result.adapters, result.modules = [row], modules
    return result
