"""SVD-truncated LoRA adapters, written as valid PEFT adapters, with a reload check.

Each module's update ``dW = s * B @ A`` is replaced by its best rank-``k`` approximation
(Eckart-Young) in balanced form ``B' = Q_B U_k sqrt(S_k)``, ``A' = sqrt(S_k) V_k^T Q_A^T``
(:func:`gradience_hub.spectral.truncated_factors`: QR of the factors, never the dense product).

**How the scaling is kept exact.** PEFT multiplies ``lora_B(lora_A(x))`` by
``scaling = lora_alpha / r`` (``/ sqrt(r)`` under rsLoRA). We keep every module's *scaling* equal to
the original one and truncate the unscaled product ``B @ A``: the new config sets ``r = k`` and
``lora_alpha = s * k`` per module (``use_rslora`` false, so ``scaling = alpha / r = s``), with
``rank_pattern``/``alpha_pattern`` only for the modules that differ from the most common pair.
Folding the scale into the factors (``alpha = r``, scaling 1) would be just as exact for ``B @ A``
but wrong for everything else PEFT scales with it: ``lora_B.bias`` (``lora_bias=True``) is added
before the multiplication, so it is copied unchanged only because the scaling is unchanged. Keeping
``alpha / r`` also keeps the learning-rate semantics if someone continues training the adapter.

The output is written to a temporary sibling directory and renamed into place, so ``--output``
holds either the whole adapter or nothing. Runs on the core install (numpy, safetensors); when
torch and peft are importable the written adapter is also loaded with peft (see :func:`verify`).

This module writes the adapter (:func:`compress_adapter`, :func:`compress`); the ranks and the
config are planned in :mod:`gradience_hub.compress.plan`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradience_hub import spectral
from gradience_hub.adapter import (
    CONFIG_NAME,
    SAFETENSORS_NAME,
    Adapter,
    LoraModule,
    widen,
)
from gradience_hub.adapter.safetensors_io import Encoded, round_to, stored_form, write_safetensors
from gradience_hub.compress import files
from gradience_hub.compress.experts import compress_experts
from gradience_hub.compress.grouped import group_svds, grouped_target, truncate_grouped
from gradience_hub.compress.plan import RankRule, build_config, check_rank, config_number
from gradience_hub.compress.result import CompressionResult, ModuleCompression
from gradience_hub.compress.verify import (
    self_check,
    verify_with_peft,
)
from gradience_hub.errors import AdapterError, UsageError
from gradience_hub.hub.source import load_adapter
from gradience_hub.parallel import map_ordered

# --------------------------------------------------------------------------- math


def _cast(X: np.ndarray, dtype: str) -> np.ndarray:
    """``X`` rounded to the stored dtype ``dtype`` (bf16/fp8 as float32 holding exactly the
    values they store: the writer then keeps the stored dtype)."""
    return np.ascontiguousarray(round_to(X, dtype))


def _storage_dtype(adapter: Adapter, key: str) -> str:
    """The dtype ``key`` is stored in, as safetensors names it (the reader widens factors to
    float32 for the math; the writer narrows them back)."""
    return adapter.dtype_of(key)


# --------------------------------------------------------------------------- writing


# What a previous adapter output may hold: what compress writes, plus the card and the Hub's
# attributes file a user may have added. Anything else means the directory is somebody's work.
_REPLACEABLE = frozenset(
    {
        "adapter_config.json",
        "adapter_model.safetensors",
        "adapter_model.bin",
        "README.md",
        ".gitattributes",
    }
)


def _check_output(output_dir: Path, adapter: Adapter, force: bool) -> None:
    """Refuse an ``--output`` that must not be replaced (UsageError, exit 2, nothing written).

    Never the working directory, the source or a directory that contains either; with
    ``--force`` only a previous adapter output (it holds adapter_config.json and nothing but
    adapter files) is replaced, never a project folder that happens to be named like one.
    """
    hint = "write the compressed adapter to a new directory"
    if output_dir.is_symlink():
        raise UsageError(f"--output {output_dir} is a symlink", hint=hint)
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(
            f"--output {output_dir} is a file", hint="pass a directory path for the new adapter"
        )
    out = output_dir.resolve()
    src = adapter.directory.resolve()
    cwd = Path.cwd().resolve()
    if out == src or out in src.parents:
        raise UsageError(f"--output {output_dir} would overwrite the source adapter", hint=hint)
    if out == cwd or out in cwd.parents:
        raise UsageError(
            f"--output {output_dir} is the working directory or contains it", hint=hint
        )
    if not output_dir.is_dir():
        return
    entries = sorted(p.name for p in output_dir.iterdir())
    if not entries:
        return
    if not force:
        raise UsageError(
            f"--output {output_dir} exists and is not empty",
            hint="choose a new directory, or pass --force to replace a previous adapter output",
        )
    unexpected = [
        name for name in entries if name not in _REPLACEABLE or (output_dir / name).is_dir()
    ]
    if unexpected or "adapter_config.json" not in entries:
        what = f"holds {unexpected[0]!r}" if unexpected else "has no adapter_config.json"
        raise UsageError(
            f"--output {output_dir} {what}: it is not a previous adapter output, and --force "
            "only replaces those",
            hint=hint,
        )


def check_output(output_dir: Path, adapter: Adapter, force: bool) -> None:
    """Refuse an ``--output`` that must not be replaced (the rules of every compression)."""
    _check_output(output_dir, adapter, force)


def _install(tmp: Path, output_dir: Path) -> None:
    """Move the finished ``tmp`` directory to ``output_dir``, replacing what was there."""
    from gradience_hub._io import replace_directory

    replace_directory(tmp, output_dir)


def _factored(
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
class _Truncated:
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
    ) -> _Truncated:
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
            A=stored_form(np.ascontiguousarray(A_out), _storage_dtype(adapter, keys[0])),
            B=stored_form(np.ascontiguousarray(B_out), _storage_dtype(adapter, keys[1])),
            row=row,
        )


def _truncate(adapter: Adapter, name: str, ranks: Mapping[str, int] | RankRule) -> _Truncated:
    """Read, truncate and measure one module (runs on a worker thread: no shared state)."""
    module = adapter.module(name)
    pair = adapter.pairs[module.name]
    assert pair.a_key is not None and pair.b_key is not None
    if module.groups > 1:
        return _truncate_grouped(adapter, module, pair.a_key, pair.b_key, ranks)
    f: spectral.FactoredSVD | None = None
    if isinstance(ranks, RankRule):
        if ranks.needs_spectrum:
            f = _factored(module)
        k = ranks.target(module.name, module.r, f.S if f is not None else None)
    else:
        k = int(ranks.get(module.name, module.r))
        check_rank(module.name, k, module.r)
    if k == module.r:
        return _kept(adapter, module, pair.a_key, pair.b_key, f)
    # Scale is kept; the factors carry the truncated *unscaled* B @ A (module doc).
    f = f or _factored(module)
    norm = float(np.sqrt(np.sum(f.S**2)))
    B_k64, A_k64 = f.truncated(k)
    A_out = _cast(A_k64, _storage_dtype(adapter, pair.a_key))
    B_out = _cast(B_k64, _storage_dtype(adapter, pair.b_key))
    # Measured, not assumed: the float64 factors against B @ A (on the core; equals the
    # Eckart-Young value only when the factors are optimal) and the stored ones after rounding
    # to the adapter's dtype.
    error = f.core_error(k)
    stored = f.error(widen(B_out), widen(A_out))
    d_out, d_in = module.shape
    return _Truncated.of(
        adapter,
        module,
        (pair.a_key, pair.b_key),
        _conv_shaped(adapter, module, pair.a_key, pair.b_key, k, A_out, B_out),
        errors=(error, spectral.truncation_error(f.S, k), stored, norm),
        params_new=k * (d_out + d_in),
    )


def _kept(
    adapter: Adapter, module: LoraModule, a_key: str, b_key: str, f: spectral.FactoredSVD | None
) -> _Truncated:
    """Nothing to truncate: the original factors are the exact answer, bit for bit."""
    S = f.S if f is not None else spectral.lora_singular_values(module.B, module.A, 1.0)
    norm = float(np.sqrt(np.sum(S**2)))
    return _Truncated.of(
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
) -> _Truncated:
    """A grouped conv LoRA, truncated group by group (:mod:`gradience_hub.compress.grouped`)."""
    svds = group_svds(module, _factored)
    S = spectral.lora_singular_values(module.B, module.A, 1.0)
    k = grouped_target(module, ranks, svds, S)
    if k == module.r:
        return _kept(adapter, module, a_key, b_key, None)
    a_dtype, b_dtype = _storage_dtype(adapter, a_key), _storage_dtype(adapter, b_key)
    done = truncate_grouped(
        module, svds, k, lambda X: _cast(X, a_dtype), lambda X: _cast(X, b_dtype)
    )
    norm = float(np.sqrt(np.sum(S**2)))
    return _Truncated.of(
        adapter,
        module,
        (a_key, b_key),
        _conv_shaped(adapter, module, a_key, b_key, k, done.A, done.B),
        errors=(done.error, spectral.truncation_error(S, k), done.stored_error, norm),
        params_new=done.A.size + done.B.size,
    )


def compress_adapter(
    adapter: Adapter,
    ranks: Mapping[str, int] | RankRule,
    output_dir: str | Path,
    *,
    verify: bool | None = None,
    base_model: Any = None,
    force: bool = False,
    source: str | None = None,
    finish: Callable[[Path, CompressionResult], None] | None = None,
) -> CompressionResult:
    """Write ``adapter`` truncated to ``ranks`` in its own format (a PEFT adapter, or a kohya /
    diffusers LoRA file of the same name: :mod:`gradience_hub.compress.files`), in one pass.

    ``ranks`` maps module name -> k (modules absent from it keep their rank), or is a
    :class:`~gradience_hub.compress.plan.RankRule` that picks each module's k from the spectrum
    computed for its truncation (no separate audit pass). A module kept at its rank is copied
    bit for bit; the others get balanced truncated factors in the original dtype. Non-LoRA tensors
    (``modules_to_save`` heads, DoRA magnitudes, ``lora_B.bias``, trainable tokens) are copied
    unchanged. ``verify``: ``None`` checks with peft when torch and peft are importable, ``True``
    requires them, ``False`` skips the peft check (the numpy self-check always runs).
    ``base_model`` (a model object or a local model directory) makes the peft check load the
    adapter onto that model's module tree; without it the adapter config's
    ``base_model_name_or_path`` is used when it resolves locally. ``finish(tmp, result)`` runs on
    the finished temporary directory before it is moved into place (to stamp the weights file's
    header, say); what it raises leaves ``output_dir`` untouched.
    """
    output_dir = Path(output_dir)
    unknown = [] if isinstance(ranks, RankRule) else sorted(set(ranks) - set(adapter.module_names))
    if unknown:
        raise UsageError(
            f"no LoRA module named {unknown[0]} in the adapter"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
            hint="rank keys are module names without the base_model.model. prefix",
        )
    if adapter.layout is not None and verify:
        raise UsageError(
            f"the peft reload check is for PEFT adapters; a {adapter.format} file is checked "
            "by re-reading it with its format's scale rule",
            hint="drop --verify peft for kohya/diffusers LoRA files",
        )
    _check_output(output_dir, adapter, force)

    warnings: list[str] = []
    tensors: dict[str, np.ndarray | Encoded] = {}
    rows: list[ModuleCompression] = []
    want: dict[str, tuple[int, float]] = {}
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    # experts of a stacked target_parameters pair are truncated together (compress.experts)
    plain = [n for n in adapter.module_names if n not in adapter.experts]
    for done in map_ordered(lambda name: _truncate(adapter, name, ranks), plain):
        tensors[done.a_key] = done.A
        tensors[done.b_key] = done.B
        shapes[done.row.name] = (tuple(done.A.shape), tuple(done.B.shape))
        want[done.row.name] = (done.row.r_new, config_number(done.row.alpha_new))
        rows.append(done.row)
    peft_names: dict[str, str] = {}
    config_keys: dict[str, str] = {}
    if adapter.has_experts:
        stacked = compress_experts(
            adapter, ranks, _factored, lambda X, key: _cast(X, _storage_dtype(adapter, key))
        )
        tensors.update(stacked.tensors)
        rows += stacked.rows
        want.update(stacked.want)
        shapes.update(stacked.shapes)
        warnings += stacked.warnings
        peft_names, config_keys = stacked.peft_names, stacked.config_keys
        order = {n: i for i, n in enumerate(adapter.module_names)}
        rows.sort(key=lambda row: order[row.name])
    for key in adapter.other_keys:
        # np.require, not ascontiguousarray: that makes 0-d tensors (kohya alphas) 1-d
        tensors[key] = np.require(adapter.tensor(key), requirements="C")
    if adapter.layout is None and adapter.weights_path.suffix != ".safetensors":
        warnings.append(
            f"{adapter.weights_path.name} was converted to {SAFETENSORS_NAME} "
            "(every tensor keeps its dtype)"
        )

    header: dict[str, str] = {"format": "pt"}
    if adapter.layout is not None:
        # kohya/diffusers: the same file name and layout, alphas and header for the new ranks
        header, config, more = files.rewrite(adapter, tensors, want)
        warnings += more
        if set(tensors) != set(adapter.tensor_names):
            raise AdapterError("the compressed file would change its key set", hint="a bug")
        weights_name = adapter.weights_path.name
    else:
        config = build_config(adapter.config.raw, want)
        weights_name = SAFETENSORS_NAME
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        if adapter.layout is None:
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        write_safetensors(tmp / weights_name, tensors, adapter.stored_dtypes(), header)
        del tensors
        expected = {m.name: (m.r_new, m.scale) for m in rows}
        level = self_check(tmp, expected, shapes)
        if adapter.layout is None:
            level = (
                verify_with_peft(
                    tmp,
                    expected,
                    base_model=base_model,
                    verify=verify,
                    peft_names=peft_names,
                    config_keys=config_keys,
                )
                or level
            )
        result = CompressionResult(
            output_dir=output_dir,
            modules=rows,
            config=config,
            verified=level,
            source=source,
            warnings=warnings,
        )
        if finish is not None:
            finish(tmp, result)
        _install(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


# --------------------------------------------------------------------------- end to end


def compress(
    source: str,
    output: str | Path,
    *,
    rank: int | None = None,
    energy: float | None = None,
    per_layer: bool = False,
    revision: str | None = None,
    adapter_name: str | None = None,
    force: bool = False,
    verify: bool | None = None,
    base_model: Any = None,
) -> CompressionResult:
    """Load SOURCE, audit it, plan ranks (one mode) and write the compressed adapter."""
    rule = RankRule(rank=rank, energy=energy, per_layer=per_layer)  # refuses bad modes first
    adapter, info = load_adapter(source, revision, adapter_name)
    _check_output(Path(output), adapter, force)
    result = compress_adapter(
        adapter,
        rule,
        output,
        verify=verify,
        base_model=base_model,
        force=force,
        source=info.display,
    )
    result.mode = rule.mode
    result.warnings[:0] = info.warnings  # what choosing the Hub repo's LoRA file skipped
    return result
