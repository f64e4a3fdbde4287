"""Pure math of two LoRA updates side by side: subspace overlap, cosine, shares of a linear merge.

Every figure comes from each update's thin SVD ``dW = U diag(S) V^T`` computed by
:func:`gradience_hub.spectral.lora_svd` (thin QR of the factors, an ``r x r`` core): the
``d_out x d_in`` product is never formed. With ``P_out = U_a^T U_b`` and ``P_in = V_a^T V_b``
(``r_a x r_b``), the Frobenius inner product is

    <dW_a, dW_b>_F = trace(V_a S_a U_a^T U_b S_b V_b^T) = sum_ij S_a[i] S_b[j] P_out[i,j] P_in[i,j]

which equals the factor form ``s_a s_b trace((B_a^T B_b)(A_b A_a^T))`` but is computed from
orthonormal bases, so its rounding error is ``O(eps) ||dW_a|| ||dW_b||`` however unbalanced
``B`` and ``A`` are. Norms are ``||S||``. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradience_hub import spectral

# A merged update whose norm is below this fraction of its inputs' (|w_a| ||dW_a|| +
# |w_b| ||dW_b||) cancelled: its direction is rounding noise, so shares are undefined and
# nothing of either adapter is retained. The figures of a merge we do report have a relative
# rounding error of about eps / CANCEL_TOL (see `merged_norm`): below 1e-9.
CANCEL_TOL = 1e-6
# ||M|| / scale from which the one-line expansion of ||M||^2 is accurate (`merged_norm`).
_EXPANSION_MIN = 1e-3


@dataclass(frozen=True)
class Update:
    """One module's update ``dW = U diag(S) V^T`` (float64) and its energy rank ``k``."""

    U: np.ndarray
    S: np.ndarray
    V: np.ndarray
    k: int
    r: int

    @property
    def norm(self) -> float:
        """``||dW||_F``."""
        return float(np.sqrt(np.sum(self.S**2)))

    @property
    def stable_rank(self) -> float:
        """``||dW||_F^2 / ||dW||_2^2`` (0 for a zero update)."""
        return spectral.stable_rank(self.S)


def update(B: np.ndarray, A: np.ndarray, scale: float, energy: float = 0.9) -> Update:
    """The SVD form of ``scale * B @ A`` (QR route) with its energy rank at ``energy``."""
    U, S, V = spectral.lora_svd(B, A, scale)
    return Update(U=U, S=S, V=V, k=spectral.energy_rank(S, energy), r=int(np.shape(A)[0]))


def inner(a: Update, b: Update) -> float:
    """``<dW_a, dW_b>_F`` through the orthonormal bases (see the module docstring)."""
    P_out = a.U.T @ b.U
    P_in = a.V.T @ b.V
    return float(np.einsum("i,ij,ij,j->", a.S, P_out, P_in, b.S))


