"""The merge-audit verdicts: per module, overall (the worst), and the peft method to merge with.

Rules, first match wins (``overlap`` is ``min(overlap_out, overlap_in)``):

| verdict       | rule                                                          | default  |
|---------------|---------------------------------------------------------------|----------|
| `conflicting` | overlap >= `high_overlap` and cosine <= `conflict_cosine`      | 0.5, -0.1 |
| `dominated`   | dominance (the larger share of the linear merge) >= `dominance` | 0.9      |
| `redundant`   | overlap >= `high_overlap` (and the cosine is not conflicting)  | 0.5      |
| `independent` | otherwise: low overlap, merging adds capacities                |          |

"At or above" allows a rounding slack of 1e-12. Severity, for the overall verdict:
conflicting > dominated > redundant > independent.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gradience_hub.errors import ConfigError
from gradience_hub.merge_audit.geometry import PairFigures
from gradience_hub.validate import config_fields

# Figures computed in float64 land within a few ulps of an exact boundary (a planted overlap
# of 2/4 comes out as 0.4999999999999999): "at or above" allows this much.
BOUNDARY = 1e-12

VERDICTS = ("independent", "redundant", "dominated", "conflicting")  # by severity
SEVERITY = {name: i for i, name in enumerate(VERDICTS)}


@dataclass(frozen=True)
class Thresholds:
    """The verdict thresholds (the table in this module's docstring); each field's help is in
    its metadata. Validated on construction, naming the bad key."""

    high_overlap: float = field(
        default=0.5,
        metadata={
            "help": "overlap (mean cos^2 of principal angles) at or above which two "
            "updates share a subspace, in [0, 1]"
        },
    )
    conflict_cosine: float = field(
        default=-0.1,
        metadata={"help": "cosine at or below which overlapping updates conflict, in [-1, 1]"},
    )
    dominance: float = field(
        default=0.9,
        metadata={"help": "share of the linear merge at or above which one adapter dominates"},
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"threshold {f.name} must be a number, got {value!r}", key=f.name)
            if not math.isfinite(value):
                raise ConfigError(f"threshold {f.name} must be finite, got {value}", key=f.name)
        if not 0.0 <= self.high_overlap <= 1.0:
            raise ConfigError(
                f"threshold high_overlap must be in [0, 1], got {self.high_overlap}",
                key="high_overlap",
            )
        if not -1.0 <= self.conflict_cosine <= 1.0:
            raise ConfigError(
                f"threshold conflict_cosine must be in [-1, 1], got {self.conflict_cosine}",
                key="conflict_cosine",
            )
        if self.dominance < 0.5:
            raise ConfigError(
                f"threshold dominance must be at least 0.5, got {self.dominance}",
                hint="equal updates each hold a share of 0.5",
                key="dominance",
            )

    def to_dict(self) -> dict[str, float]:
        """JSON form (merge_audit.json ``thresholds``)."""
        return {k: float(v) for k, v in asdict(self).items()}

    def replace(self, **overrides: float | None) -> Thresholds:
        """A copy with the given (non-None) fields replaced."""
        values = self.to_dict()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return Thresholds(**values)


def load_thresholds(path: str | Path | None, **overrides: float | None) -> Thresholds:
    """Thresholds from a small YAML or JSON mapping (optional), then the CLI overrides."""
    base = Thresholds()
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read thresholds file {p}: {exc}") from None
        try:
            if p.suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:  # json / yaml parse errors
            raise ConfigError(f"{p} is not valid YAML/JSON: {exc}") from None
        base = Thresholds(**config_fields(Thresholds, data, "", label=str(p), noun="threshold"))
    return base.replace(**overrides)


def verdict(figures: PairFigures, thresholds: Thresholds) -> str:
    """One module's verdict (first matching rule of the table)."""
    ov = figures.overlap
    high = ov is not None and ov >= thresholds.high_overlap - BOUNDARY
    cos = figures.cosine
    if high and cos is not None and cos <= thresholds.conflict_cosine + BOUNDARY:
        return "conflicting"
    dom = figures.dominance
    if dom is not None and dom >= thresholds.dominance - BOUNDARY:
        return "dominated"
    if high:
        return "redundant"
    return "independent"


def worst(verdicts: list[str]) -> str:
    """The most severe verdict (``independent`` for none)."""
    return max(verdicts, key=SEVERITY.__getitem__, default="independent")


@dataclass(frozen=True)
class MergeRecommendation:
    """The peft ``add_weighted_adapter`` combination type to use, and why."""

    method: str
    reason: str
    suggested_weights: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def recommend(overall: str, counts: dict[str, int], norms: list[float]) -> MergeRecommendation:
    """The merge method for the overall verdict; ``norms`` are the sources' whole-adapter
    ``||dW||_F`` (for rebalanced weights when one dominates)."""
    n = sum(counts.values())
    if overall == "conflicting":
        return MergeRecommendation(
            "ties",
            f"{counts['conflicting']} of {n} shared modules point in opposite directions: a "
            "linear merge cancels them; ties (or dare_ties) elects one sign per parameter and "
            "drops the minority, or leave those modules out of the merge",
        )
    if overall == "dominated":
        inv = [1.0 / x if x > 0 else 0.0 for x in norms]
        total = sum(inv)
        weights = [round(x / total, 6) for x in inv] if total else None
        return MergeRecommendation(
            "cat",
            f"in {counts['dominated']} of {n} shared modules one adapter holds most of the "
            "merged update: merge exactly with cat after rebalancing the weights inversely to "
            "the adapters' norms (suggested_weights), or the weaker adapter is lost",
            weights,
        )
    if overall == "redundant":
        return MergeRecommendation(
            "svd",
            f"{counts['redundant']} of {n} shared modules use the same subspaces in the same "
            "direction: svd merges the updates exactly and truncates to the larger rank, so the "
            "shared directions are not stored twice (cat would double the rank)",
        )
    return MergeRecommendation(
        "cat",
        "the adapters use different subspaces: cat writes the merged update exactly "
        "(rank r_a + r_b), so both capacities add without interference",
    )
