"""One module's truncation, on a worker thread: read, factor, truncate, round to the stored
dtype, measure (:func:`truncate_module`). The written adapter is assembled by
:mod:`gradience_hub.compress.write`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gradience_hub import spectral
from gradience_hub.adapter import Adapter, LoraModule, widen
from gradience_hub.adapter.safetensors_io import Encoded, round_to, stored_form
from gradience_hub.compress.grouped import group_svds, grouped_target, truncate_grouped
from gradience_hub.compress.plan import RankRule, check_rank
from gradience_hub.compress.result import ModuleCompression
from gradience_hub.errors import AdapterError


def cast_to(X: np.ndarray, dtype: str) -> np.ndarray:
    """``X`` rounded to the stored dtype ``dtype`` (bf16/fp8 as float32 holding exactly the
    values they store: the writer then keeps the stored dtype)."""
    return np.ascontiguousarray(round_to(X, dtype))


def storage_dtype(adapter: Adapter, key: str) -> str:
    """The dtype ``key`` is stored in, as safetensors names it (the reader widens factors to
    float32 for the math; the writer narrows them back)."""
    return adapter.dtype_of(key)


def factored(
    module: LoraModule, B: np.ndarray | None = None, A: np.ndarray | None = None
) -> spectral.FactoredSVD:
    """The factored SVD of the module's unscaled ``B @ A`` (or of a block of it)."""
    try:
        return spectral.factored_svd(
            module.B if B is None else B, module.A if A is None else A, 1.0
        )
    except OverflowError as exc:
        raise AdapterError(
            f"module {module.name}: {exc}", hint="the adapter's weights are corrupt"
        ) from None


@dataclass(frozen=True)
class Truncated:
    """One module's written factors (stored dtype and shape) and its report row."""

    a_key: str
    b_key: str
    A: np.ndarray | Encoded
    B: np.ndarray | Encoded
    row: ModuleCompression

    @classmethod
    def of(
        cls,
        adapter: Adapter,
        module: LoraModule,
        keys: tuple[str, str],
        factors: tuple[np.ndarray, np.ndarray],
        *,
        errors: tuple[float, float, float, float],
        params_new: int,
    ) -> Truncated:
        """``errors``: the Frobenius norms (of the unscaled update) of the float64 factors'
        error and the stored factors' error, the relative Eckart-Young bound, and the norm of
        the update itself. The factors are kept in their stored form (bf16 as its bits), made
        here on the worker thread."""
        error, bound, stored, norm = errors
        A_out, B_out = factors
        k = int(A_out.shape[0])
        d_out, d_in = module.shape
        row = ModuleCompression(
            name=module.name,
            kind=module.kind,
            shape=(d_out, d_in),
            dtype=module.dtype,
            r_old=module.r,
            r_new=k,
            params_old=module.params,
            params_new=int(params_new),
            scale=module.scale,
            alpha_new=float(module.scale * k),
            rel_error=error / norm if norm else 0.0,
            ey_bound=bound,
            stored_rel_error=stored / norm if norm else 0.0,
            fro_norm=norm * abs(module.scale),
        )
        return cls(
            a_key=keys[0],
            b_key=keys[1],
            A=stored_form(np.ascontiguousarray(A_out), storage_dtype(adapter, keys[0])),
            B=stored_form(np.ascontiguousarray(B_out), storage_dtype(adapter, keys[1])),
            row=row,
        )


