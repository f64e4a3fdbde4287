"""The policy on hand-made results: both rules, the base control, the paired statistics
(against statsmodels and exact binomial values as independent references) and interval
coverage on simulated paired correctness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradience_hub.errors import ConfigError, RecordError
from gradience_hub.policy import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    RULE_NON_INFERIORITY,
    RULE_WORST_SEED,
    TEST_MCNEMAR,
    TEST_SIGN,
    Pairs,
    Policy,
    decide,
    exact_paired_p,
    inconclusive_reason,
    judge_base,
    judge_variant,
    noise_floor_warning,
    paired_interval,
    recommend,
    retained_gain,
    sign_test,
)

REF = {42: 0.85, 123: 0.83, 456: 0.84}


def _variant(name: str, deltas: list[float], policy: Policy | None = None, **kw):  # type: ignore[no-untyped-def]
    scores = {s: REF[s] + d for s, d in zip(REF, deltas, strict=True)}
    return judge_variant(name, REF, scores, policy or Policy(), **kw)


def test_boundary_passes_and_just_beyond_fails() -> None:
    # 0.825 - 0.85 is -0.025000000000000022 in floating point: the boundary must still pass
    exact = judge_variant("v", {1: 0.85}, {1: 0.825}, Policy())
    assert exact.worst_delta < -0.025 and exact.verdict == PASS
    assert _variant("v", [-0.025, 0.0, 0.01]).verdict == PASS
    beyond = _variant("v", [-0.0251, 0.0, 0.01])
    assert beyond.verdict == FAIL
    assert beyond.worst_delta == pytest.approx(-0.0251)
    assert beyond.pass_rate == pytest.approx(2 / 3)


def test_per_seed_deltas_are_against_the_same_seed() -> None:
    v = judge_variant("v", {1: 0.9, 2: 0.5}, {1: 0.88, 2: 0.51}, Policy())
    assert v.per_seed[1].delta == pytest.approx(-0.02)
    assert v.per_seed[2].delta == pytest.approx(0.01)
    assert v.mean == pytest.approx((0.88 + 0.51) / 2)
    assert v.worst_delta == pytest.approx(-0.02)
    with pytest.raises(RecordError, match="seed 3"):
        judge_variant("v", {1: 0.9}, {1: 0.9, 3: 0.9}, Policy())
    with pytest.raises(RecordError, match="delta"):  # a stored delta that is not score - ref
        judge_variant("v", {1: 0.9}, {1: 0.88}, Policy(), deltas={1: 0.0})


def test_seed_max_drop_gives_min_pass_rate_meaning() -> None:
    # default: one tolerance, so a passing worst seed means every seed passes
    same = _variant("v", [-0.02, 0.0, 0.0], Policy(max_drop=0.025, min_pass_rate=0.6))
    assert same.pass_rate == 1.0 and same.verdict == PASS
    floor_only = _variant("v", [-0.05, 0.0, 0.0], Policy(max_drop=0.025, min_pass_rate=0.6))
    assert floor_only.pass_rate == pytest.approx(2 / 3) and floor_only.verdict == FAIL
    # gradience 0.11's shape: floor 5 points on the worst seed, 2.5 points counted per seed
    lenient = Policy(max_drop=0.05, seed_max_drop=0.025, min_pass_rate=0.6)
    one_loose = _variant("v", [-0.04, 0.0, 0.0], lenient)
    assert one_loose.pass_rate == pytest.approx(2 / 3) and one_loose.verdict == PASS
    strict = Policy(max_drop=0.05, seed_max_drop=0.025, min_pass_rate=1.0)
    assert _variant("v", [-0.04, 0.0, 0.0], strict).verdict == FAIL
    two_loose = _variant("v", [-0.04, -0.03, 0.0], lenient)
    assert two_loose.pass_rate == pytest.approx(1 / 3) and two_loose.verdict == FAIL
    assert _variant("v", [-0.06, 0.0, 0.0], lenient).verdict == FAIL  # below the floor


def test_both_rules_are_recorded_and_rule_picks_one() -> None:
    scores = {42: 0.85 - 0.02, 123: 0.83 - 0.01, 456: 0.84}  # -2, -1, 0 points
    # few examples (200 per seed): every seed is within 2.5 points, but the pooled interval
    # of the -1 point mean reaches below -2.5 points
    few = {"seed_pairs": {42: Pairs(200, 6, 2), 123: Pairs(200, 4, 2), 456: Pairs(200, 2, 2)}}
    few["pooled"] = Pairs(600, 12, 6)  # type: ignore[assignment]
    small = judge_variant("v", REF, scores, Policy(max_drop=0.025), **few)  # type: ignore[arg-type]
    assert small.interval is not None and small.interval.low < -0.025
    assert small.verdicts == {RULE_WORST_SEED: PASS, RULE_NON_INFERIORITY: FAIL}
    assert small.verdict == PASS  # worst-seed decides by default
    ni = Policy(max_drop=0.025, rule=RULE_NON_INFERIORITY)
    assert judge_variant("v", REF, scores, ni, **few).verdict == FAIL  # type: ignore[arg-type]
    # many examples (800 per seed): the worst seed (-2) is beyond 1.8 points, the interval
    # rules out a drop of 1.8 points
    many = {"seed_pairs": {42: Pairs(800, 24, 8), 123: Pairs(800, 16, 8), 456: Pairs(800, 8, 8)}}
    many["pooled"] = Pairs(2400, 48, 24)  # type: ignore[assignment]
    big = judge_variant("v", REF, scores, Policy(max_drop=0.018), **many)  # type: ignore[arg-type]
    assert big.interval is not None and -0.018 < big.interval.low < big.interval.high < 0
    assert big.verdicts == {RULE_WORST_SEED: FAIL, RULE_NON_INFERIORITY: PASS}
    assert big.verdict == FAIL
    decided = judge_variant(
        "v",
        REF,
        scores,
        Policy(max_drop=0.018, rule=RULE_NON_INFERIORITY),
        **many,  # type: ignore[arg-type]
    )
    assert decided.verdict == PASS
    assert decided.p_value_test == TEST_MCNEMAR
    assert decided.p_value == pytest.approx(exact_paired_p(Pairs(2400, 48, 24)))
    assert decided.per_seed[42].interval == paired_interval(Pairs(800, 24, 8))
    # without pairs there is no non-inferiority verdict, and the rule cannot be applied
    assert _variant("v", [0.0, 0.0, 0.0]).verdicts[RULE_NON_INFERIORITY] is None
    with pytest.raises(RecordError, match="non-inferiority"):
        _variant("v", [0.0, 0.0, 0.0], Policy(rule=RULE_NON_INFERIORITY))


def test_recommendation_is_largest_reduction_among_passing() -> None:
    a = _variant("uniform_median", [-0.01, -0.02, 0.0], param_reduction=0.5)
    b = _variant("uniform_p90", [-0.001, 0.0, 0.0], param_reduction=0.25)
    c = _variant("aggressive", [-0.2, -0.1, 0.0], param_reduction=0.9)
    assert recommend([b, a, c]) is a
    tie = _variant("tie", [-0.005, 0.0, 0.0], param_reduction=0.5)
    assert recommend([a, tie]) is tie  # same reduction: the smaller worst drop wins
    assert recommend([c]) is None
    decision = decide([a, b, c], Policy())
    assert decision.status == PASS and decision.recommendation is a
    assert decide([c], Policy()).status == FAIL
    assert decide([c], Policy()).recommendation is None


def test_base_control_makes_a_useless_adapter_inconclusive() -> None:
    good = _variant("v", [0.0, 0.0, 0.0], param_reduction=0.5)
    # the adapter gains 1 point over its base: below max_drop (2.5), whatever the p-value
    small = judge_base({s: REF[s] - 0.01 for s in REF}, REF, Pairs(3000, 0, 30))
    assert small.gain == pytest.approx(0.01) and small.p_value is not None
    assert small.p_value < 1e-8
    reason = inconclusive_reason(small, Policy())
    assert reason is not None and "below max_drop (2.5 points)" in reason
    decision = decide([good], Policy(), small)
    assert decision.status == INCONCLUSIVE and decision.recommendation is None
    assert decision.reason == reason
    # a large gain that is not beyond noise: 10 points from 10 discordant pairs of 100
    noisy = judge_base({s: REF[s] - 0.1 for s in REF}, REF, Pairs(100, 2, 8))
    assert noisy.p_value == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert "p = 0.11 >= 0.05" in (inconclusive_reason(noisy, Policy()) or "")
    # a clear gain: the variants decide
    clear = judge_base({s: REF[s] - 0.3 for s in REF}, REF, Pairs(900, 10, 280))
    assert inconclusive_reason(clear, Policy()) is None
    assert decide([good], Policy(), clear).status == PASS
    assert inconclusive_reason(None, Policy()) is None  # no control recorded (0.11)


def test_retained_gain() -> None:
    assert retained_gain(0.9, 0.9, 0.5) == 1.0
    assert retained_gain(0.5, 0.9, 0.5) == 0.0
    assert retained_gain(0.8, 0.9, 0.5) == pytest.approx(0.75)
    assert retained_gain(0.8, 0.5, 0.5) is None  # the adapter gains nothing: undefined
    v = _variant("v", [-0.1, 0.0, -0.05], base={s: REF[s] - 0.2 for s in REF})
    assert v.per_seed[42].retained_gain == pytest.approx(0.5)
    assert v.retained_gain_worst == pytest.approx(0.5)


def test_interval_is_mover_on_statsmodels_wilson_limits() -> None:
    """The reference: statsmodels' Wilson limits of both discordant cells, combined with
    Newcombe's MOVER formula for two negatively correlated multinomial proportions."""
    from statsmodels.stats.proportion import proportion_confint

    for n, worse, better in [(300, 9, 3), (120, 0, 5), (500, 40, 41), (50, 1, 0), (80, 0, 0)]:
        ci = paired_interval(Pairs(n, worse, better))
        pb, pc = worse / n, better / n
        lb, ub = proportion_confint(worse, n, alpha=0.05, method="wilson")
        lc, uc = proportion_confint(better, n, alpha=0.05, method="wilson")
        r = math.sqrt(pb * pc / ((1 - pb) * (1 - pc)))
        low = pc - pb - math.sqrt((pc - lc) ** 2 + (ub - pb) ** 2 + 2 * r * (pc - lc) * (ub - pb))
        high = pc - pb + math.sqrt((uc - pc) ** 2 + (pb - lb) ** 2 + 2 * r * (uc - pc) * (pb - lb))
        assert ci.low == pytest.approx(low, abs=1e-12)
        assert ci.high == pytest.approx(high, abs=1e-12)
        assert ci.contains(Pairs(n, worse, better).mean)
    # no discordant pair: not an empty interval, the data only bound the disagreement
    none = paired_interval(Pairs(100, 0, 0))
    assert none.low == -none.high and none.high == pytest.approx(3.8415 / (100 + 3.8415), 1e-4)


