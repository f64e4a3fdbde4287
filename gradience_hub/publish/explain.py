"""``explain`` as text, Markdown and a small PNG: one module's spectrum and its policies.

Module names come from the adapter (untrusted): Markdown escapes them (``markdown.md``), text
strips control characters, and the plot draws them as plain text (no mathtext).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

from gradience_hub._io import write_file
from gradience_hub.audit.explain import Explanation
from gradience_hub.markdown import md
from gradience_hub.output import strip_controls

_DPI = 100


def _threshold(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "energy":
        return f"{value:.0%} of energy"
    return f"{value:.4g} ({unit})"


def _rows(e: Explanation) -> list[tuple[str, str, str, str]]:
    return [
        (p.policy, str(p.k), _threshold(p.threshold, p.unit), p.note) for p in e.policies.results
    ]


def explain_text(e: Explanation) -> str:
    """Plain text for the terminal."""
    name = strip_controls(e.module)
    lines = [f"{name}  ({e.shape[0]} x {e.shape[1]}, r={e.r})", ""]
    lines.append(" k  sigma_k      cumulative energy")
    for i, (s, c) in enumerate(zip(e.singular_values, e.cumulative_energy, strict=True), 1):
        lines.append(f"{i:2d}  {s:<11.4g}  {c:7.2%}")
    lines += ["", f"{'policy':<13} {'k':>3}  threshold"]
    for policy, k, threshold, note in _rows(e):
        lines.append(f"{policy:<13} {k:>3}  {threshold}{'  (' + note + ')' if note else ''}")
    lines += [
        f"spread {e.policies.spread}, consensus (median) k={e.policies.consensus}",
        "",
        strip_controls(e.why),
    ]
    return "\n".join(lines) + "\n"


def explain_markdown(e: Explanation) -> str:
    """Markdown (module names escaped)."""
    out = [f"### {md(e.module)}", ""]
    out.append(f"{e.shape[0]} × {e.shape[1]}, allocated rank r={e.r}.")
    out += ["", "| policy | k | threshold | note |", "|---|---:|---|---|"]
    for policy, k, threshold, note in _rows(e):
        out.append(f"| {md(policy)} | {k} | {md(threshold)} | {md(note)} |")
    out += [
        "",
        f"Spread {e.policies.spread}; consensus (median) k={e.policies.consensus}. {md(e.why)}",
        "",
        "| k | σ_k | cumulative energy |",
        "|---:|---:|---:|",
    ]
    for i, (s, c) in enumerate(zip(e.singular_values, e.cumulative_energy, strict=True), 1):
        out.append(f"| {i} | {s:.4g} | {c:.2%} |")
    return "\n".join(out) + "\n"


def explain_plot(e: Explanation, path: str | os.PathLike[str]) -> Path:
    """A small PNG: singular values (bars, log scale) and the cumulative energy curve, with
    each policy's k marked. Same explanation, same bytes."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plain: dict[str, Any] = {"parse_math": False}
    ks = list(range(1, len(e.singular_values) + 1))
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(6.4, 3.4), dpi=_DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        positive = [max(s, 1e-300) for s in e.singular_values]
        ax.bar(ks, positive, color="#9ecae1", label="σ_k")
        if any(s > 0 for s in e.singular_values):
            ax.set_yscale("log")
        ax.set_xlabel("k")
        ax.set_ylabel("singular value")
        energy = ax.twinx()
        energy.plot(ks, [c * 100 for c in e.cumulative_energy], color="#08519c", marker=".")
        energy.set_ylim(0, 105)
        energy.set_ylabel("cumulative energy (%)")
        colors = ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
        for i, p in enumerate(e.policies.results):
            color = colors[i % len(colors)]
            energy.axvline(p.k + 0.02 * i, color=color, linestyle="--", linewidth=1.2)
            energy.text(p.k, 102 - 7 * i, f" {p.policy}: {p.k}", color=color, fontsize=8, **plain)
        name = e.module if len(e.module) <= 70 else "…" + e.module[-69:]
        ax.set_title(strip_controls(name), fontsize=9, loc="left", **plain)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return write_file(Path(path), buffer.getvalue(), parents=True)
