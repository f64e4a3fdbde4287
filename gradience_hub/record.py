"""bench.json: the BenchRecord model, its I/O, and the bench.md table.

One model for two formats: ours (``"schema": "gradience-hub/bench/v1"``, DESIGN.md) and the
canonical ``bench.json`` (and multi-seed ``bench_aggregate.json``) written by gradience 0.11's
``gradience-bench`` (``bench_version``, ``probe``, ``compressed.<variant>``, ``summary``), so the
card, the PR comment and the Action render either. Reading is strict about fields a verdict
depends on (a missing one raises :class:`RecordError` naming it) and lenient about shapes: a
0.11 metric may be a number (one seed), a list, or ``{"mean", "std", "values"}``.

Build a record from the policy's answer with :meth:`BenchRecord.from_decision`.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gradience_hub import __version__
from gradience_hub.bench.policy import FAIL, PASS, Decision, Policy, metric_se, noise_floor_warning
from gradience_hub.errors import ConfigError, RecordError

SCHEMA = "gradience-hub/bench/v1"

# The audit summary fields a record carries (gradience 0.11 names, DESIGN.md).
AUDIT_FIELDS = (
    "allocated_rank",
    "lora_params",
    "n_layers",
    "stable_rank_mean",
    "utilization_mean",
    "energy_rank_90_p50",
    "energy_rank_90_p90",
    "suggested_r_global_median",
    "suggested_r_global_90",
)


# --------------------------------------------------------------------------- the model


@dataclass
class AdapterInfo:
    """The adapter that was benched (bench.json ``adapter``)."""

    source: str
    revision: str | None = None
    base_model: str | None = None
    allocated_rank: int | None = None
    lora_params: int | None = None


@dataclass
class TaskInfo:
    """What the metric was measured on (bench.json ``task``)."""

    name: str
    metric: str = "accuracy"
    eval_examples: int | None = None


@dataclass
class ProtocolInfo:
    """How the cells were run: ``kind`` (posthoc | retrain), ``seeds``, and free-form
    ``extra`` keys (steps, device, ...) written beside them."""

    kind: str
    seeds: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """bench.json ``protocol``."""
        return {"kind": self.kind, "seeds": list(self.seeds), **self.extra}


@dataclass
class ProbeRecord:
    """The uncompressed adapter's scores (bench.json ``probe``)."""

    rank: int | None
    params: int | None
    per_seed: dict[int, float]
    mean: float

    @classmethod
    def from_scores(
        cls, rank: int | None, params: int | None, per_seed: Mapping[int, float]
    ) -> ProbeRecord:
        """A probe record with its mean computed."""
        scores = {int(k): float(v) for k, v in per_seed.items()}
        if not scores:
            raise RecordError("the probe has no scores")
        return cls(rank, params, scores, sum(scores.values()) / len(scores))

    def to_dict(self) -> dict[str, Any]:
        """bench.json ``probe``."""
        return {
            "rank": self.rank,
            "params": self.params,
            "per_seed": {str(k): v for k, v in self.per_seed.items()},
            "mean": self.mean,
        }


@dataclass(frozen=True)
class SeedScore:
    """One seed of a variant: its score and its delta against the probe of that seed."""

    score: float
    delta: float


@dataclass
class VariantRecord:
    """One compressed variant (bench.json ``variants[]``). ``rank`` for uniform variants,
    ``rank_pattern`` (module -> r) for per-layer ones."""

    name: str
    params: int | None
    param_reduction: float | None
    per_seed: dict[int, SeedScore]
    mean: float | None
    worst_delta: float | None
    pass_rate: float | None
    p_value: float | None
    verdict: str
    rank: int | None = None
    rank_pattern: dict[str, int] | None = None
    p_value_test: str | None = None

    @property
    def passed(self) -> bool:
        """True for a PASS verdict."""
        return self.verdict == PASS

    def to_dict(self) -> dict[str, Any]:
        """bench.json ``variants[]`` item."""
        out: dict[str, Any] = {"name": self.name}
        if self.rank_pattern is not None:
            out["rank_pattern"] = dict(self.rank_pattern)
        else:
            out["rank"] = self.rank
        out.update(
            params=self.params,
            param_reduction=self.param_reduction,
            per_seed={
                str(k): {"score": v.score, "delta": v.delta} for k, v in self.per_seed.items()
            },
            mean=self.mean,
            worst_delta=self.worst_delta,
            pass_rate=self.pass_rate,
            p_value=self.p_value,
            p_value_test=self.p_value_test,
            verdict=self.verdict,
        )
        return out


