"""The utilization picture: a heatmap of utilization by layer and module.

``gradience/utilization.png`` is committed next to the card and shown in its section. The
figure is drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas directly (no pyplot
state, no change to the user's backend), under matplotlib's default style (a user's matplotlibrc
cannot change it), and saved without the ``Software`` metadata, so the same audit gives the same
PNG bytes. matplotlib is imported inside the function: importing this module is free.
"""

from __future__ import annotations

import importlib
import io
import itertools
import math
import os
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gradience_hub._io import write_file
from gradience_hub.errors import RecordError
from gradience_hub.markdown import number
from gradience_hub.output import strip_controls
from gradience_hub.parallel import meanwhile

# Rows are grouped by module_type in this order; within a group, the usual projection order of
# a transformer block comes first, then the rest alphabetically.
_GROUPS = ("attention", "mlp", "other")
_LEAF_ORDER = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "qkv_proj",
    "query",
    "key",
    "value",
    "c_attn",
    "c_proj",
    "out_proj",
    "dense",
    "gate_proj",
    "up_proj",
    "down_proj",
    "gate_up_proj",
    "w1",
    "w3",
    "w2",
    "c_fc",
    "fc1",
    "fc2",
)
_NO_LAYER = "–"
_DPI = 110


def _row_key(name: str, layer_index: int | None) -> tuple[str, ...]:
    """The module name with its layer-index component replaced by ``*``."""
    parts = name.split(".")
    if layer_index is not None:
        for i, part in enumerate(parts):
            if part == str(layer_index):
                return (*parts[:i], "*", *parts[i + 1 :])
    return tuple(parts)


def _suffix(key: tuple[str, ...], n: int) -> tuple[str, ...]:
    if "*" not in key:
        return key
    tail = key[key.index("*") + 1 :]
    return tail[-n:] if 0 < n <= len(tail) else key[max(0, len(key) - n) :]


