"""compress writes kohya-ss and diffusers LoRA files in the layout it read (issue 11 item 3).

kohya: checked against sd-scripts' rule as the test writes it (networks/lora.py,
LoRAModule.__init__: ``self.scale = alpha / self.lora_dim``, lora_dim = lora_down's rows, a
missing alpha meaning scale 1; conv kernels ``lora_down (r, c_in, kh, kw)``,
``lora_up (c_out, r, 1, 1)``). diffusers: the file is written by diffusers' own
``save_lora_weights`` and the compressed one loaded by diffusers' own ``load_lora_adapter`` onto a
tiny UNet2DConditionModel built from a config; the reference update is peft's
``get_delta_weight`` of the layers diffusers built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from gradience_hub.adapter import open_adapter
from gradience_hub.cli import main
from gradience_hub.compress import VERIFIED_FILE, compress


def _kohya_update(tensors: dict[str, np.ndarray], module: str) -> np.ndarray:
    """sd-scripts' update of one module, in float64: alpha / lora_dim * up @ down."""
    down = tensors[f"{module}.lora_down.weight"].astype(np.float64)
    up = tensors[f"{module}.lora_up.weight"].astype(np.float64)
    r = down.shape[0]
    alpha = float(tensors[f"{module}.alpha"]) if f"{module}.alpha" in tensors else float(r)
    return alpha / r * up.reshape(up.shape[0], -1) @ down.reshape(r, -1)


def _ey(dense: np.ndarray, k: int) -> float:
    S = np.linalg.svd(dense, compute_uv=False)
    return float(np.sqrt(np.sum(S[k:] ** 2) / np.sum(S**2)))


def _header(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


KOHYA_MODULES = {
    # name: (down shape, up shape, alpha or None, dtype)
    "lora_unet_down_blocks_0_attentions_0_proj_in": ((4, 32), (16, 4), 2.0, np.float32),
    "lora_te1_text_model_encoder_layers_0_mlp_fc1": ((4, 12), (24, 4), 1.0, np.float16),
    "lora_unet_mid_block_attentions_0_proj_out": ((3, 16), (16, 3), 1.0, np.float32),
    "lora_unet_conv_in": ((4, 3, 3, 3), (8, 4, 1, 1), None, np.float32),
    "lora_unet_down_blocks_0_resnets_0_conv1": ((4, 8, 3, 3), (8, 4, 1, 1), 4.0, np.float32),
}


def test_kohya_stays_kohya(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    src: dict[str, np.ndarray] = {}
    for name, (down, up, alpha, dtype) in KOHYA_MODULES.items():
        src[f"{name}.lora_down.weight"] = rng.standard_normal(down).astype(dtype)
        src[f"{name}.lora_up.weight"] = rng.standard_normal(up).astype(dtype)
        if alpha is not None:
            src[f"{name}.alpha"] = np.array(alpha, dtype=dtype)
    path = tmp_path / "src" / "my_style.safetensors"
    path.parent.mkdir()
    header = {"ss_network_dim": "4", "ss_network_alpha": "1.0", "sshs_model_hash": "ab" * 32}
    save_file(src, str(path), metadata=header)

    with pytest.raises(SystemExit) as info:
        main(["compress", str(path), "-o", str(tmp_path / "out"), "--rank", "2", "--json"])
    assert info.value.code == 0
    report = json.loads(capsys.readouterr().out)
    out = tmp_path / "out" / "my_style.safetensors"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["my_style.safetensors"]
    assert report["verified"] == VERIFIED_FILE
    got = load_file(str(out))
    assert set(got) == set(src)  # no missing or unexpected keys, no adapter_config.json
    rows = {row["name"]: row for row in report["modules"]}
    for name, (down, up, alpha, dtype) in KOHYA_MODULES.items():
        assert got[f"{name}.lora_down.weight"].shape == (2, *down[1:])
        assert got[f"{name}.lora_up.weight"].shape == (up[0], 2, *up[2:])
        assert got[f"{name}.lora_down.weight"].dtype == dtype
        before, after = _kohya_update(src, name), _kohya_update(got, name)
        # kohya's scale is kept exactly: alpha_new / 2 == alpha / r
        r = down[0]
        if alpha is None:
            assert f"{name}.alpha" not in got  # scale 1 stays scale 1 without an alpha
        else:
            assert float(got[f"{name}.alpha"]) / 2 == alpha / r
        err = float(np.linalg.norm(after - before) / np.linalg.norm(before))
        row = rows[name]
        assert row["ey_bound"] == pytest.approx(_ey(before, 2), rel=1e-9)
        assert row["rel_error"] == pytest.approx(row["ey_bound"], rel=1e-9)
        assert err == pytest.approx(row["stored_rel_error"], rel=1e-6)
    # alpha 1 at r=3 -> 2/3 at r=2: not a float32, so float64 (exact), with a warning
    mid = "lora_unet_mid_block_attentions_0_proj_out"
    assert got[f"{mid}.alpha"].dtype == np.float64
    assert any("float64 alpha" in w for w in report["warnings"])
    # fp16 alpha 1 at r=4 -> 0.5: still fp16
    assert got["lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha"].dtype == np.float16
    # sd-scripts' training metadata follows the new rank, its stale tensor hash is dropped
    written = _header(out)
    assert written["ss_network_dim"] == "2" and "sshs_model_hash" not in written
    # our reader reads it back as kohya, at the new rank with the same scales
    back = open_adapter(out)
    assert back.format == "kohya"
    for module in back.modules():
        assert module.r == 2
        assert module.scale == pytest.approx(rows[module.name]["scale"], rel=1e-15)


def _tiny_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=4,
        attention_head_dim=2,
    )


def _lora_layers(unet: Any, adapter: str) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    return {
        name: m for name, m in unet.named_modules() if isinstance(m, LoraLayer) and adapter in m.r
    }


@pytest.fixture(scope="module")
def diffusers_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytorch_lora_weights.safetensors as diffusers' save_lora_weights writes it: PEFT-style
    keys under ``unet.``, the LoraConfig flat in lora_adapter_metadata (r 4, alpha 8, and
    alpha 2 for the conv1 layers: scale 0.5)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    unet = _tiny_unet()
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        alpha_pattern={"conv1": 2},
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1"],
        init_lora_weights=False,
    )
    unet.add_adapter(config)
    directory = tmp_path_factory.mktemp("diffusers_src")
    StableDiffusionPipeline.save_lora_weights(
        str(directory),
        unet_lora_layers=get_peft_model_state_dict(unet),
        unet_lora_adapter_metadata=config.to_dict(),
    )
    return directory / "pytorch_lora_weights.safetensors"


