"""The seed article's safety policy: pure functions over plain numbers, no I/O.

A compressed variant is compared with the uncompressed adapter *of the same seed*; the policy
looks at the worst seed, not the mean, because a compression that is safe on average but loses
three points on one seed out of three is not safe to ship:

- a seed passes when ``delta = score(variant) - score(adapter) >= -max_drop`` (the boundary passes);
- a variant PASSes when its worst delta is ``>= -max_drop`` and at least ``min_pass_rate`` of the
  seeds pass;
- the record PASSes when some variant passes; the recommendation is the passing variant with the
  largest parameter reduction (ties: the smaller worst drop, then the name).

The p-value is a paired, exact, two-sided test of "the variant and the adapter are equally
good". With per-example correctness vectors it is McNemar's exact test: the discordant pairs
(``b``: adapter right and variant wrong, ``c``: the reverse), pooled over seeds, against
Binomial(b + c, 1/2). Without them it is the sign test on the per-seed deltas (ties dropped),
which with three seeds can never go below 0.25: it says how little three seeds can prove.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from gradience_hub.errors import ConfigError, RecordError

PASS = "PASS"
FAIL = "FAIL"

# Deltas are differences of accuracies (k/n), so "exactly -0.025" arrives as -0.025000000000000022
# and must pass; 1e-12 absorbs that rounding and is far below any real metric resolution.
TOLERANCE = 1e-12

# Above this many discordant pairs the exact binomial tail is summed in log space (lgamma)
# instead of with exact integers: same answer to ~1e-12, without multi-thousand-digit numbers.
_EXACT_LIMIT = 2000

TEST_MCNEMAR = "mcnemar-exact"
TEST_SIGN = "sign-test-seeds"


@dataclass(frozen=True)
class Policy:
    """``max_drop``: largest allowed metric drop on any seed (0.025 = 2.5 points);
    ``min_pass_rate``: fraction of seeds that must pass (1.0 = all)."""

    max_drop: float = 0.025
    min_pass_rate: float = 1.0

    def __post_init__(self) -> None:
        for key, value in (("max_drop", self.max_drop), ("min_pass_rate", self.min_pass_rate)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(
                    f"policy.{key} must be a number, got {value!r}",
                    hint="e.g. policy: {max_drop: 0.025, min_pass_rate: 1.0}",
                    key=f"policy.{key}",
                )
            if not math.isfinite(value):
                raise ConfigError(f"policy.{key} must be finite", key=f"policy.{key}")
        if not 0.0 <= self.max_drop < 1.0:
            raise ConfigError(
                f"policy.max_drop must be in [0, 1), got {self.max_drop}",
                hint="it is a metric fraction: 0.025 allows a 2.5-point drop",
                key="policy.max_drop",
            )
        if not 0.0 < self.min_pass_rate <= 1.0:
            raise ConfigError(
                f"policy.min_pass_rate must be in (0, 1], got {self.min_pass_rate}",
                hint="1.0 requires every seed to pass; 0.67 tolerates one failing seed of three",
                key="policy.min_pass_rate",
            )

    def seed_passes(self, delta: float) -> bool:
        """True when a seed's delta is within the allowed drop (the boundary passes)."""
        return delta >= -self.max_drop - TOLERANCE

    def to_dict(self) -> dict[str, float]:
        """bench.json ``policy``."""
        return {"max_drop": float(self.max_drop), "min_pass_rate": float(self.min_pass_rate)}


# --------------------------------------------------------------------------- statistics


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips:
    ``min(1, 2 * P[X <= min(k, n - k)])``; 1.0 when ``n == 0``."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    m = min(k, n - k)
    if n <= _EXACT_LIMIT:
        exact = Fraction(sum(math.comb(n, i) for i in range(m + 1)), 2**n)
        return float(min(Fraction(1), 2 * exact))
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
        for i in range(m + 1)
    ]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(1.0, 2.0 * tail)


def sign_test(n_better: int, n_worse: int) -> float:
    """Exact two-sided sign test (ties already dropped)."""
    return binomial_two_sided(min(n_better, n_worse), n_better + n_worse)


def mcnemar_exact(
    reference_correct: Sequence[bool] | Sequence[int],
    variant_correct: Sequence[bool] | Sequence[int],
) -> tuple[int, int, float]:
    """McNemar's exact test on paired per-example correctness: ``(b, c, p)`` with
    ``b`` = reference right and variant wrong, ``c`` = reference wrong and variant right."""
    if len(reference_correct) != len(variant_correct):
        raise RecordError(
            f"paired correctness vectors differ in length ({len(reference_correct)} vs "
            f"{len(variant_correct)}); both must score the same examples"
        )
    b = sum(1 for x, y in zip(reference_correct, variant_correct, strict=True) if x and not y)
    c = sum(1 for x, y in zip(reference_correct, variant_correct, strict=True) if y and not x)
    return b, c, sign_test(c, b)


def metric_se(score: float, n: int) -> float:
    """Standard error of an accuracy-like metric ``score`` measured on ``n`` examples:
    ``sqrt(p (1 - p) / n)``. A drop smaller than this is within evaluation noise."""
    if n <= 0:
        raise ValueError(f"need a positive number of eval examples, got {n}")
    p = min(1.0, max(0.0, float(score)))
    return math.sqrt(p * (1.0 - p) / n)


