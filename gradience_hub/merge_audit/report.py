"""The merge-audit report: per-module rows, per-pair and overall summaries; merge_audit.json.

Field names keep gradience 0.11's ``merge-audit`` where they mean the same
(``frobenius_norm_a/b``, ``effective_rank_a/b`` = the energy rank, ``nominal_rank_a/b``,
``stable_rank_a/b``, ``principal_angle_cosines``, ``module_type``, ``overall_verdict``,
``n_<verdict>``, ``n_shared``/``n_only_a``/``n_only_b``, ``thresholds``, ``recommendations``,
``warnings``).

Summary means are Frobenius-weighted: the symmetric figures (overlaps, cosine, shares,
dominance) by ``||dW_a||_F + ||dW_b||_F`` of each module, ``retained_a`` by ``||dW_a||_F`` and
``retained_b`` by ``||dW_b||_F``; undefined (null) figures are left out. ``cosine_global`` and
``norm_ratio_global`` treat each adapter's updates as one vector
(``sum <dW_a, dW_b> / sqrt(sum ||dW_a||^2 sum ||dW_b||^2)``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from gradience_hub import __version__
from gradience_hub.merge_audit.geometry import PairFigures
from gradience_hub.merge_audit.verdict import VERDICTS, MergeRecommendation, recommend, worst

SCHEMA = "gradience-hub/merge-audit/v1"


@dataclass
class ModuleRow:
    """One module shared by sources ``a`` and ``b`` (labels), its figures and verdict."""

    name: str
    a: str
    b: str
    module_type: str
    shape: list[int]
    nominal_rank_a: int
    nominal_rank_b: int
    effective_rank_a: int
    effective_rank_b: int
    stable_rank_a: float
    stable_rank_b: float
    figures: PairFigures
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """The module's entry in merge_audit.json ``modules``."""
        f = self.figures
        return {
            "name": self.name,
            "a": self.a,
            "b": self.b,
            "module_type": self.module_type,
            "shape": list(self.shape),
            "overlap_out": f.overlap_out,
            "overlap_in": f.overlap_in,
            "cosine": f.cosine,
            "norm_ratio": f.norm_ratio,
            "share_a": f.share_a,
            "share_b": f.share_b,
            "retained_a": f.retained_a,
            "retained_b": f.retained_b,
            "dominance": f.dominance,
            "verdict": self.verdict,
            "inner_product": f.inner_product,
            "frobenius_norm_a": f.frobenius_norm_a,
            "frobenius_norm_b": f.frobenius_norm_b,
            "merged_norm": f.merged_norm,
            "nominal_rank_a": self.nominal_rank_a,
            "nominal_rank_b": self.nominal_rank_b,
            "effective_rank_a": self.effective_rank_a,
            "effective_rank_b": self.effective_rank_b,
            "stable_rank_a": self.stable_rank_a,
            "stable_rank_b": self.stable_rank_b,
            "principal_angle_cosines": list(f.principal_angle_cosines),
        }


def weighted_mean(pairs: list[tuple[float | None, float]]) -> float | None:
    """Weighted mean of the defined (non-None) values; the plain mean when they weigh nothing,
    None when none is defined."""
    known = [(v, w) for v, w in pairs if v is not None]
    total = sum(w for _, w in known)
    if not known:
        return None
    if total == 0.0:
        return sum(v for v, _ in known) / len(known)
    return sum(v * w for v, w in known) / total


