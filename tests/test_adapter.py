"""adapter.py: SOURCE parsing, PEFT config semantics, real peft-saved adapters of every kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradience_hub import adapter as ad
from gradience_hub.errors import AdapterError
from tests.factories import lora_config, peft_adapter, planted_factors, write_adapter


def test_parse_source(tmp_path: Path) -> None:
    spec = ad.parse_source("org/name")
    assert (spec.repo_id, spec.revision, spec.is_local) == ("org/name", None, False)
    assert ad.parse_source("org/name@v1.0").revision == "v1.0"
    assert ad.parse_source("org/name", revision="abc1234").revision == "abc1234"
    assert ad.parse_source(str(tmp_path)).local_path == tmp_path.resolve()
    # an existing path wins over the repo-id reading
    (tmp_path / "org" / "name").mkdir(parents=True)
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert ad.parse_source("org/name").is_local
    finally:
        os.chdir(cwd)
    with pytest.raises(AdapterError, match="two revisions"):
        ad.parse_source("org/name@a", revision="b")
    with pytest.raises(AdapterError, match="no such local directory or file"):
        ad.parse_source("./missing-dir")


def test_pattern_matching_follows_peft() -> None:
    """PEFT's get_pattern_key: the first key whose (.*\\.)?(key)$ regex matches wins."""
    from peft.utils.other import get_pattern_key

    config = ad.AdapterConfig(
        raw={},
        r=8,
        lora_alpha=16,
        rank_pattern={"q_proj": 4, "layers.1.self_attn.q_proj": 2, r"layers\.[23]\..*v_proj": 6},
        alpha_pattern={"v_proj": 3, "self_attn.v_proj": 5},
    )
    names = [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.2.self_attn.v_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.0.mlp.up_proj",
        "model.layers.0.self_attn.xq_proj",
    ]
    for name in names:
        r_key = get_pattern_key(list(config.rank_pattern), name)
        a_key = get_pattern_key(list(config.alpha_pattern), name)
        assert config.rank_for(name) == config.rank_pattern.get(r_key, 8)
        assert config.alpha_for(name) == config.alpha_pattern.get(a_key, 16)
    # the overlapping key listed later never wins
    assert config.rank_for("model.layers.1.self_attn.q_proj") == 4
    assert config.alpha_for("model.layers.0.self_attn.v_proj") == 3


def test_scale_plain_and_rslora() -> None:
    config = ad.AdapterConfig(raw={}, r=16, lora_alpha=32)
    assert config.scale_for("x", 16) == 2.0
    config.use_rslora = True
    assert config.scale_for("x", 16) == pytest.approx(32 / 4)


def _peft_scalings(directory: Path) -> dict[str, tuple[int, float]]:
    """r and scaling of every LoRA layer as peft itself loads them (tiny BERT base)."""
    import torch
    from peft import PeftModel
    from transformers import BertForSequenceClassification

    from tests.factories import tiny_bert_config

    torch.manual_seed(0)
    model = PeftModel.from_pretrained(BertForSequenceClassification(tiny_bert_config()), directory)
    out = {}
    for name, module in model.named_modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict) and "default" in scaling:
            out[ad.strip_prefix(name)] = (module.r["default"], scaling["default"])
    return out


@pytest.mark.parametrize(
    "kwargs",
    [
        {"r": 8, "lora_alpha": 16},
        {"r": 8, "lora_alpha": 16, "use_rslora": True},
        {
            "r": 8,
            "lora_alpha": 16,
            # overlapping keys; PEFT saves them sorted, so the specific key (sorted first)
            # wins both when the adapter is created and when it is reloaded
            "rank_pattern": {"layer.1.attention.self.query": 2, "query": 4},
            "alpha_pattern": {"layer.0.attention.self.value": 7, "value": 5},
        },
    ],
)
def test_scale_and_rank_agree_with_peft(tmp_path: Path, kwargs: dict) -> None:
    directory = peft_adapter(tmp_path / "a", **kwargs)
    adapter = ad.open_adapter(directory)
    expected = _peft_scalings(directory)
    seen = {m.name: (m.r, m.scale) for m in adapter.modules()}
    assert set(seen) == set(expected)
    for name, (r, scale) in expected.items():
        assert seen[name][0] == r
        assert seen[name][1] == pytest.approx(scale, rel=1e-12)


