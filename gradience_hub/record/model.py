"""bench.json: the BenchRecord model.

One model for two formats: ours (``"schema": "gradience-hub/bench/v1"``) and the canonical
 ``bench.json`` (and multi-seed ``bench_aggregate.json``) written by gradience 0.11's
``gradience-bench`` (``bench_version``, ``probe``, ``compressed.<variant>``, ``summary``), so the
card, the PR comment and the Action render either. Reading is strict about fields a verdict
depends on (a missing one raises :class:`RecordError` naming it) and lenient about shapes: a
0.11 metric may be a number (one seed), a list, or ``{"mean", "std", "values"}``.

Build a record from the policy's answer with :meth:`BenchRecord.from_decision`.

This module holds the model and its writing (:meth:`BenchRecord.to_dict`); reading is
:mod:`gradience_hub.record.io`, re-judging :mod:`gradience_hub.record.judge`.
"""

from __future__ import annotations

import copy
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from gradience_hub import __version__
from gradience_hub.errors import RecordError
from gradience_hub.policy import (
    INTERVAL_METHOD,
    LEVEL,
    PASS,
    TEST_MCNEMAR,
    Decision,
    Interval,
    Pairs,
    Policy,
)

SCHEMA = "gradience-hub/bench/v1"

# The audit summary fields a record carries (gradience 0.11 names where they mean the same; the
# energy ranks as energy_fields below normalises them).
AUDIT_FIELDS = (
    "allocated_rank",
    "lora_params",
    "n_layers",
    "stable_rank_mean",
    "utilization_mean",
    "energy_threshold",
    "energy_rank_p50",
    "energy_rank_p90",
    "energy_rank_90_p50",
    "energy_rank_90_p90",
    "suggested_r_global_median",
    "suggested_r_global_90",
)


# gradience 0.11 names the energy-rank percentiles for the 0.90 threshold it always used.
# Ours hold k at whatever threshold was asked (``energy_threshold``), so they are named for no
# threshold; the 0.11 names are written as aliases only when the threshold is 0.90, where
# they mean the same.
V011_ENERGY_ALIASES = {
    "energy_rank_p50": "energy_rank_90_p50",
    "energy_rank_p90": "energy_rank_90_p90",
}
_V011_THRESHOLD = 0.9


def energy_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The energy-rank fields of an audit summary, normalised: ``energy_threshold`` (0.90 when
    absent, as in gradience 0.11), ``energy_rank_p50``/``_p90``, and the 0.11 aliases
    ``energy_rank_90_p50``/``_p90`` exactly when the threshold is 0.90.

    Reads summaries of every vintage: ours (new names), gradience 0.11's (only the 0.11 names,
    threshold 0.90), and audit.json written before the rename, whose 0.11-named fields held k
    at its ``energy_threshold``.
    """
    threshold = summary.get("energy_threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        threshold = _V011_THRESHOLD
    out: dict[str, Any] = {"energy_threshold": threshold}
    for new, old in V011_ENERGY_ALIASES.items():
        out[new] = summary.get(new, summary.get(old))
    if threshold == _V011_THRESHOLD:
        for new, old in V011_ENERGY_ALIASES.items():
            out[old] = out[new]
    return out


def audit_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`AUDIT_FIELDS` of an audit summary, energy ranks normalised."""
    out = {k: summary[k] for k in AUDIT_FIELDS if k in summary}
    if "energy_rank_p50" in summary or "energy_rank_90_p50" in summary:
        out.update(energy_fields(summary))
    return {k: out[k] for k in AUDIT_FIELDS if k in out}


# --------------------------------------------------------------------------- the model


@dataclass
class AdapterInfo:
    """The adapter that was benched (bench.json ``adapter``). ``content_sha256`` is the hash
    of its adapter_config.json and weights (:mod:`gradience_hub.identity`); None in
    records that carry none (gradience 0.11's, ours before it, retrain records)."""

    source: str
    revision: str | None = None
    base_model: str | None = None
    allocated_rank: int | None = None
    lora_params: int | None = None
    content_sha256: str | None = None


