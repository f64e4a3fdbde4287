"""compress: truncated adapters are valid PEFT adapters, exact where they should be, and the
reported error is the Eckart-Young optimum (checked against the dense truth, float64)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open

from gradience_hub import compress as C
from gradience_hub.adapter import PEFT_PREFIX, open_adapter
from gradience_hub.audit import run_audit
from gradience_hub.cli import main
from gradience_hub.compress import write as compress_write
from gradience_hub.errors import MissingExtraError, UsageError
from tests.factories import (
    lora_config,
    missing,
    peft_adapter,
    planted_factors,
    requires,
    tiny_bert_config,
    write_adapter,
)

# Only the tests that build a model, read peft's delta weights or reload with peft need the
# bench extra; the rest (compress's math, the files it writes, its self-check, the CLI) runs
# on the core install too.
needs_torch = requires("torch")
needs_peft = requires("torch", "peft")

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def _base(seed: int = 0):  # type: ignore[no-untyped-def]
    """The tiny BERT that tests.factories.peft_adapter wraps: same seed, same weights."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config()).eval()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base model saved with save_pretrained, as a user would pass it by path."""
    path = tmp_path_factory.mktemp("base")
    _base(0).save_pretrained(str(path))
    return path


def _tensors(directory: Path) -> dict[str, np.ndarray]:
    with safe_open(str(directory / "adapter_model.safetensors"), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)


def _reload(directory: Path, seed: int = 0):  # type: ignore[no-untyped-def]
    """Load an adapter with plain peft onto a fresh base; fail on missing/unexpected keys."""
    from peft import PeftModel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(_base(seed), str(directory)).eval()
    bad = [str(w.message) for w in caught if "missing" in str(w.message).lower()]
    bad += [str(w.message) for w in caught if "unexpected" in str(w.message).lower()]
    assert not bad, bad
    return model


def _logits(model) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    ids = torch.arange(40).reshape(2, 20) % 100
    with torch.no_grad():
        return model(input_ids=ids).logits.numpy()


def _lora_layers(model) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from peft.tuners.lora import LoraLayer

    return {
        name.removeprefix(PEFT_PREFIX): m
        for name, m in model.named_modules()
        if isinstance(m, LoraLayer)
    }


