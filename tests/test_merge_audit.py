"""`gradience-hub merge-audit`: planted geometry against a dense float64 reference, the CLI's
outputs and exit codes, the Markdown section, and the peft merge measured against its prediction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradience_hub.cli import main
from gradience_hub.merge_audit import run_merge_audit
from gradience_hub.publish.merge_audit import format_markdown
from tests.factories import (
    factors_from_svd,
    lora_config,
    orthonormal_columns,
    planted_factors,
    write_adapter,
)

D_OUT, D_IN, R = 48, 40, 4
# Distinct singular values whose 90% energy rank is all four (k = r): the top-k subspaces are
# then well defined and are exactly the planted ones.
SPECTRUM = np.array([1.0, 0.9, 0.8, 0.7])
NAMES = ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj")
TOL = 1e-9


# --------------------------------------------------------------------------- helpers


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The console entry point in process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def run_subprocess(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "gradience_hub", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def write(
    directory: Path, modules: dict[str, tuple[np.ndarray, np.ndarray]], **config: Any
) -> Path:
    """An adapter stored in float64, so the planted geometry is exact in the file."""
    config.setdefault("r", R)
    config.setdefault("lora_alpha", 2 * R)  # scale 2: the figures must include it
    return write_adapter(directory, modules, lora_config(**config), dtype=np.float64)


def dense_update(B: np.ndarray, A: np.ndarray, scale: float = 2.0) -> np.ndarray:
    return scale * (np.asarray(B, np.float64) @ np.asarray(A, np.float64))


def energy_rank(S: np.ndarray, tau: float = 0.9) -> int:
    e = np.cumsum(S**2) / np.sum(S**2)
    return int(np.argmax(e >= tau - 1e-12) + 1)


def dense_figures(dWa: np.ndarray, dWb: np.ndarray, wa: float = 0.5, wb: float = 0.5) -> dict:
    """The merge-audit figures from the materialised updates (the independent reference)."""
    Ua, Sa, Vta = np.linalg.svd(dWa)
    Ub, Sb, Vtb = np.linalg.svd(dWb)
    ka, kb = energy_rank(Sa), energy_rank(Sb)
    na, nb = np.linalg.norm(dWa), np.linalg.norm(dWb)
    M = wa * dWa + wb * dWb
    nm = np.linalg.norm(M)
    out = {
        "overlap_out": np.sum((Ua[:, :ka].T @ Ub[:, :kb]) ** 2) / min(ka, kb),
        "overlap_in": np.sum((Vta[:ka] @ Vtb[:kb].T) ** 2) / min(ka, kb),
        "cosine": np.sum(dWa * dWb) / (na * nb),
        "norm_ratio": na / nb,
        "inner_product": np.sum(dWa * dWb),
        "frobenius_norm_a": na,
        "frobenius_norm_b": nb,
        "merged_norm": nm,
        "effective_rank_a": ka,
        "effective_rank_b": kb,
    }
    if nm > 1e-6 * (abs(wa) * na + abs(wb) * nb):
        out |= {
            "share_a": np.sum(wa * dWa * M) / nm**2,
            "share_b": np.sum(wb * dWb * M) / nm**2,
            "retained_a": np.sum(dWa * M) / (na * nm),
            "retained_b": np.sum(dWb * M) / (nb * nm),
        }
        out["dominance"] = max(out["share_a"], out["share_b"])
    return out


def assert_matches_dense(row: dict, dWa: np.ndarray, dWb: np.ndarray, **weights: float) -> dict:
    ref = dense_figures(dWa, dWb, **weights)
    for key, value in ref.items():
        assert row[key] == pytest.approx(value, abs=TOL, rel=TOL), key
    return ref


def planted_pair(
    tmp_path: Path,
    Ua: np.ndarray,
    Va: np.ndarray,
    Ub: np.ndarray,
    Vb: np.ndarray,
    Sa: np.ndarray = SPECTRUM,
    Sb: np.ndarray = SPECTRUM,
    sign_b: float = 1.0,
) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Two adapters over the same two modules with updates U diag(S) V^T (b's times sign_b);
    each module's factors are mixed differently. Returns the dirs and the dense updates."""
    mods_a, mods_b, dense = {}, {}, {}
    for i, name in enumerate(NAMES):
        Ba, Aa = factors_from_svd(Ua, Sa, Va, seed=10 + i)
        Bb, Ab = factors_from_svd(Ub, sign_b * Sb, Vb, seed=20 + i)
        mods_a[name], mods_b[name] = (Ba, Aa), (Bb, Ab)
        dense[name] = (dense_update(Ba, Aa), dense_update(Bb, Ab))
    return write(tmp_path / "a", mods_a), write(tmp_path / "b", mods_b), dense


