"""Checking a written adapter: our numpy self-check, and the reload with peft itself.

:func:`gradience_hub.compress.compress_adapter` writes to a temporary directory and calls
:func:`self_check` (numpy only: keys, shapes, ``r`` and scaling by our copy of PEFT's pattern
rule), then :func:`verify_with_peft` (``LoraConfig`` parses the config; with a base model, the
adapter is injected into its module tree on the meta device and its state dict loaded). Kept
apart from the writer because it is the only part of compression that touches torch, peft and
transformers, all imported inside the functions: the core install never imports them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gradience_hub.adapter import CONFIG_NAME, PEFT_PREFIX
from gradience_hub.errors import AdapterError, MissingExtraError, UsageError

# Verification levels, strongest first (CompressionResult.verified).
VERIFIED_PEFT_LOAD = "peft-load"  # loaded onto the base model's module tree by peft
VERIFIED_PEFT_CONFIG = "peft-config"  # LoraConfig parses, PEFT's pattern rule gives r/scaling
VERIFIED_SELF = "self-check"  # numpy-only: keys, shapes, r/scaling by our copy of PEFT's rule
VERIFIED_FILE = "file-self-check"  # kohya/diffusers file re-read by its format's scale rule
VERIFIED_NONE = "skipped"

# PeftModel.from_pretrained picks the model class from task_type when architectures is absent.
_TASK_CLASSES = {
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "FEATURE_EXTRACTION": "AutoModel",
}

# Relative tolerance when comparing a reloaded scaling with the asked one: alpha = s * k and
# PEFT's alpha / r round-trip through two float64 operations.
_SCALE_RTOL = 1e-12


def self_check(
    directory: Path,
    expected: Mapping[str, tuple[int, float]],
    shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]],
) -> str:
    """Re-open the written adapter with our reader (numpy only) and check every module's
    rank, scaling (PEFT's rule, as :mod:`gradience_hub.adapter` implements it) and shapes."""
    from gradience_hub.adapter import open_adapter

    written = open_adapter(directory)
    if set(written.module_names) != set(expected):
        raise AdapterError(
            "the written adapter lost or gained LoRA modules", hint="report this as a bug"
        )
    for name, (k, scale) in expected.items():
        expert = written.experts.get(name)
        pair = written.pairs[expert.stored if expert else name]
        assert pair.a_key is not None and pair.b_key is not None
        a_shape = tuple(written.tensor(pair.a_key).shape)
        b_shape = tuple(written.tensor(pair.b_key).shape)
        if expert is not None:
            # one stacked pair per parameter: peft's rule sees <module>.<parameter>
            got_r = written.config.rank_for(expert.parameter)
            got_scale = written.config.scale_for(expert.parameter, got_r)
        elif written.layout is not None:
            # a kohya/diffusers file: r from the factors, scale by the format's own rule
            module = written.module(name)
            got_r, got_scale = module.r, module.scale
        else:
            got_r = written.config.rank_for(name)
            got_scale = written.config.scale_for(name, got_r)
        if (
            got_r != k
            or (a_shape, b_shape) != tuple(shapes[name])
            or not math.isclose(got_scale, scale, rel_tol=_SCALE_RTOL, abs_tol=0.0)
        ):
            raise AdapterError(
                f"self-check of the written adapter failed for module {name}: r="
                f"{got_r} scaling={got_scale} (asked r={k} scaling="
                f"{scale}), lora_A{a_shape} lora_B{b_shape}",
                hint="report this as a bug",
            )
    return VERIFIED_SELF if written.layout is None else VERIFIED_FILE


def _peft_available() -> bool:
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def verify_with_peft(
    directory: Path,
    expected: Mapping[str, tuple[int, float]],
    *,
    base_model: Any = None,
    verify: bool | None = None,
    peft_names: Mapping[str, str] | None = None,
    config_keys: Mapping[str, str] | None = None,
) -> str | None:
    """Check the adapter in ``directory`` with peft itself; the level reached, or None.

    1. ``LoraConfig.from_pretrained`` parses the config, and PEFT's own ``get_pattern_key``
       gives every module the asked ``r`` and ``scaling``.
    2. When a base model is known (``base_model`` object or local directory, else the config's
       ``base_model_name_or_path`` if it resolves without the network), the adapter is injected
       into that model's module tree and its state dict loaded with
       ``set_peft_model_state_dict``: no missing or unexpected keys, no shape mismatch, and each
       ``LoraLayer`` reports the asked ``r`` and ``scaling``. Transformers models are rebuilt on
       the meta device from their config, so this costs no weight memory and never touches the
       caller's model; other ``nn.Module`` objects are deep-copied.

    For expert LoRA, ``config_keys`` maps each expert (``<module>.<parameter>[e]``) to the
    ``<module>.<parameter>`` that peft's pattern rule sees, and ``peft_names`` to the name of
    the ``ParamWrapper`` layer that holds its stacked pair.
    """
    if verify is False:
        return None
    if not _peft_available():
        if verify:
            raise MissingExtraError("peft")
        return None
    import warnings as _warnings

    from peft import LoraConfig
    from peft.utils.other import get_pattern_key

    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            config = LoraConfig.from_pretrained(str(directory))
    except Exception as exc:
        raise AdapterError(
            f"peft cannot parse the written {CONFIG_NAME}: {type(exc).__name__}: {exc}",
            hint="report this as a bug (the original config may hold keys this peft rejects)",
        ) from None
    for name, (k, scale) in expected.items():
        key = (config_keys or {}).get(name, name)
        r = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), key), config.r)
        alpha = config.alpha_pattern.get(
            get_pattern_key(config.alpha_pattern.keys(), key), config.lora_alpha
        )
        got = alpha / math.sqrt(r) if config.use_rslora else alpha / r
        if r != k or not math.isclose(got, scale, rel_tol=_SCALE_RTOL, abs_tol=0.0):
            raise AdapterError(
                f"peft reads module {name} as r={r}, scaling={got}; asked r={k}, scaling={scale}",
                hint="report this as a bug",
            )
    # the load check compares peft's layers: an expert is its stacked pair's ParamWrapper
    expected = {(peft_names or {}).get(n, n): v for n, v in expected.items()}
    if base_model is None:
        return _verify_on_guessed_base(directory, config, expected)
    model = _base_skeleton(base_model, config)
    if model is None:
        return VERIFIED_PEFT_CONFIG
    _load_onto(model, directory, config, expected)
    return VERIFIED_PEFT_LOAD


