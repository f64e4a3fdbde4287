"""Training telemetry (issue 23 item 5): the snapshot's figures from planted spectra, the
Trainer log scalars, the JSONL written and read back (a torn last line dropped), every monitor
rule on a trajectory built to trigger it and on one that must not, and the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradience_hub.errors import RecordError
from gradience_hub.publish.telemetry_plot import utilization_over_steps
from gradience_hub.record.telemetry import append_event, event_line, read_points
from gradience_hub.telemetry import ModuleFactors, Point, log_metrics, monitor, snapshot
from tests.factories import planted_factors


def _module(name: str, kind: str, spectrum: list[float], seed: int) -> ModuleFactors:
    B, A = planted_factors(48, 32, len(spectrum), np.array(spectrum), seed=seed)
    return ModuleFactors(name, kind, B, A, 1.0)


def test_snapshot_figures_from_planted_spectra() -> None:
    # q: s = (1, 1, 0.5, 0.5): stable rank 2.5, utilization 2.5/4, energy 1, 1, 1/4, 1/4 of 2.5:
    # cumulative 0.4, 0.8, 0.9 -> energy rank (90%) 3
    # up: s = (1, 0, 0, 0) (rank one): stable rank 1, utilization 0.25, energy rank 1
    modules = [
        _module("layers.0.q_proj", "attention", [1.0, 1.0, 0.5, 0.5], 0),
        _module("layers.0.up_proj", "mlp", [1.0, 1e-9, 1e-9, 1e-9], 1),
    ]
    snap = snapshot(modules)
    assert snap["n_modules"] == 2 and snap["allocated_rank"] == 4
    by_type = snap["by_type"]
    assert isinstance(by_type, dict)
    assert by_type["attention"]["utilization_mean"] == pytest.approx(0.625)
    assert by_type["attention"]["energy_rank_mean"] == 3
    assert by_type["mlp"]["stable_rank_mean"] == pytest.approx(1.0)
    overall = snap["overall"]
    assert isinstance(overall, dict)
    assert overall["utilization_mean"] == pytest.approx((0.625 + 0.25) / 2)
    metrics = log_metrics(snap)
    assert metrics["gradience/utilization_mean"] == pytest.approx(0.4375)
    assert metrics["gradience/mlp/energy_rank_mean"] == 1.0
    assert len(metrics) == 9  # 3 figures x (overall, attention, mlp)


def _run(utils: list[float], r: int = 16, energy: float | None = None) -> list[Point]:
    return [
        Point(
            step=100 * (i + 1),
            overall={
                "utilization_mean": u,
                "stable_rank_mean": u * r,
                "energy_rank_mean": energy if energy is not None else u * r * 1.5,
            },
            by_type={},
            allocated_rank=r,
        )
        for i, u in enumerate(utils)
    ]


def test_monitor_rules_fire_only_when_they_should() -> None:
    codes = lambda points: [f.code for f in monitor(points)]  # noqa: E731
    # still climbing: +0.08 over the last third of 6 snapshots
    assert "still_climbing" in codes(_run([0.3, 0.4, 0.45, 0.5, 0.54, 0.62], energy=12))
    # levelled off: +0.01 over the last third
    assert "still_climbing" not in codes(_run([0.3, 0.45, 0.5, 0.52, 0.53, 0.54], energy=12))
    # flat and low from early on, r=16: also gradience's low_utilization and compress_rank
    flat = codes(_run([0.3, 0.12, 0.11, 0.12, 0.12, 0.11]))
    assert {"flat_low", "low_utilization", "compress_rank"} <= set(flat)
    assert "flat_low" not in codes(_run([0.3, 0.12, 0.11, 0.12, 0.12, 0.11], r=8))
    # compress_rank suggests gradience's nice rank: ceil(5.2) = 6 -> 8 of 32
    (finding,) = [
        f for f in monitor(_run([0.6, 0.6, 0.6], r=32, energy=5.2)) if f.code == "compress_rank"
    ]
    assert "r=8" in finding.message and "75%" in finding.message
    # the MLP rule reads the last snapshot's per-type figures
    last = Point(
        1,
        {"utilization_mean": 0.5},
        {"mlp": {"utilization_mean": 0.05}, "attention": {"utilization_mean": 0.2}},
        8,
    )
    assert codes([last]) == ["compress_mlp_targets"]
    assert all(f.rule for f in monitor(_run([0.3, 0.12, 0.11, 0.12, 0.12, 0.11])))
    assert monitor([]) == []


def test_jsonl_round_trip_and_plot(tmp_path: Path) -> None:
    log = tmp_path / "run" / "telemetry.jsonl"
    modules = [_module("layers.0.q_proj", "attention", [1.0, 0.5, 0.25, 0.1], 0)]
    snap = snapshot(modules)
    for step in (10, 20, 30):
        append_event(log, event_line(step, step / 30, "evaluate", snap))
    append_event(log, '{"schema": "other/v1"}\n')
    append_event(log, event_line(40, None, "save", snap)[:25])  # a torn last line
    points, warnings = read_points(log)
    assert [p.step for p in points] == [10, 20, 30]
    overall = snap["overall"]
    assert isinstance(overall, dict)
    assert points[0].overall == overall and points[0].allocated_rank == 4
    assert warnings == [
        "line 4: not a gradience-hub/telemetry/v1 record, skipped",
        "line 5: torn (cut off), skipped",
    ]
    png = utilization_over_steps(points, tmp_path / "u.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert utilization_over_steps(points, tmp_path / "v.png").read_bytes() == png.read_bytes()
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(RecordError, match="no telemetry snapshot"):
        read_points(tmp_path / "empty.jsonl")
    with pytest.raises(RecordError, match="cannot read"):
        read_points(tmp_path / "missing.jsonl")