def audit_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code, out, _ = run_cli(["merge-audit", *args, "--json"], capsys)
    return code, json.loads(out)


# --------------------------------------------------------------------------- planted geometry


@pytest.mark.parametrize("cond", [1e1, 1e4, 1e9])
def test_lora_svd_bases_are_orthonormal_on_every_route(cond: float) -> None:
    """One-pass Cholesky, CholeskyQR2 (cond <= 1e6) and the Householder fallback all give
    orthonormal U, V and U diag(S) V^T = s*B@A to float64 precision; rank-deficient B too."""
    from gradience_hub.spectral import lora_svd

    U0, V0 = orthonormal_columns(500, 8, 1), orthonormal_columns(8, 8, 2)
    X = (U0 * np.geomspace(1.0, 1.0 / cond, 8)) @ V0.T
    A = orthonormal_columns(300, 10, 3).T[:10]
    for B in (np.hstack([X, X[:, :2]]), np.hstack([X, orthonormal_columns(500, 2, 4)])):
        U, S, V = lora_svd(B, A, 0.5)
        assert np.abs(U.T @ U - np.eye(U.shape[1])).max() < 1e-10
        assert np.abs(V.T @ V - np.eye(V.shape[1])).max() < 1e-10
        dense = 0.5 * B @ A
        assert np.abs((U * S) @ V.T - dense).max() < 1e-12 * np.abs(dense).max()


def test_identical_updates_are_redundant(tmp_path: Path, capsys) -> None:
    U, V = orthonormal_columns(D_OUT, R, 1), orthonormal_columns(D_IN, R, 2)
    a, b, dense = planted_pair(tmp_path, U, V, U, V)
    code, data = audit_json([str(a), str(b)], capsys)
    assert code == 0
    assert data["schema"] == "gradience-hub/merge-audit/v1"
    assert [m["name"] for m in data["modules"]] == list(NAMES)
    for row in data["modules"]:
        assert_matches_dense(row, *dense[row["name"]])
        assert row["overlap_out"] == pytest.approx(1.0, abs=TOL)
        assert row["overlap_in"] == pytest.approx(1.0, abs=TOL)
        assert row["cosine"] == pytest.approx(1.0, abs=TOL)
        assert row["share_a"] == pytest.approx(0.5, abs=TOL)
        assert row["share_b"] == pytest.approx(0.5, abs=TOL)
        assert row["retained_a"] == pytest.approx(1.0, abs=TOL)
        assert row["principal_angle_cosines"] == pytest.approx([1.0] * R, abs=TOL)
        assert row["verdict"] == "redundant"
    s = data["summary"]
    assert s["overall_verdict"] == "redundant" and s["n_redundant"] == 2
    assert s["recommended_method"] == "svd" and s["n_shared"] == 2


def test_orthogonal_subspaces_are_independent(tmp_path: Path, capsys) -> None:
    Q, P = orthonormal_columns(D_OUT, 2 * R, 3), orthonormal_columns(D_IN, 2 * R, 4)
    a, b, dense = planted_pair(tmp_path, Q[:, :R], P[:, :R], Q[:, R:], P[:, R:])
    code, data = audit_json([str(a), str(b)], capsys)
    assert code == 0
    for row in data["modules"]:
        assert_matches_dense(row, *dense[row["name"]])
        assert row["overlap_out"] == pytest.approx(0.0, abs=TOL)
        assert row["overlap_in"] == pytest.approx(0.0, abs=TOL)
        assert row["cosine"] == pytest.approx(0.0, abs=TOL)
        # orthogonal updates of equal norm: each keeps 1/sqrt(2) of itself in the merge
        assert row["retained_a"] == pytest.approx(2**-0.5, abs=TOL)
        assert row["verdict"] == "independent"
    assert data["summary"]["overall_verdict"] == "independent"
    assert data["summary"]["recommended_method"] == "cat"


