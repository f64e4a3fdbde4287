"""bench.json files: the one atomic write, and reading by a dispatch table over the formats.

Each reader in :data:`READERS` recognises its format by a key of the document and builds a
:class:`~gradience_hub.record.model.BenchRecord`; adding a format is adding a row.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradience_hub.errors import RecordError
from gradience_hub.record.judge import rejudge
from gradience_hub.record.model import SCHEMA, BenchRecord
from gradience_hub.record.read_v011 import read_v011
from gradience_hub.record.read_v1 import read_v1


def _is_v1(data: dict[str, Any]) -> bool:
    return data.get("schema") == SCHEMA


def _is_v011(data: dict[str, Any]) -> bool:
    return "bench_version" in data


# (name, recognises, reads): the first row that recognises a document reads it.
READERS: tuple[
    tuple[str, Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], BenchRecord]], ...
] = (
    (SCHEMA, _is_v1, read_v1),
    ("gradience 0.11 bench.json", _is_v011, read_v011),
)


def record_from_dict(data: Any, *, strict: bool = False) -> BenchRecord:
    """Read a bench.json document (ours, or gradience 0.11's canonical one) and re-judge it
    (:func:`~gradience_hub.record.judge.rejudge`): stored verdicts that disagree with the
    numbers are shown as recomputed with a warning, or refused with ``strict``."""
    if isinstance(data, dict):
        for _name, recognises, read in READERS:
            if recognises(data):
                return rejudge(read(data), strict=strict)
    schema = data.get("schema") if isinstance(data, dict) else None
    raise RecordError(
        f"not a bench.json (schema {schema!r}, no bench_version)",
        hint=f"pass a file written by 'gradience-hub bench' ({SCHEMA}) or gradience-bench",
    )


def save_bench(record: BenchRecord, path: str | Path) -> Path:
    """Write bench.json atomically (a temporary sibling, then rename): whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(record.to_json(), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_bench(path: str | os.PathLike[str], *, strict: bool = False) -> BenchRecord:
    """Read a bench.json file (ours or gradience 0.11's) into a re-judged
    :class:`BenchRecord` (see :func:`record_from_dict`)."""
    from gradience_hub._io import read_json

    data = read_json(path, "bench.json")
    return record_from_dict(data, strict=strict)
