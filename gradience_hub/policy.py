"""THE verdict rule, the status and the recommendation: pure functions over plain numbers.

Every place that decides (the bench, the bench.json readers, ``with_policy``, render, annotate
and the Action) calls these functions; nothing else compares a delta with ``max_drop``.

A compressed variant is compared with the uncompressed adapter *of the same seed* on the same
examples. Two rules, both always computed and recorded; ``policy.rule`` picks the deciding one:

- ``worst-seed`` (the seed article's, the default): every seed's delta
  ``score(variant) - score(adapter)`` is ``>= -max_drop`` (the boundary passes), and at least
  ``min_pass_rate`` of the seeds are within the per-seed tolerance ``seed_max_drop`` (default
  ``max_drop``, when ``min_pass_rate`` cannot matter: gradience 0.11 kept the two apart).
- ``non-inferiority``: the lower bound of the pooled paired 95% interval of the delta is
  ``>= -max_drop``: the data rule out a drop larger than the tolerance.

Before any variant counts, the adapter must beat its base model (scored without the adapter on
the same examples): when the pooled exact paired test of adapter vs base gives ``p >= 0.05``, or
the mean gain is below ``max_drop``, the bench is INCONCLUSIVE (a compression of an adapter that
does nothing "passes" trivially). Otherwise the record PASSes when some variant passes; the
recommendation is the passing variant with the largest parameter reduction (ties: the smaller
worst drop, then the name). ``retained_gain`` = (variant - base) / (adapter - base) per seed.

Statistics (scipy.stats): the paired data of two models on the same examples reduce to the
discordant pairs, ``worse`` (reference right, other wrong) and ``better`` (the reverse), of
``n`` pairs; the mean paired delta is ``(better - worse) / n``, a difference of two proportions
of one multinomial. Its interval is Newcombe's MOVER interval (method of variance estimates
recovery; Newcombe 1998, Zou & Donner 2008) built from the Wilson score limits of
``better / n`` and ``worse / n`` (``scipy.stats.binomtest(...).proportion_ci``) with the
cells' negative correlation; unlike an interval conditional on the number of discordant pairs
it keeps its coverage when the delta is far from zero, and with no discordant pair it is not
empty (the data only bound the disagreement). The p-value is McNemar's exact test,
``binomtest(better, better + worse, 0.5)``;
without per-example pairs (gradience 0.11 records) it is the sign test on the per-seed deltas.
"""

# Over 500 lines: every verdict rule, interval and test in one place, as DESIGN.md asks.

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gradience_hub.errors import ConfigError, RecordError

# The one status vocabulary. A bench record is PASS, FAIL or INCONCLUSIVE (a variant PASS or
# FAIL); AUDIT is an audit without a bench, ERROR a run that failed (the Action's outputs).
PASS = "PASS"
FAIL = "FAIL"
INCONCLUSIVE = "INCONCLUSIVE"
AUDIT = "AUDIT"
ERROR = "ERROR"
VERDICTS = (PASS, FAIL)
RECORD_STATUSES = (PASS, FAIL, INCONCLUSIVE)
STATUSES = (PASS, FAIL, INCONCLUSIVE, AUDIT, ERROR)

RULE_WORST_SEED = "worst-seed"
RULE_NON_INFERIORITY = "non-inferiority"
RULES = (RULE_WORST_SEED, RULE_NON_INFERIORITY)

LEVEL = 0.95  # the confidence level of every interval
GAIN_ALPHA = 0.05  # the adapter must beat its base at this significance

# Deltas are differences of accuracies (k/n), so "exactly -0.025" arrives as -0.025000000000000022
# and must pass; 1e-12 absorbs that rounding and is far below any real metric resolution.
TOLERANCE = 1e-12
# Stored numbers that are recomputed on reading must agree to this (JSON keeps 17 digits).
AGREEMENT = 1e-9

INTERVAL_METHOD = "mover-wilson"
INTERVAL_TEXT = (
    "Newcombe's MOVER interval for the difference of the two discordant-pair proportions, "
    "from their Wilson score limits (scipy.stats.binomtest)"
)
TEST_MCNEMAR = "mcnemar-exact"
TEST_SIGN = "sign-test-seeds"


def status_of(bench: dict[str, Any] | None) -> str:
    """The status a published result shows: AUDIT without a bench, else the record's status
    (an unknown one counts as FAIL: a record never passes by being unreadable)."""
    if bench is None:
        return AUDIT
    status = str(bench.get("status", "")).upper()
    return status if status in RECORD_STATUSES else FAIL


