"""Training telemetry: the spectral summary of a LoRA adapter while it trains, and the rules
``gradience-hub monitor`` applies to a run's snapshots. Pure numpy, no I/O.

A snapshot (:func:`snapshot`) is taken at each evaluation/save: utilization (stable rank / r),
stable rank and energy rank (90%), each as the mean over the modules, overall and per module
type (attention, mlp, other). :func:`log_metrics` flattens it into the ``gradience/...`` scalars
a Trainer logs to whichever trackers ``report_to`` names.

The rules (:func:`monitor`), each stated where it is defined, are gradience 0.11's monitor rules
that utilization data supports (its ``low_utilization``, ``compress_rank`` and
``compress_mlp_targets``, with its thresholds) and two on the trajectory over training.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from gradience_hub import spectral

SCHEMA = "gradience-hub/telemetry/v1"
KEYS = ("utilization_mean", "stable_rank_mean", "energy_rank_mean")


@dataclass(frozen=True)
class ModuleFactors:
    """One LoRA module's factors at a step: ``dW = scale * B @ A``."""

    name: str
    module_type: str
    B: np.ndarray
    A: np.ndarray
    scale: float


def snapshot(modules: Iterable[ModuleFactors], energy: float = 0.9) -> dict[str, object]:
    """The spectral summary of the modules: ``{"overall": {...}, "by_type": {type: {...}},
    "n_modules", "allocated_rank"}``, each group holding the means of :data:`KEYS`."""
    groups: dict[str, list[spectral.SpectralStats]] = defaultdict(list)
    every: list[spectral.SpectralStats] = []
    for m in modules:
        stats = spectral.analyze(m.B, m.A, m.scale, energy)
        groups[m.module_type].append(stats)
        every.append(stats)

    def means(stats: Sequence[spectral.SpectralStats]) -> dict[str, float]:
        return {
            "utilization_mean": float(np.mean([s.utilization for s in stats])),
            "stable_rank_mean": float(np.mean([s.stable_rank for s in stats])),
            "energy_rank_mean": float(np.mean([s.energy_rank for s in stats])),
        }

    if not every:
        return {"overall": {}, "by_type": {}, "n_modules": 0, "allocated_rank": 0}
    return {
        "overall": means(every),
        "by_type": {t: means(s) for t, s in sorted(groups.items())},
        "n_modules": len(every),
        "allocated_rank": max(s.rank for s in every),
    }


def log_metrics(snap: dict[str, object]) -> dict[str, float]:
    """Flat scalars for a Trainer's logs: ``gradience/utilization_mean``,
    ``gradience/attention/utilization_mean``, ..."""
    out: dict[str, float] = {}
    overall = snap.get("overall")
    if isinstance(overall, dict):
        out.update({f"gradience/{k}": float(v) for k, v in overall.items()})
    by_type = snap.get("by_type")
    if isinstance(by_type, dict):
        for t, group in by_type.items():
            if isinstance(group, dict):
                out.update({f"gradience/{t}/{k}": float(v) for k, v in group.items()})
    return out


@dataclass(frozen=True)
class Point:
    """One snapshot of a run: its global step and overall/per-type figures."""

    step: int
    overall: dict[str, float]
    by_type: dict[str, dict[str, float]]
    allocated_rank: int


@dataclass(frozen=True)
class Finding:
    """What a rule flags: its code, a message, and the rule itself in words."""

    code: str
    message: str
    rule: str


# The trajectory rules' thresholds (ours; gradience's are quoted where they are used).
CLIMB_MIN_POINTS = 4
CLIMB_RISE = 0.05  # utilization points gained over the last third of training
FLAT_LOW = 0.25  # gradience's low-utilization line
FLAT_RANGE = 0.05


def _nice_rank(x: float, cap: int) -> int:
    """gradience's ``_nice_rank``: up to the next of 2, 4, ..., 256, at most ``cap``."""
    for c in (2, 4, 8, 16, 32, 64, 128, 256):
        if c >= x:
            return min(c, cap)
    return cap


