"""UDR in the audit: each audited module's update against its base weight.

The base is a local directory or a Hub repo id (``org/name[@revision]``); only the tensors of
the audited modules are read (``adapter.basemodel``, ``hub.base_ranges``), one module's base
weight in memory per worker. Their norms (``udr.base_norms``) are cached in a small JSON file
(``--base-norms-cache``) keyed by the base's identity (``repo@commit``, or the resolved
directory) and tensor, so a second adapter of the same base reads nothing but the commit.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradience_hub import udr as udr_math
from gradience_hub._io import write_file
from gradience_hub.adapter.basemodel import BaseWeights, LocalBase, Mapped, base_matrix, map_modules
from gradience_hub.audit.report import LayerReport
from gradience_hub.errors import AdapterError, UsageError
from gradience_hub.parallel import map_ordered

CACHE_SCHEMA = "gradience-hub/base-norms/v1"


@dataclass
class UdrRow:
    """One module's ratios and the base weight they were taken against."""

    name: str
    base_tensor: str
    udr: float
    udr_f: float
    sdi: float
    base_sigma_max: float
    base_sigma_max_error: float
    base_fro_norm: float


@dataclass
class UdrReport:
    """UDR over an adapter: rows, gradience's summary fields, what was read."""

    base: str
    rows: list[UdrRow]
    unmapped: list[str]
    summary: dict[str, float | int]
    bytes_read: int
    base_bytes: int  # the whole base's weights: what loading it would read
    cached: int  # modules whose base norms came from the cache
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """audit.json's ``udr`` object."""
        return {
            "base": self.base,
            "summary": dict(self.summary),
            "bytes_read": self.bytes_read,
            "base_bytes": self.base_bytes,
            "cached_modules": self.cached,
            "unmapped": list(self.unmapped),
            "layers": [asdict(r) for r in self.rows],
        }


def open_base(base_model: str, revision: str | None = None) -> BaseWeights:
    """A local directory (an existing path wins) or a Hub repo ``org/name[@revision]``."""
    path = Path(base_model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"--base-model {base_model} is a file, not a model directory")
        return LocalBase(path)
    repo, _, at = base_model.partition("@")
    if not repo or repo.count("/") > 1 or " " in repo:
        raise UsageError(
            f"--base-model {base_model!r} is neither a directory nor a Hub repo id",
            hint="pass org/name[@revision] or a local model directory",
        )
    from gradience_hub.hub.base_ranges import HubBase

    return HubBase(repo, at or revision)


def _cache_key(where: Mapped) -> str:
    return where.tensor if where.expert is None else f"{where.tensor}[{where.expert}]"


def load_cache(path: Path, identity: str) -> tuple[dict[str, Any], list[str] | None]:
    """The cached norms and tensor names of one base (empty when the file or base is absent).
    A cache that cannot be read is bad input (exit 2), never silently replaced."""
    if not path.exists():
        return {}, None
    try:
        data = json.loads(path.read_text())
        assert isinstance(data, dict) and data.get("schema") == CACHE_SCHEMA
        entry = data.get("bases", {}).get(identity) or {}
        norms = {k: udr_math.BaseNorms.from_dict(v) for k, v in entry.get("norms", {}).items()}
        names = entry.get("tensors")
        assert names is None or isinstance(names, list)
    except (OSError, ValueError, AssertionError, AttributeError, KeyError, TypeError):
        raise UsageError(
            f"--base-norms-cache {path} is not a base-norms cache ({CACHE_SCHEMA})",
            hint="pass a new path, or delete the file to rebuild it",
        ) from None
    return norms, names


def save_cache(
    path: Path, identity: str, names: list[str], norms: dict[str, udr_math.BaseNorms]
) -> None:
    """Merge one base's norms into the cache file (atomically)."""
    data: dict[str, Any] = {"schema": CACHE_SCHEMA, "bases": {}}
    if path.exists():
        data = json.loads(path.read_text())
    entry = data["bases"].setdefault(identity, {})
    entry["tensors"] = sorted(names)
    stored = entry.setdefault("norms", {})
    stored.update({k: v.to_dict() for k, v in norms.items()})
    write_file(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def compute_udr(
    layers: list[LayerReport],
    base_model: str,
    revision: str | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> UdrReport:
    """UDR of every audited module against ``base_model``."""
    base = open_base(base_model, revision)
    cache_path = Path(cache) if cache else None
    cached, names = load_cache(cache_path, base.identity) if cache_path else ({}, None)
    tensor_names = set(names) if names is not None else set(base.entries)
    mapped, unmapped = map_modules([layer.name for layer in layers], tensor_names)
    if not mapped:
        example = layers[0].name if layers else "?"
        raise AdapterError(
            f"base model {base_model}: none of the adapter's modules is in it (e.g. {example})",
            hint="pass the base model the adapter was trained on (--base-model)",
        )
    todo = sorted(
        {_cache_key(w): w for w in mapped.values() if _cache_key(w) not in cached}.items()
    )

    def norms_of(item: tuple[str, Mapped]) -> tuple[str, udr_math.BaseNorms]:
        key, where = item
        return key, udr_math.base_norms(base_matrix(base, where))

    fresh = dict(map_ordered(norms_of, todo))
    norms = {**cached, **fresh}
    rows: list[UdrRow] = []
    warnings: list[str] = []
    for layer in layers:
        where = mapped.get(layer.name)
        if where is None:
            continue
        bn = norms[_cache_key(where)]
        if tuple(bn.shape) not in (
            (layer.shape[0], layer.shape[1]),
            (layer.shape[1], layer.shape[0]),
        ):
            warnings.append(
                f"UDR skipped for {layer.name}: base {where.tensor} is {list(bn.shape)}, "
                f"the update {layer.shape}"
            )
            continue
        ratio = udr_math.udr(layer.sigma_max, layer.fro_norm, bn)
        if ratio is None:
            warnings.append(f"UDR skipped for {layer.name}: its base weight is zero")
            continue
        rows.append(
            UdrRow(
                name=layer.name,
                base_tensor=_cache_key(where),
                udr=ratio.udr,
                udr_f=ratio.udr_f,
                sdi=ratio.sdi,
                base_sigma_max=bn.sigma_max,
                base_sigma_max_error=bn.sigma_max_error,
                base_fro_norm=bn.fro_norm,
            )
        )
    if unmapped:
        more = f" and {len(unmapped) - 1} more" if len(unmapped) > 1 else ""
        warnings.append(f"UDR: no base weight found for {unmapped[0]}{more}")
    if cache_path is not None and fresh:
        save_cache(cache_path, base.identity, sorted(tensor_names), norms)
    base_bytes = sum(e.nbytes for e in base.entries.values()) if fresh or names is None else 0
    return UdrReport(
        base=base.identity,
        rows=rows,
        unmapped=unmapped,
        summary=udr_math.summary([udr_math.Udr(r.udr, r.udr_f, r.sdi) for r in rows]),
        bytes_read=base.bytes_read,
        base_bytes=base_bytes,
        cached=sum(1 for w in mapped.values() if _cache_key(w) in cached),
        warnings=warnings,
    )