def overall_status(statuses: Iterable[str]) -> str:
    """The worst of several results' statuses: ERROR, FAIL, INCONCLUSIVE, PASS, then AUDIT."""
    present = set(statuses)
    for status in (ERROR, FAIL, INCONCLUSIVE, PASS):
        if status in present:
            return status
    return AUDIT


def is_failing(status: str) -> bool:
    """True for the statuses that ``fail-on: fail`` fails on (FAIL, INCONCLUSIVE)."""
    return status in (FAIL, INCONCLUSIVE)


# --------------------------------------------------------------------------- the policy


def _number(value: Any, key: str) -> float:
    """A finite number (numeric strings accepted: PyYAML reads ``1e-3`` as a string)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"policy.{key} must be a number, got {value!r}",
            hint="e.g. policy: {max_drop: 0.025, min_pass_rate: 1.0}",
            key=f"policy.{key}",
        )
    if not math.isfinite(value):
        raise ConfigError(f"policy.{key} must be finite, got {value!r}", key=f"policy.{key}")
    return float(value)


@dataclass(frozen=True)
class Policy:
    """The safety policy; validated when built (a bench config's ``policy:`` section is this
    type, so a bad value fails at config load, before any training).

    ``max_drop``: the largest allowed metric drop (0.025 = 2.5 points), on the worst seed
    (``worst-seed``) or at the pooled interval's lower bound (``non-inferiority``);
    ``seed_max_drop``: the per-seed tolerance that ``min_pass_rate`` counts (None: ``max_drop``);
    ``min_pass_rate``: the fraction of seeds that must be within ``seed_max_drop``;
    ``rule``: which rule decides (both are recorded).
    """

    max_drop: float = 0.025
    min_pass_rate: float = 1.0
    seed_max_drop: float | None = None
    rule: str = RULE_WORST_SEED

    def __post_init__(self) -> None:
        max_drop = _number(self.max_drop, "max_drop")
        if not 0.0 <= max_drop < 1.0:
            raise ConfigError(
                f"policy.max_drop must be in [0, 1), got {self.max_drop}",
                hint="it is a metric fraction: 0.025 allows a 2.5-point drop",
                key="policy.max_drop",
            )
        rate = _number(self.min_pass_rate, "min_pass_rate")
        if not 0.0 < rate <= 1.0:
            raise ConfigError(
                f"policy.min_pass_rate must be in (0, 1], got {self.min_pass_rate}",
                hint="1.0 requires every seed to pass; 0.67 tolerates one failing seed of three",
                key="policy.min_pass_rate",
            )
        seed_drop = max_drop
        if self.seed_max_drop is not None:
            seed_drop = _number(self.seed_max_drop, "seed_max_drop")
            if not 0.0 <= seed_drop <= max_drop:
                raise ConfigError(
                    f"policy.seed_max_drop must be in [0, max_drop={max_drop}], got "
                    f"{self.seed_max_drop}",
                    hint="the per-seed tolerance is at most the worst-seed floor max_drop",
                    key="policy.seed_max_drop",
                )
        if self.rule not in RULES:
            raise ConfigError(
                f"policy.rule must be one of {', '.join(RULES)}, got {self.rule!r}",
                hint="worst-seed (the default) or non-inferiority",
                key="policy.rule",
            )
        object.__setattr__(self, "max_drop", max_drop)
        object.__setattr__(self, "min_pass_rate", rate)
        object.__setattr__(self, "seed_max_drop", seed_drop)

    @property
    def seed_tolerance(self) -> float:
        """``seed_max_drop`` resolved (never None after validation)."""
        return float(self.seed_max_drop if self.seed_max_drop is not None else self.max_drop)

    def floor_passes(self, delta: float) -> bool:
        """True when a delta is within ``max_drop`` (the boundary passes)."""
        return delta >= -self.max_drop - TOLERANCE

    def seed_passes(self, delta: float) -> bool:
        """True when a seed's delta is within the per-seed tolerance (the boundary passes)."""
        return delta >= -self.seed_tolerance - TOLERANCE

    def replace(self, **changes: Any) -> Policy:
        """A validated copy with ``changes`` (e.g. ``max_drop=`` at publish time); a
        ``seed_max_drop`` that only followed the old ``max_drop`` follows the new one."""
        data = self.to_dict()
        if "max_drop" in changes and self.seed_tolerance == self.max_drop:
            data["seed_max_drop"] = None
        data.update({k: v for k, v in changes.items() if v is not None})
        return Policy(**data)

    def to_dict(self) -> dict[str, Any]:
        """bench.json ``policy``."""
        return {
            "rule": self.rule,
            "max_drop": float(self.max_drop),
            "seed_max_drop": self.seed_tolerance,
            "min_pass_rate": float(self.min_pass_rate),
        }


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Pairs:
    """Paired per-example correctness of a reference and another model, reduced to counts:
    ``n`` pairs, ``worse`` (reference right, other wrong), ``better`` (the reverse)."""

    n: int
    worse: int
    better: int

    def __post_init__(self) -> None:
        if self.n < 0 or self.worse < 0 or self.better < 0 or self.worse + self.better > self.n:
            raise RecordError(
                f"paired counts are impossible: n={self.n}, worse={self.worse}, "
                f"better={self.better}",
                hint="worse + better (the discordant pairs) cannot exceed n",
            )

    @classmethod
    def from_correct(
        cls, reference: Sequence[bool] | Sequence[int], other: Sequence[bool] | Sequence[int]
    ) -> Pairs:
        """Counts of two correctness vectors over the same examples in the same order."""
        if len(reference) != len(other):
            raise RecordError(
                f"paired correctness vectors differ in length ({len(reference)} vs "
                f"{len(other)}); both must score the same examples"
            )
        worse = sum(1 for x, y in zip(reference, other, strict=True) if x and not y)
        better = sum(1 for x, y in zip(reference, other, strict=True) if y and not x)
        return cls(len(reference), worse, better)

    def __add__(self, other: Pairs) -> Pairs:
        return Pairs(self.n + other.n, self.worse + other.worse, self.better + other.better)

    @property
    def mean(self) -> float:
        """The mean paired delta ``(better - worse) / n`` (0 without pairs)."""
        return (self.better - self.worse) / self.n if self.n else 0.0


