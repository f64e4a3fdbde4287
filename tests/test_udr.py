"""UDR math (issue 23 item 4): sigma_max by block Krylov against a dense SVD, with its stated
bounds; gradience 0.11's udr / udr_f / sdi and summary rules on hand-computed numbers."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from gradience_hub.udr import (
    BaseNorms,
    Udr,
    as_matrix,
    base_norms,
    miss_probability,
    spectral_norm,
    summary,
    udr,
)
from tests.factories import orthonormal_columns


def planted(m: int, n: int, s: np.ndarray, seed: int = 0) -> np.ndarray:
    return (orthonormal_columns(m, len(s), seed) * s) @ orthonormal_columns(n, len(s), seed + 1).T


def _cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    tail = np.geomspace(1.0, 1e-3, 120)
    return [
        ("gaussian 600x400", rng.standard_normal((600, 400))),
        ("gaussian 300x900", rng.standard_normal((300, 900))),
        ("outlier", planted(500, 500, np.concatenate([[40.0], tail]))),
        # the top two a relative 1e-7 apart: the bound still holds, whichever is found
        ("near tie", planted(500, 400, np.concatenate([[2.0, 2.0 - 2e-7], tail]))),
        ("rank one", planted(300, 200, np.array([3.0]))),
        ("flat", planted(400, 400, np.ones(150))),
        ("tiny (dense path)", rng.standard_normal((40, 12))),
        ("bf16 weights", rng.standard_normal((512, 256)).astype(ml_dtypes.bfloat16)),
    ]


@pytest.mark.parametrize(("label", "W"), _cases(), ids=[c[0] for c in _cases()])
def test_spectral_norm_against_dense_svd(label: str, W: np.ndarray) -> None:
    dense = np.linalg.svd(np.asarray(W, dtype=np.float64), compute_uv=False)
    sigma = float(dense[0])
    got = spectral_norm(W)
    rounding = 1e-13 * sigma
    # bound 1: never above sigma_max
    assert got.value <= sigma + rounding
    # bound 2: some singular value within error_bound, and error_bound <= 1e-10 theta
    assert float(np.min(np.abs(dense - got.value))) <= got.error_bound + rounding
    assert got.error_bound <= 1e-10 * got.value
    # and in every case here that singular value is sigma_max itself
    assert abs(got.value - sigma) <= 1e-9 * sigma, label


def test_spectral_norm_is_deterministic_and_orientation_free() -> None:
    W = np.random.default_rng(1).standard_normal((300, 200))
    assert spectral_norm(W) == spectral_norm(W)
    assert spectral_norm(W).value == pytest.approx(spectral_norm(W.T).value, rel=1e-10)
    assert spectral_norm(np.zeros((50, 40))).value == 0.0


def test_miss_probability_formula() -> None:
    # 1.648 * sqrt(4096) * exp(-sqrt(0.01) * (2 * 100 - 1)) = 105.47 * exp(-19.9)
    assert miss_probability(4096, 100, 0.01) == pytest.approx(105.472 * math.exp(-19.9), rel=1e-4)
    assert miss_probability(4096, 1, 1e-6) == 1.0


def test_base_norms_of_a_conv_kernel_use_peft_layout() -> None:
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    flat = kernel.reshape(16, 72).astype(np.float64)
    assert as_matrix(kernel).shape == (16, 72)
    norms = base_norms(kernel)
    assert norms.shape == (16, 72)
    assert norms.sigma_max == pytest.approx(np.linalg.svd(flat, compute_uv=False)[0], rel=1e-12)
    assert norms.fro_norm == pytest.approx(float(np.sqrt(np.sum(flat**2))), rel=1e-14)
    assert BaseNorms.from_dict(norms.to_dict()) == norms
    with pytest.raises(ValueError):
        as_matrix(np.ones(5))
    with pytest.raises((KeyError, ValueError, TypeError)):
        bad = {"sigma_max": -1.0, "sigma_max_error": 0, "fro_norm": 1, "shape": [1, 1]}
        BaseNorms.from_dict(bad)


def test_udr_and_summary_as_gradience_defines_them() -> None:
    base = BaseNorms(sigma_max=10.0, sigma_max_error=0.0, fro_norm=100.0, shape=(4, 4))
    row = udr(2.0, 5.0, base)
    assert row is not None
    assert (row.udr, row.udr_f) == (0.2, 0.05)
    assert row.sdi == pytest.approx(math.log10(0.2 + 1e-12))
    assert udr(1.0, 1.0, BaseNorms(0.0, 0.0, 0.0, (1, 1))) is None
    values = [0.05, 0.5, 0.2, 0.01, 0.15]  # sorted: 0.01 0.05 0.15 0.2 0.5
    rows = [Udr(v, v, math.log10(v + 1e-12)) for v in values]
    out = summary(rows)
    assert out["n_layers_with_udr"] == 5
    assert out["udr_median"] == 0.15  # sorted[round(4 * 0.5)] = sorted[2]
    assert out["udr_p90"] == 0.5  # sorted[round(3.6)] = sorted[4]
    assert out["udr_max"] == 0.5
    assert out["udr_mean"] == pytest.approx(0.182)
    assert out["fraction_udr_gt_0_1"] == 0.6  # 0.5, 0.2, 0.15
    assert out["fraction_udr_gt_0_3"] == 0.2
    assert out["sdi_median"] == pytest.approx(math.log10(0.15 + 1e-12))
    assert summary([]) == {"n_layers_with_udr": 0}
