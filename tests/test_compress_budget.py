"""compress --budget-params / --budget-mb: the exact knapsack against a brute force, the
relaxation bound, the cost-unit cap, and never worse than the uniform rank of the same size on
the demo adapter and on a 7B-shaped one."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from gradience_hub.adapter import open_adapter
from gradience_hub.compress.budget import (
    allocate,
    allocation_cost,
    discarded_energy,
    relaxation,
    uniform_ranks,
)
from gradience_hub.compress.sizing import BudgetRule, header_bound, plan_budget
from gradience_hub.errors import UsageError
from tests.factories import llama_like_adapter, lora_config, planted_factors, write_adapter

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo-output" / "adapter"


def _brute(gains: list[np.ndarray], costs: list[int], budget: int, min_rank: int) -> float:
    """The least discarded energy over every allocation within the budget (enumerated)."""
    return min(
        discarded_energy(gains, ranks)
        for ranks in itertools.product(*[range(min_rank, len(g) + 1) for g in gains])
        if allocation_cost(costs, ranks) <= budget
    )


def _case(rng: np.random.Generator) -> tuple[list[np.ndarray], list[int]]:
    n = int(rng.integers(1, 5))
    gains = [np.sort(rng.exponential(1.0, size=int(rng.integers(1, 6))))[::-1] for _ in range(n)]
    costs = [int(rng.integers(1, 9)) * int(rng.choice([1, 2, 3])) for _ in range(n)]
    return gains, costs


@pytest.mark.parametrize("min_rank", [0, 1])
def test_allocation_is_optimal_against_brute_force(min_rank: int) -> None:
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(400):
        gains, costs = _case(rng)
        floor = min_rank * sum(costs)
        top = sum(c * len(g) for g, c in zip(gains, costs, strict=True))
        budget = int(rng.integers(floor, top + 3))
        found = allocate(gains, costs, budget, min_rank=min_rank)
        best = _brute(gains, costs, budget, min_rank)
        assert found.exact
        assert found.cost <= budget
        assert found.cost == allocation_cost(costs, found.ranks)
        assert found.discarded == pytest.approx(best, abs=1e-12)
        # the relaxation is a lower bound, and tight when the greedy spends the budget exactly
        assert found.relaxation_bound <= best + 1e-12
        checked += 1
    assert checked == 400


def test_relaxation_bound_is_the_fractional_greedy() -> None:
    # two modules, one rank of cost 1 and gain 4 vs cost 2 and gain 6 (ratio 3): with budget 2
    # the greedy takes the first (ratio 4) and half of the second: kept 4 + 3 = 7 of 10
    gains = [np.array([4.0]), np.array([6.0])]
    ranks, kept = relaxation(gains, [1, 2], 2, min_rank=0)
    assert ranks == [1, 0] and kept == pytest.approx(7.0)
    found = allocate(gains, [1, 2], 2, min_rank=0)
    assert found.ranks == (0, 1) and found.discarded == pytest.approx(4.0)
    assert found.relaxation_bound == pytest.approx(3.0)


def test_cost_unit_cap_never_exceeds_and_never_loses_to_uniform() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        gains, costs = _case(rng)
        costs = [c * 1009 + int(rng.integers(0, 7)) for c in costs]  # gcd usually 1
        top = sum(c * len(g) for g, c in zip(gains, costs, strict=True))
        budget = int(rng.integers(sum(costs), top + 3))
        coarse = allocate(gains, costs, budget, max_units=3)
        uniform, _ = uniform_ranks(gains, costs, budget)
        assert coarse.cost <= budget
        assert coarse.discarded <= discarded_energy(gains, uniform) + 1e-12
        assert coarse.discarded >= _brute(gains, costs, budget, 1) - 1e-12
        if (budget - sum(costs)) // int(np.gcd.reduce(costs)) > 3:
            assert not coarse.exact and coarse.unit > 1


def test_budget_below_rank_one_everywhere_is_refused() -> None:
    with pytest.raises(ValueError, match="below the minimum 5"):
        allocate([np.ones(2), np.ones(2)], [2, 3], 4)


def _seven_b_modules() -> list[tuple[str, int, int]]:
    """(name, d_in, d_out) of a Llama-2-7B adapter on every projection of its 32 layers."""
    shapes = {
        "q_proj": (4096, 4096),
        "k_proj": (4096, 4096),
        "v_proj": (4096, 4096),
        "o_proj": (4096, 4096),
        "gate_proj": (4096, 11008),
        "up_proj": (4096, 11008),
        "down_proj": (11008, 4096),
    }
    return [
        (f"model.layers.{i}.{p}", d_in, d_out)
        for i in range(32)
        for p, (d_in, d_out) in shapes.items()
    ]


@pytest.mark.parametrize("objective", ["relative", "absolute"])
@pytest.mark.parametrize("unit_bytes", [1, 2])  # parameters, and bf16 file bytes
def test_never_worse_than_uniform_on_a_7b_shaped_adapter(objective: str, unit_bytes: int) -> None:
    """Rank-16 spectra with per-module decay rates, at the exact size of every uniform rank."""
    rng = np.random.default_rng(0)
    modules = _seven_b_modules()
    gains = []
    for _ in modules:
        S = np.geomspace(1.0, float(rng.uniform(1e-3, 0.3)), 16) * float(rng.uniform(0.2, 3.0))
        energy = S**2
        gains.append(energy / energy.sum() if objective == "relative" else energy)
    costs = [(d_in + d_out) * unit_bytes for _, d_in, d_out in modules]
    for k in (1, 4, 12):
        budget = k * sum(costs)
        found = allocate(gains, costs, budget)
        uniform = [k] * len(modules)
        assert found.cost <= budget
        assert found.discarded <= discarded_energy(gains, uniform) + 1e-12
        assert found.relaxation_bound <= found.discarded + 1e-12
        if k > 1:  # at rank 1 everywhere there is nothing to choose
            # with heterogeneous decay the per-module ranks are strictly better
            assert found.discarded < discarded_energy(gains, uniform) * (1 - 1e-6)


@pytest.mark.parametrize("objective", ["relative", "absolute"])
def test_demo_adapter_budget_beats_uniform_at_each_uniform_size(objective: str) -> None:
    adapter = open_adapter(DEMO)
    per_rank = {m.name: m.params // m.r for m in adapter.modules()}
    r = max(m.r for m in adapter.modules())
    for k in (1, 2, 4, 8):
        size = k * sum(per_rank.values())
        plan = plan_budget(adapter, BudgetRule(params=size, objective=objective))
        assert plan.uniform_rank == k and plan.uniform_cost == size
        assert plan.cost <= size
        assert plan.cost == sum(plan.ranks[n] * c for n, c in per_rank.items())
        assert plan.discarded <= plan.uniform_discarded + 1e-12
        assert plan.bound <= plan.discarded + 1e-12
        assert all(1 <= plan.ranks[n] <= r for n in per_rank)


def test_plan_budget_objectives_differ_and_match_the_spectra(tmp_path: Path) -> None:
    """Module a: huge energy, flat spectrum; module b: small energy, one dominant value. The
    absolute objective spends the budget on a, the relative one on b's fraction."""
    a = planted_factors(16, 16, 4, np.array([10.0, 9.0, 8.0, 7.0]), seed=1)
    b = planted_factors(16, 16, 4, np.array([1.0, 0.5, 0.4, 0.3]), seed=2)
    config = lora_config(r=4, lora_alpha=4, target_modules=["a", "b"])
    src = write_adapter(tmp_path / "src", {"a": a, "b": b}, config, dtype=np.float64)
    adapter = open_adapter(src)
    budget = 5 * 32  # rank 1 each plus 3 more ranks
    absolute = plan_budget(adapter, BudgetRule(params=budget, objective="absolute"))
    relative = plan_budget(adapter, BudgetRule(params=budget, objective="relative"))
    assert absolute.ranks == {"a": 4, "b": 1}
    # relative: a's 2nd value keeps 81/294, b's 2nd .25/1.5 (ratio per param decides greedily)
    energies = {"a": np.array([100, 81, 64, 49.0]), "b": np.array([1, 0.25, 0.16, 0.09])}
    fractions = {n: e / e.sum() for n, e in energies.items()}
    best = min(
        (fractions["a"][ka:].sum() + fractions["b"][kb:].sum(), {"a": ka, "b": kb})
        for ka in range(1, 5)
        for kb in range(1, 5)
        if ka + kb <= 5
    )
    assert relative.ranks == best[1]
    assert relative.discarded == pytest.approx(best[0], rel=1e-9)
    assert absolute.discarded == pytest.approx(0.16 + 0.09 + 0.25, rel=1e-9)