@dataclass
class Recommendation:
    """The passing variant with the largest parameter reduction."""

    variant: str
    param_reduction: float | None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment_info() -> dict[str, Any]:
    """Versions that shaped the numbers, read from package metadata (nothing is imported, so
    this is cheap and safe on the core install; absent packages are left out)."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gradience_hub": __version__,
    }
    for package in ("numpy", "torch", "peft", "transformers", "datasets", "safetensors"):
        version = _package_version(package)
        if version:
            env[package] = version
    return env


@dataclass
class BenchRecord:
    """What ``gradience-hub bench`` decided; :meth:`to_dict` is bench.json."""

    adapter: AdapterInfo
    task: TaskInfo
    protocol: ProtocolInfo
    policy: Policy
    probe: ProbeRecord
    variants: list[VariantRecord]
    status: str
    recommendation: Recommendation | None
    metric_se: float | None = None
    audit: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    tool: dict[str, Any] = field(
        default_factory=lambda: {"name": "gradience-hub", "version": __version__}
    )
    created_at: str = field(default_factory=_now)

    @property
    def passed(self) -> bool:
        """True when the record's status is PASS."""
        return self.status == PASS

    def variant(self, name: str) -> VariantRecord:
        """A variant by name (KeyError when absent)."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    # ------------------------------------------------------------------ building

    @classmethod
    def from_decision(
        cls,
        decision: Decision,
        *,
        adapter: AdapterInfo,
        task: TaskInfo,
        protocol: ProtocolInfo,
        probe: ProbeRecord,
        ranks: Mapping[str, int | Mapping[str, int]] | None = None,
        audit: Mapping[str, Any] | None = None,
        warnings: Sequence[str] = (),
        environment: Mapping[str, Any] | None = None,
    ) -> BenchRecord:
        """Assemble a record from :func:`gradience_hub.bench.policy.decide`'s answer.

        ``ranks`` maps variant name -> an int (uniform rank) or a module -> rank mapping (a
        per-layer ``rank_pattern``); ``audit`` may be a full audit summary (only the
        :data:`AUDIT_FIELDS` are kept); ``environment`` defaults to :func:`environment_info`.
        """
        ranks = ranks or {}
        variants = []
        for v in decision.variants:
            spec = ranks.get(v.name)
            variants.append(
                VariantRecord(
                    name=v.name,
                    params=v.params,
                    param_reduction=v.param_reduction,
                    per_seed={s: SeedScore(o.score, o.delta) for s, o in v.per_seed.items()},
                    mean=v.mean,
                    worst_delta=v.worst_delta,
                    pass_rate=v.pass_rate,
                    p_value=v.p_value,
                    p_value_test=v.p_value_test,
                    verdict=v.verdict,
                    rank=int(spec) if isinstance(spec, int) else None,
                    rank_pattern=(
                        {str(k): int(r) for k, r in spec.items()}
                        if isinstance(spec, Mapping)
                        else None
                    ),
                )
            )
        best = decision.recommendation
        return cls(
            adapter=adapter,
            task=task,
            protocol=protocol,
            policy=decision.policy,
            probe=probe,
            variants=variants,
            status=decision.status,
            recommendation=Recommendation(best.name, best.param_reduction) if best else None,
            metric_se=decision.metric_se,
            audit={k: audit[k] for k in AUDIT_FIELDS if k in audit} if audit else {},
            warnings=[*decision.warnings, *warnings],
            environment=dict(environment) if environment is not None else environment_info(),
        )

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """The bench.json document (DESIGN.md key order)."""
        return {
            "schema": SCHEMA,
            "tool": dict(self.tool),
            "created_at": self.created_at,
            "adapter": {
                "source": self.adapter.source,
                "revision": self.adapter.revision,
                "base_model": self.adapter.base_model,
                "allocated_rank": self.adapter.allocated_rank,
                "lora_params": self.adapter.lora_params,
            },
            "task": {
                "name": self.task.name,
                "metric": self.task.metric,
                "eval_examples": self.task.eval_examples,
            },
            "protocol": self.protocol.to_dict(),
            "policy": self.policy.to_dict(),
            "audit": dict(self.audit),
            "probe": self.probe.to_dict(),
            "variants": [v.to_dict() for v in self.variants],
            "recommendation": (
                {
                    "variant": self.recommendation.variant,
                    "param_reduction": self.recommendation.param_reduction,
                }
                if self.recommendation
                else None
            ),
            "status": self.status,
            "noise_floor": {"metric_se": self.metric_se},
            "warnings": list(self.warnings),
            "environment": dict(self.environment),
        }

    def to_json(self) -> str:
        """bench.json text (2-space indent, trailing newline)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> BenchRecord:
        """Read a bench.json document: ours, or gradience 0.11's canonical one."""
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            return _from_ours(data)
        if isinstance(data, dict) and "bench_version" in data:
            return _from_gradience(data)
        schema = data.get("schema") if isinstance(data, dict) else None
        raise RecordError(
            f"not a bench.json (schema {schema!r}, no bench_version)",
            hint=f"pass a file written by 'gradience-hub bench' ({SCHEMA}) or gradience-bench",
        )


