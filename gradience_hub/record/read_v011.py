"""Reading gradience 0.11's bench.json: ``gradience-bench``'s canonical output.

gradience 0.11 writes ``bench.json`` (one seed) and ``bench_aggregate.json`` (several) with its
own keys (``bench_version``, ``probe``, ``compressed.<variant>``, ``summary``) and several shapes
per metric (a number, a list, or ``{"mean", "std", "values"}``). This reader maps them onto our
model, so the card, the PR comment and the Action render either format. It is a compatibility
layer for a format we do not write, kept apart from our own schema's reader
(:mod:`gradience_hub.record.read_v1`); both use :mod:`gradience_hub.record.fields`.
"""

from __future__ import annotations

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


def read_v011(data: dict[str, Any]) -> BenchRecord:
    """gradience 0.11's ``gradience-bench`` output (single-seed bench.json or the multi-seed
    aggregate) -> BenchRecord. Its protocol is always retrain (probe, audit, retrain)."""
    version = str(data["bench_version"])
    probe = as_object(required(data, "probe", ""), "probe")
    compressed = data.get("compressed")
    if compressed is None and isinstance(data.get("variant_results"), dict):
        compressed = data["variant_results"]  # bench_aggregate.json of the certification runs
    if compressed is None:
        required(data, "compressed", "")
    compressed = as_object(compressed, "compressed")
    summary = as_object(required(data, "summary", ""), "summary")
    config = _dig(data, "config_metadata", "embedded_config") or {}
    env: dict[str, Any] = data["env"] if isinstance(data.get("env"), dict) else {}
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
        policy = Policy(
            max_drop=max_drop if max_drop is not None else 0.025,
            min_pass_rate=safety.get("pass_rate_min", 1.0),
            seed_max_drop=seed_max_drop,
        )
    except ConfigError as exc:
        raise field_error("safety_policy", exc.message) from None

    probe_rank = as_int(required(probe, "rank", "probe."), "probe.rank")
    probe_params = probe.get("params")
    probe_params = int(_scalar(probe_params, "probe.params")) if probe_params is not None else None
    if "accuracy" not in probe and isinstance(data.get("probe_baseline"), dict):
        probe = {**probe, "accuracy": {"mean": data["probe_baseline"].get("accuracy_mean")}}
    probe_values, probe_mean = _values(required(probe, "accuracy", "probe."), "probe.accuracy")

    seeds = data.get("seeds") or _dig(config, "train", "seeds")
    if not isinstance(seeds, list) or len(seeds) != len(probe_values):
        one = _dig(config, "train", "seed")
        seeds = [one] if len(probe_values) == 1 and isinstance(one, int) else None
    known_seeds = seeds is not None
    seeds = [int(s) for s in seeds] if seeds else list(range(len(probe_values)))
    probe_per_seed = dict(zip(seeds, probe_values, strict=True))

    warnings: list[str] = []
    variants: list[VariantRecord] = []
    for name, item in compressed.items():
        p = f"compressed.{name}."
        v = as_object(item, p.rstrip("."))
        acc_raw = v.get("accuracy", v.get("accuracy_mean"))
        if acc_raw is None and str(v.get("status", "")).lower() in _SKIPPED:
            warnings.append(f"variant {name} has no results (status {v['status']})")
            continue
        if acc_raw is None:
            required(v, "accuracy", p)
        scores, mean = _values(acc_raw, f"{p}accuracy")
        delta_raw = v.get("delta_vs_probe")
        deltas: list[float] = []
        if delta_raw is None and "delta_worst" in v:
            worst = _scalar(v["delta_worst"], f"{p}delta_worst")
        else:
            deltas, _ = _values(required(v, "delta_vs_probe", p), f"{p}delta_vs_probe")
            worst = min(deltas)
        per_seed: dict[int, SeedScore] = {}
        if len(scores) == len(seeds) and len(deltas) == len(seeds):
            per_seed = {s: SeedScore(a, d) for s, a, d in zip(seeds, scores, deltas, strict=True)}
        elif len(scores) == len(seeds) and len(probe_values) == len(seeds):
            per_seed = {
                s: SeedScore(a, a - probe_per_seed[s]) for s, a in zip(seeds, scores, strict=True)
            }
        params = v.get("params")
        params = int(_scalar(params, f"{p}params")) if params is not None else None
        reduction = v.get("param_reduction", v.get("param_reduction_mean"))
        if reduction is not None:
            reduction = _scalar(reduction, f"{p}param_reduction")
        elif params is not None and probe_params:
            reduction = 1.0 - params / probe_params
        else:
            required(v, "param_reduction", p)
        pass_rate = as_number(v["pass_rate"], f"{p}pass_rate") if "pass_rate" in v else None
        if "verdict" in v:
            verdict = as_verdict(v["verdict"], f"{p}verdict")
        elif "verdict_distribution" in v or "pass_rate" in v:
            verdict = ""  # aggregates carry no verdict: the re-judging computes it
        else:
            verdict = as_verdict(required(v, "verdict", p), f"{p}verdict")
        if pass_rate is None and not per_seed:
            pass_rate = 1.0 if verdict == PASS else 0.0
        pattern = v.get("rank_pattern")
        variants.append(
            VariantRecord(
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
                    {str(k): int(r) for k, r in pattern.items()}
                    if isinstance(pattern, dict)
                    else None
                ),
            )
        )

    best = summary.get("recommendation", summary.get("best_compression"))
    if isinstance(best, dict):
        best = best.get("variant")
    recommendation = None
    if isinstance(best, str) and best and best.lower() != "none":
        try:
            reduction = next(v.param_reduction for v in variants if v.name == best)
        except StopIteration:
            warnings.append(f"summary recommends {best}, which has no results in the record")
        else:
            recommendation = Recommendation(best, reduction)
    status = summary.get("status")
    # a status that is not ours is left for the re-judging to compute
    status = status.upper() if isinstance(status, str) else ""
    status = status if status in RECORD_STATUSES else ""

    eval_examples = _dig(config, "train", "eval_samples") or _dig(
        config, "task", "eval_max_samples"
    )
    eval_examples = eval_examples if isinstance(eval_examples, int) else None
    metric = str(_dig(data, "config_metadata", "primary_metric_key") or "accuracy")
    metric = metric.removeprefix("eval_")

    def env_get(*names: str) -> Any:
        return next((env[n] for n in names if env.get(n) is not None), None)

    environment = {
        key: value
        for key, value in (
            ("python", env_get("python", "python_version")),
            ("platform", env_get("platform")),
            ("numpy", env_get("numpy", "numpy_version")),
            ("torch", env_get("torch", "torch_version")),
            ("peft", env_get("peft", "peft_version")),
            ("transformers", env_get("transformers", "transformers_version")),
            ("datasets", env_get("datasets", "datasets_version")),
            ("cuda_available", env_get("cuda_available")),
        )
        if value is not None
    }
    extra: dict[str, Any] = {"imported_from": f"gradience-bench {version}"}
    level = _dig(env, "validation_classification", "level") or data.get("validation_level")
    if level:
        extra["validation_level"] = level
    if not known_seeds:
        extra["seeds_unknown"] = True
    model = data.get("model")
    audit = audit_fields(probe)
    audit.setdefault("allocated_rank", probe_rank)
    if probe_params is not None:
        audit.setdefault("lora_params", probe_params)
    return BenchRecord(
        adapter=AdapterInfo(
            source=str(model) if model else "gradience-bench probe",
            base_model=str(model) if model else None,
            allocated_rank=probe_rank,
            lora_params=probe_params,
        ),
        task=TaskInfo(
            name=str(data.get("task") or "unknown"), metric=metric, eval_examples=eval_examples
        ),
        protocol=ProtocolInfo(kind="retrain", seeds=seeds, extra=extra),
        policy=policy,
        probe=ProbeRecord(
            rank=probe_rank, params=probe_params, per_seed=probe_per_seed, mean=probe_mean
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
