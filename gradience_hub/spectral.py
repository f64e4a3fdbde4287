"""Spectral math of a LoRA update, pure numpy: no I/O, no printing.

A LoRA module's update is ``dW = s * B @ A`` with ``B`` of shape ``(d_out, r)`` and ``A`` of
shape ``(r, d_in)``. Its non-zero singular values are those of the ``r x r`` core
``s * R_B @ R_A.T`` where ``B = Q_B R_B`` and ``A.T = Q_A R_A`` are thin QR factorisations:
``dW = s Q_B (R_B R_A^T) Q_A^T`` and ``Q_B``, ``Q_A`` have orthonormal columns. That costs
``O((d_out + d_in) r^2)`` instead of the ``O(d_out d_in min(d_out, d_in))`` of a dense SVD of
the materialised product, and never allocates ``d_out x d_in``.

Everything is computed in float64: bf16/fp16 factors are exact in float64, and the
Eckart-Young and energy computations need more headroom than float32 gives for spectra that
fall over six orders of magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EPS = float(np.finfo(np.float64).eps)

# Budget for each factor's one-pass Cholesky error in the audit (see `r_factor`): the two
# factors and the core's SVD together stay well inside the 1e-9 the audit promises.
_ONE_PASS_BUDGET = 1e-10
# ... and for explicit bases that are compared with each other (`lora_svd`): orthonormal to ~1e-11.
_BASIS_BUDGET = 1e-11

# CholeskyQR2 is as accurate as Householder QR (orthogonality and backward error O(u)) while
# the Gram matrix's Cholesky succeeds, which is guaranteed for cond(X) < ~u^-1/2 (~6.7e7 in
# float64; Yamamoto et al. 2015). We keep a wide margin and fall back to Householder above it.
_CHOLQR2_MAX_COND = 1e6


def _cholesky_r(gram: np.ndarray, checked: bool = False) -> np.ndarray | None:
    """Upper-triangular R with R^T R = gram, or None when gram is not numerically SPD.
    ``checked``: the caller knows gram is finite (the check is one pass over it)."""
    if not checked and not np.isfinite(gram).all():  # LAPACK must never see inf (it prints)
        return None
    try:
        return np.linalg.cholesky(gram).T
    except np.linalg.LinAlgError:
        return None


def _equilibrated_cholesky(G: np.ndarray, n: int, budget: float) -> tuple[np.ndarray, bool] | None:
    """``(R1, one_pass)``: ``R1^T R1 = G`` (the Gram matrix of an ``n x k`` ``X``) from a
    Cholesky of the column-equilibrated ``G_hat = D^-1 G D^-1`` (``D`` the column norms), and
    whether ``R1`` alone meets ``budget``: the one-pass error bound
    ``k (n + k + 1) u / lambda_min(G_hat)`` (see :func:`implicit_qr`) is at most ``budget``
    exactly when ``G_hat - lam I`` is positive definite for ``lam = k (n + k + 1) u / budget``,
    which a second Cholesky decides (a sixth of an eigenvalue solve's cost). None when ``G`` is
    not numerically SPD (a zero column, overflow).
    """
    k = G.shape[0]
    d = np.sqrt(G.diagonal())
    # One comparison refuses a zero column, an overflowed diagonal and NaN (all compare False).
    if not ((d > 0) & (d < np.inf)).all():
        return None
    G_hat = G / np.multiply.outer(d, d)
    R_hat = _cholesky_r(G_hat)
    if R_hat is None or not (R_hat.diagonal() > 0).all():
        return None
    lam = k * (n + k + 1) * _EPS / budget
    # G_hat has a unit diagonal, so lambda_min <= 1: no shift of 1 or more can be certified.
    # The Cholesky's own backward error (~k u) is far below any shift a budget allows.
    one_pass = False
    if lam < 1.0:
        G_hat.flat[:: k + 1] -= lam  # G_hat - lam I in place: R_hat is already taken from it
        one_pass = _cholesky_r(G_hat, checked=True) is not None
    # |R_hat| <= 1 entrywise (its columns have unit norm), so R_hat * d is finite.
    return R_hat * d, one_pass


def _cholesky_qr(
    X: np.ndarray, budget: float, basis: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray] | None:
    """Routes 1 and 2 of :func:`implicit_qr` on a float64 ``X``: ``(Y, T, R)`` with
    ``T = None`` unless ``basis``; None when neither applies (Householder's turn)."""
    n, k = X.shape
    if n < 2 * k:
        return None
    first = _equilibrated_cholesky(X.T @ X, n, budget)
    if first is None:
        return None
    R1, one_pass = first
    if one_pass:
        return X, (np.linalg.inv(R1) if basis else None), R1
    if float(np.linalg.cond(R1)) <= _CHOLQR2_MAX_COND:
        # inv(R1) is an r x r inverse, then one GEMM: much faster than a solve with n
        # right-hand sides, and CholeskyQR2 tolerates it at this conditioning.
        Q1 = X @ np.linalg.inv(R1)
        R2 = _cholesky_r(Q1.T @ Q1)
        if R2 is not None and np.all(np.diag(R2) > 0):
            return Q1, (np.linalg.inv(R2) if basis else None), R2 @ R1
    return None


def r_factor(X: np.ndarray) -> np.ndarray:
    """The ``k x k`` upper-triangular R of a thin QR of ``X`` (``n x k``), in float64.

    Only ``R^T R = X^T X`` matters to the callers (singular values of products of R factors),
    so the sign convention of R's rows is left to each route. The routes of
    :func:`implicit_qr`, without its basis: the one-pass Cholesky of the equilibrated Gram
    matrix when its error bound is below ``_ONE_PASS_BUDGET`` (a multiplicative perturbation
    of R, so every singular value of a product of such factors moves by at most about the
    bound, relative: Eisenstat & Ipsen), CholeskyQR2 while ``cond(X) <= _CHOLQR2_MAX_COND``,
    LAPACK Householder QR for the rest (rank-deficient or ill-conditioned X, short X).
    """
    X = np.asarray(X, dtype=np.float64)
    R = _r_factor(X)
    if R is not None:
        return R
    # Entries near float64's range overflow the Gram matrix or R itself: factor X / c for a
    # power of two c (exact scaling) and scale back; a still-infinite R means the update does not
    # fit in float64 at all, which the callers report.
    c = 2.0 ** np.round(np.log2(np.max(np.abs(X))))
    R = _r_factor(X / c)
    return c * R if R is not None else np.full((X.shape[1], X.shape[1]), np.inf)


def _r_factor(X: np.ndarray) -> np.ndarray | None:
    """R of ``X`` by the routes of :func:`r_factor`, or None where it is not finite."""
    k = X.shape[1]
    routed = _cholesky_qr(X, _ONE_PASS_BUDGET, basis=False)
    if routed is not None:
        R = routed[2]
    elif not X.any():  # an untrained factor (B = 0): R = 0, no factorisation needed
        return np.zeros((k, k))
    else:
        R = np.asarray(np.linalg.qr(X, mode="r"))
        if R.shape[0] < k:  # n < k: pad to k x k so the core stays r x r
            R = np.vstack([R, np.zeros((k - R.shape[0], k))])
    return R if np.isfinite(R).all() else None


def core_matrix(B: np.ndarray, A: np.ndarray, scale: float) -> np.ndarray:
    """The ``r x r`` matrix whose singular values are those of ``scale * B @ A``."""
    R_B = r_factor(B)
    R_A = r_factor(np.asarray(A).T)
    with np.errstate(over="ignore", invalid="ignore"):
        core = float(scale) * (R_B @ R_A.T)
    return _finite_or_raise(core)


# The energy figures sum squared singular values: an update whose entries pass 1e150 would
# overflow them (and no trained LoRA update comes within a hundred orders of magnitude of it).
_MAX_CORE = 1e150


def _finite_or_raise(core: np.ndarray) -> np.ndarray:
    """LAPACK prints to stdout (and returns garbage) on inf/NaN input: refuse it first."""
    # NaN compares False, so one reduction refuses NaN, inf and the too-large alike.
    if core.size and not float(np.max(np.abs(core))) <= _MAX_CORE:
        raise OverflowError(
            "the scaled update B @ A overflows float64 (factors or scale too large)"
        )
    return core


def lora_singular_values(B: np.ndarray, A: np.ndarray, scale: float) -> np.ndarray:
    """Singular values (descending, float64, length r) of ``scale * B @ A``.

    Never forms the ``d_out x d_in`` product.
    """
    return np.linalg.svd(core_matrix(B, A, scale), compute_uv=False)


# Relative accuracy budget of the factors compress writes (see `implicit_qr`): 60x below the
# float32 rounding of a stored factor (6e-8), 2e6x below bf16's.
_COMPRESS_BUDGET = 1e-9


def implicit_qr(
    X: np.ndarray, budget: float = _COMPRESS_BUDGET
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin QR ``X = Q R`` of an ``n x k`` matrix in float64, with ``Q = Y @ T`` kept implicit.

    The Cholesky routes of :func:`r_factor` at BLAS-3 speed, never forming ``Q`` (the callers
    only apply it to ``k``-column blocks, as ``Y (T M)``):

    1. One Cholesky pass of the column-equilibrated Gram matrix ``D^-1 X^T X D^-1`` (``D`` the
       column norms): ``Y = X``, ``T = R^-1``. Cholesky's backward error is componentwise
       relative to ``D`` (van der Sluis), so ``R^T R = X^T X + D F D`` with
       ``||F|| <= k (n + k + 1) u``, i.e. a multiplicative perturbation of ``R`` of at most
       ``k (n + k + 1) u / sigma_min(X D^-1)^2``; taken when that is below ``budget``.
       Column scaling is what trained LoRA factors need: their condition number is mostly the
       spread of their column norms (a decaying spectrum), not near-dependence.
    2. CholeskyQR2 while ``cond(X) <= _CHOLQR2_MAX_COND`` (orthogonal to O(u)):
       ``Y = Q_1 = X R_1^-1``, ``T = R_2^-1``.
    3. LAPACK Householder QR for the rest (rank-deficient, ill-conditioned or short ``X``):
       ``Y = Q``, ``T = I``.

    Applying ``Q`` as ``Y (T M)`` instead of an explicit ``Q`` costs at most ``u cond(R)``
    relative more on routes 1 and 2. Householder QR with an explicit ``Q`` costs several times
    this on tall factors.
    """
    X = np.asarray(X, dtype=np.float64)
    routed = _cholesky_qr(X, budget, basis=True)
    if routed is not None:
        Y, T, R = routed
        assert T is not None
        return Y, T, R
    Q, R = np.linalg.qr(X, mode="reduced")
    return np.asarray(Q), np.eye(Q.shape[1]), np.asarray(R)


@dataclass(frozen=True)
class FactoredSVD:
    """The SVD of ``dW = scale * B @ A`` kept in factored form: ``dW = Q_B U diag(S) Vh Q_A^T``
    with ``B = Q_B R_B``, ``A^T = Q_A R_A``, ``core = scale R_B R_A^T = U diag(S) Vh`` and the
    orthonormal bases implicit, ``Q_B = Y_B T_B`` and ``Q_A = Y_A T_A`` (:func:`implicit_qr`).

    :meth:`truncated` gives the best rank-``k`` factors (Eckart-Young), :meth:`error` measures
    any factors against ``dW``; neither forms the ``d_out x d_in`` product.
    """

    Y_B: np.ndarray
    T_B: np.ndarray
    Y_A: np.ndarray
    T_A: np.ndarray
    core: np.ndarray
    U: np.ndarray
    S: np.ndarray
    Vh: np.ndarray

    def truncated(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Balanced best rank-``k`` factors ``B_k = Q_B U_k sqrt(S_k)`` (``d_out x k``) and
        ``A_k = sqrt(S_k) V_k^T Q_A^T`` (``k x d_in``): ``B_k @ A_k`` is the truncated update
        (scale included) and both factors carry the same norm, which keeps low-precision
        storage of either factor equally accurate."""
        root = np.sqrt(self.S[:k])
        B_k = self.Y_B @ (self.T_B @ (self.U[:, :k] * root))
        A_k = (self.T_A @ (self.Vh[:k].T * root)).T @ self.Y_A.T
        return B_k, A_k

    def core_error(self, k: int) -> float:
        """``||dW - B_k A_k||_F`` of :meth:`truncated`, measured on the ``r x r`` core: the
        truncated factors lie in the column spaces of ``Q_B`` and ``Q_A`` by construction, so
        the residual is ``Q_B (core - U_k S_k V_k^T) Q_A^T``. Computed from the factors, not
        from ``S``: it agrees with the Eckart-Young value only if the truncation is optimal."""
        root = np.sqrt(self.S[:k])
        approx = (self.U[:, :k] * root) @ (root[:, None] * self.Vh[:k])
        return float(np.linalg.norm(self.core - approx))

    def error(self, B_t: np.ndarray, A_t: np.ndarray) -> float:
        """``||dW - B_t @ A_t||_F`` for any factors ``B_t`` (``d_out x t``), ``A_t``
        (``t x d_in``), e.g. the truncated factors rounded to bf16, without the product.

        Split ``B_t = Q_B C + B_perp`` and ``A_t^T = Q_A D + A_perp`` (``B_perp`` orthogonal to
        ``Q_B``'s columns, ``A_perp`` to ``Q_A``'s). Then ``dW - B_t A_t`` is the sum of
        ``Q_B (core - C D^T) Q_A^T``, ``-Q_B C A_perp^T``, ``-B_perp D^T Q_A^T`` and
        ``-B_perp A_perp^T``, which are mutually orthogonal in the Frobenius inner product, so
        the squared norm is the sum of four terms: an ``r x r`` difference (no cancellation
        between ``dW`` and its approximation) and three Gram traces of the residual parts
        (``||X Y||_F^2 = <X^T X, Y Y^T>``). BLAS-3 throughout.
        """
        B_t = np.asarray(B_t, dtype=np.float64)
        A_tT = np.asarray(A_t, dtype=np.float64).T
        C = self.T_B.T @ (self.Y_B.T @ B_t)
        D = self.T_A.T @ (self.Y_A.T @ A_tT)
        # Gram of the residual parts without forming them: B_t^T B_t = C^T C + B_perp^T B_perp
        # (Q_B orthonormal). The subtraction cancels the part of B_t in Q_B's span; what is
        # left is rounding-sized (~4e-6 of B_t^T B_t for bf16) and known to ~n u / 4e-6
        # relative, which is ample: it only enters through the cross terms, reported to four
        # digits.
        G_Bp = B_t.T @ B_t - C.T @ C
        G_Ap = A_tT.T @ A_tT - D.T @ D
        inner = float(np.sum((self.core - C @ D.T) ** 2))
        cross = (
            float(np.sum((C.T @ C) * G_Ap))
            + float(np.sum(G_Bp * (D.T @ D)))
            + float(np.sum(G_Bp * G_Ap))
        )
        return math.sqrt(inner + max(cross, 0.0))


def factored_svd(
    B: np.ndarray, A: np.ndarray, scale: float, budget: float = _COMPRESS_BUDGET
) -> FactoredSVD:
    """:class:`FactoredSVD` of ``scale * B @ A`` from thin QRs of the factors
    (:func:`implicit_qr` at the relative accuracy ``budget``)."""
    Y_B, T_B, R_B = implicit_qr(B, budget)
    Y_A, T_A, R_A = implicit_qr(np.asarray(A).T, budget)
    with np.errstate(over="ignore", invalid="ignore"):
        core = _finite_or_raise(float(scale) * (R_B @ R_A.T))
    U, S, Vh = np.linalg.svd(core)
    return FactoredSVD(Y_B=Y_B, T_B=T_B, Y_A=Y_A, T_A=T_A, core=core, U=U, S=S, Vh=Vh)


def truncated_factors(
    B: np.ndarray, A: np.ndarray, scale: float, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best rank-``k`` factors of ``scale * B @ A`` and its full spectrum: ``(B_k, A_k, S)``
    (see :meth:`FactoredSVD.truncated`)."""
    f = factored_svd(B, A, scale)
    B_k, A_k = f.truncated(k)
    return B_k, A_k, f.S


def truncation_error(S: np.ndarray, k: int) -> float:
    """Relative Frobenius error of the best rank-``k`` approximation (Eckart-Young):
    ``sqrt(sum_{i>=k} s_i^2) / sqrt(sum s_i^2)``; 0 for a zero update."""
    S = np.asarray(S, dtype=np.float64)
    total = float(np.sum(S**2))
    if total == 0.0:
        return 0.0
    return math.sqrt(float(np.sum(S[k:] ** 2)) / total)


def stable_rank(S: np.ndarray) -> float:
    """``||dW||_F^2 / ||dW||_2^2``; 0 for a zero update."""
    S = np.asarray(S, dtype=np.float64)
    if S.size == 0 or S[0] == 0.0:
        return 0.0
    return float(np.sum(S**2) / S[0] ** 2)


def energy_rank(S: np.ndarray, tau: float = 0.9) -> int:
    """Smallest ``k`` whose top-``k`` singular values hold ``tau`` of the energy ``sum s^2``."""
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"energy threshold must be in (0, 1], got {tau}")
    S = np.asarray(S, dtype=np.float64)
    energy = S**2
    total = float(np.sum(energy))
    if total == 0.0:
        return 0
    cumulative = np.cumsum(energy) / total
    # a relative slack of a few ulps keeps tau = 1.0 (and exact ties) from overshooting by one
    return int(np.searchsorted(cumulative, tau - 8 * np.finfo(np.float64).eps) + 1)


def effective_rank(S: np.ndarray) -> float:
    """Roy & Vetterli's effective rank: ``exp`` of the entropy of ``s_i / sum s``."""
    S = np.asarray(S, dtype=np.float64)
    total = float(np.sum(S))
    if total == 0.0:
        return 0.0
    p = S[S > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


@dataclass(frozen=True)
class SpectralStats:
    """Spectrum-derived statistics of one scaled LoRA update ``s * B @ A``."""

    singular_values: np.ndarray
    rank: int
    stable_rank: float
    utilization: float
    energy_rank: int
    effective_rank: float
    sigma_max: float
    fro_norm: float

    @property
    def is_zero(self) -> bool:
        """True when the update is exactly zero (e.g. an untrained adapter, B = 0)."""
        return self.sigma_max == 0.0


def analyze(B: np.ndarray, A: np.ndarray, scale: float, tau: float = 0.9) -> SpectralStats:
    """All spectral statistics of ``scale * B @ A``; ``r`` is the allocated rank (A's rows)."""
    r = int(np.asarray(A).shape[0])
    S = lora_singular_values(B, A, scale)
    sr = stable_rank(S)
    return SpectralStats(
        singular_values=S,
        rank=r,
        stable_rank=sr,
        utilization=sr / r if r else 0.0,
        energy_rank=energy_rank(S, tau),
        effective_rank=effective_rank(S),
        sigma_max=float(S[0]) if S.size else 0.0,
        fro_norm=float(np.sqrt(np.sum(S**2))),
    )


def next_power_of_two(x: float) -> int:
    """Smallest power of two ``>= x`` (1 for ``x <= 1``)."""
    if x <= 1:
        return 1
    return 1 << (math.ceil(x) - 1).bit_length()


def suggest_rank(k: float, cap: int) -> int:
    """A rank for a (median, p90 or per-module) rank figure ``k``: rounded up to a power of two,
    at most ``cap`` (the allocated rank), at least 1. The audit's and every rank policy's
    suggestions use this one rule."""
    return max(1, min(cap, next_power_of_two(k)))


def lora_svd(
    B: np.ndarray, A: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD ``(U, S, V)`` of ``dW = scale * B @ A`` with ``dW = U @ diag(S) @ V.T``.

    ``U`` is ``d_out x m`` and ``V`` ``d_in x m`` with orthonormal columns, ``S`` descending, all
    float64: :func:`factored_svd` with its bases made explicit (``U = Q_B u``, ``V = Q_A v``),
    at the audit's accuracy budget rather than compress's, because comparing two updates through
    these bases (``U_a^T U_b``, ``V_a^T V_b``) needs them orthonormal to ~1e-11. The
    ``d_out x d_in`` product is never formed.
    """
    f = factored_svd(B, A, scale, budget=_BASIS_BUDGET)
    return f.Y_B @ (f.T_B @ f.U), f.S, f.Y_A @ (f.T_A @ f.Vh.T)
