"""The Hub stand-in's ``evalResults``: the ``.eval_results/*.yaml`` files of a model repo as the
Hub's model API returns them (huggingface_hub 2.4, ``hf_api.ModelInfo``: ``evalResults`` is
parsed by ``parse_eval_result_entries``, which reads an item's ``data`` or the item itself and
skips items with ``error``; the Hub answers an invalid file as ``{"error", "filename"}``).

The Hub validates each file against its eval-results schema (hub-docs ``eval_results.yaml``):
a YAML list of entries, each with ``dataset.id``, ``dataset.task_id`` and ``value``; ``source``
needs ``url``. A file that fails is one error item, its valid siblings still count.

:func:`install` adds the field to the stand-in's model info (only when ``expand`` asks for
``evalResults``, as the Hub returns expandable properties).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests import hubserver as hs

EVAL_DIR = ".eval_results/"


def _entry_error(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "an entry is not a mapping"
    dataset = entry.get("dataset")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("id"), str):
        return "dataset.id is required"
    if not isinstance(dataset.get("task_id"), str):
        return "dataset.task_id is required"
    if "value" not in entry or isinstance(entry["value"], (dict, list)):
        return "value is required and must be a scalar"
    source = entry.get("source")
    if source is not None and (not isinstance(source, dict) or "url" not in source):
        return "source.url is required when source is given"
    return None


def eval_results(files: dict[str, bytes]) -> list[dict[str, Any]]:
    """The ``evalResults`` items of a commit's files."""
    items: list[dict[str, Any]] = []
    for path in sorted(files):
        if not (path.startswith(EVAL_DIR) and path.endswith((".yaml", ".yml"))):
            continue
        try:
            data = yaml.safe_load(files[path].decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError):
            items.append({"error": "invalid YAML", "filename": path})
            continue
        if not isinstance(data, list):
            items.append({"error": "the file must be a list of entries", "filename": path})
            continue
        errors = [e for e in map(_entry_error, data) if e]
        if errors:
            items.append({"error": errors[0], "filename": path})
            continue
        items += [{"filename": path, "data": entry} for entry in data]
    return items


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the stand-in's model info answer ``evalResults`` when it is expanded."""
    real = hs.HubServer._model_info_json

    def model_info_json(self: Any, repo: Any, sha: str, query: dict[str, list[str]]) -> dict:
        info = real(self, repo, sha, query)
        expand = [*query.get("expand", []), *query.get("expand[]", [])]
        if "evalResults" in expand:
            info["evalResults"] = eval_results(repo.commits[sha].files)
        return info

    monkeypatch.setattr(hs.HubServer, "_model_info_json", model_info_json)