def truncate_module(adapter: Adapter, name: str, ranks: Mapping[str, int] | RankRule) -> Truncated:
    """Read, truncate and measure one module (runs on a worker thread: no shared state)."""
    module = adapter.module(name)
    pair = adapter.pairs[module.name]
    assert pair.a_key is not None and pair.b_key is not None
    if module.groups > 1:
        return _truncate_grouped(adapter, module, pair.a_key, pair.b_key, ranks)
    f: spectral.FactoredSVD | None = None
    if isinstance(ranks, RankRule):
        if ranks.needs_spectrum:
            f = factored(module)
        k = ranks.target(module.name, module.r, f.S if f is not None else None)
    else:
        k = int(ranks.get(module.name, module.r))
        check_rank(module.name, k, module.r)
    if k == module.r:
        return _kept(adapter, module, pair.a_key, pair.b_key, f)
    # Scale is kept; the factors carry the truncated *unscaled* B @ A (module doc).
    f = f or factored(module)
    norm = float(np.sqrt(np.sum(f.S**2)))
    B_k64, A_k64 = f.truncated(k)
    A_out = cast_to(A_k64, storage_dtype(adapter, pair.a_key))
    B_out = cast_to(B_k64, storage_dtype(adapter, pair.b_key))
    # Measured, not assumed: the float64 factors against B @ A (on the core; equals the
    # Eckart-Young value only when the factors are optimal) and the stored ones after rounding
    # to the adapter's dtype.
    error = f.core_error(k)
    stored = f.error(widen(B_out), widen(A_out))
    d_out, d_in = module.shape
    return Truncated.of(
        adapter,
        module,
        (pair.a_key, pair.b_key),
        _conv_shaped(adapter, module, pair.a_key, pair.b_key, k, A_out, B_out),
        errors=(error, spectral.truncation_error(f.S, k), stored, norm),
        params_new=k * (d_out + d_in),
    )


def _kept(
    adapter: Adapter, module: LoraModule, a_key: str, b_key: str, f: spectral.FactoredSVD | None
) -> Truncated:
    """Nothing to truncate: the original factors are the exact answer, bit for bit."""
    S = f.S if f is not None else spectral.lora_singular_values(module.B, module.A, 1.0)
    norm = float(np.sqrt(np.sum(S**2)))
    return Truncated.of(
        adapter,
        module,
        (a_key, b_key),
        (adapter.tensor(a_key), adapter.tensor(b_key)),
        errors=(0.0, 0.0, 0.0, norm),
        params_new=module.params,
    )


def _conv_shaped(
    adapter: Adapter,
    module: LoraModule,
    a_key: str,
    b_key: str,
    k: int,
    A_out: np.ndarray,
    B_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D factors in the stored layout: PEFT's conv LoRA has A a ``(k, c_in, *kernel)``
    conv and B a pointwise conv ``(c_out, k / groups, 1, ...)``."""
    if module.kind != "conv":
        return A_out, B_out
    a_shape, b_shape = adapter.tensor(a_key).shape, adapter.tensor(b_key).shape
    return (
        A_out.reshape((k, *a_shape[1:])),
        B_out.reshape((b_shape[0], B_out.shape[1], *b_shape[2:])),
    )


def _truncate_grouped(
    adapter: Adapter,
    module: LoraModule,
    a_key: str,
    b_key: str,
    ranks: Mapping[str, int] | RankRule,
) -> Truncated:
    """A grouped conv LoRA, truncated group by group (:mod:`gradience_hub.compress.grouped`)."""
    svds = group_svds(module, factored)
    S = spectral.lora_singular_values(module.B, module.A, 1.0)
    k = grouped_target(module, ranks, svds, S)
    if k == module.r:
        return _kept(adapter, module, a_key, b_key, None)
    a_dtype, b_dtype = storage_dtype(adapter, a_key), storage_dtype(adapter, b_key)
    done = truncate_grouped(
        module, svds, k, lambda X: cast_to(X, a_dtype), lambda X: cast_to(X, b_dtype)
    )
    norm = float(np.sqrt(np.sum(S**2)))
    return Truncated.of(
        adapter,
        module,
        (a_key, b_key),
        _conv_shaped(adapter, module, a_key, b_key, k, done.A, done.B),
        errors=(done.error, spectral.truncation_error(S, k), done.stored_error, norm),
        params_new=done.A.size + done.B.size,
    )