def _labels(keys: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Row labels: the shortest dotted suffix after the ``*`` that tells a module apart
    (``q_proj``; ``encoder.layers.*.q_proj`` when an encoder and a decoder both have one);
    modules without a layer index keep their full name.

    One pass per suffix length over all keys with a counter, O(K * depth): comparing every
    key with every other took 43 s for 5,000 modules.
    """
    labels: dict[tuple[str, ...], str] = {}
    pending = list(dict.fromkeys(keys))
    n = 1
    while pending:
        counts = Counter(_suffix(key, n) for key in keys)
        still = []
        for key in pending:
            if n >= len(key) or counts[_suffix(key, n)] == 1:
                labels[key] = ".".join(_suffix(key, n))
            else:
                still.append(key)
        pending, n = still, n + 1
    return labels


def _leaf_rank(label: str) -> tuple[int, str]:
    leaf = label.rsplit(".", 1)[-1]
    return (_LEAF_ORDER.index(leaf) if leaf in _LEAF_ORDER else len(_LEAF_ORDER), label)


def utilization_grid(
    layers: list[dict[str, Any]],
) -> tuple[list[str], list[str], list[str], Any]:
    """Row labels, row groups, column labels and the utilization matrix (NaN where absent)."""
    import numpy as np

    cells: dict[tuple[tuple[str, ...], str], list[float]] = defaultdict(list)
    groups: dict[tuple[str, ...], str] = {}
    columns: set[int] = set()
    unindexed = False
    for layer in layers:
        index = layer.get("layer_index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else None
        key = _row_key(str(layer.get("name", "?")), index)
        group = layer.get("module_type")
        groups.setdefault(key, group if group in _GROUPS else "other")
        column = str(index) if index is not None else _NO_LAYER
        if index is None:
            unindexed = True
        else:
            columns.add(index)
        value = number(layer.get("utilization"))
        if value is not None and math.isfinite(value):
            cells[(key, column)].append(value)
    labels = _labels(list(groups))
    keys = sorted(groups, key=lambda k: (_GROUPS.index(groups[k]), *_leaf_rank(labels[k])))
    cols = [str(i) for i in sorted(columns)] + ([_NO_LAYER] if unindexed else [])
    row_of = {key: i for i, key in enumerate(keys)}
    col_of = {col: j for j, col in enumerate(cols)}
    matrix = np.full((len(keys), len(cols)), np.nan)
    for (key, col), values in cells.items():
        matrix[row_of[key], col_of[col]] = sum(values) / len(values)
    return [labels[k] for k in keys], [groups[k] for k in keys], cols, matrix


def _shown(label: str, limit: int = 60) -> str:
    """A label as drawn: control characters dropped, at most ``limit`` characters (the
    middle elided), so one hostile name cannot take over the figure."""
    text = strip_controls(label).replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return text if len(text) <= limit else f"{text[: limit // 2 - 1]}…{text[-(limit // 2) :]}"


def _tick_step(n: int, most: int) -> int:
    """The smallest step of 1, 2, 5 x 10^k that shows at most ``most`` of ``n`` ticks."""
    step, k = 1, 0
    while n / step > most:
        k += 1
        step = (1, 2, 5)[k % 3] * 10 ** (k // 3)
    return step


# What utilization_heatmap imports: half a second on a 2-core machine, most of annotate's own time.
_MATPLOTLIB_MODULES = (
    "matplotlib.style",
    "matplotlib.ticker",
    "matplotlib.colors",
    "matplotlib.backends.backend_agg",
    "matplotlib.figure",
)


def _import_all(names: tuple[str, ...]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            return  # whoever uses the module reports it when it runs


@contextmanager
def matplotlib_loading(*also: str) -> Iterator[None]:
    """Import matplotlib on a thread while the body runs (annotate: while the adapter
    downloads, which waits on the network), so the picture does not pay for it afterwards.
    The thread is joined before anything leaves the block (:func:`parallel.meanwhile`).
    Nothing of matplotlib's state is changed: the thread only imports. ``also`` names more
    modules to import on the same thread after it.
    """
    names = tuple(n for n in (*_MATPLOTLIB_MODULES, *also) if n not in sys.modules)
    if not names:
        yield
        return
    with meanwhile(lambda: _import_all(names), "gradience-matplotlib-import"):
        yield


def utilization_norm(matrix: Any) -> Any:
    """The colour scale of the heatmap, in percent: a :class:`matplotlib.colors.Normalize`
    from the lowest to the highest utilization the adapter has (NaN ignored), so the
    colormap's two ends are this adapter's extremes and its differences show. A flat adapter
    (one value) gets a band of 5 points around it, within 0..100; no value at all, 0..100."""
    import numpy as np
    from matplotlib.colors import Normalize

    values = np.asarray(matrix, dtype=float) * 100.0
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Normalize(vmin=0.0, vmax=100.0)
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo < 1e-9:
        lo, hi = max(0.0, lo - 5.0), min(100.0, hi + 5.0)
        if hi - lo < 1e-9:
            lo, hi = (0.0, 5.0) if hi <= 0.0 else (95.0, 100.0)
    return Normalize(vmin=lo, vmax=hi)


def utilization_heatmap(audit: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Draw utilization (stable rank / r) per module as a layer x module heatmap PNG.

    ``audit`` is an audit.json dict. Columns are layer indices (modules without one share a
    final "–" column); rows are modules grouped by module_type (attention, mlp, other). Cells
    show percentages when the grid is small enough to read. Returns the written path; the
    same audit always gives the same bytes.
    """
    return write_file(Path(path), heatmap_png(audit), parents=True)


def heatmap_png(audit: dict[str, Any]) -> bytes:
    """The PNG bytes :func:`utilization_heatmap` writes."""
    import matplotlib.style

    layers = [row for row in (audit or {}).get("layers") or [] if isinstance(row, dict)]
    if not layers:
        raise RecordError("the audit has no modules to plot", hint="audit a LoRA adapter first")
    with matplotlib.style.context("default"):
        fig = _heatmap_figure(layers, audit.get("summary") or {})
        buffer = io.BytesIO()
        # No "Software" key: the PNG then carries no version string, and the bytes depend on
        # the audit only. A module name in a script the font lacks draws as boxes; matplotlib's
        # "Glyph ... missing" warnings would only alarm the user on stderr.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _plotted(audit: dict[str, Any]) -> tuple[Any, Any]:
    """What the picture is drawn from: the rows and the summary."""
    return (audit or {}).get("layers"), (audit or {}).get("summary")


@contextmanager
def drawing_ahead(audit: dict[str, Any]) -> Iterator[Callable[[dict[str, Any]], bytes]]:
    """Draw the heatmap of ``audit`` on a thread while the body runs (annotate: while it reads
    the Hub, waiting on the network), and yield ``png(current)``: the bytes drawn ahead when
    ``current`` plots the same rows and summary (else drawn anew, once the thread is done),
    with a drawing error raised in the caller's thread. The thread is joined before anything
    leaves the block (:func:`parallel.meanwhile`); it is the only user of matplotlib meanwhile."""
    with meanwhile(lambda: heatmap_png(audit), "gradience-heatmap") as drawn:

        def png(current: dict[str, Any]) -> bytes:
            if _plotted(current) != _plotted(audit):
                wait([drawn])  # matplotlib is not drawn on from two threads at once
                return heatmap_png(current)
            return drawn.result()

        yield png


# Text from the adapter (module names) is drawn as text, never parsed as mathtext:
# "$\\undefinedcmd{x}$" in a module name must not stop the picture.
_PLAIN: dict[str, Any] = {"parse_math": False}


def _heatmap_figure(layers: list[dict[str, Any]], summary: dict[str, Any]) -> Any:
    """The heatmap's Figure (on an Agg canvas) of the audit rows ``layers``."""
    import matplotlib.ticker
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, groups, cols, matrix = utilization_grid(layers)
    rows = [_shown(r) for r in rows]
    data = np.ma.masked_invalid(matrix * 100.0)
    n_rows, n_cols = data.shape
    width = min(16.0, max(6.4, 2.6 + 0.24 * n_cols + 0.06 * max(len(r) for r in rows)))
    height = min(14.0, max(3.0, 1.7 + 0.34 * n_rows))
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    # A perceptual colormap over the range this adapter spans (utilization_norm): on a
    # fixed 0..100% scale a typical adapter (5-20%) is one pale colour.
    norm = utilization_norm(matrix)
    title = _title(summary, len(layers), norm, bool(data.mask.any()))
    ax, cax = _placed_axes(fig, rows, groups, title)
    ax.set_title(title, fontsize=10, loc="left", **_PLAIN)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e6e6e6")
    image = ax.imshow(data, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    colorbar = fig.colorbar(image, cax=cax)
    colorbar.set_label("utilization (stable rank / r)")
    # whole percents repeat one label on a narrow range (7.4-8.3%: four ticks read "8%")
    decimals = 0 if norm.vmax - norm.vmin >= 5 else 1
    colorbar.ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(decimals=decimals))
    _axes_labels(ax, rows, cols)
    _group_rules(ax, groups)
    if n_cols <= 32 and n_rows * n_cols <= 400:
        _cell_values(ax, data, norm)
    return fig


def _title(summary: dict[str, Any], n_modules: int, norm: Any, gaps: bool) -> str:
    """The two-line title: what is drawn, and the figures to read it by."""
    details = []
    rank = summary.get("allocated_rank")
    if isinstance(rank, (int, float)):
        details.append(f"allocated rank r={rank:g}")
    mean = summary.get("utilization_mean")
    if isinstance(mean, (int, float)):
        details.append(f"mean utilization {mean * 100:.1f}%")
    details.append(f"{n_modules} module{'s' if n_modules != 1 else ''}")
    details.append(f"colours span {norm.vmin:.1f}%–{norm.vmax:.1f}%")
    if gaps:
        details.append("grey: no LoRA module there")
    return "LoRA utilization by layer and module\n" + " · ".join(details)


def _placed_axes(fig: Any, rows: list[str], groups: list[str], title: str) -> tuple[Any, Any]:
    """The heatmap's axes and its colour bar's, placed from the measured widths of the texts
    around them; the figure is widened when the title needs it. Not matplotlib's constrained
    layout: it measures every text of the figure (each cell's value too) in an extra draw,
    half the picture's time on a 7B adapter."""
    from matplotlib.font_manager import FontProperties

    renderer = fig.canvas.get_renderer()
    width, height = fig.get_size_inches()

    def text_width(texts: list[str], size: float) -> float:
        prop = FontProperties(size=size)
        measured = (renderer.get_text_width_height_descent(t, prop, ismath=False) for t in texts)
        return max((w for w, _, _ in measured), default=0.0) / fig.dpi

    line = 1.3 / 72  # inches per point of font size, with matplotlib's line spacing
    pad = 0.12
    row_size = 9 if len(rows) <= 24 else 7
    left = pad + text_width(rows, row_size) + 0.08
    needed = left + text_width(title.split("\n"), 10) + pad
    if needed > width:
        width = needed
        fig.set_size_inches(width, height)
    group_names = list(dict.fromkeys(groups))
    group_w = text_width(group_names, 9) + 0.12 if len(group_names) > 1 else 0.0
    bar_w, bar_gap = 0.16, 0.15
    # the colour bar's tick labels (at most "100.0%": one decimal on a narrow range) and its
    # rotated label, one line of 10 pt
    bar_labels = text_width(["100.0%"], 10) + 0.08 + 10 * line + pad
    right = group_w + bar_gap + bar_w + bar_labels
    top = 2 * 10 * line + 0.15  # the two-line title
    bottom = 9 * line + 10 * line + 0.2  # layer ticks and the axis label
    axes_w = max(width - left - right, 0.5)
    axes_h = max(height - top - bottom, 0.5)
    ax = fig.add_axes((left / width, bottom / height, axes_w / width, axes_h / height))
    bar_x = left + axes_w + group_w + bar_gap
    cax = fig.add_axes((bar_x / width, bottom / height, bar_w / width, axes_h / height))
    return ax, cax


def _axes_labels(ax: Any, rows: list[str], cols: list[str]) -> None:
    """Layer ticks along x (thinned past 32 columns), module names along y (past 120 rows)."""
    n_rows, n_cols = len(rows), len(cols)
    step = _tick_step(n_cols, 32)
    ticks = [i for i in range(n_cols) if i % step == 0 or cols[i] == _NO_LAYER]
    ax.set_xticks(
        ticks, labels=[cols[i] for i in ticks], fontsize=8 if n_cols > 24 else 9, **_PLAIN
    )
    if cols == [_NO_LAYER]:
        ax.set_xticks([])
    shown_rows = range(0, n_rows, _tick_step(n_rows, 120))
    ax.set_yticks(
        shown_rows,
        labels=[rows[i] for i in shown_rows],
        fontsize=9 if n_rows <= 24 else 7,
        **_PLAIN,
    )
    ax.tick_params(length=0)
    indexed = any(c != _NO_LAYER for c in cols)
    ax.set_xlabel("layer" if indexed else "modules without a layer index")
    for spine in ax.spines.values():
        spine.set_visible(False)


def _group_rules(ax: Any, groups: list[str]) -> None:
    """White rules between module groups, and the group names on the right."""
    n_rows = len(groups)
    bounds = [0] + [i for i in range(1, n_rows) if groups[i] != groups[i - 1]] + [n_rows]
    for b in bounds[1:-1]:
        ax.axhline(b - 0.5, color="white", linewidth=2.5)
    if len(bounds) > 2:
        side = ax.secondary_yaxis("right")
        centers = [(lo + hi - 1) / 2 for lo, hi in itertools.pairwise(bounds)]
        side.set_yticks(centers, labels=[groups[lo] for lo in bounds[:-1]], fontsize=9, **_PLAIN)
        side.tick_params(length=0)
        for spine in side.spines.values():
            spine.set_visible(False)


def _cell_values(ax: Any, data: Any, norm: Any) -> None:
    """Each cell's percentage, white on the dark (low) end of viridis, black on the light."""
    import numpy as np

    n_rows, n_cols = data.shape
    for i in range(n_rows):
        for j in range(n_cols):
            if np.ma.getmaskarray(data)[i, j]:
                continue
            value = float(data[i, j])
            ax.text(
                j,
                i,
                f"{value:.0f}%" if n_cols <= 12 else f"{value:.0f}",
                ha="center",
                va="center",
                fontsize=7 if n_cols > 16 else 8,
                color="white" if norm(value) < 0.6 else "black",  # viridis: dark low
                **_PLAIN,
            )
