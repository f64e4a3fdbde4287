"""The merge audit as Markdown, through the package's sandboxed, escaping templates."""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any

from markupsafe import Markup

from gradience_hub.markdown import md, number
from gradience_hub.merge_audit.report import MergeAuditReport
from gradience_hub.publish.render import render_document

TEMPLATE = "merge_audit.md.j2"


def fixed(value: Any, digits: int = 3) -> Markup:
    """A number with ``digits`` decimals (``-1.000``), an em dash for None; a formatted number
    cannot carry Markdown, anything else is escaped."""
    x = number(value)
    return md(value) if x is None else Markup(f"{x:.{digits}f}")


ICONS = {"independent": "✅", "redundant": "ℹ️", "dominated": "⚠️", "conflicting": "❌"}


def source_name(source: dict[str, Any]) -> str:
    """``org/name @ 3f2a1c9`` for a Hub source; a local directory's last component only (the
    full path would publish this machine's layout and user name)."""
    if source.get("kind") == "hub":
        return str(source.get("display"))
    return f"{PurePath(str(source.get('path') or '')).name} (local)"


def format_markdown(
    report: MergeAuditReport, template_dir: str | os.PathLike[str] | None = None
) -> str:
    """Render ``merge_audit.md.j2`` (a ``template_dir`` is tried first) for ``report``."""
    data = report.to_dict()
    variables = {
        "report": data,
        "summary": data["summary"],
        "pairs": data["pairs"],
        "modules": data["modules"],
        "sources": [{"label": s["label"], "name": source_name(s)} for s in data["sources"]],
        "icons": ICONS,
        "fixed": fixed,
    }
    return render_document(TEMPLATE, variables, template_dir=template_dir)
