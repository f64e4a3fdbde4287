"""UDR against a planted base model (issue 23 item 4): exact against a dense reference, from a
local directory and from the Hub stand-in by Range requests (bytes counted), the norms cache
reused, the name mappings (MoE expert slices, kohya, diffusers), and bad bases as exit 2/3."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from gradience_hub.adapter.basemodel import LocalBase, Mapped, base_matrix, map_modules
from gradience_hub.audit import run_audit
from gradience_hub.audit.udr import compute_udr
from gradience_hub.errors import AdapterError, HubError, UsageError
from tests.factories import adapter_files, llama_like_adapter, orthonormal_columns

D = 64


def _planted(i: int) -> np.ndarray:
    spectrum = np.geomspace(3.0 + i, 0.01, D)
    return (orthonormal_columns(D, D, 100 + i) * spectrum) @ orthonormal_columns(D, D, 200 + i).T


def write_base(directory: Path) -> dict[str, np.ndarray]:
    """A 2-shard llama-like base (bf16): q/v of 4 layers (what the adapter targets) plus MLP
    weights and embeddings it never needs."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for i in range(4):
        for j, proj in enumerate(("q_proj", "v_proj")):
            tensors[f"model.layers.{i}.self_attn.{proj}.weight"] = _planted(2 * i + j)
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = np.ones((16 * D, D))
    tensors["model.embed_tokens.weight"] = np.ones((20000, D))
    bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}
    names = sorted(bf16)
    shards = {
        "model-00001-of-00002.safetensors": names[:5],
        "model-00002-of-00002.safetensors": names[5:],
    }
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: bf16[k] for k in keys}, str(directory / shard))
        weight_map.update(dict.fromkeys(keys, shard))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    # what the reference sees: the bf16 values, exactly, in float64
    return {k: v.astype(np.float64) for k, v in bf16.items()}


def dense_reference(adapter: Path, base: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    from safetensors.numpy import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    out = {}
    for key in weights:
        if not key.endswith("lora_A.weight"):
            continue
        name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        A = weights[key].astype(np.float64)
        B = weights[key.replace("lora_A", "lora_B")].astype(np.float64)
        dW = scale * B @ A
        W = base[f"{name}.weight"]
        out[name] = (
            np.linalg.svd(dW, compute_uv=False)[0] / np.linalg.svd(W, compute_uv=False)[0],
            np.linalg.norm(dW) / np.linalg.norm(W),
        )
    return out


def _targeted_bytes(directory: Path) -> int:
    base = LocalBase(directory)
    return sum(e.nbytes for n, e in base.entries.items() if "self_attn" in n)


def test_udr_from_a_local_base_is_exact_and_reads_only_the_targeted_tensors(
    tmp_path: Path,
) -> None:
    base = write_base(tmp_path / "base")
    adapter = llama_like_adapter(tmp_path / "adapter", n_layers=4, d=D)
    layers = run_audit(str(adapter)).layers
    report = compute_udr(layers, str(tmp_path / "base"))
    expected = dense_reference(adapter, base)
    assert {r.name for r in report.rows} == set(expected) and len(expected) == 8
    for row in report.rows:
        udr, udr_f = expected[row.name]
        assert row.udr == pytest.approx(udr, rel=1e-9)
        assert row.udr_f == pytest.approx(udr_f, rel=1e-12)
        assert row.sdi == pytest.approx(np.log10(udr + 1e-12), rel=1e-9)
    values = sorted(expected[n][0] for n in expected)
    assert report.summary["udr_median"] == pytest.approx(values[round(7 * 0.5)], rel=1e-9)
    assert report.summary["n_layers_with_udr"] == 8
    # bytes: the two headers and the 8 targeted tensors, nothing else
    headers = sum(
        8 + int.from_bytes(p.read_bytes()[:8], "little")
        for p in (tmp_path / "base").glob("*.safetensors")
    )
    assert report.bytes_read == headers + _targeted_bytes(tmp_path / "base")
    assert report.bytes_read < report.base_bytes / 3


def _push_base(hub, directory: Path, repo: str = "org/base") -> None:
    hub.create_repo(repo, {p.name: p.read_bytes() for p in directory.iterdir()})


def _ranges(hub, name: str) -> list[tuple[int, int]]:
    spans = []
    for req in hub.requests_to(rf"/resolve/[^/]+/{re.escape(name)}$", method="GET"):
        value = req.headers.get("range")
        assert value, f"a GET of {name} without Range"
        begin, end = value.removeprefix("bytes=").split("-")
        spans.append((int(begin), int(end)))
    return spans


def test_udr_from_the_hub_by_range_requests_then_from_the_cache(
    hub_client_env, tmp_path: Path
) -> None:
    hub = hub_client_env
    base = write_base(tmp_path / "base")
    _push_base(hub, tmp_path / "base")
    adapter = llama_like_adapter(tmp_path / "adapter", n_layers=4, d=D)
    layers = run_audit(str(adapter)).layers
    cache = tmp_path / "norms.json"
    report = compute_udr(layers, "org/base", cache=cache)
    local = compute_udr(layers, str(tmp_path / "base"))
    assert [(r.name, r.udr, r.udr_f) for r in report.rows] == [
        (r.name, r.udr, r.udr_f) for r in local.rows
    ]
    expected = dense_reference(adapter, base)
    assert all(r.udr == pytest.approx(expected[r.name][0], rel=1e-9) for r in report.rows)
    # every shard GET was a Range; the tensor reads are exactly the targeted bytes
    served = 0
    for shard in sorted(p.name for p in (tmp_path / "base").glob("*.safetensors")):
        size = (tmp_path / "base" / shard).stat().st_size
        spans = _ranges(hub, shard)
        assert spans and all(end < size for _, end in spans)
        served += sum(min(end, size - 1) - begin + 1 for begin, end in spans)
    assert report.bytes_read == _targeted_bytes(tmp_path / "base")
    # huggingface_hub's header reads (at most 100,001 bytes per shard) are the only other bytes
    # served, and far less than the shards: no shard is ever downloaded whole
    shards = list((tmp_path / "base").glob("*.safetensors"))
    assert served - report.bytes_read <= len(shards) * 100_001
    assert served < sum(p.stat().st_size for p in shards) / 5
    # the cache: a second adapter of the same base reads no tensor
    hub.clear_requests()
    again = compute_udr(layers[:3], "org/base", cache=cache)
    assert again.cached == 3 and again.bytes_read == 0
    assert not hub.requests_to(r"\.safetensors$", method="GET")
    assert [r.udr for r in again.rows] == [r.udr for r in report.rows[:3]]
    stored = json.loads(cache.read_text())
    assert list(stored["bases"]) == [report.base] and report.base.startswith("org/base@")


def test_bad_bases_are_named(hub_client_env, tmp_path: Path) -> None:
    adapter = llama_like_adapter(tmp_path / "adapter", n_layers=1, d=D)
    layers = run_audit(str(adapter)).layers
    with pytest.raises(HubError, match="org/missing") as err:
        compute_udr(layers, "org/missing")
    assert err.value.exit_code == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match=r"no model\.safetensors") as bad:
        compute_udr(layers, str(tmp_path / "empty"))
    assert bad.value.exit_code == 2
    other = tmp_path / "other"
    other.mkdir()
    save_file({"encoder.x.weight": np.ones((2, 2), np.float32)}, str(other / "model.safetensors"))
    with pytest.raises(AdapterError, match="none of the adapter's modules"):
        compute_udr(layers, str(other))
    with pytest.raises(UsageError):
        compute_udr(layers, "not a repo id")
    (tmp_path / "cache.json").write_text("[]")
    with pytest.raises(UsageError, match="base-norms cache"):
        compute_udr(layers, str(tmp_path / "other"), cache=tmp_path / "cache.json")


