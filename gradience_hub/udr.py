"""Update-to-base ratios (UDR): how large a LoRA update is against its base weight. Pure numpy.

Per module, as gradience 0.11.0 defines them: ``udr = sigma_max(dW) / sigma_max(W_base)``,
``udr_f = ||dW||_F / ||W_base||_F`` and ``sdi = log10(udr + 1e-12)``; over the adapter, its
summary (``udr_median``, ``udr_p90``, ``udr_max``, ``udr_mean``, ``fraction_udr_gt_0_1``,
``fraction_udr_gt_0_3``, ``sdi_median``, ``sdi_p90``, ``sdi_mean``, ``n_layers_with_udr``) with
its percentile rule (the nearest rank, ``sorted[round((n - 1) q)]``).

``sigma_max(W_base)`` comes from a block Krylov method in float64 (:func:`spectral_norm`), not
a dense SVD: a 4096 x 4096 weight costs a few dozen products with an ``n x 8`` block instead of
the ``O(n^3)`` of an SVD. What is returned is bounded three ways:

1. ``theta <= sigma_max(W)``: ``theta`` is the largest singular value of ``W Q`` for an
   orthonormal ``Q`` (a compression of ``W``), so it can only fall short, never overshoot
   (up to rounding, ``~ sqrt(n) u ||W||``).
2. ``|theta - sigma_j| <= rho / sqrt(2)`` for some singular value ``sigma_j`` of ``W``, where
   ``rho = ||W^T u - theta v||`` is the residual of the Ritz triplet (``W v = theta u``
   exactly): ``(u, v) / sqrt(2)`` is then an approximate eigenvector of ``[[0, W], [W^T, 0]]``
   with residual ``rho / sqrt(2)``, and Bauer-Fike bounds the distance to an eigenvalue of that
   symmetric matrix, i.e. to ``+-sigma_j``. The iteration stops once ``rho / sqrt(2) <= tol
   theta`` (``tol = 1e-10``); the bound is returned as ``error_bound``.
3. That ``sigma_j`` is ``sigma_max`` unless the random start is nearly orthogonal to the top
   singular vector: the block Krylov space after ``k`` steps contains the single-vector Krylov
   space of its first column, so Kuczynski & Wozniakowski (1992, Thm 4.2) gives
   ``P(theta^2 < (1 - eps) sigma_max^2) <= 1.648 sqrt(n) exp(-sqrt(eps) (2k - 1))``
   (:func:`miss_probability`).

The start block is seeded, so the same weight always gives the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg

UDR_EPS = 1e-12  # gradience 0.11's guard in sdi = log10(udr + eps)
TOL = 1e-10  # relative residual bound at which spectral_norm stops
BLOCK = 8


@dataclass(frozen=True)
class SpectralNorm:
    """``sigma_max`` of a matrix and its bounds (module docstring): ``value <= sigma_max``,
    a singular value lies within ``error_bound`` of ``value``; ``steps`` block steps."""

    value: float
    error_bound: float
    steps: int


def _orthonormal(Z: np.ndarray, basis: list[np.ndarray]) -> np.ndarray:
    """Columns of ``Z`` orthogonalised against ``basis`` (twice: CGS2 keeps the Krylov basis
    orthonormal to working precision) and among themselves; near-dependent columns dropped."""
    for _ in range(2):
        for Q in basis:
            Z = Z - Q @ (Q.T @ Z)
    if Z.shape[1] == 0:
        return Z
    Q, R = np.linalg.qr(Z)
    keep = np.abs(np.diag(R)) > 1e-12 * max(1.0, float(np.max(np.abs(np.diag(R)))))
    return np.asarray(Q[:, keep])


def spectral_norm(
    W: np.ndarray, tol: float = TOL, block: int = BLOCK, seed: int = 0
) -> SpectralNorm:
    """``sigma_max(W)`` of a 2-D matrix by block Krylov iteration in float64 (see the module
    docstring for the three bounds). Small or exhausted problems end in an exact answer."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"spectral_norm takes a 2-D matrix, got shape {W.shape}")
    if W.shape[0] < W.shape[1]:
        W = W.T  # iterate in the smaller space (n = the column count)
    m, n = W.shape
    if m == 0 or n == 0 or not W.any():
        return SpectralNorm(0.0, 0.0, 0)
    if n <= 2 * block:
        s = float(np.linalg.svd(W, compute_uv=False)[0])
        return SpectralNorm(s, 0.0, 0)
    rng = np.random.default_rng(seed)
    Q = _orthonormal(rng.standard_normal((n, block)), [])
    basis = [Q]
    images = [W @ Q]  # W Q per block, kept so the Ritz step needs no extra product with W
    gram = images[0].T @ images[0]  # (W Q)^T (W Q), grown by one block row/column per step
    steps = 0
    while True:
        steps += 1
        # Rayleigh-Ritz on the Gram of W Q: its top eigenvalue is theta^2 to relative u (only
        # the top pair is asked of LAPACK's MRRR driver: several times cheaper than all of them)
        top = gram.shape[0] - 1
        _, evecs = scipy.linalg.eigh(gram, subset_by_index=[top, top], driver="evr")
        y = evecs[:, 0]
        v = np.zeros(n)
        Wv = np.zeros(m)
        at = 0
        for Qb, Ib in zip(basis, images, strict=True):
            yb = y[at : at + Qb.shape[1]]
            v += Qb @ yb
            Wv += Ib @ yb
            at += Qb.shape[1]
        theta = float(np.linalg.norm(Wv))
        if theta == 0.0:
            return SpectralNorm(0.0, 0.0, steps)
        u = Wv / theta
        rho = float(np.linalg.norm(W.T @ u - theta * v))
        bound = rho / math.sqrt(2.0)
        if bound <= tol * theta or at >= n:
            return SpectralNorm(theta, bound, steps)
        Qn = _orthonormal(W.T @ images[-1], basis)  # (W^T W) applied to the newest block
        if Qn.shape[1] == 0:  # the Krylov space is invariant: theta is exact
            return SpectralNorm(theta, bound, steps)
        In = W @ Qn
        cross = np.vstack([Ib.T @ In for Ib in images])
        gram = np.block([[gram, cross], [cross.T, In.T @ In]])
        basis.append(Qn)
        images.append(In)