@pytest.mark.parametrize(("p_worse", "p_better"), [(0.06, 0.04), (0.10, 0.02)])
def test_interval_covers_the_true_delta_95_percent_of_the_time(
    p_worse: float, p_better: float
) -> None:
    rng = np.random.default_rng(20261201)
    n, draws = 300, 2000
    truth = p_better - p_worse
    counts = rng.multinomial(n, [p_worse, p_better, 1 - p_worse - p_better], size=draws)
    covered = sum(paired_interval(Pairs(n, int(w), int(b))).contains(truth) for w, b, _ in counts)
    assert 0.93 <= covered / draws <= 0.97


def test_exact_p_values_match_known_binomial_values() -> None:
    assert exact_paired_p(Pairs(10, 10, 0)) == pytest.approx(2 / 1024)
    assert exact_paired_p(Pairs(10, 8, 2)) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert exact_paired_p(Pairs(10, 5, 5)) == 1.0
    assert exact_paired_p(Pairs(10, 0, 0)) == 1.0
    assert sign_test(0, 3) == pytest.approx(0.25)  # three seeds can never prove more
    assert sign_test(3, 0) == sign_test(0, 3)
    big = exact_paired_p(Pairs(6000, 2600, 2400))
    exact = float(2 * sum(math.comb(5000, i) for i in range(2401)) / 2**5000)
    assert big == pytest.approx(exact, rel=1e-9)
    assert Pairs.from_correct([1, 1, 1, 0, 1, 0], [0, 0, 1, 0, 1, 1]) == Pairs(6, 2, 1)
    with pytest.raises(RecordError):
        Pairs.from_correct([1, 0], [1])
    with pytest.raises(RecordError, match="impossible"):
        Pairs(5, 4, 3)
    assert _variant("v", [-0.01, -0.02, -0.03]).p_value_test == TEST_SIGN


