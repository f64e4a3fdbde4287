"""Plan the target ranks (one of three modes) and build the PEFT config that keeps every
module's scaling exact."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gradience_hub import spectral
from gradience_hub.adapter import (
    AdapterConfig,
)
from gradience_hub.errors import AdapterError, UsageError
from gradience_hub.spectral import suggest_rank

if TYPE_CHECKING:  # a type only: compress does not load the audit's modules
    from gradience_hub.audit import AuditReport

# --------------------------------------------------------------------------- planning


def check_rank(name: str, k: int, r: int) -> None:
    """Refuse ranks PEFT cannot hold (k < 1) or that truncation cannot reach (k > r)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise UsageError(f"module {name}: target rank must be an integer, got {k!r}")
    if k < 1:
        raise UsageError(
            f"module {name}: target rank {k} is below 1",
            hint="a LoRA module needs rank >= 1; choose a rank of at least 1",
        )
    if k > r:
        raise UsageError(
            f"module {name}: target rank {k} is above its current rank {r}",
            hint="compression can only lower ranks; choose a rank <= the module's current rank",
        )


# The energy threshold of the audit whose per-layer suggestions --per-layer uses.
PER_LAYER_ENERGY = 0.9


@dataclass(frozen=True)
class RankRule:
    """Exactly one of three ways to choose a module's target rank from its spectrum:

    - ``rank``: the same ``k`` for every module (refused when above a module's rank);
    - ``energy``: per module, the smallest ``k`` whose top singular values hold that fraction of
      ``||dW||_F^2`` (at least 1, so an untrained module keeps one inert rank);
    - ``per_layer``: the audit's per-layer suggestion (energy rank at 0.90 rounded up to a power
      of two, capped at the module's rank: :func:`gradience_hub.spectral.suggest_rank`).
    """

    rank: int | None = None
    energy: float | None = None
    per_layer: bool = False

    def __post_init__(self) -> None:
        modes = (self.rank is not None) + (self.energy is not None) + bool(self.per_layer)
        if modes != 1:
            raise UsageError(
                "choose exactly one of --rank K, --energy T or --per-layer",
                hint="e.g. gradience-hub compress SOURCE --output DIR --rank 4",
            )
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise UsageError(
                f"--energy must be in (0, 1], got {self.energy}", hint="e.g. --energy 0.9"
            )

    @property
    def needs_spectrum(self) -> bool:
        """False when the target is known without the module's singular values."""
        return self.rank is None

    def target(self, name: str, r: int, S: np.ndarray | None = None) -> int:
        """The target rank of module ``name`` (current rank ``r``, singular values ``S``)."""
        if self.rank is not None:
            check_rank(name, self.rank, r)
            return int(self.rank)
        assert S is not None
        if self.energy is not None:
            return max(1, min(r, spectral.energy_rank(S, self.energy)))
        return suggest_rank(spectral.energy_rank(S, PER_LAYER_ENERGY), r)

    @property
    def mode(self) -> str:
        """The rule in words (CompressionResult.mode)."""
        if self.rank is not None:
            return f"uniform rank {self.rank}"
        if self.energy is not None:
            return f"energy {self.energy:g} per module"
        return "per-layer (audit suggestions)"


def plan_ranks(
    report: AuditReport,
    *,
    rank: int | None = None,
    energy: float | None = None,
    per_layer: bool = False,
) -> dict[str, int]:
    """Target rank of every module of an audit, by :class:`RankRule`; ``per_layer`` takes the
    audit's own ``suggestions.per_layer.rank_pattern``."""
    rule = RankRule(rank=rank, energy=energy, per_layer=per_layer)
    plan: dict[str, int] = {}
    if not per_layer:
        for layer in report.layers:
            plan[layer.name] = rule.target(layer.name, layer.r, np.asarray(layer.singular_values))
        return plan
    suggested = (report.suggestions.get("per_layer") or {}).get("rank_pattern") or {}
    for layer in report.layers:
        if layer.name not in suggested:
            raise AdapterError(
                f"the audit has no per-layer suggestion for module {layer.name}",
                hint="re-run the audit of this adapter",
            )
        k = int(suggested[layer.name])
        check_rank(layer.name, k, layer.r)
        plan[layer.name] = k
    return plan


# --------------------------------------------------------------------------- config


def config_number(x: float) -> int | float:
    """Integral floats as ints, so configs read ``"lora_alpha": 8`` rather than ``8.0``."""
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def _mode(values: list[Any]) -> Any:
    """Most common value; ties go to the first seen (file order), for a stable config."""
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)


def _patterns_ok(
    names: list[str],
    r: int,
    alpha: float,
    rank_pattern: dict[str, int],
    alpha_pattern: dict[str, float],
    want: Mapping[str, tuple[int, float]],
) -> bool:
    """Does PEFT's first-match rule give every module its asked (r, alpha)?"""
    rule = AdapterConfig(
        raw={}, r=r, lora_alpha=alpha, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern
    )
    return all(
        (rule.rank_for(n), rule.alpha_for(n)) == (want[n][0], float(want[n][1])) for n in names
    )


def build_config(original: dict[str, Any], want: Mapping[str, tuple[int, float]]) -> dict[str, Any]:
    """``adapter_config.json`` for modules with the asked ``(r, lora_alpha)`` each.

    Everything else in ``original`` is carried over. Pattern keys are plain module names (as in
    the audit's suggestions), which PEFT matches with ``(.*\\.)?(key)$``: a name can also match a
    module whose name ends with ``.<name>``, and ``.`` matches any character. When that would give
    any module the wrong value, every module is listed under its full name, regex-escaped and
    anchored with ``^``: in ``(.*\\.)?(^name)$`` the anchor only holds when the optional prefix is
    empty, so a key matches its own module and no other, whatever order the keys are read in
    (PEFT re-saves configs with sorted keys). They are also written longest first, in insertion
    order, so even a reader that ignored the anchor would find each module's own key first.
    """
    names = list(want)
    r = int(_mode([want[n][0] for n in names]))
    alpha = config_number(_mode([want[n][1] for n in names]))
    rank_pattern = {n: int(want[n][0]) for n in names if want[n][0] != r}
    alpha_pattern = {n: config_number(want[n][1]) for n in names if want[n][1] != alpha}
    if not _patterns_ok(names, r, alpha, rank_pattern, alpha_pattern, want):
        ordered = sorted(names, key=len, reverse=True)
        rank_pattern = {"^" + re.escape(n): int(want[n][0]) for n in ordered}
        alpha_pattern = {"^" + re.escape(n): config_number(want[n][1]) for n in ordered}
        if not _patterns_ok(names, r, alpha, rank_pattern, alpha_pattern, want):
            raise AdapterError(
                "cannot express the per-module ranks as a PEFT rank_pattern: module names "
                "overlap under PEFT's matching rule",
                hint="compress with a uniform --rank instead",
            )
    config = dict(original)
    config.update(
        r=r,
        lora_alpha=alpha,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        use_rslora=False,
    )
    return config