def test_name_mapping_experts_kohya_diffusers_and_wrappers(tmp_path: Path) -> None:
    names = {
        "model.layers.0.mlp.experts.gate_up_proj",
        "encoder.layer.0.attention.self.query.weight",
        "unet/down_blocks.0.attentions.0.proj_in.weight",
        "text_encoder/text_model.encoder.layers.0.self_attn.q_proj.weight",
        "text_encoder_2/text_model.encoder.layers.0.mlp.fc1.weight",
    }
    modules = [
        "model.layers.0.mlp.experts.gate_up_proj[3]",
        "bert.encoder.layer.0.attention.self.query",  # a task model over a bare checkpoint
        "lora_unet_down_blocks_0_attentions_0_proj_in",
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_te2_text_model_encoder_layers_0_mlp_fc1",
        "unet.down_blocks.0.attentions.0.proj_in",
        "lora_unet_mid_block_nowhere",
    ]
    mapped, missing = map_modules(modules, names)
    assert mapped == {
        modules[0]: Mapped("model.layers.0.mlp.experts.gate_up_proj", 3),
        modules[1]: Mapped("encoder.layer.0.attention.self.query.weight"),
        modules[2]: Mapped("unet/down_blocks.0.attentions.0.proj_in.weight"),
        modules[3]: Mapped("text_encoder/text_model.encoder.layers.0.self_attn.q_proj.weight"),
        modules[4]: Mapped("text_encoder_2/text_model.encoder.layers.0.mlp.fc1.weight"),
        modules[5]: Mapped("unet/down_blocks.0.attentions.0.proj_in.weight"),
    }
    assert missing == ["lora_unet_mid_block_nowhere"]


def test_an_expert_slice_is_read_alone(tmp_path: Path) -> None:
    stacked = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
    save_file({"m.experts.down_proj": stacked}, str(tmp_path / "model.safetensors"))
    base = LocalBase(tmp_path)
    before = base.bytes_read
    W = base_matrix(base, Mapped("m.experts.down_proj", 2))
    np.testing.assert_array_equal(W, stacked[2])
    assert base.bytes_read - before == 6 * 5 * 4
    with pytest.raises(AdapterError, match="no expert 7"):
        base_matrix(base, Mapped("m.experts.down_proj", 7))


def test_conv_base_uses_peft_layout(tmp_path: Path) -> None:
    from tests.factories import write_adapter

    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    save_file({"conv.weight": kernel}, str(tmp_path / "model.safetensors"))
    A = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    B = rng.standard_normal((8, 2, 1, 1)).astype(np.float32)
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": ["conv"]}
    adapter = write_adapter(tmp_path / "adapter", {"conv": (B, A)}, config)
    (row,) = compute_udr(run_audit(str(adapter)).layers, str(tmp_path)).rows
    dW = B.reshape(8, 2).astype(np.float64) @ A.reshape(2, 36).astype(np.float64)
    W = kernel.reshape(8, 36).astype(np.float64)
    ref = np.linalg.svd(dW, compute_uv=False)[0] / np.linalg.svd(W, compute_uv=False)[0]
    assert row.udr == pytest.approx(ref, rel=1e-9)
    assert adapter_files(adapter)
