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
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from gradience_hub import spectral
from gradience_hub.adapter import (
    CONFIG_NAME,
    PEFT_PREFIX,
    SAFETENSORS_NAME,
    Adapter,
    AdapterConfig,
    load,
)
from gradience_hub.audit import AuditReport, audit_adapter, human_count
from gradience_hub.errors import AdapterError, MissingExtraError, UsageError

# Verification levels, strongest first (CompressionResult.verified).
VERIFIED_PEFT_LOAD = "peft-load"  # loaded onto the base model's module tree by peft
VERIFIED_PEFT_CONFIG = "peft-config"  # LoraConfig parses, PEFT's pattern rule gives r/scaling
VERIFIED_SELF = "self-check"  # numpy-only: keys, shapes, r/scaling by our copy of PEFT's rule
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


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ModuleCompression:
    """One module's truncation: ranks, parameters and errors (relative Frobenius norms).

    ``rel_error`` is measured on the truncated float64 factors against the original ones
    through QR of the stacked factors (no dense product); ``ey_bound`` is the Eckart-Young value
    ``sqrt(sum_{i>=k} s_i^2 / sum_i s_i^2)`` from the singular values. They agree to rounding,
    which is the proof that the written factors are the optimal rank-``k`` approximation.
    ``stored_rel_error`` is the same measurement after rounding the factors to the stored dtype
    (it adds bf16/fp16 rounding, ~1e-3 for bf16).
    """

    name: str
    kind: str
    shape: tuple[int, int]
    dtype: str
    r_old: int
    r_new: int
    params_old: int
    params_new: int
    scale: float
    alpha_new: float
    rel_error: float
    ey_bound: float
    stored_rel_error: float
    fro_norm: float

    @property
    def param_reduction(self) -> float:
        """``1 - params_new / params_old``."""
        return 1.0 - self.params_new / self.params_old if self.params_old else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "r_old": self.r_old,
            "r_new": self.r_new,
            "params_old": self.params_old,
            "params_new": self.params_new,
            "param_reduction": self.param_reduction,
            "scale": self.scale,
            "alpha_new": self.alpha_new,
            "rel_error": self.rel_error,
            "ey_bound": self.ey_bound,
            "stored_rel_error": self.stored_rel_error,
            "fro_norm": self.fro_norm,
        }


@dataclass
class CompressionResult:
    """What :func:`compress_adapter` wrote and how much it lost.

    ``rel_error`` / ``ey_bound`` overall are the relative Frobenius error of all modules' updates
    taken together: ``sqrt(sum_i e_i^2 ||dW_i||^2) / sqrt(sum_i ||dW_i||^2)``.
    """

    output_dir: Path
    modules: list[ModuleCompression]
    config: dict[str, Any]
    verified: str
    source: str | None = None
    mode: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def params_old(self) -> int:
        """LoRA parameters before (factors only; heads and magnitudes are not counted)."""
        return sum(m.params_old for m in self.modules)

    @property
    def params_new(self) -> int:
        """LoRA parameters after."""
        return sum(m.params_new for m in self.modules)

    @property
    def param_reduction(self) -> float:
        """``1 - params_new / params_old``."""
        return 1.0 - self.params_new / self.params_old if self.params_old else 0.0

    def _overall(self, attr: str) -> float:
        total = sum(m.fro_norm**2 for m in self.modules)
        if total == 0.0:
            return 0.0
        return math.sqrt(sum((getattr(m, attr) * m.fro_norm) ** 2 for m in self.modules) / total)

    @property
    def rel_error(self) -> float:
        """Overall relative Frobenius error (float64 factors)."""
        return self._overall("rel_error")

    @property
    def ey_bound(self) -> float:
        """Overall Eckart-Young bound; equals :attr:`rel_error` up to rounding."""
        return self._overall("ey_bound")

    @property
    def stored_rel_error(self) -> float:
        """Overall relative error of the factors as stored (dtype rounding included)."""
        return self._overall("stored_rel_error")

    @property
    def rank_pattern(self) -> dict[str, int]:
        """The new rank of every module (PEFT module names)."""
        return {m.name: m.r_new for m in self.modules}

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "output_dir": str(self.output_dir),
            "source": self.source,
            "mode": self.mode,
            "verified": self.verified,
            "totals": {
                "params_old": self.params_old,
                "params_new": self.params_new,
                "param_reduction": self.param_reduction,
                "rel_error": self.rel_error,
                "ey_bound": self.ey_bound,
                "stored_rel_error": self.stored_rel_error,
            },
            "modules": [m.to_dict() for m in self.modules],
            "config": {
                "r": self.config.get("r"),
                "lora_alpha": self.config.get("lora_alpha"),
                "rank_pattern": self.config.get("rank_pattern"),
                "alpha_pattern": self.config.get("alpha_pattern"),
            },
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------- planning


