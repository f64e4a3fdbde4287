"""A BenchRecord as text: bench.md (Markdown, published) and the terminal table.

bench.md is escaped as the card is: every string that came from outside (variant, task and
metric names, warnings, the adapter's source) goes through
:func:`gradience_hub.markdown.md`, the one Markdown escaping path, so it cannot open
HTML, a link or image, @-mention, break a table row or leave its line; every line starts with
our own text, never with untrusted data (a ``::error`` workflow command cannot start a line).
The terminal table strips control characters from names before they are printed.
Formatting only (no I/O, no JSON).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gradience_hub.markdown import md
from gradience_hub.policy import FAIL, INCONCLUSIVE, PASS, RULE_WORST_SEED

if TYPE_CHECKING:
    from gradience_hub.record.model import BenchRecord, VariantRecord

# Minimum column widths of the terminal table.
_WIDTHS = (27, 13, 10, 9)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

INCONCLUSIVE_TEXT = (
    "the adapter does not beat its base model on this task, so no compression can be validated"
)


def _plain(text: object) -> str:
    """Untrusted text for a terminal: control characters (ANSI/OSC escapes, newlines, bidi
    overrides) become U+FFFD."""
    return _CONTROLS.sub("\ufffd", str(text))


def _pct(x: float | None) -> str:
    """0.5 -> '50%', 0.028 -> '2.8%': whole percentages without a decimal."""
    if x is None:
        return "n/a"
    v = x * 100
    return f"{round(v)}%" if abs(v - round(v)) < 0.05 else f"{v:.1f}%"


def _points(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "n/a"
    text = f"{x * 100:{'+' if signed else ''}.1f}"
    return ("0.0" if text in ("+0.0", "-0.0") else text) + " pts"


def _gain(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


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


def _interval(v: VariantRecord) -> str:
    ci = v.delta_ci
    return "n/a" if ci is None else f"[{_points(ci.low)}, {_points(ci.high)}]"


def format_table(record: BenchRecord) -> str:
    """The plain-text variants table (Variant, Compression, Mean, Worst Δ, Status) for a
    terminal; names are stripped of control characters."""
    metric = "acc" if record.task.metric.lower() in ("accuracy", "acc") else record.task.metric
    rows = [["Variant", "Compression", f"Mean {_plain(metric)}", "Worst Δ", "Status"]]
    for v in record.variants:
        mean = f"{v.mean * 100:.1f}%" if v.mean is not None else "n/a"
        rows.append(
            [
                _plain(variant_label(v)),
                _pct(v.param_reduction),
                mean,
                _points(v.worst_delta),
                v.verdict,
            ]
        )
    widths = [
        max(minimum, max(len(row[i]) for row in rows) + 2) for i, minimum in enumerate(_WIDTHS)
    ]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append(("".join(cells) + row[-1]).rstrip())
    return "\n".join(lines) + "\n"


def status_sentence(record: BenchRecord) -> str:
    """The status in one plain sentence (Markdown-escaped where it quotes the record)."""

    if record.status == INCONCLUSIVE:
        scores = ""
        if record.base is not None:
            adapter = record.base.mean + record.base.gain
            scores = (
                f" (adapter {adapter * 100:.1f}% vs base model {record.base.mean * 100:.1f}% "
                f"{md(record.task.metric)})"
            )
        return f"Inconclusive: {INCONCLUSIVE_TEXT}{scores}."
    if record.status == PASS and record.recommendation:
        rec = record.recommendation
        try:
            label = variant_label(record.variant(rec.variant))
        except KeyError:
            label = rec.variant
        return (
            f"{md(label)} passes the policy with {_pct(rec.param_reduction)} fewer LoRA parameters."
        )
    if record.status == FAIL:
        return "No compressed variant passes the policy: keep the uncompressed adapter."
    return f"Status {md(record.status)}."


def _policy_line(record: BenchRecord) -> str:
    pol = record.policy
    rate = (
        "every seed"
        if pol.min_pass_rate >= 1.0
        else f"at least {pol.min_pass_rate * 100:.0f}% of seeds"
    )
    worst = f"worst-seed drop at most {pol.max_drop * 100:.1f} points"
    if pol.seed_tolerance != pol.max_drop:
        worst += f", {rate} within {pol.seed_tolerance * 100:.1f} points"
    else:
        worst += f", on {rate}"
    ni = f"pooled 95% interval's lower bound at least -{pol.max_drop * 100:.1f} points"
    if pol.rule == RULE_WORST_SEED:
        return f"- Policy: worst-seed (deciding): {worst}; non-inferiority (recorded): {ni}"
    return f"- Policy: non-inferiority (deciding): {ni}; worst-seed (recorded): {worst}"


def to_markdown(record: BenchRecord) -> str:
    """bench.md: a status heading, the status in words, the facts that frame it and the
    variants as a Markdown table (every untrusted string escaped)."""

    seeds = ", ".join(str(s) for s in record.protocol.seeds) or "none"
    if record.recommendation:
        rec = record.recommendation
        try:
            label = variant_label(record.variant(rec.variant))
        except KeyError:
            label = rec.variant
        recommendation = f"{md(label)}, {_pct(rec.param_reduction)} fewer LoRA parameters"
    elif record.status == INCONCLUSIVE:
        recommendation = "none (no compression can be validated)"
    else:
        recommendation = "none (no variant passed; keep the uncompressed adapter)"
    task = f"{md(record.task.name)} ({md(record.task.metric)}"
    if record.task.eval_examples:
        task += f", {record.task.eval_examples} eval examples per seed"
    task += ")"
    if record.noise_floor is not None:
        task += f"; noise floor ±{record.noise_floor * 100:.1f} points (paired 95% interval)"
    probe = f"{record.probe.mean * 100:.1f}% mean"
    if record.probe.rank is not None:
        probe = f"r={record.probe.rank}, " + probe
    lines = [
        f"# Compression bench: {md(record.status)}",
        "",
        status_sentence(record),
        "",
        f"- Recommendation: {recommendation}",
        _policy_line(record),
        f"- Protocol: {md(record.protocol.kind)}, seeds {seeds}",
        f"- Task: {task}",
        f"- Uncompressed adapter: {probe}",
    ]
    if record.base is not None:
        base = f"- Base model (no LoRA update): {record.base.mean * 100:.1f}% mean, adapter gain "
        base += _points(record.base.gain)
        if record.base.p_value is not None:
            base += f" (exact paired test p = {record.base.p_value:.2g})"
        lines.append(base)
    if record.status_reason and record.status != PASS:
        lines.append(f"- Reason: {md(record.status_reason)}")
    metric = "acc" if record.task.metric.lower() in ("accuracy", "acc") else record.task.metric
    lines += [
        "",
        f"| Variant | Compression | Mean {md(metric)} | Worst Δ | Retained gain (worst) "
        "| Pooled Δ, 95% interval | Status |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for v in record.variants:
        mean = f"{v.mean * 100:.1f}%" if v.mean is not None else "n/a"
        lines.append(
            f"| {md(variant_label(v))} | {_pct(v.param_reduction)} | {mean} | "
            f"{_points(v.worst_delta)} | {_gain(v.retained_gain_worst)} | {_interval(v)} | "
            f"{md(v.verdict)} |"
        )
    if record.warnings:
        lines += ["", *[f"- Warning: {md(w)}" for w in record.warnings]]
    return "\n".join(lines) + "\n"
