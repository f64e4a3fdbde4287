"""Bench tasks: the embedded split, local datasets, eval sampling (lm-eval tasks: test_lm_eval)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradience_hub.bench.config import TaskConfig, config_from_dict
from gradience_hub.bench.tasks import (
    TEMPLATES,
    embedded_model_path,
    embedded_sentiment,
    eval_indices,
    load_task,
    vader_lexicon,
)
from gradience_hub.errors import ConfigError


def _embedded(**kwargs: object) -> TaskConfig:
    return TaskConfig(name="embedded-sentiment", **kwargs)  # type: ignore[arg-type]


def test_embedded_split_is_deterministic_and_disjoint() -> None:
    a = embedded_sentiment(_embedded())
    b = embedded_sentiment(_embedded())
    assert a.train == b.train and a.eval_pool == b.eval_pool
    train_words = {e["word"] for e in a.train}
    eval_words = {e["word"] for e in a.eval_pool}
    assert not train_words & eval_words
    assert len(a.eval_pool) / (len(a.train) + len(a.eval_pool)) == pytest.approx(0.2, abs=0.03)
    # The pool is large enough for the shipped configs' eval samples.
    assert len(a.eval_pool) >= 400 and len(a.train) >= 2000


def test_embedded_labels_follow_the_lexicon() -> None:
    lexicon = vader_lexicon()
    task = embedded_sentiment(_embedded(valence_threshold=1.5))
    examples = task.train + task.eval_pool
    assert {e["label"] for e in examples} == {0, 1}
    for e in examples:
        valence = lexicon[e["word"]]
        assert abs(valence) >= 1.5
        assert e["label"] == int(valence > 0)
        assert e["word"] in e["text"]
        assert any(e["text"] == t.format(word=e["word"]) for t in TEMPLATES)
    labels = {e["word"]: e["label"] for e in examples}
    assert labels.get("good") == 1 and labels.get("terrible") == 0
    positives = sum(e["label"] for e in examples) / len(examples)
    assert 0.3 < positives < 0.7
    assert task.num_labels == 2 and task.metric == "accuracy"


def test_embedded_threshold_and_fraction() -> None:
    loose = embedded_sentiment(_embedded(valence_threshold=1.0))
    strict = embedded_sentiment(_embedded(valence_threshold=2.0))
    assert len(strict.train) < len(loose.train)
    with pytest.raises(ConfigError) as info:
        embedded_sentiment(_embedded(valence_threshold=4.5))
    assert info.value.key == "task.valence_threshold"


def test_embedded_model_is_bundled() -> None:
    path = embedded_model_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_eval_indices_are_seeded_samples() -> None:
    a = eval_indices(100, 30, seed=42)
    assert a == eval_indices(100, 30, seed=42)
    assert a != eval_indices(100, 30, seed=123)
    assert len(set(a)) == 30 and a == sorted(a) and all(0 <= i < 100 for i in a)
    assert eval_indices(10, 30, seed=1) == list(range(10))


def _write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    if path.suffix == ".csv":
        lines = ["review,sentiment"] + [f"{r['review']},{r['sentiment']}" for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_local_dataset_file(tmp_path: Path, suffix: str) -> None:
    rows = [
        {"review": f"text number {i}", "sentiment": ["neg", "pos", "mixed"][i % 3]}
        for i in range(90)
    ]
    data = tmp_path / f"reviews{suffix}"
    _write_rows(data, rows)
    config = config_from_dict(
        {
            "model": {"name_or_path": "some/model"},
            "task": {
                "name": "sequence-classification",
                "dataset": data.name,  # relative to the config file's directory
                "text_field": "review",
                "label_field": "sentiment",
            },
        },
        path=tmp_path / "bench.yaml",
    )
    task = load_task(config)
    assert task.num_labels == 3 and task.label_names == ["mixed", "neg", "pos"]
    texts_train = {e["text"] for e in task.train}
    texts_eval = {e["text"] for e in task.eval_pool}
    assert not texts_train & texts_eval
    assert len(texts_train) + len(texts_eval) == 90 and texts_eval
    by_text = {r["review"]: r["sentiment"] for r in rows}
    for e in task.train + task.eval_pool:
        assert task.label_names[e["label"]] == by_text[e["text"]]
    # Same file, same split.
    again = load_task(config)
    assert again.eval_pool == task.eval_pool


def test_local_dataset_integer_labels_and_bad_columns(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    _write_rows(data, [{"review": f"t{i}", "sentiment": i % 2} for i in range(40)])
    base = {"model": {"name_or_path": "m"}}
    task_cfg = {
        "name": "sequence-classification",
        "dataset": str(data),
        "text_field": "review",
        "label_field": "sentiment",
    }
    task = load_task(config_from_dict({**base, "task": task_cfg}))
    assert task.num_labels == 2 and task.label_names is None
    with pytest.raises(ConfigError) as info:
        load_task(config_from_dict({**base, "task": {**task_cfg, "text_field": "body"}}))
    assert "body" in info.value.message
    with pytest.raises(ConfigError) as info:
        load_task(
            config_from_dict({**base, "task": {**task_cfg, "dataset": str(tmp_path / "x.txt")}})
        )
    assert info.value.key == "task.dataset"


def test_native_evaluator_scores_each_example_as_it_would_alone() -> None:
    """Length-sorted, padded batches give every example the prediction it gets scored alone
    (batch of one, no padding), keyed by its own id, in any order of the ids."""
    torch = pytest.importorskip("torch")
    from gradience_hub.bench.config import load_config
    from gradience_hub.bench.evaluate import _encoded_batches, evaluate
    from gradience_hub.bench.train import load_base

    config = load_config(Path(__file__).parents[1] / "examples" / "embedded-sentiment.yaml")
    task = load_task(config, need_train=False)
    torch.manual_seed(0)  # the new classification head
    loaded = load_base(config, task, "cpu")
    loaded.model.eval()
    ids = list(range(60))
    got = evaluate(loaded, task, ids[::-1], config, "cpu")
    assert sorted(got) == ids
    with torch.inference_mode():
        for i, example in zip(ids, task.eval_examples(ids), strict=True):
            enc = loaded.tokenizer(example["text"], return_tensors="pt")
            alone = int(loaded.model(**enc).logits.argmax(dim=-1))
            assert got[i] == (alone == example["label"]), i
    assert len(set(got.values())) == 2  # both outcomes occur: the comparison can fail
    # and the batches really are formed by length
    texts = tuple(e["text"] for e in task.eval_examples(ids))
    lengths = [
        int(enc["attention_mask"].sum(dim=1).max())
        for _, enc in _encoded_batches(loaded.tokenizer, texts, 32, 32)
    ]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
