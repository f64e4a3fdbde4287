"""Reading gradience 0.11's bench.json: ``gradience-bench``'s canonical output.

gradience 0.11 writes ``bench.json`` (one seed) and ``bench_aggregate.json`` (several) with its
own keys (``bench_version``, ``probe``, ``compressed.<variant>``, ``summary``) and several shapes
per metric (a number, a list, or ``{"mean", "std", "values"}``). This reader maps them onto our
model, so the card, the PR comment and the Action render either format. It is a compatibility
layer for a format we do not write, kept apart from our own schema's reader
(:mod:`gradience_hub.record.read_v1`); both use :mod:`gradience_hub.record.fields`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradience_hub.errors import ConfigError
from gradience_hub.policy import PASS, RECORD_STATUSES, Policy
from gradience_hub.record.fields import (
    as_int,
    as_number,
    as_object,
    as_verdict,
    field_error,
    required,
)
from gradience_hub.record.model import (
    AdapterInfo,
    BenchRecord,
    ProbeRecord,
    ProtocolInfo,
    Recommendation,
    SeedScore,
    TaskInfo,
    VariantRecord,
    audit_fields,
)


def _values(value: Any, path: str) -> tuple[list[float], float]:
    """A 0.11 metric in any of its shapes -> (per-seed values, mean)."""
    if isinstance(value, dict):
        raw = value.get("values")
        if raw is None:
            mean = as_number(required(value, "mean", f"{path}."), f"{path}.mean")
            return [mean], mean
        value = raw
    if isinstance(value, list):
        if not value:
            raise field_error(path, "is an empty list")
        values = [as_number(x, f"{path}[{i}]") for i, x in enumerate(value)]
        return values, sum(values) / len(values)
    number = as_number(value, path)
    return [number], number


def _scalar(value: Any, path: str) -> float:
    """A number, or the mean of a 0.11 aggregate ``{"mean", ...}``."""
    if isinstance(value, dict):
        return as_number(required(value, "mean", f"{path}."), f"{path}.mean")
    return as_number(value, path)


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


_SKIPPED = ("no_data", "failed", "skipped", "error", "not_run")

# Our environment keys, each with the 0.11 ``env`` names it may be under (the first set wins).
_ENVIRONMENT_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("python", ("python", "python_version")),
    ("platform", ("platform",)),
    ("numpy", ("numpy", "numpy_version")),
    ("torch", ("torch", "torch_version")),
    ("peft", ("peft", "peft_version")),
    ("transformers", ("transformers", "transformers_version")),
    ("datasets", ("datasets", "datasets_version")),
    ("cuda_available", ("cuda_available",)),
)


@dataclass
class _Probe:
    """The 0.11 probe as read, with the seeds its runs belong to (its ``fields`` carry a mean
    accuracy taken from ``probe_baseline`` when the probe itself has none)."""

    fields: dict[str, Any]
    rank: int
    params: int | None
    values: list[float]
    mean: float
    seeds: list[int]
    known_seeds: bool
    per_seed: dict[int, float]


def _compressed(data: dict[str, Any]) -> dict[str, Any]:
    """``compressed``, or ``variant_results`` where a record has only that."""
    compressed = data.get("compressed")
    if compressed is None and isinstance(data.get("variant_results"), dict):
        compressed = data["variant_results"]  # bench_aggregate.json of the certification runs
    if compressed is None:
        required(data, "compressed", "")
    return as_object(compressed, "compressed")


def _policy(data: dict[str, Any], config: Any) -> Policy:
    """0.11's ``safety_policy`` and ``compression.acc_tolerance`` as our Policy."""
    safety: dict[str, Any] = (
        data["safety_policy"] if isinstance(data.get("safety_policy"), dict) else {}
    )
    # 0.11's policy: a worst-seed floor (worst_delta_min) apart from the per-seed tolerance
    # (compression.acc_tolerance) that its pass rate counts; ours: max_drop / seed_max_drop.
    tolerance = _dig(config, "compression", "acc_tolerance")
    tolerance = float(tolerance) if isinstance(tolerance, (int, float)) else None
    floor = safety.get("worst_delta_min")
    max_drop = -float(floor) if isinstance(floor, (int, float)) else tolerance
    seed_max_drop = tolerance if tolerance is not None and max_drop is not None else None
    if seed_max_drop is not None and max_drop is not None and seed_max_drop > max_drop:
        seed_max_drop = max_drop
    try:
        return Policy(
            max_drop=max_drop if max_drop is not None else 0.025,
            min_pass_rate=safety.get("pass_rate_min", 1.0),
            seed_max_drop=seed_max_drop,
        )
    except ConfigError as exc:
        raise field_error("safety_policy", exc.message) from None


