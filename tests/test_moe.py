"""peft target_parameters LoRA on a Mixtral-style MoE (issue 11 item 1): every expert is its own
module, with r, scale and singular values as peft's own get_delta_weight defines them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradience_hub.audit import run_audit
from gradience_hub.cli import main
from tests.factories import lora_config, planted_factors, requires, write_adapter

# Tests that build the Mixtral or use peft's deltas need the bench extra; the rest also runs on
# the core install (a numpy-written adapter of the same layout).
needs_peft = requires("torch", "peft")

N_EXPERTS = 3

# peft warns that pattern keys for target_parameters "did not match any targeted module", and
# applies them all the same (the test checks r=2 where the pattern says so)
pytestmark = pytest.mark.filterwarnings("ignore:The following (rank|alpha)_pattern keys")


# One LoRA config for the peft-saved adapter and its numpy stand-in, so they cannot drift apart.
_MOE_LORA: dict = {
    "r": 4,
    "lora_alpha": 8,
    "target_modules": ["q_proj"],
    "target_parameters": ["experts.gate_up_proj", "experts.down_proj"],
    "rank_pattern": {"layers.1.mlp.experts.down_proj": 2},
    "alpha_pattern": {"layers.1.mlp.experts.down_proj": 6},
}


def _mixtral_config():  # type: ignore[no-untyped-def]
    from transformers import MixtralConfig

    return MixtralConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_local_experts=N_EXPERTS,
        num_experts_per_tok=2,
    )


@pytest.fixture(scope="module")
def moe(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A tiny Mixtral with LoRA on both expert parameters, B randomised, and peft's deltas."""
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.layer import ParamWrapper
    from transformers import MixtralForCausalLM

    torch.manual_seed(0)
    config = _mixtral_config()
    lora = LoraConfig(**_MOE_LORA)
    model = get_peft_model(MixtralForCausalLM(config), lora)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.1)
    model.double()  # peft's delta in float64: the reference for a 1e-9 comparison
    deltas: dict[str, tuple[int, float, np.ndarray]] = {}
    for full, layer in model.named_modules():
        if isinstance(layer, ParamWrapper):
            module = full.removeprefix("base_model.model.")
            while module.endswith(".base_layer"):
                module = module.removesuffix(".base_layer")
            dw = layer.get_delta_weight("default").detach().double().numpy()  # (E, ., .)
            for e in range(N_EXPERTS):
                key = f"{module}.{layer.parameter_name}[{e}]"
                deltas[key] = (layer.r["default"], layer.scaling["default"], dw[e])
    directory = tmp_path_factory.mktemp("moe")
    model.save_pretrained(str(directory))
    return directory, deltas


@pytest.fixture(scope="module")
def numpy_moe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The moe fixture's files written with numpy alone (random factors, no torch): peft nests
    the wrappers of one module's parameters in target_parameters order, so the first
    (gate_up_proj) is saved under ``experts.base_layer`` and the last (down_proj) under
    ``experts``; each stacks its experts' factors, N_EXPERTS * r rows of lora_A."""
    rng = np.random.default_rng(0)
    hidden, inter = 16, 24
    modules = {}
    for i in range(2):
        r_down = 2 if i == 1 else 4  # rank_pattern
        modules[f"model.layers.{i}.mlp.experts.base_layer"] = (
            rng.standard_normal((2 * inter, N_EXPERTS * 4)),
            rng.standard_normal((N_EXPERTS * 4, hidden)),
        )
        modules[f"model.layers.{i}.mlp.experts"] = (
            rng.standard_normal((hidden, N_EXPERTS * r_down)),
            rng.standard_normal((N_EXPERTS * r_down, inter)),
        )
        modules[f"model.layers.{i}.self_attn.q_proj"] = planted_factors(hidden, hidden, 4, seed=i)
    config = lora_config(**_MOE_LORA, task_type=None, base_model_name_or_path=None)
    return write_adapter(tmp_path_factory.mktemp("moe_np"), modules, config)


@pytest.fixture(params=["numpy", pytest.param("peft", marks=needs_peft)])
def moe_dir(request: pytest.FixtureRequest) -> Path:
    """The expert LoRA adapter: numpy-written (core install) or saved by peft."""
    if request.param == "numpy":
        return request.getfixturevalue("numpy_moe")
    return request.getfixturevalue("moe")[0]


@needs_peft
def test_numpy_moe_has_peft_layout(moe, numpy_moe: Path) -> None:  # type: ignore[no-untyped-def]
    """The numpy stand-in has exactly the keys and shapes peft writes for the tiny Mixtral,
    and the same rank and alpha rules in its config."""
    from safetensors.numpy import load_file

    def shapes(directory: Path) -> dict[str, tuple[int, ...]]:
        tensors = load_file(str(directory / "adapter_model.safetensors"))
        return {key: value.shape for key, value in tensors.items()}

    assert shapes(numpy_moe) == shapes(moe[0])
    ours, theirs = (
        json.loads((d / "adapter_config.json").read_text()) for d in (numpy_moe, moe[0])
    )
    for key in ("r", "lora_alpha", "rank_pattern", "alpha_pattern"):
        assert ours[key] == theirs[key], key
    for key in ("target_modules", "target_parameters"):  # peft saves them as sets
        assert sorted(ours[key]) == sorted(theirs[key]), key