def overlap(X: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared cosine of the principal angles between span(X) and span(Y) (orthonormal
    columns): ``||X^T Y||_F^2 / min(k_X, k_Y)``, and the cosines themselves (descending)."""
    k = min(X.shape[1], Y.shape[1])
    C = X.T @ Y
    cosines = np.clip(np.linalg.svd(C, compute_uv=False)[:k], 0.0, 1.0)
    return float(np.sum(C**2)) / k, cosines


@dataclass(frozen=True)
class PairFigures:
    """The merge-audit figures of one module shared by adapters a and b.

    None marks a figure that is undefined: overlaps and cosine when either update is zero,
    ``norm_ratio`` when ``dW_b`` is zero, shares and dominance when the merge cancels.
    """

    overlap_out: float | None
    overlap_in: float | None
    principal_angle_cosines: list[float]
    cosine: float | None
    inner_product: float
    norm_ratio: float | None
    frobenius_norm_a: float
    frobenius_norm_b: float
    merged_norm: float
    share_a: float | None
    share_b: float | None
    retained_a: float
    retained_b: float
    dominance: float | None

    @property
    def overlap(self) -> float | None:
        """The overlap the verdict uses: the smaller side (an update pair that shares output
        directions but reads orthogonal inputs does not interfere, and vice versa)."""
        if self.overlap_out is None or self.overlap_in is None:
            return None
        return min(self.overlap_out, self.overlap_in)


def merged_norm(a: Update, b: Update, w_a: float, w_b: float, ab: float | None = None) -> float:
    """``||w_a dW_a + w_b dW_b||_F``, accurate to ``O(eps)`` of the inputs' norm ``scale``.

    The expansion ``||M||^2 = w_a^2 ||dW_a||^2 + w_b^2 ||dW_b||^2 + 2 w_a w_b <dW_a, dW_b>`` is
    one line given the inner product ``ab``, but its relative error is about
    ``eps (scale / ||M||)^2``: fine (below 2.2e-10) while ``||M|| >= 1e-3 scale``. Below that,
    where the updates nearly cancel, one thin QR of the stacked bases ``[U_a, U_b]`` and
    ``[V_a, V_b]`` gives ``M = Q_U (R_U diag(w_a S_a, w_b S_b) R_V^T) Q_V^T``: the cancellation
    then happens entry by entry in a small core, with relative error ``eps scale / ||M||``.
    """
    ab = inner(a, b) if ab is None else ab
    scale = abs(w_a) * a.norm + abs(w_b) * b.norm
    m2 = (w_a * a.norm) ** 2 + (w_b * b.norm) ** 2 + 2.0 * w_a * w_b * ab
    if m2 >= (_EXPANSION_MIN * scale) ** 2:
        return float(np.sqrt(m2))
    D = np.concatenate([w_a * a.S, w_b * b.S])
    if not D.any():
        return 0.0
    R_U = np.asarray(np.linalg.qr(np.hstack([a.U, b.U]), mode="r"))
    R_V = np.asarray(np.linalg.qr(np.hstack([a.V, b.V]), mode="r"))
    return float(np.linalg.norm((R_U * D) @ R_V.T))


def linear_merge(
    n_a: float, n_b: float, ab: float, m: float, w_a: float, w_b: float
) -> dict[str, float | None]:
    """Shares and retained fractions of ``M = w_a dW_a + w_b dW_b`` from the norms ``n_a``,
    ``n_b``, the inner product ``ab = <dW_a, dW_b>_F`` and ``m = ||M||_F``:

    ``share_a = <w_a dW_a, M> / ||M||^2`` (shares sum to 1; negative when a's part points
    against the merge), ``retained_a = <dW_a, M> / (||dW_a|| ||M||)`` (the cosine between the
    adapter and the merged update; 0 when the merge cancels).
    """
    scale = abs(w_a) * n_a + abs(w_b) * n_b
    if scale == 0.0 or m <= CANCEL_TOL * scale:
        return {"share_a": None, "share_b": None, "retained_a": 0.0, "retained_b": 0.0}
    a_m = w_a * n_a**2 + w_b * ab  # <dW_a, M>
    b_m = w_b * n_b**2 + w_a * ab  # <dW_b, M>
    return {
        "share_a": w_a * a_m / m**2,
        "share_b": w_b * b_m / m**2,
        "retained_a": a_m / (n_a * m) if n_a else 0.0,
        "retained_b": b_m / (n_b * m) if n_b else 0.0,
    }


def pair_figures(a: Update, b: Update, w_a: float, w_b: float) -> PairFigures:
    """All figures of one shared module (``a``, ``b`` from :func:`update`)."""
    n_a, n_b = a.norm, b.norm
    ab = inner(a, b)
    overlap_out: float | None = None
    overlap_in: float | None = None
    cosine: float | None = None
    cosines = np.zeros(0)
    if a.k and b.k:
        overlap_out, cosines = overlap(a.U[:, : a.k], b.U[:, : b.k])
        overlap_in, _ = overlap(a.V[:, : a.k], b.V[:, : b.k])
        cosine = ab / (n_a * n_b)
    m = merged_norm(a, b, w_a, w_b, ab)
    merged = linear_merge(n_a, n_b, ab, m, w_a, w_b)
    share_a, share_b = merged["share_a"], merged["share_b"]
    return PairFigures(
        overlap_out=overlap_out,
        overlap_in=overlap_in,
        principal_angle_cosines=[float(c) for c in cosines],
        cosine=cosine,
        inner_product=ab,
        norm_ratio=n_a / n_b if n_b else None,
        frobenius_norm_a=n_a,
        frobenius_norm_b=n_b,
        merged_norm=m,
        share_a=share_a,
        share_b=share_b,
        retained_a=float(merged["retained_a"] or 0.0),
        retained_b=float(merged["retained_b"] or 0.0),
        dominance=max(share_a, share_b) if share_a is not None and share_b is not None else None,
    )


def retained(source: Update, merged: Update) -> float:
    """``<dW_source, dW_merged>_F / (||dW_source|| ||dW_merged||)``: how much of an adapter a
    merged update keeps (0 when either is zero)."""
    n = source.norm * merged.norm
    return inner(source, merged) / n if n else 0.0
