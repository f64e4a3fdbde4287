"""compress --pad-to R: every module at rank R, the update unchanged, checked through peft's own
reload (get_delta_weight of the padded adapter against the original's) and, for kohya files,
through sd-scripts' scale rule; the serving footprint stored in the header."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from gradience_hub.adapter import PEFT_PREFIX, open_adapter
from gradience_hub.compress.pad import pad_adapter
from gradience_hub.compress.sizing import SERVING_KEY, footprint, read_footprint, stamp
from gradience_hub.errors import UsageError
from tests.factories import bert_like_adapter, peft_adapter, requires, tiny_bert_config

# Only the tests that reload with peft need the bench extra; padding itself, its refusals,
# kohya files and the stamped header also run on the core install (numpy-written adapters).
needs_peft = requires("torch", "peft")


@pytest.fixture(params=["numpy", pytest.param("peft", marks=needs_peft)])
def make_adapter(request: pytest.FixtureRequest) -> Any:
    """``make_adapter(directory, **lora_kwargs)``: the tiny BERT's query/value adapter, written
    with numpy (core install) or saved by peft itself."""
    return bert_like_adapter if request.param == "numpy" else peft_adapter


def _base() -> Any:
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config()).eval()


def _deltas(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, int], np.ndarray]:
    """peft's own view of an adapter: each LoRA layer's delta weight and r, and the logits."""
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(_base(), str(directory)).eval()
    deltas, ranks = {}, {}
    for name, layer in model.named_modules():
        if isinstance(layer, LoraLayer):
            key = name.removeprefix(PEFT_PREFIX)
            delta = layer.get_delta_weight("default")  # type: ignore[attr-defined]
            deltas[key] = delta.detach().double().numpy()
            ranks[key] = int(layer.r["default"])
    ids = torch.arange(40).reshape(2, 20) % 100
    with torch.no_grad():
        logits = model(input_ids=ids).logits.double().numpy()
    return deltas, ranks, logits


@needs_peft
def test_pad_is_exact_through_peft_reload(tmp_path: Path) -> None:
    """r=4 with a rank_pattern (2) and rsLoRA: after padding to 8 every module has r=8 in
    peft and peft's delta weights and the model's logits equal the original's."""
    src = peft_adapter(
        tmp_path / "src",
        r=4,
        lora_alpha=8,
        use_rslora=True,
        rank_pattern={"value": 2},
        alpha_pattern={"value": 3},
    )
    before, ranks_before, logits_before = _deltas(src)
    assert set(ranks_before.values()) == {2, 4}
    result = pad_adapter(open_adapter(src), 8, tmp_path / "out")
    after, ranks_after, logits_after = _deltas(tmp_path / "out")
    assert set(after) == set(before)
    assert set(ranks_after.values()) == {8}
    for name, delta in before.items():
        # zero rows/columns add exact zeros; only the summation order may differ
        np.testing.assert_allclose(after[name], delta, rtol=0, atol=1e-7 * np.abs(delta).max())
    np.testing.assert_allclose(logits_after, logits_before, rtol=0, atol=1e-6)
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["r"] == 8
    assert {row.r_new for row in result.modules} == {8}
    assert result.rel_error == 0.0
    assert result.params_new == sum(row.params_old // row.r_old * 8 for row in result.modules)
    # the original entries are kept bit for bit, the padding is zeros
    old, new = (
        load_file(str(src / "adapter_model.safetensors")),
        load_file(str(tmp_path / "out" / "adapter_model.safetensors")),
    )
    for key, value in old.items():
        if ".lora_A." in key:
            assert np.array_equal(new[key][: value.shape[0]], value)
            assert not new[key][value.shape[0] :].any()
        elif ".lora_B." in key:
            assert np.array_equal(new[key][:, : value.shape[1]], value)
            assert not new[key][:, value.shape[1] :].any()
        else:
            assert np.array_equal(new[key], value)


def test_pad_refuses_a_rank_above_r_and_writes_nothing(make_adapter: Any, tmp_path: Path) -> None:
    src = make_adapter(tmp_path / "src", r=8, rank_pattern={"value": 2})
    with pytest.raises(UsageError, match=r"rank 8, above --pad-to 4 \(and 1 more\)"):
        pad_adapter(open_adapter(src), 4, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]
    with pytest.raises(UsageError, match="at least 1"):
        pad_adapter(open_adapter(src), 0, tmp_path / "out")


def test_pad_kohya_keeps_sd_scripts_update(tmp_path: Path) -> None:
    """sd-scripts: scale = alpha / lora_dim; after padding alpha = scale * R."""
    rng = np.random.default_rng(0)
    src = {
        "lora_unet_a_proj.lora_down.weight": rng.standard_normal((4, 12)).astype(np.float32),
        "lora_unet_a_proj.lora_up.weight": rng.standard_normal((10, 4)).astype(np.float32),
        "lora_unet_a_proj.alpha": np.array(2.0, dtype=np.float32),
        "lora_unet_conv.lora_down.weight": rng.standard_normal((3, 4, 3, 3)).astype(np.float32),
        "lora_unet_conv.lora_up.weight": rng.standard_normal((8, 3, 1, 1)).astype(np.float32),
    }
    path = tmp_path / "src" / "style.safetensors"
    path.parent.mkdir()
    save_file(src, str(path), metadata={"ss_network_dim": "4"})
    pad_adapter(open_adapter(path), 16, tmp_path / "out")
    got = load_file(str(tmp_path / "out" / "style.safetensors"))
    assert set(got) == set(src)  # no alpha added where kohya reads scale 1 without one
    for module, r in (("lora_unet_a_proj", 4), ("lora_unet_conv", 3)):
        down_old = src[f"{module}.lora_down.weight"].astype(np.float64).reshape(r, -1)
        up_old = src[f"{module}.lora_up.weight"].astype(np.float64).reshape(-1, r)
        alpha_old = float(src.get(f"{module}.alpha", r))
        down = got[f"{module}.lora_down.weight"].astype(np.float64)
        up = got[f"{module}.lora_up.weight"].astype(np.float64)
        assert down.shape[0] == 16 and up.shape[1] == 16
        alpha = float(got[f"{module}.alpha"]) if f"{module}.alpha" in got else 16.0
        np.testing.assert_allclose(
            alpha / 16 * up.reshape(up.shape[0], -1) @ down.reshape(16, -1),
            alpha_old / r * up_old @ down_old,
            rtol=1e-12,
        )


def test_stamp_stores_the_footprint_with_the_final_size(make_adapter: Any, tmp_path: Path) -> None:
    src = make_adapter(tmp_path / "src", r=4, rank_pattern={"value": 2})
    result = pad_adapter(open_adapter(src), 8, tmp_path / "out")
    weights = tmp_path / "out" / "adapter_model.safetensors"
    fp = footprint(
        result.rank_pattern, {m.name: m.scale for m in result.modules}, result.params_new, 0
    )
    fp = stamp(weights, fp)
    assert fp.file_bytes == weights.stat().st_size
    stored = read_footprint(weights)
    assert stored == fp.to_dict()
    assert stored is not None and stored["max_rank"] == 8 and stored["uniform_rank"] == 8
    assert stored["vllm_max_lora_rank"] == 8
    with safe_open(str(weights), framework="numpy") as f:
        assert set(f.metadata()) == {"format", SERVING_KEY}


@needs_peft
def test_stamped_adapter_still_loads_in_peft(tmp_path: Path) -> None:
    """peft loads a padded adapter with the footprint in its header (the entry is invisible
    to it): every module at the padded rank, the same deltas as the original's."""
    src = peft_adapter(tmp_path / "src", r=4, rank_pattern={"value": 2})
    result = pad_adapter(open_adapter(src), 8, tmp_path / "out")
    weights = tmp_path / "out" / "adapter_model.safetensors"
    fp = footprint(
        result.rank_pattern, {m.name: m.scale for m in result.modules}, result.params_new, 0
    )
    stamp(weights, fp)
    assert read_footprint(weights) is not None
    before, _, _ = _deltas(src)
    after, ranks, _ = _deltas(tmp_path / "out")
    assert set(after) == set(before) and set(ranks.values()) == {8}
    for name, delta in before.items():
        np.testing.assert_allclose(after[name], delta, rtol=0, atol=1e-7 * np.abs(delta).max())