def _verify_on_guessed_base(directory: Path, config: Any, expected: Mapping[str, Any]) -> str:
    """Reload check on the config's ``base_model_name_or_path`` when it is available offline.

    Which class wraps the base is a guess (a SEQ_CLS adapter on a checkpoint whose config says
    ``BertModel`` lives under ``bert.``), so the candidates are tried in the order PEFT's own
    ``AutoPeftModelFor*`` would pick them: the adapter's task type, its recorded base class,
    then the checkpoint's architectures. The first that loads cleanly passes; if none does, the
    first candidate's error stands.
    """
    name = getattr(config, "base_model_name_or_path", None)
    if not name:
        return VERIFIED_PEFT_CONFIG
    try:
        candidates = _skeletons_from_path(str(name), config, local_only=True)
    except Exception:
        # Not resolvable without the network (or not a transformers model): the config-level
        # check stands; an explicit base_model makes this an error instead.
        return VERIFIED_PEFT_CONFIG
    first_error: AdapterError | None = None
    for model in candidates:
        try:
            _load_onto(model, directory, config, expected)
            return VERIFIED_PEFT_LOAD
        except AdapterError as exc:
            first_error = first_error or exc
    if first_error is None:
        return VERIFIED_PEFT_CONFIG
    raise first_error


def _base_skeleton(base_model: Any, config: Any) -> Any:
    """A module tree to load the adapter onto, or None when no base model is known."""
    import copy

    import torch

    if base_model is None:
        return None
    if isinstance(base_model, (str, os.PathLike)):
        try:
            return _skeleton_from_path(str(base_model), config, local_only=True)
        except Exception as exc:
            raise AdapterError(
                f"cannot build the base model {base_model} for the reload check: "
                f"{type(exc).__name__}: {exc}",
                hint="pass a local model directory (save_pretrained output) or a model object",
            ) from None
    if not isinstance(base_model, torch.nn.Module):
        raise UsageError(f"base_model must be a torch module or a path, got {type(base_model)}")
    hf_config = getattr(base_model, "config", None)
    if hasattr(hf_config, "model_type"):
        try:
            with torch.device("meta"):
                return type(base_model)(hf_config)
        except Exception:
            pass  # a model class that cannot be rebuilt from its config alone: copy it
    return copy.deepcopy(base_model)