def _seeds(data: dict[str, Any], config: Any, n_runs: int) -> list[Any] | None:
    """The seeds of the probe's ``n_runs`` runs, or None where the record does not say."""
    seeds = data.get("seeds") or _dig(config, "train", "seeds")
    if not isinstance(seeds, list) or len(seeds) != n_runs:
        one = _dig(config, "train", "seed")
        seeds = [one] if n_runs == 1 and isinstance(one, int) else None
    return seeds


def _probe(data: dict[str, Any], probe: dict[str, Any], config: Any) -> _Probe:
    """The probe's rank, params and accuracies, keyed by seed (0, 1, ... when unknown)."""
    rank = as_int(required(probe, "rank", "probe."), "probe.rank")
    params = probe.get("params")
    params = int(_scalar(params, "probe.params")) if params is not None else None
    if "accuracy" not in probe and isinstance(data.get("probe_baseline"), dict):
        probe = {**probe, "accuracy": {"mean": data["probe_baseline"].get("accuracy_mean")}}
    values, mean = _values(required(probe, "accuracy", "probe."), "probe.accuracy")
    seeds = _seeds(data, config, len(values))
    known_seeds = seeds is not None
    seeds = [int(s) for s in seeds] if seeds else list(range(len(values)))
    return _Probe(
        fields=probe,
        rank=rank,
        params=params,
        values=values,
        mean=mean,
        seeds=seeds,
        known_seeds=known_seeds,
        per_seed=dict(zip(seeds, values, strict=True)),
    )


def _deltas(v: dict[str, Any], p: str) -> tuple[list[float], float]:
    """A variant's per-run deltas against the probe (none when only ``delta_worst`` is
    recorded) and its worst delta."""
    if v.get("delta_vs_probe") is None and "delta_worst" in v:
        return [], _scalar(v["delta_worst"], f"{p}delta_worst")
    deltas, _ = _values(required(v, "delta_vs_probe", p), f"{p}delta_vs_probe")
    return deltas, min(deltas)


def _per_seed(scores: list[float], deltas: list[float], probe: _Probe) -> dict[int, SeedScore]:
    """A variant's scores by seed, when there is one per seed (deltas as recorded, else
    against the probe's score of that seed); empty otherwise."""
    seeds = probe.seeds
    if len(scores) == len(seeds) and len(deltas) == len(seeds):
        return {s: SeedScore(a, d) for s, a, d in zip(seeds, scores, deltas, strict=True)}
    if len(scores) == len(seeds) and len(probe.values) == len(seeds):
        return {s: SeedScore(a, a - probe.per_seed[s]) for s, a in zip(seeds, scores, strict=True)}
    return {}


def _reduction(
    v: dict[str, Any], p: str, params: int | None, probe_params: int | None
) -> float | None:
    """A variant's parameter reduction: recorded, else from its params and the probe's."""
    reduction = v.get("param_reduction", v.get("param_reduction_mean"))
    if reduction is not None:
        return _scalar(reduction, f"{p}param_reduction")
    if params is not None and probe_params:
        return 1.0 - params / probe_params
    required(v, "param_reduction", p)
    return None


def _verdict(v: dict[str, Any], p: str) -> str:
    """A variant's recorded verdict ("" for an aggregate, which carries none)."""
    if "verdict" in v:
        return as_verdict(v["verdict"], f"{p}verdict")
    if "verdict_distribution" in v or "pass_rate" in v:
        return ""  # aggregates carry no verdict: the re-judging computes it
    return as_verdict(required(v, "verdict", p), f"{p}verdict")


def _variant(name: str, item: Any, probe: _Probe, warnings: list[str]) -> VariantRecord | None:
    """One ``compressed.<name>`` entry as a VariantRecord; None (and a warning) for a variant
    that has no results."""
    p = f"compressed.{name}."
    v = as_object(item, p.rstrip("."))
    acc_raw = v.get("accuracy", v.get("accuracy_mean"))
    if acc_raw is None and str(v.get("status", "")).lower() in _SKIPPED:
        warnings.append(f"variant {name} has no results (status {v['status']})")
        return None
    if acc_raw is None:
        required(v, "accuracy", p)
    scores, mean = _values(acc_raw, f"{p}accuracy")
    deltas, worst = _deltas(v, p)
    per_seed = _per_seed(scores, deltas, probe)
    params = v.get("params")
    params = int(_scalar(params, f"{p}params")) if params is not None else None
    reduction = _reduction(v, p, params, probe.params)
    pass_rate = as_number(v["pass_rate"], f"{p}pass_rate") if "pass_rate" in v else None
    verdict = _verdict(v, p)
    if pass_rate is None and not per_seed:
        pass_rate = 1.0 if verdict == PASS else 0.0
    pattern = v.get("rank_pattern")
    return VariantRecord(
        name=str(name),
        params=params,
        param_reduction=reduction,
        per_seed=per_seed,
        mean=mean,
        worst_delta=worst,
        pass_rate=pass_rate,
        p_value=None,
        verdict=verdict,
        rank=as_int(v.get("rank"), f"{p}rank", optional=True),
        rank_pattern=(
            {str(k): int(r) for k, r in pattern.items()} if isinstance(pattern, dict) else None
        ),
    )


