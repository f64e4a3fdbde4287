"""GradienceHubCallback's telemetry in a real (tiny) Trainer run: the JSONL at each evaluate and
save, the scalars in the Trainer's logs (to a tracker's on_log with GradienceTrainer, to the
callbacks after ours with a plain Trainer), the card's utilization-over-steps plot, monitor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


class Recorder:
    """A tracker-like callback: keeps every ``logs`` its ``on_log`` receives."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:  # every other TrainerCallback event: a no-op
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        self.logs.append(dict(logs or {}))


def _run(tmp_path: Path, trainer_class: Any, telemetry: Any = "gradience/telemetry.jsonl"):  # type: ignore[no-untyped-def]
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification, TrainingArguments

    from gradience_hub.integrations import GradienceHubCallback
    from tests.factories import tiny_bert_config

    torch.manual_seed(0)
    model = get_peft_model(
        BertForSequenceClassification(tiny_bert_config()),
        LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS"),
    )
    ids = torch.randint(5, 100, (32, 12), generator=torch.Generator().manual_seed(0))
    data = Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": [[1] * 12] * 32,
            "labels": (ids[:, 0] % 2).tolist(),
        }
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=6,
        save_steps=3,
        eval_strategy="steps",
        eval_steps=3,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=5e-3,
        report_to=[],
        use_cpu=True,
        logging_steps=2,
        disable_tqdm=True,
    )
    callback = GradienceHubCallback(telemetry=telemetry)
    before, after = Recorder(), Recorder()
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        callbacks=[callback, after],
    )
    # where report_to's trackers sit: before the user's callbacks
    trainer.callback_handler.callbacks.insert(0, before)
    trainer.train()
    return trainer, callback, before, after


def test_gradience_trainer_logs_the_snapshot_with_the_evaluation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gradience_hub.cli import main
    from gradience_hub.integrations import GradienceTrainer
    from gradience_hub.markers import SECTION_END, TELEMETRY_PICTURE

    _, _, tracker, _ = _run(tmp_path, GradienceTrainer)
    capsys.readouterr()  # the Trainer's own printed logs
    out = tmp_path / "out"
    log = out / "gradience" / "telemetry.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]  # one per step: evaluate and save share it
    assert {r["event"] for r in records} == {"evaluate"}
    # the tracker (before our callback) got the scalars in the evaluation's own log call
    evals = [logs for logs in tracker.logs if "eval_loss" in logs]
    assert len(evals) == 2
    for logs, record in zip(evals, records, strict=True):
        overall = record["summary"]["overall"]
        assert logs["gradience/utilization_mean"] == pytest.approx(overall["utilization_mean"])
        assert "gradience/attention/utilization_mean" in logs
    # the card shows utilization over the steps
    assert (out / TELEMETRY_PICTURE).read_bytes()[:4] == b"\x89PNG"
    readme = (out / "README.md").read_text()
    section = readme.split(SECTION_END)[0]
    assert f"![LoRA utilization over training steps]({TELEMETRY_PICTURE})" in section
    # and monitor reads the run
    with pytest.raises(SystemExit) as exit_info:
        main(["monitor", str(log)])
    assert exit_info.value.code in (0, None)
    assert capsys.readouterr().out.startswith("2 snapshots, steps 3-6")


def test_plain_trainer_reaches_the_callbacks_after_ours_and_log_history(tmp_path: Path) -> None:
    from transformers import Trainer

    trainer, _, _, after = _run(tmp_path, Trainer, telemetry=tmp_path / "t.jsonl")
    assert [json.loads(x)["step"] for x in (tmp_path / "t.jsonl").read_text().splitlines()] == [
        3,
        6,
    ]
    assert not (tmp_path / "out" / "gradience" / "telemetry.jsonl").exists()
    carried = [logs for logs in after.logs if "gradience/utilization_mean" in logs]
    assert carried, after.logs
    history = [h for h in trainer.state.log_history if "gradience/utilization_mean" in h]
    assert [h["step"] for h in history][:2] == [3, 6]
    metrics = trainer.evaluate()
    assert "gradience/utilization_mean" in metrics


def test_telemetry_off(tmp_path: Path) -> None:
    from transformers import Trainer

    _, callback, _, after = _run(tmp_path, Trainer, telemetry=None)
    assert callback.last_snapshot is None
    assert not (tmp_path / "out" / "gradience" / "telemetry.jsonl").exists()
    assert not any("gradience/utilization_mean" in logs for logs in after.logs)
