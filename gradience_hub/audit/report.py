"""The audit report: per-module rows, a summary, suggested ranks, warnings; audit.json I/O.

Summary field names keep gradience 0.11's where they mean the same, so tools that read its audit
output can read ours.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradience_hub import __version__
from gradience_hub.errors import RecordError

SCHEMA = "gradience-hub/audit/v1"


@dataclass
class LayerReport:
    """One LoRA module's audit row."""

    name: str
    module_type: str
    kind: str
    layer_index: int | None
    r: int
    alpha: float
    scale: float
    shape: list[int]
    params: int
    dtype: str
    stable_rank: float
    utilization: float
    energy_rank: int
    effective_rank: float
    sigma_max: float
    fro_norm: float
    singular_values: list[float]
    suggested_r: int


@dataclass
class Summary:
    """Adapter-wide figures (gradience 0.11 names where they mean the same)."""

    allocated_rank: int
    lora_params: int
    n_layers: int
    stable_rank_mean: float
    utilization_mean: float
    energy_threshold: float
    energy_rank_90_p50: float
    energy_rank_90_p90: float
    suggested_r_global_median: int
    suggested_r_global_90: int
    effective_rank_mean: float
    is_dora: bool = False
    base_model: str | None = None


@dataclass
class AuditReport:
    """What ``gradience-hub audit`` computes; ``to_dict()`` is audit.json."""

    source: dict[str, Any]
    summary: Summary
    layers: list[LayerReport]
    suggestions: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    tool: dict[str, Any] = field(
        default_factory=lambda: {"name": "gradience-hub", "version": __version__}
    )

    def to_dict(self) -> dict[str, Any]:
        """The audit.json document."""
        return {
            "schema": SCHEMA,
            "tool": dict(self.tool),
            "source": dict(self.source),
            "summary": asdict(self.summary),
            "layers": [asdict(layer) for layer in self.layers],
            "suggestions": self.suggestions,
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        """audit.json text (stable key order, 2-space indent, trailing newline)."""
        # allow_nan=False: NaN and Infinity are not JSON; a non-finite figure is a bug, not output
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditReport:
        """Read an audit.json document (ours)."""
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != SCHEMA:
            raise RecordError(
                f"not a gradience-hub audit.json (schema {schema!r})",
                hint=f"pass a file written by 'gradience-hub audit --output' ({SCHEMA})",
            )
        try:
            return cls(
                source=data["source"],
                summary=Summary(**data["summary"]),
                layers=[LayerReport(**row) for row in data["layers"]],
                suggestions=data["suggestions"],
                warnings=list(data.get("warnings", [])),
                tool=data.get("tool", {}),
            )
        except (KeyError, TypeError) as exc:
            raise RecordError(
                f"audit.json is missing or has unexpected fields: {exc}",
                hint="regenerate it with 'gradience-hub audit --output'",
            ) from None


def load_audit(path: str | os.PathLike[str]) -> AuditReport:
    """Read an audit.json file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"audit file not found: {path}", hint="check the --audit path") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path} is not valid JSON: {exc}", hint="regenerate it") from None
    return AuditReport.from_dict(data)
