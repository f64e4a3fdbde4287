"""kohya-ss and diffusers LoRA files without adapter_config.json (issue 11 item 3): every module's
singular values against a dense float64 SVD of the update as the format's rule defines it
(kohya: alpha / r * up @ down, alpha missing -> scale 1; diffusers: scale 1, or the saved
LoraConfig in the header's lora_adapter_metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from gradience_hub.audit import format_text, run_audit
from gradience_hub.cli import main


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check(report, truth: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    rows = {row.name: row for row in report.layers}
    assert set(rows) == set(truth)
    for name, dense in truth.items():
        S = np.linalg.svd(dense, compute_uv=False)[: rows[name].r]
        got = np.array(rows[name].singular_values)
        assert np.allclose(got, S, rtol=1e-9, atol=1e-12 * S[0]), name


def test_kohya_linear_conv_and_alpha(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = _rng(0)
    tensors: dict[str, np.ndarray] = {}
    truth: dict[str, np.ndarray] = {}
    # linear with alpha 2 at r=4 (scale 0.5), a text-encoder MLP with alpha 8 (scale 2), and a
    # LoCon 3x3 conv without alpha (scale 1)
    for name, (d_out, d_in), alpha in [
        ("lora_unet_down_blocks_0_attentions_0_proj_in", (16, 32), 2.0),
        ("lora_te1_text_model_encoder_layers_0_mlp_fc1", (24, 12), 8.0),
    ]:
        down = rng.standard_normal((4, d_in)).astype(np.float32)
        up = rng.standard_normal((d_out, 4)).astype(np.float32)
        tensors[f"{name}.lora_down.weight"] = down
        tensors[f"{name}.lora_up.weight"] = up
        tensors[f"{name}.alpha"] = np.array(alpha, dtype=np.float32)
        truth[name] = alpha / 4 * up.astype(np.float64) @ down.astype(np.float64)
    down = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    up = rng.standard_normal((8, 4, 1, 1)).astype(np.float32)
    tensors["lora_unet_conv_in.lora_down.weight"] = down
    tensors["lora_unet_conv_in.lora_up.weight"] = up
    truth["lora_unet_conv_in"] = up.reshape(8, 4).astype(np.float64) @ down.reshape(4, -1)
    path = tmp_path / "my_lora.safetensors"
    save_file(tensors, str(path), metadata={"ss_network_dim": "4"})
    for source in (path, tmp_path):  # the file, or a directory holding it
        report = run_audit(str(source))
        _check(report, truth)
        assert report.summary.adapter_format == "kohya"
        assert report.warnings == []
    rows = {row.name: row for row in report.layers}
    assert (rows["lora_unet_conv_in"].kind, rows["lora_unet_conv_in"].scale) == ("conv", 1.0)
    assert rows["lora_te1_text_model_encoder_layers_0_mlp_fc1"].module_type == "mlp"
    assert "Format: kohya LoRA file" in format_text(report)


def test_diffusers_both_key_styles_and_metadata(tmp_path: Path) -> None:
    rng = _rng(1)
    tensors: dict[str, np.ndarray] = {}
    truth: dict[str, np.ndarray] = {}
    old = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    down, up = rng.standard_normal((4, 32)), rng.standard_normal((32, 4))
    tensors[f"{old}.lora.down.weight"] = down.astype(np.float32)
    tensors[f"{old}.lora.up.weight"] = up.astype(np.float32)
    truth[old] = up.astype(np.float32).astype(np.float64) @ down.astype(np.float32)
    new = "transformer.single_transformer_blocks.0.attn.to_k"
    A, B = rng.standard_normal((2, 16)), rng.standard_normal((16, 2))
    tensors[f"{new}.lora_A.weight"] = A.astype(np.float32)
    tensors[f"{new}.lora_B.weight"] = B.astype(np.float32)
    # diffusers' saved LoraConfig: r 4, alpha 8, but alpha 6 for this module at r 2 -> scale 3
    meta = {"transformer": {"r": 4, "lora_alpha": 8, "alpha_pattern": {"attn.to_k": 6}}}
    truth[new] = 3.0 * B.astype(np.float32).astype(np.float64) @ A.astype(np.float32)
    path = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(tensors, str(path), metadata={"lora_adapter_metadata": json.dumps(meta)})
    report = run_audit(str(tmp_path))
    _check(report, truth)
    assert report.summary.adapter_format == "diffusers"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["lora_unet_x.hada_w1_a", "lora_unet_x.hada_w1_b"], "this is a LoHa (LyCORIS) file"),
        (["lora_unet_x.lokr_w1", "lora_unet_x.lokr_w2"], "this is a LoKr (LyCORIS) file"),
        (
            [
                "lora_unet_x.lora_down.weight",
                "lora_unet_x.lora_up.weight",
                "base_model.model.q.lora_A.weight",
                "base_model.model.q.lora_B.weight",
            ],
            "the file mixes kohya keys",
        ),
    ],
)
def test_unsupported_and_mixed_files_exit_2(
    keys: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.safetensors"
    save_file({k: np.ones((2, 2), np.float32) for k in keys}, str(path))
    with pytest.raises(SystemExit) as info:
        main(["audit", str(path), "--json"])
    out, err = capsys.readouterr()
    assert (info.value.code, out) == (2, "")
    assert err.startswith("Error: ") and message in err.splitlines()[0]
    assert len(err.strip().splitlines()) <= 2


# --------------------------------------------------------------------------- issue 19 items 8, 9

_DIFF = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
_KOHYA = "lora_unet_down_blocks_0_attentions_0_proj_in"


def _diffusers_file(path: Path, metadata: str | None, r: int = 4) -> Path:
    rng = _rng(7)
    tensors = {
        f"{_DIFF}.lora_A.weight": rng.standard_normal((r, 32)).astype(np.float32),
        f"{_DIFF}.lora_B.weight": rng.standard_normal((32, r)).astype(np.float32),
    }
    header = None if metadata is None else {"lora_adapter_metadata": metadata}
    save_file(tensors, str(path), metadata=header)
    return path


def _audit_cli(source: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["audit", str(source), "--json"])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def _assert_exit_2(code: int, out: str, err: str, *names: str) -> None:
    """Exit 2, nothing on stdout, one or two lines on stderr whose first names every item of
    ``names`` (the file and the key)."""
    assert (code, out) == (2, ""), err
    lines = err.strip().splitlines()
    assert lines[0].startswith("Error: ") and len(lines) <= 2, err
    for name in names:
        assert name in lines[0], (name, err)
    assert "internal error" not in err


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        (json.dumps({"unet.r": "four", "unet.lora_alpha": 8}), "unet.r"),
        (json.dumps({"unet.r": 4, "unet.lora_alpha": "x"}), "unet.lora_alpha"),
        (json.dumps({"unet": {"r": 4, "lora_alpha": [1]}}), "unet.lora_alpha"),
        (json.dumps({"unet": {"r": 4, "lora_alpha": None}}), "unet.lora_alpha"),
        (json.dumps({"r": 4, "lora_alpha": 4, "rank_pattern": "abc"}), "rank_pattern"),
        (json.dumps({"r": 4, "rank_pattern": {"to_q": "2"}}), "rank_pattern['to_q']"),
        ('{"unet.r": 4, "unet.alpha_pattern": {"to_q": Infinity}}', "unet.alpha_pattern['to_q']"),
        (json.dumps({"unet": {"r": 4}, "text_encoder": 5}), "text_encoder"),
        (json.dumps({"unet.r": 4, "unet.lora_alpha": 10**400}), "unet.lora_alpha"),
    ],
)
def test_bad_diffusers_metadata_is_exit_2_naming_file_and_key(
    metadata: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Non-numeric r / lora_alpha / patterns in lora_adapter_metadata were float() or dict()
    errors (exit 70); they go through the same LoraConfig check as adapter_config.json."""
    path = _diffusers_file(tmp_path / "style.safetensors", metadata)
    _assert_exit_2(*_audit_cli(path, capsys), "style.safetensors", f"{key} =")