def _load(path: Path, name: str) -> Any:
    import torch

    torch.manual_seed(1)
    unet = _tiny_unet()
    unet.load_lora_adapter(
        str(path.parent), weight_name=path.name, prefix="unet", adapter_name=name
    )
    return unet


def _check_diffusers_round_trip(src: Path, out: Path, result: Any) -> None:
    from peft.utils import get_peft_model_state_dict

    original = _lora_layers(_load(src, "a"), "a")
    # diffusers read the scale the way our reader did (from the metadata, or 1 without it)
    ours = {m.name.removeprefix("unet."): m.scale for m in open_adapter(src).modules()}
    assert {n: layer.scaling["a"] for n, layer in original.items()} == pytest.approx(ours)
    unet = _load(out, "b")
    loaded = _lora_layers(unet, "b")
    assert set(loaded) == set(original)
    # zero missing / unexpected keys: diffusers' adapter state dict is exactly the file's keys
    file_keys = {k.removeprefix("unet.") for k in load_file(str(out))}
    peft_keys = set(get_peft_model_state_dict(unet, adapter_name="b"))
    if any(".lora.down." in k for k in file_keys):  # the older key style diffusers converts
        file_keys = {
            k.replace(".lora.down.", ".lora_A.").replace(".lora.up.", ".lora_B.") for k in file_keys
        }
    assert peft_keys == file_keys
    assert set(load_file(str(out))) == set(load_file(str(src)))
    rows = {row.name.removeprefix("unet."): row for row in result.modules}
    assert set(rows) == set(loaded)
    for name, layer in loaded.items():
        row = rows[name]
        assert layer.r["b"] == 2
        assert layer.scaling["b"] == pytest.approx(original[name].scaling["a"], rel=1e-12)
        before = (
            original[name].get_delta_weight("a").detach().double().reshape(row.shape[0], -1).numpy()
        )
        after = layer.get_delta_weight("b").detach().double().reshape(row.shape[0], -1).numpy()
        err = float(np.linalg.norm(after - before) / np.linalg.norm(before))
        assert row.ey_bound == pytest.approx(_ey(before, 2), rel=1e-6)
        assert err == pytest.approx(row.stored_rel_error, rel=1e-5)