@pytest.mark.parametrize("j", [1, 2, 3])
def test_shared_j_of_k_subspace(tmp_path: Path, capsys, j: int) -> None:
    Q, P = orthonormal_columns(D_OUT, 2 * R, 5), orthonormal_columns(D_IN, 2 * R, 6)
    # b shares j of a's k = 4 directions on each side and has 4 - j directions of its own
    cols = [*range(j), *range(R, 2 * R - j)]
    Sb = np.array([1.2, 0.95, 0.85, 0.75])
    a, b, dense = planted_pair(tmp_path, Q[:, :R], P[:, :R], Q[:, cols], P[:, cols], Sb=Sb)
    code, data = audit_json([str(a), str(b)], capsys)
    assert code == 0
    for row in data["modules"]:
        ref = assert_matches_dense(row, *dense[row["name"]])
        assert ref["effective_rank_a"] == ref["effective_rank_b"] == R
        assert row["overlap_out"] == pytest.approx(j / R, abs=TOL)
        assert row["overlap_in"] == pytest.approx(j / R, abs=TOL)
        expected = "redundant" if j / R >= 0.5 else "independent"
        assert row["verdict"] == expected


def test_update_and_its_negative_conflict(tmp_path: Path, capsys) -> None:
    U, V = orthonormal_columns(D_OUT, R, 7), orthonormal_columns(D_IN, R, 8)
    a, b, dense = planted_pair(tmp_path, U, V, U, V, sign_b=-1.0)
    code, data = audit_json([str(a), str(b)], capsys)
    assert code == 1  # conflicting
    for row in data["modules"]:
        assert_matches_dense(row, *dense[row["name"]])
        assert row["cosine"] == pytest.approx(-1.0, abs=TOL)
        assert row["verdict"] == "conflicting"
        # equal weights cancel exactly: nothing survives, shares are undefined
        assert row["share_a"] is None and row["dominance"] is None
        assert row["retained_a"] == 0.0 and row["retained_b"] == 0.0
    assert data["summary"]["overall_verdict"] == "conflicting"
    assert data["summary"]["recommended_method"] == "ties"
    # unequal weights: the merge no longer cancels, and its figures are exact again
    code, data = audit_json([str(a), str(b), "--weights", "0.7,0.3"], capsys)
    assert code == 1
    for row in data["modules"]:
        assert_matches_dense(row, *dense[row["name"]], wa=0.7, wb=0.3)
        assert row["share_a"] == pytest.approx(0.7 / 0.4, abs=TOL)
        assert row["verdict"] == "conflicting"


def test_near_cancellation_stays_exact(tmp_path: Path, capsys) -> None:
    """b = -(1 - 1e-5) a: the merge keeps 5e-6 of the inputs' norm. Expanding ||M||^2 would
    lose half the digits here; the stacked-QR route matches the dense reference."""
    U, V = orthonormal_columns(D_OUT, R, 7), orthonormal_columns(D_IN, R, 8)
    a, b, dense = planted_pair(tmp_path, U, V, U, V, sign_b=-(1 - 1e-5))
    code, data = audit_json([str(a), str(b)], capsys)
    assert code == 1
    for row in data["modules"]:
        assert_matches_dense(row, *dense[row["name"]])
        assert row["share_a"] == pytest.approx(1e5, rel=1e-6)  # 1 / delta
        assert row["retained_a"] == pytest.approx(1.0, abs=TOL)
        assert row["retained_b"] == pytest.approx(-1.0, abs=TOL)


def test_ten_times_the_norm_dominates(tmp_path: Path, capsys) -> None:
    Q, P = orthonormal_columns(D_OUT, 2 * R, 9), orthonormal_columns(D_IN, 2 * R, 10)
    a, b, dense = planted_pair(tmp_path, Q[:, :R], P[:, :R], Q[:, R:], P[:, R:], Sa=10 * SPECTRUM)
    code, data = audit_json([str(a), str(b)], capsys)
    assert code == 0
    for row in data["modules"]:
        assert_matches_dense(row, *dense[row["name"]])
        assert row["norm_ratio"] == pytest.approx(10.0, rel=TOL)
        assert row["share_a"] == pytest.approx(100 / 101, abs=TOL)
        assert row["dominance"] == pytest.approx(100 / 101, abs=TOL)
        assert row["verdict"] == "dominated"
    s = data["summary"]
    assert s["overall_verdict"] == "dominated" and s["recommended_method"] == "cat"
    # rebalanced weights are inversely proportional to the adapters' norms
    assert s["suggested_weights"] == pytest.approx([1 / 11, 10 / 11], abs=1e-6)


