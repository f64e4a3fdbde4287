"""Every conv LoRA peft writes (issue 11 item 2): Conv1d, Conv3d and grouped Conv2d, audited as
the update peft applies (float64 reference), compressed (grouped convs group by group), and an
unreadable module skipped with a warning while the rest is audited."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradience_hub.adapter import open_adapter
from gradience_hub.audit import run_audit
from gradience_hub.cli import main
from tests.factories import lora_config, planted_factors, requires, write_adapter

# Tests that build the net, read its forward pass or reload with peft need the bench extra; the
# rest also runs on the core install (numpy-written adapters of the same layout).
needs_peft = requires("torch", "peft")


def _net():  # type: ignore[no-untyped-def]
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv1d(3, 6, 3)
            self.c3 = nn.Conv3d(2, 4, (2, 3, 2))
            self.grouped = nn.Conv2d(4, 8, 3, groups=2)
            self.lin = nn.Linear(5, 7)

    return Net()


@pytest.fixture(scope="module")
def conv_adapter(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=6, target_modules=["c1", "c3", "grouped", "lin"])
    with pytest.warns(UserWarning, match="groups > 1"):
        model = get_peft_model(_net(), config)
    model.double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    directory = tmp_path_factory.mktemp("conv")
    model.save_pretrained(str(directory))
    return directory, model


# The factor shapes peft writes for _net() at r=4 (lora_A, lora_B): a conv's lora_A is a conv
# of the base's kernel with r output channels, its lora_B a 1x1 conv; for groups > 1 lora_B is
# grouped too, so it holds r / groups input channels.
_NET_FACTORS = {
    "c1": ((4, 3, 3), (6, 4, 1)),
    "c3": ((4, 2, 2, 3, 2), (4, 4, 1, 1, 1)),
    "grouped": ((4, 4, 3, 3), (8, 2, 1, 1)),
    "lin": ((4, 5), (7, 4)),
}


@pytest.fixture(scope="module")
def numpy_conv_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conv_adapter's files written with numpy alone (random factors, no torch)."""
    rng = np.random.default_rng(0)
    modules = {
        name: (rng.standard_normal(b_shape), rng.standard_normal(a_shape))
        for name, (a_shape, b_shape) in _NET_FACTORS.items()
    }
    config = lora_config(r=4, lora_alpha=6, target_modules=list(_NET_FACTORS))
    return write_adapter(tmp_path_factory.mktemp("conv_np"), modules, config)


@pytest.fixture(params=["numpy", pytest.param("peft", marks=needs_peft)])
def grouped_dir(request: pytest.FixtureRequest) -> Path:
    """A directory with the grouped conv LoRA: numpy-written (core install) or saved by peft."""
    if request.param == "numpy":
        return request.getfixturevalue("numpy_conv_adapter")
    return request.getfixturevalue("conv_adapter")[0]


@needs_peft
def test_numpy_conv_adapter_has_peft_layout(conv_adapter, numpy_conv_adapter) -> None:  # type: ignore[no-untyped-def]
    """The numpy stand-in has exactly the keys and shapes peft writes for the net."""
    from safetensors.numpy import load_file

    def shapes(directory: Path) -> dict[str, tuple[int, ...]]:
        tensors = load_file(str(directory / "adapter_model.safetensors"))
        return {key: value.shape for key, value in tensors.items()}

    assert shapes(numpy_conv_adapter) == shapes(conv_adapter[0])