def test_nan_alpha_in_diffusers_metadata_names_that_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _diffusers_file(
        tmp_path / "pytorch_lora_weights.safetensors", '{"unet.r": 4, "unet.lora_alpha": NaN}'
    )
    code, out, err = _audit_cli(path, capsys)
    _assert_exit_2(code, out, err, "pytorch_lora_weights.safetensors", "unet.lora_alpha = nan")
    assert "adapter_config.json" not in err


def test_deeply_nested_metadata_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """100,000 nested arrays made json.loads raise RecursionError (exit 70)."""
    deep = "[" * 100_000 + "]" * 100_000
    path = _diffusers_file(tmp_path / "deep.safetensors", deep)
    code, out, err = _audit_cli(path, capsys)
    _assert_exit_2(code, out, err, "deep.safetensors", "lora_adapter_metadata", "nested too deeply")


def test_deeply_nested_adapter_config_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.factories import planted_factors, write_adapter

    B, A = planted_factors(8, 8, 4)
    write_adapter(tmp_path, {"m.q_proj": (B, A)})
    (tmp_path / "adapter_config.json").write_text('{"r": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _assert_exit_2(*_audit_cli(tmp_path, capsys), "adapter_config.json", "not valid JSON")


@pytest.mark.parametrize("shape", [(), (4,)])
def test_kohya_factor_that_is_not_a_matrix_is_exit_2(
    shape: tuple[int, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0-d (or 1-d) lora_down.weight was indexed for its rank: IndexError, exit 70."""
    path = tmp_path / "scalar.safetensors"
    save_file(
        {
            f"{_KOHYA}.lora_down.weight": np.ones(shape, np.float32),
            f"{_KOHYA}.lora_up.weight": np.ones((16, 4), np.float32),
        },
        str(path),
    )
    code, out, err = _audit_cli(path, capsys)
    _assert_exit_2(code, out, err, "scalar.safetensors", f"{_KOHYA}.lora_down.weight")


def test_diffusers_metadata_rank_that_disagrees_with_the_tensors_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's rank-mismatch warning holds for diffusers' saved LoraConfig too; the scale
    still uses the tensors' rank (alpha 4 / r 4)."""
    path = _diffusers_file(
        tmp_path / "big_r.safetensors", json.dumps({"unet.r": 1e30, "unet.lora_alpha": 4})
    )
    code, out, err = _audit_cli(path, capsys)
    assert code == 0, err
    doc = json.loads(out)
    (mismatch,) = [w for w in doc["warnings"] if w.startswith("rank mismatch")]
    assert mismatch.startswith("rank mismatch with lora_adapter_metadata of big_r.safetensors: ")
    assert f"{_DIFF} (weights r=4, config r=1000000000000000019884624838656)" in mismatch
    assert doc["layers"][0]["scale"] == 1.0
    # the same file with the metadata's rank right (here through rank_pattern): no warning
    _diffusers_file(
        path, json.dumps({"unet.r": 8, "unet.lora_alpha": 4, "unet.rank_pattern": {"to_q": 4}})
    )
    code, out, err = _audit_cli(path, capsys)
    assert code == 0 and json.loads(out)["warnings"] == [], err


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        # kohya keys beside the PEFT ones (the case)
        ({f"{_KOHYA}.lora_down.weight": (4, 32), f"{_KOHYA}.lora_up.weight": (16, 4)}, _KOHYA),
        # diffusers' attention-processor keys, which the PEFT reader does not read either
        ({f"{_DIFF}.lora.down.weight": (4, 32), f"{_DIFF}.lora.up.weight": (32, 4)}, _DIFF),
    ],
)
def test_peft_file_with_factors_of_another_layout_is_exit_2(
    extra: dict[str, tuple[int, int]],
    shown: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A PEFT adapter_model.safetensors that also holds kohya/diffusers factors was audited on
    its PEFT modules alone, the others dropped without a word (skipped_modules 0)."""
    from tests.factories import planted_factors, write_adapter

    B, A = planted_factors(8, 8, 4)
    tensors = {k: np.ones(s, np.float32) for k, s in extra.items()}
    write_adapter(tmp_path, {"m.q_proj": (B, A)}, extra=tensors)
    code, out, err = _audit_cli(tmp_path, capsys)
    _assert_exit_2(code, out, err, "adapter_model.safetensors", "mixes layouts", shown)
    assert "2 LoRA factors" in err


def test_locon_tucker_core_is_not_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kohya LoCon module with a Tucker core (lora_mid) is not up @ down: refused, never
    audited as if the core were not there."""
    path = tmp_path / "tucker.safetensors"
    save_file(
        {
            f"{_KOHYA}.lora_down.weight": np.ones((4, 8, 1, 1), np.float32),
            f"{_KOHYA}.lora_mid.weight": np.ones((4, 4, 3, 3), np.float32),
            f"{_KOHYA}.lora_up.weight": np.ones((8, 4, 1, 1), np.float32),
        },
        str(path),
    )
    code, out, err = _audit_cli(path, capsys)
    _assert_exit_2(code, out, err, "tucker.safetensors", f"{_KOHYA}.lora_mid.weight")
