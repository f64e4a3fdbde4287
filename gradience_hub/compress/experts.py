"""Compressing peft ``target_parameters`` (MoE expert) LoRA, written back as peft stores it.

peft's ``lora.ParamWrapper`` keeps one rank per parameter for all ``E`` experts, stacked:
``lora_A`` is ``(r * E, d_in)`` (expert ``e`` in rows ``e*r .. (e+1)*r``) and ``lora_B`` is
``(d_out, r * E)`` (expert ``e`` in columns ``e, e + E, ...``: ``get_delta_weight`` reshapes it to
``(d_out, r, E)``; :mod:`gradience_hub.adapter.moe`). Each expert is truncated on its own
(Eckart-Young per expert, balanced factors as for any module), but the stacked layout needs one
``k`` per parameter, so a parameter's ``k`` is the largest of its experts' targets: no expert is
truncated below what it asked for, and the warning says when the targets differed. The
config's ``rank_pattern``/``alpha_pattern`` key is ``<module>.<parameter>``, the name peft
matches for a ParamWrapper; the scale ``alpha / r`` is kept (``alpha = scale * k``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from gradience_hub import spectral
from gradience_hub.adapter import Adapter, LoraModule, widen
from gradience_hub.compress.plan import RankRule, check_rank, config_number
from gradience_hub.compress.result import ModuleCompression


@dataclass
class StackedOutput:
    """What compressing the experts of every stacked pair produced."""

    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    rows: list[ModuleCompression] = field(default_factory=list)
    want: dict[str, tuple[int, int | float]] = field(default_factory=dict)  # parameter -> k, a
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    peft_names: dict[str, str] = field(default_factory=dict)  # expert -> peft's layer name
    config_keys: dict[str, str] = field(default_factory=dict)  # expert -> pattern key


def compress_experts(
    adapter: Adapter,
    ranks: Mapping[str, int] | RankRule,
    factored: Callable[[LoraModule], spectral.FactoredSVD],
    cast: Callable[[np.ndarray, str], np.ndarray],
) -> StackedOutput:
    """Truncate every expert of ``adapter``'s stacked pairs; ``cast(X, key)`` rounds a factor to
    the dtype of the stored tensor ``key``."""
    out = StackedOutput()
    groups: dict[str, list[str]] = {}
    for name, expert in adapter.experts.items():
        groups.setdefault(expert.stored, []).append(name)
    for stored, names in groups.items():
        pair = adapter.pairs[stored]
        assert pair.a_key is not None and pair.b_key is not None
        modules = [adapter.module(n) for n in names]
        svds = [factored(m) for m in modules]
        targets = []
        for m, f in zip(modules, svds, strict=True):
            if isinstance(ranks, RankRule):
                targets.append(ranks.target(m.name, m.r, f.S))
            else:
                k_e = int(ranks.get(m.name, m.r))
                check_rank(m.name, k_e, m.r)
                targets.append(k_e)
        k = max(targets)
        parameter = adapter.experts[names[0]].parameter
        if len(set(targets)) > 1:
            out.warnings.append(
                f"{parameter}: peft stores one rank for all experts; every expert kept at the "
                f"largest asked rank {k} (asked {min(targets)}..{k})"
            )
        n, r = len(modules), modules[0].r
        d_out, d_in = modules[0].shape
        if k == r:
            A_out, B_out = adapter.tensor(pair.a_key), adapter.tensor(pair.b_key)
        else:
            A_out = np.empty((k * n, d_in), dtype=adapter.tensor(pair.a_key).dtype)
            B_out = np.empty((d_out, k * n), dtype=adapter.tensor(pair.b_key).dtype)
        for e, (m, f) in enumerate(zip(modules, svds, strict=True)):
            norm = float(np.sqrt(np.sum(f.S**2)))
            if k == r:
                rel = bound = stored_err = 0.0
            else:
                B_k, A_k = f.truncated(k)
                A_e, B_e = cast(A_k, pair.a_key), cast(B_k, pair.b_key)
                A_out[e * k : (e + 1) * k] = A_e
                B_out[:, e::n] = B_e
                rel = f.core_error(k) / norm if norm else 0.0
                bound = spectral.truncation_error(f.S, k)
                stored_err = f.error(widen(B_e), widen(A_e)) / norm if norm else 0.0
            out.rows.append(
                ModuleCompression(
                    name=m.name,
                    kind=m.kind,
                    shape=(d_out, d_in),
                    dtype=m.dtype,
                    r_old=r,
                    r_new=k,
                    params_old=m.params,
                    params_new=k * (d_out + d_in),
                    scale=m.scale,
                    alpha_new=float(m.scale * k),
                    rel_error=rel,
                    ey_bound=bound,
                    stored_rel_error=stored_err,
                    fro_norm=norm * abs(m.scale),
                )
            )
            out.peft_names[m.name] = stored
            out.config_keys[m.name] = parameter
        out.tensors[pair.a_key] = np.ascontiguousarray(A_out)
        out.tensors[pair.b_key] = np.ascontiguousarray(B_out)
        for name in names:
            out.shapes[name] = (tuple(A_out.shape), tuple(B_out.shape))
        out.want[parameter] = (k, config_number(modules[0].scale * k))
    return out