def _check_rank(name: str, k: int, r: int) -> None:
    """Refuse ranks PEFT cannot hold (k < 1) or that truncation cannot reach (k > r)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise UsageError(f"module {name}: target rank must be an integer, got {k!r}")
    if k < 1:
        raise UsageError(
            f"module {name}: target rank {k} is below 1",
            hint="a LoRA module needs rank >= 1; choose a rank of at least 1",
        )
    if k > r:
        raise UsageError(
            f"module {name}: target rank {k} is above its current rank {r}",
            hint="compression can only lower ranks; choose a rank <= the module's current rank",
        )


def plan_ranks(
    report: AuditReport,
    *,
    rank: int | None = None,
    energy: float | None = None,
    per_layer: bool = False,
) -> dict[str, int]:
    """Target rank of every module, from exactly one of three modes.

    - ``rank``: the same ``k`` for every module (refused when above any module's rank);
    - ``energy``: per module, the smallest ``k`` whose top singular values hold that fraction of
      ``||dW||_F^2`` (at least 1, so an untrained module keeps one inert rank);
    - ``per_layer``: the audit's ``suggestions.per_layer.rank_pattern`` (energy rank rounded up to
      a power of two, capped at the module's rank).
    """
    modes = (rank is not None) + (energy is not None) + bool(per_layer)
    if modes != 1:
        raise UsageError(
            "choose exactly one of --rank K, --energy T or --per-layer",
            hint="e.g. gradience-hub compress SOURCE --output DIR --rank 4",
        )
    plan: dict[str, int] = {}
    if rank is not None:
        for layer in report.layers:
            _check_rank(layer.name, rank, layer.r)
            plan[layer.name] = int(rank)
    elif energy is not None:
        if not 0.0 < energy <= 1.0:
            raise UsageError(f"--energy must be in (0, 1], got {energy}", hint="e.g. --energy 0.9")
        for layer in report.layers:
            k = spectral.energy_rank(np.asarray(layer.singular_values), energy)
            plan[layer.name] = max(1, min(layer.r, k))
    else:
        suggested = (report.suggestions.get("per_layer") or {}).get("rank_pattern") or {}
        for layer in report.layers:
            if layer.name not in suggested:
                raise AdapterError(
                    f"the audit has no per-layer suggestion for module {layer.name}",
                    hint="re-run the audit of this adapter",
                )
            k = int(suggested[layer.name])
            _check_rank(layer.name, k, layer.r)
            plan[layer.name] = k
    return plan


# --------------------------------------------------------------------------- config


def _number(x: float) -> int | float:
    """Integral floats as ints, so configs read ``"lora_alpha": 8`` rather than ``8.0``."""
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def _mode(values: list[Any]) -> Any:
    """Most common value; ties go to the first seen (file order), for a stable config."""
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)


def _patterns_ok(
    names: list[str],
    r: int,
    alpha: float,
    rank_pattern: dict[str, int],
    alpha_pattern: dict[str, float],
    want: Mapping[str, tuple[int, float]],
) -> bool:
    """Does PEFT's first-match rule give every module its asked (r, alpha)?"""
    rule = AdapterConfig(
        raw={}, r=r, lora_alpha=alpha, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern
    )
    return all(
        (rule.rank_for(n), rule.alpha_for(n)) == (want[n][0], float(want[n][1])) for n in names
    )


def build_config(original: dict[str, Any], want: Mapping[str, tuple[int, float]]) -> dict[str, Any]:
    """``adapter_config.json`` for modules with the asked ``(r, lora_alpha)`` each.

    Everything else in ``original`` is carried over. Pattern keys are plain module names (as in
    the audit's suggestions), which PEFT matches with ``(.*\\.)?(key)$``: a name can also match a
    module whose name ends with ``.<name>``, and ``.`` matches any character. When that would give
    any module the wrong value, every module is listed with a regex-escaped key, longest first,
    so each module's own key is the first that matches it.
    """
    names = list(want)
    r = int(_mode([want[n][0] for n in names]))
    alpha = _number(_mode([want[n][1] for n in names]))
    rank_pattern = {n: int(want[n][0]) for n in names if want[n][0] != r}
    alpha_pattern = {n: _number(want[n][1]) for n in names if want[n][1] != alpha}
    if not _patterns_ok(names, r, alpha, rank_pattern, alpha_pattern, want):
        ordered = sorted(names, key=len, reverse=True)
        rank_pattern = {re.escape(n): int(want[n][0]) for n in ordered}
        alpha_pattern = {re.escape(n): _number(want[n][1]) for n in ordered}
        if not _patterns_ok(names, r, alpha, rank_pattern, alpha_pattern, want):
            raise AdapterError(
                "cannot express the per-module ranks as a PEFT rank_pattern: module names "
                "overlap under PEFT's matching rule",
                hint="compress with a uniform --rank instead",
            )
    config = dict(original)
    config.update(
        r=r,
        lora_alpha=alpha,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        use_rslora=False,
    )
    return config


# --------------------------------------------------------------------------- math


def _measured_error(
    B: np.ndarray, A: np.ndarray, B_k: np.ndarray, A_k: np.ndarray, norm: float
) -> float:
    """``||B A - B_k A_k||_F / norm`` without the dense product.

    ``B A - B_k A_k = [B, B_k] @ [A; -A_k]``, a product of thin factors whose Frobenius norm is
    that of the small core ``R_C R_D^T`` (QR of both stacks). The stacked factors are rank
    deficient (B_k's columns lie in B's span), which :func:`spectral.r_factor` handles by
    falling back to Householder QR.
    """
    if norm == 0.0:
        return 0.0
    C = np.hstack([np.asarray(B, np.float64), np.asarray(B_k, np.float64)])
    D = np.vstack([np.asarray(A, np.float64), -np.asarray(A_k, np.float64)])
    return float(np.linalg.norm(spectral.core_matrix(C, D, 1.0))) / norm


def _cast(X: np.ndarray, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(X).astype(dtype))


# safetensors dtype names -> numpy dtypes (ml_dtypes provides the 16- and 8-bit floats numpy
# lacks); the reader widens factors to float32 for the math, the writer must narrow them back.
_SAFETENSORS_DTYPES = {
    "f64": np.float64,
    "f32": np.float32,
    "f16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "f8_e4m3": ml_dtypes.float8_e4m3fn,
    "f8_e5m2": ml_dtypes.float8_e5m2,
}


def _storage_dtype(adapter: Adapter, key: str) -> Any:
    """The dtype ``key`` is stored in (``.bin`` files report numpy names)."""
    name = adapter.dtype_of(key)
    return _SAFETENSORS_DTYPES.get(name) or np.dtype(name)


# --------------------------------------------------------------------------- writing


def _check_output(output_dir: Path, adapter: Adapter, force: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(
            f"--output {output_dir} is a file", hint="pass a directory path for the new adapter"
        )
    src = adapter.directory.resolve()
    out = output_dir.resolve()
    if out == src or out in src.parents:
        raise UsageError(
            f"--output {output_dir} would overwrite the source adapter",
            hint="write the compressed adapter to a new directory",
        )
    if output_dir.is_dir() and any(output_dir.iterdir()) and not force:
        raise UsageError(
            f"--output {output_dir} exists and is not empty",
            hint="choose a new directory, or pass --force to replace it",
        )


def _install(tmp: Path, output_dir: Path) -> None:
    """Move the finished ``tmp`` directory to ``output_dir``, replacing what was there."""
    old: Path | None = None
    if output_dir.exists():
        old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
        os.replace(output_dir, old)
    os.replace(tmp, output_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def compress_adapter(
    adapter: Adapter,
    ranks: Mapping[str, int],
    output_dir: str | Path,
    *,
    verify: bool | None = None,
    base_model: Any = None,
    force: bool = False,
    source: str | None = None,
) -> CompressionResult:
    """Write ``adapter`` truncated to ``ranks`` (module name -> k) as a PEFT adapter.

    Modules absent from ``ranks`` keep their rank. A module kept at its rank is copied bit for
    bit; the others get balanced truncated factors in the original dtype. Non-LoRA tensors
    (``modules_to_save`` heads, DoRA magnitudes, ``lora_B.bias``, trainable tokens) are copied
    unchanged. ``verify``: ``None`` checks with peft when torch and peft are importable, ``True``
    requires them, ``False`` skips the peft check (the numpy self-check always runs).
    ``base_model`` (a model object or a local model directory) makes the peft check load the
    adapter onto that model's module tree; without it the adapter config's
    ``base_model_name_or_path`` is used when it resolves locally.
    """
    output_dir = Path(output_dir)
    unknown = sorted(set(ranks) - set(adapter.module_names))
    if unknown:
        raise UsageError(
            f"no LoRA module named {unknown[0]} in the adapter"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
            hint="rank keys are module names without the base_model.model. prefix",
        )
    _check_output(output_dir, adapter, force)

    warnings: list[str] = []
    tensors: dict[str, np.ndarray] = {}
    rows: list[ModuleCompression] = []
    want: dict[str, tuple[int, float]] = {}
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for module in adapter.modules():
        pair = adapter.pairs[module.name]
        assert pair.a_key is not None and pair.b_key is not None
        k = int(ranks.get(module.name, module.r))
        _check_rank(module.name, k, module.r)
        if k == module.r:
            # Nothing to truncate: the original factors are the exact answer, bit for bit.
            S = spectral.lora_singular_values(module.B, module.A, 1.0)
            norm = float(np.sqrt(np.sum(S**2)))
            A_out = adapter.tensor(pair.a_key)
            B_out = adapter.tensor(pair.b_key)
            rel = bound = stored = 0.0
        else:
            # Scale is kept; the factors carry the truncated *unscaled* B @ A (module doc).
            B_k64, A_k64, S = spectral.truncated_factors(module.B, module.A, 1.0, k)
            norm = float(np.sqrt(np.sum(S**2)))
            a_shape = adapter.tensor(pair.a_key).shape if module.kind == "conv" else None
            b_shape = adapter.tensor(pair.b_key).shape if module.kind == "conv" else None
            A_out = _cast(A_k64, _storage_dtype(adapter, pair.a_key))
            B_out = _cast(B_k64, _storage_dtype(adapter, pair.b_key))
            rel = _measured_error(module.B, module.A, B_k64, A_k64, norm)
            bound = spectral.truncation_error(S, k)
            stored = _measured_error(module.B, module.A, B_out, A_out, norm)
            if a_shape is not None and b_shape is not None:
                # PEFT's conv LoRA: A is a (k, c_in, kh, kw) conv, B a 1x1 conv (c_out, k, 1, 1).
                A_out = A_out.reshape((k, *a_shape[1:]))
                B_out = B_out.reshape((b_shape[0], k, *b_shape[2:]))
        tensors[pair.a_key] = np.ascontiguousarray(A_out)
        tensors[pair.b_key] = np.ascontiguousarray(B_out)
        shapes[module.name] = (tuple(A_out.shape), tuple(B_out.shape))
        d_out, d_in = module.shape
        alpha_new = module.scale * k
        want[module.name] = (k, _number(alpha_new))
        rows.append(
            ModuleCompression(
                name=module.name,
                kind=module.kind,
                shape=(d_out, d_in),
                dtype=module.dtype,
                r_old=module.r,
                r_new=k,
                params_old=module.params,
                params_new=k * (d_out + d_in),
                scale=module.scale,
                alpha_new=float(alpha_new),
                rel_error=rel,
                ey_bound=bound,
                stored_rel_error=stored,
                fro_norm=norm * abs(module.scale),
            )
        )
    for key in adapter.other_keys:
        tensors[key] = np.ascontiguousarray(adapter.tensor(key))
    if adapter.weights_path.suffix != ".safetensors":
        warnings.append(
            f"{adapter.weights_path.name} was converted to {SAFETENSORS_NAME} "
            "(bf16 tensors of a .bin file are read as float32)"
        )

    config = build_config(adapter.config.raw, want)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        from safetensors.numpy import save_file

        (tmp / CONFIG_NAME).write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        save_file(tensors, str(tmp / SAFETENSORS_NAME), metadata={"format": "pt"})
        del tensors
        expected = {m.name: (m.r_new, m.scale) for m in rows}
        level = self_check(tmp, expected, shapes)
        level = verify_with_peft(tmp, expected, base_model=base_model, verify=verify) or level
        _install(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CompressionResult(
        output_dir=output_dir,
        modules=rows,
        config=config,
        verified=level,
        source=source,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- checks


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
        pair = written.pairs[name]
        assert pair.a_key is not None and pair.b_key is not None
        a_shape = tuple(written.tensor(pair.a_key).shape)
        b_shape = tuple(written.tensor(pair.b_key).shape)
        got_scale = written.config.scale_for(name, written.config.rank_for(name))
        if (
            written.config.rank_for(name) != k
            or (a_shape, b_shape) != tuple(shapes[name])
            or not math.isclose(got_scale, scale, rel_tol=_SCALE_RTOL, abs_tol=0.0)
        ):
            raise AdapterError(
                f"self-check of the written adapter failed for module {name}: config r="
                f"{written.config.rank_for(name)} scaling={got_scale} (asked r={k} scaling="
                f"{scale}), lora_A{a_shape} lora_B{b_shape}",
                hint="report this as a bug",
            )
    return VERIFIED_SELF


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
        r = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), name), config.r)
        alpha = config.alpha_pattern.get(
            get_pattern_key(config.alpha_pattern.keys(), name), config.lora_alpha
        )
        got = alpha / math.sqrt(r) if config.use_rslora else alpha / r
        if r != k or not math.isclose(got, scale, rel_tol=_SCALE_RTOL, abs_tol=0.0):
            raise AdapterError(
                f"peft reads module {name} as r={r}, scaling={got}; asked r={k}, scaling={scale}",
                hint="report this as a bug",
            )
    model = _base_skeleton(base_model, config)
    if model is None:
        return VERIFIED_PEFT_CONFIG
    _load_onto(model, directory, config, expected)
    return VERIFIED_PEFT_LOAD


def _base_skeleton(base_model: Any, config: Any) -> Any:
    """A module tree to load the adapter onto, or None when no base model is known."""
    import copy

    import torch

    if base_model is None:
        name = getattr(config, "base_model_name_or_path", None)
        if not name:
            return None
        try:
            return _skeleton_from_path(str(name), config, local_only=True)
        except Exception:
            # Not resolvable without the network (or not a transformers model): the config-level
            # check stands; an explicit base_model makes this an error instead.
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


def _skeleton_from_path(name: str, config: Any, local_only: bool) -> Any:
    """Build the base model's module tree on the meta device from its config.json."""
    import torch
    import transformers

    hf_config = transformers.AutoConfig.from_pretrained(name, local_files_only=local_only)
    cls = None
    for arch in getattr(hf_config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            break
    if cls is None:
        auto = (getattr(config, "auto_mapping", None) or {}).get("base_model_class")
        cls = getattr(transformers, auto, None) if auto else None
    if cls is None:
        task = str(getattr(config, "task_type", None) or "").upper()
        cls = getattr(transformers, _TASK_CLASSES.get(task, "AutoModel"))
    with torch.device("meta"):
        if hasattr(cls, "from_config"):
            return cls.from_config(hf_config)
        return cls(hf_config)


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
    modes = (rank is not None) + (energy is not None) + bool(per_layer)
    if modes != 1:
        raise UsageError(
            "choose exactly one of --rank K, --energy T or --per-layer",
            hint="e.g. gradience-hub compress SOURCE --output DIR --rank 4",
        )
    if energy is not None and not 0.0 < energy <= 1.0:
        raise UsageError(f"--energy must be in (0, 1], got {energy}", hint="e.g. --energy 0.9")
    adapter, info = load(source, revision, adapter_name)
    _check_output(Path(output), adapter, force)
    report = audit_adapter(adapter, info, energy if energy is not None else 0.9)
    ranks = plan_ranks(report, rank=rank, energy=energy, per_layer=per_layer)
    result = compress_adapter(
        adapter,
        ranks,
        output,
        verify=verify,
        base_model=base_model,
        force=force,
        source=info.display,
    )
    if rank is not None:
        result.mode = f"uniform rank {rank}"
    elif energy is not None:
        result.mode = f"energy {energy:g} per module"
    else:
        result.mode = "per-layer (audit suggestions)"
    return result


# --------------------------------------------------------------------------- text output

_VERIFIED_TEXT = {
    VERIFIED_PEFT_LOAD: "loaded onto the base model with peft (keys, shapes, r, scaling)",
    VERIFIED_PEFT_CONFIG: "config parsed by peft; keys, shapes, r and scaling checked "
    "(no base model available to load onto)",
    VERIFIED_SELF: "keys, shapes, r and scaling checked without peft "
    "(install the 'bench' extra for the peft reload check)",
}


def format_result(result: CompressionResult) -> str:
    """Per-module and total parameter reduction and relative Frobenius error, as a table."""
    rule = "─" * 40
    lines = ["GRADIENCE LoRA COMPRESSION", rule]
    if result.source:
        lines.append(f"Source: {result.source}")
    lines.append(f"Output: {result.output_dir}")
    if result.mode:
        lines.append(f"Ranks:  {result.mode}")
    width = max([len("Module"), len("Total")] + [len(m.name) for m in result.modules])
    head = (
        f"  {'Module':<{width}}  {'r':>4}  {'r_new':>5}  {'Params':>8}  {'New':>8}  "
        f"{'Saved':>6}  {'Rel. error':>10}"
    )
    lines += ["", head]
    for m in result.modules:
        lines.append(
            f"  {m.name:<{width}}  {m.r_old:>4}  {m.r_new:>5}  {human_count(m.params_old):>8}  "
            f"{human_count(m.params_new):>8}  {m.param_reduction * 100:>5.1f}%  "
            f"{m.rel_error:>10.3e}"
        )
    lines.append(
        f"  {'Total':<{width}}  {'':>4}  {'':>5}  {human_count(result.params_old):>8}  "
        f"{human_count(result.params_new):>8}  {result.param_reduction * 100:>5.1f}%  "
        f"{result.rel_error:>10.3e}"
    )
    lines += [
        "",
        f"Parameter reduction: {result.param_reduction * 100:.1f}% "
        f"({human_count(result.params_old)} -> {human_count(result.params_new)} LoRA params)",
        f"Relative Frobenius error: {result.rel_error:.3e} "
        f"(Eckart-Young bound {result.ey_bound:.3e}; as stored {result.stored_rel_error:.3e})",
        f"Check: {_VERIFIED_TEXT.get(result.verified, result.verified)}",
    ]
    if result.warnings:
        lines += [""] + [f"Warning: {w}" for w in result.warnings]
    return "\n".join(lines) + "\n"
