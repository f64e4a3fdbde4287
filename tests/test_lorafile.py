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
