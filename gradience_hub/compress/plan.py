"""Plan the target ranks (one of three modes) and build the PEFT config that keeps every
module's scaling exact."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from gradience_hub import spectral
from gradience_hub.adapter import (
    AdapterConfig,
)
from gradience_hub.audit import AuditReport
from gradience_hub.errors import AdapterError, UsageError

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


def plan_ranks(
    report: AuditReport,
    *,
    rank: int | None = None,
    energy: float | None = None,
    per_layer: bool = False,
) -> dict[str, int]:
    """Target rank of every module, from exactly one of three modes.

    - ``rank``: the same ``k`` for every module (refused when above any module's rank);
    - ``energy``: per module, the smallest ``k`` whose top singular values hold that fraction of
      ``||dW||_F^2`` (at least 1, so an untrained module keeps one inert rank);
    - ``per_layer``: the audit's ``suggestions.per_layer.rank_pattern`` (energy rank rounded up to
      a power of two, capped at the module's rank).
    """
    modes = (rank is not None) + (energy is not None) + bool(per_layer)
    if modes != 1:
        raise UsageError(
            "choose exactly one of --rank K, --energy T or --per-layer",
            hint="e.g. gradience-hub compress SOURCE --output DIR --rank 4",
        )
    plan: dict[str, int] = {}
    if rank is not None:
        for layer in report.layers:
            check_rank(layer.name, rank, layer.r)
            plan[layer.name] = int(rank)
    elif energy is not None:
        if not 0.0 < energy <= 1.0:
            raise UsageError(f"--energy must be in (0, 1], got {energy}", hint="e.g. --energy 0.9")
        for layer in report.layers:
            k = spectral.energy_rank(np.asarray(layer.singular_values), energy)
            plan[layer.name] = max(1, min(layer.r, k))
    else:
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
