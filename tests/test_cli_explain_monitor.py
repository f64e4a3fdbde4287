"""`gradience-hub explain` and `gradience-hub monitor` (issue 23): thin commands over
audit/explain.py, publish/explain.py, record/telemetry.py and telemetry.monitor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradience_hub.cli import main
from gradience_hub.record.telemetry import append_event, event_line
from tests.test_explain import _adapter


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_explain_from_source_and_audit_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = _adapter(tmp_path)
    code, text, err = run_cli(["explain", str(adapter), "--module", "q_proj"], capsys)
    assert code == 0 and err == ""
    assert text.startswith("model.layers.0.self_attn.q_proj  (64 x 64, r=16)")
    assert "energy@0.90 suggests 4 and knee 5" in text
    audit = tmp_path / "audit.json"
    assert run_cli(["audit", str(adapter), "-o", str(audit)], capsys)[0] == 0
    code, again, _ = run_cli(["explain", str(audit), "--module", "q_proj"], capsys)
    assert code == 0 and again == text
    png = tmp_path / "q.png"
    code, markdown, _ = run_cli(
        ["explain", str(audit), "--module", "q_proj", "--format", "markdown", "--plot", str(png)],
        capsys,
    )
    assert code == 0 and markdown.startswith("### ") and png.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli(["explain", str(audit), "--module", "nope"], capsys)
    assert code == 2 and "no audited module named 'nope'" in err
    code, _, err = run_cli(
        ["explain", str(adapter), "--module", "q", "--rank-policies", "x"], capsys
    )
    assert code == 2 and "unknown rank policy 'x'" in err


def _snap(util: float, r: int = 16) -> dict[str, object]:
    figures = {"utilization_mean": util, "stable_rank_mean": util * r, "energy_rank_mean": 12.0}
    return {"overall": figures, "by_type": {}, "n_modules": 2, "allocated_rank": r}


def test_monitor_prints_flags_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "telemetry.jsonl"
    for i, u in enumerate([0.3, 0.4, 0.45, 0.5, 0.54, 0.62]):
        append_event(log, event_line(100 * (i + 1), None, "evaluate", _snap(u)))
    code, out, err = run_cli(["monitor", str(log)], capsys)
    assert code == 0 and err == ""
    assert out.startswith("6 snapshots, steps 100-600; at the last: utilization 62.0% of r=16")
    assert "FLAG still_climbing:" in out
    code, out, _ = run_cli(["monitor", str(log), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["snapshots"] == 6 and doc["steps"] == [100, 600]
    assert "still_climbing" in [f["code"] for f in doc["findings"]]
    # bad input: exit 2, one message
    (tmp_path / "empty.jsonl").write_text("\n")
    code, out, err = run_cli(["monitor", str(tmp_path / "empty.jsonl")], capsys)
    assert code == 2 and out == "" and "no telemetry snapshot" in err
    code, _, err = run_cli(["monitor", str(tmp_path / "missing.jsonl")], capsys)
    assert code == 2 and "cannot read" in err