def _low_rank_adapter(directory: Path, true_rank: int, seed: int = 0, **lora_kwargs) -> Path:
    """A PEFT adapter of r=8 whose updates have rank ``true_rank`` (B's other columns are 0)."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = _base(seed)
    kwargs = {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"], **lora_kwargs}
    peft_model = get_peft_model(model, LoraConfig(**kwargs))
    with torch.no_grad():
        for layer in _lora_layers(peft_model).values():
            lora_B = layer.lora_B["default"]  # type: ignore[attr-defined]
            lora_B.weight.normal_(0.0, 0.05)
            lora_B.weight[:, true_rank:] = 0.0
            if lora_B.bias is not None:
                lora_B.bias.normal_(0.0, 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft mistakes the 1-D lora_B.bias for a ZeRO shard
        peft_model.save_pretrained(str(directory))
    return directory


def _dense_truncation(W: np.ndarray, k: int) -> np.ndarray:
    U, S, Vh = np.linalg.svd(W, full_matrices=False)
    return (U[:, :k] * S[:k]) @ Vh[:k]


# --------------------------------------------------------------------------- round trips


@needs_peft
def test_full_rank_keeps_outputs_and_converts_rslora(tmp_path: Path, base_dir: Path) -> None:
    """rsLoRA + rank_pattern + DoRA + a saved head: at full rank the config is rewritten
    (use_rslora false, alpha = s * r) and the model computes the same function."""
    src = peft_adapter(
        tmp_path / "src",
        use_rslora=True,
        use_dora=True,
        rank_pattern={"value": 4},
        modules_to_save=["classifier"],
    )
    adapter = open_adapter(src)
    ranks = {m.name: m.r for m in adapter.modules()}
    result = C.compress_adapter(adapter, ranks, tmp_path / "out", base_model=base_dir)
    assert result.verified == C.VERIFIED_PEFT_LOAD
    assert result.rel_error == 0.0 and result.param_reduction == 0.0
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["use_rslora"] is False and config["use_dora"] is True
    assert config["modules_to_save"] == ["classifier"]

    original, compressed = _reload(src), _reload(tmp_path / "out")
    np.testing.assert_allclose(_logits(compressed), _logits(original), atol=1e-5, rtol=0)
    before, after = _lora_layers(original), _lora_layers(compressed)
    assert set(before) == set(after) == set(ranks)
    for name, layer in after.items():
        assert layer.r["default"] == ranks[name]  # type: ignore[attr-defined]
        assert layer.scaling["default"] == pytest.approx(  # type: ignore[attr-defined]
            before[name].scaling["default"],  # type: ignore[attr-defined]
            rel=1e-12,
        )
    # factors kept at their rank are copied bit for bit, and so are magnitudes and the head
    old, new = _tensors(src), _tensors(tmp_path / "out")
    assert set(old) == set(new)
    for key in old:
        np.testing.assert_array_equal(new[key], old[key])


@needs_peft
def test_truncation_to_numerical_rank_is_exact_with_lora_bias(
    tmp_path: Path, base_dir: Path
) -> None:
    """Updates of rank 4 in r=8 factors, truncated to 4: balanced new factors, same outputs.
    lora_B.bias is scaled by PEFT too, so this also proves that keeping the scaling is right."""
    src = _low_rank_adapter(tmp_path / "src", true_rank=4, lora_bias=True)
    adapter = open_adapter(src)
    result = C.compress_adapter(
        adapter, dict.fromkeys(adapter.module_names, 4), tmp_path / "out", base_model=base_dir
    )
    assert result.verified == C.VERIFIED_PEFT_LOAD
    assert result.rel_error < 1e-12 and result.ey_bound < 1e-12
    assert result.param_reduction == pytest.approx(0.5)
    np.testing.assert_allclose(
        _logits(_reload(tmp_path / "out")), _logits(_reload(src)), atol=1e-5, rtol=0
    )
    old, new = _tensors(src), _tensors(tmp_path / "out")
    bias_keys = [k for k in old if k.endswith("lora_B.bias")]
    assert bias_keys
    for key in bias_keys:
        np.testing.assert_array_equal(new[key], old[key])
    for name in adapter.module_names:
        A = new[f"{PEFT_PREFIX}{name}.lora_A.weight"]
        B = new[f"{PEFT_PREFIX}{name}.lora_B.weight"]
        assert A.shape == (4, 32) and B.shape == (32, 4)
        # balanced: both factors carry sqrt(S), so their row/column norms agree
        np.testing.assert_allclose(np.linalg.norm(A, axis=1), np.linalg.norm(B, axis=0), rtol=1e-5)


@needs_peft
def test_rank_pattern_and_scaling_honoured_by_peft(tmp_path: Path, base_dir: Path) -> None:
    src = peft_adapter(tmp_path / "src", modules_to_save=["classifier"], use_dora=True)
    adapter = open_adapter(src)
    ranks = {n: (3 if n.endswith("query") else 1) for n in adapter.module_names}
    ranks[adapter.module_names[0]] = 5
    base = _base(0)  # a model object: rebuilt on the meta device, never modified
    result = C.compress_adapter(adapter, ranks, tmp_path / "out", base_model=base)
    assert result.verified == C.VERIFIED_PEFT_LOAD
    assert not _lora_layers(base) and not any(p.is_meta for p in base.parameters())
    assert result.rank_pattern == ranks
    scales = {m.name: m.scale for m in adapter.modules()}
    layers = _lora_layers(_reload(tmp_path / "out"))
    assert set(layers) == set(ranks)
    for name, layer in layers.items():
        assert layer.r["default"] == ranks[name]  # type: ignore[attr-defined]
        assert layer.scaling["default"] == pytest.approx(scales[name], rel=1e-12)  # type: ignore[attr-defined]
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["r"] == 1 and config["lora_alpha"] == 2  # the most common rank, s = 2
    assert all(not k.startswith(PEFT_PREFIX) for k in config["rank_pattern"])
    assert config["rank_pattern"] == {n: k for n, k in ranks.items() if k != 1}
    old, new = _tensors(src), _tensors(tmp_path / "out")
    for key in old:
        if "lora_magnitude_vector" in key or "classifier" in key:
            np.testing.assert_array_equal(new[key], old[key])


def test_error_equals_eckart_young_and_dense_truth(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    modules = {
        f"model.layers.{i}.self_attn.q_proj": planted_factors(
            48, 40, 8, np.sort(rng.uniform(0.01, 1.0, 8))[::-1], seed=i
        )
        for i in range(3)
    }
    src = write_adapter(tmp_path / "src", modules, lora_config(r=8, lora_alpha=16))
    adapter = open_adapter(src)
    ranks = {name: k for name, k in zip(modules, (1, 3, 6), strict=True)}
    result = C.compress_adapter(adapter, ranks, tmp_path / "out", verify=False)
    assert result.verified == C.VERIFIED_SELF
    new = _tensors(tmp_path / "out")
    num = den = 0.0
    for row in result.modules:
        stored = _tensors(src)
        B = stored[f"{PEFT_PREFIX}{row.name}.lora_B.weight"].astype(np.float64)
        A = stored[f"{PEFT_PREFIX}{row.name}.lora_A.weight"].astype(np.float64)
        dW = row.scale * B @ A  # the dense truth, float64 (tests may form the product)
        truth = np.linalg.norm(dW - _dense_truncation(dW, row.r_new)) / np.linalg.norm(dW)
        assert abs(row.rel_error - row.ey_bound) < 1e-9
        assert abs(row.rel_error - truth) < 1e-9
        B_k = new[f"{PEFT_PREFIX}{row.name}.lora_B.weight"].astype(np.float64)
        A_k = new[f"{PEFT_PREFIX}{row.name}.lora_A.weight"].astype(np.float64)
        written = np.linalg.norm(dW - row.scale * B_k @ A_k) / np.linalg.norm(dW)
        assert abs(row.stored_rel_error - written) < 1e-9
        assert row.params_new == row.r_new * (48 + 40)
        num += (truth * np.linalg.norm(dW)) ** 2
        den += np.linalg.norm(dW) ** 2
    assert abs(result.rel_error - np.sqrt(num / den)) < 1e-9
    assert result.params_old == 3 * 8 * 88 and result.params_new == (1 + 3 + 6) * 88
    assert result.param_reduction == pytest.approx(1 - 10 / 24)


def test_bf16_dtype_and_metadata_kept(tmp_path: Path) -> None:
    modules = {"layers.0.q_proj": planted_factors(32, 32, 8, seed=1)}
    extra = {"base_model.model.lm_head.weight": np.ones((4, 32), dtype=ml_dtypes.bfloat16)}
    src = write_adapter(tmp_path / "src", modules, dtype=ml_dtypes.bfloat16, extra=extra)
    result = C.compress_adapter(open_adapter(src), {"layers.0.q_proj": 3}, tmp_path / "out")
    with safe_open(str(tmp_path / "out" / "adapter_model.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
        dtypes = {k: str(f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118
    assert set(dtypes.values()) == {"BF16"}
    row = result.modules[0]
    assert row.dtype == "bfloat16"
    assert abs(row.rel_error - row.ey_bound) < 1e-9
    assert row.stored_rel_error != row.rel_error  # bf16 rounding is measured, not hidden
    assert abs(row.stored_rel_error - row.rel_error) < 1e-2


@functools.cache
def _net_class():  # type: ignore[no-untyped-def]
    import torch

    class Net(torch.nn.Module):
        """A non-transformers model with conv, embedding and linear LoRA targets."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.emb = torch.nn.Embedding(20, 16)
            self.lin = torch.nn.Linear(16, 12)

        def forward(self, x, ids):  # type: ignore[no-untyped-def]
            return self.conv(x), self.lin(self.emb(ids))

    return Net


