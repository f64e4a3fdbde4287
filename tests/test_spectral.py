"""spectral.py against the dense float64 truth (tests may form the product; the code never)."""

from __future__ import annotations

import numpy as np
import pytest

from gradience_hub import spectral
from tests.factories import planted_factors

SHAPES = [(64, 48, 8), (300, 200, 16), (40, 500, 32), (12, 10, 16), (1024, 768, 64)]


def dense_singular_values(B: np.ndarray, A: np.ndarray, scale: float) -> np.ndarray:
    """Ground truth: SVD of the materialised update, float64."""
    B64, A64 = np.asarray(B, np.float64), np.asarray(A, np.float64)
    S = np.linalg.svd(scale * (B64 @ A64), compute_uv=False)
    r = A.shape[0]
    return np.concatenate([S, np.zeros(max(0, r - S.size))])[:r]


def assert_exact(S: np.ndarray, D: np.ndarray) -> None:
    """Relative error <= 1e-9 on every singular value >= 1e-6 sigma_max (the audit's promise)."""
    mask = 1e-6 * D[0] <= D
    rel = np.abs(S[mask] - D[mask]) / D[mask]
    assert rel.max() <= 1e-9, rel.max()


@pytest.mark.parametrize(("d_out", "d_in", "r"), SHAPES)
def test_random_factors_match_dense_svd(d_out: int, d_in: int, r: int) -> None:
    rng = np.random.default_rng(d_out + d_in + r)
    B = rng.standard_normal((d_out, r))
    A = rng.standard_normal((r, d_in))
    S = spectral.lora_singular_values(B, A, 0.5)
    D = dense_singular_values(B, A, 0.5)
    assert S.shape == (r,)
    assert_exact(S, D)
    assert np.all(np.diff(S) <= 0)


@pytest.mark.parametrize("decades", [0, 2, 4, 6, 9])
@pytest.mark.parametrize(("d_out", "d_in", "r"), SHAPES[:3])
def test_planted_spectrum_is_recovered(d_out: int, d_in: int, r: int, decades: int) -> None:
    """Spectra over up to nine orders of magnitude exercise all three QR routes."""
    planted = np.geomspace(2.0, 2.0 * 10.0**-decades, r)
    B, A = planted_factors(d_out, d_in, r, planted, seed=decades)
    S = spectral.lora_singular_values(B, A, 1.0)
    D = dense_singular_values(B, A, 1.0)
    assert_exact(S, D)
    mask = planted >= 1e-6 * planted[0]
    np.testing.assert_allclose(S[mask], planted[mask], rtol=1e-8)
    assert spectral.stable_rank(S) == pytest.approx(spectral.stable_rank(D), rel=1e-12)
    assert spectral.energy_rank(S) == spectral.energy_rank(D)


