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


# A key made only of these characters is a plain module name ("model.layers.0.q_proj"): no
# quantifier, group or alternation, so PEFT's regex reduces to a fixed-length comparison in
# which "." matches any character but a newline. Such keys are matched without a regex engine.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]+")

# Other keys are real regexes from an untrusted config (a Hub repo's adapter_config.json): a
# crafted one such as "(a+)+b" backtracks exponentially. They run in the `regex` package, whose
# matcher takes a timeout, against one budget per config, so the audit time stays bounded.
# The budget is CPU seconds, as regex's own timeout counts them (wall time on a loaded machine
# is longer by the load factor).
PATTERN_BUDGET_S = 1.0


def _plain_match(key: str, module: str) -> bool:
    r"""``re.match(rf"(.*\.)?({key})$", module)`` for a plain ``key``, without backtracking."""
    n = len(key)
    # "$" also matches just before a trailing newline
    ends = [len(module)] + ([len(module) - 1] if module.endswith("\n") else [])
    for end in ends:
        start = end - n
        if start < 0:
            continue
        tail = module[start:end]
        if any(k != c and (k != "." or c == "\n") for k, c in zip(key, tail, strict=True)):
            continue
        if start == 0 or (module[start - 1] == "." and "\n" not in module[: start - 1]):
            return True
    return False


class PatternMatcher:
    r"""PEFT's own rule (peft.utils.other.get_pattern_key): the first key whose regex
    ``(.*\.)?(key)$`` matches the module name wins; regex keys share a time budget."""

    def __init__(self, budget_s: float = PATTERN_BUDGET_S) -> None:
        self.remaining = budget_s

    def first_key(self, pattern_keys: list[str], module: str) -> str | None:
        """The key PEFT would use for ``module``, or None."""
        for key in pattern_keys:
            if _PLAIN_KEY.fullmatch(key):
                if _plain_match(key, module):
                    return key
            elif self._regex_match(key, module):
                return key
        return None

    def _regex_match(self, key: str, module: str) -> bool:
        import time

        import regex

        started = time.process_time()
        try:
            found = regex.match(rf"(.*\.)?({key})$", module, timeout=max(self.remaining, 1e-3))
        except regex.error as exc:
            raise AdapterError(
                f"adapter_config.json has a pattern key that is not a valid regex: {key!r} ({exc})",
                hint="fix rank_pattern/alpha_pattern in adapter_config.json",
            ) from None
        except TimeoutError:
            raise AdapterError(
                f"adapter_config.json has a pattern key whose regex does not finish: {key[:80]!r}",
                hint="rank_pattern/alpha_pattern keys should be module names; simplify the key",
            ) from None
        finally:
            self.remaining -= time.process_time() - started
        return found is not None


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
    matcher: PatternMatcher = field(default_factory=PatternMatcher, repr=False, compare=False)

    def rank_for(self, module: str) -> int:
        """Configured r of ``module`` (``rank_pattern`` first, PEFT's matching rule)."""
        key = self.matcher.first_key(list(self.rank_pattern), module)
        return int(self.rank_pattern[key]) if key is not None else self.r

    def alpha_for(self, module: str) -> float:
        """Configured lora_alpha of ``module`` (``alpha_pattern`` first)."""
        key = self.matcher.first_key(list(self.alpha_pattern), module)
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
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, and an integer past Python's digit limit;
        # RecursionError: arrays nested thousands deep
        raise AdapterError(
            f"{path} is not valid JSON: {str(exc)[:200]}", hint="re-save the adapter"
        ) from None
    if not isinstance(raw, dict):
        raise AdapterError(f"{path} must hold a JSON object", hint="re-save the adapter")
    peft_type = str(raw.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise AdapterError(
            f"{path.name} says peft_type={raw.get('peft_type')!r}; only LoRA adapters "
            "can be audited",
            hint="gradience-hub audits PEFT LoRA adapters (peft_type LORA)",
        )
    fields = lora_fields(raw, path.name, "", CONFIG_HINT)
    return AdapterConfig(
        raw=raw,
        # peft's LoraConfig defaults
        r=8 if fields.r is None else fields.r,
        lora_alpha=8.0 if fields.lora_alpha is None else fields.lora_alpha,
        use_rslora=fields.use_rslora,
        use_dora=bool(raw.get("use_dora", False)),
        fan_in_fan_out=bool(raw.get("fan_in_fan_out", False)),
        rank_pattern=fields.rank_pattern,
        alpha_pattern=fields.alpha_pattern,
        target_modules=raw.get("target_modules"),
        base_model=raw.get("base_model_name_or_path"),
    )


CONFIG_HINT = "fix the value in adapter_config.json or save the adapter again"


@dataclass(frozen=True)
class LoraFields:
    """The validated LoRA fields of one saved LoraConfig; None where the config omits them."""

    r: int | None
    lora_alpha: float | None
    use_rslora: bool
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]


def lora_fields(raw: dict[str, Any], where: str, prefix: str, hint: str) -> LoraFields:
    """Validate ``r``, ``lora_alpha``, ``use_rslora`` and the patterns of a LoraConfig dict:
    ``adapter_config.json``, or one component of a LoRA file's ``lora_adapter_metadata``.

    The one check for every saved LoraConfig, so a bad value is refused (exit 2) naming
    ``where`` (the file) and the key as ``prefix + key`` (``unet.lora_alpha``), with ``hint``,
    instead of failing later in arithmetic."""

    def key(name: str) -> str:
        return f"{prefix}{name}"

    # a key that is present is checked, null included: only an absent key takes the default
    return LoraFields(
        r=_positive_int(raw["r"], key("r"), where, hint) if "r" in raw else None,
        lora_alpha=(
            _finite(raw["lora_alpha"], key("lora_alpha"), where, hint)
            if "lora_alpha" in raw
            else None
        ),
        use_rslora=bool(raw.get("use_rslora", False)),
        rank_pattern={
            str(k): _positive_int(v, f"{key('rank_pattern')}[{k!r}]", where, hint)
            for k, v in _mapping(raw.get("rank_pattern"), key("rank_pattern"), where).items()
        },
        alpha_pattern={
            str(k): _finite(v, f"{key('alpha_pattern')}[{k!r}]", where, hint)
            for k, v in _mapping(raw.get("alpha_pattern"), key("alpha_pattern"), where).items()
        },
    )


def _mapping(value: Any, key: str, where: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AdapterError(
            f"{where} has {key} = {str(value)[:40]!r}; it must be an object",
            hint=f"{key} maps module names to values",
        )
    return value


def _positive_int(value: Any, key: str, where: str, hint: str) -> int:
    """A rank as PEFT needs it: a positive integer (``8.0`` is accepted, ``8.5``, ``1e400``,
    ``true`` and ``"8"`` are not)."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value, ok = int(value), True
    if not ok or value <= 0:
        raise AdapterError(
            f"{where} has {key} = {str(value)[:40]}; it must be a positive integer", hint=hint
        )
    return int(value)


def _finite(value: Any, key: str, where: str, hint: str) -> float:
    """A LoRA alpha: a finite number (JSON's NaN and Infinity, booleans, strings and integers
    past float range are not)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        ok = ok and math.isfinite(value)
    except OverflowError:  # an int of 400 digits has no float value
        ok = False
    if not ok:
        raise AdapterError(
            f"{where} has {key} = {str(value)[:40]}; it must be a finite number", hint=hint
        )
    return float(value)


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