@dataclass(frozen=True)
class Interval:
    """A confidence interval of a mean paired delta, with the counts it came from."""

    low: float
    high: float
    level: float
    method: str
    pairs: Pairs

    @property
    def half_width(self) -> float:
        """``(high - low) / 2``: the delta the data cannot resolve."""
        return (self.high - self.low) / 2.0

    def contains(self, x: float) -> bool:
        """True when ``low <= x <= high``."""
        return self.low - TOLERANCE <= x <= self.high + TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        """bench.json ``delta_ci``."""
        return {
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "method": self.method,
            "n": self.pairs.n,
            "worse": self.pairs.worse,
            "better": self.pairs.better,
        }


def paired_interval(pairs: Pairs, level: float = LEVEL) -> Interval:
    """The ``level`` interval of the mean paired delta (see the module docstring)."""
    from scipy.stats import binomtest

    n = pairs.n
    if n == 0:
        raise RecordError("no paired examples: an interval needs at least one")
    pb, pc = pairs.worse / n, pairs.better / n
    wb = binomtest(pairs.worse, n).proportion_ci(confidence_level=level, method="wilson")
    wc = binomtest(pairs.better, n).proportion_ci(confidence_level=level, method="wilson")
    lb, ub, lc, uc = float(wb.low), float(wb.high), float(wc.low), float(wc.high)
    # The two discordant cells of one multinomial are negatively correlated; delta = pc - pb
    # adds their variances plus twice the (negated) covariance.
    r = math.sqrt(pb * pc / ((1 - pb) * (1 - pc))) if 0 < pb < 1 and 0 < pc < 1 else 0.0
    d = pc - pb
    low = d - math.sqrt((pc - lc) ** 2 + (ub - pb) ** 2 + 2 * r * (pc - lc) * (ub - pb))
    high = d + math.sqrt((uc - pc) ** 2 + (pb - lb) ** 2 + 2 * r * (uc - pc) * (pb - lb))
    return Interval(max(-1.0, low), min(1.0, high), level, INTERVAL_METHOD, pairs)


def exact_paired_p(pairs: Pairs) -> float:
    """McNemar's exact two-sided test: the discordant pairs against Binomial(m, 1/2)."""
    from scipy.stats import binomtest

    m = pairs.worse + pairs.better
    return 1.0 if m == 0 else float(binomtest(pairs.better, m, 0.5).pvalue)


