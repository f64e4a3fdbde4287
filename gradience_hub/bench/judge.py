"""From finished cells to a verdict: every variant judged by the policy, one BenchRecord.

Per variant and seed the delta is taken against the uncompressed adapter *of the same seed*
on the same examples (the seed's sample, read from the cells' per-example correctness), so
the paired intervals and the exact test see example-level agreement; the base model is
judged the same way against the adapter. :mod:`gradience_hub.policy` decides,
:mod:`gradience_hub.record` records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradience_hub.bench.cells import BASE, PROBE, Cell, CellResult
from gradience_hub.bench.config import BenchConfig, TaskConfig
from gradience_hub.bench.tasks import eval_indices, score
from gradience_hub.bench.variants import VariantPlan
from gradience_hub.policy import Pairs, VariantOutcome, decide, judge_base, judge_variant
from gradience_hub.record import (
    AdapterInfo,
    BenchRecord,
    ProbeRecord,
    ProtocolInfo,
    TaskInfo,
    environment_info,
)


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


def _cell(run: RunResults, variant: str, seed: int) -> CellResult:
    """The cell holding ``variant``'s scores for ``seed``: per seed in retrain, else the
    seed-free cell (the base model always has one)."""
    per_seed = run.results.get(Cell(variant, seed).key)
    return per_seed if per_seed is not None else run.results[Cell(variant).key]


def paired_counts(
    run: RunResults, reference: str, other: str, samples: dict[int, list[int]]
) -> tuple[dict[int, Pairs], Pairs]:
    """Per seed, the discordant counts of ``reference`` vs ``other`` on the seed's sample;
    pooled, every distinct (reference cell, other cell, example) once: in posthoc the cells
    do not depend on the seed, so an example in two seeds' samples is one pair, not two."""
    per_seed: dict[int, Pairs] = {}
    seen: dict[tuple[str, str, int], tuple[bool, bool]] = {}
    for seed, ids in samples.items():
        ref, oth = _cell(run, reference, seed), _cell(run, other, seed)
        x, y = ref.sample(ids), oth.sample(ids)
        per_seed[seed] = Pairs.from_correct(x, y)
        for i, a, b in zip(ids, x, y, strict=True):
            seen[(ref.key, oth.key, i)] = (a, b)
    pooled = Pairs.from_correct([a for a, _ in seen.values()], [b for _, b in seen.values()])
    return per_seed, pooled


def _scores(run: RunResults, variant: str, samples: dict[int, list[int]]) -> dict[int, float]:
    return {seed: score(_cell(run, variant, seed).sample(ids)) for seed, ids in samples.items()}


def _task_info(task: TaskConfig, n_eval: int, pool_size: int) -> TaskInfo:
    """bench.json ``task``: what was scored, whether it was a sample of the split, and the
    Hub benchmark the config names (record/hub_eval.py decides what that allows)."""
    lm_eval = task.engine == "lm-eval"
    return TaskInfo(
        name=task.name,
        metric=task.metric or "accuracy",
        eval_examples=n_eval,
        # lm-eval's limit keeps the first N docs of each task: a part of the split, too
        sampled=n_eval < pool_size or bool(lm_eval and (task.lm_eval or {}).get("limit")),
        hub_benchmark=task.hub_benchmark.to_dict() if task.hub_benchmark is not None else None,
        dataset=None if lm_eval else task.dataset,
        dataset_config=None if lm_eval else task.dataset_config,
        split=None if lm_eval or task.dataset is None else task.split,
    )


@dataclass
class _JudgedVariants:
    """The variants judged by the policy, the rank each is recorded under (an int, or a
    per-module pattern), and in retrain each seed's planned ranks."""

    outcomes: list[VariantOutcome]
    ranks: dict[str, int | dict[str, int]]
    per_seed_ranks: dict[str, dict[str, dict[str, Any]]]


