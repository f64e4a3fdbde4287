"""Reading bench.json strictly: our own schema, and the checked field readers.

A bench.json is untrusted input (a file from a Hub repo, a workflow, or an older run), so reading it
is its own job, apart from the model in :mod:`gradience_hub.record`: every field a verdict depends
on is checked, and a missing or malformed one raises :class:`RecordError` naming its path
(``variants[2].per_seed.42.delta``). The field readers here (``_req``, ``_number``, ...) are
shared with :mod:`gradience_hub.record_v011`, the reader of gradience 0.11's format.
:meth:`gradience_hub.record.BenchRecord.from_dict` picks the reader.
"""

from __future__ import annotations

import math
from typing import Any

from gradience_hub.bench.policy import FAIL, PASS, Policy
from gradience_hub.errors import ConfigError, RecordError
from gradience_hub.record import (
    AdapterInfo,
    BenchRecord,
    ProbeRecord,
    ProtocolInfo,
    Recommendation,
    SeedScore,
    TaskInfo,
    VariantRecord,
)

# --------------------------------------------------------------------------- strict readers


_MISSING = object()


def _fail(path: str, what: str) -> RecordError:
    return RecordError(
        f"bench.json: {path} {what}",
        hint="regenerate the file with 'gradience-hub bench' (or fix that field)",
    )


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, f"must be an object, got {type(value).__name__}")
    return value


def _req(data: dict[str, Any], key: str, path: str) -> Any:
    value = data.get(key, _MISSING)
    if value is _MISSING:
        raise RecordError(
            f"bench.json is missing '{path}{key}'",
            hint="regenerate the file with 'gradience-hub bench' (or add that field)",
        )
    return value


def _number(value: Any, path: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, f"must be a finite number, got {value!r}")
    return float(value)


def _integer(value: Any, path: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"must be an integer, got {value!r}")
    return value


def _verdict(value: Any, path: str) -> str:
    text = str(value).upper() if isinstance(value, str) else None
    if text not in (PASS, FAIL):
        raise _fail(path, f"must be PASS or FAIL, got {value!r}")
    return text


def _seed(key: Any, path: str) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        raise _fail(path, f"has a seed key that is not an integer: {key!r}") from None


def _policy(data: dict[str, Any], path: str) -> Policy:
    try:
        return Policy(
            max_drop=_req(data, "max_drop", path), min_pass_rate=_req(data, "min_pass_rate", path)
        )
    except ConfigError as exc:
        raise _fail(path.rstrip("."), exc.message) from None


def _from_ours(data: dict[str, Any]) -> BenchRecord:
    adapter = _obj(_req(data, "adapter", ""), "adapter")
    task = _obj(_req(data, "task", ""), "task")
    protocol = dict(_obj(_req(data, "protocol", ""), "protocol"))
    probe = _obj(_req(data, "probe", ""), "probe")
    variants = _req(data, "variants", "")
    if not isinstance(variants, list):
        raise _fail("variants", "must be a list")
    rec = _req(data, "recommendation", "")
    noise = _obj(_req(data, "noise_floor", ""), "noise_floor")

    kind = _req(protocol, "kind", "protocol.")
    seeds = [_seed(s, "protocol.seeds") for s in _req(protocol, "seeds", "protocol.")]
    for key in ("kind", "seeds"):
        protocol.pop(key)

    probe_scores = _obj(_req(probe, "per_seed", "probe."), "probe.per_seed")
    out_variants = []
    for i, item in enumerate(variants):
        p = f"variants[{i}]."
        v = _obj(item, p.rstrip("."))
        if "rank" not in v and "rank_pattern" not in v:
            raise RecordError(
                f"bench.json is missing '{p}rank' (or '{p}rank_pattern')",
                hint="regenerate the file with 'gradience-hub bench'",
            )
        pattern = v.get("rank_pattern")
        per_seed = {}
        for seed, cell in _obj(_req(v, "per_seed", p), f"{p}per_seed").items():
            c = _obj(cell, f"{p}per_seed.{seed}")
            q = f"{p}per_seed.{seed}."
            per_seed[_seed(seed, f"{p}per_seed")] = SeedScore(
                score=_number(_req(c, "score", q), f"{q}score"),  # type: ignore[arg-type]
                delta=_number(_req(c, "delta", q), f"{q}delta"),  # type: ignore[arg-type]
            )
        out_variants.append(
            VariantRecord(
                name=str(_req(v, "name", p)),
                params=_integer(_req(v, "params", p), f"{p}params", optional=True),
                param_reduction=_number(
                    _req(v, "param_reduction", p), f"{p}param_reduction", optional=True
                ),
                per_seed=per_seed,
                mean=_number(_req(v, "mean", p), f"{p}mean", optional=True),
                worst_delta=_number(_req(v, "worst_delta", p), f"{p}worst_delta", optional=True),
                pass_rate=_number(_req(v, "pass_rate", p), f"{p}pass_rate", optional=True),
                p_value=_number(_req(v, "p_value", p), f"{p}p_value", optional=True),
                p_value_test=v.get("p_value_test"),
                verdict=_verdict(_req(v, "verdict", p), f"{p}verdict"),
                rank=_integer(v.get("rank"), f"{p}rank", optional=True),
                rank_pattern=(
                    {str(k): _integer(r, f"{p}rank_pattern.{k}") for k, r in pattern.items()}  # type: ignore[misc]
                    if isinstance(pattern, dict)
                    else None
                ),
            )
        )
    recommendation = None
    if rec is not None:
        r = _obj(rec, "recommendation")
        recommendation = Recommendation(
            variant=str(_req(r, "variant", "recommendation.")),
            param_reduction=_number(
                r.get("param_reduction"), "recommendation.param_reduction", optional=True
            ),
        )
    return BenchRecord(
        adapter=AdapterInfo(
            source=str(_req(adapter, "source", "adapter.")),
            revision=adapter.get("revision"),
            base_model=adapter.get("base_model"),
            allocated_rank=_integer(
                adapter.get("allocated_rank"), "adapter.allocated_rank", optional=True
            ),
            lora_params=_integer(adapter.get("lora_params"), "adapter.lora_params", optional=True),
        ),
        task=TaskInfo(
            name=str(_req(task, "name", "task.")),
            metric=str(_req(task, "metric", "task.")),
            eval_examples=_integer(task.get("eval_examples"), "task.eval_examples", optional=True),
        ),
        protocol=ProtocolInfo(kind=str(kind), seeds=seeds, extra=protocol),
        policy=_policy(_obj(_req(data, "policy", ""), "policy"), "policy."),
        probe=ProbeRecord(
            rank=_integer(_req(probe, "rank", "probe."), "probe.rank", optional=True),
            params=_integer(_req(probe, "params", "probe."), "probe.params", optional=True),
            per_seed={
                _seed(s, "probe.per_seed"): _number(x, f"probe.per_seed.{s}")  # type: ignore[misc]
                for s, x in probe_scores.items()
            },
            mean=_number(_req(probe, "mean", "probe."), "probe.mean"),  # type: ignore[arg-type]
        ),
        variants=out_variants,
        status=_verdict(_req(data, "status", ""), "status"),
        recommendation=recommendation,
        metric_se=_number(_req(noise, "metric_se", "noise_floor."), "noise_floor", optional=True),
        audit=dict(_obj(data.get("audit") or {}, "audit")),
        warnings=[str(w) for w in data.get("warnings") or []],
        environment=dict(_obj(data.get("environment") or {}, "environment")),
        tool=dict(_obj(data.get("tool") or {}, "tool")),
        created_at=str(data.get("created_at") or ""),
    )