def monitor(points: Sequence[Point]) -> list[Finding]:
    """Apply every rule to a run's snapshots (in step order); the last snapshot is the end."""
    if not points:
        return []
    points = sorted(points, key=lambda p: p.step)
    last = points[-1]
    r = last.allocated_rank
    util = [p.overall.get("utilization_mean", math.nan) for p in points]
    found: list[Finding] = []

    # 1. still climbing (ours): over the last third of the snapshots (at least 2 of them, from
    # a run of >= 4), utilization rose by >= 0.05 -> the adapter was still gaining directions
    # when training stopped: the rank (or the training) may be too small.
    if len(points) >= CLIMB_MIN_POINTS:
        tail = points[-max(2, len(points) // 3) :]
        rise = tail[-1].overall["utilization_mean"] - tail[0].overall["utilization_mean"]
        if rise >= CLIMB_RISE:
            found.append(
                Finding(
                    "still_climbing",
                    f"utilization still climbing at the end of training (+{rise:.0%} from step "
                    f"{tail[0].step} to {tail[-1].step}): rank r={r} may be too small, or the "
                    "run too short",
                    f"utilization rose by >= {CLIMB_RISE:.0%} over the last third of >= "
                    f"{CLIMB_MIN_POINTS} snapshots",
                )
            )
    # 2. flat and low from early on (ours): after the first third, utilization stays below
    # 0.25 and within 0.05 -> the extra rank was never used: r is too large.
    if len(points) >= 3 and r >= 16:
        rest = util[len(util) // 3 :]
        if max(rest) < FLAT_LOW and max(rest) - min(rest) <= FLAT_RANGE:
            found.append(
                Finding(
                    "flat_low",
                    f"utilization flat and low from early on ({min(rest):.0%}-{max(rest):.0%} "
                    f"after step {points[len(points) // 3].step}): rank r={r} is larger than "
                    "the adapter uses",
                    f"after the first third, utilization < {FLAT_LOW:.0%} and within "
                    f"{FLAT_RANGE:.0%} (r >= 16)",
                )
            )
    # 3. gradience's low_utilization: final utilization < 0.25 with r >= 16.
    final = last.overall.get("utilization_mean")
    if final is not None and r >= 16 and final < 0.25:
        found.append(
            Finding(
                "low_utilization",
                f"utilization {final:.0%} of r={r} at the end: consider a smaller rank",
                "gradience 0.11: utilization < 25% with r >= 16",
            )
        )
    # 4. gradience's compress_rank: energy rank (our mean over modules, where gradience reads
    # the p90) <= r / 2 with r >= 16 -> suggest the next power of two above it.
    e90 = last.overall.get("energy_rank_mean")
    if e90 is not None and r >= 16 and 0 < e90 <= r / 2:
        k = _nice_rank(max(2, math.ceil(e90)), r)
        if k < r:
            found.append(
                Finding(
                    "compress_rank",
                    f"90% of the update's energy fits in {e90:.1f} directions on average: "
                    f"consider r={k} (~{1 - k / r:.0%} fewer LoRA parameters); bench it first",
                    "gradience 0.11: energy rank (90%) <= r/2 with r >= 16, rounded up to a "
                    "power of two",
                )
            )
    # 5. gradience's compress_mlp_targets: mlp utilization < 10% and attention >= 2x mlp.
    mlp = last.by_type.get("mlp", {}).get("utilization_mean")
    attn = last.by_type.get("attention", {}).get("utilization_mean")
    if mlp is not None and attn is not None and mlp < 0.10 and attn >= 2 * mlp:
        found.append(
            Finding(
                "compress_mlp_targets",
                f"MLP utilization {mlp:.0%} against attention {attn:.0%}: consider "
                "attention-only, or a lower rank for the MLP modules",
                "gradience 0.11: mlp utilization < 10% and attention >= 2x mlp",
            )
        )
    return found
