"""README.md splicing: the gradience section between its markers, every other byte kept.

The body is spliced as text: what stands between ``<!-- gradience:start -->`` and
``<!-- gradience:end -->`` is replaced (markers kept), or the section is appended with its
markers. The YAML front matter is split off as text and only gains missing keys
(``library_name``, ``base_model``, ``tags``) as appended lines, checked by parsing the
result; nothing is re-serialized, so comments, key order, quoting, line endings (CRLF stays CRLF),
a BOM and trailing whitespace survive.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from gradience_hub.errors import CardError
from gradience_hub.publish.filters import is_repo_id, md

START = "<!-- gradience:start -->"
END = "<!-- gradience:end -->"
DEFAULT_TAGS = ("lora", "gradience")
HUB_URL = "https://huggingface.co"

# Tolerant marker matching (extra spaces inside the comment), so a hand-edited marker is still
# recognized as ours rather than appended to a second time.
START_RE = re.compile(r"<!--\s*gradience:start\s*-->")
END_RE = re.compile(r"<!--\s*gradience:end\s*-->")


def _newline(text: str) -> str:
    """The file's line ending, from its first line break."""
    i = text.find("\n")
    return "\r\n" if i > 0 and text[i - 1] == "\r" else "\n"


_FRONT_OPEN = re.compile(r"---[ \t]*\r?\n")
_FRONT_CLOSE = re.compile(r"^---[ \t]*(?:\r?\n|\Z)", re.MULTILINE)


def _split_front_matter(text: str) -> tuple[str, str, str, str] | None:
    """``(opening, yaml, closing, body)`` as text, or None without front matter."""
    opening = _FRONT_OPEN.match(text)
    if not opening:
        return None
    closing = _FRONT_CLOSE.search(text, opening.end())
    if not closing:
        return None
    return (
        text[: opening.end()],
        text[opening.end() : closing.start()],
        text[closing.start() : closing.end()],
        text[closing.end() :],
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


def _complete_yaml(yaml_text: str, base_model: str | None, tags: Sequence[str], nl: str) -> str:
    """``yaml_text`` with the missing ``library_name``, ``base_model`` and ``tags`` added as
    text; unchanged when the YAML does not parse, is not a mapping, or an edit would change
    anything else (checked by parsing the result)."""
    import yaml

    try:
        data = yaml.safe_load(yaml_text) if yaml_text.strip() else {}
    except yaml.YAMLError:
        return yaml_text
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return yaml_text
    expected = dict(data)
    new = yaml_text
    # Only missing KEYS are added: an existing tags list is the author's, and editing it
    # would change bytes outside the markers, which the card rule forbids.
    additions: list[str] = []
    if "library_name" not in data:
        additions.append("library_name: peft")
        expected["library_name"] = "peft"
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


def _splice_body(body: str, section: str, nl: str) -> str:
    starts = list(START_RE.finditer(body))
    ends = list(END_RE.finditer(body))
    inner = section.replace("\r\n", "\n").strip("\n").replace("\n", nl)
    inner = f"{nl}{inner}{nl}" if inner else nl
    if not starts and not ends:
        # Append after a blank line; the body's own bytes (even a missing final newline)
        # stay a prefix of the result.
        prefix = body if not body or body.endswith("\n") else body + nl
        if not prefix.endswith(("\n\n", "\n\r\n")):
            prefix += nl
        return f"{prefix}{START}{inner}{END}{nl}"
    hint = "fix the gradience markers in README.md (one start, then one end), then rerun"
    if len(starts) == 1 and len(ends) == 1:
        start, end = starts[0], ends[0]
        if start.end() <= end.start():
            return body[: start.end()] + inner + body[end.start() :]
        raise CardError(f"README.md has '{END}' before '{START}'", hint=hint)
    if starts and not ends:
        raise CardError(f"README.md has '{START}' but no '{END}'", hint=hint)
    if ends and not starts:
        raise CardError(f"README.md has '{END}' but no '{START}'", hint=hint)
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
) -> str:
    """Put ``section`` (a rendered card, without markers) into a README.md text.

    The text between ``<!-- gradience:start -->`` and ``<!-- gradience:end -->`` is replaced
    (markers kept); without markers the section is appended, with markers, at the end. Every
    byte outside the markers is kept: the YAML front matter is split off as text and only gains
    the missing ``library_name: peft``, ``base_model`` (when it is a Hub repo id; a local path
    is not) and ``tags`` entries; line endings (CRLF stays CRLF), a BOM and trailing whitespace
    are preserved. A README without front matter gets one; ``None`` (no README) gets front
    matter and a short body. Splicing the same section twice gives the same text.

    Read and write the file as bytes (or with ``newline=""``) so CRLF survives; see
    :func:`splice_readme_file`.

    Raises CardError (exit 2) for broken markers (a start without an end, an end before the
    start, two sections) or a section that itself contains a marker.
    """
    if START_RE.search(section) or END_RE.search(section):
        raise CardError(
            "the section to splice contains a gradience marker",
            hint="pass the rendered card without <!-- gradience:start/end -->",
        )
    tags = [str(t) for t in tags]
    if readme_text is None:
        yaml_text = _complete_yaml("", base_model, tags, "\n")
        intro = "A [PEFT](https://github.com/huggingface/peft) LoRA adapter"
        if is_repo_id(base_model):
            intro += f" for [{md(base_model)}]({HUB_URL}/{base_model})"
        body = f"\n# LoRA adapter\n\n{intro}.\n"  # a blank line after the front matter
        return f"---\n{yaml_text}---\n" + _splice_body(body, section, "\n")
    bom = "\ufeff" if readme_text.startswith("\ufeff") else ""
    text = readme_text[len(bom) :]
    nl = _newline(text)
    parts = _split_front_matter(text)
    if parts is None:
        # No front matter: add one in front; the original text follows byte for byte.
        yaml_text = _complete_yaml("", base_model, tags, nl)
        front = f"---{nl}{yaml_text}---{nl}"
        return bom + front + _splice_body(text, section, nl)
    opening, yaml_text, closing, body = parts
    body = _splice_body(body, section, nl)
    yaml_text = _complete_yaml(yaml_text, base_model, tags, nl)
    return bom + opening + yaml_text + closing + body


def splice_readme_file(
    path: str | os.PathLike[str],
    section: str,
    *,
    base_model: str | None,
    tags: Sequence[str] = DEFAULT_TAGS,
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
    new = splice_readme(text, section, base_model=base_model, tags=tags).encode("utf-8")
    if new == old:
        return False
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(new)
    os.replace(tmp, target)
    return True
