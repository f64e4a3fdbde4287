"""GradienceHubCallback during a real (tiny) transformers Trainer run, and trainer.push_to_hub()
to the Hub-compatible test server (tests/hubserver.py)."""

from __future__ import annotations

import json
from pathlib import Path

from gradience_hub.markers import SECTION_END as END
from gradience_hub.markers import SECTION_START as START


def _trainer(
    tmp_path: Path,
    callback,
    push: bool = False,
    hub_model_id: str | None = None,
    trainer_class=None,
):  # type: ignore[no-untyped-def]
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification, Trainer, TrainingArguments

    from tests.factories import tiny_bert_config

    torch.manual_seed(0)
    model = get_peft_model(
        BertForSequenceClassification(tiny_bert_config()),
        LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS"),
    )
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (32, 12), generator=gen)
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
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        report_to=[],
        use_cpu=True,
        logging_steps=100,
        push_to_hub=push,
        hub_model_id=hub_model_id,
        disable_tqdm=True,
    )
    cls = trainer_class or Trainer
    trainer = cls(model=model, args=args, train_dataset=data, callbacks=[callback])
    methods = {name: getattr(trainer.model, name) for name in ("save_pretrained",)}
    return trainer, methods


def test_callback_writes_the_section_at_save_and_train_end(tmp_path: Path) -> None:
    from gradience_hub.integrations import GradienceHubCallback, GradienceTrainer

    callback = GradienceHubCallback()
    trainer, methods = _trainer(tmp_path, callback, trainer_class=GradienceTrainer)
    trainer.train()
    out = tmp_path / "out"
    # the output dir holds no adapter yet: the newest checkpoint was audited into its card
    readme = (out / "README.md").read_text()
    assert readme.count(START) == 1 and readme.count(END) == 1
    audit = json.loads((out / "gradience" / "audit.json").read_text())
    assert audit["source"]["path"] == "checkpoint-6"  # relative: no local paths published
    assert callback.last_report is not None and callback.last_report.summary.n_layers == 4
    # weights that differ from the last checkpoint: save_model's card audits the NEW weights
    # (PEFT writes its card before the weights; the callback waits for the save to finish)
    import torch

    from gradience_hub.audit import run_audit

    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.mul_(torch.linspace(0.1, 3.0, p.shape[1]))
    trainer.save_model()
    published = json.loads((out / "gradience" / "audit.json").read_text())
    truth = run_audit(str(out)).to_dict()
    assert published["source"]["path"] == "."
    assert published["summary"] == truth["summary"]
    assert published["summary"] != audit["summary"]
    # nothing was patched onto the user's model
    assert "save_pretrained" not in vars(trainer.model)
    assert "create_or_update_model_card" not in vars(trainer.model)
    assert trainer.model.save_pretrained == methods["save_pretrained"]


def test_plain_trainer_with_callback_patches_nothing(tmp_path: Path) -> None:
    """The callback on a plain Trainer writes checkpoint cards and leaves the model alone."""
    from gradience_hub.integrations import GradienceHubCallback

    trainer, _ = _trainer(tmp_path, GradienceHubCallback())

    def patched(model) -> set[str]:  # type: ignore[no-untyped-def]
        return {name for name, value in vars(model).items() if callable(value)}

    before = patched(trainer.model)
    trainer.train()
    assert (tmp_path / "out" / "README.md").read_text().count(START) == 1
    assert patched(trainer.model) == before


def test_push_to_hub_publishes_the_section(hub_client_env, tmp_path: Path, monkeypatch) -> None:
    import transformers.utils.hub as transformers_hub

    from gradience_hub.integrations import GradienceHubCallback, GradienceTrainer

    # transformers keeps one HfApi per process, built with the endpoint of its first use (the
    # real Hub, when an earlier test in this worker touched it): build ours on the test server
    monkeypatch.setattr(transformers_hub, "_hf_api", None)

    trainer, _ = _trainer(
        tmp_path,
        GradienceHubCallback(),
        push=True,
        hub_model_id="alice/tiny-lora",
        trainer_class=GradienceTrainer,
    )
    trainer.train()
    trainer.push_to_hub()
    readme = hub_client_env.read("alice/tiny-lora", "README.md")
    assert readme is not None
    text = readme.decode()
    # Trainer.push_to_hub rewrote the card from its training summary; the section survived
    assert text.count(START) == 1 and "library_name: peft" in text
    files = hub_client_env.files("alice/tiny-lora")
    assert "gradience/audit.json" in files and "adapter_model.safetensors" in files
    audit = json.loads(files["gradience/audit.json"])
    assert audit["summary"]["n_layers"] == 4


def test_callback_never_breaks_training(tmp_path: Path) -> None:
    """An unreadable adapter is logged, not raised: a card must not stop a training run."""
    from gradience_hub.integrations import GradienceHubCallback

    out = tmp_path / "o"
    out.mkdir()
    (out / "adapter_config.json").write_text("{broken")
    assert GradienceHubCallback().annotate_dir(out) is False


def test_a_non_utf8_card_or_a_bug_of_ours_never_stops_training(
    tmp_path: Path, monkeypatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    """A README.md in another encoding (exit 2 from the CLI) and an unexpected exception are
    logged warnings in a real Trainer run: training finishes, the card is left as it was."""
    import logging

    from gradience_hub.integrations import GradienceHubCallback
    from gradience_hub.publish import annotate

    callback = GradienceHubCallback()
    trainer, _ = _trainer(tmp_path, callback)
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_bytes(b"# caf\xe9\n")
    with caplog.at_level(logging.WARNING, logger="gradience_hub.integrations"):
        trainer.train()
    assert trainer.state.global_step == 6
    assert (out / "README.md").read_bytes() == b"# caf\xe9\n"
    # only the training telemetry (gradience/telemetry.jsonl and its plot), no card files
    assert {p.name for p in (out / "gradience").iterdir()} == {
        "telemetry.jsonl",
        "utilization_steps.png",
    }
    assert any("is not UTF-8 text" in r.getMessage() for r in caplog.records)

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RecursionError("simulated bug")

    monkeypatch.setattr(annotate, "write_local_card", boom)
    (out / "README.md").write_text("# card\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gradience_hub.integrations"):
        assert callback.annotate_dir(out) is False
    assert "internal error RecursionError: simulated bug" in caplog.text