def _recommend(variants: Sequence[VariantRecord]) -> Recommendation | None:
    """The policy's rule (:func:`gradience_hub.bench.policy.recommend`) on recorded variants."""
    passing = [v for v in variants if v.passed]
    if not passing:
        return None
    best = min(
        passing,
        key=lambda v: (
            -(v.param_reduction or 0.0),
            -(v.worst_delta if v.worst_delta is not None else -math.inf),
            v.name,
        ),
    )
    return Recommendation(best.name, best.param_reduction)


def with_policy(
    record: BenchRecord, *, max_drop: float | None = None, min_pass_rate: float | None = None
) -> BenchRecord:
    """The same measurements judged under another policy (e.g. ``--max-drop`` at publish time).

    Every variant's pass rate and verdict are recomputed from its per-seed deltas (or, for a
    record without them, from its worst delta and recorded pass rate); status, recommendation
    and the noise-floor warning follow. Scores, deltas and p-values do not depend on the policy
    and are kept. The input record is not modified.
    """
    import copy

    policy = Policy(  # validates: a bad --max-drop is a ConfigError naming policy.max_drop
        max_drop=record.policy.max_drop if max_drop is None else max_drop,
        min_pass_rate=record.policy.min_pass_rate if min_pass_rate is None else min_pass_rate,
    )
    new = copy.deepcopy(record)
    new.policy = policy
    for v in new.variants:
        if v.per_seed:
            deltas = [s.delta for s in v.per_seed.values()]
            v.worst_delta = min(deltas)
            v.pass_rate = sum(policy.seed_passes(d) for d in deltas) / len(deltas)
        if v.worst_delta is None:
            continue  # nothing to re-judge: keep the recorded verdict
        rate = v.pass_rate if v.pass_rate is not None else 0.0
        ok = policy.seed_passes(v.worst_delta) and rate >= policy.min_pass_rate - 1e-12
        v.verdict = PASS if ok else FAIL
    new.status = PASS if any(v.passed for v in new.variants) else FAIL
    new.recommendation = _recommend(new.variants)
    old_floor = noise_floor_warning(record.policy, record.metric_se)
    new.warnings = [w for w in new.warnings if w != old_floor]
    floor = noise_floor_warning(policy, record.metric_se)
    if floor:
        new.warnings.append(floor)
    return new


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


