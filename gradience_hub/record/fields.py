"""Checked field readers shared by every bench.json reader.

A bench.json is untrusted input (a file from a Hub repo, a workflow, or an older run): every field
a verdict depends on is checked, and a missing or malformed one raises :class:`RecordError` naming
its path (``variants[2].per_seed.42.delta``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

from gradience_hub.errors import ConfigError, RecordError
from gradience_hub.policy import (
    INTERVAL_METHOD,
    LEVEL,
    RECORD_STATUSES,
    RULES,
    VERDICTS,
    Interval,
    Pairs,
    Policy,
    paired_interval,
)

_MISSING = object()


def field_error(path: str, what: str) -> RecordError:
    """A RecordError naming the field at ``path``."""
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


# JSON integers have no size limit; numbers we record fit in 64 bits (and in a float).
INT_LIMIT = 2**63


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


@overload
def as_number(value: Any, path: str, *, optional: Literal[False] = False) -> float: ...
@overload
def as_number(value: Any, path: str, *, optional: bool) -> float | None: ...
def as_number(value: Any, path: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= INT_LIMIT:
        raise field_error(path, f"is out of range: {_shown(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise field_error(path, f"must be a finite number, got {_shown(value)}")
    return float(value)


@overload
def as_int(value: Any, path: str, *, optional: Literal[False] = False) -> int: ...
@overload
def as_int(value: Any, path: str, *, optional: bool) -> int | None: ...
def as_int(value: Any, path: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < INT_LIMIT:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise field_error(path, f"must be an integer, got {_shown(value)}")
    if abs(value) >= INT_LIMIT:
        raise field_error(path, f"is out of range: {_shown(value)}")
    return value


def as_verdict(value: Any, path: str) -> str:
    text = str(value).upper() if isinstance(value, str) else None
    if text not in VERDICTS:
        raise field_error(path, f"must be PASS or FAIL, got {value!r}")
    return text


def as_status(value: Any, path: str) -> str:
    text = str(value).upper() if isinstance(value, str) else None
    if text not in RECORD_STATUSES:
        raise field_error(path, f"must be one of {', '.join(RECORD_STATUSES)}, got {value!r}")
    return text


def as_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise field_error(path, f"must be a list, got {value!r}")
    return value


def as_verdicts(value: Any, path: str) -> dict[str, str | None]:
    if value is None:
        return {}
    data = as_object(value, path)
    out: dict[str, str | None] = {}
    for rule, verdict in data.items():
        if rule not in RULES:
            raise field_error(path, f"has an unknown rule {rule!r}")
        out[rule] = None if verdict is None else as_verdict(verdict, f"{path}.{rule}")
    return out


def as_pairs(data: dict[str, Any], path: str) -> Pairs:
    p = f"{path}."
    n = as_int(required(data, "n", p), f"{p}n")
    worse = as_int(required(data, "worse", p), f"{p}worse")
    better = as_int(required(data, "better", p), f"{p}better")
    try:
        return Pairs(n, worse, better)
    except RecordError as exc:
        raise field_error(path, exc.message) from None


def as_interval(value: Any, path: str) -> Interval | None:
    """A recorded ``delta_ci``, recomputed from its counts: bounds that disagree with them
    make the record inconsistent."""
    if value is None:
        return None
    data = as_object(value, path)
    pairs = as_pairs(data, path)
    if pairs.n == 0:
        raise field_error(path, "has no pairs (n = 0)")
    level = as_number(data.get("level", LEVEL), f"{path}.level")
    method = data.get("method", INTERVAL_METHOD)
    if level != LEVEL or method != INTERVAL_METHOD:
        raise field_error(path, f"must be a {LEVEL:.0%} {INTERVAL_METHOD} interval")
    interval = paired_interval(pairs, LEVEL)
    for key in ("low", "high"):
        stored = as_number(required(data, key, f"{path}."), f"{path}.{key}")
        if abs(stored - getattr(interval, key)) > 1e-9:
            raise field_error(
                f"{path}.{key}", f"is {stored!r}, but its counts give {getattr(interval, key)!r}"
            )
    return interval


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
            seed_max_drop=data.get("seed_max_drop"),
            rule=data.get("rule", RULES[0]),
        )
    except ConfigError as exc:
        raise field_error(path.rstrip("."), exc.message) from None
