"""README.md splicing: the gradience section between its markers, every other byte kept.

The body is spliced as text: what stands between ``<!-- gradience:start -->`` and
``<!-- gradience:end -->`` is replaced (markers kept), or the section is appended with its
markers. The YAML front matter is split off as text and only gains missing keys
(``library_name``, ``base_model``, ``tags``) as appended lines, checked by parsing the
result; nothing is re-serialized, so comments, key order, quoting, line endings (CRLF stays CRLF),
a BOM and trailing whitespace survive.

Two rules decide what counts. Front matter is what the Hub reads as front matter (its own
regex, :data:`HUB_YAML_BLOCK`); a block the Hub would not read (closed by ``...``) or YAML that
does not parse is refused, never doubled. Markers count only outside code: a README that shows
the markers in a fenced or indented code block, or an inline code span, keeps that example.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from gradience_hub._io import write_file
from gradience_hub.errors import CardError
from gradience_hub.markdown import is_repo_id, md
from gradience_hub.markers import (
    SECTION_END,
    SECTION_END_RE,
    SECTION_START,
    SECTION_START_RE,
)

DEFAULT_TAGS = ("lora", "gradience")
HUB_URL = "https://huggingface.co"

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|\Z)")


def _newline(text: str) -> str:
    """The file's line ending, from its first line break (CRLF, LF or a lone CR)."""
    found = re.search(r"\r\n|\r|\n", text)
    return found.group(0) if found else "\n"


# The Hub's own front-matter rule: huggingface_hub.repocard.REGEX_YAML_BLOCK ("exact same regex
# as in the Hub server"): leading whitespace (blank lines) allowed before the opening ``---``,
# closed by the first ``---`` line. A README is read the way the Hub reads it, or refused.
HUB_YAML_BLOCK = re.compile(
    r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))"
)
# What a person may have meant as front matter: YAML's own end-of-document ``...`` also closes
# it (Jekyll, Pandoc), and any line ending. When this matches but the Hub's rule does not read
# the same block, the Hub would show the metadata as body text: refuse rather than add a
# second block in front of it.
_LENIENT_YAML_BLOCK = re.compile(
    r"^(\s*---[ \t]*(?:\r\n|\r|\n))((?:[\S\s]*?(?:\r\n|\r|\n))??)"
    r"((?:---|\.\.\.)[ \t]*(?:\r\n|\r|\n|$))"
)


def _split_front_matter(text: str) -> tuple[str, str, str, str] | None:
    """``(opening, yaml, closing, body)`` as text, or None without front matter.

    ``yaml`` keeps its last line break, so appending a key keeps the file's line endings.
    Raises CardError for front matter the Hub would not read as such (closed by ``...``,
    a lone-CR closing line, spaces after the opening ``---``).
    """
    hub = HUB_YAML_BLOCK.match(text)
    lenient = _LENIENT_YAML_BLOCK.match(text)
    if hub is None and lenient is None:
        return None
    if hub is None or (lenient is not None and lenient.end() != hub.end()):
        assert lenient is not None
        closing = lenient.group(3).strip()
        raise CardError(
            f"README.md's YAML front matter is closed by '{closing}', which the Hub does not "
            "read as metadata"
            if closing != "---"
            else "README.md's YAML front matter is not in the form the Hub reads",
            hint="start README.md with a '---' line and close the metadata with a '---' line",
        )
    eol = re.match(r"\r\n|\r|\n", hub.group(3))
    assert eol is not None
    return (
        hub.group(1),
        hub.group(2) + eol.group(0),
        hub.group(3)[eol.end() :],
        text[hub.end() :],
    )


def _yaml_scalar(value: str) -> str:
    """``value`` as a YAML scalar: plain when that reads back identically, else double-quoted
    (JSON strings are valid YAML double-quoted scalars)."""
    import yaml

    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", value):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)


# The card's library_name for each adapter format (gradience_hub.adapter's `format`): a PEFT
# adapter is loaded by peft, a diffusers LoRA file by diffusers; a kohya-ss file is loaded by
# several UIs and diffusers' converter, so no library is claimed for it.
LIBRARY_OF_FORMAT: dict[str, str | None] = {"peft": "peft", "diffusers": "diffusers", "kohya": None}


def library_for(adapter_format: str | None) -> str | None:
    """The ``library_name`` a card of this adapter format gets when it declares none."""
    return LIBRARY_OF_FORMAT.get(adapter_format or "peft")


