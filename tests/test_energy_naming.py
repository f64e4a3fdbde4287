"""Issue 8 item 2: the energy-rank summary fields are named for the threshold they hold, and every
reader (audit.json, bench.json of both schemas, the rendered card) agrees on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gradience_hub.audit import AuditReport, run_audit
from gradience_hub.publish.render import render
from gradience_hub.record import load_bench
from tests.factories import lora_config, planted_factors, write_adapter

GOLDEN = Path(__file__).parent / "golden"


def _audit(tmp_path: Path, energy: float) -> dict:
    spectrum = np.array([1.0] * 8)
    modules = {f"m.{i}.q_proj": planted_factors(32, 32, 8, spectrum, seed=i) for i in range(3)}
    write_adapter(tmp_path, modules, lora_config(r=8))
    return run_audit(str(tmp_path), energy=energy).to_dict()


def test_card_shows_k_at_the_asked_threshold(tmp_path: Path) -> None:
    audit = _audit(tmp_path, 0.5)
    card = render("card", AuditReport.from_dict(audit), None)
    assert "| Energy rank (50% energy), p50 / p90 | 4 / 4 |" in card
    # the same audit written with the pre-rename names renders the same card
    legacy = json.loads(json.dumps(audit))
    legacy["summary"]["energy_rank_90_p50"] = legacy["summary"].pop("energy_rank_p50")
    legacy["summary"]["energy_rank_90_p90"] = legacy["summary"].pop("energy_rank_p90")
    assert render("card", AuditReport.from_dict(legacy), None) == card


def test_gradience_011_bench_gets_the_new_names() -> None:
    """gradience 0.11's probe holds energy_rank_90_* at its fixed 0.90 threshold."""
    record = load_bench(GOLDEN / "gradience_011_bench.json")
    assert record.audit["energy_threshold"] == 0.9
    assert (record.audit["energy_rank_p50"], record.audit["energy_rank_p90"]) == (2.0, 18.0)
    assert (record.audit["energy_rank_90_p50"], record.audit["energy_rank_90_p90"]) == (2.0, 18.0)


def test_bench_record_keeps_threshold_and_aliases_only_at_090(tmp_path: Path) -> None:
    from gradience_hub.record.model import audit_fields

    at_50 = audit_fields(_audit(tmp_path / "a", 0.5)["summary"])
    assert (at_50["energy_threshold"], at_50["energy_rank_p50"]) == (0.5, 4.0)
    assert "energy_rank_90_p50" not in at_50
    at_90 = audit_fields(_audit(tmp_path / "b", 0.9)["summary"])
    assert at_90["energy_rank_90_p50"] == at_90["energy_rank_p50"] == 8.0
