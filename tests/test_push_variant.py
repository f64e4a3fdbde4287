"""annotate --push-variant: the recommended (or named) variant of a PASS as its own model repo on
the Hub stand-in, in one commit; the pushed adapter reloads with peft to the bench's variant,
its card parses with huggingface_hub; refusals write nothing; re-runs update."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from gradience_hub.errors import AdapterError, PolicyFailed, UsageError
from gradience_hub.publish.variant import RECORD_PATH, push_variant
from gradience_hub.record.hub_eval import SOURCE_NAME

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo-output"


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    """The demo's bench output (bench.json and the variants' folders), copied."""
    out = tmp_path / "bench"
    out.mkdir()
    shutil.copy(DEMO / "bench.json", out / "bench.json")
    for name in ("uniform_median", "uniform_p90", "per_layer"):
        shutil.copytree(DEMO / name, out / name)
    return out


def _record(bench_dir: Path) -> dict:
    return json.loads((bench_dir / "bench.json").read_text())


def test_recommended_variant_pushed_in_one_commit(hub_client_env, bench_dir: Path) -> None:
    from huggingface_hub import ModelCard

    pushed = push_variant(bench_dir / "bench.json", "alice/adapter-small")
    record = _record(bench_dir)
    assert pushed.variant == record["recommendation"]["variant"] == "uniform_median"
    assert pushed.changed
    commits = hub_client_env.commits("alice/adapter-small")
    files = hub_client_env.files("alice/adapter-small")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", RECORD_PATH} <= set(
        files
    )
    # one commit carried every file (the repo's creation is the other)
    assert len(commits) == 2
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert files[name] == (bench_dir / "uniform_median" / name).read_bytes()
    assert files[RECORD_PATH] == (bench_dir / "bench.json").read_bytes()

    card = ModelCard.load("alice/adapter-small")
    variant = next(v for v in record["variants"] if v["name"] == "uniform_median")
    assert card.data.library_name == "peft"
    assert card.data.tags == ["lora", "gradience", "compressed"]
    results = card.data.eval_results
    assert len(results) == 1 and results[0].source_name == SOURCE_NAME
    assert results[0].metric_value == pytest.approx(variant["mean"])
    assert results[0].source_url.endswith("/alice/adapter-small/blob/main/gradience/bench.json")
    text = card.text
    assert "uniform\\_median" in text or "uniform_median" in text
    assert f"{variant['mean'] * 100:.1f}%" in text
    assert f"{variant['worst_delta'] * 100:+.1f} pts" in text
    assert "worst-seed, max drop 2.5%" in text
    assert "not a benchmark score" in text  # the demo bench samples 300 examples

    # re-run: nothing changed, no new commit
    again = push_variant(bench_dir / "bench.json", "alice/adapter-small")
    assert not again.changed
    assert len(hub_client_env.commits("alice/adapter-small")) == 2


def test_pushed_adapter_reloads_with_peft_to_the_variant(hub_client_env, bench_dir: Path) -> None:
    """The Hub copy, downloaded by snapshot_download and loaded by peft onto the demo's base
    model, has every LoRA layer at the variant's rank and peft's delta weights equal the
    ``scale * B @ A`` of the bench's variant folder (computed here from its raw tensors)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from huggingface_hub import snapshot_download
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from safetensors.numpy import load_file
    from transformers import AutoModelForSequenceClassification

    push_variant(bench_dir / "bench.json", "alice/adapter-small", "uniform_p90")
    local = Path(snapshot_download("alice/adapter-small"))
    config = json.loads((local / "adapter_config.json").read_text())
    base_path = Path(config["base_model_name_or_path"])
    if not base_path.is_dir():
        pytest.fail(f"the demo's base model is missing: {base_path} (run make demo)")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = AutoModelForSequenceClassification.from_pretrained(str(base_path), num_labels=2)
        model = PeftModel.from_pretrained(base, str(local))
    raw = load_file(str(bench_dir / "uniform_p90" / "adapter_model.safetensors"))
    scale = config["lora_alpha"] / config["r"]
    layers = {
        name.removeprefix("base_model.model."): layer
        for name, layer in model.named_modules()
        if isinstance(layer, LoraLayer)
    }
    assert layers and {layer.r["default"] for layer in layers.values()} == {8}
    for name, layer in layers.items():
        A = raw[f"base_model.model.{name}.lora_A.weight"].astype(np.float64)
        B = raw[f"base_model.model.{name}.lora_B.weight"].astype(np.float64)
        got = layer.get_delta_weight("default").detach().double().numpy()  # type: ignore[attr-defined]
        np.testing.assert_allclose(got, scale * B @ A, rtol=1e-5, atol=1e-7)


def test_refusals_write_nothing(hub_client_env, bench_dir: Path) -> None:
    with pytest.raises(UsageError, match="did not test a variant named 'rank_3'"):
        push_variant(bench_dir / "bench.json", "alice/x", "rank_3")
    record = _record(bench_dir)
    # every variant 20 points below the adapter on every seed: the re-judged record FAILs
    probe = record["probe"]["per_seed"]
    for v in record["variants"]:
        v["per_seed"] = {
            seed: {"score": probe[seed] - 0.2, "delta": (probe[seed] - 0.2) - probe[seed]}
            for seed in v["per_seed"]
        }
        scores = [s["score"] for s in v["per_seed"].values()]
        v["mean"] = sum(scores) / len(scores)
        v["worst_delta"] = min(s["delta"] for s in v["per_seed"].values())
        v["pass_rate"] = 0.0
        v["p_value"] = None
        for key in ("delta_ci", "retained_gain"):
            v.pop(key, None)
    (bench_dir / "failed.json").write_text(json.dumps(record))
    with pytest.raises(PolicyFailed, match="the bench is FAIL"):
        push_variant(bench_dir / "failed.json", "alice/x")
    # a folder that is not the tested variant
    shutil.rmtree(bench_dir / "uniform_median")
    shutil.copytree(bench_dir / "uniform_p90", bench_dir / "uniform_median")
    with pytest.raises(AdapterError, match="does not hold the adapter the bench tested"):
        push_variant(bench_dir / "bench.json", "alice/x")
    with pytest.raises(UsageError, match="--to must be ORG/REPO"):
        push_variant(bench_dir / "bench.json", "no-namespace")
    assert not hub_client_env.repo_exists("alice/x")