def test_each_qr_route_gives_the_householder_gram() -> None:
    """One-pass Cholesky, CholeskyQR2 and Householder all satisfy R^T R = X^T X."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((2000, 16))
    for cond in (1.0, 1e3, 1e9):
        X = base * np.geomspace(1.0, 1.0 / cond, 16)
        R = spectral.r_factor(X)
        G = X.T @ X
        assert np.allclose(R.T @ R, G, rtol=0, atol=1e-12 * np.abs(G).max())
        assert np.allclose(R, np.triu(R))


def test_low_precision_factors() -> None:
    import ml_dtypes

    rng = np.random.default_rng(3)
    for dtype in (np.float16, ml_dtypes.bfloat16):
        B = rng.standard_normal((128, 8)).astype(dtype)
        A = rng.standard_normal((8, 96)).astype(dtype)
        assert_exact(spectral.lora_singular_values(B, A, 2.0), dense_singular_values(B, A, 2.0))


def test_rank_deficient_and_zero_updates() -> None:
    rng = np.random.default_rng(1)
    B = rng.standard_normal((100, 8))
    B[:, 5:] = 0.0  # rank 5 of 8
    A = rng.standard_normal((8, 80))
    S = spectral.lora_singular_values(B, A, 1.0)
    D = dense_singular_values(B, A, 1.0)
    assert_exact(S, D)
    assert np.all(S[5:] <= 1e-12 * S[0])

    stats = spectral.analyze(np.zeros((100, 8)), A, 1.0)
    assert stats.is_zero
    assert (stats.stable_rank, stats.energy_rank, stats.effective_rank) == (0.0, 0, 0.0)


def test_statistics_on_a_known_spectrum() -> None:
    S = np.array([4.0, 2.0, 2.0, 1.0, 0.0])
    assert spectral.stable_rank(S) == pytest.approx((16 + 4 + 4 + 1) / 16)
    # energies 16, 4, 4, 1 of 25: cumulative 0.64, 0.80, 0.96, 1.0
    assert spectral.energy_rank(S, 0.9) == 3
    assert spectral.energy_rank(S, 0.8) == 2  # the boundary counts as reached
    assert spectral.energy_rank(S, 1.0) == 4
    p = np.array([4, 2, 2, 1]) / 9
    assert spectral.effective_rank(S) == pytest.approx(np.exp(-np.sum(p * np.log(p))))
    assert spectral.effective_rank(np.ones(6)) == pytest.approx(6.0)
    with pytest.raises(ValueError):
        spectral.energy_rank(S, 0.0)


def test_analyze_utilization_and_norms() -> None:
    B, A = planted_factors(50, 40, 10, np.array([3.0] * 2 + [0.0] * 8), seed=2)
    stats = spectral.analyze(B, A, 1.0)
    assert stats.rank == 10
    assert stats.stable_rank == pytest.approx(2.0)
    assert stats.utilization == pytest.approx(0.2)
    assert stats.sigma_max == pytest.approx(3.0)
    assert stats.fro_norm == pytest.approx(np.sqrt(18.0))


def test_truncated_factors_are_eckart_young_optimal() -> None:
    B, A = planted_factors(60, 45, 12, np.geomspace(1, 1e-2, 12), seed=5)
    scale = 0.75
    dense = scale * B @ A
    for k in (1, 4, 12):
        Bk, Ak, S = spectral.truncated_factors(B, A, scale, k)
        assert Bk.shape == (60, k) and Ak.shape == (k, 45)
        err = np.linalg.norm(dense - Bk @ Ak) / np.linalg.norm(dense)
        assert err == pytest.approx(spectral.truncation_error(S, k), abs=1e-12)
        # balanced: both factors carry the same singular values
        np.testing.assert_allclose(
            np.linalg.svd(Bk, compute_uv=False), np.linalg.svd(Ak, compute_uv=False), rtol=1e-9
        )


@pytest.mark.parametrize(("x", "expected"), [(0, 1), (1, 1), (1.2, 2), (3, 4), (4, 4), (5.5, 8)])
def test_next_power_of_two(x: float, expected: int) -> None:
    assert spectral.next_power_of_two(x) == expected


@pytest.mark.parametrize(
    "decay",
    [1e-1, 1e-5, 1e-9, 0.0],  # one-pass, CholeskyQR2, Householder, rank-deficient B
)
def test_factored_svd_truncation_and_error_match_dense(decay: float) -> None:
    """compress's route (implicit Q, every QR branch): the truncated factors, the core-measured
    error and the error of perturbed (rounded) factors against a dense float64 computation."""
    rng = np.random.default_rng(3)
    r, k = 8, 3
    spectrum = np.geomspace(1.0, decay, r) if decay else np.r_[np.ones(r - 2), 0.0, 0.0]
    B = rng.standard_normal((200, r)) * spectrum
    A = rng.standard_normal((r, 150))
    dense = 0.5 * B @ A
    U, S, Vh = np.linalg.svd(dense)
    f = spectral.factored_svd(B, A, 0.5)
    assert np.allclose(f.S, S[:r], rtol=1e-9, atol=1e-12 * S[0])
    B_k, A_k = f.truncated(k)
    best = (U[:, :k] * S[:k]) @ Vh[:k]
    assert np.linalg.norm(B_k @ A_k - best) <= 1e-9 * np.linalg.norm(dense)
    assert np.isclose(np.linalg.norm(B_k, "fro"), np.linalg.norm(A_k, "fro"), rtol=1e-9)
    truth = np.linalg.norm(dense - B_k @ A_k)
    assert abs(f.core_error(k) - truth) <= 1e-9 * np.linalg.norm(dense)
    B_t = (B_k * (1 + 1e-3 * rng.standard_normal(B_k.shape))).astype(np.float32)
    A_t = (A_k * (1 + 1e-3 * rng.standard_normal(A_k.shape))).astype(np.float32)
    rounded = np.linalg.norm(dense - B_t.astype(np.float64) @ A_t.astype(np.float64))
    assert abs(f.error(B_t, A_t) - rounded) <= 1e-9 * np.linalg.norm(dense)


@pytest.mark.parametrize("mix", [0.0, 0.2, 0.6, 0.95])
def test_one_pass_certificate_is_the_eigenvalue_bound(mix: float) -> None:
    """The shifted Cholesky that admits the one-pass route decides exactly what the bound
    k (n + k + 1) u / lambda_min(equilibrated Gram) <= budget decides (checked on both sides
    of the boundary, 1% away), and its R1 satisfies R1^T R1 = X^T X."""
    n, k = 3000, 16
    rng = np.random.default_rng(int(mix * 100))
    # correlated columns of unequal norms: lambda_min of the equilibrated Gram falls with mix
    X = rng.standard_normal((n, k)) @ (np.eye(k) + mix * rng.standard_normal((k, k)))
    X *= np.geomspace(1.0, 1e-4, k)
    G = X.T @ X
    d = np.sqrt(np.diag(G))
    lam = float(np.linalg.eigvalsh(G / np.outer(d, d))[0])
    at_boundary = k * (n + k + 1) * np.finfo(np.float64).eps / lam  # the budget lam just meets
    for factor, expected in ((1.01, True), (0.99, False)):
        routed = spectral._equilibrated_cholesky(G, n, at_boundary * factor)
        assert routed is not None
        R1, one_pass = routed
        assert one_pass is expected, (lam, factor)
        assert np.allclose(R1.T @ R1, G, rtol=0, atol=1e-12 * np.abs(G).max())
