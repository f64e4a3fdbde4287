"""Rank policies on planted spectra whose answers are worked out by hand (issue 23 item 1).

Each expected k below is derived in the comment next to it from the policy's definition (the
module docstring of gradience_hub/rank_policies.py, gradience 0.11.0's), not by running code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradience_hub.errors import UsageError
from gradience_hub.rank_policies import (
    DEFAULT_POLICIES,
    ModulePolicies,
    PolicyResult,
    PolicySpec,
    apply_policies,
    apply_policy,
    omega,
    parse_policies,
    summarize,
    why_they_differ,
)

SQUARE = (4096, 4096)


def k(name: str, s: list[float], r: int | None = None, shape: tuple[int, int] = SQUARE) -> int:
    return apply_policy(PolicySpec(name), np.array(s), shape, r or len(s)).k


def test_energy_exact_binary_fractions() -> None:
    # s^2 = 1/2, 1/4, 1/8, 1/8: cumulative 0.5, 0.75, 0.875, 1.0, all exact in binary
    s = [math.sqrt(0.5), math.sqrt(0.25), math.sqrt(0.125), math.sqrt(0.125)]
    assert k("energy@0.5", s) == 1  # the boundary counts (>=)
    assert k("energy@0.75", s) == 2
    assert k("energy@0.76", s) == 3
    assert k("energy@0.90", s) == 4
    assert k("energy@1.0", s) == 4
    # trailing zeros (a rank-deficient update) are not counted, and a zero update needs 0
    assert k("energy@0.90", [*s, 0.0, 0.0]) == 4
    assert k("energy@0.90", [0.0, 0.0]) == 0


def test_erank_closed_forms() -> None:
    # p = s / sum s = (1/2, 1/4, 1/4): H = 1.5 ln 2, exp(H) = 2^1.5 = 2.83 -> ceil 3
    assert k("erank", [2.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]) == 3
    # one direction: H = 0 -> 1
    assert k("erank", [5.0, 0.0, 0.0]) == 1
    # p = (0.9, 0.1): H = 0.325, exp = 1.38 -> 2
    assert k("erank", [0.9, 0.1]) == 2


def test_stable_ceil_closed_forms() -> None:
    # (4 + 1 + 1) / 4 = 1.5 -> 2
    assert k("stable-ceil", [2.0, 1.0, 1.0]) == 2
    # (1+1+1+1+0.25) / 1 = 4.25 -> 5, at most the 5 non-zero values
    assert k("stable-ceil", [1.0, 1.0, 1.0, 1.0, 0.5]) == 5
    # exactly 2 (two equal values): eps in the denominator keeps it from rounding up to 3
    assert k("stable-ceil", [1.0, 1.0, 0.0]) == 2


def test_oht_uses_the_module_shape() -> None:
    assert omega(1.0) == pytest.approx(2.86)
    # beta = 1024/4096 = 0.25: 0.56/64 - 0.95/16 + 1.82/4 + 1.43 = 1.834375
    assert omega(0.25) == pytest.approx(1.834375)
    s = [10.0, 2.0, 1.9, 1.0, 1.0, 1.0, 1.0, 1.0]  # median 1.0
    assert k("oht", s, shape=(4096, 4096)) == 1  # tau = 2.86: only 10
    assert k("oht", s, shape=(1024, 4096)) == 3  # tau = 1.83: 10, 2, 1.9
    assert k("oht", s, shape=(4096, 1024)) == 3  # beta is symmetric
    assert k("oht", [5.0, 1.0], r=2) == 1  # r < 3: gradience's guard
    # nothing above tau still suggests 1 (clamped), never 0 for a non-zero update
    assert k("oht", [1.0] * 8) == 1


def test_oht_median_is_numpys_float32_median() -> None:
    """oht's tau is omega(beta) times numpy's own median of the float32 values (gradience
    computes it so), for odd and even counts, ties and values that round in float32."""
    rng = np.random.default_rng(3)
    for n in (3, 4, 7, 8, 63, 64):
        s = np.sort(rng.lognormal(sigma=3.0, size=n))[::-1]
        s[1] = s[0]  # a tie
        result = apply_policy(PolicySpec("oht"), s, SQUARE, n)
        s32 = s.astype(np.float32)
        assert result.threshold == omega(1.0) * float(np.median(s32[s32 > 1e-12])), n


def test_knee_worked_by_hand() -> None:
    # s = 1 (x4) then 0.001 (x12): y = 0.25, 0.5, 0.75, ~1, ~1, ...; n = 16, window
    # min(5, max(3, 16 // 3)) = 5, zero-padded moving average: y_s[3] = (0.5+0.75+1+1+1)/5 = 0.85,
    # y_s[4] = (0.75+1+1+1+1)/5 = 0.95, y_s[5] = 1.0; minus x = i/15: 0.65, 0.683, 0.667 ->
    # argmax at index 4 -> k = 5 (the smoothing moves the bend one step right)
    s = [1.0] * 4 + [1e-3] * 12
    result = apply_policy(PolicySpec("knee"), np.array(s), SQUARE, 16)
    assert result.k == 5
    assert result.threshold == pytest.approx(0.95 - 4 / 15, abs=1e-5)
    # a flat spectrum: y - x stays under 0.1 -> no knee, keep r
    flat = apply_policy(PolicySpec("knee"), np.ones(16), SQUARE, 16)
    assert (flat.k, "flat" in flat.note) == (16, True)
    # fewer than two values: the count itself
    assert k("knee", [3.0, 0.0, 0.0], r=3) == 1


def test_parse_policies() -> None:
    names = [p.name for p in parse_policies(DEFAULT_POLICIES)]
    assert names == ["energy@0.90", "knee", "erank", "oht", "stable-ceil"]
    assert [p.name for p in parse_policies("energy@.9 energy@0.90,knee")] == [
        "energy@0.90",
        "knee",
    ]
    assert PolicySpec("energy@0.999").threshold == 0.999
    for bad in ("energy@1.5", "energy@0", "energy", "elbow", "energy@x"):
        with pytest.raises(UsageError):
            PolicySpec(bad)
    with pytest.raises(UsageError):
        parse_policies(" , ")


def test_spread_consensus_and_summary() -> None:
    module = ModulePolicies(
        (
            PolicyResult("energy@0.90", 10, 0.9, "energy"),
            PolicyResult("knee", 4, 0.5, "knee height"),
            PolicyResult("erank", 14, 13.8, "effective rank"),
            PolicyResult("oht", 1, 0.2, "singular value"),
        )
    )
    assert module.spread == 13
    assert module.consensus == 7  # median of 1, 4, 10, 14 is 7.0
    assert ModulePolicies(module.results[:2]).consensus == 7  # 7.0 again (4, 10)
    assert ModulePolicies(module.results[1:3]).consensus == 9  # (4, 14) -> 9
    three = ModulePolicies(module.results[:3])
    assert three.consensus == 10
    sentence = why_they_differ(module)
    assert sentence.startswith("oht suggests 1 and erank 14")
    specs = parse_policies("knee")
    modules = {
        f"m{i}": ModulePolicies((PolicyResult("knee", k_, None, "knee height"),))
        for i, k_ in enumerate([1, 2, 3, 4, 10, 0])
    }
    (summary,) = summarize(specs, modules, allocated=16)
    # sorted 0 1 2 3 4 10: median 2.5; p90 at position 4.5 -> 4 + 0.5 * 6 = 7
    assert (summary.median, summary.p90, summary.max) == (2.5, 7.0, 10)
    assert (summary.suggested_r_median, summary.suggested_r_p90) == (4, 8)
    assert summary.rank_pattern == {"m0": 1, "m1": 2, "m2": 3, "m3": 4, "m4": 10, "m5": 1}


def test_every_default_policy_on_one_module() -> None:
    s = np.array([1.0] * 4 + [1e-3] * 12)
    ks = apply_policies(parse_policies(DEFAULT_POLICIES), s, SQUARE, 16).ks
    # energy: 4 values hold 4 / (4 + 12e-6) of the energy -> 4; stable rank 4 + 12e-6 -> 5;
    # erank: p ~ (0.2497 x4, 0.00025 x12), exp(H) = 4.1 -> 5; oht: median 0.001, tau 0.00286 -> 4
    assert ks == {"energy@0.90": 4, "knee": 5, "erank": 5, "oht": 4, "stable-ceil": 5}
