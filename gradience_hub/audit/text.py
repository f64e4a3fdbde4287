"""The human-readable audit, in gradience's familiar shape."""

from __future__ import annotations

from gradience_hub.audit.report import AuditReport
from gradience_hub.markdown import human_count


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
        *([f"Format: {s.adapter_format} LoRA file"] if s.adapter_format != "peft" else []),
        "",
        "Summary:",
        f"  LoRA params:              {human_count(s.lora_params)}",
        f"  Layers:                   {s.n_layers}",
        f"  Stable rank (mean):       {s.stable_rank_mean:.1f}",
        f"  Utilization (mean):       {s.utilization_mean * 100:.1f}%",
        f"  Energy rank k@{pct}% (p50):  {_num(s.energy_rank_p50)}",
        f"  Energy rank k@{pct}% (p90):  {_num(s.energy_rank_p90)}",
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
