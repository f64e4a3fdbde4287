"""lm-eval as the bench's evaluation for causal-LM adapters (gradience_hub/bench/lm_eval.py).

The model is a tiny random Llama with a BPE tokenizer trained here on the example tasks' JSONL
text (nothing downloaded), and a LoRA trained for a few steps on the example docs so that
per-doc correctness is a mix of 0 and 1. The reference is lm-eval's own ``simple_evaluate``
on the same model, run directly in the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("peft")

from gradience_hub.bench import lm_eval as le
from gradience_hub.bench.tasks import eval_indices
from gradience_hub.errors import ConfigError, RemoteError

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "examples" / "lm-eval" / "tasks"


def _docs(name: str) -> list[dict[str, Any]]:
    text = (TASKS / f"{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _texts(every: int = 1) -> list[str]:
    """Prompt + target of every ``every``-th example doc, as the task YAMLs render them."""
    out = [
        f"Question: {d['question']}\nAnswer: {d['answer']}" for d in _docs("local_gsm8k")[::every]
    ]
    out += [
        f"Question: {d['question']}\nAnswer: {d['choices'][d['label']]}"
        for d in _docs("local_mc")[::every]
    ]
    return out


def build_tiny_llama(directory: Path) -> tuple[Any, Any]:
    """A tiny random Llama and a BPE tokenizer trained on the examples, saved to ``directory``
    (model.name_or_path for the bench); returns (model, tokenizer)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_texts(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
            # Wider than the default 0.02 so that a LoRA learns in a few dozen steps.
            initializer_range=0.2,
        )
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def train_lora(model: Any, tokenizer: Any, directory: Path, steps: int = 60) -> Any:
    """A LoRA fitted for ``steps`` full-batch AdamW steps on every other example doc (loss on
    every token), saved to ``directory``: it gets the docs it saw right and most others
    wrong, so per-doc correctness is a mix of 0 and 1."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    enc = tokenizer(
        [t + tokenizer.eos_token for t in _texts(every=2)], padding=True, return_tensors="pt"
    )
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-2)
    peft_model.train()
    for _ in range(steps):
        loss = peft_model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    peft_model.eval()
    peft_model.save_pretrained(directory)
    return peft_model


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Any:
    """Tiny matmuls on a shared 2-core machine run many times faster on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny Llama (saved), its tokenizer and a trained LoRA on it (saved)."""
    root = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = build_tiny_llama(root / "base")
    peft_model = train_lora(model, tokenizer, root / "adapter")
    return {
        "root": root,
        "base": root / "base",
        "adapter": root / "adapter",
        "model": peft_model,
        "tokenizer": tokenizer,
    }


def _spec(task: str, metric: str = "acc,none", **kw: Any) -> le.LmEvalSpec:
    data: dict[str, Any] = {"tasks": [task], "include_path": "tasks", "metric": metric, **kw}
    return le.parse_spec(data, TASKS.parent)


def _reference(
    tiny: dict[str, Any],
    task: str,
    docs: list[int],
    monkeypatch: pytest.MonkeyPatch,
    batch_size: int = 8,
) -> dict[str, Any]:
    """lm-eval's own simple_evaluate on the same model and docs. lm-eval resolves the YAML's
    relative data_files against the working directory, hence the chdir."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(TASKS)
    lm = HFLM(pretrained=tiny["model"], tokenizer=tiny["tokenizer"], batch_size=batch_size)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False),
        samples={task: docs},
        bootstrap_iters=0,
        log_samples=True,
    )
    assert out is not None
    return out