@needs_peft
def test_every_expert_matches_peft_delta(moe) -> None:  # type: ignore[no-untyped-def]
    directory, deltas = moe
    report = run_audit(str(directory))
    rows = {row.name: row for row in report.layers}
    assert set(deltas) <= set(rows)
    assert len(deltas) == 2 * 2 * N_EXPERTS
    for name, (r, scale, dw) in deltas.items():
        row = rows[name]
        assert (row.r, row.scale) == (r, pytest.approx(scale, rel=1e-15)), name
        truth = np.linalg.svd(dw, compute_uv=False)[:r]
        got = np.array(row.singular_values)
        assert np.allclose(got, truth, rtol=1e-9, atol=1e-12 * truth[0]), name
        assert row.module_type == "mlp"
    assert rows["model.layers.1.mlp.experts.down_proj[2]"].r == 2
    assert not any("rank mismatch" in w for w in report.warnings)


def test_unknown_stacked_layout_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stacked factors that are not r * experts rows: exit 2 naming the module, no numbers."""
    B, A = planted_factors(8, 8, 5)
    config = lora_config(r=2, target_modules=[], target_parameters=["experts.down_proj"])
    write_adapter(tmp_path, {"model.layers.0.mlp.experts": (B, A)}, config)
    with pytest.raises(SystemExit) as info:
        main(["audit", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert (info.value.code, out) == (2, "")
    assert err.startswith("Error: module model.layers.0.mlp.experts.down_proj: lora_A has 5 rows")


@needs_peft
def test_compress_expert_lora_round_trip(moe, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Per expert truncation written back as peft's stacked factors at the new rank: peft
    loads it onto the tiny Mixtral with no missing or unexpected keys (our --verify peft
    check), and each expert's delta as peft computes it is off by the reported Eckart-Young
    error."""
    from peft import PeftModel
    from transformers import MixtralForCausalLM

    from gradience_hub.compress import VERIFIED_PEFT_LOAD, compress

    directory, deltas = moe
    base_config = _mixtral_config()
    result = compress(
        str(directory),
        tmp_path / "out",
        rank=1,
        verify=True,
        base_model=MixtralForCausalLM(base_config),
    )
    assert result.verified == VERIFIED_PEFT_LOAD
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert sorted(config["target_parameters"]) == ["experts.down_proj", "experts.gate_up_proj"]
    rows = {row.name: row for row in result.modules}
    base = MixtralForCausalLM(base_config).double()
    model = PeftModel.from_pretrained(base, str(tmp_path / "out"))
    model.double()
    from peft.tuners.lora.layer import ParamWrapper

    seen = 0
    for full, layer in model.named_modules():
        if not isinstance(layer, ParamWrapper):
            continue
        module = full.removeprefix("base_model.model.")
        while module.endswith(".base_layer"):
            module = module.removesuffix(".base_layer")
        assert layer.r["default"] == 1
        dw = layer.get_delta_weight("default").detach().double().numpy()
        for e in range(N_EXPERTS):
            name = f"{module}.{layer.parameter_name}[{e}]"
            r, scale, before = deltas[name]
            assert layer.scaling["default"] == pytest.approx(scale, rel=1e-12)
            assert (rows[name].r_old, rows[name].r_new) == (r, 1)
            S = np.linalg.svd(before, compute_uv=False)
            ey = float(np.sqrt(np.sum(S[1:] ** 2) / np.sum(S**2)))
            err = float(np.linalg.norm(dw[e] - before) / np.linalg.norm(before))
            assert rows[name].ey_bound == pytest.approx(ey, rel=1e-9)
            assert err == pytest.approx(rows[name].stored_rel_error, rel=1e-6)
            assert rows[name].stored_rel_error == pytest.approx(ey, rel=1e-4)
            seen += 1
    assert seen == len(deltas)


def test_experts_of_one_parameter_share_the_largest_asked_rank(
    moe_dir: Path, tmp_path: Path
) -> None:
    """peft stacks one rank per parameter: asking rank 1 for one expert only keeps all at r."""
    from gradience_hub.compress import compress_adapter
    from gradience_hub.hub import load_adapter

    directory = moe_dir
    adapter, _ = load_adapter(str(directory))
    name = "model.layers.0.mlp.experts.down_proj"
    result = compress_adapter(adapter, {f"{name}[0]": 1}, tmp_path / "out", verify=False)
    assert {row.r_new for row in result.modules if row.name.startswith(name)} == {4}
    assert any(w.startswith(f"{name}: peft stores one rank") for w in result.warnings)
    assert all(row.rel_error == 0.0 for row in result.modules)
