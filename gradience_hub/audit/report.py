"""The audit report: per-module rows, a summary, suggested ranks, warnings; audit.json I/O.

Summary field names keep gradience 0.11's where they mean the same, so tools that read its audit
output can read ours.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gradience_hub import __version__
from gradience_hub.errors import RecordError
from gradience_hub.record.model import V011_ENERGY_ALIASES, energy_fields

SCHEMA = "gradience-hub/audit/v1.1"
# Every schema this reader accepts: v1.1 only adds optional fields to v1 (per layer
# ``policies``, ``policy_spread``, ``policy_consensus``; ``suggestions.policies``; ``udr``), so
# a v1 document reads as a v1.1 one without them.
READABLE_SCHEMAS = ("gradience-hub/audit/v1", SCHEMA)
# LayerReport fields that are left out of audit.json when absent (None)
OPTIONAL_LAYER_FIELDS = ("policies", "policy_spread", "policy_consensus")


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
    # --rank-policies (v1.1): each policy's k, their max - min and their median (rank_policies)
    policies: dict[str, int] | None = None
    policy_spread: int | None = None
    policy_consensus: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """audit.json row: the fields, without the optional ones that are absent."""
        # Not dataclasses.asdict: its deep copy of every value was a tenth of a second of a
        # 7B adapter's audit; the only mutable values are flat lists and a flat dict.
        row: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in OPTIONAL_LAYER_FIELDS:
                continue
            row[f.name] = value.copy() if isinstance(value, (list, dict)) else value
        return row


@dataclass
class Summary:
    """Adapter-wide figures (gradience 0.11 names where they mean the same)."""

    allocated_rank: int
    lora_params: int
    n_layers: int
    stable_rank_mean: float
    utilization_mean: float
    energy_threshold: float
    energy_rank_p50: float
    energy_rank_p90: float
    suggested_r_global_median: int
    suggested_r_global_90: int
    effective_rank_mean: float
    is_dora: bool = False
    base_model: str | None = None
    skipped_modules: int = 0
    adapter_format: str = "peft"  # peft | kohya | diffusers (adapter.lorafile)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the fields, with gradience 0.11's energy names right after ours when the
        threshold is 0.90 (:func:`energy_fields`)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            out[key] = value
            if key == "energy_rank_p90":
                out.update((k, v) for k, v in energy_fields(asdict(self)).items() if k not in out)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        """Read a summary of any vintage (see :func:`energy_fields`)."""
        fields = {k: v for k, v in data.items() if k not in V011_ENERGY_ALIASES.values()}
        fields.update(
            (k, v) for k, v in energy_fields(data).items() if k not in V011_ENERGY_ALIASES.values()
        )
        return cls(**fields)


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
    # --udr (v1.1): audit.udr.UdrReport.to_dict(), when the base model was read
    udr: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The audit.json document."""
        out = {
            "schema": SCHEMA,
            "tool": dict(self.tool),
            "source": dict(self.source),
            "summary": self.summary.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "suggestions": self.suggestions,
            "warnings": list(self.warnings),
        }
        if self.udr is not None:
            out["udr"] = self.udr
        return out

    def to_json(self) -> str:
        """audit.json text (stable key order, 2-space indent, trailing newline)."""
        # allow_nan=False: NaN and Infinity are not JSON; a non-finite figure is a bug, not output
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditReport:
        """Read an audit.json document (ours, v1 or v1.1)."""
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema not in READABLE_SCHEMAS:
            raise RecordError(
                f"not a gradience-hub audit.json (schema {schema!r})",
                hint=f"pass a file written by 'gradience-hub audit --output' ({SCHEMA})",
            )
        for key, kind in (("source", dict), ("summary", dict), ("layers", list), ("udr", dict)):
            if key in data and not isinstance(data[key], kind):
                raise RecordError(
                    f"audit.json: {key} must be a JSON {'object' if kind is dict else 'list'}, "
                    f"got {type(data[key]).__name__}",
                    hint="regenerate it with 'gradience-hub audit --output'",
                )
        try:
            return cls(
                source=data["source"],
                summary=Summary.from_dict(data["summary"]),
                layers=[LayerReport(**row) for row in data["layers"]],
                suggestions=data["suggestions"],
                warnings=list(data.get("warnings", [])),
                tool=data.get("tool", {}),
                udr=data.get("udr"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordError(
                f"audit.json is missing or has unexpected fields: {exc}",
                hint="regenerate it with 'gradience-hub audit --output'",
            ) from None


def load_audit(path: str | os.PathLike[str]) -> AuditReport:
    """Read an audit.json file (every way it can fail is a RecordError naming it)."""
    from gradience_hub._io import read_json

    data = read_json(path, "audit.json")
    return AuditReport.from_dict(data)
