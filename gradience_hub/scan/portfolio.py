"""The portfolio page: one self-contained ``index.html`` (inline CSS, SVG and script; nothing
fetched at view time) built from the dataset.

Every string that came from a repo (ids, adapter and module names, base models, formats,
reasons) is escaped with :func:`html.escape` wherever it lands, text or attribute; the table's
data live in the DOM (``data-v`` attributes), not in a script block, so no repo string is ever
parsed as script. Sorting and filtering are a few lines of inline script over those rows.

Charts are aggregated while the Parquet files are read in batches (bounded histograms and a
bounded list of the worst wasters), so the page costs one pass and little memory besides its
own table.
"""

from __future__ import annotations

import heapq
import html
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from gradience_hub.markdown import is_repo_id
from gradience_hub.scan.dataset import ADAPTERS_FILE, MODULES_FILE, Census

PAGE_FILE = "index.html"
HUB_URL = "https://huggingface.co"
TOP_WASTERS = 20
MAX_POINTS = 5000  # scatter points drawn; the table still lists every adapter
MAX_GROUPS = 15  # base models / module types shown in the distribution tables

COLUMNS = [  # (key, header, numeric)
    ("repo", "repo", False),
    ("adapter", "adapter", False),
    ("format", "format", False),
    ("base_model", "base model", False),
    ("allocated_rank", "r", True),
    ("lora_params", "params", True),
    ("bytes", "bytes", True),
    ("utilization_mean", "utilization", True),
    ("energy_rank_p50", "energy rank p50", True),
    ("suggested_r_median", "suggested r", True),
    ("bytes_saved", "bytes saved", True),
    ("status", "status", False),
]


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "utilization_mean":
        return f"{value:.3f}"
    if key == "energy_rank_p50":
        return f"{value:g}"
    if isinstance(value, int) and key in ("lora_params", "bytes", "bytes_saved"):
        return _human(value)
    return str(value)


def _human(n: float) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def _repo_link(row: dict[str, Any]) -> str:
    repo = row["repo"] or ""
    if row.get("source") == "hub" and is_repo_id(repo):
        href = f"{HUB_URL}/{quote(repo, safe='/')}"
        return f'<a href="{_e(href)}" rel="noopener noreferrer">{_e(repo)}</a>'
    return _e(repo)


def _row_html(row: dict[str, Any]) -> str:
    cells = []
    for key, _, numeric in COLUMNS:
        value = row.get(key)
        sort_value = "" if value is None else (repr(float(value)) if numeric else str(value))
        text = _repo_link(row) if key == "repo" else _e(_fmt(key, value))
        title = f' title="{_e(row.get("error"))}"' if key == "status" and row.get("error") else ""
        cells.append(f'<td data-v="{_e(sort_value)}"{title}>{text}</td>')
    return f'<tr class="s-{_e(row.get("status"))}">' + "".join(cells) + "</tr>"


