"""LoRA files without adapter_config.json: kohya-ss (sd-scripts) and diffusers.

Most LoRA files on the Hub (Stable Diffusion, SDXL, Flux, video models) are one safetensors
file with one of two key layouts, and their scale is in the file itself:

- **kohya-ss**: ``lora_unet_<path>`` / ``lora_te<n>_<path>`` (``_`` for ``.``) with
  ``.lora_down.weight`` (``A``), ``.lora_up.weight`` (``B``) and a scalar ``.alpha``; the update
  is ``alpha / r * up @ down`` (sd-scripts ``networks/lora.py``: ``scale = alpha / lora_dim``),
  a missing alpha meaning ``alpha = r`` (scale 1). Conv modules (LoCon) use conv kernels.
- **diffusers**: ``unet.`` / ``text_encoder.`` / ``text_encoder_2.`` / ``transformer.``
  prefixes with ``.lora.down.weight`` / ``.lora.up.weight`` (the attention-processor format) or
  PEFT-style ``.lora_A.weight`` / ``.lora_B.weight``. Scale 1 unless ``.alpha`` tensors are
  present (kohya conversions) or the header's ``lora_adapter_metadata`` (diffusers' saved
  LoraConfig per component, ``{"unet": {...}, ...}`` or one config) gives ``lora_alpha`` and
  patterns, which follow PEFT's rule.

LoHa / LoKr (``hada_`` / ``lokr_`` keys, LyCORIS) are recognised and refused: they are not
``B @ A`` updates. A file that mixes layouts is refused rather than read in part.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience_hub.adapter.config import LoraFields, lora_fields
from gradience_hub.errors import AdapterError

KOHYA = "kohya"
DIFFUSERS = "diffusers"
PEFT = "peft"

_KOHYA_KEY = re.compile(
    r"^(?P<module>lora_(?:unet|te\d?|transformer)_[^.]+)\.(?P<which>lora_down|lora_up)\.weight$",
    re.DOTALL,
)
_KOHYA_ALPHA = re.compile(r"^(?P<module>lora_(?:unet|te\d?|transformer)_[^.]+)\.alpha$", re.DOTALL)
_DIFFUSERS_KEY = re.compile(
    r"^(?P<module>(?:unet|text_encoder|text_encoder_2|transformer)\..+?)\."
    r"(?P<which>lora\.down|lora\.up|lora_A|lora_B)(?:\.[^.]+)?\.weight$",
    re.DOTALL,
)
_DIFFUSERS_ALPHA = re.compile(
    r"^(?P<module>(?:unet|text_encoder|text_encoder_2|transformer)\..+)\.alpha$", re.DOTALL
)
_PEFT_KEY = re.compile(r"\.lora_(?:A|B|embedding_A|embedding_B)(?:\.[^.]+)?(?:\.weight)?$")
_LYCORIS = re.compile(r"\.(?:hada_w[12]_[ab]|hada_t[12]|lokr_w[12](?:_[ab])?|lokr_t2)$")
# A factor of any layout we know (LoCon's Tucker core lora_mid included): a tensor with such a
# name that a reader leaves unread would be a module dropped from the audit without a word.
_ANY_FACTOR = re.compile(
    r"\.(?:lora_down|lora_up|lora_mid|lora\.down|lora\.up|lora_A|lora_B|lora_embedding_A"
    r"|lora_embedding_B|hada_w[12]_[ab]|hada_t[12]|lokr_w[12](?:_[ab])?|lokr_t2)(?:\.|$)",
    re.DOTALL,
)

PREFIXES = ("unet", "text_encoder", "text_encoder_2", "transformer")


@dataclass
class FileLayout:
    """How one LoRA file names its factors and where its scale comes from."""

    name: str  # KOHYA | DIFFUSERS
    alphas: dict[str, str] = field(default_factory=dict)  # module -> key of its alpha tensor
    metadata: dict[str, Any] = field(default_factory=dict)  # diffusers' saved LoraConfig(s)
    # how the header held them: "flat" ({"unet.r": 4, ...}, what diffusers' pipelines write),
    # "nested" ({"unet": {"r": 4}}) or "single" (one LoraConfig, save_lora_adapter); metadata
    # is always nested per component for "flat"
    metadata_style: str = "single"
    # the validated LoraConfig per component ("" for a "single" config)
    rules: dict[str, LoraFields] = field(default_factory=dict)

    def match(self, key: str) -> tuple[str, str] | None:
        """``(module, "A" | "B")`` for a factor key of this layout, else None."""
        rule = _KOHYA_KEY if self.name == KOHYA else _DIFFUSERS_KEY
        m = rule.match(key)
        if not m:
            return None
        which = m.group("which")
        return m.group("module"), "A" if which in ("lora_down", "lora.down", "lora_A") else "B"

    def component_config(self, module: str) -> dict[str, Any]:
        """diffusers' saved LoraConfig for the component (``unet``, ...) of ``module``."""
        prefix = module.split(".", 1)[0]
        per = self.metadata.get(prefix)
        return per if isinstance(per, dict) else self.metadata

    def rule(self, module: str) -> LoraFields | None:
        """The validated saved LoraConfig that scales ``module``, or None (scale 1)."""
        if self.metadata_style == "single":
            return self.rules.get("")
        return self.rules.get(module.split(".", 1)[0])