def sign_test(n_better: int, n_worse: int) -> float:
    """Exact two-sided sign test (ties already dropped); with three seeds it can never go
    below 0.25: it says how little three seeds can prove."""
    return exact_paired_p(Pairs(n_better + n_worse, n_worse, n_better))


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class SeedOutcome:
    """One seed of one variant: score, change against the adapter of that seed, its paired
    interval (when per-example pairs are known) and the retained gain (when the base is)."""

    score: float
    delta: float
    interval: Interval | None = None
    retained_gain: float | None = None


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
    verdicts: dict[str, str | None]
    verdict: str
    interval: Interval | None = None
    retained_gain_worst: float | None = None
    params: int | None = None
    param_reduction: float | None = None

    @property
    def passed(self) -> bool:
        """True for a PASS verdict."""
        return self.verdict == PASS


def retained_gain(score: float, reference: float, base: float) -> float | None:
    """``(score - base) / (reference - base)``; None when the adapter gains nothing."""
    gain = reference - base
    return None if abs(gain) <= TOLERANCE else (score - base) / gain


def _check_agrees(name: str, what: str, stored: float, computed: float) -> None:
    if abs(stored - computed) > AGREEMENT:
        raise RecordError(
            f"variant {name}: {what} is {stored!r} but its numbers give {computed!r}",
            hint="the record is inconsistent; regenerate it with 'gradience-hub bench'",
        )


def _check_scores(name: str, reference: Mapping[int, float], scores: Mapping[int, float]) -> None:
    """Raise unless the variant has scores, each for a seed the adapter has a score for."""
    if not scores:
        raise RecordError(f"variant {name} has no scores")
    missing = sorted(set(scores) - set(reference))
    if missing:
        raise RecordError(
            f"variant {name} has a score for seed {missing[0]} but the uncompressed adapter has "
            "none; deltas are only taken against the same seed"
        )


def _seed_delta(
    name: str,
    seed: int,
    delta: float,
    deltas: Mapping[int, float] | None,
    trust_deltas: bool,
) -> float:
    """A seed's delta: the stored one when trusted, else ``delta`` after checking that the
    stored one (if any) agrees with it."""
    if deltas is not None and seed in deltas:
        if trust_deltas:
            return float(deltas[seed])
        _check_agrees(name, f"seed {seed}'s delta", float(deltas[seed]), delta)
    return delta


def _seed_interval(
    name: str, seed: int, delta: float, seed_pairs: Mapping[int, Pairs] | None
) -> Interval | None:
    """The seed's paired interval (None without per-example pairs); its pairs must give
    ``delta``."""
    if seed_pairs is None:
        return None
    if seed not in seed_pairs:
        raise RecordError(f"variant {name}: no per-example pairs for seed {seed}")
    _check_agrees(name, f"seed {seed}'s delta", delta, seed_pairs[seed].mean)
    return paired_interval(seed_pairs[seed])


def _seed_outcomes(
    name: str,
    reference: Mapping[int, float],
    scores: Mapping[int, float],
    seed_pairs: Mapping[int, Pairs] | None,
    base: Mapping[int, float] | None,
    deltas: Mapping[int, float] | None,
    trust_deltas: bool,
) -> dict[int, SeedOutcome]:
    """Each seed's score, delta against the adapter of that seed, interval and retained gain
    (see :func:`judge_variant` for the arguments)."""
    per_seed: dict[int, SeedOutcome] = {}
    for seed in scores:
        score = float(scores[seed])
        delta = _seed_delta(name, seed, score - float(reference[seed]), deltas, trust_deltas)
        interval = _seed_interval(name, seed, delta, seed_pairs)
        gain = None
        if base is not None and seed in base:
            gain = retained_gain(score, float(reference[seed]), float(base[seed]))
        per_seed[int(seed)] = SeedOutcome(score, delta, interval, gain)
    return per_seed


@dataclass(frozen=True)
class _Rules:
    """Both rules' verdicts (non-inferiority None without pooled pairs), the pooled interval,
    and the p-value with the name of its test."""

    verdicts: dict[str, str | None]
    interval: Interval | None
    p_value: float
    test: str