def test_generic_pair_and_weighted_summary(tmp_path: Path, capsys) -> None:
    """Random factors (bf16-like spectra, partial overlap), r_a != r_b: every figure and every
    Frobenius-weighted summary mean against the dense reference."""
    rng = np.random.default_rng(0)
    mods_a, mods_b, dense = {}, {}, {}
    for i, name in enumerate(NAMES):
        Ba, Aa = planted_factors(D_OUT, D_IN, 6, np.geomspace(3, 0.01, 6) * (i + 1), seed=i)
        Bb, Ab = planted_factors(D_OUT, D_IN, 4, None, seed=50 + i)
        Bb = Bb + 0.5 * Ba[:, :4] * rng.standard_normal(4)  # share part of a's column space
        mods_a[name], mods_b[name] = (Ba, Aa), (Bb, Ab)
        dense[name] = (dense_update(Ba, Aa, 16 / 6), dense_update(Bb, Ab, 16 / 4))
    a = write_adapter(tmp_path / "a", mods_a, lora_config(r=6), dtype=np.float64)
    b = write_adapter(tmp_path / "b", mods_b, lora_config(r=4), dtype=np.float64)
    code, data = audit_json([str(a), str(b), "--weights", "0.8,-0.3"], capsys)
    refs = [assert_matches_dense(r, *dense[r["name"]], wa=0.8, wb=-0.3) for r in data["modules"]]
    s = data["summary"]
    both = np.array([r["frobenius_norm_a"] + r["frobenius_norm_b"] for r in refs])
    for key in ("overlap_out", "overlap_in", "cosine", "share_a", "dominance"):
        want = np.sum(both * [r[key] for r in refs]) / np.sum(both)
        assert s[f"{key}_mean"] == pytest.approx(want, abs=TOL), key
    na = np.array([r["frobenius_norm_a"] for r in refs])
    want = np.sum(na * [r["retained_a"] for r in refs]) / np.sum(na)
    assert s["retained_a_mean"] == pytest.approx(want, abs=TOL)
    ab = sum(np.sum(x * y) for x, y in dense.values())
    norm_a = np.sqrt(sum(np.sum(x**2) for x, _ in dense.values()))
    norm_b = np.sqrt(sum(np.sum(y**2) for _, y in dense.values()))
    assert s["cosine_global"] == pytest.approx(ab / (norm_a * norm_b), abs=TOL)
    assert data["sources"][0]["frobenius_norm"] == pytest.approx(norm_a, rel=TOL)
    assert code == (1 if s["overall_verdict"] == "conflicting" else 0)


def test_three_adapters_pairwise_and_modules_in_one(tmp_path: Path, capsys) -> None:
    U, V = orthonormal_columns(D_OUT, R, 11), orthonormal_columns(D_IN, R, 12)
    B, A = factors_from_svd(U, SPECTRUM, V)
    only = "model.layers.1.mlp.down_proj"
    a = write(tmp_path / "a", {NAMES[0]: (B, A), only: (B, A)})
    b = write(tmp_path / "b", {NAMES[0]: (B, A)})
    c = write(tmp_path / "c", {NAMES[0]: (-B, A)})
    code, data = audit_json([str(a), str(b), str(c)], capsys)
    assert code == 1
    assert [(p["a"], p["b"]) for p in data["pairs"]] == [("A", "B"), ("A", "C"), ("B", "C")]
    verdicts = {(m["a"], m["b"]): m["verdict"] for m in data["modules"]}
    assert verdicts == {
        ("A", "B"): "redundant",
        ("A", "C"): "conflicting",
        ("B", "C"): "conflicting",
    }
    ab = data["pairs"][0]
    assert ab["only_a"] == [only] and ab["n_only_a"] == 1 and ab["only_b"] == []
    assert data["weights"] == pytest.approx([1 / 3] * 3)
    # a source's norm counts only the modules it shares (scale 2)
    assert data["sources"][0]["frobenius_norm"] == pytest.approx(2 * np.linalg.norm(SPECTRUM))
    s = data["summary"]
    assert (s["n_pairs"], s["n_modules"], s["n_conflicting"]) == (3, 3, 2)
    code, out, _ = run_cli(["merge-audit", str(a), str(b), str(c)], capsys)
    assert code == 1
    assert "Summary (A × C):" in out and "Only in A:" in out and only in out


# --------------------------------------------------------------------------- CLI


