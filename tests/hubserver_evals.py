"""The Hub stand-in's ``evalResults``: the ``.eval_results/*.yaml`` files of a model repo as the
Hub's model API returns them (huggingface_hub 2.4, ``hf_api.ModelInfo``: ``evalResults`` is
parsed by ``parse_eval_result_entries``, which reads an item's ``data`` or the item itself and
skips items with ``error``; the Hub answers an invalid file as ``{"error", "filename"}``).

The Hub validates each file against its eval-results schema (hub-docs ``eval_results.yaml``):
a YAML list of entries, each with ``dataset.id``, ``dataset.task_id`` and ``value``; ``source``
needs ``url``. A file that fails is one error item, its valid siblings still count.

:func:`eval_results` is what the stand-in's model info answers for ``evalResults`` (only when
``expand`` asks for it, as the Hub returns expandable properties; tests/hubserver.py).
"""

from __future__ import annotations

from typing import Any

import yaml

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
