"""The one check of a config mapping against the dataclass it becomes (bench configs, the serve
config, merge-audit thresholds).

A config is a dataclass whose ``__post_init__`` checks each value's type and range and names
the key; :func:`config_fields` checks what the dataclass cannot see: that the document is a
mapping, that every key is one of its fields, and that every field without a default is
there. Each failure is a :class:`~gradience_hub.errors.ConfigError` (exit 2) naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gradience_hub.errors import ConfigError


def config_fields(
    cls: type, data: Any, where: str, *, label: str, noun: str = "key"
) -> dict[str, Any]:
    """``data`` (a parsed YAML/JSON value) as the keyword arguments of the dataclass ``cls``.

    ``where`` is the path of ``data`` in the document (``""`` at its top, ``model``,
    ``repos[0]``); ``label`` starts every message (``bench config``, ``serve config``, a file
    name); ``noun`` names what a key is (``key``, ``threshold``). Fields whose names start
    with ``_`` and fields with ``init=False`` are not keys. The hint of a missing field is its
    ``metadata["help"]`` (or the class's ``_docs`` entry).
    """
    shown = where or "the config"
    if not isinstance(data, dict):
        raise ConfigError(
            f"{label}: {shown} must be a mapping (key: value lines), got {data!r}",
            hint=f"fix '{shown}' in the config file",
            key=where or None,
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    prefix = f"{where}." if where else ""
    for name in data:
        if name not in fields:
            under = f" of '{where}'" if where else ""
            raise ConfigError(
                f"{label}: unknown {noun} {prefix}{name}",
                hint=f"the {noun}s{under} are: {', '.join(fields)}",
                key=f"{prefix}{name}",
            )
    docs = getattr(cls, "_docs", {})
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in data:
            doc = f.metadata.get("help") or docs.get(name)
            under = f" under '{where}:'" if where else ""
            raise ConfigError(
                f"{label}: missing required {noun} {prefix}{name}",
                hint=f"add '{name}:'{under}" + (f" ({doc})" if doc else ""),
                key=f"{prefix}{name}",
            )
    return dict(data)