def test_diffusers_peft_style_with_metadata(diffusers_file: Path, tmp_path: Path) -> None:
    src_meta = json.loads(_header(diffusers_file)["lora_adapter_metadata"])
    assert src_meta["unet.r"] == 4  # diffusers' own flat, prefixed style
    rows = {m.name: m for m in open_adapter(diffusers_file).modules()}
    assert {m.scale for m in rows.values()} == {2.0, 0.5}
    result = compress(str(diffusers_file), tmp_path / "out", rank=2)
    assert result.verified == VERIFIED_FILE
    out = tmp_path / "out" / "pytorch_lora_weights.safetensors"
    meta = json.loads(_header(out)["lora_adapter_metadata"])
    assert (meta["unet.r"], meta["unet.lora_alpha"]) == (2, 4)
    assert set(meta) == set(src_meta)  # the same style and fields, new ranks
    _check_diffusers_round_trip(diffusers_file, out, result)


def test_diffusers_older_key_style(diffusers_file: Path, tmp_path: Path) -> None:
    """``.lora.down.weight`` / ``.lora.up.weight`` keys and no metadata (scale 1)."""
    tensors = {
        k.replace(".lora_A.", ".lora.down.").replace(".lora_B.", ".lora.up."): v
        for k, v in load_file(str(diffusers_file)).items()
    }
    src = tmp_path / "src" / "old_style.safetensors"
    src.parent.mkdir()
    save_file(tensors, str(src))
    result = compress(str(src), tmp_path / "out", rank=2)
    out = tmp_path / "out" / "old_style.safetensors"
    assert set(load_file(str(out))) == set(tensors)
    assert _header(out).get("lora_adapter_metadata") is None
    _check_diffusers_round_trip(src, out, result)


def test_verify_peft_is_refused_for_files(
    diffusers_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(
            [
                "compress",
                str(diffusers_file),
                "-o",
                str(tmp_path / "o"),
                "--rank",
                "2",
                "--verify",
                "peft",
            ]
        )
    assert info.value.code == 2
    assert "peft reload check is for PEFT adapters" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _load_kohya(path: Path, name: str) -> dict[str, Any]:
    """diffusers' own kohya route: lora_state_dict converts sd-scripts keys and alphas."""
    import torch
    from diffusers import StableDiffusionPipeline

    state, alphas = StableDiffusionPipeline.lora_state_dict(str(path.parent), weight_name=path.name)
    torch.manual_seed(1)
    unet = _tiny_unet()
    unet.load_lora_adapter(state, network_alphas=alphas, prefix="unet", adapter_name=name)
    return _lora_layers(unet, name)


def test_kohya_file_loads_in_diffusers_after_compress(diffusers_file: Path, tmp_path: Path) -> None:
    """A kohya file named by sd-scripts' rule for the tiny UNet (``lora_unet_`` + the module
    path with ``_``), alphas 2 and 1 at r 4; compressed, it loads through diffusers' kohya converter
    with every module at the new rank and the same scale."""
    tensors: dict[str, np.ndarray] = {}
    for key, value in sorted(load_file(str(diffusers_file)).items()):
        module, _, which = key.removeprefix("unet.").rpartition(".lora_")
        kohya = "lora_unet_" + module.replace(".", "_")
        kind = "lora_down" if which.startswith("A") else "lora_up"
        tensors[f"{kohya}.{kind}.weight"] = value
        # sd-scripts saves an alpha for every module; two values here. (diffusers gives a
        # module *without* alpha the most common alpha, not kohya's alpha = lora_dim.) The
        # other value goes on the resnets' conv1: for the attention projections diffusers'
        # kohya converter keys the alpha by its old processor name (``...processor.to_v_lora.
        # down.weight``), which no peft module matches, so a per-module alpha there would be
        # dropped (peft warns "alpha_pattern keys did not match") on both sides of the check.
        tensors[f"{kohya}.alpha"] = np.array(1.0 if ".conv1" in module else 2.0, dtype=np.float32)
    src = tmp_path / "src" / "k.safetensors"
    src.parent.mkdir()
    save_file(tensors, str(src))
    result = compress(str(src), tmp_path / "out", rank=2)
    out = tmp_path / "out" / "k.safetensors"
    original, loaded = _load_kohya(src, "a"), _load_kohya(out, "b")
    assert set(loaded) == set(original) and len(loaded) == len(result.modules)
    assert {layer.scaling["a"] for layer in original.values()} == {0.5, 0.25}
    for layer_name, layer in loaded.items():
        assert layer.r["b"] == 2
        assert layer.scaling["b"] == original[layer_name].scaling["a"]
