"""Checked field readers shared by every bench.json reader.

A bench.json is untrusted input (a file from a Hub repo, a workflow, or an older run): every field
a verdict depends on is checked, and a missing or malformed one raises :class:`RecordError` naming
its path (``variants[2].per_seed.42.delta``).
"""

from __future__ import annotations

import math
from typing import Any

from gradience_hub.errors import ConfigError, RecordError
from gradience_hub.policy import FAIL, PASS, Policy

_MISSING = object()


def field_error(path: str, what: str) -> RecordError:
    return RecordError(
        f"bench.json: {path} {what}",
        hint="regenerate the file with 'gradience-hub bench' (or fix that field)",
    )


def as_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise field_error(path, f"must be an object, got {type(value).__name__}")
    return value


def required(data: dict[str, Any], key: str, path: str) -> Any:
    value = data.get(key, _MISSING)
    if value is _MISSING:
        raise RecordError(
            f"bench.json is missing '{path}{key}'",
            hint="regenerate the file with 'gradience-hub bench' (or add that field)",
        )
    return value


def as_number(value: Any, path: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise field_error(path, f"must be a finite number, got {value!r}")
    return float(value)


def as_int(value: Any, path: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise field_error(path, f"must be an integer, got {value!r}")
    return value


def as_verdict(value: Any, path: str) -> str:
    text = str(value).upper() if isinstance(value, str) else None
    if text not in (PASS, FAIL):
        raise field_error(path, f"must be PASS or FAIL, got {value!r}")
    return text


def as_seed(key: Any, path: str) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        raise field_error(path, f"has a seed key that is not an integer: {key!r}") from None


def as_policy(data: dict[str, Any], path: str) -> Policy:
    try:
        return Policy(
            max_drop=required(data, "max_drop", path),
            min_pass_rate=required(data, "min_pass_rate", path),
        )
    except ConfigError as exc:
        raise field_error(path.rstrip("."), exc.message) from None
