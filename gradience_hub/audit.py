"""The audit report: per-module rows, a summary, suggested ranks, warnings; audit.json I/O.

Summary field names keep gradience 0.11's where they mean the same (DESIGN.md), so tools that
read its audit output can read ours.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradience_hub import __version__, spectral
from gradience_hub.adapter import Adapter, SourceInfo, load
from gradience_hub.errors import RecordError, UsageError

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
        return json.dumps(self.to_dict(), indent=2) + "\n"

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


def _suggest(k: float, cap: int) -> int:
    """A rank for an energy rank: rounded up to a power of two, at most ``cap``, at least 1."""
    return max(1, min(cap, spectral.next_power_of_two(k)))


def _check_energy(energy: float) -> None:
    if not 0.0 < energy <= 1.0:
        raise UsageError(f"--energy must be in (0, 1], got {energy}", hint="e.g. --energy 0.9")


def audit_adapter(adapter: Adapter, source: SourceInfo, energy: float = 0.9) -> AuditReport:
    """Audit an opened adapter module by module (streamed: one module's factors in memory)."""
    _check_energy(energy)
    config = adapter.config
    layers: list[LayerReport] = []
    warnings: list[str] = []
    zero_modules: list[str] = []
    mismatched: list[str] = []
    for module in adapter.modules():
        stats = spectral.analyze(module.B, module.A, module.scale, energy)
        if stats.is_zero:
            zero_modules.append(module.name)
        configured = config.rank_for(module.name)
        if configured != module.r:
            mismatched.append(f"{module.name} (weights r={module.r}, config r={configured})")
        layers.append(
            LayerReport(
                name=module.name,
                module_type=module.module_type,
                kind=module.kind,
                layer_index=module.layer_index,
                r=module.r,
                alpha=module.alpha,
                scale=module.scale,
                shape=list(module.shape),
                params=module.params,
                dtype=module.dtype,
                stable_rank=stats.stable_rank,
                utilization=stats.utilization,
                energy_rank=stats.energy_rank,
                effective_rank=stats.effective_rank,
                sigma_max=stats.sigma_max,
                fro_norm=stats.fro_norm,
                singular_values=[float(s) for s in stats.singular_values],
                suggested_r=_suggest(stats.energy_rank, module.r),
            )
        )
    allocated = config.r
    k = np.array([layer.energy_rank for layer in layers], dtype=np.float64)
    p50 = float(np.percentile(k, 50))
    p90 = float(np.percentile(k, 90))
    summary = Summary(
        allocated_rank=allocated,
        lora_params=sum(layer.params for layer in layers),
        n_layers=len(layers),
        stable_rank_mean=float(np.mean([x.stable_rank for x in layers])),
        utilization_mean=float(np.mean([x.utilization for x in layers])),
        energy_threshold=energy,
        energy_rank_90_p50=p50,
        energy_rank_90_p90=p90,
        suggested_r_global_median=_suggest(p50, allocated),
        suggested_r_global_90=_suggest(p90, allocated),
        effective_rank_mean=float(np.mean([x.effective_rank for x in layers])),
        is_dora=adapter.is_dora,
        base_model=config.base_model,
    )
    if zero_modules and len(zero_modules) == len(layers):
        warnings.append(
            "untrained adapter: every lora_B is all zeros, so the update is zero and the "
            "spectral figures are meaningless; audit the adapter after training"
        )
    elif zero_modules:
        warnings.append(
            f"{len(zero_modules)} of {len(layers)} modules have an all-zero update (lora_B = 0), "
            f"e.g. {zero_modules[0]}; they were not trained"
        )
    if adapter.is_dora:
        warnings.append(
            "DoRA adapter: audited on its directional update B·A; the learned magnitude vector "
            "is not part of the spectrum"
        )
    if mismatched:
        more = f" and {len(mismatched) - 1} more" if len(mismatched) > 1 else ""
        warnings.append(f"rank mismatch with adapter_config.json: {mismatched[0]}{more}")
    rank_pattern = {layer.name: layer.suggested_r for layer in layers}
    suggestions = {
        "energy_threshold": energy,
        "global_median": summary.suggested_r_global_median,
        "global_p90": summary.suggested_r_global_90,
        "per_layer": {
            "rank_pattern": rank_pattern,
            "lora_params": sum(
                r * (layer.shape[0] + layer.shape[1])
                for r, layer in zip(rank_pattern.values(), layers, strict=True)
            ),
        },
    }
    src = source.to_dict()
    src["base_model"] = config.base_model
    return AuditReport(
        source=src, summary=summary, layers=layers, suggestions=suggestions, warnings=warnings
    )


def run_audit(
    source: str, revision: str | None = None, adapter_name: str | None = None, energy: float = 0.9
) -> AuditReport:
    """Audit SOURCE (a local directory or a Hub repo id) end to end."""
    _check_energy(energy)  # before any download
    adapter, info = load(source, revision, adapter_name)
    return audit_adapter(adapter, info, energy)


# --------------------------------------------------------------------------- text output


def human_count(n: float) -> str:
    """589800 -> '589.8K' (the format gradience users know)."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def _num(x: float) -> str:
    """Integers without a decimal point, other values with one."""
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def format_text(report: AuditReport, layers: bool = False) -> str:
    """The human-readable audit, in gradience's familiar shape."""
    s = report.summary
    pct = round(s.energy_threshold * 100)
    rule = "─" * 40
    lines = [
        "GRADIENCE LoRA AUDIT",
        rule,
        f"Source: {report.source.get('display')}",
        f"Allocated rank: {s.allocated_rank}",
        "",
        "Summary:",
        f"  LoRA params:              {human_count(s.lora_params)}",
        f"  Layers:                   {s.n_layers}",
        f"  Stable rank (mean):       {s.stable_rank_mean:.1f}",
        f"  Utilization (mean):       {s.utilization_mean * 100:.1f}%",
        f"  Energy rank k@{pct}% (p50):  {_num(s.energy_rank_90_p50)}",
        f"  Energy rank k@{pct}% (p90):  {_num(s.energy_rank_90_p90)}",
        "",
        "Suggested ranks:",
        f"  Global median:  {s.suggested_r_global_median}",
        f"  Global p90:     {s.suggested_r_global_90}",
    ]
    if layers:
        width = max([len("Module")] + [len(x.name) for x in report.layers])
        lines += [
            "",
            "Layers:",
            f"  {'Module':<{width}}  {'Type':<9}  {'r':>4}  {'Stable':>7}  {'Util':>6}  "
            f"{'k@' + str(pct) + '%':>6}  {'Suggest':>7}",
        ]
        for x in report.layers:
            lines.append(
                f"  {x.name:<{width}}  {x.module_type:<9}  {x.r:>4}  {x.stable_rank:>7.2f}  "
                f"{x.utilization * 100:>5.1f}%  {x.energy_rank:>6}  {x.suggested_r:>7}"
            )
    if report.warnings:
        lines += [""] + [f"Warning: {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"
