"""Compressed kohya-ss and diffusers LoRA files, written in the layout they were read in.

The factors are truncated exactly as for a PEFT adapter (:mod:`gradience_hub.compress.write`:
the scale is kept, the factors carry the truncated unscaled ``B @ A``, conv kernels keep their
shapes); what differs is where the scale lives:

- **kohya-ss** (and diffusers files converted from kohya, which keep ``.alpha`` tensors): the
  scale is ``alpha / r`` per module (sd-scripts ``networks/lora.py``, ``LoRAModule.__init__``:
  ``self.scale = alpha / self.lora_dim``, ``lora_dim`` being ``lora_down``'s rows; a missing
  alpha means ``alpha = lora_dim``). At the new rank ``k`` we write ``alpha = scale * k``. A
  module without ``.alpha`` had scale 1 and keeps it without one (no new keys).
- **diffusers**: scale 1 unless the header's ``lora_adapter_metadata`` (the LoraConfig diffusers
  saved, per component) says otherwise; it is rewritten for the new ranks with the same rule as
  ``adapter_config.json`` (:func:`gradience_hub.compress.plan.build_config`), keyed by the
  module names inside the component, which is what diffusers hands to peft. Without metadata
  diffusers infers every rank from ``lora_B``'s columns, so no header change is needed.

The file keeps its name and its other header entries, so it loads where the input loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from gradience_hub.adapter import Adapter
from gradience_hub.adapter.lorafile import flatten_metadata
from gradience_hub.adapter.safetensors_io import Encoded
from gradience_hub.compress.plan import build_config, config_number

# kohya's loader reads alpha as float32 (networks/lora.py: alpha.detach().float()); diffusers
# and our reader read it as a Python float.
_ALPHA_DTYPES = (np.float32, np.float64)
# sd-scripts' hashes of the tensors (train_util.precalculate_safetensors_hashes)
_STALE_HASHES = ("sshs_model_hash", "sshs_legacy_hash")


def alpha_tensor(alpha: float, stored: np.ndarray) -> np.ndarray:
    """``alpha`` as a 0-d tensor: in the dtype the input stored it in when that holds it
    exactly, else the narrowest of float32/float64 that does (float64 as the last resort)."""
    for dtype in (stored.dtype, *_ALPHA_DTYPES):
        value = np.asarray(alpha).astype(dtype)
        if float(value) == alpha:
            return value.reshape(stored.shape)
    return np.asarray(alpha, dtype=np.float64).reshape(stored.shape)


def rewrite(
    adapter: Adapter,
    tensors: dict[str, np.ndarray | Encoded],
    want: Mapping[str, tuple[int, float]],
) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """Update ``tensors``' alpha entries in place for the new ranks ``want`` (module -> (k,
    alpha)); return the new header metadata, a config-like summary and warnings."""
    layout = adapter.layout
    assert layout is not None
    warnings: list[str] = []
    float64_alphas: list[str] = []
    for name, (_, alpha) in want.items():
        key = layout.alphas.get(name)
        if key is None:
            continue
        value = alpha_tensor(float(alpha), adapter.tensor(key))
        if value.dtype == np.float64 and adapter.dtype_of(key) != "f64":
            float64_alphas.append(name)
        tensors[key] = np.require(value, requirements="C")
    if float64_alphas:
        warnings.append(
            f"{len(float64_alphas)} module(s) (first: {float64_alphas[0]}) need a float64 alpha "
            "to keep their scale exactly; kohya's loader reads alpha as float32 (relative "
            "scale change below 6e-8 there)"
        )
    header = adapter.header_metadata()
    ranks = {k for k, _ in want.values()}
    if "ss_network_dim" in header:
        # sd-scripts' training metadata, updated as its networks/resize_lora.py does
        header["ss_network_dim"] = str(ranks.pop()) if len(ranks) == 1 else "Dynamic"
        # alphas are arrays (set above or copied); only the factors arrive encoded
        alphas = {float(np.asarray(tensors[k])) for k in layout.alphas.values()}
        if "ss_network_alpha" in header:
            header["ss_network_alpha"] = (
                str(config_number(alphas.pop())) if len(alphas) == 1 else "Dynamic"
            )
    for stale in _STALE_HASHES:
        # hashes of the input's tensors: wrong for the new ones, so not carried over
        header.pop(stale, None)
    if layout.metadata:
        meta = flatten_metadata(_metadata(adapter, want), layout.metadata_style)
        # diffusers writes it with indent=2, sort_keys=True (lora_base.write_lora_layers)
        header["lora_adapter_metadata"] = json.dumps(meta, indent=2, sort_keys=True)
    return header, summary(want), warnings


def _metadata(adapter: Adapter, want: Mapping[str, tuple[int, float]]) -> dict[str, Any]:
    """diffusers' saved LoraConfig(s) with r/lora_alpha/patterns for the new ranks."""
    layout = adapter.layout
    assert layout is not None
    meta = dict(layout.metadata)
    per_component = layout.metadata_style != "single"
    groups: dict[str | None, dict[str, tuple[int, float]]] = {}
    for name, pair in want.items():
        if name in layout.alphas:
            continue  # scaled by its own .alpha tensor, not by the LoraConfig
        prefix, _, inner = name.partition(".")
        component = prefix if per_component and isinstance(meta.get(prefix), dict) else None
        if per_component and component is None:
            continue  # a component without a saved config: scale 1, rank from the shapes
        groups.setdefault(component, {})[inner or name] = pair
    for component, group in groups.items():
        if component is None:
            meta = build_config(meta, group)
        else:
            meta[component] = build_config(meta[component], group)
    return meta


def summary(want: Mapping[str, tuple[int, float]]) -> dict[str, Any]:
    """r, lora_alpha and per-module exceptions, for the result's ``config`` (reporting only: a
    file format has no adapter_config.json)."""
    ranks = [k for k, _ in want.values()]
    alphas = [a for _, a in want.values()]
    r = max(set(ranks), key=ranks.count)
    alpha = max(set(alphas), key=alphas.count)
    return {
        "r": r,
        "lora_alpha": config_number(alpha),
        "rank_pattern": {n: k for n, (k, _) in want.items() if k != r},
        "alpha_pattern": {n: config_number(a) for n, (_, a) in want.items() if a != alpha},
    }
