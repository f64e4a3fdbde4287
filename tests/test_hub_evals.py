"""Eval results in the Hub's formats, read back by huggingface_hub's own parsers on the Hub
stand-in: ``.eval_results/<task>.yaml`` through ``model_info(expand=["evalResults"])`` and
``parse_eval_result_entries``, the card's ``model-index`` through ``ModelCard.load(...)``."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from gradience_hub.errors import CardError, ConfigError, UsageError
from gradience_hub.hub.evals import eval_results_yaml, merge_model_index
from gradience_hub.publish.model_index import set_model_index
from gradience_hub.record.hub_eval import SOURCE_NAME, HubBenchmark, HubEvalClaim
from tests import hubserver_evals

RECORD_URL = "https://huggingface.co/alice/adapter/blob/abc123/gradience/bench.json"


def _claim(**changes: object) -> HubEvalClaim:
    claim = HubEvalClaim(
        model_name="alice/adapter",
        task_name="sst2",
        task_type="text-classification",
        metric="accuracy",
        value=0.9123,
        seeds=3,
        examples=872,
        sampled=False,
        posthoc=True,
        benchmark=HubBenchmark("nyu-mll/glue", "sst2", "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c"),
        dataset_id="nyu-mll/glue",
        dataset_config="sst2",
        dataset_split="validation",
        source_url=RECORD_URL,
        date="2025-06-01T12:00:00Z",
    )
    return dataclasses.replace(claim, **changes)  # type: ignore[arg-type]


OTHER_TOOL_CARD = (
    "---\n"
    "# kept: a comment\n"
    "license: apache-2.0\n"
    "model-index:\n"
    "- name: alice/adapter\n"
    "  results:\n"
    "  - task: {type: text-generation, name: Text Generation}\n"
    "    dataset: {type: cais/mmlu, name: MMLU, split: test, args: {num_few_shot: 5}}\n"
    "    metrics:\n"
    "    - {type: acc, value: 0.61, name: accuracy, verified: false}\n"
    "    source: {name: Open LLM Leaderboard, url: 'https://example.org/lb'}\n"
    "tags:\n"
    "- lora   # inline comment\n"
    "---\n"
    "\n# Card body\n"
)


def test_full_benchmark_score_reads_back_through_model_info(hub_client_env) -> None:
    from huggingface_hub import HfApi, parse_eval_result_entries

    claim = _claim()
    text = eval_results_yaml(claim)
    hub_client_env.create_repo(
        "alice/adapter", {"README.md": "# x\n", claim.eval_results_path: text}
    )
    assert claim.eval_results_path == ".eval_results/sst2.yaml"
    info = HfApi().model_info("alice/adapter", expand=["evalResults"])
    assert info.eval_results is not None and len(info.eval_results) == 1
    entry = info.eval_results[0]
    assert (entry.dataset_id, entry.task_id, entry.value) == ("nyu-mll/glue", "sst2", 0.9123)
    assert entry.dataset_revision == "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c"
    assert entry.source_url == RECORD_URL and entry.source_name == SOURCE_NAME
    assert entry.date == "2025-06-01T12:00:00Z"
    assert entry.notes == (
        "gradience-hub bench: accuracy of the uncompressed adapter, mean of 3 seeds, 872 "
        "examples per seed (the whole split)"
    )
    # the file itself, through the parser of the .eval_results format
    assert parse_eval_result_entries(yaml.safe_load(text)) == [entry]


def test_stand_in_reports_an_invalid_file_and_the_client_skips_it(hub_client_env) -> None:
    from huggingface_hub import HfApi

    hub_client_env.create_repo(
        "alice/adapter",
        {
            ".eval_results/good.yaml": eval_results_yaml(_claim()),
            ".eval_results/bad.yaml": "- dataset: {id: x}\n  value: 1\n",
        },
    )
    items = hubserver_evals.eval_results(hub_client_env.files("alice/adapter"))
    assert {"error": "dataset.task_id is required", "filename": ".eval_results/bad.yaml"} in items
    info = HfApi().model_info("alice/adapter", expand=["evalResults"])
    assert [e.task_id for e in info.eval_results or []] == ["sst2"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"benchmark": None}, "names no task.hub_benchmark"),
        ({"sampled": True, "examples": 300}, "scored a sample (300 examples per seed)"),
        ({"posthoc": False}, "a retrain bench scores adapters it trained"),
        ({"examples": None}, "scored a sample (an unknown number of examples"),
    ],
)
def test_a_sampled_or_unregistered_bench_is_never_a_benchmark_score(
    changes: dict[str, object], reason: str
) -> None:
    claim = _claim(**changes)
    assert not claim.is_benchmark_score
    assert reason in (claim.benchmark_refusal() or "")
    with pytest.raises(UsageError, match="not a Hub benchmark score"):
        eval_results_yaml(claim)


def test_model_index_merge_keeps_other_tools_and_replaces_ours(hub_client_env) -> None:
    from huggingface_hub import ModelCard

    first = set_model_index(OTHER_TOOL_CARD, _claim(sampled=True, examples=300, benchmark=None))
    second = set_model_index(first, _claim(value=0.95))
    # every line outside model-index is unchanged, in place
    before = OTHER_TOOL_CARD.split("model-index:")
    assert second.startswith(before[0]) and second.endswith(
        "tags:\n- lora   # inline comment\n---\n\n# Card body\n"
    )
    hub_client_env.create_repo("alice/adapter", {"README.md": second})
    card = ModelCard.load("alice/adapter")
    results = card.data.eval_results
    assert card.data.model_name == "alice/adapter"
    assert [(r.source_name, r.metric_value) for r in results] == [
        ("Open LLM Leaderboard", 0.61),
        (SOURCE_NAME, 0.95),  # ours once, the second run's value
    ]
    other, ours = results
    assert (other.task_type, other.dataset_type, other.dataset_args, other.verified) == (
        "text-generation",
        "cais/mmlu",
        {"num_few_shot": 5},
        False,
    )
    assert (ours.task_type, ours.dataset_type, ours.dataset_split, ours.metric_type) == (
        "text-classification",
        "nyu-mll/glue",
        "validation",
        "accuracy",
    )
    assert ours.source_url == RECORD_URL
    # the other tool's entry is the same data it was (key for key)
    old = yaml.safe_load(OTHER_TOOL_CARD.split("---\n")[1])["model-index"][0]["results"][0]
    new = yaml.safe_load(second.split("---\n")[1])["model-index"][0]["results"][0]
    assert new == old
    assert set_model_index(second, _claim(value=0.95)) == second  # re-runs change nothing


def test_model_index_added_to_a_card_without_one(hub_client_env) -> None:
    from huggingface_hub import ModelCard

    card = "---\nlicense: mit\n---\nbody\n"
    out = set_model_index(card, _claim())
    assert out.startswith("---\nlicense: mit\nmodel-index:\n") and out.endswith("---\nbody\n")
    hub_client_env.create_repo("alice/adapter", {"README.md": out})
    loaded = ModelCard.load("alice/adapter")
    assert [r.metric_value for r in loaded.data.eval_results] == [0.9123]
    bare = set_model_index("# no metadata\n", _claim())
    assert bare.endswith("---\n# no metadata\n")
    assert ModelCard(bare).data.eval_results[0].source_name == SOURCE_NAME  # type: ignore[attr-defined]


def test_unreadable_model_index_is_refused_not_overwritten() -> None:
    with pytest.raises(CardError, match="model-index is not a list"):
        merge_model_index({"name": "x"}, _claim())
    with pytest.raises(CardError, match="would not parse"):
        merge_model_index([{"name": "x", "results": [{"task": {}}]}], _claim())


def test_hub_benchmark_config_is_validated() -> None:
    assert HubBenchmark.from_dict({"dataset_id": "cais/mmlu", "task_id": "mmlu"}).to_dict() == {
        "dataset_id": "cais/mmlu",
        "task_id": "mmlu",
    }
    for bad, key in (
        ([], "task.hub_benchmark"),
        ({"dataset_id": "cais/mmlu", "task_id": "x", "rev": "1"}, "task.hub_benchmark.rev"),
        ({"dataset_id": "not a/valid id", "task_id": "x"}, "task.hub_benchmark.dataset_id"),
        ({"dataset_id": "cais/mmlu", "task_id": ""}, "task.hub_benchmark.task_id"),
        ({"dataset_id": "cais/mmlu", "task_id": "x", "revision": 3}, "task.hub_benchmark.revision"),
    ):
        with pytest.raises(ConfigError) as info:
            HubBenchmark.from_dict(bad)
        assert info.value.key == key