def _Net():  # type: ignore[no-untyped-def]
    return _net_class()()


@needs_peft
def test_embedding_and_conv_lora(tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(0)
    net = get_peft_model(
        _Net(), LoraConfig(r=4, lora_alpha=8, target_modules=["conv", "emb", "lin"])
    )
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "lora_" in name:  # PEFT zeroes lora_B but lora_embedding_A: randomise all
                param.normal_(0.0, 0.1)
    net.save_pretrained(str(tmp_path / "src"))
    originals = {
        n: layer.get_delta_weight("default").detach().double().numpy()  # type: ignore[attr-defined]
        for n, layer in _lora_layers(net).items()
    }

    adapter = open_adapter(tmp_path / "src")
    ranks = {"conv": 2, "emb": 2, "lin": 3}
    result = C.compress_adapter(adapter, ranks, tmp_path / "out", base_model=_Net())
    assert result.verified == C.VERIFIED_PEFT_LOAD
    new = _tensors(tmp_path / "out")
    assert new[f"{PEFT_PREFIX}conv.lora_A.weight"].shape == (2, 3, 3, 3)
    assert new[f"{PEFT_PREFIX}conv.lora_B.weight"].shape == (8, 2, 1, 1)
    assert new[f"{PEFT_PREFIX}emb.lora_embedding_A"].shape == (2, 20)
    assert new[f"{PEFT_PREFIX}emb.lora_embedding_B"].shape == (16, 2)
    assert new[f"{PEFT_PREFIX}lin.lora_A.weight"].shape == (3, 16)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = PeftModel.from_pretrained(_Net(), str(tmp_path / "out"))
    errors = {m.name: m for m in result.modules}
    for name, layer in _lora_layers(reloaded).items():
        delta = layer.get_delta_weight("default").detach().double().numpy()  # type: ignore[attr-defined]
        W = originals[name]
        flat = W.reshape(W.shape[0], -1)
        truth = _dense_truncation(flat, ranks[name]).reshape(W.shape)
        np.testing.assert_allclose(delta, truth, atol=1e-5)
        rel = np.linalg.norm(flat - truth.reshape(flat.shape)) / np.linalg.norm(flat)
        assert abs(errors[name].rel_error - rel) < 1e-6  # the originals went through float32


# --------------------------------------------------------------------------- planning


def test_plan_modes(tmp_path: Path) -> None:
    from gradience_hub import spectral
    from tests.factories import llama_like_adapter

    src = llama_like_adapter(tmp_path / "src", n_layers=2, r=8)
    report = run_audit(str(src))
    assert set(C.plan_ranks(report, rank=3).values()) == {3}
    by_energy = C.plan_ranks(report, energy=0.99)
    for layer in report.layers:
        want = spectral.energy_rank(np.asarray(layer.singular_values), 0.99)
        assert by_energy[layer.name] == want
    assert C.plan_ranks(report, per_layer=True) == report.suggestions["per_layer"]["rank_pattern"]
    for bad in ({}, {"rank": 2, "per_layer": True}, {"rank": 2, "energy": 0.9}):
        with pytest.raises(UsageError):
            C.plan_ranks(report, **bad)
    with pytest.raises(UsageError, match="target rank 9 is above its current rank 8"):
        C.plan_ranks(report, rank=9)
    with pytest.raises(UsageError, match="below 1"):
        C.plan_ranks(report, rank=0)


def test_per_layer_compress_writes_audit_rank_pattern(tmp_path: Path) -> None:
    src = write_adapter(
        tmp_path / "src",
        {
            "layers.0.q_proj": planted_factors(32, 32, 8, np.geomspace(1, 1e-4, 8), seed=0),
            "layers.0.v_proj": planted_factors(32, 32, 8, np.ones(8), seed=1),
        },
    )
    result = C.compress(str(src), tmp_path / "out", per_layer=True)
    report = run_audit(str(src))
    assert result.rank_pattern == report.suggestions["per_layer"]["rank_pattern"]
    written = open_adapter(tmp_path / "out")
    for name, k in result.rank_pattern.items():
        assert written.config.rank_for(name) == k
        assert written.module(name).r == k
    # no base model given and none resolvable offline: the config-level check, exactly; on the
    # core install (no torch/peft) the numpy self-check, the level compress reaches there
    no_peft = missing("torch", "peft")
    assert result.verified == (C.VERIFIED_SELF if no_peft else C.VERIFIED_PEFT_CONFIG)


_OVERLAPPING = {"a.q": (2, 4.0), "x.a.q": (3, 6.0), "b_q": (1, 2.0), "b.q": (1, 2.0)}


def test_overlapping_module_names_get_escaped_patterns() -> None:
    want = _OVERLAPPING
    config = C.build_config(lora_config(), want)
    from gradience_hub.adapter import AdapterConfig

    rule = AdapterConfig(
        raw=config,
        r=config["r"],
        lora_alpha=config["lora_alpha"],
        rank_pattern=config["rank_pattern"],
        alpha_pattern=config["alpha_pattern"],
    )
    for name, (k, alpha) in want.items():
        assert (rule.rank_for(name), rule.alpha_for(name)) == (k, alpha)
    assert list(config["rank_pattern"])[:2] == ["^x\\.a\\.q", "^a\\.q"]


@needs_peft
def test_overlapping_module_names_resolve_with_peft_rule() -> None:
    want = _OVERLAPPING
    config = C.build_config(lora_config(), want)
    # PEFT's own rule gives every module its value in any key order (PEFT re-saves sorted)
    from peft.utils.other import get_pattern_key

    for keys in (list(config["rank_pattern"]), sorted(config["rank_pattern"])):
        for name, (k, _) in want.items():
            assert config["rank_pattern"][get_pattern_key(keys, name)] == k


def _short_and_long_names(tmp_path: Path) -> tuple[dict[str, int], dict, C.CompressionResult]:
    """Issue 9 item 12's adapter compressed per layer: (the ranks wanted, the written config,
    the result)."""
    one = np.array([1.0, 1e-6, 1e-7, 1e-8])  # energy rank 1 -> suggested r 1
    two = np.array([1.0, 0.5, 1e-6, 1e-7])  # energy rank 2 -> suggested r 2
    # "fc" is the odd one out, so its key goes in rank_pattern, where a plain "fc" would also
    # match "x.fc": the fallback must write keys that cannot shadow each other.
    modules = {
        "fc": planted_factors(16, 16, 4, one, seed=1),
        "x.fc": planted_factors(16, 16, 4, two, seed=2),
        "y.q": planted_factors(16, 16, 4, two, seed=3),
        "z.q": planted_factors(16, 16, 4, two, seed=4),
    }
    want = {"fc": 1, "x.fc": 2, "y.q": 2, "z.q": 2}
    src = write_adapter(tmp_path / "src", modules, lora_config(r=4, target_modules=["fc", "q"]))
    result = C.compress(str(src), tmp_path / "out", per_layer=True, verify=False)
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    return want, config, result


def test_per_layer_short_name_cannot_shadow_a_longer_one(tmp_path: Path) -> None:
    """Issue 9 item 12: modules "fc" and "x.fc" at different per-layer ranks; the written config
    keeps insertion order and reloads with each module's own rank (our rule here, peft's rule
    in the next test)."""
    want, config, result = _short_and_long_names(tmp_path)
    assert {m.name: m.r_new for m in result.modules} == want
    assert list(config["rank_pattern"]) == ["^x\\.fc", "^y\\.q", "^z\\.q", "^fc"]
    reopened = open_adapter(tmp_path / "out")
    assert {n: reopened.config.rank_for(n) for n in want} == want


@needs_peft
def test_per_layer_short_name_cannot_shadow_a_longer_one_in_peft(tmp_path: Path) -> None:
    """The same written config read by PEFT's own pattern rule, in any key order."""
    want, config, _ = _short_and_long_names(tmp_path)
    from peft.utils.other import get_pattern_key

    for keys in (list(config["rank_pattern"]), sorted(config["rank_pattern"])):
        for name, k in want.items():
            key = get_pattern_key(keys, name)
            assert config["rank_pattern"].get(key, config["r"]) == k


# --------------------------------------------------------------------------- refusals, atomicity


def test_refuses_rank_above_current_and_leaves_nothing(tmp_path: Path) -> None:
    src = write_adapter(tmp_path / "src", {"layers.0.q_proj": planted_factors(16, 16, 4)})
    with pytest.raises(UsageError, match=r"layers\.0\.q_proj.*target rank 5.*current rank 4"):
        C.compress_adapter(open_adapter(src), {"layers.0.q_proj": 5}, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_failed_check_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_adapter(tmp_path / "src", {"layers.0.q_proj": planted_factors(16, 16, 4)})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "adapter_config.json").write_text("old")  # a previous output: replaceable

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(compress_write, "verify_with_peft", boom)
    with pytest.raises(RuntimeError):
        C.compress_adapter(open_adapter(src), {"layers.0.q_proj": 2}, tmp_path / "out", force=True)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["adapter_config.json"]
    assert (tmp_path / "out" / "adapter_config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_verify_true_without_peft_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_adapter(tmp_path / "src", {"layers.0.q_proj": planted_factors(16, 16, 4)})
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingExtraError) as info:
        C.compress_adapter(open_adapter(src), {}, tmp_path / "out", verify=True)
    assert info.value.exit_code == 2
    result = C.compress_adapter(open_adapter(src), {}, tmp_path / "out2")
    assert result.verified == C.VERIFIED_SELF


def test_core_install_without_torch(tmp_path: Path) -> None:
    """compress imports neither torch nor peft when they are absent (the core install)."""
    src = write_adapter(tmp_path / "src", {"layers.0.q_proj": planted_factors(16, 16, 4)})
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['peft'] = None\n"
        "from gradience_hub.compress import compress\n"
        f"r = compress({str(src)!r}, {str(tmp_path / 'out')!r}, rank=2)\n"
        "print(r.verified, r.params_new)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [C.VERIFIED_SELF, str(2 * 32)]


# --------------------------------------------------------------------------- CLI


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_cli_compress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_adapter(
        tmp_path / "src", {f"layers.{i}.q_proj": planted_factors(16, 16, 4, seed=i) for i in (0, 1)}
    )
    out = str(tmp_path / "out")
    code, text, _ = _run(["compress", str(src), "--output", out, "--rank", "2"], capsys)
    assert code == 0
    assert "Total" in text and "50.0%" in text and "Eckart-Young" in text

    code, _, err = _run(["compress", str(src), "--output", out, "--rank", "1"], capsys)
    assert code == 2 and "not empty" in err and "--force" in err
    code, text, _ = _run(
        ["compress", str(src), "--output", out, "--rank", "1", "--force", "--json"], capsys
    )
    assert code == 0
    doc = json.loads(text)
    assert doc["totals"]["params_new"] == 2 * 32
    assert doc["totals"]["param_reduction"] == pytest.approx(0.75)

    code, _, err = _run(
        ["compress", str(src), "--output", str(tmp_path / "o2"), "--rank", "5"], capsys
    )
    assert code == 2 and "above its current rank 4" in err and "Traceback" not in err
    assert not (tmp_path / "o2").exists()
    code, _, err = _run(["compress", str(src), "--output", str(tmp_path / "o3")], capsys)
    assert code == 2 and "choose exactly one of --rank K, --energy T, --per-layer" in err
    for modes in (["--rank", "2", "--per-layer"], ["--energy", "0.9", "--rank", "1"]):
        code, _, err = _run(
            ["compress", str(src), "--output", str(tmp_path / "o3"), *modes], capsys
        )
        assert code == 2 and "are different modes: choose one" in err
        assert modes[0] in err and modes[-2 if modes[-1].isdigit() else -1] in err
    code, _, err = _run(
        ["compress", str(src), "--output", str(tmp_path / "o4"), "--energy", "1.5"], capsys
    )
    assert code == 2 and "--energy" in err
    code, _, err = _run(["compress", str(src), "--output", str(src), "--rank", "1"], capsys)
    assert code == 2


@needs_peft
def test_seq_cls_adapter_on_a_plain_checkpoint_is_reload_checked(tmp_path: Path) -> None:
    """The demo's case: a SEQ_CLS adapter whose base checkpoint's config says BertModel. The
    reload check must wrap the base the way PEFT does for that task type (under `bert.`)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification, BertModel

    from gradience_hub.compress import compress
    from tests.factories import tiny_bert_config

    torch.manual_seed(0)
    base_dir = tmp_path / "base"
    BertModel(tiny_bert_config()).save_pretrained(str(base_dir))  # architectures: BertModel
    model = BertForSequenceClassification.from_pretrained(str(base_dir))
    peft_model = get_peft_model(
        model,
        LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS"),
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    result = compress(str(tmp_path / "adapter"), str(tmp_path / "out"), rank=4)
    assert result.verified == "peft-load"


# --------------------------------------------------------------------------- issue 9 hardening


@pytest.mark.parametrize(
    ("dtype", "shape_a", "message"),
    [
        ("int64", (4, 8), "lora_A has dtype int64; LoRA factors must be floating point"),
        ("bool", (4, 8), "lora_A has dtype bool; LoRA factors must be floating point"),
        ("float32", (4, 0), "lora_A has shape (4, 0) with no elements"),
    ],
)
def test_compress_refuses_non_float_and_empty_factors(
    dtype: str,
    shape_a: tuple[int, int],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from safetensors.numpy import save_file

    src = tmp_path / "src"
    src.mkdir()
    save_file(
        {
            f"{PEFT_PREFIX}m.q_proj.lora_A.weight": np.ones(shape_a, dtype),
            f"{PEFT_PREFIX}m.q_proj.lora_B.weight": np.ones((8, shape_a[0]), dtype),
        },
        str(src / "adapter_model.safetensors"),
    )
    (src / "adapter_config.json").write_text(json.dumps(lora_config(r=4)))
    code, out, err = _run(
        ["compress", str(src), "-o", str(tmp_path / "out"), "--rank", "2"], capsys
    )
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == f"Error: module m.q_proj: {message}"
    assert len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "out").exists()


@needs_torch
def test_bf16_bin_is_written_back_as_bf16(tmp_path: Path) -> None:
    """Issue 9 item 13: a bf16 .bin adapter compresses to bf16 safetensors, and a module kept at
    its rank is copied bit for bit."""
    import torch

    B, A = planted_factors(16, 16, 4)
    B2, A2 = planted_factors(16, 16, 2, seed=5)
    src = tmp_path / "src"
    src.mkdir()
    state = {
        f"{PEFT_PREFIX}m.q_proj.lora_A.weight": torch.tensor(A, dtype=torch.bfloat16),
        f"{PEFT_PREFIX}m.q_proj.lora_B.weight": torch.tensor(B, dtype=torch.bfloat16),
        f"{PEFT_PREFIX}m.v_proj.lora_A.weight": torch.tensor(A2, dtype=torch.bfloat16),
        f"{PEFT_PREFIX}m.v_proj.lora_B.weight": torch.tensor(B2, dtype=torch.bfloat16),
    }
    config = lora_config(r=4, rank_pattern={"v_proj": 2}, alpha_pattern={"v_proj": 8})
    (src / "adapter_config.json").write_text(json.dumps(config))
    torch.save(state, str(src / "adapter_model.bin"))
    result = C.compress_adapter(open_adapter(src), {"m.q_proj": 2}, tmp_path / "out", verify=False)
    assert any("every tensor keeps its dtype" in w for w in result.warnings)
    with safe_open(str(tmp_path / "out" / "adapter_model.safetensors"), framework="pt") as f:
        got = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert {t.dtype for t in got.values()} == {torch.bfloat16}
    key = f"{PEFT_PREFIX}m.v_proj.lora_A.weight"
    assert torch.equal(got[key].view(torch.int16), state[key].view(torch.int16))


def test_cli_verify_levels_and_no_torch_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's default check is the numpy self-check (no torch import, the speed target);
    ``--verify peft`` reloads with peft (the next test)."""
    src = write_adapter(tmp_path / "src", {"layers.0.q_proj": planted_factors(16, 16, 4)})
    code = (
        "import sys\n"
        "from gradience_hub.cli import main\n"
        "try:\n"
        f"    main(['compress', {str(src)!r}, '-o', {str(tmp_path / 'a')!r}, '--rank', '2',"
        " '--json'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('torch' in sys.modules, 'peft' in sys.modules, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verified"] == C.VERIFIED_SELF
    assert proc.stderr.split() == ["False", "False"]


@needs_peft
def test_cli_verify_peft_checks_with_peft(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_adapter(tmp_path / "src", {"layers.0.q_proj": planted_factors(16, 16, 4)})
    rc, text, _ = _run(
        [
            "compress",
            str(src),
            "-o",
            str(tmp_path / "b"),
            "--rank",
            "2",
            "--json",
            "--verify",
            "peft",
        ],
        capsys,
    )
    assert rc == 0 and json.loads(text)["verified"] == C.VERIFIED_PEFT_CONFIG