def test_hub_source_against_local(hub_client_env, tmp_path: Path, capsys) -> None:
    """A Hub repo at a revision (the real huggingface_hub client against the stand-in) audits
    like a local directory; the report records its sha."""
    from tests.factories import adapter_files

    U, V = orthonormal_columns(D_OUT, R, 1), orthonormal_columns(D_IN, R, 2)
    a, b, dense = planted_pair(tmp_path, U, V, U, V, sign_b=-1.0)
    sha = hub_client_env.create_repo("org/negative", adapter_files(b))
    code, data = audit_json([str(a), f"org/negative@{sha}"], capsys)
    assert code == 1
    assert data["sources"][1]["kind"] == "hub" and data["sources"][1]["sha"] == sha
    assert data["sources"][1]["path"] is None
    for row in data["modules"]:
        assert_matches_dense(row, *dense[row["name"]])
        assert row["verdict"] == "conflicting"


def test_json_stdout_is_exactly_the_json_and_output_file(tmp_path: Path, capsys) -> None:
    U, V = orthonormal_columns(D_OUT, R, 1), orthonormal_columns(D_IN, R, 2)
    a, b, _ = planted_pair(tmp_path, U, V, U, V)
    target = tmp_path / "out" / "merge_audit.json"
    target.parent.mkdir()
    code, out, err = run_cli(["merge-audit", str(a), str(b), "--json", "-o", str(target)], capsys)
    assert code == 0 and err == ""
    assert json.loads(out)["schema"] == "gradience-hub/merge-audit/v1"
    assert out == target.read_text() and out.endswith("}\n")
    assert sorted(p.name for p in target.parent.iterdir()) == ["merge_audit.json"]
    code, text, _ = run_cli(["merge-audit", str(a), str(b), "--layers"], capsys)
    assert text.startswith("GRADIENCE MERGE AUDIT\n") and "Modules:" in text
    assert "Overall verdict: redundant" in text and "Recommended merge: svd" in text


def test_help_and_bad_input_exit_2(tmp_path: Path, capsys) -> None:
    proc = run_subprocess(["merge-audit", "--help"])
    assert proc.returncode == 0 and "--weights" in proc.stdout and "--merge" in proc.stdout
    U, V = orthonormal_columns(D_OUT, R, 1), orthonormal_columns(D_IN, R, 2)
    a, b, _ = planted_pair(tmp_path, U, V, U, V)
    for weights in ("0.5", "a,b", "0,0", "nan,1", "0.5,0.5,0.5"):
        code, out, err = run_cli(["merge-audit", str(a), str(b), "--weights", weights], capsys)
        assert code == 2 and out == "" and err.startswith("Error: --weights"), weights
        assert "Traceback" not in err
    code, _, err = run_cli(["merge-audit", str(a)], capsys)
    assert code == 2 and "at least two adapters" in err
    code, _, err = run_cli(["merge-audit", str(a), str(b), "--energy", "1.5"], capsys)
    assert code == 2 and "--energy" in err
    code, _, err = run_cli(["merge-audit", str(a), str(tmp_path / "missing")], capsys)
    assert code == 2 and f"no such local directory or file: {tmp_path / 'missing'}" in err


def test_mismatched_base_models_exit_2(tmp_path: Path) -> None:
    U, V = orthonormal_columns(D_OUT, R, 1), orthonormal_columns(D_IN, R, 2)
    B, A = factors_from_svd(U, SPECTRUM, V)
    a = write(tmp_path / "a", {NAMES[0]: (B, A)}, base_model_name_or_path="org/llama-7b")
    b = write(tmp_path / "b", {NAMES[0]: (B, A)}, base_model_name_or_path="org/mistral-7b")
    proc = run_subprocess(["merge-audit", str(a), str(b), "--json"])
    assert proc.returncode == 2 and proc.stdout == ""
    assert "different base models" in proc.stderr
    assert "org/llama-7b" in proc.stderr and "org/mistral-7b" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mismatched_shapes_exit_2(tmp_path: Path) -> None:
    B, A = planted_factors(D_OUT, D_IN, R, seed=1)
    B2, A2 = planted_factors(D_OUT, D_IN + 8, R, seed=2)
    a = write(tmp_path / "a", {NAMES[0]: (B, A)})
    b = write(tmp_path / "b", {NAMES[0]: (B2, A2)})
    proc = run_subprocess(["merge-audit", str(a), str(b)])
    assert proc.returncode == 2 and proc.stdout == ""
    assert NAMES[0] in proc.stderr and f"{D_OUT}x{D_IN}" in proc.stderr
    assert f"{D_OUT}x{D_IN + 8}" in proc.stderr and "Traceback" not in proc.stderr