class _Histogram:
    """Integer-valued counts: quantiles without keeping the values."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = defaultdict(int)
        self.n = 0

    def add(self, value: int) -> None:
        self.counts[value] += 1
        self.n += 1

    def quantile(self, q: float) -> int:
        target = q * (self.n - 1)
        seen = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen - 1 >= target:
                return value
        return max(self.counts)


def _distribution_table(title: str, groups: dict[str, _Histogram]) -> str:
    top = sorted(groups.items(), key=lambda kv: -kv[1].n)[:MAX_GROUPS]
    if not top:
        return ""
    vmax = max(h.quantile(0.9) for _, h in top) or 1
    rows = []
    for name, h in top:
        p10, p50, p90 = h.quantile(0.1), h.quantile(0.5), h.quantile(0.9)
        x10, x50, x90 = (200 * v / vmax for v in (p10, p50, p90))
        bar = (
            f'<svg width="210" height="14" role="img" aria-label="p10 {p10}, median {p50}, '
            f'p90 {p90}"><rect x="{x10:.1f}" y="3" width="{max(x90 - x10, 1):.1f}" height="8" '
            f'fill="#9ecae1"/><rect x="{x50:.1f}" y="0" width="2" height="14" '
            'fill="#08519c"/></svg>'
        )
        rows.append(
            f"<tr><td>{_e(name)}</td><td>{h.n}</td><td>{p10}</td><td>{p50}</td><td>{p90}</td>"
            f"<td>{bar}</td></tr>"
        )
    return (
        f"<h3>{_e(title)}</h3><table class=dist><thead><tr><th>group</th><th>modules</th>"
        "<th>p10</th><th>median</th><th>p90</th><th></th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _scatter(points: list[tuple[int, float]]) -> str:
    """Utilization (y) against allocated rank (x, log2 scale)."""
    if not points:
        return "<p>No adapter was audited.</p>"
    w, h, pad = 560, 260, 36
    ranks = [r for r, _ in points]
    lo, hi = math.log2(max(min(ranks), 1)), math.log2(max(max(ranks), 2))
    span = (hi - lo) or 1.0
    dots = []
    for r, u in points:
        x = pad + (w - 2 * pad) * (math.log2(max(r, 1)) - lo) / span
        y = h - pad - (h - 2 * pad) * min(max(u, 0.0), 1.0)
        dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#3182bd" fill-opacity=".5"/>')
    ticks = []
    for k in range(int(lo), math.ceil(hi) + 1):
        x = pad + (w - 2 * pad) * (k - lo) / span
        ticks.append(f'<text x="{x:.1f}" y="{h - 12}" font-size="10">{2**k}</text>')
    for u in (0.0, 0.5, 1.0):
        y = h - pad - (h - 2 * pad) * u
        ticks.append(f'<text x="2" y="{y + 3:.1f}" font-size="10">{u:.1f}</text>')
    return (
        f'<svg id="scatter" width="{w}" height="{h}" role="img" aria-label="utilization '
        f'against allocated rank"><rect x="{pad}" y="{pad}" width="{w - 2 * pad}" '
        f'height="{h - 2 * pad}" fill="none" stroke="#ccc"/>' + "".join(ticks + dots) + "</svg>"
    )


# Nothing but the page's own inline style and script may run or load: no network at view time.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_CSS = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
#adapters th{cursor:pointer;user-select:none;background:#f5f5f5;position:sticky;top:0}
#adapters th.asc::after{content:" \\25B2"}#adapters th.desc::after{content:" \\25BC"}
.totals{display:flex;gap:2em;flex-wrap:wrap}.totals div{font-size:1.3em}
.totals small{display:block;color:#666;font-size:.7em}tr.s-ok td:last-child{color:#2a2}
.charts{display:flex;gap:3em;flex-wrap:wrap}
"""

# Sorting and filtering over the rows already in the DOM; values come from data-v (numbers
# compared as numbers, empty cells last) and text from textContent: nothing is parsed as HTML.
_SCRIPT = """
(function(){
  var table=document.getElementById('adapters'),body=table.tBodies[0];
  var heads=table.tHead.rows[0].cells,state={col:-1,dir:1};
  function val(row,c){var v=row.cells[c].getAttribute('data-v');return v;}
  function sortBy(c,numeric){
    state.dir=(state.col===c)?-state.dir:(numeric?-1:1);state.col=c;
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=val(a,c),y=val(b,c);
      if(x===''&&y==='')return 0;if(x==='')return 1;if(y==='')return -1;
      if(numeric){return state.dir*(parseFloat(x)-parseFloat(y));}
      return state.dir*x.localeCompare(y);
    });
    rows.forEach(function(r){body.appendChild(r);});
    for(var i=0;i<heads.length;i++){heads[i].className='';}
    heads[c].className=state.dir>0?'asc':'desc';
  }
  for(var i=0;i<heads.length;i++){(function(c){
    heads[c].addEventListener('click',function(){sortBy(c,heads[c].getAttribute('data-num')==='1');});
  })(i);}
  var box=document.getElementById('filter'),status=document.getElementById('status');
  function apply(){
    var q=box.value.toLowerCase(),s=status.value,shown=0;
    Array.prototype.forEach.call(body.rows,function(r){
      var ok=(!q||r.textContent.toLowerCase().indexOf(q)>=0)&&(!s||r.className==='s-'+s);
      r.style.display=ok?'':'none';if(ok)shown++;
    });
    document.getElementById('shown').textContent=shown;
  }
  box.addEventListener('input',apply);status.addEventListener('change',apply);
})();
"""


@dataclass
class _Charts:
    """What the page shows above its table, gathered in one pass over the dataset."""

    points: list[tuple[int, float]] = field(default_factory=list)
    wasters: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    by_base: dict[str, _Histogram] = field(default_factory=lambda: defaultdict(_Histogram))
    by_type: dict[str, _Histogram] = field(default_factory=lambda: defaultdict(_Histogram))
    statuses: set[str] = field(default_factory=set)


def write_page(out: Path, census: Census, title: str) -> Path:
    """Write ``index.html`` from the dataset in ``out``; returns its path."""
    path = out / PAGE_FILE
    tmp = path.with_name(path.name + ".tmp")
    rows_file = out / ".scan" / "rows.html.tmp"
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    charts = _Charts()
    # The table's rows go to a side file as they are read: the page is assembled once the
    # charts above the table are known, without the rows ever being held together.
    with rows_file.open("w", encoding="utf-8") as rows_out:
        _read_adapters(out, charts, rows_out)
    _read_modules(out, charts)
    with tmp.open("w", encoding="utf-8") as page:
        page.write(_page_head(census, title, charts))
        with rows_file.open("r", encoding="utf-8") as rows_in:
            for line in rows_in:
                page.write(line)
        page.write(f"</tbody></table>\n<script>{_SCRIPT}</script>\n</body></html>\n")
    rows_file.unlink()
    os.replace(tmp, path)
    return path


