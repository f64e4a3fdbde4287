"""Adapters for tests: synthetic ones written with safetensors, and real ones saved by peft.

Nothing is downloaded: peft adapters wrap tiny transformers models built from a config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

PREFIX = "base_model.model."


def lora_config(**overrides: Any) -> dict[str, Any]:
    """A minimal adapter_config.json as PEFT writes it."""
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "test/tiny-base",
        "task_type": "CAUSAL_LM",
        "bias": "none",
        "modules_to_save": None,
    }
    config.update(overrides)
    return config


def planted_factors(
    d_out: int, d_in: int, r: int, spectrum: np.ndarray | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(B, A) whose product B @ A has exactly the singular values ``spectrum`` (length r)."""
    rng = np.random.default_rng(seed)
    if spectrum is None:
        spectrum = rng.uniform(0.1, 1.0, size=r)
    U, _ = np.linalg.qr(rng.standard_normal((d_out, r)))
    V, _ = np.linalg.qr(rng.standard_normal((d_in, r)))
    # Spread the spectrum over both factors with a random invertible mixing, so neither
    # factor is orthogonal (as after real training).
    M = rng.standard_normal((r, r)) + 3 * np.eye(r)
    B = (U * spectrum) @ M
    A = np.linalg.solve(M, V.T)
    return B, A


def write_adapter(
    directory: Path,
    modules: dict[str, tuple[np.ndarray, np.ndarray]],
    config: dict[str, Any] | None = None,
    dtype: Any = np.float32,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a PEFT-layout adapter: ``modules`` maps module name -> (B, A)."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for name, (B, A) in modules.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(A, dtype=dtype)
        tensors[f"{PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(B, dtype=dtype)
    for key, value in (extra or {}).items():
        tensors[key] = np.ascontiguousarray(value)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps(config or lora_config(), indent=2))
    return directory


def llama_like_adapter(
    directory: Path, n_layers: int = 4, d: int = 64, r: int = 8, seed: int = 0, **config: Any
) -> Path:
    """A synthetic adapter over q_proj/v_proj of ``n_layers`` decoder layers."""
    modules = {}
    for i in range(n_layers):
        for j, proj in enumerate(("q_proj", "v_proj")):
            spectrum = np.geomspace(1.0, 1e-3, r)
            modules[f"model.layers.{i}.self_attn.{proj}"] = planted_factors(
                d, d, r, spectrum, seed=seed + 2 * i + j
            )
    return write_adapter(directory, modules, lora_config(r=r, **config))


def tiny_bert_config():  # type: ignore[no-untyped-def]
    """A tiny BERT config (random weights; nothing downloaded)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )


def peft_adapter(directory: Path, seed: int = 0, train_b: bool = True, **lora_kwargs: Any) -> Path:
    """Save a real PEFT LoRA adapter of a tiny BERT classifier; B is randomised unless
    ``train_b`` is False (PEFT initialises B to zero, i.e. an untrained adapter)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_bert_config())
    kwargs: dict[str, Any] = {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]}
    kwargs.update(lora_kwargs)
    peft_model = get_peft_model(model, LoraConfig(**kwargs))
    if train_b:
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name or "lora_embedding_B" in name:
                    param.normal_(0.0, 0.02)
    peft_model.save_pretrained(str(directory))
    return directory


def adapter_files(directory: Path) -> dict[str, bytes]:
    """The files of an adapter directory, as a Hub repo would hold them."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def orthonormal_columns(n: int, k: int, seed: int = 0) -> np.ndarray:
    """An ``n x k`` matrix with orthonormal columns (random, float64)."""
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, k)))
    return Q


def factors_from_svd(
    U: np.ndarray, S: np.ndarray, V: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(B, A) with ``B @ A == U diag(S) V^T`` exactly up to rounding, mixed by a random
    invertible ``r x r`` matrix so that neither factor is orthogonal (as after training)."""
    r = len(S)
    M = np.random.default_rng(seed).standard_normal((r, r)) + 3 * np.eye(r)
    return (U * S) @ M, np.linalg.solve(M, V.T)


# --------------------------------------------------------------------------- optional extras


def missing(*modules: str) -> str | None:
    """None when every one of ``modules`` imports, else why the first that does not fails.

    Any ImportError counts as missing, as for the package's own check (compress.verify): a
    core install (``pip install gradience-hub`` without the bench extra) has no torch or peft.
    """
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return f"{name}: {exc}"
    return None


def requires(*modules: str) -> Any:
    """A marker that skips one test unless ``modules`` import (e.g. ``requires("torch",
    "peft")``): only the tests that build a model or reload with peft skip on the core
    install, and the reason names what is missing."""
    import pytest

    why = missing(*modules)
    return pytest.mark.skipif(
        why is not None, reason=f"needs {', '.join(modules)} (the bench extra); {why}"
    )


def bert_like_adapter(
    directory: Path,
    r: int = 8,
    lora_alpha: float = 16,
    seed: int = 0,
    **config: Any,
) -> Path:
    """A numpy-written adapter with the layout, names and shapes of :func:`peft_adapter`
    (query/value LoRA of the 2-layer tiny BERT, hidden size 32), with no torch: a module's
    rank follows ``rank_pattern`` (a key matches a module name ending in it)."""
    rank_pattern: dict[str, int] = config.get("rank_pattern") or {}
    modules = {}
    for i in range(2):
        for j, proj in enumerate(("query", "value")):
            name = f"bert.encoder.layer.{i}.attention.self.{proj}"
            k = next((v for p, v in rank_pattern.items() if name == p or name.endswith(f".{p}")), r)
            modules[name] = planted_factors(32, 32, k, seed=seed + 2 * i + j)
    options: dict[str, Any] = {
        "target_modules": ["query", "value"],
        "task_type": None,
        "base_model_name_or_path": None,
    }
    options.update(config)
    return write_adapter(directory, modules, lora_config(r=r, lora_alpha=lora_alpha, **options))