def _complete_yaml(
    yaml_text: str,
    base_model: str | None,
    tags: Sequence[str],
    nl: str,
    library_name: str | None = "peft",
) -> str:
    """``yaml_text`` with the missing ``library_name``, ``base_model`` and ``tags`` added as
    text; unchanged when an edit would change anything else (checked by parsing the result).
    Raises CardError when the YAML does not parse or is not a mapping: the Hub refuses such a
    card, and publishing on top of it would hide the author's problem."""
    import yaml

    try:
        data = yaml.safe_load(yaml_text) if yaml_text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1} of the front matter)" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise CardError(
            f"README.md's YAML front matter does not parse: {problem}{where}",
            hint="fix the metadata between the '---' lines (the Hub rejects it too)",
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CardError(
            f"README.md's YAML front matter is a {type(data).__name__}, not a mapping of keys",
            hint="the metadata between the '---' lines must be 'key: value' lines",
        )
    expected = dict(data)
    new = yaml_text
    # Only missing KEYS are added: an existing tags list is the author's, and editing it
    # would change bytes outside the markers, which the card rule forbids.
    additions: list[str] = []
    if "library_name" not in data and library_name:
        additions.append(f"library_name: {_yaml_scalar(library_name)}")
        expected["library_name"] = library_name
    if "base_model" not in data and is_repo_id(base_model):
        assert base_model is not None
        additions.append(f"base_model: {_yaml_scalar(base_model)}")
        expected["base_model"] = base_model
    if "tags" not in data and tags:
        additions.append("tags:")
        additions += [f"- {_yaml_scalar(t)}" for t in tags]
        expected["tags"] = list(tags)
    if additions:
        if new and not new.endswith("\n"):
            new += nl
        new += "".join(line + nl for line in additions)
    if new == yaml_text:
        return yaml_text
    try:
        if yaml.safe_load(new) == expected:
            return new
    except yaml.YAMLError:
        pass
    return yaml_text


# --------------------------------------------------------------------------- code in Markdown

# CommonMark's fences: up to 3 spaces, then 3+ backticks (an info string without backticks) or
# 3+ tildes; closed by a fence of the same character at least as long, with nothing after it.
_FENCE_OPEN = re.compile(r"( {0,3})(`{3,}(?=[^`]*$)|~{3,})")
_ATX_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")
_BACKTICKS = re.compile(r"(?<!\\)(?:\\\\)*(`+)")


def _indent(line: str) -> int:
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += 4 - width % 4
        else:
            break
    return width


def _inline_code(text: str, offset: int, spans: list[tuple[int, int]]) -> None:
    """Code spans of one paragraph: a backtick run up to the next run of the same length."""
    runs = [(m.start(1), m.end(1)) for m in _BACKTICKS.finditer(text)]
    i = 0
    while i < len(runs):
        start, end = runs[i]
        n = end - start
        close = next((j for j in range(i + 1, len(runs)) if runs[j][1] - runs[j][0] == n), None)
        if close is None:
            i += 1  # an unmatched run is literal text
            continue
        spans.append((offset + start, offset + runs[close][1]))
        i = close + 1


def code_spans(body: str) -> tuple[list[tuple[int, int]], int | None]:
    """Where ``body`` holds code, as ``[start, end)`` offsets: fenced and indented code blocks
    and inline code spans (CommonMark's rules, simplified where no marker can hide). Also the
    offset of a fence that is never closed (it runs to the end of the document), or None."""
    spans: list[tuple[int, int]] = []
    fence: tuple[str, int, int] | None = None  # (character, length, start offset)
    paragraph: tuple[int, int] | None = None
    indented = False

    def flush() -> None:
        nonlocal paragraph
        if paragraph is not None:
            _inline_code(body[paragraph[0] : paragraph[1]], paragraph[0], spans)
            paragraph = None

    pos = 0
    for match in _LINE.finditer(body):
        start, end = match.start(), match.end()
        if start == end:
            break
        line = match.group(0).rstrip("\r\n")
        pos = end
        if fence is not None:
            char, length, fence_start = fence
            stripped = line.strip()
            if _indent(line) < 4 and len(stripped) >= length and stripped == char * len(stripped):
                spans.append((fence_start, end))
                fence = None
            continue
        opened = _FENCE_OPEN.match(line)
        if opened:
            flush()
            fence = (opened.group(2)[0], len(opened.group(2)), start)
            indented = False
            continue
        if not line.strip():
            flush()
            continue
        if _indent(line) >= 4 and (paragraph is None or indented):
            spans.append((start, end))
            indented = True
            continue
        indented = False
        if _ATX_HEADING.match(line):
            flush()
            _inline_code(body[start:end], start, spans)
            continue
        paragraph = (paragraph[0] if paragraph else start, end)
    flush()
    unclosed = None
    if fence is not None:
        spans.append((fence[2], max(pos, len(body))))
        unclosed = fence[2]
    return spans, unclosed


def _live(pattern: re.Pattern[str], body: str, spans: list[tuple[int, int]]) -> list:
    """Matches of ``pattern`` outside code: a README that documents gradience-hub quotes the
    markers in code, and those quotes are the author's text, not our section."""
    found = pattern.finditer(body)
    return [m for m in found if not any(a < m.end() and m.start() < b for a, b in spans)]