@dataclass
class TaskInfo:
    """What the metric was measured on (bench.json ``task``): ``sampled`` (None in older records:
    read as sampled), the config's ``hub_benchmark`` (record/hub_eval.py) and the data."""

    name: str
    metric: str = "accuracy"
    eval_examples: int | None = None
    sampled: bool | None = None
    hub_benchmark: dict[str, Any] | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    split: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """bench.json ``task`` (the newer keys only where known: older readers see no change)."""
        keys = ("name", "metric", "eval_examples", "sampled", "hub_benchmark", "dataset")
        out = {k: copy.deepcopy(getattr(self, k)) for k in (*keys, "dataset_config", "split")}
        return {k: v for k, v in out.items() if v is not None or k in keys[:3]}


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
    """One seed of a variant: its score, its delta against the probe of that seed, the paired
    interval of that delta and the retained gain (when known)."""

    score: float
    delta: float
    delta_ci: Interval | None = None
    retained_gain: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """bench.json ``variants[].per_seed.<seed>``."""
        out: dict[str, Any] = {"score": self.score, "delta": self.delta}
        if self.delta_ci is not None:
            out["delta_ci"] = self.delta_ci.to_dict()
        if self.retained_gain is not None:
            out["retained_gain"] = self.retained_gain
        return out


@dataclass
class BaseRecord:
    """The base model without the adapter, scored on the same examples (bench.json
    ``base``): ``gain`` is the adapter's mean gain over it, ``pairs`` the pooled discordant
    pairs (base as reference) behind ``p_value``."""

    per_seed: dict[int, float]
    mean: float
    gain: float
    pairs: Pairs | None = None
    p_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """bench.json ``base``."""
        gain: dict[str, Any] = {"mean": self.gain, "p_value": self.p_value}
        if self.pairs is not None:
            gain.update(
                test=TEST_MCNEMAR, n=self.pairs.n, worse=self.pairs.worse, better=self.pairs.better
            )
        return {
            "per_seed": {str(k): v for k, v in self.per_seed.items()},
            "mean": self.mean,
            "gain": gain,
        }


