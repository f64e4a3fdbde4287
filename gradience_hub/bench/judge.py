"""From finished cells to a verdict: every variant judged by the policy, one BenchRecord.

Per variant and seed the delta is taken against the uncompressed adapter *of the same seed*
on the same examples, so the paired test (McNemar, pooled over seeds) sees example-level
agreement; :mod:`gradience_hub.policy` decides, :mod:`gradience_hub.record` records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradience_hub.bench.cells import PROBE, Cell, CellResult
from gradience_hub.bench.config import BenchConfig
from gradience_hub.bench.variants import VariantPlan


@dataclass
class RunResults:
    """What a protocol hands to :func:`build_record`: the finished cells and their context."""

    protocol: str
    config: BenchConfig
    output_dir: Path
    device: str
    adapter: dict[str, Any]
    audit_summary: dict[str, Any]
    probe_rank: int
    probe_params: int
    plans: dict[str, VariantPlan]  # "<variant>__<seed>" -> plan
    results: dict[str, CellResult]
    pool_size: int
    warnings: list[str]


def summary_dict(report: Any) -> dict[str, Any]:
    """An AuditReport's summary as a plain dict (the record keeps the audit fields)."""
    from dataclasses import asdict

    return asdict(report.summary)


def build_record(run: RunResults) -> Any:
    """Judge every variant with the policy and assemble the BenchRecord."""
    from gradience_hub.policy import Policy, decide, evaluate_variant
    from gradience_hub.record import (
        AdapterInfo,
        BenchRecord,
        ProbeRecord,
        ProtocolInfo,
        TaskInfo,
        environment_info,
    )

    config = run.config
    seeds = config.seeds
    policy = Policy(config.policy.max_drop, config.policy.min_pass_rate)
    probe = {seed: run.results[Cell(PROBE, seed).key] for seed in seeds}
    reference = {seed: r.score for seed, r in probe.items()}
    reference_correct = {seed: [bool(c) for c in r.correct] for seed, r in probe.items()}
    outcomes = []
    ranks: dict[str, Any] = {}
    per_seed_ranks: dict[str, dict[str, Any]] = {}
    for spec in config.compression.variants:
        cells = {seed: run.results[Cell(spec.name, seed).key] for seed in seeds}
        plan = run.plans[Cell(spec.name, seeds[0]).key]
        params = round(sum(c.params for c in cells.values()) / len(cells))
        outcomes.append(
            evaluate_variant(
                spec.name,
                reference,
                {seed: c.score for seed, c in cells.items()},
                policy,
                reference_correct=reference_correct,
                variant_correct={seed: [bool(x) for x in c.correct] for seed, c in cells.items()},
                params=params,
                param_reduction=1.0 - params / run.probe_params if run.probe_params else None,
            )
        )
        fields = plan.rank_fields()
        ranks[spec.name] = fields.get("rank", fields.get("rank_pattern"))
        if run.protocol == "retrain":
            per_seed_ranks[spec.name] = {
                str(seed): run.plans[Cell(spec.name, seed).key].rank_fields() for seed in seeds
            }
    n_eval = len(probe[seeds[0]].correct)
    reference_mean = sum(reference.values()) / len(reference)
    decision = decide(outcomes, policy, reference_mean=reference_mean, eval_examples=n_eval)
    extra: dict[str, Any] = {
        "eval_pool": run.pool_size,
        "eval_samples_per_seed": n_eval,
        "eval_sampling": "each seed draws its own sample (numpy default_rng(seed))",
        "device": run.device,
    }
    if config.compression.allowed_ranks:
        extra["allowed_ranks"] = list(config.compression.allowed_ranks)
    if run.protocol == "retrain":
        assert config.train is not None
        extra["train"] = {
            "steps": config.train.steps,
            "lr": config.train.lr,
            "batch_size": config.train.batch_size,
        }
        extra["variant_ranks_per_seed"] = per_seed_ranks
    environment = environment_info()
    environment["device"] = run.device
    return BenchRecord.from_decision(
        decision,
        adapter=AdapterInfo(**run.adapter),
        task=TaskInfo(
            name=config.task.name, metric=config.task.metric or "accuracy", eval_examples=n_eval
        ),
        protocol=ProtocolInfo(kind=run.protocol, seeds=list(seeds), extra=extra),
        probe=ProbeRecord.from_scores(run.probe_rank, run.probe_params, reference),
        ranks=ranks,
        audit=run.audit_summary,
        warnings=run.warnings,
        environment=environment,
    )