@pytest.mark.parametrize(
    ("task", "metric"),
    [("local_gsm8k", "exact_match,flexible-extract"), ("local_mc", "acc,none")],
)
def test_per_doc_correctness_and_score_equal_simple_evaluate(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch, task: str, metric: str
) -> None:
    tasks = le.load_tasks(_spec(task, metric), progress=False)
    assert tasks.pool == [(task, d) for d in range(len(_docs(task)))]
    indices = eval_indices(len(tasks.pool), 10, seed=42)
    lm = le.make_lm(tiny["model"], tiny["tokenizer"], batch_size=8, progress=False)
    ours = le.evaluate(lm, tasks, indices, progress=False)

    name, flt = metric.split(",")
    ref = _reference(tiny, task, indices, monkeypatch)
    ref_docs = {s["doc_id"]: int(s[name]) for s in ref["samples"][task] if s["filter"] == flt}
    assert ours.correct == {i: ref_docs[tasks.pool[i][1]] for i in indices}
    assert ours.score() == pytest.approx(ref["results"][task][metric], abs=1e-12)
    assert ours.task_scores[task] == pytest.approx(ref["results"][task][metric], abs=1e-12)
    # The planted mix: the trained LoRA gets some docs right and some wrong.
    assert 0 < sum(ours.correct.values()) < len(indices)


def test_adapter_swap_changes_scores_without_reload(tiny: dict[str, Any]) -> None:
    """One HFLM around the PeftModel: disabling the adapter is seen by the next evaluation."""
    tasks = le.load_tasks(_spec("local_mc"), progress=False)
    lm = le.make_lm(tiny["model"], tiny["tokenizer"], batch_size=8, progress=False)
    idx = list(range(len(tasks.pool)))
    with_adapter = le.evaluate(lm, tasks, idx, progress=False)
    with tiny["model"].disable_adapter():
        base = le.evaluate(lm, tasks, idx, progress=False)
    assert with_adapter.correct != base.correct
    assert le.evaluate(lm, tasks, idx, progress=False).correct == with_adapter.correct


def test_limit_and_reported_metrics() -> None:
    tasks = le.load_tasks(_spec("local_gsm8k", "exact_match,strict-match", limit=5), progress=False)
    assert tasks.pool == [("local_gsm8k", d) for d in range(5)]
    assert tasks.metric == "exact_match,strict-match"
    assert set(tasks.reported["local_gsm8k"]) == {
        "exact_match,strict-match",
        "exact_match,flexible-extract",
    }
    assert _spec("local_mc", "acc").metric == "acc,none"


def test_unknown_task_lists_what_exists() -> None:
    with pytest.raises(ConfigError) as err:
        le.load_tasks(_spec("local_gsm8"), progress=False)
    msg = str(err.value)
    assert err.value.key == "task.lm_eval.tasks"
    assert "'local_gsm8'" in msg and "local_gsm8k, local_mc" in msg
    assert err.value.exit_code == 2


def test_unknown_metric_lists_the_reported_ones() -> None:
    with pytest.raises(ConfigError) as err:
        le.load_tasks(_spec("local_mc", "exact_match,none"), progress=False)
    msg = str(err.value)
    assert err.value.key == "task.lm_eval.metric"
    assert "'exact_match,none'" in msg and "acc,none, acc_norm,none" in msg


