"""README splicing, property-tested: for generated READMEs (front matter forms, code blocks and
inline code that quote the markers, live sections anywhere, LF/CRLF/CR line endings, a BOM)
every byte outside the live markers is unchanged and a second run changes nothing."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gradience_hub.errors import CardError
from gradience_hub.markers import SECTION_END, SECTION_START
from gradience_hub.publish.readme import splice_readme

SECTION = "## Gradience\n\nutilization 14.5% of rank 8"
# Front matter that already holds every key splice_readme would add: no byte of it may change.
COMPLETE_YAML = "library_name: peft\nbase_model: org/base\ntags:\n- lora\n- gradience\n"
WORDS = [
    "text",
    "*emphasis*",
    "# not a heading mid-line",
    "`inline code`",
    f"`{SECTION_START}`",
    f"``{SECTION_END} in code``",
    "<b>html</b>",
    "<!-- other-tool:start -->",
    "trailing spaces   ",
    "\t",
]


@st.composite
def paragraph(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=4), max_size=3))
    return "\n".join(" ".join(["word", *line]) for line in lines) or "word"


@st.composite
def code_block(draw: st.DrawFn) -> str:
    inner = draw(
        st.lists(
            st.sampled_from(
                [SECTION_START, SECTION_END, "<!--gradience:start-->", "code = 1", "", "```x"]
            ),
            max_size=4,
        )
    )
    if draw(st.booleans()):  # fenced, with backticks or tildes
        char = draw(st.sampled_from("`~"))
        fence = char * draw(st.integers(3, 5))
        body = [line for line in inner if not line.startswith(char * 3)]
        return "\n".join([f"{fence}{draw(st.sampled_from(['', 'markdown']))}", *body, fence])
    return "\n".join("    " + (line or "x") for line in inner or [SECTION_START])  # indented


@st.composite
def readme(draw: st.DrawFn) -> tuple[str, int | None]:
    """(README text, the offset of its live section's start marker, or None)."""
    blocks = draw(st.lists(st.one_of(paragraph(), code_block()), max_size=6))
    live = draw(st.booleans())
    at = 0
    if live:
        at = draw(st.integers(0, len(blocks)))
        old = draw(st.sampled_from(["", "old section", f"old\n\n```\n{SECTION_END[:5]}\n```"]))
        section = f"{SECTION_START}\n{old}\n{SECTION_END}" if old else SECTION_START + SECTION_END
        blocks.insert(at, section)
    body = "\n\n".join(blocks) + draw(st.sampled_from(["", "\n", "\n\n"]))
    front = draw(
        st.sampled_from(
            [
                "",
                f"---\n{COMPLETE_YAML}---\n",
                f"\n\n---\n{COMPLETE_YAML}---\n",  # blank lines before: the Hub still reads it
                f"---\n# a comment\n{COMPLETE_YAML}license: mit  \n---\n\n",
            ]
        )
    )
    nl = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    text = bom + (front + body).replace("\n", nl)
    if not live:
        return text, None
    before = "\n\n".join(blocks[:at]) + ("\n\n" if at else "")
    return text, len(bom + (front + before).replace("\n", nl))


@settings(max_examples=200, deadline=None)
@given(readme())
def test_bytes_outside_the_live_markers_never_change(case: tuple[str, int | None]) -> None:
    text, live = case
    try:
        out = splice_readme(text, SECTION, base_model="org/base")
    except CardError as exc:
        # The one refusal a generated card may earn: front matter closed on a lone CR line,
        # which the Hub's own regex does not read as front matter.
        assert "\r\n" not in text and "\r" in text and "---" in text, exc.message
        return
    assert splice_readme(out, SECTION, base_model="org/base") == out  # a second run: no change
    plain = text.removeprefix("\ufeff")
    has_front = plain.lstrip("\r\n").startswith("---")
    original = text
    if not has_front:
        # a card without front matter gets one in front; the card follows byte for byte
        bom = "\ufeff" if text.startswith("\ufeff") else ""
        assert out.startswith(bom + "---")
        head, sep, rest = out[len(bom) :].partition("---")
        assert head == "" and sep
        _, sep, rest = rest.partition("---")
        assert sep
        # the added block's own line ending (LF in a lone-CR card: the Hub's regex needs it)
        yaml_nl = re.match(r"\r\n|\r|\n", out[len(bom) + 3 :])
        assert yaml_nl is not None
        rest = rest.removeprefix(yaml_nl.group(0))
        out_body, original = rest, plain
        if live is not None:
            live -= len(text) - len(plain)
    else:
        out_body = out
    if live is not None:
        assert original[live:].startswith(SECTION_START)
        i = live + len(SECTION_START)
        j = original.index(SECTION_END, i)
        k = i
        assert out_body[:k] == original[:i]
        assert out_body.endswith(original[j:])
        assert "utilization 14.5%" in out_body[k : len(out_body) - len(original) + j]
    else:
        assert out_body.startswith(original)
        tail = out_body[len(original) :]
        assert tail.lstrip("\r\n").startswith(SECTION_START)
        assert tail.rstrip("\r\n").endswith(SECTION_END)
        assert tail.count(SECTION_START) == 1
