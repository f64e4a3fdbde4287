"""The seed article's policy on hand-made results."""

from __future__ import annotations

import math

import pytest

from gradience_hub.errors import ConfigError, RecordError
from gradience_hub.policy import (
    FAIL,
    PASS,
    TEST_MCNEMAR,
    TEST_SIGN,
    Policy,
    binomial_two_sided,
    decide,
    evaluate_variant,
    mcnemar_exact,
    metric_se,
    noise_floor_warning,
    recommend,
    sign_test,
)

REF = {42: 0.85, 123: 0.83, 456: 0.84}


def _variant(name: str, deltas: list[float], policy: Policy | None = None, **kw):  # type: ignore[no-untyped-def]
    scores = {s: REF[s] + d for s, d in zip(REF, deltas, strict=True)}
    return evaluate_variant(name, REF, scores, policy or Policy(), **kw)


def test_boundary_passes_and_just_beyond_fails() -> None:
    # 0.825 - 0.85 is -0.025000000000000022 in floating point: the boundary must still pass
    exact = evaluate_variant("v", {1: 0.85}, {1: 0.825}, Policy())
    assert exact.worst_delta < -0.025 and exact.verdict == PASS
    assert _variant("v", [-0.025, 0.0, 0.01]).verdict == PASS
    beyond = _variant("v", [-0.0251, 0.0, 0.01])
    assert beyond.verdict == FAIL
    assert beyond.worst_delta == pytest.approx(-0.0251)
    assert beyond.pass_rate == pytest.approx(2 / 3)


def test_per_seed_deltas_are_against_the_same_seed() -> None:
    v = evaluate_variant("v", {1: 0.9, 2: 0.5}, {1: 0.88, 2: 0.51}, Policy())
    assert v.per_seed[1].delta == pytest.approx(-0.02)
    assert v.per_seed[2].delta == pytest.approx(0.01)
    assert v.mean == pytest.approx((0.88 + 0.51) / 2)
    assert v.worst_delta == pytest.approx(-0.02)
    with pytest.raises(RecordError, match="seed 3"):
        evaluate_variant("v", {1: 0.9}, {1: 0.9, 3: 0.9}, Policy())


def test_pass_rate_rule() -> None:
    lenient = Policy(max_drop=0.025, min_pass_rate=0.6)
    # all seeds within the drop: pass rate 1
    ok = _variant("ok", [-0.01, -0.02, 0.0], lenient)
    assert ok.pass_rate == 1.0 and ok.verdict == PASS
    # one seed beyond: pass rate 2/3 >= 0.6, but the worst-seed rule still fails it
    one_bad = _variant("bad", [-0.05, 0.0, 0.0], lenient)
    assert one_bad.pass_rate == pytest.approx(2 / 3)
    assert one_bad.verdict == FAIL
    strict = _variant("strict", [-0.03, 0.0, 0.0], Policy(min_pass_rate=1.0))
    assert strict.pass_rate == pytest.approx(2 / 3) and strict.verdict == FAIL
    # with a tolerance of 0.05 the same deltas pass every seed
    assert _variant("loose", [-0.05, 0.0, 0.0], Policy(max_drop=0.05)).verdict == PASS


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


def test_noise_floor_and_warning() -> None:
    assert metric_se(0.5, 100) == pytest.approx(0.05)
    assert metric_se(0.9, 400) == pytest.approx(0.015)
    assert noise_floor_warning(Policy(max_drop=0.025), 0.05) is not None
    assert "noise floor" in noise_floor_warning(Policy(max_drop=0.025), 0.05)  # type: ignore[operator]
    assert noise_floor_warning(Policy(max_drop=0.025), 0.015) is None
    small = decide([_variant("v", [0, 0, 0])], Policy(), reference_mean=0.5, eval_examples=100)
    assert small.metric_se == pytest.approx(0.05)
    assert len(small.warnings) == 1
    big = decide([_variant("v", [0, 0, 0])], Policy(), reference_mean=0.5, eval_examples=10_000)
    assert big.metric_se == pytest.approx(0.005) and big.warnings == []


def test_p_values_match_known_binomial_values() -> None:
    assert binomial_two_sided(0, 10) == pytest.approx(2 / 1024)
    assert binomial_two_sided(2, 10) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert binomial_two_sided(5, 10) == 1.0
    assert binomial_two_sided(0, 0) == 1.0
    assert sign_test(0, 3) == pytest.approx(0.25)  # three seeds can never prove more
    assert sign_test(3, 0) == sign_test(0, 3)
    # the log-space path agrees with the exact one across the switch-over
    assert binomial_two_sided(2400, 5000) == pytest.approx(
        float(2 * sum(math.comb(5000, i) for i in range(2401)) / 2**5000), rel=1e-9
    )
    b, c, p = mcnemar_exact([1, 1, 1, 0, 1, 0], [0, 0, 1, 0, 1, 1])
    assert (b, c) == (2, 1) and p == pytest.approx(1.0)
    with pytest.raises(RecordError):
        mcnemar_exact([1, 0], [1])


def test_variant_p_value_tests() -> None:
    seeds = _variant("v", [-0.01, -0.02, -0.03])
    assert seeds.p_value_test == TEST_SIGN and seeds.p_value == pytest.approx(0.25)
    ref_ok = {s: [True] * 10 for s in REF}
    var_bad = {s: [False] * 2 + [True] * 8 for s in REF}  # 6 discordant pairs, all one way
    paired = _variant("v", [-0.01, -0.02, -0.03], reference_correct=ref_ok, variant_correct=var_bad)
    assert paired.p_value_test == TEST_MCNEMAR
    assert paired.p_value == pytest.approx(2 / 2**6)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"max_drop": -0.1}, "policy.max_drop"),
        ({"max_drop": 1.5}, "policy.max_drop"),
        ({"max_drop": "a"}, "policy.max_drop"),
        ({"min_pass_rate": 0.0}, "policy.min_pass_rate"),
        ({"min_pass_rate": 1.2}, "policy.min_pass_rate"),
        ({"min_pass_rate": float("nan")}, "policy.min_pass_rate"),
    ],
)
def test_policy_validates(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Policy(**kwargs)
    assert info.value.key == key and info.value.exit_code == 2
