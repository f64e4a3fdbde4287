"""The bench's lm-eval block and the messages about lm-eval that need no lm-eval installed: the
config's keys, a missing lm-eval (the extra named), a causal-LM bench without the block, a
non-binary metric. tests/test_lm_eval.py runs lm-eval itself and is skipped without it; these
run on every install."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gradience_hub.bench import lm_eval as le
from gradience_hub.errors import ConfigError, MissingExtraError

TASKS = Path(__file__).resolve().parent.parent / "examples" / "lm-eval" / "tasks"


def _spec(task: str, metric: str = "acc,none", **kw: Any) -> le.LmEvalSpec:
    data: dict[str, Any] = {"tasks": [task], "include_path": "tasks", "metric": metric, **kw}
    return le.parse_spec(data, TASKS.parent)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"tasks": ["x"], "metric": "acc", "shots": 5}, "task.lm_eval.shots"),
        ({"include_path": "tasks", "metric": "acc"}, "task.lm_eval.tasks"),
        ({"tasks": ["x"]}, "task.lm_eval.metric"),
        ({"tasks": [], "metric": "acc"}, "task.lm_eval.tasks"),
        ({"tasks": ["a", "a"], "metric": "acc"}, "task.lm_eval.tasks"),
        ({"tasks": "x", "metric": "acc", "include_path": "nope"}, "task.lm_eval.include_path"),
        ({"tasks": "x", "metric": "acc", "num_fewshot": -1}, "task.lm_eval.num_fewshot"),
        ({"tasks": "x", "metric": "acc", "limit": 0}, "task.lm_eval.limit"),
        ({"tasks": "x", "metric": "acc", "limit": True}, "task.lm_eval.limit"),
        ({"tasks": "x", "metric": 3}, "task.lm_eval.metric"),
    ],
)
def test_bad_lm_eval_block_names_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        le.parse_spec(data, TASKS.parent)
    assert err.value.key == key


def test_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        le.parse_spec({"tasks": ["x"], "metric": "acc", "shots": 5}, TASKS.parent)
    assert "tasks, include_path, metric, num_fewshot, limit" in (err.value.hint or "")


def test_missing_lm_eval_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a)
    )
    with pytest.raises(MissingExtraError) as err:
        le.require_lm_eval()
    assert err.value.exit_code == 2
    assert "gradience-hub[lm-eval]" in (err.value.hint or "")


def test_causal_lm_without_lm_eval_block_points_to_it() -> None:
    from gradience_hub.bench.config import config_from_dict

    with pytest.raises(ConfigError) as err:
        config_from_dict(
            {
                "model": {"name_or_path": "m", "type": "causal-lm"},
                "task": {"name": "causal-lm-exact-match", "dataset": "x.jsonl"},
            }
        )
    assert err.value.key == "task.name" and "task.lm_eval" in (err.value.hint or "")


def test_non_binary_metric_is_refused() -> None:
    tasks = le.LmEvalTasks(
        spec=_spec("local_mc"), metric="f1,none", tasks={"t": None}, pool=[("t", 0)]
    )
    logged = {"t": [{"doc_id": 0, "filter": "none", "f1": 0.5}]}
    with pytest.raises(ConfigError) as err:
        le.per_example(logged, tasks)
    assert "0/1" in str(err.value)
