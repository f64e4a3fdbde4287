"""Re-judging a record: every verdict, the status and the recommendation recomputed.

A bench.json is evidence from elsewhere (a Hub repo, a workflow, an older run, gradience 0.11),
so its stored verdicts are not trusted: :func:`rejudge` recomputes them from the per-seed
numbers, the paired counts and the policy with :mod:`gradience_hub.policy` (the same functions
the bench uses), and lists where the stored ones disagree. Numbers that cannot belong together
(a delta that is not the score minus the probe's, a pass rate that no number of passing seeds
gives, interval bounds that are not their counts') are a :class:`RecordError` (exit 2).
:func:`with_policy` judges the same measurements under another policy.
"""

from __future__ import annotations

import copy

from gradience_hub.errors import RecordError
from gradience_hub.policy import (
    AGREEMENT,
    RULE_NON_INFERIORITY,
    RULE_WORST_SEED,
    BaseOutcome,
    Policy,
    VariantOutcome,
    check_pass_rate,
    decide,
    judge_base,
    judge_recorded,
    judge_variant,
)
from gradience_hub.record.model import BenchRecord, VariantRecord, judged

# Substrings of the warnings the policy writes (replaced on every re-judging).
POLICY_WARNINGS = ("cannot resolve the tolerance", "below the noise floor of the eval set")
DISAGREEMENT = "bench.json's stored"


def _outcome(v: VariantRecord, record: BenchRecord, policy: Policy) -> VariantOutcome:
    reference = record.probe.per_seed
    if not v.per_seed:
        if v.worst_delta is None or v.pass_rate is None:
            raise RecordError(
                f"bench.json: variant {v.name} has neither per-seed numbers nor a worst delta "
                "and pass rate to judge",
                hint="regenerate the file with 'gradience-hub bench'",
            )
        if policy.rule != RULE_WORST_SEED:
            raise RecordError(
                f"variant {v.name}: the {policy.rule} rule needs per-example pairs, which this "
                "record does not hold",
                hint="use policy.rule: worst-seed for this record, or rerun the bench",
            )
        verdict = judge_recorded(
            v.name, v.worst_delta, v.pass_rate, len(record.protocol.seeds), policy
        )
        return VariantOutcome(
            name=v.name,
            per_seed={},
            mean=v.mean if v.mean is not None else 0.0,
            worst_delta=v.worst_delta,
            pass_rate=v.pass_rate,
            p_value=v.p_value,
            p_value_test=v.p_value_test,
            verdicts={RULE_WORST_SEED: verdict, RULE_NON_INFERIORITY: None},
            verdict=verdict,
            params=v.params,
            param_reduction=v.param_reduction,
        )
    ours = record.tool.get("name") == "gradience-hub"
    # per-seed pairs only when every seed has them: judge_variant needs one for each seed
    known = {s: c.delta_ci.pairs for s, c in v.per_seed.items() if c.delta_ci is not None}
    seed_pairs = known if len(known) == len(v.per_seed) else None
    outcome = judge_variant(
        v.name,
        reference,
        {s: c.score for s, c in v.per_seed.items()},
        policy,
        seed_pairs=seed_pairs,
        pooled=v.delta_ci.pairs if v.delta_ci is not None else None,
        base=record.base.per_seed if record.base is not None else None,
        params=v.params,
        param_reduction=v.param_reduction,
        # ours are exact differences and must agree; gradience 0.11 rounded its own
        deltas={s: c.delta for s, c in v.per_seed.items()},
        trust_deltas=not ours,
    )
    return outcome


def _differs(stored: float | None, computed: float | None) -> bool:
    """True when a stored number disagrees with its recomputation (nothing stored: agrees)."""
    if stored is None:
        return False
    return computed is None or abs(stored - computed) > AGREEMENT