def _applied_update(model, name: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The update the LoRA branch applies, read off its forward pass: the branch is linear in
    the input patch, so probing it with one-hot patches gives its matrix (c_out x c_in*k)."""
    import torch

    layer = getattr(model.base_model.model, name)
    base = layer.base_layer
    kernel = base.kernel_size
    c_in = base.in_channels
    cols = []
    with torch.no_grad():
        for idx in range(c_in * int(np.prod(kernel))):
            x = torch.zeros((1, c_in, *kernel), dtype=torch.float64)
            x.view(-1)[idx] = 1.0
            out = layer.lora_B["default"](layer.lora_A["default"](x)) * layer.scaling["default"]
            cols.append(out.reshape(-1).numpy())
    return np.stack(cols, axis=1)


@needs_peft
@pytest.mark.parametrize("name", ["c1", "c3", "grouped"])
def test_conv_spectra_match_the_applied_update(conv_adapter, name: str) -> None:  # type: ignore[no-untyped-def]
    directory, model = conv_adapter
    rows = {row.name: row for row in run_audit(str(directory)).layers}
    truth = np.linalg.svd(_applied_update(model, name), compute_uv=False)[:4]
    got = np.array(rows[name].singular_values)
    assert rows[name].kind == "conv"
    assert np.allclose(got, truth, rtol=1e-9, atol=1e-12 * truth[0])
    if name != "grouped":  # peft's own delta (merging is not supported for groups > 1)
        delta = getattr(model.base_model.model, name).get_delta_weight("default")
        dense = delta.detach().reshape(delta.shape[0], -1).numpy()
        assert np.allclose(np.linalg.svd(dense, compute_uv=False)[:4], truth, rtol=1e-9)


@requires("torch", "peft", "transformers")
def test_training_telemetry_reads_conv_modules_as_the_audit(conv_adapter) -> None:  # type: ignore[no-untyped-def]
    """The Trainer callback's factors (integrations.lora_factors, from the model in memory) have
    the spectra the audit reads from the saved files, conv and grouped conv included."""
    from gradience_hub import spectral
    from gradience_hub.integrations import lora_factors

    directory, model = conv_adapter
    rows = {row.name: row for row in run_audit(str(directory)).layers}
    factors = {m.name: m for m in lora_factors(model)}
    assert set(factors) == set(rows) == {"c1", "c3", "grouped", "lin"}
    for name, m in factors.items():
        got = spectral.lora_singular_values(m.B, m.A, m.scale)
        # lora_factors hands float32 copies of this float64 model's factors
        assert np.allclose(got, rows[name].singular_values, rtol=1e-5, atol=0), name


def test_grouped_params(grouped_dir: Path) -> None:
    module = open_adapter(grouped_dir).module("grouped")
    assert module.groups == 2
    assert module.params == 4 * 4 * 9 + 8 * 2  # lora_A (4, 4, 3, 3) + lora_B (8, 2, 1, 1)


def _per_group_truncation(update: np.ndarray, groups: int, k: int) -> np.ndarray:
    """The reference: each output-channel block of the dense update truncated to k / groups
    by a dense SVD."""
    blocks = []
    for block in np.split(update, groups, axis=0):
        U, S, Vh = np.linalg.svd(block, full_matrices=False)
        blocks.append((U[:, : k // groups] * S[: k // groups]) @ Vh[: k // groups])
    return np.concatenate(blocks, axis=0)


@needs_peft
def test_grouped_conv_compresses_group_by_group(conv_adapter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A grouped conv LoRA compresses to a grouped conv LoRA peft loads: the update it applies
    is every group's block truncated to k / groups (dense SVD reference), and the report gives
    that error beside the (lower) Eckart-Young bound of the whole update."""
    from peft import PeftModel

    from gradience_hub.compress import VERIFIED_PEFT_LOAD, compress

    directory, model = conv_adapter
    original = _applied_update(model, "grouped")
    # with the peft reload check: no missing or unexpected keys, r and scaling as written
    result = compress(str(directory), tmp_path / "out", rank=2, verify=True, base_model=_net())
    assert result.verified == VERIFIED_PEFT_LOAD
    row = next(row for row in result.modules if row.name == "grouped")
    assert (row.r_new, row.params_new) == (2, 2 * 4 * 9 + 8 * 1)
    reloaded = PeftModel.from_pretrained(_net().double(), str(tmp_path / "out"))
    layer = reloaded.base_model.model.grouped
    assert layer.r["default"] == 2 and layer.lora_B["default"].weight.shape == (8, 1, 1, 1)
    truth = _per_group_truncation(original, 2, 2)
    got = _applied_update(reloaded, "grouped")
    assert np.allclose(got, truth, rtol=1e-9, atol=1e-12 * np.abs(truth).max())
    norm = np.linalg.norm(original)
    assert row.rel_error == pytest.approx(np.linalg.norm(original - truth) / norm, rel=1e-9)
    S = np.linalg.svd(original, compute_uv=False)
    assert row.ey_bound == pytest.approx(np.sqrt(np.sum(S[2:] ** 2)) / norm, rel=1e-9)
    assert row.rel_error > row.ey_bound  # the groups' spectra differ


def test_grouped_conv_rank_must_be_a_multiple_of_groups(
    grouped_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = grouped_dir
    with pytest.raises(SystemExit) as info:
        main(["compress", str(directory), "-o", str(tmp_path / "o"), "--rank", "3"])
    assert info.value.code == 2 and not (tmp_path / "o").exists()
    assert "module grouped: target rank 3 is not a multiple of its conv's groups (2)" in (
        capsys.readouterr().err
    )


@needs_peft
def test_grouped_conv_energy_rule_counts_what_the_groups_keep(conv_adapter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--energy T on a grouped module: the smallest multiple of groups whose per-group
    truncation keeps T of the energy (checked on the dense blocks)."""
    from gradience_hub.compress import compress

    directory, model = conv_adapter
    original = _applied_update(model, "grouped")
    total = np.sum(original**2)
    kept = {k: np.sum(_per_group_truncation(original, 2, k) ** 2) / total for k in (2, 4)}
    energy = float(kept[2]) * 1.0001  # just above what rank 2 keeps: rank 4 is needed
    result = compress(str(directory), tmp_path / "out", energy=min(energy, 1.0), verify=False)
    assert next(r for r in result.modules if r.name == "grouped").r_new == 4
    result = compress(
        str(directory), tmp_path / "out2", energy=float(kept[2]) * 0.9999, verify=False
    )
    assert next(r for r in result.modules if r.name == "grouped").r_new == 2


@needs_peft
def test_conv1d_conv3d_compress_round_trip(tmp_path: Path) -> None:
    """Conv1d/Conv3d LoRA compress to a valid peft adapter: it loads onto the net with no
    missing or unexpected keys, and the reported error is the Eckart-Young value."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(_net(), LoraConfig(r=4, lora_alpha=6, target_modules=["c1", "c3"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.save_pretrained(str(tmp_path / "src"))
    from gradience_hub.compress import compress

    result = compress(str(tmp_path / "src"), tmp_path / "out", rank=2, verify=False)
    for row in result.modules:
        assert abs(row.rel_error - row.ey_bound) < 1e-9
    torch.manual_seed(1)
    reloaded = PeftModel.from_pretrained(_net(), str(tmp_path / "out"))
    for name in ("c1", "c3"):
        layer = getattr(reloaded.base_model.model, name)
        assert layer.r["default"] == 2
        assert layer.scaling["default"] == pytest.approx(6 / 4, rel=1e-12)


def test_unreadable_module_is_skipped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    B, A = planted_factors(8, 8, 4)
    Bx, _ = planted_factors(8, 8, 4, seed=2)
    _, Ax = planted_factors(8, 8, 3, seed=3)
    write_adapter(tmp_path, {"m.q_proj": (B, A), "m.v_proj": (Bx, Ax)}, lora_config(r=4))
    with pytest.raises(SystemExit) as info:
        main(["audit", str(tmp_path), "--json"])
    out, _ = capsys.readouterr()
    assert info.value.code == 0
    doc = json.loads(out)
    assert [row["name"] for row in doc["layers"]] == ["m.q_proj"]
    assert doc["summary"]["skipped_modules"] == 1
    assert any(
        w.startswith("skipped, not audited: module m.v_proj: shapes do not chain")
        for w in doc["warnings"]
    )
