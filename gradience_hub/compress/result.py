"""What a compression wrote and lost: per-module and overall figures, and their text.

:class:`ModuleCompression` (one module's ranks, parameters and relative errors) and
:class:`CompressionResult` (all modules, overall errors, the written config, the check level
reached), the ``--json`` document (``to_dict``) and the terminal table (:func:`format_result`).
Plain data and formatting, apart from the writer (:mod:`gradience_hub.compress`) and the
checks (:mod:`gradience_hub.compress.verify`, whose ``VERIFIED_*`` levels it names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience_hub.compress.verify import (
    VERIFIED_FILE,
    VERIFIED_PEFT_CONFIG,
    VERIFIED_PEFT_LOAD,
    VERIFIED_SELF,
)
from gradience_hub.markdown import human_count

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


# --------------------------------------------------------------------------- text output

_VERIFIED_TEXT = {
    VERIFIED_PEFT_LOAD: "loaded onto the base model with peft (keys, shapes, r, scaling)",
    VERIFIED_PEFT_CONFIG: "config parsed by peft; keys, shapes, r and scaling checked "
    "(no base model available to load onto)",
    VERIFIED_FILE: "re-read with the file format's own scale rule (keys, shapes, r, scaling)",
    VERIFIED_SELF: "keys, shapes, r and scaling re-read without peft "
    "(--verify peft also loads the result with peft)",
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