def test_budget_rule_refusals(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="one of --budget-params"):
        BudgetRule()
    with pytest.raises(UsageError, match="one of --budget-params"):
        BudgetRule(params=10, megabytes=1.0)
    with pytest.raises(UsageError, match="--budget-objective"):
        BudgetRule(params=10, objective="l2")
    with pytest.raises(UsageError, match="--budget-mb"):
        BudgetRule(megabytes=float("nan"))
    adapter = open_adapter(llama_like_adapter(tmp_path / "a", n_layers=1, d=8, r=4))
    with pytest.raises(UsageError, match="every module at rank 1") as info:
        plan_budget(adapter, BudgetRule(params=31))
    assert "at least 32 params" in (info.value.hint or "")


def test_header_bound_holds_for_real_files(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    for trial in range(20):
        tensors = {
            f"base_model.model.layers.{i}.ü_{trial}.lora_A.weight": rng.standard_normal(
                (int(rng.integers(1, 40)), int(rng.integers(1, 300)))
            ).astype(np.float32 if rng.random() < 0.5 else np.float16)
            for i in range(int(rng.integers(1, 12)))
        }
        metadata = {"format": "pt", "note": "x" * int(rng.integers(0, 50))}
        path = tmp_path / f"t{trial}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        data = sum(t.nbytes for t in tensors.values())
        entries = [
            (k, "F32" if t.dtype == np.float32 else "F16", t.shape) for k, t in tensors.items()
        ]
        bound = header_bound(entries, metadata, data) + data
        size = path.stat().st_size
        assert size <= bound <= size + 7 + 2 * 2 * len(tensors) * len(str(data))