def load_bench(path: str | Path) -> BenchRecord:
    """Read a bench.json file (ours or gradience 0.11's) into a :class:`BenchRecord`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"bench file not found: {path}", hint="check the --bench path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(
            f"{path} is not valid JSON: {exc}", hint="regenerate it with gradience-hub bench"
        ) from None
    return BenchRecord.from_dict(data)


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


# --------------------------------------------------------------------------- gradience 0.11


def _values(value: Any, path: str) -> tuple[list[float], float]:
    """A 0.11 metric in any of its shapes -> (per-seed values, mean)."""
    if isinstance(value, dict):
        raw = value.get("values")
        if raw is None:
            mean = _number(_req(value, "mean", f"{path}."), f"{path}.mean")
            return [mean], mean  # type: ignore[list-item, return-value]
        value = raw
    if isinstance(value, list):
        if not value:
            raise _fail(path, "is an empty list")
        values = [_number(x, f"{path}[{i}]") for i, x in enumerate(value)]
        return values, sum(values) / len(values)  # type: ignore[arg-type, return-value]
    number = _number(value, path)
    return [number], number  # type: ignore[list-item, return-value]


def _scalar(value: Any, path: str) -> float:
    """A number, or the mean of a 0.11 aggregate ``{"mean", ...}``."""
    if isinstance(value, dict):
        return _number(_req(value, "mean", f"{path}."), f"{path}.mean")  # type: ignore[return-value]
    return _number(value, path)  # type: ignore[return-value]


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


_SKIPPED = ("no_data", "failed", "skipped", "error", "not_run")


def _from_gradience(data: dict[str, Any]) -> BenchRecord:
    """gradience 0.11's ``gradience-bench`` output (single-seed bench.json or the multi-seed
    aggregate) -> BenchRecord. Its protocol is always retrain (probe, audit, retrain)."""
    version = str(data["bench_version"])
    probe = _obj(_req(data, "probe", ""), "probe")
    compressed = data.get("compressed")
    if compressed is None and isinstance(data.get("variant_results"), dict):
        compressed = data["variant_results"]  # bench_aggregate.json of the certification runs
    if compressed is None:
        _req(data, "compressed", "")
    compressed = _obj(compressed, "compressed")
    summary = _obj(_req(data, "summary", ""), "summary")
    config = _dig(data, "config_metadata", "embedded_config") or {}
    env: dict[str, Any] = data["env"] if isinstance(data.get("env"), dict) else {}
    safety: dict[str, Any] = (
        data["safety_policy"] if isinstance(data.get("safety_policy"), dict) else {}
    )
    max_drop = (
        -float(safety["worst_delta_min"])
        if isinstance(safety.get("worst_delta_min"), (int, float))
        else _dig(config, "compression", "acc_tolerance")
    )
    try:
        policy = Policy(
            max_drop=float(max_drop) if isinstance(max_drop, (int, float)) else 0.025,
            min_pass_rate=safety.get("pass_rate_min", 1.0),
        )
    except ConfigError as exc:
        raise _fail("safety_policy", exc.message) from None

    probe_rank = _integer(_req(probe, "rank", "probe."), "probe.rank")
    probe_params = probe.get("params")
    probe_params = int(_scalar(probe_params, "probe.params")) if probe_params is not None else None
    if "accuracy" not in probe and isinstance(data.get("probe_baseline"), dict):
        probe = {**probe, "accuracy": {"mean": data["probe_baseline"].get("accuracy_mean")}}
    probe_values, probe_mean = _values(_req(probe, "accuracy", "probe."), "probe.accuracy")

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
        v = _obj(item, p.rstrip("."))
        acc_raw = v.get("accuracy", v.get("accuracy_mean"))
        if acc_raw is None and str(v.get("status", "")).lower() in _SKIPPED:
            warnings.append(f"variant {name} has no results (status {v['status']})")
            continue
        if acc_raw is None:
            _req(v, "accuracy", p)
        scores, mean = _values(acc_raw, f"{p}accuracy")
        delta_raw = v.get("delta_vs_probe")
        deltas: list[float] = []
        if delta_raw is None and "delta_worst" in v:
            worst = _scalar(v["delta_worst"], f"{p}delta_worst")
        else:
            deltas, _ = _values(_req(v, "delta_vs_probe", p), f"{p}delta_vs_probe")
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
            _req(v, "param_reduction", p)
        if "pass_rate" in v:
            pass_rate = _number(v["pass_rate"], f"{p}pass_rate")
        elif per_seed:
            pass_rate = sum(policy.seed_passes(c.delta) for c in per_seed.values()) / len(per_seed)
        else:
            pass_rate = None
        if "verdict" in v:
            verdict = _verdict(v["verdict"], f"{p}verdict")
        elif "verdict_distribution" in v or "pass_rate" in v:
            # aggregates carry no verdict: apply the recorded policy to the recorded figures
            rate = pass_rate if pass_rate is not None else 0.0
            ok = policy.seed_passes(worst) and rate >= policy.min_pass_rate - 1e-12
            verdict = PASS if ok else FAIL
        else:
            verdict = _verdict(_req(v, "verdict", p), f"{p}verdict")
        pattern = v.get("rank_pattern")
        variants.append(
            VariantRecord(
                name=str(name),
                params=params,
                param_reduction=reduction,
                per_seed=per_seed,
                mean=mean,
                worst_delta=worst,
                pass_rate=pass_rate if pass_rate is not None else (1.0 if verdict == PASS else 0.0),
                p_value=None,
                verdict=verdict,
                rank=_integer(v.get("rank"), f"{p}rank", optional=True),
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
    if isinstance(status, str) and status.upper() in (PASS, FAIL):
        status = status.upper()
    else:
        status = PASS if any(v.passed for v in variants) else FAIL

    eval_examples = _dig(config, "train", "eval_samples") or _dig(
        config, "task", "eval_max_samples"
    )
    eval_examples = eval_examples if isinstance(eval_examples, int) else None
    se = metric_se(probe_mean, eval_examples) if eval_examples else None
    floor = noise_floor_warning(policy, se)
    if floor:
        warnings.append(floor)
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
    audit = {k: probe[k] for k in AUDIT_FIELDS if k in probe}
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
        metric_se=se,
        audit=audit,
        warnings=warnings,
        environment=environment,
        tool={"name": "gradience-bench", "version": version},
        created_at=str(data.get("timestamp") or data.get("aggregation_timestamp") or ""),
    )


# --------------------------------------------------------------------------- bench.md

# Minimum column widths of the table (the layout of the example).
_WIDTHS = (27, 13, 10, 9)


def _pct(x: float | None) -> str:
    """0.5 -> '50%', 0.028 -> '2.8%': whole percentages without a decimal."""
    if x is None:
        return "n/a"
    v = x * 100
    return f"{round(v)}%" if abs(v - round(v)) < 0.05 else f"{v:.1f}%"


def _signed_pct(x: float | None) -> str:
    if x is None:
        return "n/a"
    text = f"{x * 100:+.1f}%"
    return "0.0%" if text in ("+0.0%", "-0.0%") else text


def variant_label(v: VariantRecord) -> str:
    """``uniform_median (r=32)``, ``per_layer (audit-guided)`` or ``name (r=2-16)``."""
    if v.rank is not None:
        return f"{v.name} (r={v.rank})"
    if v.rank_pattern:
        if v.name.startswith("per_layer"):
            return f"{v.name} (audit-guided)"
        lo, hi = min(v.rank_pattern.values()), max(v.rank_pattern.values())
        return f"{v.name} (r={lo})" if lo == hi else f"{v.name} (r={lo}-{hi})"
    return v.name


def format_table(record: BenchRecord) -> str:
    """The plain-text variants table (Variant, Compression, Mean, Worst Δ, Status)."""
    metric = "acc" if record.task.metric.lower() in ("accuracy", "acc") else record.task.metric
    rows = [["Variant", "Compression", f"Mean {metric}", "Worst Δ", "Status"]]
    for v in record.variants:
        mean = f"{v.mean * 100:.1f}%" if v.mean is not None else "n/a"
        rows.append(
            [variant_label(v), _pct(v.param_reduction), mean, _signed_pct(v.worst_delta), v.verdict]
        )
    widths = [
        max(minimum, max(len(row[i]) for row in rows) + 2) for i, minimum in enumerate(_WIDTHS)
    ]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append(("".join(cells) + row[-1]).rstrip())
    return "\n".join(lines) + "\n"


def to_markdown(record: BenchRecord) -> str:
    """bench.md: a status heading, the facts that frame the verdict, and the table (fenced,
    so it reads the same on the Hub and in a terminal)."""
    pol = record.policy
    rate = (
        "every seed"
        if pol.min_pass_rate >= 1.0
        else f"at least {pol.min_pass_rate * 100:.0f}% of seeds"
    )
    seeds = ", ".join(str(s) for s in record.protocol.seeds) or "none"
    if record.recommendation:
        rec = record.recommendation
        try:
            label = variant_label(record.variant(rec.variant))
        except KeyError:
            label = rec.variant
        recommendation = f"{label}, {_pct(rec.param_reduction)} fewer LoRA parameters"
    else:
        recommendation = "none (no variant passed; keep the uncompressed adapter)"
    task = f"{record.task.name} ({record.task.metric}"
    if record.task.eval_examples:
        task += f", {record.task.eval_examples} eval examples"
    task += ")"
    if record.metric_se is not None:
        task += f"; noise floor ±{record.metric_se * 100:.1f} points"
    probe = f"{record.probe.mean * 100:.1f}% mean"
    if record.probe.rank is not None:
        probe = f"r={record.probe.rank}, " + probe
    lines = [
        f"# Compression bench: {record.status}",
        "",
        f"- Recommendation: {recommendation}",
        f"- Policy: worst-seed drop at most {pol.max_drop * 100:.1f} points, on {rate}",
        f"- Protocol: {record.protocol.kind}, seeds {seeds}",
        f"- Task: {task}",
        f"- Uncompressed adapter: {probe}",
        "",
        "```text",
        format_table(record).rstrip("\n"),
        "```",
    ]
    if record.warnings:
        lines += ["", *[f"Warning: {w}" for w in record.warnings]]
    return "\n".join(lines) + "\n"


__all__ = [
    "SCHEMA",
    "AdapterInfo",
    "BenchRecord",
    "ProbeRecord",
    "ProtocolInfo",
    "Recommendation",
    "SeedScore",
    "TaskInfo",
    "VariantRecord",
    "environment_info",
    "format_table",
    "load_bench",
    "save_bench",
    "to_markdown",
    "variant_label",
    "with_policy",
]
