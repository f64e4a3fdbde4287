"""adapter_config.json: the LoRA fields, PEFT's pattern rule, which adapter a directory holds."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience_hub.errors import AdapterError

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_NAME = "adapter_model.safetensors"
BIN_NAME = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."


def _pattern_key(pattern_keys: list[str], module: str) -> str | None:
    """PEFT's own rule (peft.utils.other.get_pattern_key): the first key whose regex
    ``(.*\\.)?(key)$`` matches the module name wins."""
    for key in pattern_keys:
        try:
            if re.match(rf"(.*\.)?({key})$", module):
                return key
        except re.error as exc:
            raise AdapterError(
                f"adapter_config.json has a pattern key that is not a valid regex: {key!r} ({exc})",
                hint="fix rank_pattern/alpha_pattern in adapter_config.json",
            ) from None
    return None


@dataclass
class AdapterConfig:
    """The LoRA-relevant part of ``adapter_config.json``; ``raw`` keeps every key."""

    raw: dict[str, Any]
    r: int
    lora_alpha: float
    use_rslora: bool = False
    use_dora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    target_modules: Any = None
    base_model: str | None = None

    def rank_for(self, module: str) -> int:
        """Configured r of ``module`` (``rank_pattern`` first, PEFT's matching rule)."""
        key = _pattern_key(list(self.rank_pattern), module)
        return int(self.rank_pattern[key]) if key is not None else self.r

    def alpha_for(self, module: str) -> float:
        """Configured lora_alpha of ``module`` (``alpha_pattern`` first)."""
        key = _pattern_key(list(self.alpha_pattern), module)
        return float(self.alpha_pattern[key]) if key is not None else self.lora_alpha

    def scale_for(self, module: str, r: int) -> float:
        """PEFT's scaling: alpha / r, or alpha / sqrt(r) under rsLoRA."""
        alpha = self.alpha_for(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


def read_config(directory: Path) -> AdapterConfig:
    """Read and validate ``adapter_config.json`` in ``directory``."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(
            f"no {CONFIG_NAME} in {directory}",
            hint="point SOURCE at a PEFT adapter directory (the output of save_pretrained)",
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{path} is not valid JSON: {exc}", hint="re-save the adapter") from None
    if not isinstance(raw, dict):
        raise AdapterError(f"{path} must hold a JSON object", hint="re-save the adapter")
    peft_type = str(raw.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise AdapterError(
            f"{path.name} says peft_type={raw.get('peft_type')!r}; only LoRA adapters "
            "can be audited",
            hint="gradience-hub audits PEFT LoRA adapters (peft_type LORA)",
        )
    try:
        r = int(raw.get("r", 8))
        alpha = float(raw.get("lora_alpha", 8))
        rank_pattern = {str(k): int(v) for k, v in (raw.get("rank_pattern") or {}).items()}
        alpha_pattern = {str(k): float(v) for k, v in (raw.get("alpha_pattern") or {}).items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise AdapterError(
            f"{path.name} has a bad r/lora_alpha/pattern value: {exc}",
            hint="r and lora_alpha must be numbers",
        ) from None
    if r <= 0:
        raise AdapterError(f"{path.name} has r={r}; r must be positive", hint="re-save the adapter")
    return AdapterConfig(
        raw=raw,
        r=r,
        lora_alpha=alpha,
        use_rslora=bool(raw.get("use_rslora", False)),
        use_dora=bool(raw.get("use_dora", False)),
        fan_in_fan_out=bool(raw.get("fan_in_fan_out", False)),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        target_modules=raw.get("target_modules"),
        base_model=raw.get("base_model_name_or_path"),
    )


# --------------------------------------------------------------------------- adapter dirs


def list_adapters(directory: Path) -> dict[str, Path]:
    """Adapters in ``directory``: ``"default"`` for the root, subfolder names for the rest
    (the layout of ``PeftModel.save_pretrained`` with several adapters)."""
    found: dict[str, Path] = {}
    if (directory / CONFIG_NAME).is_file():
        found["default"] = directory
    for child in sorted(directory.iterdir()) if directory.is_dir() else []:
        if child.is_dir() and (child / CONFIG_NAME).is_file():
            found[child.name] = child
    return found


def select_adapter(directory: Path, adapter_name: str | None = None) -> Path:
    """The adapter directory to read, following ``--adapter-name`` when several exist."""
    if not directory.is_dir():
        raise AdapterError(f"directory not found: {directory}", hint="check the SOURCE path")
    adapters = list_adapters(directory)
    if adapter_name is not None:
        if adapter_name in adapters:
            return adapters[adapter_name]
        names = ", ".join(adapters) or "none"
        raise AdapterError(
            f"no adapter named '{adapter_name}' in {directory} (found: {names})",
            hint="pick one of the names listed with --adapter-name",
        )
    if "default" in adapters:
        return adapters["default"]
    if len(adapters) == 1:
        return next(iter(adapters.values()))
    if not adapters:
        raise AdapterError(
            f"no {CONFIG_NAME} in {directory}",
            hint="point SOURCE at a PEFT adapter directory (the output of save_pretrained)",
        )
    raise AdapterError(
        f"{directory} holds several adapters: {', '.join(adapters)}",
        hint="choose one with --adapter-name NAME",
    )


def weights_file(directory: Path) -> Path:
    """The adapter's weights file, safetensors preferred."""
    for name in (SAFETENSORS_NAME, BIN_NAME):
        if (directory / name).is_file():
            return directory / name
    raise AdapterError(
        f"no adapter weights in {directory} (expected {SAFETENSORS_NAME} or {BIN_NAME})",
        hint="save the adapter with save_pretrained(), which writes adapter_model.safetensors",
    )
