"""A small plot of utilization over training steps (overall and per module type), for the card.

Drawn as ``publish/plot.py`` draws: an Agg canvas, matplotlib's default style, no Software
metadata, so the same snapshots give the same PNG bytes.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradience_hub._io import write_file
from gradience_hub.errors import RecordError
from gradience_hub.telemetry import Point

_DPI = 100


def utilization_over_steps(points: Sequence[Point], path: str | os.PathLike[str]) -> Path:
    """Utilization (stable rank / r, %) against the global step; returns the written path."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not points:
        raise RecordError("no telemetry snapshot to plot", hint="train with the callback first")
    steps = [p.step for p in points]
    plain: dict[str, Any] = {"parse_math": False}
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(5.6, 2.8), dpi=_DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        overall = [p.overall.get("utilization_mean", float("nan")) * 100 for p in points]
        ax.plot(steps, overall, color="black", marker="o", linewidth=2, label="all modules")
        types = sorted({t for p in points for t in p.by_type})
        if len(types) > 1:
            for t in types:
                values = [
                    p.by_type.get(t, {}).get("utilization_mean", float("nan")) * 100 for p in points
                ]
                ax.plot(steps, values, marker=".", linewidth=1, label=t)
        ax.set_xlabel("training step")
        ax.set_ylabel("utilization (%)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        r = points[-1].allocated_rank
        ax.set_title(f"LoRA utilization over training (r={r})", fontsize=10, loc="left", **plain)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return write_file(Path(path), buffer.getvalue(), parents=True)