def _splice_body(body: str, section: str, nl: str) -> str:
    spans, unclosed = code_spans(body)
    starts = _live(SECTION_START_RE, body, spans)
    ends = _live(SECTION_END_RE, body, spans)
    inner = section.replace("\r\n", "\n").strip("\n").replace("\n", nl)
    inner = f"{nl}{inner}{nl}" if inner else nl
    if not starts and not ends:
        if unclosed is not None:
            line = body.count("\n", 0, unclosed) + 1
            raise CardError(
                f"README.md has a code fence that is never closed (body line {line}): a "
                "section appended after it would be shown as code",
                hint="close the code block, then rerun",
            )
        # Append after a blank line; the body's own bytes (even a missing final newline)
        # stay a prefix of the result.
        prefix = body if not body or body.endswith(("\n", "\r")) else body + nl
        if not re.search(r"(?:\r\n|\r|\n)(?:\r\n|\r|\n)\Z", prefix):
            prefix += nl
        return f"{prefix}{SECTION_START}{inner}{SECTION_END}{nl}"
    hint = "fix the gradience markers in README.md (one start, then one end), then rerun"
    if len(starts) == 1 and len(ends) == 1:
        start, end = starts[0], ends[0]
        if start.end() <= end.start():
            return body[: start.end()] + inner + body[end.start() :]
        raise CardError(f"README.md has '{SECTION_END}' before '{SECTION_START}'", hint=hint)
    if starts and not ends:
        raise CardError(f"README.md has '{SECTION_START}' but no '{SECTION_END}'", hint=hint)
    if ends and not starts:
        raise CardError(f"README.md has '{SECTION_END}' but no '{SECTION_START}'", hint=hint)
    raise CardError(
        f"README.md has {len(starts)} gradience start and {len(ends)} end markers; "
        "expected one section",
        hint=hint,
    )


def splice_readme(
    readme_text: str | None,
    section: str,
    *,
    base_model: str | None,
    tags: Sequence[str] = DEFAULT_TAGS,
    library_name: str | None = "peft",
) -> str:
    """Put ``section`` (a rendered card, without markers) into a README.md text.

    The text between ``<!-- gradience:start -->`` and ``<!-- gradience:end -->`` is replaced
    (markers kept); without markers the section is appended, with markers, at the end. Every
    byte outside the markers is kept: the YAML front matter is split off as text and only gains
    the missing ``library_name`` (``peft`` unless told otherwise: :func:`library_for`),
    ``base_model`` (when it is a Hub repo id; a local path is not) and ``tags`` entries; line
    endings (CRLF stays CRLF), a BOM and trailing whitespace are preserved. A README without
    front matter gets one; ``None`` (no README) gets front matter and a short body. Splicing
    the same section twice gives the same text.

    Read and write the file as bytes (or with ``newline=""``) so CRLF survives; see
    :func:`splice_readme_file`.

    Raises CardError (exit 2) for broken markers (a start without an end, an end before the
    start, two sections) or a section that itself contains a marker.
    """
    if SECTION_START_RE.search(section) or SECTION_END_RE.search(section):
        raise CardError(
            "the section to splice contains a gradience marker",
            hint="pass the rendered card without <!-- gradience:start/end -->",
        )
    tags = [str(t) for t in tags]
    if readme_text is None:
        yaml_text = _complete_yaml("", base_model, tags, "\n", library_name)
        intro = "A [PEFT](https://github.com/huggingface/peft) LoRA adapter"
        if is_repo_id(base_model):
            intro += f" for [{md(base_model)}]({HUB_URL}/{base_model})"
        body = f"\n# LoRA adapter\n\n{intro}.\n"  # a blank line after the front matter
        return f"---\n{yaml_text}---\n" + _splice_body(body, section, "\n")
    bom = "\ufeff" if readme_text.startswith("\ufeff") else ""
    text = readme_text[len(bom) :]
    parts = _split_front_matter(text)
    if parts is None:
        # No front matter: add one in front; the original text follows byte for byte. The
        # Hub's rule needs a LF after the closing '---', so a lone-CR file gets LF front matter.
        nl = _newline(text)
        yaml_nl = "\n" if nl == "\r" else nl
        yaml_text = _complete_yaml("", base_model, tags, yaml_nl, library_name)
        front = f"---{yaml_nl}{yaml_text}---{yaml_nl}"
        return bom + front + _splice_body(text, section, nl)
    opening, yaml_text, closing, body = parts
    # The body's own line ending (the front matter may differ: see above).
    body_nl = _newline(body) if re.search(r"[\r\n]", body) else _newline(text)
    body = _splice_body(body, section, body_nl)
    yaml_text = _complete_yaml(yaml_text, base_model, tags, _newline(opening), library_name)
    return bom + opening + yaml_text + closing + body


def splice_readme_file(
    path: str | os.PathLike[str],
    section: str,
    *,
    base_model: str | None,
    tags: Sequence[str] = DEFAULT_TAGS,
    library_name: str | None = "peft",
) -> bool:
    """Splice ``section`` into the README.md at ``path`` (created when missing).

    Writes atomically and only when the bytes change; returns whether it wrote. Nothing is
    written when splicing fails (CardError).
    """
    target = Path(path)
    try:
        old: bytes | None = target.read_bytes()
    except FileNotFoundError:
        old = None
    try:
        text = None if old is None else old.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CardError(f"{target} is not UTF-8 text: {exc}", hint="re-save it as UTF-8") from None
    new = splice_readme(
        text, section, base_model=base_model, tags=tags, library_name=library_name
    ).encode("utf-8")
    if new == old:
        return False
    write_file(target, new)
    return True