def noise_floor_warning(policy: Policy, se: float | None) -> str | None:
    """A warning when ``max_drop`` is below the metric's standard error: then single-seed
    deltas of that size are indistinguishable from evaluation noise."""
    if se is None or policy.max_drop >= se:
        return None
    return (
        f"max_drop {policy.max_drop * 100:.1f} points is below the noise floor of the eval set "
        f"(metric standard error {se * 100:.1f} points): verdicts near the threshold are within "
        "evaluation noise; use more eval examples or a larger max_drop"
    )


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class SeedOutcome:
    """One seed of one variant: its score and the change against the adapter of that seed."""

    score: float
    delta: float


@dataclass
class VariantOutcome:
    """A variant judged by the policy (bench.json ``variants[]`` without rank information)."""

    name: str
    per_seed: dict[int, SeedOutcome]
    mean: float
    worst_delta: float
    pass_rate: float
    p_value: float | None
    p_value_test: str | None
    verdict: str
    params: int | None = None
    param_reduction: float | None = None

    @property
    def passed(self) -> bool:
        """True for a PASS verdict."""
        return self.verdict == PASS


def evaluate_variant(
    name: str,
    reference: Mapping[int, float],
    scores: Mapping[int, float],
    policy: Policy,
    *,
    reference_correct: Mapping[int, Sequence[bool]] | None = None,
    variant_correct: Mapping[int, Sequence[bool]] | None = None,
    params: int | None = None,
    param_reduction: float | None = None,
) -> VariantOutcome:
    """Judge one variant: ``reference`` and ``scores`` map seed -> metric (same seeds).

    Per-example correctness (seed -> booleans, same examples in the same order for the
    reference and the variant) switches the p-value from the per-seed sign test to McNemar's
    exact test pooled over seeds.
    """
    if not scores:
        raise RecordError(f"variant {name} has no scores")
    missing = sorted(set(scores) - set(reference))
    if missing:
        raise RecordError(
            f"variant {name} has a score for seed {missing[0]} but the uncompressed adapter has "
            "none; deltas are only taken against the same seed"
        )
    per_seed = {
        int(seed): SeedOutcome(float(scores[seed]), float(scores[seed]) - float(reference[seed]))
        for seed in scores
    }
    deltas = [s.delta for s in per_seed.values()]
    worst = min(deltas)
    pass_rate = sum(policy.seed_passes(d) for d in deltas) / len(deltas)
    # Both rules, as docs/architecture.md states them. With one threshold for both, a passing
    # worst seed implies pass_rate == 1, so min_pass_rate < 1 cannot rescue a failing seed: it only
    # matters if seeds are ever judged by a tighter per-seed tolerance (gradience 0.11 did).
    verdict = (
        PASS
        if policy.seed_passes(worst) and pass_rate >= policy.min_pass_rate - TOLERANCE
        else FAIL
    )
    if reference_correct is not None and variant_correct is not None:
        b = c = 0
        for seed in per_seed:
            if seed not in reference_correct or seed not in variant_correct:
                raise RecordError(f"variant {name}: no per-example correctness for seed {seed}")
            bs, cs, _ = mcnemar_exact(reference_correct[seed], variant_correct[seed])
            b, c = b + bs, c + cs
        p_value, test = sign_test(c, b), TEST_MCNEMAR
    else:
        better = sum(1 for d in deltas if d > TOLERANCE)
        worse = sum(1 for d in deltas if d < -TOLERANCE)
        p_value, test = sign_test(better, worse), TEST_SIGN
    return VariantOutcome(
        name=name,
        per_seed=per_seed,
        mean=sum(s.score for s in per_seed.values()) / len(per_seed),
        worst_delta=worst,
        pass_rate=pass_rate,
        p_value=p_value,
        p_value_test=test,
        verdict=verdict,
        params=params,
        param_reduction=param_reduction,
    )


def recommend(variants: Sequence[VariantOutcome]) -> VariantOutcome | None:
    """The passing variant with the largest parameter reduction (ties: smaller worst drop,
    then name); None when nothing passes."""
    passing = [v for v in variants if v.passed]
    if not passing:
        return None
    return min(
        passing,
        key=lambda v: (-(v.param_reduction or 0.0), -v.worst_delta, v.name),
    )


@dataclass
class Decision:
    """The policy's answer for a whole bench: status, recommendation, noise floor, warnings."""

    policy: Policy
    variants: list[VariantOutcome]
    status: str
    recommendation: VariantOutcome | None
    metric_se: float | None = None
    warnings: list[str] = field(default_factory=list)


def decide(
    variants: Sequence[VariantOutcome],
    policy: Policy,
    *,
    reference_mean: float | None = None,
    eval_examples: int | None = None,
) -> Decision:
    """Record status (PASS when some variant passes), recommendation and noise floor.

    The noise floor is :func:`metric_se` of the uncompressed adapter's mean score on
    ``eval_examples``; it is omitted when either is unknown.
    """
    se = (
        metric_se(reference_mean, eval_examples)
        if reference_mean is not None and eval_examples
        else None
    )
    warnings = [w for w in (noise_floor_warning(policy, se),) if w]
    best = recommend(variants)
    return Decision(
        policy=policy,
        variants=list(variants),
        status=PASS if any(v.passed for v in variants) else FAIL,
        recommendation=best,
        metric_se=se,
        warnings=warnings,
    )