def summarize(rows: list[ModuleRow]) -> dict[str, Any]:
    """Frobenius-weighted means, verdict counts and the worst verdict of ``rows``."""
    figs = [r.figures for r in rows]
    both = [f.frobenius_norm_a + f.frobenius_norm_b for f in figs]
    counts = {v: sum(1 for r in rows if r.verdict == v) for v in VERDICTS}
    n_a2 = sum(f.frobenius_norm_a**2 for f in figs)
    n_b2 = sum(f.frobenius_norm_b**2 for f in figs)
    ab = sum(f.inner_product for f in figs)

    def sym(attr: str) -> float | None:
        return weighted_mean([(getattr(f, attr), w) for f, w in zip(figs, both, strict=True)])

    return {
        "overall_verdict": worst([r.verdict for r in rows]),
        **{f"n_{v}": counts[v] for v in VERDICTS},
        "overlap_out_mean": sym("overlap_out"),
        "overlap_in_mean": sym("overlap_in"),
        "cosine_mean": sym("cosine"),
        "share_a_mean": sym("share_a"),
        "share_b_mean": sym("share_b"),
        "dominance_mean": sym("dominance"),
        "retained_a_mean": weighted_mean([(f.retained_a, f.frobenius_norm_a) for f in figs]),
        "retained_b_mean": weighted_mean([(f.retained_b, f.frobenius_norm_b) for f in figs]),
        "cosine_global": ab / math.sqrt(n_a2 * n_b2) if n_a2 and n_b2 else None,
        "norm_ratio_global": math.sqrt(n_a2 / n_b2) if n_b2 else None,
        "frobenius_norm_a": math.sqrt(n_a2),
        "frobenius_norm_b": math.sqrt(n_b2),
    }


@dataclass
class PairReport:
    """One pair of sources: its modules, the modules only one of them has, its summary."""

    a: str
    b: str
    weights: tuple[float, float]
    rows: list[ModuleRow]
    only_a: list[str]
    only_b: list[str]

    def summary(self) -> dict[str, Any]:
        """The pair's summary (``n_shared``, ``only_a``, means, counts, verdict)."""
        return {
            "a": self.a,
            "b": self.b,
            "weights": list(self.weights),
            "n_shared": len(self.rows),
            "n_only_a": len(self.only_a),
            "n_only_b": len(self.only_b),
            "only_a": list(self.only_a),
            "only_b": list(self.only_b),
            **summarize(self.rows),
        }


@dataclass
class MergeAuditReport:
    """What ``gradience-hub merge-audit`` computes; ``to_dict()`` is merge_audit.json."""

    sources: list[dict[str, Any]]
    base_model: str | None
    energy_threshold: float
    weights: list[float]
    thresholds: dict[str, float]
    pairs: list[PairReport]
    warnings: list[str] = field(default_factory=list)
    merge: dict[str, Any] | None = None
    tool: dict[str, Any] = field(
        default_factory=lambda: {"name": "gradience-hub", "version": __version__}
    )

    @property
    def rows(self) -> list[ModuleRow]:
        """Every module row, pair by pair."""
        return [row for pair in self.pairs for row in pair.rows]

    @property
    def recommendation(self) -> MergeRecommendation:
        """The peft merge method for the overall verdict."""
        s = summarize(self.rows)
        counts = {v: s[f"n_{v}"] for v in VERDICTS}
        return recommend(s["overall_verdict"], counts, [x["frobenius_norm"] for x in self.sources])

    @property
    def overall_verdict(self) -> str:
        """The worst module verdict over every pair."""
        return worst([row.verdict for row in self.rows])

    def summary(self) -> dict[str, Any]:
        """The overall summary (over every pair's modules) with the recommended method."""
        rec = self.recommendation
        out = summarize(self.rows)
        out.update(
            {
                "n_sources": len(self.sources),
                "n_pairs": len(self.pairs),
                "n_modules": len(self.rows),
                "recommended_method": rec.method,
                "recommendation_reason": rec.reason,
                "suggested_weights": rec.suggested_weights,
            }
        )
        if len(self.pairs) == 1:
            pair = self.pairs[0].summary()
            out.update({k: pair[k] for k in ("n_shared", "n_only_a", "n_only_b")})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The merge_audit.json document."""
        return {
            "schema": SCHEMA,
            "tool": dict(self.tool),
            "sources": [dict(s) for s in self.sources],
            "base_model": self.base_model,
            "energy_threshold": self.energy_threshold,
            "weights": list(self.weights),
            "thresholds": dict(self.thresholds),
            "summary": self.summary(),
            "pairs": [pair.summary() for pair in self.pairs],
            "modules": [row.to_dict() for row in self.rows],
            "recommendations": [self.recommendation.reason],
            "merge": self.merge,
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        """merge_audit.json text (2-space indent, trailing newline; no NaN or Infinity)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
