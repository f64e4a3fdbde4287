"""Compressing peft's LoRA on a grouped convolution (``groups = g > 1``), group by group.

peft puts a full conv ``lora_A`` (``c_in -> r``) before a grouped pointwise ``lora_B``
(``r -> c_out`` in ``g`` groups): output-channel block ``j`` reads only rank channels
``j r/g .. (j+1) r/g``. On flattened input patches the update is therefore ``g`` independent
LoRA updates stacked by rows, block ``j`` being ``B_j @ A_j`` (``B_j`` is ``c_out/g x r/g``,
``A_j`` the matching ``r/g`` rows of ``lora_A``). A grouped conv LoRA of rank ``k`` has the same
structure with ``k/g`` rank channels per group (peft requires ``g`` to divide the rank), and
because the row blocks are independent, its best approximation of the update is every block
truncated to ``k/g`` on its own (Eckart-Young per block, balanced factors as for any module).
That is at or above the Eckart-Young bound of the whole update, which is reported beside it:
the two differ when the groups' spectra differ.

Target ranks follow the module's rule in multiples of ``g``: ``--rank K`` must be one; an
energy threshold takes the smallest multiple whose per-group truncation keeps that fraction of
the energy; the per-layer suggestion is rounded up to the next multiple.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from gradience_hub import spectral
from gradience_hub.adapter import LoraModule, widen
from gradience_hub.compress.plan import RankRule, check_rank
from gradience_hub.errors import UsageError


@dataclass(frozen=True)
class GroupedTruncation:
    """A grouped conv module truncated to rank ``k``: the stored factors as 2-D matrices
    (``A`` is ``k x c_in*kernel``, ``B`` is ``c_out x k/g``, peft's grouped ``lora_B``) and the
    measured errors (absolute Frobenius norms, like ``norm``)."""

    k: int
    A: np.ndarray
    B: np.ndarray
    error: float
    stored_error: float


def group_svds(
    module: LoraModule, factored: Callable[..., spectral.FactoredSVD]
) -> list[spectral.FactoredSVD]:
    """The factored SVD of each group's block ``B_j @ A_j`` (unscaled, as compress truncates)."""
    g = module.groups
    rows, per_group = module.B.shape[0] // g, module.r // g
    return [
        factored(
            module,
            module.B[j * rows : (j + 1) * rows, j * per_group : (j + 1) * per_group],
            module.A[j * per_group : (j + 1) * per_group],
        )
        for j in range(g)
    ]


def grouped_target(
    module: LoraModule,
    ranks: Mapping[str, int] | RankRule,
    svds: list[spectral.FactoredSVD],
    S: np.ndarray,
) -> int:
    """The target rank of a grouped module: a multiple of its groups (see the module doc)."""
    g, r = module.groups, module.r
    if isinstance(ranks, RankRule) and ranks.energy is not None:
        total = float(np.sum(S**2))
        for k in range(g, r + 1, g):
            kept = sum(float(np.sum(f.S[: k // g] ** 2)) for f in svds)
            if kept >= ranks.energy * total * (1 - 8 * np.finfo(np.float64).eps):
                return k
        return r
    if isinstance(ranks, RankRule) and ranks.per_layer:
        return min(r, g * math.ceil(ranks.target(module.name, r, S) / g))
    if isinstance(ranks, RankRule):
        k = ranks.target(module.name, r, S)
    else:
        k = ranks.get(module.name, r)
    check_rank(module.name, k, r)
    if k % g:
        raise UsageError(
            f"module {module.name}: target rank {k} is not a multiple of its conv's groups ({g})",
            hint=f"peft's LoRA on a grouped conv needs a rank divisible by groups; e.g. {g}",
        )
    return int(k)


def truncate_grouped(
    module: LoraModule,
    svds: list[spectral.FactoredSVD],
    k: int,
    cast_a: Callable[[np.ndarray], np.ndarray],
    cast_b: Callable[[np.ndarray], np.ndarray],
) -> GroupedTruncation:
    """Every group truncated to ``k / groups``; ``cast_*`` round to the stored dtype."""
    per_group = k // module.groups
    A_parts, B_parts = [], []
    error2 = stored2 = 0.0
    for f in svds:
        B_j, A_j = f.truncated(per_group)
        A_out, B_out = cast_a(A_j), cast_b(B_j)
        error2 += f.core_error(per_group) ** 2
        stored2 += f.error(widen(B_out), widen(A_out)) ** 2
        A_parts.append(A_out)
        B_parts.append(B_out)
    return GroupedTruncation(
        k=k,
        A=np.concatenate(A_parts, axis=0),
        B=np.concatenate(B_parts, axis=0),
        error=math.sqrt(error2),
        stored_error=math.sqrt(stored2),
    )
