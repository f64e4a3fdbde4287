"""bench.md: a BenchRecord as text, the status, the facts that frame it and the variants table.

Formatting only (no I/O, no JSON), apart from the model in :mod:`gradience_hub.record.model`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradience_hub.record.model import BenchRecord, VariantRecord


# Minimum column widths of the table (the layout of the README's example).
_WIDTHS = (27, 13, 10, 9)


def _pct(x: float | None) -> str:
    """0.5 -> '50%', 0.028 -> '2.8%': whole percentages without a decimal."""
    if x is None:
        return "n/a"
    v = x * 100
    return f"{round(v)}%" if abs(v - round(v)) < 0.05 else f"{v:.1f}%"


def _signed_pct(x: float | None) -> str:
    if x is None:
        return "n/a"
    text = f"{x * 100:+.1f}%"
    return "0.0%" if text in ("+0.0%", "-0.0%") else text


def variant_label(v: VariantRecord) -> str:
    """``uniform_median (r=32)``, ``per_layer (audit-guided)`` or ``name (r=2-16)``."""
    if v.rank is not None:
        return f"{v.name} (r={v.rank})"
    if v.rank_pattern:
        if v.name.startswith("per_layer"):
            return f"{v.name} (audit-guided)"
        lo, hi = min(v.rank_pattern.values()), max(v.rank_pattern.values())
        return f"{v.name} (r={lo})" if lo == hi else f"{v.name} (r={lo}-{hi})"
    return v.name


def format_table(record: BenchRecord) -> str:
    """The plain-text variants table (Variant, Compression, Mean, Worst Δ, Status)."""
    metric = "acc" if record.task.metric.lower() in ("accuracy", "acc") else record.task.metric
    rows = [["Variant", "Compression", f"Mean {metric}", "Worst Δ", "Status"]]
    for v in record.variants:
        mean = f"{v.mean * 100:.1f}%" if v.mean is not None else "n/a"
        rows.append(
            [variant_label(v), _pct(v.param_reduction), mean, _signed_pct(v.worst_delta), v.verdict]
        )
    widths = [
        max(minimum, max(len(row[i]) for row in rows) + 2) for i, minimum in enumerate(_WIDTHS)
    ]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append(("".join(cells) + row[-1]).rstrip())
    return "\n".join(lines) + "\n"


def to_markdown(record: BenchRecord) -> str:
    """bench.md: a status heading, the facts that frame the verdict, and the table (fenced,
    so it reads the same on the Hub and in a terminal)."""
    pol = record.policy
    rate = (
        "every seed"
        if pol.min_pass_rate >= 1.0
        else f"at least {pol.min_pass_rate * 100:.0f}% of seeds"
    )
    seeds = ", ".join(str(s) for s in record.protocol.seeds) or "none"
    if record.recommendation:
        rec = record.recommendation
        try:
            label = variant_label(record.variant(rec.variant))
        except KeyError:
            label = rec.variant
        recommendation = f"{label}, {_pct(rec.param_reduction)} fewer LoRA parameters"
    else:
        recommendation = "none (no variant passed; keep the uncompressed adapter)"
    task = f"{record.task.name} ({record.task.metric}"
    if record.task.eval_examples:
        task += f", {record.task.eval_examples} eval examples"
    task += ")"
    if record.metric_se is not None:
        task += f"; noise floor ±{record.metric_se * 100:.1f} points"
    probe = f"{record.probe.mean * 100:.1f}% mean"
    if record.probe.rank is not None:
        probe = f"r={record.probe.rank}, " + probe
    lines = [
        f"# Compression bench: {record.status}",
        "",
        f"- Recommendation: {recommendation}",
        f"- Policy: worst-seed drop at most {pol.max_drop * 100:.1f} points, on {rate}",
        f"- Protocol: {record.protocol.kind}, seeds {seeds}",
        f"- Task: {task}",
        f"- Uncompressed adapter: {probe}",
        "",
        "```text",
        format_table(record).rstrip("\n"),
        "```",
    ]
    if record.warnings:
        lines += ["", *[f"Warning: {w}" for w in record.warnings]]
    return "\n".join(lines) + "\n"
