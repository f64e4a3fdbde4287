"""Reading our own bench.json schema (``gradience-hub/bench/v1``) strictly."""

from __future__ import annotations

from typing import Any

from gradience_hub.errors import ConfigError, RecordError
from gradience_hub.identity import HASH_KEY, HASH_RE
from gradience_hub.record.fields import (
    as_int,
    as_interval,
    as_list,
    as_number,
    as_object,
    as_pairs,
    as_policy,
    as_seed,
    as_status,
    as_verdict,
    as_verdicts,
    field_error,
    required,
)
from gradience_hub.record.model import (
    AdapterInfo,
    BaseRecord,
    BenchRecord,
    ProbeRecord,
    ProtocolInfo,
    Recommendation,
    SeedScore,
    TaskInfo,
    VariantRecord,
)


def _task_source(task: dict[str, Any]) -> dict[str, Any]:
    """``task.sampled``, ``hub_benchmark``, ``dataset``, ``dataset_config`` and ``split``
    (absent in records written before them)."""
    from gradience_hub.record.hub_eval import HubBenchmark  # it imports record.model

    out: dict[str, Any] = {}
    sampled = task.get("sampled")
    if sampled is not None and not isinstance(sampled, bool):
        raise field_error("task.sampled", f"must be true or false, got {sampled!r}")
    out["sampled"] = sampled
    raw = task.get("hub_benchmark")
    if raw is not None:
        try:
            out["hub_benchmark"] = HubBenchmark.from_dict(raw).to_dict()
        except ConfigError as err:
            raise RecordError(f"bench.json: {err.message}") from None
    for key in ("dataset", "dataset_config", "split"):
        value = task.get(key)
        if value is not None and not isinstance(value, str):
            raise field_error(f"task.{key}", f"must be a string, got {value!r}")
        out[key] = value
    return out


def as_content_hash(value: Any, path: str) -> str | None:
    """The adapter content hash (64 hex digits), or None where the record has none (written
    before the hash existed)."""
    if value is None:
        return None
    if not isinstance(value, str) or not HASH_RE.match(value):
        raise field_error(path, "must be 64 lowercase hex digits (a SHA-256)")
    return value


def _protocol(protocol: dict[str, Any]) -> ProtocolInfo:
    """``protocol``: its kind and seeds, every other key kept as written."""
    kind = required(protocol, "kind", "protocol.")
    seeds = [
        as_seed(s, "protocol.seeds")
        for s in as_list(required(protocol, "seeds", "protocol."), "protocol.seeds")
    ]
    for key in ("kind", "seeds"):
        protocol.pop(key)
    return ProtocolInfo(kind=str(kind), seeds=seeds, extra=protocol)


def _seed_scores(v: dict[str, Any], p: str) -> dict[int, SeedScore]:
    """A variant's ``per_seed``: each seed's score, delta, interval and retained gain."""
    per_seed: dict[int, SeedScore] = {}
    for seed, cell in as_object(required(v, "per_seed", p), f"{p}per_seed").items():
        c = as_object(cell, f"{p}per_seed.{seed}")
        q = f"{p}per_seed.{seed}."
        per_seed[as_seed(seed, f"{p}per_seed")] = SeedScore(
            score=as_number(required(c, "score", q), f"{q}score"),
            delta=as_number(required(c, "delta", q), f"{q}delta"),
            delta_ci=as_interval(c.get("delta_ci"), f"{q}delta_ci"),
            retained_gain=as_number(c.get("retained_gain"), f"{q}retained_gain", optional=True),
        )
    return per_seed


def _variant(i: int, item: Any) -> VariantRecord:
    """``variants[i]``, every field checked; it needs a rank or a rank pattern."""
    p = f"variants[{i}]."
    v = as_object(item, p.rstrip("."))
    if "rank" not in v and "rank_pattern" not in v:
        raise RecordError(
            f"bench.json is missing '{p}rank' (or '{p}rank_pattern')",
            hint="regenerate the file with 'gradience-hub bench'",
        )
    pattern = v.get("rank_pattern")
    per_seed = _seed_scores(v, p)
    return VariantRecord(
        name=str(required(v, "name", p)),
        params=as_int(required(v, "params", p), f"{p}params", optional=True),
        param_reduction=as_number(
            required(v, "param_reduction", p), f"{p}param_reduction", optional=True
        ),
        per_seed=per_seed,
        mean=as_number(required(v, "mean", p), f"{p}mean", optional=True),
        worst_delta=as_number(required(v, "worst_delta", p), f"{p}worst_delta", optional=True),
        pass_rate=as_number(required(v, "pass_rate", p), f"{p}pass_rate", optional=True),
        p_value=as_number(required(v, "p_value", p), f"{p}p_value", optional=True),
        p_value_test=v.get("p_value_test"),
        verdict=as_verdict(required(v, "verdict", p), f"{p}verdict"),
        delta_ci=as_interval(v.get("delta_ci"), f"{p}delta_ci"),
        verdicts=as_verdicts(v.get("verdicts"), f"{p}verdicts"),
        rank=as_int(v.get("rank"), f"{p}rank", optional=True),
        rank_pattern=(
            {str(k): as_int(r, f"{p}rank_pattern.{k}") for k, r in pattern.items()}
            if isinstance(pattern, dict)
            else None
        ),
    )