def test_noise_floor_is_the_paired_half_width_and_warns_only_beyond_max_drop() -> None:
    wide = judge_variant("v", {1: 0.8}, {1: 0.8}, Policy(), seed_pairs={1: Pairs(50, 5, 5)},
                         pooled=Pairs(50, 5, 5))  # fmt: skip
    narrow = judge_variant("w", {1: 0.8}, {1: 0.8}, Policy(), seed_pairs={1: Pairs(900, 2, 2)},
                           pooled=Pairs(900, 2, 2))  # fmt: skip
    assert wide.interval is not None and narrow.interval is not None
    assert wide.interval.half_width > 0.025 > narrow.interval.half_width
    decision = decide([wide, narrow], Policy())
    assert decision.noise_floor == wide.interval.half_width
    assert len(decision.warnings) == 1 and "interval of v" in decision.warnings[0]
    assert decide([narrow], Policy()).warnings == []
    assert noise_floor_warning(Policy(max_drop=0.025), 0.025) is None  # equal: resolvable


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"max_drop": -0.1}, "policy.max_drop"),
        ({"max_drop": 1.0}, "policy.max_drop"),
        ({"max_drop": "a"}, "policy.max_drop"),
        ({"min_pass_rate": 0.0}, "policy.min_pass_rate"),
        ({"min_pass_rate": 1.2}, "policy.min_pass_rate"),
        ({"min_pass_rate": float("nan")}, "policy.min_pass_rate"),
        ({"seed_max_drop": 0.05}, "policy.seed_max_drop"),
        ({"rule": "mean"}, "policy.rule"),
    ],
)
def test_policy_validates(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Policy(**kwargs)
    assert info.value.key == key and info.value.exit_code == 2


def test_policy_reads_numeric_strings_and_replaces() -> None:
    policy = Policy(max_drop="1e-2")  # type: ignore[arg-type]
    assert policy.max_drop == 0.01 and policy.seed_tolerance == 0.01
    looser = policy.replace(max_drop=0.05)
    assert looser.to_dict() == {
        "rule": "worst-seed",
        "max_drop": 0.05,
        "seed_max_drop": 0.05,
        "min_pass_rate": 1.0,
    }
    kept = Policy(max_drop=0.05, seed_max_drop=0.02).replace(max_drop=0.04)
    assert kept.seed_tolerance == 0.02
