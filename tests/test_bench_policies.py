"""Rank policies as bench variants (issue 23 item 3): `policy:NAME` and `energy@T` in a bench
config, validated (an unknown policy is exit 2 naming it), planned per module from the audit's
singular values, and judged and shown like any variant, on the embedded task (posthoc)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradience_hub.audit import run_audit
from gradience_hub.bench.config import config_from_dict
from gradience_hub.bench.variants import plan_variant
from gradience_hub.errors import ConfigError
from gradience_hub.rank_policies import PolicySpec, apply_policy
from tests.factories import llama_like_adapter
from tests.test_bench_protocol import EMBEDDED, _cli, _variants_config, embedded_adapter

__all__ = ["embedded_adapter"]  # the module-scoped fixture, shared

pytestmark = pytest.mark.timeout(900)


def _config(variants: list[Any]) -> Any:
    data = copy.deepcopy(EMBEDDED)
    data["compression"] = {"variants": variants}
    return config_from_dict(data)


def test_policy_variants_are_named_by_policy_and_planned_per_module(tmp_path: Path) -> None:
    config = _config(["policy:knee", "policy:erank", "energy@0.95", "uniform_median"])
    specs = config.compression.variants
    assert [s.name for s in specs] == [
        "policy-knee",
        "policy-erank",
        "policy-energy-0.95",
        "uniform_median",
    ]
    assert [s.policy for s in specs[:3]] == ["knee", "erank", "energy@0.95"]
    assert specs[0].describe() == "policy knee"
    report = run_audit(str(llama_like_adapter(tmp_path / "a")))
    for spec in specs[:3]:
        plan = plan_variant(spec, report)
        assert spec.policy is not None and spec.policy in plan.label
        for layer in report.layers:
            k = apply_policy(
                PolicySpec(spec.policy),
                np.asarray(layer.singular_values),
                (layer.shape[0], layer.shape[1]),
                layer.r,
            ).k
            assert plan.ranks[layer.name] == max(1, min(k, layer.r))


def test_an_unknown_policy_is_exit_2_naming_it(tmp_path: Path, capsys: Any) -> None:
    with pytest.raises(ConfigError) as info:
        _config(["policy:knee", "policy:elbow"])
    assert "elbow" in info.value.message and info.value.exit_code == 2
    assert "compression.variants[1]" in info.value.message
    cfg = _variants_config(tmp_path, ["policy:elbow"])
    adapter = llama_like_adapter(tmp_path / "a")
    out = str(tmp_path / "out")
    assert _cli(["bench", str(adapter), "--config", str(cfg), "--output", out]) == 2
    assert "unknown rank policy 'elbow'" in capsys.readouterr().err


def test_posthoc_bench_judges_policy_variants(
    embedded_adapter: Path, tmp_path: Path, capsys: Any
) -> None:
    import json

    from gradience_hub.publish.render import render
    from gradience_hub.record import record_from_dict

    cfg = _variants_config(tmp_path, ["policy:knee", "energy@0.95"])
    out = tmp_path / "out"
    argv = ["bench", str(embedded_adapter), "--config", str(cfg), "--output", str(out)]
    code = _cli([*argv, "--seeds", "5", "--device", "cpu"])
    assert code in (0, 1)
    record = json.loads((out / "bench.json").read_text())
    by_name = {v["name"]: v for v in record["variants"]}
    assert set(by_name) == {"policy-knee", "policy-energy-0.95"}
    for v in by_name.values():
        assert v["verdict"] in ("PASS", "FAIL") and ("rank" in v or "rank_pattern" in v)
    card = render("comment", None, record_from_dict(record))
    rows = [line for line in card.splitlines() if line.startswith("| ") and "policy-knee" in line]
    verdict = by_name["policy-knee"]["verdict"]
    assert rows and verdict in rows[0]
    assert "policy-knee" in (out / "bench.md").read_text()
