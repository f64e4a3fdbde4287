"""gradience-hub compress --pad-to / --budget-params / --budget-mb from the command line: exit
codes, one-line refusals with nothing written, the written config and header saying the rank and
size a serving stack sees (stdout and --json the same), a byte budget never exceeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gradience_hub.adapter import open_adapter
from gradience_hub.cli import main
from gradience_hub.compress.sizing import read_footprint

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo-output" / "adapter"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_budget_params_writes_the_plan_and_says_the_footprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = open_adapter(DEMO)
    per_rank = {m.name: m.params // m.r for m in adapter.modules()}
    budget = 5 * sum(per_rank.values())  # the size of uniform rank 5
    code, out, err = _run(
        ["compress", str(DEMO), "-o", str(tmp_path / "b"), "--budget-params", str(budget)],
        capsys,
    )
    assert code == 0, err
    code, js, err = _run(
        [
            "compress",
            str(DEMO),
            "-o",
            str(tmp_path / "j"),
            "--budget-params",
            str(budget),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads(js)
    plan, serving = report["budget"], report["serving"]
    ranks = {m["name"]: m["r_new"] for m in report["modules"]}
    assert report["totals"]["params_new"] == sum(ranks[n] * c for n, c in per_rank.items())
    assert report["totals"]["params_new"] <= budget == plan["budget"]
    assert plan["uniform"]["rank"] == 5 and plan["uniform"]["cost"] == budget
    assert plan["discarded"] <= plan["uniform"]["discarded"]
    assert plan["relaxation_bound"] <= plan["discarded"] * (1 + 1e-12)  # sums in other orders
    assert serving["max_rank"] == max(ranks.values())
    assert serving["vllm_max_lora_rank"] == next(
        v for v in (1, 8, 16, 32) if v >= serving["max_rank"]
    )
    weights = tmp_path / "j" / "adapter_model.safetensors"
    assert serving["file_bytes"] == weights.stat().st_size
    assert read_footprint(weights) == serving
    # peft's rule over the written config gives each module its planned rank
    written = open_adapter(tmp_path / "j")
    assert {n: written.config.rank_for(n) for n in ranks} == ranks
    # the text says the same numbers
    assert f"uniform rank 5 at {budget:,} params" in out
    assert f"--max-lora-rank {serving['vllm_max_lora_rank']}" in out
    assert "continuous relaxation bound" in out


def test_budget_mb_on_a_kohya_file_counts_the_file_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray] = {}
    for i in range(6):
        decay = np.geomspace(1.0, 10.0 ** -(i + 1), 16)
        U, _ = np.linalg.qr(rng.standard_normal((320, 16)))
        V, _ = np.linalg.qr(rng.standard_normal((768, 16)))
        tensors[f"lora_unet_block_{i}_proj.lora_up.weight"] = (U * decay).astype(np.float16)
        tensors[f"lora_unet_block_{i}_proj.lora_down.weight"] = V.T.astype(np.float16)
        tensors[f"lora_unet_block_{i}_proj.alpha"] = np.array(8.0, dtype=np.float16)
    src = tmp_path / "src" / "style.safetensors"
    src.parent.mkdir()
    save_file(tensors, str(src), metadata={"ss_network_dim": "16", "ss_network_alpha": "8"})
    budget_bytes = src.stat().st_size // 3
    mb = budget_bytes / 1_000_000
    code, js, err = _run(
        ["compress", str(src), "-o", str(tmp_path / "out"), "--budget-mb", f"{mb}", "--json"],
        capsys,
    )
    assert code == 0, err
    report = json.loads(js)
    out = tmp_path / "out" / "style.safetensors"
    size = out.stat().st_size
    assert size <= int(mb * 1_000_000)
    assert report["serving"]["file_bytes"] == size
    assert report["budget"]["unit"] == "bytes"
    got = load_file(str(out))
    assert set(got) == set(tensors)
    # the fast-decaying modules give up rank first
    r = [got[f"lora_unet_block_{i}_proj.lora_down.weight"].shape[0] for i in range(6)]
    assert r == sorted(r, reverse=True) and r[0] > r[-1]


def test_pad_to_cli_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, js, err = _run(
        ["compress", str(DEMO), "-o", str(tmp_path / "p"), "--pad-to", "32", "--json"], capsys
    )
    assert code == 0, err
    report = json.loads(js)
    assert report["serving"]["uniform_rank"] == 32 and report["serving"]["max_rank"] == 32
    assert report["serving"]["vllm_max_lora_rank"] == 32
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["r"] == 32
    assert report["totals"]["rel_error"] == 0.0

    code, out, err = _run(
        ["compress", str(DEMO), "-o", str(tmp_path / "q"), "--pad-to", "8"], capsys
    )
    assert code == 2 and out == ""
    assert "above --pad-to 8" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "q").exists()

    for extra in (["--rank", "4", "--pad-to", "16"], ["--pad-to", "16", "--budget-params", "9"]):
        code, out, err = _run(["compress", str(DEMO), "-o", str(tmp_path / "x"), *extra], capsys)
        assert code == 2 and "Traceback" not in err
        assert f"{extra[0]} and {extra[2]} are different modes" in err
        assert not (tmp_path / "x").exists()
    code, out, err = _run(
        ["compress", str(DEMO), "-o", str(tmp_path / "x"), "--budget-params", "10"], capsys
    )
    assert code == 2 and "every module at rank 1" in err
    assert not (tmp_path / "x").exists()