def miss_probability(n: int, steps: int, eps: float) -> float:
    """Kuczynski & Wozniakowski's bound on ``P(theta^2 < (1 - eps) sigma_max^2)`` after
    ``steps`` Krylov steps on a matrix with ``n`` columns (capped at 1)."""
    return min(1.0, 1.648 * math.sqrt(n) * math.exp(-math.sqrt(eps) * (2 * steps - 1)))


@dataclass(frozen=True)
class BaseNorms:
    """A base weight's norms, as its 2-D matrix (``(out, in)``; conv kernels flattened to
    ``(out, in * kh * kw)`` as peft flattens its conv LoRA; transposes do not change them)."""

    sigma_max: float
    sigma_max_error: float
    fro_norm: float
    shape: tuple[int, int]

    def to_dict(self) -> dict[str, object]:
        """The cache's JSON form."""
        return {
            "sigma_max": self.sigma_max,
            "sigma_max_error": self.sigma_max_error,
            "fro_norm": self.fro_norm,
            "shape": list(self.shape),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> BaseNorms:
        """Read the cache's JSON form (raises KeyError/TypeError/ValueError when malformed)."""
        shape = data["shape"]
        if not isinstance(shape, list) or len(shape) != 2:
            raise ValueError("shape must be [out, in]")
        values = [_json_float(data[k]) for k in ("sigma_max", "sigma_max_error", "fro_norm")]
        if not all(math.isfinite(x) and x >= 0 for x in values):
            raise ValueError("norms must be finite and non-negative")
        return cls(values[0], values[1], values[2], (int(shape[0]), int(shape[1])))


def _json_float(value: object) -> float:
    """A JSON number as a float (TypeError for anything else, bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def as_matrix(W: np.ndarray) -> np.ndarray:
    """The 2-D form of a weight: 2-D as is, a conv kernel ``(out, in, *k)`` as
    ``(out, in * prod(k))``."""
    W = np.asarray(W)
    if W.ndim == 2:
        return W
    if W.ndim > 2:
        return W.reshape(W.shape[0], -1)
    raise ValueError(f"a base weight must have 2 or more dimensions, got shape {W.shape}")


def base_norms(W: np.ndarray, tol: float = TOL) -> BaseNorms:
    """Norms of one base weight, in float64 (bf16/fp16 weights are exact in it)."""
    M = np.asarray(as_matrix(W), dtype=np.float64)
    sn = spectral_norm(M, tol=tol)
    return BaseNorms(
        sigma_max=sn.value,
        sigma_max_error=sn.error_bound,
        fro_norm=float(np.linalg.norm(M)),
        shape=(int(M.shape[0]), int(M.shape[1])),
    )


@dataclass(frozen=True)
class Udr:
    """One module's update against its base weight."""

    udr: float
    udr_f: float
    sdi: float


def udr(delta_sigma_max: float, delta_fro: float, base: BaseNorms) -> Udr | None:
    """gradience 0.11's ratios (module docstring); None for a zero base weight."""
    if base.sigma_max <= 0.0 or base.fro_norm <= 0.0:
        return None
    ratio = delta_sigma_max / base.sigma_max
    return Udr(ratio, delta_fro / base.fro_norm, math.log10(ratio + UDR_EPS))


def _nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[round((len(ordered) - 1) * q)])


def summary(rows: Sequence[Udr]) -> dict[str, float | int]:
    """gradience 0.11's UDR summary fields over the modules that have a UDR."""
    out: dict[str, float | int] = {"n_layers_with_udr": len(rows)}
    if not rows:
        return out
    u = [r.udr for r in rows]
    s = [r.sdi for r in rows]
    out.update(
        udr_median=_nearest_rank(u, 0.5),
        udr_p90=_nearest_rank(u, 0.9),
        udr_max=max(u),
        udr_mean=float(sum(u) / len(u)),
        fraction_udr_gt_0_1=sum(1 for x in u if x > 0.1) / len(u),
        fraction_udr_gt_0_3=sum(1 for x in u if x > 0.3) / len(u),
        sdi_median=_nearest_rank(s, 0.5),
        sdi_p90=_nearest_rank(s, 0.9),
        sdi_mean=float(sum(s) / len(s)),
    )
    return out
