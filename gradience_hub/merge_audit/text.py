"""The human-readable merge audit, in the shape of ``gradience-hub audit``'s text report."""

from __future__ import annotations

import re
from typing import Any

from gradience_hub.merge_audit.report import MergeAuditReport

# Names come from adapter files and Hub repos: no terminal escapes or line breaks reach a
# terminal from them.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def printable(value: Any) -> str:
    """``value`` as text with control characters (and bidi overrides) replaced by U+FFFD."""
    return _CONTROLS.sub("\ufffd", str(value))


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def _pair_lines(s: dict[str, Any]) -> list[str]:
    a, b = s["a"], s["b"]
    items = [
        (
            "Shared modules",
            f"{s['n_shared']} (only in {a}: {s['n_only_a']}, only in {b}: {s['n_only_b']})",
        ),
        ("Overlap out / in (mean)", f"{_f(s['overlap_out_mean'])} / {_f(s['overlap_in_mean'])}"),
        ("Cosine (mean / global)", f"{_f(s['cosine_mean'])} / {_f(s['cosine_global'])}"),
        (f"Norm ratio {a}/{b} (global)", _f(s["norm_ratio_global"])),
        (f"Share {a} / {b} (mean)", f"{_p(s['share_a_mean'])} / {_p(s['share_b_mean'])}"),
        (f"Retained {a} / {b} (mean)", f"{_p(s['retained_a_mean'])} / {_p(s['retained_b_mean'])}"),
        (
            "Verdicts",
            f"{s['n_independent']} independent, {s['n_redundant']} redundant, "
            f"{s['n_conflicting']} conflicting, {s['n_dominated']} dominated",
        ),
        ("Verdict", s["overall_verdict"]),
    ]
    width = max(len(label) for label, _ in items) + 2
    return [f"  {label + ':':<{width}}{value}" for label, value in items]


def format_text(report: MergeAuditReport, layers: bool = False) -> str:
    """The text report; ``layers`` adds the per-module table."""
    rule = "─" * 40
    weights = ", ".join(
        f"{s['label']}={w:g}" for s, w in zip(report.sources, report.weights, strict=True)
    )
    lines = ["GRADIENCE MERGE AUDIT", rule, "Sources:"]
    lines += [f"  {s['label']}: {printable(s['display'])}" for s in report.sources]
    lines += [
        f"Base model: {printable(report.base_model or 'unknown')}",
        f"Weights: {weights}",
        f"Energy threshold: {report.energy_threshold * 100:g}%",
    ]
    for pair in report.pairs:
        lines += ["", f"Summary ({pair.a} × {pair.b}):", *_pair_lines(pair.summary())]
        for side, names in ((pair.a, pair.only_a), (pair.b, pair.only_b)):
            if names:
                shown = ", ".join(printable(n) for n in names[:3])
                more = f" and {len(names) - 3} more" if len(names) > 3 else ""
                lines.append(f"  Only in {side}: {shown}{more}")
    summary = report.summary()
    lines += [
        "",
        f"Overall verdict: {summary['overall_verdict']}",
        f"Recommended merge: {summary['recommended_method']} — {summary['recommendation_reason']}",
    ]
    if summary["suggested_weights"]:
        lines.append(
            f"Suggested weights: {','.join(f'{x:g}' for x in summary['suggested_weights'])}"
        )
    if layers and report.rows:
        width = max([len("Module")] + [len(printable(r.name)) for r in report.rows])
        lines += [
            "",
            "Modules:",
            f"  {'Module':<{width}}  {'Pair':<5}  {'Ov.out':>6}  {'Ov.in':>6}  {'Cosine':>7}  "
            f"{'Ratio':>7}  {'Share a':>7}  {'Ret. a':>7}  {'Ret. b':>7}  Verdict",
        ]
        for r in report.rows:
            f = r.figures
            lines.append(
                f"  {printable(r.name):<{width}}  {r.a + '×' + r.b:<5}  {_f(f.overlap_out):>6}  "
                f"{_f(f.overlap_in):>6}  {_f(f.cosine):>7}  {_f(f.norm_ratio, 2):>7}  "
                f"{_p(f.share_a):>7}  {_p(f.retained_a):>7}  {_p(f.retained_b):>7}  {r.verdict}"
            )
    if report.merge:
        lines += ["", *format_merge(report.merge)]
    if report.warnings:
        lines += [""] + [f"Warning: {printable(w)}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def format_merge(merge: dict[str, Any]) -> list[str]:
    """The lines about the written merged adapter: per source, measured vs predicted."""
    lines = [
        f"Merged with peft ({merge['method']}): {printable(merge['output'])}",
        f"  {'Source':<7}  {'Retained (measured)':>19}  {'predicted':>9}  {'linear merge':>12}",
    ]
    for s in merge["sources"]:
        lines.append(
            f"  {s['label']:<7}  {_p(s['retained_measured']):>19}  "
            f"{_p(s['retained_predicted']):>9}  {_p(s['retained_linear_merge']):>12}"
        )
    if merge.get("note"):
        lines.append(f"  {merge['note']}")
    return lines
