"""The scan's dataset (issue 24 item 2) and census (item 5): the Parquet schema read back with
pyarrow, the card the Hub's viewer reads, ``--push-to-hub`` in one commit that a re-run updates,
and the fleet's aggregate figures against numbers computed from the planted spectra alone."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from gradience_hub.scan import ScanQuery, scan
from gradience_hub.scan.records import ADAPTER_FIELDS, MODULE_FIELDS
from tests.hubserver_listing import expected_figures, plant_fleet


def test_parquet_schema_and_card(hub_client_env: Any, tmp_path: Path) -> None:
    plant_fleet(hub_client_env, 10)
    out = tmp_path / "out"
    scan(ScanQuery(author="fleet"), out, progress=False)
    adapters = pq.read_schema(out / "adapters.parquet")
    modules = pq.read_schema(out / "modules.parquet")
    assert adapters.names == [n for n, _, _ in ADAPTER_FIELDS]
    assert modules.names == [n for n, _, _ in MODULE_FIELDS]
    assert adapters.field("target_modules").type == pa.list_(pa.string())
    assert adapters.field("ranks").type == pa.list_(pa.int64())
    assert adapters.field("utilization_mean").type == pa.float64()
    assert adapters.field("allocated_rank").type == pa.int64()
    assert modules.field("energy_rank").type == pa.int64()
    assert adapters.metadata[b"schema"] == b"gradience-hub/scan/v1"
    rows = {r["repo"]: r for r in pq.read_table(out / "adapters.parquet").to_pylist()}
    peft = rows["fleet/adapter-0000"]  # r=4, q_proj and v_proj of two layers
    assert (peft["target_modules"], peft["ranks"], peft["format"]) == (
        ["q_proj", "v_proj"],
        [4],
        "peft",
    )
    assert rows["fleet/adapter-0009"]["target_modules"] == []  # junk: empty, not null
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert {c["config_name"]: c["data_files"] for c in front["configs"]} == {
        "adapters": "adapters.parquet",
        "modules": "modules.parquet",
    }
    for name, _, _ in ADAPTER_FIELDS:
        assert f"| `{name}` |" in card


def test_push_to_hub_is_one_commit_and_reruns_update_it(
    hub_client_env: Any, tmp_path: Path
) -> None:
    hub = hub_client_env
    plant_fleet(hub, 4, org="alice")
    out = tmp_path / "out"
    summary = scan(ScanQuery(author="alice"), out, progress=False, push_to="alice/census")
    key = "datasets/alice/census"
    assert summary["pushed"].startswith(f"{hub.url}/datasets/alice/census/commit/")
    commits = hub.requests_to(r"^/api/datasets/alice/census/commit/main$", "POST")
    assert len(commits) == 1  # all files in one commit
    files = hub.files(key)
    for name in ("adapters.parquet", "modules.parquet", "README.md", "index.html"):
        assert files[name] == (out / name).read_bytes(), name
    first_head = hub.head_sha(key)

    hub.create_repo("alice/adapter-late", hub.files("alice/adapter-0000"))
    again = scan(
        ScanQuery(author="alice"), out, progress=False, resume=True, push_to="alice/census"
    )
    assert again["this_run"]["repos"] == 1  # only the new repo was audited
    assert hub.head_sha(key) != first_head
    table = pq.read_table(pa.BufferReader(hub.files(key)["adapters.parquet"]))
    assert "alice/adapter-late" in table.column("repo").to_pylist()
    assert len(hub.commits(key)) == 3  # creation, first push, the update


def test_push_refused_without_write_access_is_exit_3(hub_client_env: Any, tmp_path: Path) -> None:
    from gradience_hub.errors import HubError

    plant_fleet(hub_client_env, 2)
    with pytest.raises(HubError, match="pushing the dataset"):
        scan(ScanQuery(author="fleet"), tmp_path / "o", progress=False, push_to="bob/census")
    assert (tmp_path / "o" / "adapters.parquet").exists()  # the local results are kept


def test_census_matches_the_planted_spectra(hub_client_env: Any, tmp_path: Path) -> None:
    planted = plant_fleet(hub_client_env, 40)
    out = tmp_path / "out"
    census = scan(ScanQuery(author="fleet"), out, progress=False)["census"]

    # independently: each planted adapter's figures from its singular values (every module of
    # an adapter carries the same spectrum), aggregated here
    util, frac, params = [], [], 0
    for p in planted:
        for a in p.adapters:
            fig = expected_figures(a.spectrum, a.r)
            util.append(fig["utilization"])
            frac.append(fig["energy_rank"] / a.r)
            params += a.n_modules * a.r * (32 + 32)
    assert census["adapters"] == len(util)
    assert census["skipped"] == {"broken": 1, "gated": 1, "not-an-adapter": 2}
    assert census["lora_params"] == params
    assert census["utilization_mean"] == pytest.approx(statistics.fmean(util), rel=1e-5)
    assert census["utilization_median"] == pytest.approx(statistics.median(util), rel=1e-5)
    assert census["energy_fraction_median"] == statistics.median(frac)
    modules = pq.read_table(out / "modules.parquet").to_pylist()
    by_adapter = {(p.repo_id, a.name): a for p in planted for a in p.adapters}
    for m in modules:
        a = by_adapter[(m["repo"], m["adapter"])]
        fig = expected_figures(a.spectrum, a.r)
        assert m["energy_rank"] == fig["energy_rank"]
        assert m["stable_rank"] == pytest.approx(fig["stable_rank"], rel=1e-5)