def _disagreements(
    record: BenchRecord, outcomes: list[VariantOutcome], base: BaseOutcome | None, new: BenchRecord
) -> list[str]:
    found = []
    # the status and the recommendation first: they are what a reader acts on
    if record.status and record.status != new.status:
        found.append(f"status {record.status} (recomputed {new.status})")
    old = record.recommendation.variant if record.recommendation else None
    now = new.recommendation.variant if new.recommendation else None
    if record.status and old != now:
        found.append(f"recommendation {old} (recomputed {now})")
    for v, o in zip(record.variants, outcomes, strict=True):
        if v.verdict and v.verdict != o.verdict:
            found.append(f"variant {v.name} verdict {v.verdict} (recomputed {o.verdict})")
        if o.per_seed:
            for what, stored, computed in (
                ("worst delta", v.worst_delta, o.worst_delta),
                ("mean", v.mean, o.mean),
                ("pass rate", v.pass_rate, o.pass_rate),
            ):
                if _differs(stored, computed):
                    found.append(f"variant {v.name} {what} {stored!r} (recomputed {computed!r})")
        if o.per_seed and v.p_value is not None and _differs(v.p_value, o.p_value):
            found.append(f"variant {v.name} p-value {v.p_value!r} (recomputed {o.p_value!r})")
    if record.base is not None and base is not None:
        checks: tuple[tuple[str, float | None, float | None], ...] = (
            ("base mean", record.base.mean, base.mean),
            ("base gain", record.base.gain, base.gain),
            ("base p-value", record.base.p_value, base.p_value),
        )
        for label, kept, redone in checks:
            if _differs(kept, redone):
                found.append(f"{label} {kept!r} (recomputed {redone!r})")
    return found


def _judged(record: BenchRecord, policy: Policy) -> tuple[BenchRecord, list[str]]:
    for v in record.variants:
        if v.pass_rate is not None and record.protocol.seeds:
            n = len(v.per_seed) or len(record.protocol.seeds)
            check_pass_rate(v.name, v.pass_rate, n)
    outcomes = [_outcome(v, record, policy) for v in record.variants]
    base = None
    if record.base is not None:
        base = judge_base(record.base.per_seed, record.probe.per_seed, record.base.pairs)
    decision = decide(outcomes, policy, base)
    measured = copy.copy(record)
    kept = [w for w in record.warnings if not any(m in w for m in POLICY_WARNINGS)]
    measured.warnings = [w for w in kept if not w.startswith(DISAGREEMENT)]
    ranks = {
        v.name: v.rank_pattern if v.rank_pattern is not None else v.rank for v in record.variants
    }
    new = judged(measured, decision, ranks)
    for row, v, o in zip(new.variants, record.variants, outcomes, strict=True):
        if not o.per_seed:  # nothing per seed to recompute: keep what was recorded
            row.mean, row.p_value, row.p_value_test = v.mean, v.p_value, v.p_value_test
            row.pass_rate = v.pass_rate
    return new, _disagreements(record, outcomes, base, new)


def rejudge(record: BenchRecord, *, strict: bool = False) -> BenchRecord:
    """``record`` judged again under its own policy. Stored verdicts, status or
    recommendation that disagree with the recomputation are replaced and named in a warning;
    with ``strict`` they are a :class:`RecordError` (exit 2) instead."""
    new, found = _judged(record, record.policy)
    if found:
        shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
        if strict:
            raise RecordError(
                f"bench.json's stored verdicts disagree with its own numbers: {shown}",
                hint="regenerate the record with 'gradience-hub bench', or drop --strict to "
                "show it as recomputed",
            )
        new.warnings.append(
            f"{DISAGREEMENT} verdicts disagree with its own numbers ({shown}); shown as "
            "recomputed from the per-seed numbers"
        )
    return new


def with_policy(
    record: BenchRecord,
    *,
    max_drop: float | None = None,
    min_pass_rate: float | None = None,
    seed_max_drop: float | None = None,
    rule: str | None = None,
) -> BenchRecord:
    """The same measurements judged under another policy (e.g. ``--max-drop`` at publish
    time): verdicts, status, recommendation and warnings follow; scores, deltas, intervals and
    p-values do not depend on the policy. The input record is not modified; a bad value is a
    ConfigError naming ``policy.<key>``."""
    policy = record.policy.replace(
        max_drop=max_drop, min_pass_rate=min_pass_rate, seed_max_drop=seed_max_drop, rule=rule
    )
    new, _ = _judged(record, policy)
    new.warnings += [w for w in record.warnings if w.startswith(DISAGREEMENT)]
    return new