def test_thresholds_are_overridable(tmp_path: Path, capsys) -> None:
    Q, P = orthonormal_columns(D_OUT, 2 * R, 5), orthonormal_columns(D_IN, 2 * R, 6)
    cols = [0, R, R + 1, R + 2]  # overlap 1/4
    a, b, _ = planted_pair(tmp_path, Q[:, :R], P[:, :R], Q[:, cols], P[:, cols])
    _, data = audit_json([str(a), str(b)], capsys)
    assert {m["verdict"] for m in data["modules"]} == {"independent"}
    _, data = audit_json([str(a), str(b), "--high-overlap", "0.25"], capsys)
    assert {m["verdict"] for m in data["modules"]} == {"redundant"}
    assert data["thresholds"]["high_overlap"] == 0.25
    config = tmp_path / "thresholds.yaml"
    config.write_text("high_overlap: 0.2\ndominance: 0.55\n")
    _, data = audit_json([str(a), str(b), "--thresholds", str(config)], capsys)
    assert data["thresholds"] == {"high_overlap": 0.2, "conflict_cosine": -0.1, "dominance": 0.55}
    config.write_text("overlap: 0.2\n")
    code, _, err = run_cli(["merge-audit", str(a), str(b), "--thresholds", str(config)], capsys)
    assert code == 2 and "unknown threshold overlap" in err
    code, _, err = run_cli(["merge-audit", str(a), str(b), "--high-overlap", "2"], capsys)
    assert code == 2 and "high_overlap" in err


def test_markdown_section_is_escaped(tmp_path: Path, capsys) -> None:
    U, V = orthonormal_columns(D_OUT, R, 1), orthonormal_columns(D_IN, R, 2)
    B, A = factors_from_svd(U, SPECTRUM, V)
    evil = "model.layers.0.<img src=x>[link](http://e.vil)|@admin"
    a = write(tmp_path / "a", {evil: (B, A)}, base_model_name_or_path="org/base<!--")
    b = write(tmp_path / "b", {evil: (-B, A)}, base_model_name_or_path="org/base<!--")
    code, out, _ = run_cli(["merge-audit", str(a), str(b), "--format", "markdown"], capsys)
    assert code == 1
    assert out.startswith("### Merge audit ❌ conflicting")
    assert "<img" not in out
    assert "<!--" not in out
    assert "[link](" not in out
    assert "@admin" not in out
    assert "&lt;img src=x&gt;&#91;link&#93;" in out and "\\|" in out
    assert str(tmp_path) not in out  # local paths: the directory name only
    assert "| A × B | 1 | 1.000 / 1.000 | -1.000 |" in out
    report = run_merge_audit([str(a), str(b)])
    assert format_markdown(report) == out
    # a user template is tried first, escaped the same way, and sandboxed
    custom = tmp_path / "templates"
    custom.mkdir()
    (custom / "merge_audit.md.j2").write_text(
        "verdict {{ summary.overall_verdict }}: {{ modules[0].name }}\n"
    )
    code, out, _ = run_cli(
        ["merge-audit", str(a), str(b), "--format", "markdown", "--template-dir", str(custom)],
        capsys,
    )
    assert code == 1 and out.startswith("verdict conflicting: model.layers.0.&lt;img")
    (custom / "merge_audit.md.j2").write_text("{{ report.__class__.__mro__ }}\n")
    code, out, err = run_cli(
        [
            "merge-audit",
            str(a),
            str(b),
            "--format",
            "markdown",
            "--template-dir",
            str(custom),
            "-o",
            str(tmp_path / "ma.json"),
        ],
        capsys,
    )
    assert code == 2 and out == "" and "sandbox" in err
    assert not (tmp_path / "ma.json").exists()  # nothing written when the output fails


# --------------------------------------------------------------------------- --merge (peft)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT saved from a transformers config (nothing downloaded)."""
    from transformers import BertModel

    from tests.factories import tiny_bert_config

    directory = tmp_path_factory.mktemp("tiny-bert")
    BertModel(tiny_bert_config()).save_pretrained(str(directory))
    return directory


BERT = tuple(f"encoder.layer.{i}.attention.self.{p}" for i in range(2) for p in ("query", "value"))


