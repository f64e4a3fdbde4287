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
        f"  Modules:                  {s.n_layers}",
        f"  Stable rank (mean):       {s.stable_rank_mean:.1f}",
        f"  Utilization (mean):       {s.utilization_mean * 100:.1f}%",
        f"  Energy rank k@{pct}%:        median {_num(s.energy_rank_p50)}, "
        f"p90 {_num(s.energy_rank_p90)} (over modules)",
        "",
        "Suggested ranks:",
        f"  Global median:  {s.suggested_r_global_median}",
        f"  Global p90:     {s.suggested_r_global_90}",
    ]
    lines += policy_lines(report)
    lines += udr_lines(report)
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


def policy_lines(report: AuditReport) -> list[str]:
    """The rank policies' table (``--rank-policies``): per policy the median and p90 of its
    per-module k and the global ranks they suggest; empty without policies."""
    policies = report.suggestions.get("policies")
    if not isinstance(policies, dict) or not policies:
        return []
    width = max(len("Policy"), *(len(name) for name in policies))
    lines = [
        "",
        "Rank policies (per-module k; suggested global r):",
        f"  {'Policy':<{width}}  {'k p50':>6}  {'k p90':>6}  {'r p50':>6}  {'r p90':>6}",
    ]
    for name, p in policies.items():
        lines.append(
            f"  {name:<{width}}  {_num(p['median']):>6}  {_num(p['p90']):>6}  "
            f"{p['suggested_r_median']:>6}  {p['suggested_r_p90']:>6}"
        )
    spreads = [x.policy_spread for x in report.layers if x.policy_spread is not None]
    if spreads:
        widest = max(report.layers, key=lambda x: x.policy_spread or 0)
        lines.append(
            f"  Largest disagreement: {widest.name} (spread {widest.policy_spread}; "
            f"see 'gradience-hub explain SOURCE --module NAME')"
        )
    return lines


def udr_lines(report: AuditReport) -> list[str]:
    """The UDR summary (``--udr``); empty without it."""
    udr = report.udr
    if not udr:
        return []
    s = udr.get("summary", {})
    if not s.get("n_layers_with_udr"):
        return ["", f"UDR vs {udr.get('base')}: no module could be compared"]
    read = human_bytes(int(udr.get("bytes_read", 0)))
    return [
        "",
        f"Update-to-base ratio (UDR) vs {udr.get('base')}:",
        f"  UDR median / p90 / max:   {s['udr_median']:.3g} / {s['udr_p90']:.3g} / "
        f"{s['udr_max']:.3g}",
        f"  UDR > 0.1 / > 0.3:        {s['fraction_udr_gt_0_1']:.0%} / "
        f"{s['fraction_udr_gt_0_3']:.0%} of {s['n_layers_with_udr']} modules",
        f"  SDI median:               {s['sdi_median']:.2f}",
        f"  Base weights read:        {read} ({udr.get('cached_modules', 0)} modules cached)",
    ]


def human_bytes(n: int) -> str:
    """``2.7 GB``, ``512 B``."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