def _cli(argv: list[str]) -> int:
    from gradience_hub.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0)


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_cli_causal_lm_bench_without_lm_eval_names_the_extra(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import importlib.util

    config = _write_yaml(
        tmp_path / "bench.yaml",
        {
            "model": {"name_or_path": str(tiny["base"]), "type": "causal-lm"},
            "task": {"name": "t", "lm_eval": {"tasks": ["local_mc"], "metric": "acc,none"}},
        },
    )
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a)
    )
    code = _cli(
        ["bench", str(tiny["adapter"]), "--config", str(config), "--output", str(tmp_path / "out")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "'lm-eval'" in err and "gradience-hub[lm-eval]" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("lm_eval", "needle"),
    [
        ({"tasks": ["local_gsm8"], "metric": "acc"}, "tasks in "),
        ({"tasks": ["local_mc"], "metric": "bleu"}, "acc,none, acc_norm,none"),
        (
            {"tasks": ["local_mc"], "metric": "acc", "fewshot": 1},
            "unknown key task.lm_eval.fewshot",
        ),
    ],
)
def test_cli_bad_lm_eval_block_is_exit_2_with_the_list(
    tiny: dict[str, Any], tmp_path: Path, capsys: Any, lm_eval: dict[str, Any], needle: str
) -> None:
    config = _write_yaml(
        tmp_path / "bench.yaml",
        {
            "model": {"name_or_path": str(tiny["base"]), "type": "causal-lm"},
            "task": {"name": "t", "lm_eval": {**lm_eval, "include_path": str(TASKS)}},
        },
    )
    code = _cli(
        ["bench", str(tiny["adapter"]), "--config", str(config), "--output", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


def test_hub_task_without_network_is_a_remote_error() -> None:
    """lm-eval's own gsm8k reads openai/gsm8k from the Hub: no network here, so exit 3. (The
    include_path shares the built-in index with the unknown-task test: one build per run.)"""
    with pytest.raises(RemoteError) as err:
        le.load_tasks(_spec("gsm8k"), progress=False)
    assert err.value.exit_code == 3 and "gsm8k" in str(err.value)


# --------------------------------------------------------------------------- the bench


def _bench_config(
    tiny: dict[str, Any], task: str, metric: str, task_extra: Any = None, **extra: Any
) -> Any:
    from gradience_hub.bench.config import config_from_dict

    data: dict[str, Any] = {
        "model": {"name_or_path": str(tiny["base"]), "type": "causal-lm"},
        "task": {
            "name": f"{task}-bench",
            "lm_eval": {"tasks": [task], "include_path": str(TASKS), "metric": metric},
            "eval_samples": 8,
            **(task_extra or {}),
        },
        # "same" keeps the adapter's rank 8: the SVD truncation is the adapter itself.
        "compression": {"variants": [{"name": "same", "rank": 8}, {"name": "r1", "rank": 1}]},
        "seeds": [42, 123],
    }
    data.update(extra)
    return config_from_dict(data)


def _fresh_peft(tiny: dict[str, Any], adapter_dir: Path) -> Any:
    """The base loaded from disk with the saved adapter on it (an independent load)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny["base"])
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


@pytest.mark.parametrize(
    ("task", "metric"),
    [("local_gsm8k", "exact_match,flexible-extract"), ("local_mc", "acc,none")],
)
def test_posthoc_bench_scores_equal_simple_evaluate(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str, metric: str
) -> None:
    from transformers import AutoModelForCausalLM

    from gradience_hub.bench.protocol import run_bench

    loads: list[Any] = []
    real_load = AutoModelForCausalLM.from_pretrained

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counting_load)
    out = tmp_path / "out"
    record = run_bench(str(tiny["adapter"]), _bench_config(tiny, task, metric), out, progress=False)
    # Probe, base control and two variants on one base model: loaded once, adapters swapped.
    assert len(loads) == 1
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", real_load)
    bench = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert bench["task"]["metric"] == metric

    reference = _fresh_peft(tiny, tiny["adapter"])
    model = {**tiny, "model": reference}
    name, flt = metric.split(",")

    def per_doc(ref: dict[str, Any]) -> dict[int, int]:
        return {s["doc_id"]: int(s[name]) for s in ref["samples"][task] if s["filter"] == flt}

    # The probe cell scores every seed's docs at once (each doc once): so does the reference.
    cell = json.loads((out / "cells" / "probe.json").read_text(encoding="utf-8"))
    union = sorted({i for seed in (42, 123) for i in eval_indices(len(_docs(task)), 8, seed)})
    assert cell["ids"] == union  # one task: pool index == doc id
    ref_all = per_doc(_reference(model, task, union, monkeypatch, batch_size=16))
    assert [int(c) for c in cell["correct"]] == [ref_all[d] for d in union]
    for seed in (42, 123):
        docs = eval_indices(len(_docs(task)), 8, seed)
        ref = _reference(model, task, docs, monkeypatch, batch_size=16)
        assert per_doc(ref) == {d: ref_all[d] for d in docs}
        score = bench["probe"]["per_seed"][str(seed)]
        assert score == pytest.approx(ref["results"][task][metric], abs=1e-12)
        # The full-rank variant is the adapter: the same docs right, delta exactly 0.
        same = bench["variants"][0]["per_seed"][str(seed)]
        assert same["delta"] == 0.0 and same["score"] == pytest.approx(score, abs=1e-12)
        assert same["delta_ci"]["low"] <= 0.0 <= same["delta_ci"]["high"]
    same_v = record.variant("same")
    assert bench["variants"][0]["name"] == "same" and same_v.worst_delta == 0.0
    assert (
        bench["variants"][0]["delta_ci"]["low"] <= 0.0 <= bench["variants"][0]["delta_ci"]["high"]
    )
    # The base-model control ran on the same docs through lm-eval too.
    base = json.loads((out / "cells" / "base.json").read_text(encoding="utf-8"))
    assert base["ids"] == union and set(bench["base"]["per_seed"]) == {"42", "123"}


def test_retrain_trains_on_task_train_and_evaluates_through_lm_eval(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retrain protocol, 2 seeds: probes and variants trained on task.train (prompt /
    answer rows, answer-only loss), every cell scored by lm-eval on its seed's docs."""
    from safetensors.numpy import load_file

    from gradience_hub.bench.protocol import run_bench

    rows = [{"q": d["question"], "a": d["choices"][d["label"]]} for d in _docs("local_mc")]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = _bench_config(
        tiny,
        "local_mc",
        "acc,none",
        {"train": str(train), "prompt_field": "q", "answer_field": "a"},
        lora={"r": 4, "target_modules": ["q_proj", "v_proj"]},
        train={"steps": 6, "lr": 0.01, "batch_size": 8, "max_length": 48, "eval_batch_size": 8},
        compression={"variants": [{"name": "r2", "rank": 2}]},
    )
    out = tmp_path / "out"
    record = run_bench(None, config, out, protocol="retrain", progress=False)
    assert record.protocol.kind == "retrain" and sorted(record.variant("r2").per_seed) == [42, 123]

    cell = json.loads((out / "cells" / "probe__42.json").read_text(encoding="utf-8"))
    assert cell["train_loss"] is not None and cell["train_loss"] > 0
    adapter = out / cell["adapter"]
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and abs(v).max() > 0 for k, v in weights.items())
    ref = _reference(
        {**tiny, "model": _fresh_peft(tiny, adapter)},
        "local_mc",
        cell["ids"],
        monkeypatch,
        batch_size=8,
    )
    ref_docs = {s["doc_id"]: int(s["acc"]) for s in ref["samples"]["local_mc"]}
    assert cell["ids"] == eval_indices(len(_docs("local_mc")), 8, 42)
    assert [int(c) for c in cell["correct"]] == [ref_docs[d] for d in cell["ids"]]
    assert record.probe.per_seed[42] == pytest.approx(
        ref["results"]["local_mc"]["acc,none"], abs=1e-12
    )
    # One seed-free base-model cell (no head to keep) on every seed's docs, through lm-eval.
    base = json.loads((out / "cells" / "base.json").read_text(encoding="utf-8"))
    union = sorted({i for seed in (42, 123) for i in eval_indices(len(_docs("local_mc")), 8, seed)})
    assert base["ids"] == union and record.base is not None
    by_id = dict(zip(base["ids"], base["correct"], strict=True))
    for seed in (42, 123):
        docs = eval_indices(len(_docs("local_mc")), 8, seed)
        assert record.base.per_seed[seed] == sum(by_id[d] for d in docs) / 8