def _rules(values: list[float], pass_rate: float, policy: Policy, pooled: Pairs | None) -> _Rules:
    """Judge the per-seed deltas ``values`` under both rules; with ``pooled`` pairs the exact
    paired test, else the sign test on the seeds."""
    verdicts: dict[str, str | None] = {
        RULE_WORST_SEED: PASS
        if policy.floor_passes(min(values)) and pass_rate >= policy.min_pass_rate - TOLERANCE
        else FAIL,
        RULE_NON_INFERIORITY: None,
    }
    if pooled is None:
        better = sum(1 for d in values if d > TOLERANCE)
        worse = sum(1 for d in values if d < -TOLERANCE)
        return _Rules(verdicts, None, sign_test(better, worse), TEST_SIGN)
    interval = paired_interval(pooled)
    verdicts[RULE_NON_INFERIORITY] = PASS if policy.floor_passes(interval.low) else FAIL
    return _Rules(verdicts, interval, exact_paired_p(pooled), TEST_MCNEMAR)


def _deciding_verdict(name: str, rules: _Rules, policy: Policy) -> str:
    """The verdict of ``policy.rule``; a RecordError when that rule could not be judged."""
    verdict = rules.verdicts[policy.rule]
    if verdict is None:
        raise RecordError(
            f"variant {name}: the non-inferiority rule needs per-example pairs, which this "
            "record does not hold",
            hint="use policy.rule: worst-seed for this record, or rerun the bench",
        )
    return verdict


def judge_variant(
    name: str,
    reference: Mapping[int, float],
    scores: Mapping[int, float],
    policy: Policy,
    *,
    seed_pairs: Mapping[int, Pairs] | None = None,
    pooled: Pairs | None = None,
    base: Mapping[int, float] | None = None,
    params: int | None = None,
    param_reduction: float | None = None,
    deltas: Mapping[int, float] | None = None,
    trust_deltas: bool = False,
) -> VariantOutcome:
    """Judge one variant under both rules; ``policy.rule`` picks its ``verdict``.

    ``reference`` / ``scores`` / ``base`` map seed -> metric. ``seed_pairs`` (seed -> counts of
    the adapter vs the variant on that seed's examples) give the per-seed intervals, ``pooled``
    the pooled interval and the exact p-value (without them: the sign test on the seeds, and no
    non-inferiority verdict). ``deltas`` are stored deltas to check against ``scores -
    reference`` (a record being re-judged): a disagreement is a RecordError; with
    ``trust_deltas`` they are used as recorded instead (gradience 0.11 rounded its scores and
    deltas separately, so they agree only to its rounding).
    """
    _check_scores(name, reference, scores)
    per_seed = _seed_outcomes(name, reference, scores, seed_pairs, base, deltas, trust_deltas)
    values = [s.delta for s in per_seed.values()]
    pass_rate = sum(policy.seed_passes(d) for d in values) / len(values)
    rules = _rules(values, pass_rate, policy, pooled)
    verdict = _deciding_verdict(name, rules, policy)
    gains = [s.retained_gain for s in per_seed.values() if s.retained_gain is not None]
    return VariantOutcome(
        name=name,
        per_seed=per_seed,
        mean=sum(s.score for s in per_seed.values()) / len(per_seed),
        worst_delta=min(values),
        pass_rate=pass_rate,
        p_value=rules.p_value,
        p_value_test=rules.test,
        verdicts=rules.verdicts,
        verdict=verdict,
        interval=rules.interval,
        retained_gain_worst=min(gains) if gains else None,
        params=params,
        param_reduction=param_reduction,
    )


def judge_recorded(
    name: str, worst_delta: float, pass_rate: float, n_seeds: int | None, policy: Policy
) -> str:
    """The worst-seed verdict of a record that kept only its worst delta and pass rate (a
    gradience 0.11 aggregate without per-seed values). The pass rate was counted under the
    record's own tolerance and is taken as measured."""
    if n_seeds:
        check_pass_rate(name, pass_rate, n_seeds)
    ok = policy.floor_passes(worst_delta) and pass_rate >= policy.min_pass_rate - TOLERANCE
    return PASS if ok else FAIL


def check_pass_rate(name: str, pass_rate: float, n_seeds: int) -> None:
    """A pass rate must be k / n_seeds for some whole k (else the record is inconsistent);
    gradience 0.11 rounds it to two decimals (1/3 is 0.33), which is allowed."""
    nearest = min(abs(pass_rate - k / n_seeds) for k in range(n_seeds + 1))
    if not 0.0 <= pass_rate <= 1.0 or nearest > 0.005 + AGREEMENT:
        raise RecordError(
            f"variant {name}: pass rate {pass_rate!r} cannot come from {n_seeds} seed(s)",
            hint="the record is inconsistent; regenerate it with 'gradience-hub bench'",
        )


