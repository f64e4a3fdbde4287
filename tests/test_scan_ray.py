"""``scan --executor ray`` (issue 24 item 4): the audits as tasks on a local Ray cluster give
exactly the local run's dataset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.hubserver_listing import plant_fleet

pytest.importorskip("ray")


def _scan(hub: Any, out: Path, *extra: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradience_hub.scan",
            "--author",
            "fleet",
            "-o",
            str(out),
            "--no-progress",
            *extra,
        ],
        env=hub.subprocess_env(RAY_DISABLE_USAGE_STATS="1"),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ray_executor_equals_local(hub_server: Any, tmp_path: Path) -> None:
    hub = hub_server
    hub.listing_page_size = 5
    plant_fleet(hub, 12)
    _scan(hub, tmp_path / "local", "--workers", "2")
    # a fresh local cluster: never one another process on this machine started
    _scan(hub, tmp_path / "ray", "--executor", "ray", "--ray-address", "local", "--workers", "2")
    for name, key in (
        ("adapters.parquet", ("repo", "adapter")),
        ("modules.parquet", ("repo", "adapter", "module")),
    ):
        local = pq.read_table(tmp_path / "local" / name).to_pylist()
        ray = pq.read_table(tmp_path / "ray" / name).to_pylist()

        def order(row: dict[str, Any], key: tuple[str, ...] = key) -> tuple[Any, ...]:
            return tuple(row[k] for k in key)

        assert sorted(ray, key=order) == sorted(local, key=order)
        assert len(local) > 10
