"""The card's ``model-index`` block rewritten as text, every other byte of the card kept.

``str(ModelCard(text))`` would re-serialise the whole front matter (comments dropped, lists
reflowed), so, as for the section (:mod:`gradience_hub.publish.readme`), the YAML is edited as
text: only the top-level ``model-index:`` key's lines are replaced (or appended), and the result
is parsed back to prove that nothing else changed. The block's content comes from
:func:`gradience_hub.hub.evals.merge_model_index` (huggingface_hub's own types and serialiser,
other tools' results kept).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from gradience_hub.errors import CardError
from gradience_hub.hub.evals import merge_model_index
from gradience_hub.publish.readme import HUB_YAML_BLOCK
from gradience_hub.record.hub_eval import HubEvalClaim

_KEY = re.compile(r"""^(?:model-index|"model-index"|'model-index')[ \t]*:""")


def _block(lines: list[str]) -> tuple[int, int] | None:
    """``[start, end)`` of the top-level model-index key's lines, or None."""
    for i, line in enumerate(lines):
        if _KEY.match(line):
            end = i + 1
            # the value: indented lines, a compact top-level list ("- "), blank lines inside
            while end < len(lines) and (
                lines[end][:1] in (" ", "\t", "-") or not lines[end].strip()
            ):
                end += 1
            while end > i + 1 and not lines[end - 1].strip():
                end -= 1  # trailing blank lines belong to what follows
            return i, end
    return None


def _load(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:
        raise CardError(
            "README.md's YAML front matter does not parse",
            hint="fix the metadata between the '---' lines (the Hub rejects it too)",
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CardError("README.md's YAML front matter is not a mapping of keys")
    return data


def set_model_index(card: str, claim: HubEvalClaim) -> str:
    """``card`` with its model-index holding our result for ``claim`` (others' kept)."""
    match = HUB_YAML_BLOCK.match(card)
    nl = "\r\n" if "\r\n" in card[:4096] else "\n"
    if match is None:
        index = merge_model_index(None, claim)
        block = yaml.safe_dump({"model-index": index}, sort_keys=False, allow_unicode=True)
        return f"---{nl}{block.replace(chr(10), nl)}---{nl}" + card
    yaml_text = match.group(2)
    data = _load(yaml_text)
    index = merge_model_index(data.get("model-index"), claim)
    block = yaml.safe_dump({"model-index": index}, sort_keys=False, allow_unicode=True)
    lines = yaml_text.splitlines(keepends=True)
    span = _block(lines)
    new_lines = block.replace("\n", nl).splitlines(keepends=True)
    if span is None:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += nl
        lines += new_lines
    else:
        lines[span[0] : span[1]] = new_lines
    new_yaml = "".join(lines)
    if not yaml_text.endswith(("\n", "\r")) and new_yaml.endswith(nl):
        new_yaml = new_yaml[: -len(nl)]
    expected = {**data, "model-index": index}
    if _load(new_yaml) != expected:
        raise CardError(
            "cannot update the card's model-index without changing other metadata",
            hint="move the model-index block to the top level of the card's metadata",
        )
    return card[: match.start(2)] + new_yaml + card[match.end(2) :]
