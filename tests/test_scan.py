"""``scan`` over Hub listings and folders (issue 24 item 1): the real huggingface_hub client
against the Hub stand-in with a planted fleet (tests/hubserver_listing.py). Every audited row
must equal the one-by-one audit of that adapter; junk is recorded with its reason; requests
and retries are counted on the stand-in."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save_file

from gradience_hub.audit import run_audit
from gradience_hub.errors import UsageError
from gradience_hub.hub import listing
from gradience_hub.scan import ScanQuery, scan
from tests.factories import llama_like_adapter
from tests.hubserver_listing import PlantedRepo, plant_fleet

N_REPOS = 30  # junk at 9 (not-an-adapter), 19 (broken), 29 (gated)
PAGE = 4


@pytest.fixture
def fleet(hub_client_env: Any) -> tuple[Any, list[PlantedRepo]]:
    hub = hub_client_env
    hub.listing_page_size = PAGE
    planted = plant_fleet(hub, N_REPOS)
    # not listed for alice: private to the fleet org, and another org
    hub.create_repo("fleet/secret", {"README.md": "x"}, private=True)
    llama = llama_like_adapter(Path(hub.hf_home) / "other", n_layers=1, d=16, r=4)
    hub.create_repo("other/adapter", {p.name: p.read_bytes() for p in llama.iterdir()})
    return hub, planted


def _rows(out: Path, name: str = "adapters.parquet") -> list[dict[str, Any]]:
    return pq.read_table(out / name).to_pylist()


def _one_by_one(row: dict[str, Any]) -> Any:
    name = row["adapter"]
    peft_named = row["format"] == "peft" and name != "default"
    return run_audit(row["repo"], adapter_name=name if peft_named else None)


def test_org_scan_equals_one_by_one_audits(fleet: Any, tmp_path: Path) -> None:
    hub, planted = fleet
    out = tmp_path / "out"
    summary = scan(ScanQuery(author="fleet"), out, progress=False, workers=3)

    rows = _rows(out)
    modules = _rows(out, "modules.parquet")
    planted_ids = {p.repo_id for p in planted}
    assert {r["repo"] for r in rows} == planted_ids  # not fleet/secret, not other/adapter
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == sum(len(p.adapters) for p in planted) == summary["census"]["adapters"]
    assert len(modules) == sum(a.n_modules for p in planted for a in p.adapters)
    by_key = {(r["repo"], r["adapter"]): r for r in ok}
    for p in planted:
        for a in p.adapters:
            assert by_key[(p.repo_id, a.name)]["format"] == a.format

    for row in ok:
        report = _one_by_one(row)
        s = report.summary
        assert row["revision_sha"] == report.source["sha"] == hub.head_sha(row["repo"])
        assert row["content_sha256"] == report.source["content_sha256"]
        assert row["format"] == s.adapter_format
        assert row["allocated_rank"] == s.allocated_rank
        assert row["lora_params"] == s.lora_params
        assert row["n_modules"] == s.n_layers
        # the same bytes through the same math: equal, not close
        assert row["utilization_mean"] == s.utilization_mean
        assert row["stable_rank_mean"] == s.stable_rank_mean
        assert row["energy_rank_p50"] == s.energy_rank_p50
        assert row["energy_rank_p90"] == s.energy_rank_p90
        assert row["suggested_r_median"] == s.suggested_r_global_median
        assert row["suggested_params"] == report.suggestions["per_layer"]["lora_params"]
        assert row["warnings"] == report.warnings
        # the rank policies (issue 23): each policy's global suggestions, aligned lists
        policies = report.suggestions["policies"]
        assert row["rank_policies"] == sorted(policies) != []
        assert row["policy_k_median"] == [policies[n]["median"] for n in sorted(policies)]
        assert row["policy_k_p90"] == [policies[n]["p90"] for n in sorted(policies)]
        assert row["policy_suggested_r"] == [
            policies[n]["suggested_r_median"] for n in sorted(policies)
        ]
        mine = sorted(
            (m["module"], m["energy_rank"], m["stable_rank"], m["r"], m["policy_consensus"])
            for m in modules
            if (m["repo"], m["adapter"]) == (row["repo"], row["adapter"])
        )
        assert mine == sorted(
            (x.name, x.energy_rank, x.stable_rank, x.r, x.policy_consensus) for x in report.layers
        )

    junk = {r["repo"]: r for r in rows if r["status"] != "ok"}
    assert {k: v["status"] for k, v in junk.items()} == {
        p.repo_id: p.junk for p in planted if p.junk
    }
    assert "no adapter_config.json" in junk["fleet/adapter-0009"]["error"]
    assert "safetensors" in junk["fleet/adapter-0019"]["error"]
    assert "gated" in junk["fleet/adapter-0029"]["error"]
    for row in junk.values():
        assert row["utilization_mean"] is None and row["lora_params"] is None
    # the listing was paged as the Hub pages it, each page requested once
    assert len(hub.requests_to(r"^/api/models$", "GET")) == math.ceil(len(planted) / PAGE)


def test_requests_per_adapter_are_the_files_read_plus_the_info(fleet: Any, tmp_path: Path) -> None:
    hub, planted = fleet
    hub.clear_requests()
    scan(ScanQuery(author="fleet"), tmp_path / "out", progress=False)
    for p in planted:
        reqs = hub.requests_to(rf"^(/api/models)?/{p.repo_id}(/|$)")
        whole = [r for r in reqs if "/resolve/" in r.path and "range" not in r.headers]
        # every file downloaded at most once, and only files the audit reads
        paths = [r.path.split("/resolve/", 1)[1].split("/", 1)[1] for r in whole]
        assert len(paths) == len(set(paths)), p.repo_id
        assert not [x for x in paths if x.endswith("README.md")], p.repo_id
        others = len(reqs) - len(whole)
        assert others <= 3, (p.repo_id, [r.path for r in reqs])
        if p.adapters and p.adapters[0].format == "peft" and len(p.adapters) == 1:
            assert sorted(paths) == ["adapter_config.json", "adapter_model.safetensors"]
            assert len(reqs) == 3  # model info + the two files
        if p.junk == "not-an-adapter":
            assert len(reqs) == 1  # its listing says so: nothing is downloaded


def test_429_retry_after_is_honoured(fleet: Any, tmp_path: Path) -> None:
    hub, _ = fleet
    ids = tmp_path / "ids.txt"
    ids.write_text("fleet/adapter-0000\n")
    hub.inject("GET", r"^/fleet/adapter-0000/resolve/", status=429, headers={"Retry-After": "2"})
    hub.inject("GET", r"^/api/models/fleet/adapter-0000$", status=429, headers={"Retry-After": "1"})
    start = time.monotonic()
    summary = scan(ScanQuery(from_file=str(ids)), tmp_path / "out", progress=False)
    elapsed = time.monotonic() - start
    assert summary["census"]["adapters"] == 1
    assert elapsed >= 3.0  # both waits were taken, none skipped
    statuses = [r.status for r in hub.requests_to(r"^/fleet/adapter-0000/resolve/")]
    assert statuses.count(429) == 1 and statuses.count(200) == 2


def test_a_hub_failure_is_recorded_and_redone_by_resume(
    fleet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, _ = fleet
    monkeypatch.setattr(listing, "MAX_RETRIES", 1)
    ids = tmp_path / "ids.txt"
    ids.write_text("fleet/adapter-0000\nfleet/adapter-0001\n")
    hub.inject("GET", r"^/fleet/adapter-0001/resolve/", status=503, times=2)
    out = tmp_path / "out"
    first = scan(ScanQuery(from_file=str(ids)), out, progress=False, workers=1)
    assert first["census"]["skipped"] == {"hub-error": 1}
    assert first["retry_with_resume"] == 1
    row = next(r for r in _rows(out) if r["repo"] == "fleet/adapter-0001")
    assert row["status"] == "hub-error" and "503" in row["error"]
    hub.clear_requests()
    second = scan(ScanQuery(from_file=str(ids)), out, progress=False, resume=True)
    assert second["census"]["adapters"] == 2 and second["census"]["skipped"] == {}
    assert len(_rows(out)) == 2  # the failure's row was superseded, not duplicated
    assert not hub.requests_to(r"fleet/adapter-0000")  # done before: not redone


def test_search_filter_and_limit(fleet: Any, tmp_path: Path) -> None:
    hub, planted = fleet
    scan(ScanQuery(search="ADAPTER-001"), tmp_path / "a", progress=False)
    assert {r["repo"] for r in _rows(tmp_path / "a")} == {
        f"fleet/adapter-{k:04d}" for k in range(10, 20)
    }

    hub.clear_requests()
    scan(ScanQuery(author="fleet", limit=3), tmp_path / "b", progress=False)
    assert len({r["repo"] for r in _rows(tmp_path / "b")}) == 3
    assert len(hub.requests_to(r"^/api/models$")) == 1  # the limit caps the page: one request

    tag = "base_model:adapter:base/model-1"
    scan(ScanQuery(filters=(tag, "peft")), tmp_path / "c", progress=False)
    got = {r["repo"] for r in _rows(tmp_path / "c")}
    # PEFT repos (adapter_config.json at the top) whose adapter names base/model-1
    want = {
        p.repo_id
        for k, p in enumerate(planted)
        if k % 4 == 1
        and (p.junk in ("broken", "gated") or (p.adapters and p.adapters[0].name == "default"))
    }
    assert got == want and got


def test_from_file_records_private_and_missing_repos(fleet: Any, tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text(
        "# ours\nfleet/adapter-0000\nfleet/secret\nfleet/no-such-repo\n\nfleet/adapter-0000\n"
    )
    scan(ScanQuery(from_file=str(ids)), tmp_path / "out", progress=False)
    rows = {r["repo"]: r for r in _rows(tmp_path / "out")}
    assert len(_rows(tmp_path / "out")) == 3  # a repeated id is scanned once
    assert rows["fleet/adapter-0000"]["status"] == "ok"
    assert rows["fleet/secret"]["status"] == "not-found"  # private to another account: 404
    assert rows["fleet/no-such-repo"]["status"] == "not-found"


def test_too_large_is_recorded_without_downloading(fleet: Any, tmp_path: Path) -> None:
    hub, _ = fleet
    ids = tmp_path / "ids.txt"
    ids.write_text("fleet/adapter-0000\n")
    scan(ScanQuery(from_file=str(ids), max_bytes=1000), tmp_path / "out", progress=False)
    (row,) = _rows(tmp_path / "out")
    assert row["status"] == "too-large" and "--max-bytes" in row["error"]
    assert not hub.requests_to(r"/resolve/")


def test_local_folder_scan(tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    a = llama_like_adapter(root / "team" / "a", n_layers=2, d=16, r=8)
    hostile = llama_like_adapter(root / "<img src=x onerror=alert(1)>", n_layers=1, d=16, r=4)
    rng = np.random.default_rng(0)
    save_file(
        {
            "lora_unet_x.lora_down.weight": rng.standard_normal((4, 16)).astype(np.float32),
            "lora_unet_x.lora_up.weight": rng.standard_normal((16, 4)).astype(np.float32),
        },
        str(root / "style.safetensors"),
    )
    save_file({"conv.weight": np.ones((2, 2), np.float32)}, str(root / "base.safetensors"))
    (root / "broken").mkdir()
    (root / "broken" / "adapter_config.json").write_text("{")
    out = tmp_path / "out"
    scan(ScanQuery(folder=str(root)), out, progress=False)
    rows = {r["repo"]: r for r in _rows(out)}
    assert set(rows) == {
        "team/a",
        "<img src=x onerror=alert(1)>",
        "style.safetensors",
        "base.safetensors",
        "broken",
    }
    for rel, path in (("team/a", a), ("<img src=x onerror=alert(1)>", hostile)):
        s = run_audit(str(path)).summary
        assert rows[rel]["utilization_mean"] == s.utilization_mean
        assert rows[rel]["energy_rank_p50"] == s.energy_rank_p50
    assert rows["style.safetensors"]["format"] == "kohya"
    assert rows["base.safetensors"]["status"] == "not-an-adapter"
    assert rows["broken"]["status"] == "broken"


def test_help_is_light_and_its_default_cap_is_the_readers() -> None:
    import subprocess
    import sys

    from gradience_hub.scan import cli, worker

    assert cli.DEFAULT_MAX_BYTES == worker.DEFAULT_MAX_BYTES
    code = "import sys, gradience_hub.scan.cli; print('numpy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


def test_the_cli_registers_scan_one_way_and_stays_light() -> None:
    """cli.py adds scan's command; scan (its module and ``python -m gradience_hub.scan``) never
    imports cli.py, and ``gradience-hub --help`` imports neither numpy nor pyarrow."""
    import subprocess
    import sys

    from gradience_hub.cli import cli

    assert "scan" in cli.commands
    code = (
        "import sys, runpy; sys.argv = ['x', '--help']\n"
        "try:\n    runpy.run_module('gradience_hub.scan', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('gradience_hub.cli' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.startswith("Usage: gradience-hub scan"), proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("False"), proc.stdout
    code = (
        "import sys\nfrom gradience_hub.cli import main\n"
        "try:\n    main(['scan', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print([m for m in ('numpy', 'pyarrow') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Usage: gradience-hub scan" in proc.stdout, proc.stderr
    assert proc.stdout.strip().endswith("[]"), proc.stdout


def test_bad_queries_are_refused_before_any_request(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="exactly one source"):
        ScanQuery()
    with pytest.raises(UsageError, match="exactly one source"):
        ScanQuery(author="x", folder=str(tmp_path))
    with pytest.raises(UsageError, match="--limit"):
        ScanQuery(author="x", limit=0)
    bad = tmp_path / "ids.txt"
    bad.write_text("org/ok\n../../etc/passwd\n")
    with pytest.raises(UsageError, match="line 2"):
        ScanQuery(from_file=str(bad))
    with pytest.raises(UsageError, match="not a directory"):
        ScanQuery(folder=str(bad))