def bert_adapters(tmp_path: Path, base: Path, ranks: tuple[int, int] = (4, 4)) -> list[Path]:
    out = []
    for j, r in enumerate(ranks):
        mods = {n: planted_factors(32, 32, r, seed=10 * j + k) for k, n in enumerate(BERT)}
        config = lora_config(
            r=r,
            lora_alpha=8,
            target_modules=["query", "value"],
            task_type=None,
            base_model_name_or_path=str(base),
        )
        out.append(write_adapter(tmp_path / f"src{j}", mods, config))
    return out


def peft_delta_weights(base: Path, adapter: Path) -> dict[str, np.ndarray]:
    """Each module's update as peft itself computes it (get_delta_weight) after reloading."""
    from peft import PeftModel
    from transformers import BertModel

    model = PeftModel.from_pretrained(BertModel.from_pretrained(str(base)), str(adapter))
    return {
        name: model.base_model.model.get_submodule(name)
        .get_delta_weight("default")
        .detach()
        .double()
        .numpy()
        for name in BERT
    }


def test_merge_linear_reloads_and_matches_prediction(
    tmp_path: Path, tiny_base: Path, capsys
) -> None:
    a, b = bert_adapters(tmp_path, tiny_base)
    out_dir = tmp_path / "merged"
    code, out, _ = run_cli(
        [
            "merge-audit",
            str(a),
            str(b),
            "--weights",
            "0.6,0.4",
            "--json",
            "--merge",
            str(out_dir),
            "--method",
            "linear",
        ],
        capsys,
    )
    assert code == 0
    merge = json.loads(out)["merge"]  # stdout stayed pure JSON through peft and transformers
    assert merge["method"] == "linear" and merge["output"] == str(out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    merged = peft_delta_weights(tiny_base, out_dir)
    sources = [peft_delta_weights(tiny_base, x) for x in (a, b)]
    for i, label in enumerate("AB"):
        num = sum(
            np.sum(s[n] * merged[n]) / np.linalg.norm(merged[n]) for s in [sources[i]] for n in BERT
        )
        norms = [np.linalg.norm(sources[i][n]) for n in BERT]
        # the Frobenius-weighted mean of per-module retained fractions, from peft's own deltas
        want = num / sum(norms)
        entry = merge["sources"][i]
        assert entry["label"] == label
        assert entry["retained_measured"] == pytest.approx(want, abs=1e-6)
        assert entry["retained_predicted"] == pytest.approx(want, abs=1e-6)
        # peft's linear averages factors: not the linear merge of the updates
        assert abs(entry["retained_linear_merge"] - want) > 0.05
    for row in merge["modules"]:
        for label in "AB":
            assert row[label]["measured"] == pytest.approx(row[label]["predicted"], abs=1e-6)


def test_merge_cat_is_the_linear_merge(tmp_path: Path, tiny_base: Path, capsys) -> None:
    """cat over different ranks writes sum_i w_i dW_i exactly: the audit's prediction."""
    a, b = bert_adapters(tmp_path, tiny_base, ranks=(4, 2))
    out_dir = tmp_path / "m"
    code, out, _ = run_cli(
        ["merge-audit", str(a), str(b), "--json", "--merge", str(out_dir), "--method", "cat"],
        capsys,
    )
    assert code == 0
    data = json.loads(out)
    assert json.loads((out_dir / "adapter_config.json").read_text())["r"] == 6
    summary = data["summary"]
    for entry, key in zip(
        data["merge"]["sources"], ("retained_a_mean", "retained_b_mean"), strict=True
    ):
        assert entry["retained_measured"] == pytest.approx(entry["retained_predicted"], abs=1e-6)
        # module by module, cat's update is the linear merge the audit predicts
        assert entry["retained_linear_merge"] == pytest.approx(summary[key], abs=1e-12)
        assert entry["retained_predicted"] == pytest.approx(summary[key], abs=1e-12)


def test_merge_bad_input_exit_2(tmp_path: Path, tiny_base: Path, capsys, monkeypatch) -> None:
    a, b = bert_adapters(tmp_path, tiny_base, ranks=(4, 2))
    code, _, err = run_cli(
        ["merge-audit", str(a), str(b), "--merge", str(tmp_path / "m"), "--method", "linear"],
        capsys,
    )
    assert code == 2 and "one rank" in err and not (tmp_path / "m").exists()
    code, _, err = run_cli(
        [
            "merge-audit",
            str(a),
            str(b),
            "--merge",
            str(tmp_path / "m"),
            "--base-model",
            str(tmp_path / "nowhere"),
        ],
        capsys,
    )
    assert code == 2 and "--base-model" in err and not (tmp_path / "m").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    code, _, err = run_cli(
        ["merge-audit", str(a), str(b), "--merge", str(tmp_path / "full")], capsys
    )
    assert code == 2 and "not an empty directory" in err
    assert (tmp_path / "full" / "keep.txt").read_text() == "user data"
    code, _, err = run_cli(["merge-audit", str(a), str(b), "--method", "cat"], capsys)
    assert code == 2 and "--merge" in err

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a)
    )
    code, out, err = run_cli(
        ["merge-audit", str(a), str(b), "--merge", str(tmp_path / "m")], capsys
    )
    assert code == 2 and "'peft'" in err and "gradience-hub[bench]" in err
    assert out == "" and not (tmp_path / "m").exists()