def _read_adapters(out: Path, charts: _Charts, rows_out: TextIO) -> None:
    """Write each adapter's table row to ``rows_out``; gather the statuses, the scatter's
    points and the worst wasters (a bounded heap) into ``charts``."""
    import pyarrow.parquet as pq

    order = 0
    for batch in pq.ParquetFile(out / ADAPTERS_FILE).iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            rows_out.write(_row_html(row) + "\n")
            charts.statuses.add(row["status"])
            if row["status"] != "ok":
                continue
            if len(charts.points) < MAX_POINTS:
                charts.points.append((row["allocated_rank"], row["utilization_mean"]))
            order += 1
            item = (row["bytes_saved"] or 0, -order, row)
            if len(charts.wasters) < TOP_WASTERS:
                heapq.heappush(charts.wasters, item)
            else:
                heapq.heappushpop(charts.wasters, item)


def _read_modules(out: Path, charts: _Charts) -> None:
    """Count the modules' energy ranks by base model and by module type into ``charts``."""
    import pyarrow.parquet as pq

    modules = pq.ParquetFile(out / MODULES_FILE)
    for batch in modules.iter_batches(
        batch_size=8192, columns=["base_model", "module_type", "energy_rank"]
    ):
        data = batch.to_pydict()
        for base, mtype, k in zip(
            data["base_model"], data["module_type"], data["energy_rank"], strict=True
        ):
            charts.by_base[base or "(unknown)"].add(int(k))
            charts.by_type[mtype or "(unknown)"].add(int(k))


def _worst_rows(wasters: list[tuple[int, int, dict[str, Any]]]) -> str:
    """The rows of the wasters table, most bytes saved first (earlier adapters first on ties)."""
    worst = sorted(wasters, key=lambda t: (-t[0], -t[1]))
    return "".join(
        f"<tr><td>{_repo_link(r)}</td><td>{_e(r['adapter'])}</td><td>{r['allocated_rank']}</td>"
        f"<td>{r['suggested_r_median']}</td><td>{r['utilization_mean']:.3f}</td>"
        f"<td>{_e(_human(saved))}</td></tr>"
        for saved, _, r in worst
    )


def _page_head(census: Census, title: str, charts: _Charts) -> str:
    """Everything of the page before the adapters table's rows."""
    worst_rows = _worst_rows(charts.wasters)
    skipped = ", ".join(f"{_e(k)}: {v}" for k, v in census.skipped.items()) or "none"
    heads = "".join(
        f'<th data-num="{1 if num else 0}">{_e(label)}</th>' for _, label, num in COLUMNS
    )
    options = "".join(f'<option value="{_e(s)}">{_e(s)}</option>' for s in sorted(charts.statuses))
    util = "n/a" if census.utilization_mean is None else f"{census.utilization_mean:.3f}"
    total_rows = census.adapters + sum(census.skipped.values())
    points, by_base, by_type = charts.points, charts.by_base, charts.by_type
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head><body>
<h1>{_e(title)}</h1>
<section class="totals">
<div id="t-adapters">{census.adapters}<small>adapters audited</small></div>
<div id="t-repos">{census.repos}<small>repos</small></div>
<div id="t-params">{_e(_human(census.lora_params))}<small>LoRA parameters</small></div>
<div id="t-bytes">{_e(_human(census.bytes))}B<small>weights</small></div>
<div id="t-saved">{_e(_human(census.bytes_saved))}B<small>suggested ranks would save</small></div>
<div id="t-util">{util}<small>mean utilization</small></div>
</section>
<p>Not audited: {skipped}.</p>
<section class="charts"><div><h2>Utilization against allocated rank</h2>{_scatter(points)}</div>
<div><h2>Energy rank of modules</h2>{_distribution_table("by base model", by_base)}
{_distribution_table("by module type", by_type)}</div></section>
<h2>The adapters that waste most</h2>
<table id="wasters"><thead><tr><th>repo</th><th>adapter</th><th>r</th><th>suggested r</th>
<th>utilization</th><th>bytes saved</th></tr></thead><tbody>{worst_rows}</tbody></table>
<h2>Every adapter</h2>
<p><input id="filter" type="search" placeholder="filter rows" aria-label="filter rows">
<select id="status" aria-label="status"><option value="">any status</option>{options}</select>
<span id="shown">{total_rows}</span> of {total_rows} rows</p>
<table id="adapters"><thead><tr>{heads}</tr></thead><tbody>
"""
