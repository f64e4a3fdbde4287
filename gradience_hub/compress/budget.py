"""Per-module ranks under a size budget: the multiple-choice knapsack of truncated SVDs.

Module ``m`` kept at rank ``k`` costs ``k * c_m`` (``c_m`` = parameters of one rank, ``d_in +
d_out``, or the bytes they take in the file) and discards ``sum(g_m[k:])`` of its energy
(``g_m[i] = s_i**2``, divided by the module's own total with the relative objective). Minimising
the total discarded energy under ``sum(k_m * c_m) <= budget`` is maximising the kept energy
``sum(G_m(k_m))`` with ``G_m`` the prefix sums: concave in ``k`` (singular values are sorted), so
taking singular values in order of energy per unit of cost solves the continuous relaxation,
whose value bounds every integer allocation from below. The integer optimum is computed exactly
by dynamic programming over the budget in units of ``gcd(c_m)``, vectorised per module.

**Cost-unit cap.** A byte budget of a 7B adapter is tens of millions of bytes and the gcd of the
per-rank byte costs is small, so the exact table could hold 10^5..10^7 cells per module. Past
:data:`MAX_UNITS` cells the costs are rounded *up* to a coarser unit (and the budget down): every
allocation feasible in the coarse units is feasible in the true costs, so the budget is never
exceeded, at the price of optimality (``Allocation.exact`` is then False). The result is then the
best of the coarse optimum, the greedy's integer part and the uniform rank of the same size, so it
is never worse than uniform; the relaxation bound is always computed on the true costs.

Every module keeps at least ``min_rank`` (1: PEFT cannot hold a rank-0 module).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Cells of the DP table per module above which costs are rounded up to a coarser unit (see the
# module docstring): 2e5 int16 cells x a few hundred modules stays near 100 MB and ~a second.
MAX_UNITS = 200_000


@dataclass(frozen=True)
class Allocation:
    """Ranks chosen under a budget and what they cost and discard.

    ``discarded`` is the objective (total discarded energy, relative or absolute);
    ``relaxation_bound`` the continuous relaxation's discarded energy, a lower bound on every
    integer allocation within the budget; ``unit`` the cost unit the table used (``exact`` is
    False when it is coarser than the gcd of the costs: the cost-unit cap).
    """

    ranks: tuple[int, ...]
    cost: int
    discarded: float
    relaxation_bound: float
    unit: int
    exact: bool


def discarded_energy(gains: Sequence[np.ndarray], ranks: Sequence[int]) -> float:
    """``sum_m sum(gains[m][k_m:])``: what keeping ``ranks`` throws away."""
    return float(sum(float(np.sum(g[k:])) for g, k in zip(gains, ranks, strict=True)))


def allocation_cost(costs: Sequence[int], ranks: Sequence[int]) -> int:
    """``sum_m k_m * c_m``."""
    return int(sum(int(k) * int(c) for k, c in zip(ranks, costs, strict=True)))


def _check(gains: Sequence[np.ndarray], costs: Sequence[int], min_rank: int) -> None:
    if len(gains) != len(costs) or not gains:
        raise ValueError("gains and costs must be non-empty and of the same length")
    for g, c in zip(gains, costs, strict=True):
        if int(c) < 1:
            raise ValueError(f"every per-rank cost must be a positive integer, got {c}")
        if len(g) < min_rank:
            raise ValueError(f"a module has rank {len(g)} < min_rank {min_rank}")
        if np.any(np.asarray(g) < 0) or not np.all(np.isfinite(g)):
            raise ValueError("gains must be finite and non-negative")


def relaxation(
    gains: Sequence[np.ndarray], costs: Sequence[int], budget: int, min_rank: int = 1
) -> tuple[list[int], float]:
    """The greedy: singular values in order of gain per unit of cost (after the forced
    ``min_rank``), while they fit. Returns its integer ranks and the continuous relaxation's
    kept energy (the integer part plus the fraction of the next value the leftover buys)."""
    left = budget - min_rank * sum(int(c) for c in costs)
    ranks = [min_rank] * len(gains)
    order = sorted(
        (
            (float(g[i]) / int(c), m, i)
            for m, (g, c) in enumerate(zip(gains, costs, strict=True))
            for i in range(min_rank, len(g))
        ),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    kept_fraction = 0.0
    for ratio, m, i in order:
        # within a module values come in order (ties by index), so i == ranks[m] here
        if int(costs[m]) <= left:
            ranks[m] = i + 1
            left -= int(costs[m])
        else:
            kept_fraction = ratio * left
            break
    kept = sum(float(np.sum(g[:k])) for g, k in zip(gains, ranks, strict=True))
    return ranks, kept + kept_fraction


def _table(
    gains: Sequence[np.ndarray], steps: Sequence[int], size: int, min_rank: int
) -> list[int]:
    """Exact multiple-choice knapsack over ``size`` units: module m at rank k costs
    ``(k - min_rank) * steps[m]`` units beyond the forced minimum. Returns the ranks."""
    best = np.full(size + 1, -np.inf)
    best[0] = 0.0
    choices: list[np.ndarray] = []
    for g, step in zip(gains, steps, strict=True):
        prefix = np.concatenate([[0.0], np.cumsum(np.asarray(g, dtype=np.float64))])
        new = best + prefix[min_rank]
        pick = np.full(size + 1, min_rank, dtype=np.int32)
        for k in range(min_rank + 1, len(g) + 1):
            shift = (k - min_rank) * step
            if shift > size:
                break
            cand = best[: size + 1 - shift] + prefix[k]
            better = cand > new[shift:]
            view = new[shift:]
            view[better] = cand[better]
            pick[shift:][better] = k
        best = new
        choices.append(pick)
    b = int(np.argmax(best))
    ranks = [0] * len(gains)
    for m in range(len(gains) - 1, -1, -1):
        k = int(choices[m][b])
        ranks[m] = k
        b -= (k - min_rank) * steps[m]
    return ranks


def allocate(
    gains: Sequence[np.ndarray],
    costs: Sequence[int],
    budget: int,
    *,
    min_rank: int = 1,
    max_units: int = MAX_UNITS,
) -> Allocation:
    """The ranks that discard the least energy within ``budget``, with the relaxation bound.

    ``gains[m]`` are module m's per-singular-value energies in descending order, ``costs[m]``
    the cost of one rank of module m (a positive integer). Exact unless the budget spans more
    than ``max_units`` units of ``gcd(costs)`` (the cost-unit cap of the module docstring).
    Raises ValueError when even ``min_rank`` everywhere does not fit.
    """
    _check(gains, costs, min_rank)
    costs = [int(c) for c in costs]
    floor = min_rank * sum(costs)
    if budget < floor:
        raise ValueError(f"the budget {budget} is below the minimum {floor}")
    total = sum(float(np.sum(g)) for g in gains)
    greedy_ranks, relaxed_kept = relaxation(gains, costs, budget, min_rank)
    spare = budget - floor
    unit = math.gcd(*costs)
    exact = spare // unit <= max_units
    if not exact:
        # round every cost up to a coarser unit and the budget down: never over the budget
        unit = -(-spare // max_units)
    steps = [-(-c // unit) for c in costs]
    candidates = [_table(gains, steps, spare // unit, min_rank)]
    if not exact:
        candidates += [greedy_ranks, uniform_ranks(gains, costs, budget, min_rank)[0]]
    ranks = min(candidates, key=lambda rs: discarded_energy(gains, rs))
    cost = allocation_cost(costs, ranks)
    assert cost <= budget  # by construction; a violation is a bug, never a silent overrun
    return Allocation(
        ranks=tuple(ranks),
        cost=cost,
        discarded=discarded_energy(gains, ranks),
        # clipped at 0: the relaxation can keep "everything" up to float rounding
        relaxation_bound=max(0.0, total - relaxed_kept),
        unit=unit,
        exact=exact,
    )


def uniform_ranks(
    gains: Sequence[np.ndarray], costs: Sequence[int], budget: int, min_rank: int = 1
) -> tuple[list[int], int]:
    """The largest uniform rank ``k`` (each module at ``min(k, r_m)``) whose cost fits the
    budget: the baseline a budget allocation is compared with. Returns (ranks, k)."""
    top = max(len(g) for g in gains)
    best_k = min_rank
    for k in range(min_rank, top + 1):
        ranks = [min(k, len(g)) for g in gains]
        if allocation_cost(costs, ranks) > budget:
            break
        best_k = k
    return [min(best_k, len(g)) for g in gains], best_k
