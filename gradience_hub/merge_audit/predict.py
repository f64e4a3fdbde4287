"""What each peft merge method writes for one module, predicted from the factors (pure math).

peft's ``add_weighted_adapter`` (``tuners/lora/model.py``) builds the merged module as follows,
with weights ``w_i`` and scales ``s_i``; we reproduce it exactly in float64 so that the retained
fraction of each source in the written adapter can be predicted before peft runs:

- ``cat``: ``A = [w_1 s_1 A_1; ...]``, ``B = [B_1, ...]``: the update is exactly the linear
  merge ``sum_i w_i dW_i`` (rank ``sum r_i``).
- ``svd``: the same sum, truncated by SVD to rank ``max r_i`` (peft's default ``svd_rank``).
- ``linear``: the factors are averaged, ``B = sum_i c_i B_i`` and ``A = sum_i sign_i c_i A_i``
  with ``c_i = sqrt(|w_i s_i|)``, so the update ``B A`` carries the cross terms
  ``c_i c_j B_i A_j`` too: it is not the linear merge of the updates unless the adapters are
  identical (peft calls it "a very rough approximation").
- ``ties`` prunes and sign-elects the entries of each factor: not predicted from the geometry.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gradience_hub import spectral
from gradience_hub.merge_audit.geometry import Update, update

METHODS = ("cat", "linear", "svd", "ties")
PREDICTED = ("cat", "linear", "svd")


def merged_update(
    method: str,
    factors: Sequence[tuple[np.ndarray, np.ndarray, float]],
    weights: Sequence[float],
    energy: float = 0.9,
) -> Update | None:
    """The update peft's ``method`` writes for one module from ``(B_i, A_i, s_i)`` of the
    sources that have it and their weights; None for a method we do not predict (``ties``)."""
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}")
    if method == "ties":
        return None
    B64 = [np.asarray(B, dtype=np.float64) for B, _, _ in factors]
    A64 = [np.asarray(A, dtype=np.float64) for _, A, _ in factors]
    scales = [float(s) for _, _, s in factors]
    if method == "linear":
        c = [np.sqrt(abs(w * s)) for w, s in zip(weights, scales, strict=True)]
        sign = [1.0 if w * s >= 0 else -1.0 for w, s in zip(weights, scales, strict=True)]
        B_m = sum(ci * B for ci, B in zip(c, B64, strict=True))
        A_m = sum(si * ci * A for si, ci, A in zip(sign, c, A64, strict=True))
        return update(np.asarray(B_m), np.asarray(A_m), 1.0, energy)
    B_cat = np.hstack(B64)
    A_cat = np.vstack([w * s * A for w, s, A in zip(weights, scales, A64, strict=True)])
    full = update(B_cat, A_cat, 1.0, energy)
    if method == "cat":
        return full
    rank = max(A.shape[0] for A in A64)
    U, S, V = full.U[:, :rank], full.S[:rank], full.V[:, :rank]
    return Update(U=U, S=S, V=V, k=spectral.energy_rank(S, energy), r=rank)
