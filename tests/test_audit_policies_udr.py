"""`audit --rank-policies` and `audit --udr` wired in (issue 23 items 1-2): the audit.json
fields (schema v1.1, v1 still read), the text tables, the card's policy table, and that
without --udr/--base-model the base model is never asked for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradience_hub import rank_policies
from gradience_hub.audit import READABLE_SCHEMAS, SCHEMA, AuditReport, load_audit, run_audit
from gradience_hub.cli import main
from gradience_hub.publish.render import render
from tests.factories import llama_like_adapter
from tests.test_udr_base import D, _push_base, dense_reference, write_base

GOLDEN = Path(__file__).parent / "golden"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_policies_in_audit_json_text_and_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = llama_like_adapter(tmp_path / "a")
    target = tmp_path / "audit.json"
    code, out, err = run_cli(["audit", str(adapter), "-o", str(target)], capsys)
    assert code == 0 and err == ""
    data = json.loads(target.read_text())
    assert data["schema"] == SCHEMA == "gradience-hub/audit/v1.1"
    names = [s.name for s in rank_policies.parse_policies(rank_policies.DEFAULT_POLICIES)]
    for row in data["layers"]:
        s = np.asarray(row["singular_values"])
        expected = rank_policies.apply_policies(
            rank_policies.parse_policies(rank_policies.DEFAULT_POLICIES),
            s,
            (row["shape"][0], row["shape"][1]),
            row["r"],
        )
        assert row["policies"] == expected.ks and list(row["policies"]) == names
        assert row["policy_spread"] == expected.spread
        assert row["policy_consensus"] == expected.consensus
    policies = data["suggestions"]["policies"]
    assert list(policies) == names
    for name, p in policies.items():
        ks = [row["policies"][name] for row in data["layers"]]
        assert p["median"] == pytest.approx(float(np.percentile(ks, 50)))
        assert p["p90"] == pytest.approx(float(np.percentile(ks, 90)))
        assert set(p["rank_pattern"]) == {row["name"] for row in data["layers"]}
    assert "Rank policies" in out and "knee" in out and "stable-ceil" in out
    assert load_audit(target).to_dict() == data
    # a chosen set, and none at all
    code, out, _ = run_cli(["audit", str(adapter), "--json", "--rank-policies", "knee"], capsys)
    assert list(json.loads(out)["suggestions"]["policies"]) == ["knee"]
    code, out, _ = run_cli(["audit", str(adapter), "--json", "--rank-policies", "none"], capsys)
    doc = json.loads(out)
    assert "policies" not in doc["suggestions"] and "policies" not in doc["layers"][0]
    code, _, err = run_cli(["audit", str(adapter), "--rank-policies", "energy@0.9,bogus"], capsys)
    assert code == 2 and "bogus" in err


def test_v1_audit_json_still_reads_and_renders() -> None:
    data = json.loads((GOLDEN / "audit.json").read_text())
    assert data["schema"] == "gradience-hub/audit/v1" and data["schema"] in READABLE_SCHEMAS
    report = AuditReport.from_dict(data)
    assert report.udr is None and all(layer.policies is None for layer in report.layers)
    card = render("card", report, None)
    assert "Rank policies" not in card


def test_card_shows_each_policys_global_suggestions(tmp_path: Path) -> None:
    report = run_audit(str(llama_like_adapter(tmp_path / "a")))
    data = report.to_dict()
    card = render("card", report, None)
    assert "Rank policies" in card
    for name, p in data["suggestions"]["policies"].items():
        shown = name.replace("@", "@\u200b")  # the card's escaping breaks @-mentions
        row = next(line for line in card.splitlines() if line.startswith(f"| {shown} |"))
        assert str(p["suggested_r_median"]) in row and str(p["suggested_r_p90"]) in row


def test_udr_defaults_to_the_adapters_base_and_is_written(
    hub_client_env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = hub_client_env
    base = write_base(tmp_path / "base")
    _push_base(hub, tmp_path / "base", "org/base")
    adapter = llama_like_adapter(
        tmp_path / "adapter", n_layers=4, d=D, base_model_name_or_path="org/base"
    )
    # without --udr / --base-model: no request at all for the base
    hub.clear_requests()
    code, out, _ = run_cli(["audit", str(adapter), "--json"], capsys)
    assert code == 0 and "udr" not in json.loads(out)
    assert not hub.requests
    # --udr: the adapter's base_model_name_or_path, by range requests
    cache = tmp_path / "norms.json"
    args = ["audit", str(adapter), "--udr", "--base-norms-cache", str(cache)]
    code, out, err = run_cli([*args, "-o", str(tmp_path / "audit.json")], capsys)
    assert code == 0, err
    assert "Update-to-base ratio (UDR) vs org/base@" in out and "Base weights read:" in out
    udr = json.loads((tmp_path / "audit.json").read_text())["udr"]
    expected = dense_reference(adapter, base)
    assert {row["name"] for row in udr["layers"]} == set(expected)
    for row in udr["layers"]:
        assert row["udr"] == pytest.approx(expected[row["name"]][0], rel=1e-9)
    assert udr["summary"]["n_layers_with_udr"] == 8 and udr["bytes_read"] > 0
    assert load_audit(tmp_path / "audit.json").udr == udr
    # again, from the cache: nothing read
    code, out, _ = run_cli([*args, "--json"], capsys)
    again = json.loads(out)["udr"]
    assert again["bytes_read"] == 0 and again["cached_modules"] == 8
    # --base-model (a local directory) alone turns it on
    code, out, _ = run_cli(
        ["audit", str(adapter), "--json", "--base-model", str(tmp_path / "base")], capsys
    )
    local = json.loads(out)["udr"]
    assert [r["udr"] for r in local["layers"]] == pytest.approx([r["udr"] for r in udr["layers"]])


def test_udr_without_a_named_base_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = llama_like_adapter(tmp_path / "a", base_model_name_or_path=None)
    code, _, err = run_cli(["audit", str(adapter), "--udr"], capsys)
    assert code == 2 and "--base-model" in err