def _recommendation(
    summary: dict[str, Any], variants: list[VariantRecord], warnings: list[str]
) -> Recommendation | None:
    """The summary's recommended variant, when it names one with results (else a warning)."""
    best = summary.get("recommendation", summary.get("best_compression"))
    if isinstance(best, dict):
        best = best.get("variant")
    if not (isinstance(best, str) and best and best.lower() != "none"):
        return None
    try:
        reduction = next(v.param_reduction for v in variants if v.name == best)
    except StopIteration:
        warnings.append(f"summary recommends {best}, which has no results in the record")
        return None
    return Recommendation(best, reduction)


def _status(summary: dict[str, Any]) -> str:
    """The summary's status when it is one of ours, else ""."""
    status = summary.get("status")
    # a status that is not ours is left for the re-judging to compute
    status = status.upper() if isinstance(status, str) else ""
    return status if status in RECORD_STATUSES else ""


def _task(data: dict[str, Any], config: Any) -> TaskInfo:
    """The task's name, metric (without 0.11's ``eval_`` prefix) and eval examples."""
    eval_examples = _dig(config, "train", "eval_samples") or _dig(
        config, "task", "eval_max_samples"
    )
    eval_examples = eval_examples if isinstance(eval_examples, int) else None
    metric = str(_dig(data, "config_metadata", "primary_metric_key") or "accuracy")
    metric = metric.removeprefix("eval_")
    return TaskInfo(
        name=str(data.get("task") or "unknown"), metric=metric, eval_examples=eval_examples
    )


def _environment(env: dict[str, Any]) -> dict[str, Any]:
    """0.11's ``env`` under our environment keys (unset ones left out)."""
    environment: dict[str, Any] = {}
    for key, names in _ENVIRONMENT_KEYS:
        value = next((env[n] for n in names if env.get(n) is not None), None)
        if value is not None:
            environment[key] = value
    return environment


def _extra(
    version: str, env: dict[str, Any], data: dict[str, Any], probe: _Probe
) -> dict[str, Any]:
    """``protocol`` extras: where the record came from, its validation level, unknown seeds."""
    extra: dict[str, Any] = {"imported_from": f"gradience-bench {version}"}
    level = _dig(env, "validation_classification", "level") or data.get("validation_level")
    if level:
        extra["validation_level"] = level
    if not probe.known_seeds:
        extra["seeds_unknown"] = True
    return extra


def _audit(probe: _Probe) -> dict[str, Any]:
    """The probe's audit fields, its rank and params filled in where it has none."""
    audit = audit_fields(probe.fields)
    audit.setdefault("allocated_rank", probe.rank)
    if probe.params is not None:
        audit.setdefault("lora_params", probe.params)
    return audit


def read_v011(data: dict[str, Any]) -> BenchRecord:
    """gradience 0.11's ``gradience-bench`` output (single-seed bench.json or the multi-seed
    aggregate) -> BenchRecord. Its protocol is always retrain (probe, audit, retrain)."""
    version = str(data["bench_version"])
    probe_fields = as_object(required(data, "probe", ""), "probe")
    compressed = _compressed(data)
    summary = as_object(required(data, "summary", ""), "summary")
    config = _dig(data, "config_metadata", "embedded_config") or {}
    env: dict[str, Any] = data["env"] if isinstance(data.get("env"), dict) else {}
    policy = _policy(data, config)
    probe = _probe(data, probe_fields, config)
    warnings: list[str] = []
    variants: list[VariantRecord] = []
    for name, item in compressed.items():
        variant = _variant(name, item, probe, warnings)
        if variant is not None:
            variants.append(variant)
    recommendation = _recommendation(summary, variants, warnings)
    status = _status(summary)
    task = _task(data, config)
    environment = _environment(env)
    extra = _extra(version, env, data, probe)
    model = data.get("model")
    audit = _audit(probe)
    return BenchRecord(
        adapter=AdapterInfo(
            source=str(model) if model else "gradience-bench probe",
            base_model=str(model) if model else None,
            allocated_rank=probe.rank,
            lora_params=probe.params,
        ),
        task=task,
        protocol=ProtocolInfo(kind="retrain", seeds=probe.seeds, extra=extra),
        policy=policy,
        probe=ProbeRecord(
            rank=probe.rank, params=probe.params, per_seed=probe.per_seed, mean=probe.mean
        ),
        variants=variants,
        status=status,
        recommendation=recommendation,
        audit=audit,
        warnings=warnings,
        environment=environment,
        tool={"name": "gradience-bench", "version": version},
        created_at=str(data.get("timestamp") or data.get("aggregation_timestamp") or ""),
    )