def test_embedding_conv_and_dora_from_peft(tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 12)
            self.conv = nn.Conv2d(3, 6, 3)
            self.lin = nn.Linear(12, 10)

    torch.manual_seed(0)
    model = get_peft_model(Net(), LoraConfig(r=4, lora_alpha=8, target_modules=["emb", "conv"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                p.normal_()
    model.save_pretrained(str(tmp_path / "ec"))
    adapter = ad.open_adapter(tmp_path / "ec")
    mods = {m.name: m for m in adapter.modules()}
    assert mods["emb"].kind == "embedding" and mods["emb"].shape == (12, 50)
    assert mods["conv"].kind == "conv" and mods["conv"].A.shape == (4, 27)
    # the update peft applies, from its own layer, has the spectrum we read
    conv_layer = model.base_model.model.conv
    delta = conv_layer.get_delta_weight("default").detach().double().reshape(6, -1).numpy()
    from gradience_hub import spectral

    S = spectral.lora_singular_values(mods["conv"].B, mods["conv"].A, mods["conv"].scale)
    np.testing.assert_allclose(S[:4], np.linalg.svd(delta, compute_uv=False)[:4], rtol=1e-6)
    emb_delta = model.base_model.model.emb.get_delta_weight("default").detach().double().numpy()
    S = spectral.lora_singular_values(mods["emb"].B, mods["emb"].A, mods["emb"].scale)
    np.testing.assert_allclose(S, np.linalg.svd(emb_delta, compute_uv=False)[:4], rtol=1e-6)

    dora = peft_adapter(tmp_path / "dora", use_dora=True)
    opened = ad.open_adapter(dora)
    assert opened.is_dora and opened.magnitude_modules
    assert all(m.has_magnitude for m in opened.modules())


def test_fan_in_fan_out_gpt2(tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    base = GPT2Model(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.save_pretrained(str(tmp_path / "g"))
    adapter = ad.open_adapter(tmp_path / "g")
    assert adapter.config.fan_in_fan_out
    from gradience_hub import spectral

    for m in adapter.modules():
        layer = model.get_submodule("base_model.model." + m.name)
        delta = layer.get_delta_weight("default").detach().double().numpy()
        S = spectral.lora_singular_values(m.B, m.A, m.scale)
        np.testing.assert_allclose(S, np.linalg.svd(delta, compute_uv=False)[:4], rtol=1e-6)
        assert m.module_type == "attention" and m.layer_index in (0, 1)


def test_low_precision_adapters_keep_their_dtype(tmp_path: Path) -> None:
    import ml_dtypes

    B, A = planted_factors(32, 24, 4, seed=1)
    for dtype, label in ((np.float16, "float16"), (ml_dtypes.bfloat16, "bfloat16")):
        write_adapter(tmp_path / label, {"model.layers.0.self_attn.q_proj": (B, A)}, dtype=dtype)
        (module,) = ad.open_adapter(tmp_path / label).modules()
        assert module.dtype == label


def test_multi_adapter_directories(tmp_path: Path) -> None:
    B, A = planted_factors(16, 16, 4)
    for name in ("alpha", "beta"):
        write_adapter(tmp_path / "multi" / name, {"model.layers.0.self_attn.q_proj": (B, A)})
    assert set(ad.list_adapters(tmp_path / "multi")) == {"alpha", "beta"}
    with pytest.raises(AdapterError, match="several adapters: alpha, beta") as err:
        ad.open_adapter(tmp_path / "multi")
    assert "--adapter-name" in (err.value.hint or "")
    assert ad.open_adapter(tmp_path / "multi", "beta").directory.name == "beta"
    with pytest.raises(AdapterError, match="no adapter named 'gamma'"):
        ad.open_adapter(tmp_path / "multi", "gamma")
    # PEFT's layout: the default adapter at the root, the others in subfolders
    write_adapter(tmp_path / "multi", {"model.layers.0.self_attn.q_proj": (B, A)})
    assert ad.open_adapter(tmp_path / "multi").directory == tmp_path / "multi"


def test_bin_weights_load_with_weights_only(tmp_path: Path) -> None:
    import torch

    directory = peft_adapter(tmp_path / "st")
    from safetensors.torch import load_file

    state = load_file(str(directory / "adapter_model.safetensors"))
    (directory / "adapter_model.safetensors").unlink()
    torch.save(state, str(directory / "adapter_model.bin"))
    names = {m.name for m in ad.open_adapter(directory).modules()}
    assert names == {ad.strip_prefix(k.rsplit(".lora_", 1)[0]) for k in state if "lora_A" in k}

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    torch.save({"x": Evil()}, str(directory / "adapter_model.bin"))
    with pytest.raises(AdapterError, match="weights_only=True"):
        ad.open_adapter(directory)


def test_module_types() -> None:
    assert ad.module_type("model.layers.3.self_attn.q_proj") == "attention"
    assert ad.module_type("model.layers.3.mlp.down_proj") == "mlp"
    assert ad.module_type("encoder.layer.0.attention.self.query") == "attention"
    assert ad.module_type("encoder.layer.0.intermediate.dense") == "mlp"
    assert ad.module_type("transformer.h.0.mlp.c_fc") == "mlp"
    assert ad.module_type("lm_head") == "other"
    assert ad.layer_index("model.layers.12.mlp.up_proj") == 12
    assert ad.layer_index("lm_head") is None


def test_config_must_be_lora(tmp_path: Path) -> None:
    B, A = planted_factors(8, 8, 2)
    write_adapter(tmp_path, {"m": (B, A)}, {**lora_config(), "peft_type": "IA3"})
    with pytest.raises(AdapterError, match="only LoRA"):
        ad.open_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        ad.open_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps(lora_config(r=0)))
    with pytest.raises(AdapterError, match="r = 0; it must be a positive integer"):
        ad.open_adapter(tmp_path)


def test_overlapping_patterns_reordered_by_peft_are_reported(tmp_path: Path) -> None:
    """PEFT matches patterns in dict order but saves the config with sorted keys, so an
    adapter created with {"query": 4, "layer.1...query": 2} gets r=4 everywhere, while its
    saved config says r=2 for layer 1 (PEFT itself then fails to reload it). The audit reads
    r from the tensors and flags the disagreement."""
    from gradience_hub.audit import run_audit

    directory = peft_adapter(
        tmp_path / "a", r=8, rank_pattern={"query": 4, "layer.1.attention.self.query": 2}
    )
    report = run_audit(str(directory))
    rows = {row.name: row.r for row in report.layers}
    assert rows["bert.encoder.layer.1.attention.self.query"] == 4
    assert any(
        "rank mismatch" in w and "layer.1.attention.self.query" in w for w in report.warnings
    )


# --------------------------------------------------------------------------- issue 9 hardening


def test_plain_keys_match_exactly_as_peft_does() -> None:
    """The backtracking-free matcher for plain keys agrees with PEFT's regex on every case,
    including "." as a wildcard, suffix matches and the trailing newline "$" allows."""
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    matcher = ad.config.PatternMatcher()
    alphabet = st.sampled_from(list("ab._-\n0"))

    @settings(max_examples=400, deadline=None)
    @given(
        st.text(alphabet.filter(lambda c: c != "\n"), min_size=1, max_size=6),
        st.text(alphabet, max_size=10),
    )
    def agree(key: str, module: str) -> None:
        expected = re.match(rf"(.*\.)?({key})$", module) is not None
        assert (matcher.first_key([key], module) == key) is expected

    agree()
    for key, module, hit in [
        ("q_proj", "model.layers.0.q_proj", True),
        ("q_proj", "model.layers.0.xq_proj", False),
        ("layers.0.q_proj", "model.layersX0.q_proj", True),  # "." is any character
        ("fc", "x.fc\n", True),
    ]:
        assert (matcher.first_key([key], module) == key) is hit


def test_redos_pattern_is_bounded_and_exit_2(tmp_path: Path) -> None:
    import time

    # unbounded, this backtracks ~fib(80) steps: the test would never finish
    name = "model.layers.0." + "a" * 80 + "!"
    config = lora_config(r=4, rank_pattern={"(a|aa)+$x": 2})
    write_adapter(tmp_path, {name: planted_factors(8, 8, 4)}, config)
    started = time.process_time()
    with pytest.raises(AdapterError, match="regex does not finish") as info:
        ad.open_adapter(tmp_path).config.rank_for(name)
    # the budget is CPU time (regex's timeout counts CPU seconds), so load does not matter
    assert time.process_time() - started < ad.config.PATTERN_BUDGET_S + 0.5
    assert info.value.exit_code == 2
    # a real (fast) regex key still works through the bounded engine
    write_adapter(
        tmp_path,
        {name: planted_factors(8, 8, 4)},
        lora_config(r=4, rank_pattern={r"layers\.\d+\.a+!": 2}),
    )
    assert ad.open_adapter(tmp_path).config.rank_for(name) == 2


def test_bf16_bin_keeps_bf16(tmp_path: Path) -> None:
    """A bf16 .bin is read exactly (float32 holds every bf16) and remembered as bf16."""
    import torch

    B, A = planted_factors(16, 16, 4)
    state = {
        "base_model.model.m.q_proj.lora_A.weight": torch.tensor(A, dtype=torch.bfloat16),
        "base_model.model.m.q_proj.lora_B.weight": torch.tensor(B, dtype=torch.bfloat16),
    }
    tmp_path.joinpath("adapter_config.json").write_text(json.dumps(lora_config(r=4)))
    torch.save(state, str(tmp_path / "adapter_model.bin"))
    adapter = ad.open_adapter(tmp_path)
    key = "base_model.model.m.q_proj.lora_A.weight"
    assert adapter.dtype_of(key) == "bf16"
    raw = adapter.tensor(key)
    assert raw.dtype == np.float32
    assert np.array_equal(raw, state[key].float().numpy())
    (module,) = adapter.modules()
    assert module.dtype == "bfloat16"
    assert adapter.module("m.q_proj").dtype == "bfloat16"


def test_weights_only_refusal_is_one_line(tmp_path: Path) -> None:
    import torch

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    tmp_path.joinpath("adapter_config.json").write_text(json.dumps(lora_config(r=4)))
    torch.save({"x": Evil()}, str(tmp_path / "adapter_model.bin"))
    with pytest.raises(AdapterError) as info:
        ad.open_adapter(tmp_path)
    assert len(info.value.user_lines()) == 2
    assert all("\n" not in line for line in info.value.user_lines())
    assert "weights_only=True" in info.value.message


def test_t5_feed_forward_is_mlp() -> None:
    assert ad.module_type("encoder.block.0.layer.1.DenseReluDense.wi") == "mlp"
    assert ad.module_type("decoder.block.3.layer.2.DenseReluDense.wo") == "mlp"
    assert ad.module_type("encoder.block.0.layer.1.DenseReluDense.wi_0") == "mlp"
    assert ad.module_type("encoder.block.0.layer.0.SelfAttention.o") == "attention"
    assert ad.module_type("decoder.block.0.layer.1.EncDecAttention.q") == "attention"
