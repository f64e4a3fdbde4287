"""Issue 25's Hub eval results wired through the CLI: ``annotate`` writes the card's model-index
(read back with ``ModelCard.load``) for every bench, ``.eval_results/<task>.yaml`` (read back
with ``parse_eval_result_entries`` and through ``model_info(expand=["evalResults"])``) only for
a full evaluation of a named Hub benchmark, says which on the card; ``--push-variant --to``;
the bench config's ``task.hub_benchmark`` and ``eval_samples: all`` and bench.json's new
``task`` keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from gradience_hub.bench.config import TaskConfig
from gradience_hub.bench.judge import _task_info
from gradience_hub.bench.tasks import eval_indices
from gradience_hub.cli import main
from gradience_hub.errors import ConfigError
from gradience_hub.record import load_bench, record_from_dict
from gradience_hub.record.hub_eval import SOURCE_NAME, HubBenchmark, claim_from_record
from tests.factories import adapter_files

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo-output"
PUSH = ("--push-variant", "--to")
P90 = ("--push-variant", "uniform_p90", "--to")
BENCHMARK = {"dataset_id": "stanfordnlp/sst2", "task_id": "sst2", "revision": "abc123"}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture
def repo(hub_client_env):
    """alice/adapter on the Hub stand-in holding the demo adapter its bench.json measured."""
    hub_client_env.create_repo(
        "alice/adapter",
        {**adapter_files(DEMO / "adapter"), "README.md": "---\nlicense: mit\n---\n# Card\n"},
        owner="alice",
    )
    return hub_client_env


def _full_benchmark_record(tmp_path: Path) -> Path:
    """The demo record as a bench of the whole split of a named Hub benchmark would write it."""
    data = json.loads((DEMO / "bench.json").read_text())
    data["task"].update(sampled=False, hub_benchmark=BENCHMARK, split="validation")
    path = tmp_path / "full" / "bench.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    return path


def test_sampled_bench_gets_model_index_and_no_eval_results(
    repo, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import ModelCard

    code, out, err = _run(
        ["annotate", "alice/adapter", "--direct", "--bench-json", str(DEMO / "bench.json")],
        capsys,
    )
    assert code == 0, err
    files = repo.files("alice/adapter")
    assert not [p for p in files if p.startswith(".eval_results/")]
    card = ModelCard.load("alice/adapter")
    assert card.data.license == "mit"  # the author's metadata kept
    results = card.data.eval_results
    record = json.loads((DEMO / "bench.json").read_text())
    assert len(results) == 1 and results[0].source_name == SOURCE_NAME
    assert results[0].metric_value == pytest.approx(record["probe"]["mean"])
    assert results[0].source_url.endswith("/alice/adapter/blob/main/gradience/bench.json")
    assert "sampled" in results[0].metric_name
    assert "not in .eval_results/: the bench config names no task.hub_benchmark" in card.text
    # a second run changes nothing: our model-index entry is replaced, not added to
    code, out, err = _run(
        ["annotate", "alice/adapter", "--direct", "--bench-json", str(DEMO / "bench.json")],
        capsys,
    )
    assert code == 0 and "up to date" in out


def test_full_hub_benchmark_bench_writes_eval_results(
    repo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import HfApi, ModelCard, parse_eval_result_entries

    bench = _full_benchmark_record(tmp_path)
    code, _, err = _run(
        ["annotate", "alice/adapter", "--direct", "--bench-json", str(bench)], capsys
    )
    assert code == 0, err
    text = repo.read("alice/adapter", ".eval_results/sst2.yaml")
    assert text is not None
    entries = parse_eval_result_entries(yaml.safe_load(text))
    probe = json.loads(bench.read_text())["probe"]["mean"]
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.dataset_id, entry.task_id, entry.dataset_revision) == (
        "stanfordnlp/sst2",
        "sst2",
        "abc123",
    )
    assert entry.value == pytest.approx(probe)
    assert entry.source_url is not None and entry.source_url.endswith("/gradience/bench.json")
    assert "(the whole split)" in (entry.notes or "")
    info = HfApi().model_info("alice/adapter", expand=["evalResults"])
    assert info.eval_results == entries
    card = ModelCard.load("alice/adapter")
    assert card.data.eval_results[0].dataset_split == "validation"
    assert "model-index and in .eval_results/sst2.yaml" in card.text


def test_local_directory_gets_relative_record_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import ModelCard

    clone = tmp_path / "clone"
    shutil.copytree(DEMO / "adapter", clone)
    bench = _full_benchmark_record(tmp_path)
    code, _, err = _run(["annotate", str(clone), "--bench-json", str(bench)], capsys)
    assert code == 0, err
    results = ModelCard.load(clone / "README.md").data.eval_results
    assert results[0].source_url == "gradience/bench.json"
    assert (clone / ".eval_results" / "sst2.yaml").is_file()


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    out = tmp_path / "bench"
    out.mkdir()
    shutil.copy(DEMO / "bench.json", out / "bench.json")
    for name in ("uniform_median", "uniform_p90", "per_layer"):
        shutil.copytree(DEMO / name, out / name)
    return out


def test_annotate_push_variant_to(
    repo, bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = str(bench_dir / "bench.json")
    head = repo.head_sha("alice/adapter")
    for argv, says in (
        (["--push-variant"], "--push-variant and --to go together"),
        (["--to", "alice/small"], "--push-variant and --to go together"),
        (["--push-variant", "nope", "--to", "alice/small", "--bench-json", bench], "nope"),
        (["--push-variant", "--to", "alice/small"], "needs --bench-json"),
    ):
        code, out, err = _run(["annotate", "alice/adapter", "--direct", *argv], capsys)
        assert code == 2 and says in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) <= 2
    assert repo.head_sha("alice/adapter") == head and not repo.repo_exists("alice/small")

    code, out, err = _run(
        ["annotate", "alice/adapter", "--direct", "--bench-json", bench, *PUSH, "alice/small"],
        capsys,
    )
    assert code == 0, err
    assert "Variant uniform_median pushed:" in out
    files = repo.files("alice/small")
    assert (
        files["adapter_model.safetensors"]
        == (bench_dir / "uniform_median" / "adapter_model.safetensors").read_bytes()
    )
    assert files["gradience/bench.json"] == (bench_dir / "bench.json").read_bytes()
    assert repo.read("alice/adapter", "gradience/bench.json") is not None

    code, out, err = _run(
        ["annotate", "alice/adapter", "--direct", "--bench-json", bench, *P90, "alice/small"],
        capsys,
    )
    assert code == 0, err
    assert "Variant uniform_p90 pushed:" in out


def test_bench_config_hub_benchmark_and_all_examples() -> None:
    task = TaskConfig(
        name="sequence-classification",
        dataset="stanfordnlp/sst2",
        eval_samples="all",
        hub_benchmark=dict(BENCHMARK),  # type: ignore[arg-type]  # as the YAML holds it
    )
    assert task.eval_count is None and task.hub_benchmark == HubBenchmark(**BENCHMARK)
    assert eval_indices(50, task.eval_count, 42) == list(range(50))
    info = _task_info(task, 50, 50)
    assert info.sampled is False and info.hub_benchmark == BENCHMARK
    assert (info.dataset, info.split) == ("stanfordnlp/sst2", "validation")
    sampled = _task_info(
        TaskConfig(name="sequence-classification", dataset="x/y", eval_samples=10), 10, 50
    )
    assert sampled.sampled is True and sampled.hub_benchmark is None
    with pytest.raises(ConfigError, match="or all"):
        TaskConfig(name="embedded-sentiment", eval_samples="some")
    with pytest.raises(ConfigError, match=r"task\.hub_benchmark\.task_id"):
        TaskConfig(name="embedded-sentiment", hub_benchmark={"dataset_id": "a/b"})  # type: ignore[arg-type]


def test_bench_json_task_keys_round_trip_and_old_records_count_as_sampled(
    tmp_path: Path,
) -> None:
    # A record written before the task kept these keys (the demo's own now has them).
    raw = json.loads((DEMO / "bench.json").read_text())
    for key in ("sampled", "hub_benchmark", "dataset", "dataset_config", "split"):
        raw["task"].pop(key, None)
    (tmp_path / "old.json").write_text(json.dumps(raw))
    old = load_bench(tmp_path / "old.json")
    assert "sampled" not in old.to_dict()["task"]
    claim = claim_from_record(old, model_name="alice/adapter", source_url=None)
    assert claim.sampled and not claim.is_benchmark_score

    full = load_bench(_full_benchmark_record(tmp_path))
    doc = full.to_dict()
    assert doc["task"]["sampled"] is False and doc["task"]["hub_benchmark"] == BENCHMARK
    again = record_from_dict(json.loads(json.dumps(doc)))
    assert again.to_dict()["task"] == doc["task"]
    assert claim_from_record(again, model_name="a/b", source_url="u").is_benchmark_score

    bad = json.loads(json.dumps(doc))
    bad["task"]["hub_benchmark"] = {"dataset_id": "a/b"}
    with pytest.raises(Exception, match="task_id"):
        record_from_dict(bad)