def detect(names: list[str]) -> str | None:
    """The layout of a weights file's tensor names: KOHYA, DIFFUSERS, PEFT or None; raises for
    LoHa/LoKr and for files that mix layouts."""
    lycoris = next((n for n in names if _LYCORIS.search(n)), None)
    if lycoris is not None:
        kind = "LoKr" if ".lokr_" in lycoris else "LoHa"
        raise AdapterError(
            f"this is a {kind} (LyCORIS) file ({lycoris}); only LoRA (B @ A) updates are supported",
            hint="LoHa/LoKr updates are Hadamard/Kronecker products, not low-rank pairs",
        )
    kohya = [n for n in names if _KOHYA_KEY.match(n)]
    diffusers = [n for n in names if _DIFFUSERS_KEY.match(n)]
    peft = [n for n in names if _PEFT_KEY.search(n) and not _DIFFUSERS_KEY.match(n)]
    found = [(KOHYA, kohya), (DIFFUSERS, diffusers), (PEFT, peft)]
    present = [(kind, keys) for kind, keys in found if keys]
    if len(present) > 1:
        (a, ka), (b, kb) = present[:2]
        raise AdapterError(
            f"the file mixes {a} keys ({ka[0]}) and {b} keys ({kb[0]}); reading one layout would "
            "silently drop the other's modules",
            hint="split the file by layout, or convert it to one layout first",
        )
    return present[0][0] if present else None


def is_lora_file(names: list[str]) -> bool:
    """True when tensor names are a kohya or diffusers LoRA file (LoHa/LoKr and mixed files
    count too: opening them gives the precise refusal)."""
    try:
        return detect(names) in (KOHYA, DIFFUSERS)
    except AdapterError:
        return True


def is_factor_name(key: str) -> bool:
    """True when ``key`` names a LoRA-family factor of any layout (kohya, diffusers, PEFT,
    LoCon's ``lora_mid``, LoHa/LoKr); a bias (``lora_B.bias``) is not a factor."""
    return bool(_ANY_FACTOR.search(key)) and not key.endswith(".bias")


METADATA_KEY = "lora_adapter_metadata"
_METADATA_HINT = f"fix {METADATA_KEY} in the file's header, or save the LoRA again with diffusers"


def layout_for(path: Path, names: list[str], kind: str, header: dict[str, str]) -> FileLayout:
    """The :class:`FileLayout` of a file of layout ``kind``, its saved LoraConfig(s) checked
    (a bad value is exit 2 naming the file and the key, never an error in arithmetic later)."""
    layout = FileLayout(name=kind)
    alpha_rule = _KOHYA_ALPHA if kind == KOHYA else _DIFFUSERS_ALPHA
    for n in names:
        m = alpha_rule.match(n)
        if m:
            layout.alphas[m.group("module")] = n
    raw = header.get(METADATA_KEY)
    if raw:
        where = f"{path.name} ({METADATA_KEY})"
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            # ValueError: JSONDecodeError or an integer past Python's digit limit;
            # RecursionError: arrays or objects nested thousands deep
            why = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise AdapterError(
                f"{path.name}: {METADATA_KEY} is not valid JSON: {why[:200]}",
                hint="re-save the LoRA with diffusers",
            ) from None
        if not isinstance(meta, dict):
            raise AdapterError(
                f"{path.name}: {METADATA_KEY} must be a JSON object", hint=_METADATA_HINT
            )
        layout.metadata, layout.metadata_style = nest_metadata(meta)
        layout.rules = _rules(layout.metadata, layout.metadata_style, where)
    return layout


def _rules(meta: dict[str, Any], style: str, where: str) -> dict[str, LoraFields]:
    """Each component's saved LoraConfig, validated by the one LoraConfig check."""
    if style == "single":
        return {"": lora_fields(meta, where, "", _METADATA_HINT)}
    rules: dict[str, LoraFields] = {}
    for prefix in PREFIXES:
        if prefix not in meta:
            continue
        config = meta[prefix]
        if not isinstance(config, dict):
            raise AdapterError(
                f"{where} has {prefix} = {str(config)[:40]!r}; it must be an object",
                hint=_METADATA_HINT,
            )
        rules[prefix] = lora_fields(config, where, f"{prefix}.", _METADATA_HINT)
    return rules


def nest_metadata(meta: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """diffusers' ``lora_adapter_metadata`` as ``{component: LoraConfig}`` (or one LoraConfig)
    and its style. Pipelines save every component's config flat under its prefix
    (``lora_base._pack_dict_with_prefix``: ``{"unet.r": 4, "unet.lora_alpha": 8, ...}``)."""
    flat = [k for k in meta if k.split(".", 1)[0] in PREFIXES and "." in k]
    if flat and len(flat) == len(meta):
        nested: dict[str, dict[str, Any]] = {}
        for key, value in meta.items():
            prefix, _, name = key.partition(".")
            nested.setdefault(prefix, {})[name] = value
        return dict(nested), "flat"
    if any(isinstance(meta.get(p), dict) for p in PREFIXES):
        return meta, "nested"
    return meta, "single"


def flatten_metadata(meta: dict[str, Any], style: str) -> dict[str, Any]:
    """The inverse of :func:`nest_metadata`: ``meta`` in the header style it came in."""
    if style != "flat":
        return meta
    return {f"{p}.{k}": v for p, config in meta.items() for k, v in config.items()}


def lora_files(directory: Path) -> list[Path]:
    """The LoRA weight files of a directory without adapter_config.json, best name first."""
    files = sorted(directory.glob("*.safetensors"))
    preferred = [p for p in files if p.name == "pytorch_lora_weights.safetensors"]
    return preferred + [p for p in files if p not in preferred]