@dataclass
class VariantRecord:
    """One compressed variant (bench.json ``variants[]``). ``rank`` for uniform variants,
    ``rank_pattern`` (module -> r) for per-layer ones; ``verdicts`` holds both rules' verdicts
    (None where a rule cannot be applied), ``verdict`` the deciding rule's."""

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
    delta_ci: Interval | None = None
    retained_gain_worst: float | None = None
    verdicts: dict[str, str | None] = field(default_factory=dict)

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
        gains = {str(k): v.retained_gain for k, v in self.per_seed.items()}
        out.update(
            params=self.params,
            param_reduction=self.param_reduction,
            per_seed={str(k): v.to_dict() for k, v in self.per_seed.items()},
            mean=self.mean,
            worst_delta=self.worst_delta,
            pass_rate=self.pass_rate,
            delta_ci=self.delta_ci.to_dict() if self.delta_ci is not None else None,
            retained_gain=(
                {"per_seed": gains, "worst": self.retained_gain_worst}
                if any(g is not None for g in gains.values())
                else None
            ),
            p_value=self.p_value,
            p_value_test=self.p_value_test,
            verdicts=dict(self.verdicts),
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
    base: BaseRecord | None = None
    status_reason: str | None = None
    noise_floor: float | None = None
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

    def noise_floor_variant(self) -> str | None:
        """The variant whose pooled interval is the widest (the noise floor's)."""
        widths = [(v.delta_ci.half_width, v.name) for v in self.variants if v.delta_ci]
        return max(widths)[1] if widths else None

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
        ranks: Mapping[str, int | Mapping[str, int] | None] | None = None,
        audit: Mapping[str, Any] | None = None,
        warnings: Sequence[str] = (),
        environment: Mapping[str, Any] | None = None,
    ) -> BenchRecord:
        """Assemble a record from :func:`gradience_hub.policy.decide`'s answer.

        ``ranks`` maps variant name -> an int (uniform rank) or a module -> rank mapping (a
        per-layer ``rank_pattern``); ``audit`` may be a full audit summary (only the
        :data:`AUDIT_FIELDS` are kept); ``environment`` defaults to :func:`environment_info`.
        """
        record = cls(
            adapter=adapter,
            task=task,
            protocol=protocol,
            policy=decision.policy,
            probe=probe,
            variants=[],
            status=decision.status,
            recommendation=None,
            audit=audit_fields(audit) if audit else {},
            warnings=list(warnings),
            environment=dict(environment) if environment is not None else environment_info(),
        )
        return judged(record, decision, ranks)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """The bench.json document (the key order of docs/architecture.md)."""
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
                "content_sha256": self.adapter.content_sha256,
            },
            "task": self.task.to_dict(),
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
            "status_reason": self.status_reason,
            "base": self.base.to_dict() if self.base is not None else None,
            "noise_floor": {
                "half_width": self.noise_floor,
                "level": LEVEL,
                "method": INTERVAL_METHOD,
                "variant": self.noise_floor_variant(),
            },
            "warnings": list(self.warnings),
            "environment": dict(self.environment),
        }

    def to_json(self) -> str:
        """bench.json text (2-space indent, trailing newline)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def variant_record(v: Any, spec: int | Mapping[str, int] | None = None) -> VariantRecord:
    """A :class:`~gradience_hub.policy.VariantOutcome` as a record row; ``spec`` is the
    uniform rank or the per-module ``rank_pattern``."""
    return VariantRecord(
        name=v.name,
        params=v.params,
        param_reduction=v.param_reduction,
        per_seed={
            s: SeedScore(o.score, o.delta, o.interval, o.retained_gain)
            for s, o in v.per_seed.items()
        },
        mean=v.mean,
        worst_delta=v.worst_delta,
        pass_rate=v.pass_rate,
        p_value=v.p_value,
        p_value_test=v.p_value_test,
        verdict=v.verdict,
        rank=int(spec) if isinstance(spec, int) else None,
        rank_pattern=(
            {str(k): int(r) for k, r in spec.items()} if isinstance(spec, Mapping) else None
        ),
        delta_ci=v.interval,
        retained_gain_worst=v.retained_gain_worst,
        verdicts=dict(v.verdicts),
    )


def judged(
    record: BenchRecord,
    decision: Decision,
    ranks: Mapping[str, int | Mapping[str, int] | None] | None = None,
) -> BenchRecord:
    """THE judged record: ``record``'s measurements (adapter, task, protocol, probe, audit,
    environment, its own warnings) with every field the policy decides taken from
    ``decision``: policy, variant rows and verdicts, status and its reason, recommendation,
    base, noise floor, the policy's warnings first. A bench's record
    (:meth:`BenchRecord.from_decision`) and a loaded one (:func:`~gradience_hub.record.judge.
    rejudge`) are both made here, so they cannot drift. ``ranks`` maps variant name -> its
    uniform rank or ``rank_pattern``. ``record`` is not modified."""
    new = copy.deepcopy(record)
    new.policy = decision.policy
    new.variants = [variant_record(v, (ranks or {}).get(v.name)) for v in decision.variants]
    new.status = decision.status
    new.status_reason = decision.reason
    best = decision.recommendation
    new.recommendation = Recommendation(best.name, best.param_reduction) if best else None
    new.base = base_record(decision.base)
    new.noise_floor = decision.noise_floor
    new.warnings = [*decision.warnings, *record.warnings]
    return new


def base_record(base: Any) -> BaseRecord | None:
    """A :class:`~gradience_hub.policy.BaseOutcome` as bench.json ``base``."""
    if base is None:
        return None
    return BaseRecord(dict(base.per_seed), base.mean, base.gain, base.pairs, base.p_value)