def _judge_one(
    run: RunResults,
    name: str,
    reference: dict[int, float],
    base_scores: dict[int, float],
    samples: dict[int, list[int]],
) -> tuple[VariantOutcome, VariantPlan]:
    """Variant ``name`` judged against the adapter of each seed (its params: the mean over
    its cells), and the plan its record shows (the first seed's in retrain)."""
    seeds = run.config.seeds
    cells = [_cell(run, name, seed) for seed in seeds]
    plan = run.plans.get(Cell(name).key) or run.plans[Cell(name, seeds[0]).key]
    params = round(sum(c.params for c in cells) / len(cells))
    seed_pairs, pooled = paired_counts(run, PROBE, name, samples)
    outcome = judge_variant(
        name,
        reference,
        _scores(run, name, samples),
        run.config.policy,
        seed_pairs=seed_pairs,
        pooled=pooled,
        base=base_scores,
        params=params,
        param_reduction=1.0 - params / run.probe_params if run.probe_params else None,
    )
    return outcome, plan


def _recorded_rank(plan: VariantPlan) -> int | dict[str, int]:
    """The rank a record shows for ``plan``: the uniform rank, else the per-module pattern
    (what :meth:`VariantPlan.rank_fields` holds)."""
    k = plan.uniform_rank
    return k if k is not None else dict(plan.ranks)


def _judge_variants(
    run: RunResults,
    reference: dict[int, float],
    base_scores: dict[int, float],
    samples: dict[int, list[int]],
) -> _JudgedVariants:
    """Every variant of the config judged, in the config's order, with its ranks."""
    seeds = run.config.seeds
    judged = _JudgedVariants([], {}, {})
    for spec in run.config.compression.variants:
        outcome, plan = _judge_one(run, spec.name, reference, base_scores, samples)
        judged.outcomes.append(outcome)
        judged.ranks[spec.name] = _recorded_rank(plan)
        if run.protocol == "retrain":
            judged.per_seed_ranks[spec.name] = {
                str(seed): run.plans[Cell(spec.name, seed).key].rank_fields() for seed in seeds
            }
    return judged


def _protocol_extra(
    run: RunResults,
    samples: dict[int, list[int]],
    per_seed_ranks: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    """bench.json ``protocol`` beside its kind and seeds: the eval sampling, the device, the
    allowed ranks, and in retrain the training settings and each seed's planned ranks."""
    config = run.config
    scored = sorted({i for ids in samples.values() for i in ids})
    extra: dict[str, Any] = {
        "eval_pool": run.pool_size,
        "eval_samples_per_seed": len(samples[config.seeds[0]]),
        "eval_sampling": "each seed draws its own sample (numpy default_rng(seed)) from the "
        f"pool; {len(scored)} distinct examples scored once per model",
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
    return extra


def build_record(run: RunResults) -> BenchRecord:
    """Judge every variant with the policy and assemble the BenchRecord."""
    config = run.config
    seeds = config.seeds
    samples = {s: eval_indices(run.pool_size, config.task.eval_count, s) for s in seeds}
    reference = _scores(run, PROBE, samples)
    base_scores = _scores(run, BASE, samples)
    _, base_pooled = paired_counts(run, BASE, PROBE, samples)
    base = judge_base(base_scores, reference, base_pooled)
    judged = _judge_variants(run, reference, base_scores, samples)
    n_eval = len(samples[seeds[0]])
    decision = decide(judged.outcomes, config.policy, base)
    extra = _protocol_extra(run, samples, judged.per_seed_ranks)
    environment = environment_info()
    environment["device"] = run.device
    return BenchRecord.from_decision(
        decision,
        adapter=AdapterInfo(**run.adapter),
        task=_task_info(config.task, n_eval, run.pool_size),
        protocol=ProtocolInfo(kind=run.protocol, seeds=list(seeds), extra=extra),
        probe=ProbeRecord.from_scores(run.probe_rank, run.probe_params, reference),
        ranks=judged.ranks,
        audit=run.audit_summary,
        warnings=run.warnings,
        environment=environment,
    )