def recommend(variants: Sequence[VariantOutcome]) -> VariantOutcome | None:
    """The passing variant with the largest parameter reduction (ties: smaller worst drop,
    then name); None when nothing passes."""
    passing = [v for v in variants if v.passed]
    if not passing:
        return None
    return min(passing, key=lambda v: (-(v.param_reduction or 0.0), -v.worst_delta, v.name))


# --------------------------------------------------------------------------- the base control


@dataclass
class BaseOutcome:
    """The base model without the adapter, on the same examples: its scores and the
    adapter's gain over it (``pairs``: base as reference, adapter as the other model)."""

    per_seed: dict[int, float]
    mean: float
    gain: float
    pairs: Pairs | None = None
    p_value: float | None = None
    interval: Interval | None = None


def judge_base(
    base: Mapping[int, float], reference: Mapping[int, float], pooled: Pairs | None = None
) -> BaseOutcome:
    """The base control: mean gain of the adapter over the base (same seeds) and the exact
    paired test of the pooled pairs."""
    seeds = [s for s in reference if s in base]
    if not seeds:
        raise RecordError("the base model has no score for any seed of the adapter")
    per_seed = {int(s): float(base[s]) for s in seeds}
    mean = sum(per_seed.values()) / len(per_seed)
    gain = sum(float(reference[s]) for s in seeds) / len(seeds) - mean
    if pooled is None:
        return BaseOutcome(per_seed, mean, gain)
    return BaseOutcome(
        per_seed, mean, gain, pooled, exact_paired_p(pooled), paired_interval(pooled)
    )


def inconclusive_reason(base: BaseOutcome | None, policy: Policy) -> str | None:
    """Why the bench cannot validate any compression, or None when the adapter beats its base
    beyond noise (no base control known: None)."""
    if base is None:
        return None
    scores = f"adapter {(base.mean + base.gain) * 100:.1f}% vs base model {base.mean * 100:.1f}%"
    if base.gain < policy.max_drop - TOLERANCE:
        return (
            f"the adapter's mean gain over its base model ({base.gain * 100:+.1f} points; "
            f"{scores}) is below max_drop ({policy.max_drop * 100:.1f} points)"
        )
    if base.p_value is not None and base.p_value >= GAIN_ALPHA:
        return (
            f"the adapter does not beat its base model beyond noise ({scores}; exact paired "
            f"test p = {base.p_value:.2g} >= {GAIN_ALPHA})"
        )
    return None


# --------------------------------------------------------------------------- the record


@dataclass
class Decision:
    """The policy's answer for a whole bench."""

    policy: Policy
    variants: list[VariantOutcome]
    status: str
    reason: str | None
    recommendation: VariantOutcome | None
    base: BaseOutcome | None = None
    noise_floor: float | None = None
    warnings: list[str] = field(default_factory=list)


def noise_floor(variants: Sequence[VariantOutcome]) -> tuple[float, str] | None:
    """The widest pooled interval half-width among the variants, and whose."""
    widths = [(v.interval.half_width, v.name) for v in variants if v.interval is not None]
    return max(widths) if widths else None


def noise_floor_warning(
    policy: Policy, floor: float | None, variant: str | None = None
) -> str | None:
    """A warning when the paired interval's half-width exceeds ``max_drop``: the eval set
    cannot resolve the tolerance."""
    if floor is None or floor <= policy.max_drop + TOLERANCE:
        return None
    whose = f" of {variant}" if variant else ""
    return (
        f"the paired 95% interval{whose} is ±{floor * 100:.1f} points wide, more than max_drop "
        f"({policy.max_drop * 100:.1f} points): the eval set cannot resolve the tolerance; "
        "use more eval examples or a larger max_drop"
    )


def decide(
    variants: Sequence[VariantOutcome], policy: Policy, base: BaseOutcome | None = None
) -> Decision:
    """Status (INCONCLUSIVE, else PASS when some variant passes, else FAIL), its reason,
    recommendation, noise floor and warnings."""
    reason = inconclusive_reason(base, policy)
    if reason is not None:
        status, best = INCONCLUSIVE, None
    else:
        best = recommend(variants)
        status = PASS if best is not None else FAIL
        if status == FAIL:
            reason = "no compressed variant passes the policy"
    floor = noise_floor(variants)
    warning = noise_floor_warning(policy, *floor) if floor else None
    return Decision(
        policy=policy,
        variants=list(variants),
        status=status,
        reason=reason,
        recommendation=best,
        base=base,
        noise_floor=floor[0] if floor else None,
        warnings=[warning] if warning else [],
    )
