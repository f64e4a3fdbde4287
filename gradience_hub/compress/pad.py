"""``compress --pad-to R``: every module at rank R, zero-padded, the update unchanged.

vLLM sizes its LoRA buffers by ``--max-lora-rank`` and peft's compiled hotswap
(``prepare_model_for_compiled_hotswap``) needs every adapter it swaps at one rank; an adapter
whose modules all have rank R fits both. ``lora_A`` gains zero rows and ``lora_B`` zero columns
(the rank axis of every layout: PEFT's linear, embedding and conv factors, kohya's
``lora_down``/``lora_up``, diffusers' ``lora_A``/``lora_B``), so ``B' @ A' = B @ A`` exactly: the
original entries are copied bit for bit and the new ones multiply zeros. The scale ``alpha / r``
is kept by writing ``alpha = scale * R`` per module, exactly as truncation does
(:mod:`gradience_hub.compress.write`). A module whose rank is above R is refused: padding never
truncates (compress with ``--rank R`` first).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gradience_hub import spectral
from gradience_hub._io import staged_directory
from gradience_hub.adapter import CONFIG_NAME, SAFETENSORS_NAME, Adapter, LoraModule
from gradience_hub.adapter.safetensors_io import Encoded, write_safetensors
from gradience_hub.compress import files
from gradience_hub.compress.plan import build_config, config_number
from gradience_hub.compress.result import CompressionResult, ModuleCompression
from gradience_hub.compress.verify import self_check, verify_with_peft
from gradience_hub.errors import AdapterError, UsageError


def _padded(X: np.ndarray, axis: int, R: int) -> np.ndarray:
    """``X`` with zeros appended along ``axis`` up to length ``R`` (same dtype)."""
    widths = [(0, 0)] * X.ndim
    widths[axis] = (0, R - X.shape[axis])
    return np.ascontiguousarray(np.pad(X, widths))


def check_padding(adapter: Adapter, R: int) -> None:
    """Refuse ``--pad-to R`` (exit 2, nothing written) when it cannot be exact here."""
    if R < 1:
        raise UsageError(f"--pad-to must be at least 1, got {R}")
    if adapter.has_experts:
        raise UsageError(
            "--pad-to is for one LoRA pair per module; this adapter stacks experts "
            "(peft target_parameters)",
            hint="serve it at its own rank",
        )
    above = []
    for name in adapter.module_names:
        pair = adapter.pairs[name]
        assert pair.a_key is not None
        r = int(adapter.tensor(pair.a_key).shape[0])
        if r > R:
            above.append((name, r))
    if above:
        name, r = above[0]
        more = f" (and {len(above) - 1} more)" if len(above) > 1 else ""
        raise UsageError(
            f"module {name} has rank {r}, above --pad-to {R}{more}: padding never truncates",
            hint=f"compress with --rank {R} (or lower) first, then pad that adapter",
        )


def _pad_module(
    adapter: Adapter, module: LoraModule, R: int
) -> tuple[dict[str, np.ndarray], ModuleCompression, tuple[tuple[int, ...], tuple[int, ...]]]:
    """One module's padded factors (stored layout), its report row and its shapes."""
    if module.groups > 1:
        raise UsageError(
            f"module {module.name} is a grouped conv LoRA: padding it would change which "
            "channels each group sees",
            hint="serve it at its own rank",
        )
    pair = adapter.pairs[module.name]
    assert pair.a_key is not None and pair.b_key is not None
    A = _padded(adapter.tensor(pair.a_key), 0, R)
    B = _padded(adapter.tensor(pair.b_key), 1, R)
    per_rank = module.params // module.r
    S = spectral.lora_singular_values(module.B, module.A, 1.0)
    # the padded update is the original one: every error below is exactly zero
    row = ModuleCompression(
        name=module.name,
        kind=module.kind,
        shape=module.shape,
        dtype=module.dtype,
        r_old=module.r,
        r_new=R,
        params_old=module.params,
        params_new=per_rank * R,
        scale=module.scale,
        alpha_new=float(module.scale * R),
        rel_error=0.0,
        ey_bound=0.0,
        stored_rel_error=0.0,
        fro_norm=float(np.sqrt(np.sum(S.astype(np.float64) ** 2))) * abs(module.scale),
    )
    return {pair.a_key: A, pair.b_key: B}, row, (tuple(A.shape), tuple(B.shape))


def pad_adapter(
    adapter: Adapter,
    R: int,
    output_dir: str | Path,
    *,
    verify: bool | None = None,
    base_model: Any = None,
    source: str | None = None,
    check_output: Callable[[Path, Adapter], None] | None = None,
    finish: Callable[[Path, CompressionResult], None] | None = None,
) -> CompressionResult:
    """Write ``adapter`` with every module at rank ``R`` (zero-padded) in its own format.

    The same self-check and peft check as :func:`compress_adapter`; ``check_output(output_dir,
    adapter)`` refuses a directory that must not be replaced (before anything is read), and
    ``finish(tmp, result)`` runs on the finished temporary directory before it replaces
    ``output_dir`` (an exception there leaves ``output_dir`` as it was).
    """
    output_dir = Path(output_dir)
    check_padding(adapter, R)
    if check_output is not None:
        check_output(output_dir, adapter)
    tensors: dict[str, np.ndarray | Encoded] = {}
    rows: list[ModuleCompression] = []
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    want: dict[str, tuple[int, float]] = {}
    for name in adapter.module_names:
        module = adapter.module(name)
        factors, row, shape = _pad_module(adapter, module, R)
        tensors.update(factors)
        rows.append(row)
        shapes[name] = shape
        want[name] = (R, config_number(row.alpha_new))
    for key in adapter.other_keys:
        tensors[key] = np.require(adapter.tensor(key), requirements="C")
    warnings: list[str] = []
    header: dict[str, str] = {"format": "pt"}
    if adapter.layout is not None:
        header, config, more = files.rewrite(adapter, tensors, want)
        warnings += more
        weights_name = adapter.weights_path.name
    else:
        config = build_config(adapter.config.raw, want)
        weights_name = SAFETENSORS_NAME
        if adapter.weights_path.suffix != ".safetensors":
            warnings.append(f"{adapter.weights_path.name} was converted to {SAFETENSORS_NAME}")
    if set(tensors) != set(adapter.tensor_names):
        raise AdapterError("the padded file would change its key set", hint="report this bug")
    with staged_directory(output_dir) as tmp:
        if adapter.layout is None:
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        write_safetensors(tmp / weights_name, tensors, adapter.stored_dtypes(), header)
        expected = {m.name: (m.r_new, m.scale) for m in rows}
        level = self_check(tmp, expected, shapes)
        if adapter.layout is None:
            level = verify_with_peft(tmp, expected, base_model=base_model, verify=verify) or level
        result = CompressionResult(
            output_dir=output_dir,
            modules=rows,
            config=config,
            verified=level,
            source=source,
            mode=f"padded to rank {R} (zeros; the update is unchanged)",
            warnings=warnings,
        )
        if finish is not None:
            finish(tmp, result)
    return result