def _bert_adapter(
    directory: Path, base: Path, d: int = 32, layers: int = 2, seed: int = 0, **extra: Any
) -> Path:
    names = [n for n in BERT if int(n.split(".")[2]) < layers]
    mods = {n: planted_factors(d, d, 4, seed=seed + k) for k, n in enumerate(names)}
    config = lora_config(
        r=4,
        lora_alpha=8,
        target_modules=["query", "value"],
        task_type=None,
        base_model_name_or_path=str(base),
    )
    return write_adapter(directory, mods, config, extra=extra or None)


def test_failed_merge_is_one_error_without_library_warnings(
    tmp_path: Path, tiny_base: Path
) -> None:
    """Adapters of another hidden size (16 on a 32-wide base), one carrying a full weight: peft
    fails with torch's multi-line state_dict error, after torch's UserWarning about copying
    onto a meta parameter and transformers' FutureWarning. The user sees one error line and a
    hint (a subprocess: pytest would otherwise record the warnings itself)."""
    pooler = {"base_model.model.pooler.dense.weight": np.ones((32, 32), np.float32)}
    a = _bert_adapter(tmp_path / "a", tiny_base, d=16, **pooler)
    b = _bert_adapter(tmp_path / "b", tiny_base, d=16, seed=5)
    proc = run_subprocess(["merge-audit", str(a), str(b), "--merge", str(tmp_path / "m")])
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("Error: peft could not merge the adapters (cat): size mismatch for ")
    assert lines[0].endswith("(and 7 more)") and lines[1].startswith("Hint: ")
    assert not (tmp_path / "m").exists()


def test_failed_merge_names_the_factors_peft_expected(
    tmp_path: Path, tiny_base: Path, capsys
) -> None:
    """target_modules covers both layers, the file holds layer 0 only: peft's own error is
    about devices; its missing-keys warning, captured, is the cause and becomes the hint."""
    a = _bert_adapter(tmp_path / "a", tiny_base, layers=1)
    b = _bert_adapter(tmp_path / "b", tiny_base, layers=1, seed=5)
    before = list(warnings.filters)
    code, out, err = run_cli(
        ["merge-audit", str(a), str(b), "--merge", str(tmp_path / "m")], capsys
    )
    assert (code, out) == (2, "")
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("Hint: peft expects factors (")
    assert "encoder.layer.1.attention.self." in lines[1] and "and 3 more" in lines[1]
    assert warnings.filters == before  # the capture is undone


def test_merge_reports_a_full_weight_it_does_not_carry(
    tmp_path: Path, tiny_base: Path, capsys
) -> None:
    """torch's 'copying ... to a meta parameter ... is a no-op' is a tensor the merged adapter
    lacks: a report warning naming it, not a torch warning on stderr."""
    pooler = {"base_model.model.pooler.dense.weight": np.ones((32, 32), np.float32)}
    a = _bert_adapter(tmp_path / "a", tiny_base, **pooler)
    b = _bert_adapter(tmp_path / "b", tiny_base, seed=5)
    code, out, _ = run_cli(
        ["merge-audit", str(a), str(b), "--json", "--merge", str(tmp_path / "m")], capsys
    )
    assert code == 0
    assert (
        "the merged adapter does not carry base_model.model.pooler.dense.weight: it is not a LoRA "
        "factor (a modules_to_save or other full weight) and only LoRA factors are merged"
    ) in json.loads(out)["warnings"]