def _recommendation(rec: Any) -> Recommendation | None:
    """``recommendation`` (null when nothing passed)."""
    if rec is None:
        return None
    r = as_object(rec, "recommendation")
    return Recommendation(
        variant=str(required(r, "variant", "recommendation.")),
        param_reduction=as_number(
            r.get("param_reduction"), "recommendation.param_reduction", optional=True
        ),
    )


def _adapter(adapter: dict[str, Any]) -> AdapterInfo:
    """``adapter``: only its source is required."""
    return AdapterInfo(
        source=str(required(adapter, "source", "adapter.")),
        revision=adapter.get("revision"),
        base_model=adapter.get("base_model"),
        allocated_rank=as_int(
            adapter.get("allocated_rank"), "adapter.allocated_rank", optional=True
        ),
        lora_params=as_int(adapter.get("lora_params"), "adapter.lora_params", optional=True),
        content_sha256=as_content_hash(adapter.get(HASH_KEY), f"adapter.{HASH_KEY}"),
    )


def _task(task: dict[str, Any]) -> TaskInfo:
    """``task``: its name and metric required, where it came from optional."""
    return TaskInfo(
        name=str(required(task, "name", "task.")),
        metric=str(required(task, "metric", "task.")),
        eval_examples=as_int(task.get("eval_examples"), "task.eval_examples", optional=True),
        **_task_source(task),
    )


def _probe(probe: dict[str, Any], scores: dict[str, Any]) -> ProbeRecord:
    """``probe`` with its ``per_seed`` scores (already checked to be an object)."""
    return ProbeRecord(
        rank=as_int(required(probe, "rank", "probe."), "probe.rank", optional=True),
        params=as_int(required(probe, "params", "probe."), "probe.params", optional=True),
        per_seed={
            as_seed(s, "probe.per_seed"): as_number(x, f"probe.per_seed.{s}")
            for s, x in scores.items()
        },
        mean=as_number(required(probe, "mean", "probe."), "probe.mean"),
    )


def read_v1(data: dict[str, Any]) -> BenchRecord:
    """Our bench.json into a record; ``adapter.content_sha256`` is optional, so records
    written before it existed still load."""
    adapter = as_object(required(data, "adapter", ""), "adapter")
    task = as_object(required(data, "task", ""), "task")
    protocol_fields = dict(as_object(required(data, "protocol", ""), "protocol"))
    probe = as_object(required(data, "probe", ""), "probe")
    variants = required(data, "variants", "")
    if not isinstance(variants, list):
        raise field_error("variants", "must be a list")
    rec = required(data, "recommendation", "")
    as_object(required(data, "noise_floor", ""), "noise_floor")  # recomputed on re-judging
    protocol = _protocol(protocol_fields)
    probe_scores = as_object(required(probe, "per_seed", "probe."), "probe.per_seed")
    out_variants = [_variant(i, item) for i, item in enumerate(variants)]
    recommendation = _recommendation(rec)
    return BenchRecord(
        adapter=_adapter(adapter),
        task=_task(task),
        protocol=protocol,
        policy=as_policy(as_object(required(data, "policy", ""), "policy"), "policy."),
        probe=_probe(probe, probe_scores),
        variants=out_variants,
        status=as_status(required(data, "status", ""), "status"),
        recommendation=recommendation,
        base=as_base(data.get("base"), "base"),
        audit=dict(as_object(data.get("audit") or {}, "audit")),
        warnings=[str(w) for w in data.get("warnings") or []],
        environment=dict(as_object(data.get("environment") or {}, "environment")),
        tool=dict(as_object(data.get("tool") or {}, "tool")),
        created_at=str(data.get("created_at") or ""),
    )


def as_base(value: Any, path: str) -> BaseRecord | None:
    """bench.json ``base`` (None when the record has no base-model control)."""
    if value is None:
        return None
    data = as_object(value, path)
    scores = as_object(required(data, "per_seed", f"{path}."), f"{path}.per_seed")
    per_seed = {
        as_seed(s, f"{path}.per_seed"): as_number(x, f"{path}.per_seed.{s}")
        for s, x in scores.items()
    }
    if not per_seed:
        raise field_error(f"{path}.per_seed", "is empty")
    gain = as_object(data.get("gain") or {}, f"{path}.gain")
    pairs = as_pairs(gain, f"{path}.gain") if "n" in gain else None
    mean = as_number(required(data, "mean", f"{path}."), f"{path}.mean")
    return BaseRecord(
        per_seed=per_seed,
        mean=mean,
        gain=as_number(gain.get("mean", 0.0), f"{path}.gain.mean"),
        pairs=pairs,
        p_value=as_number(gain.get("p_value"), f"{path}.gain.p_value", optional=True),
    )