def _candidate_classes(hf_config: Any, config: Any) -> list[Any]:
    """transformers classes to wrap the base in, most likely first (see the caller)."""
    import transformers

    names: list[str] = []
    task = str(getattr(config, "task_type", None) or "").upper()
    if task in _TASK_CLASSES:
        names.append(_TASK_CLASSES[task])
    auto = (getattr(config, "auto_mapping", None) or {}).get("base_model_class")
    if auto:
        names.append(str(auto))
    names += list(getattr(hf_config, "architectures", None) or [])
    names.append("AutoModel")
    classes: list[Any] = []
    for cls_name in names:
        cls = getattr(transformers, cls_name, None)
        if cls is not None and cls not in classes:
            classes.append(cls)
    return classes


def _skeletons_from_path(name: str, config: Any, local_only: bool) -> Iterator[Any]:
    """Meta-device module trees of the base model, one per candidate class (built lazily).

    The checkpoint's config is read now, so a base model that is not available raises here,
    not during iteration.
    """
    import transformers

    hf_config = transformers.AutoConfig.from_pretrained(name, local_files_only=local_only)
    return _build_each(_candidate_classes(hf_config, config), hf_config)


def _build_each(classes: list[Any], hf_config: Any) -> Iterator[Any]:
    import torch

    for cls in classes:
        try:
            with torch.device("meta"):
                model = (
                    cls.from_config(hf_config) if hasattr(cls, "from_config") else cls(hf_config)
                )
        except Exception:
            continue  # e.g. a task head this architecture does not have
        yield model


def _skeleton_from_path(name: str, config: Any, local_only: bool) -> Any:
    """The most likely meta-device module tree of the base model (an explicit base_model)."""
    for model in _skeletons_from_path(name, config, local_only):
        return model
    raise AdapterError(f"no transformers class can build {name}")


def _load_onto(model: Any, directory: Path, config: Any, expected: Mapping[str, Any]) -> None:
    """Inject the adapter into ``model`` and load the written weights; raise on any mismatch."""
    import copy
    import warnings as _warnings

    from peft import get_peft_model, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer
    from peft.utils import load_peft_weights

    check_config = copy.deepcopy(config)
    # Initialisation is irrelevant (the weights are overwritten) and data-driven inits (PiSSA,
    # OLoRA, ...) would need real base weights, which a meta skeleton does not have.
    check_config.init_lora_weights = True
    check_config.inference_mode = True
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # copying into meta tensors warns per parameter
        try:
            peft_model = get_peft_model(model, check_config)
            state = load_peft_weights(str(directory), device="cpu")
            result: Any = set_peft_model_state_dict(peft_model, state, adapter_name="default")
        except Exception as exc:
            raise AdapterError(
                f"peft could not load the written adapter onto the base model: "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}",
                hint="report this as a bug, with the adapter's config",
            ) from None
    missing = [
        k
        for k in result.missing_keys
        if ("lora_" in k or "modules_to_save" in k or "trainable_tokens" in k) and "default" in k
    ]
    if missing or result.unexpected_keys:
        raise AdapterError(
            f"peft reload check: missing keys {missing[:3]}, unexpected keys "
            f"{list(result.unexpected_keys)[:3]}",
            hint="the written adapter does not match the base model's module names",
        )
    seen: set[str] = set()
    for full, layer in peft_model.named_modules():
        if not isinstance(layer, LoraLayer) or "default" not in getattr(layer, "r", {}):
            continue
        name = full[len(PEFT_PREFIX) :] if full.startswith(PEFT_PREFIX) else full
        if name not in expected:
            continue
        seen.add(name)
        k, scale = expected[name]
        got_r, got_s = layer.r["default"], layer.scaling["default"]
        if got_r != k or not math.isclose(got_s, scale, rel_tol=_SCALE_RTOL, abs_tol=0.0):
            raise AdapterError(
                f"peft reload check: module {name} loaded with r={got_r}, scaling={got_s}; "
                f"asked r={k}, scaling={scale}",
                hint="report this as a bug",
            )
    lost = sorted(set(expected) - seen)
    if lost:
        raise AdapterError(
            f"peft reload check: module {lost[0]} was not adapted by peft",
            hint="target_modules of the adapter config do not reach this module",
        )
