"""Training and evaluation of LoRA adapters for the bench (torch, peft, transformers).

Training uses transformers' ``Trainer`` with its own progress bar (evaluation is in
:mod:`gradience_hub.bench.evaluate`); LoRA comes from peft at a
uniform ``r`` or a per-module ``rank_pattern``. By default every variant keeps the probe's
scaling ``alpha / r`` (``alpha_pattern`` follows ``rank_pattern``), so a smaller rank changes
capacity, not the effective learning rate; ``lora.variant_alpha: fixed`` keeps the probe's
``alpha`` instead. A run is a function of its seed: ``transformers.set_seed``
before the model is built (head and LoRA initialisation) and ``seed``/``data_seed`` for the
Trainer's shuffling.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradience_hub.bench.config import BenchConfig
from gradience_hub.bench.tasks import TaskData, resolve_model_path
from gradience_hub.errors import ConfigError, MissingExtraError, UsageError

BENCH_PACKAGES = ("torch", "peft", "transformers", "datasets")


def require_bench_extra() -> None:
    """Raise :class:`MissingExtraError` naming the first missing package of the extra."""
    import importlib.util

    for name in (*BENCH_PACKAGES, "tqdm"):
        if importlib.util.find_spec(name) is None:
            raise MissingExtraError(name, "bench")


def resolve_device(device: str | None) -> str:
    """``cuda`` when asked or available, else ``cpu``; refuses ``cuda`` without a GPU."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda, got {device!r}", hint="--device cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda was asked but no CUDA GPU is available", hint="--device cpu"
        )
    return device


def _torch_dtype(name: str) -> Any:
    import torch

    return {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "auto": "auto",
    }[name]


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence the per-load report and weight-loading bar (a new head is expected every
    cell); restore transformers' settings afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@dataclass
class LoadedModel:
    """A base model and its tokenizer, ready for a LoRA adapter."""

    model: Any
    tokenizer: Any
    path: str


def load_base(config: BenchConfig, task: TaskData, device: str) -> LoadedModel:
    """The base model of the config (classification head sized from the task)."""
    path, is_local = resolve_model_path(config)
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    dtype = _torch_dtype(config.model.dtype)
    # A local directory needs no Hub access: say so per call (local_files_only), never through
    # the process environment.
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path, **_hub_kwargs(is_local))
            if task.kind == "classification":
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, num_labels=task.num_labels, dtype=dtype, **_hub_kwargs(is_local)
                )
            else:
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=dtype, **_hub_kwargs(is_local)
                )
    except (OSError, ValueError) as exc:  # not found, offline, no tokenizer, bad config
        raise _model_error(config, exc) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model.to(device), tokenizer=tokenizer, path=path)


def _hub_kwargs(is_local: bool) -> dict[str, Any]:
    """How from_pretrained reaches the model: a local directory never touches the Hub; a Hub id
    gets the token Hub calls use now (the Action's input as well as HF_TOKEN or the saved
    login), passed per call since the process environment is never written."""
    if is_local:
        return {"local_files_only": True}
    from gradience_hub import hub

    return {"local_files_only": False, "token": hub.token()}


def _model_error(config: BenchConfig, exc: Exception) -> ConfigError:
    return ConfigError(
        f"cannot load the base model {config.model.name_or_path}: "
        f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}",
        hint="model.name_or_path must be a local model directory, a Hub id in the local "
        "cache, or a Hub id with network access",
        key="model.name_or_path",
    )


def check_model(config: BenchConfig) -> None:
    """Fail early (before the run writes anything) when the base model cannot be found: its
    config is resolved the way the run will load it (a ConfigError naming model.name_or_path)."""
    from transformers import AutoConfig

    path, is_local = resolve_model_path(config)
    try:
        with _quiet_transformers():
            AutoConfig.from_pretrained(path, **_hub_kwargs(is_local))
    except (OSError, ValueError) as exc:
        raise _model_error(config, exc) from None


def model_skeleton(config: BenchConfig, task: TaskData) -> Any:
    """The base model's module tree on the meta device (no weights, no memory), with the head
    the task uses: what compress's peft reload check loads a variant onto."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    path, is_local = resolve_model_path(config)
    cls: Any
    try:
        if task.kind == "classification":
            hf_config = AutoConfig.from_pretrained(
                path, num_labels=task.num_labels, **_hub_kwargs(is_local)
            )
            cls = AutoModelForSequenceClassification
        else:
            hf_config = AutoConfig.from_pretrained(path, **_hub_kwargs(is_local))
            cls = AutoModelForCausalLM
    except (OSError, ValueError) as exc:
        raise _model_error(config, exc) from None
    with torch.device("meta"):
        return cls.from_config(hf_config)


# --------------------------------------------------------------------------- datasets


class _Encoded:
    """A list-backed torch-style dataset of tokenised examples (no datasets cache)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def _encode_classification(task: TaskData, tokenizer: Any, max_length: int) -> _Encoded:
    enc = tokenizer([e["text"] for e in task.train], truncation=True, max_length=max_length)
    return _Encoded(
        [
            {"input_ids": ids, "attention_mask": mask, "labels": e["label"]}
            for ids, mask, e in zip(
                enc["input_ids"], enc["attention_mask"], task.train, strict=True
            )
        ]
    )


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt as generation sees it: the tokenizer's leading special tokens
    (BOS) kept, trailing ones (a BERT-style [SEP]) dropped so the answer follows directly.
    Training and evaluation both use this, so the model learns what it is asked."""
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    special = set(tokenizer.all_special_ids)
    while len(ids) > 1 and ids[-1] in special:
        ids.pop()
    return ids


def _encode_generation(task: TaskData, tokenizer: Any, max_length: int) -> _Encoded:
    """Prompt ids + " answer" ids + EOS; the loss covers the answer only (prompt labels -100).
    Prompt and answer are tokenised apart so the boundary is exact; a prompt too long to leave
    room for any answer token is truncated from the left."""
    items = []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for e in task.train:
        prompt = prompt_ids(tokenizer, e["prompt"])
        answer = list(tokenizer(" " + e["answer"], add_special_tokens=False)["input_ids"]) + eos
        answer = answer[: max_length - 1]
        prompt = prompt[-(max_length - len(answer)) :]
        ids = prompt + answer
        labels = [-100] * len(prompt) + answer
        items.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return _Encoded(items)


class _PadCollator:
    """Right-pads input_ids / attention_mask (pad id) and token labels (-100)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        out: dict[str, Any] = {
            "input_ids": torch.tensor(
                [b["input_ids"] + [self.pad_id] * (width - len(b["input_ids"])) for b in batch]
            ),
            "attention_mask": torch.tensor(
                [b["attention_mask"] + [0] * (width - len(b["attention_mask"])) for b in batch]
            ),
        }
        if isinstance(batch[0]["labels"], list):
            out["labels"] = torch.tensor(
                [b["labels"] + [-100] * (width - len(b["labels"])) for b in batch]
            )
        else:
            out["labels"] = torch.tensor([b["labels"] for b in batch])
        return out


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """A trained adapter on disk."""

    path: Path
    seconds: float
    train_loss: float | None
    rank: int
    rank_pattern: dict[str, int] | None


def lora_config(
    config: BenchConfig,
    task: TaskData,
    rank: int | None = None,
    rank_pattern: dict[str, int] | None = None,
) -> Any:
    """peft ``LoraConfig`` of the probe (``rank`` None) or of a variant (``lora.variant_alpha``:
    the probe's scaling, or the probe's alpha)."""
    from peft import LoraConfig, TaskType

    lora, _ = config.require_training("training")
    assert lora.alpha is not None
    scale = lora.alpha / lora.r
    r = lora.r if rank is None else rank
    fixed = lora.variant_alpha == "fixed"
    kwargs: dict[str, Any] = {
        "r": r,
        "lora_alpha": lora.alpha if fixed else scale * r,
        "lora_dropout": lora.dropout,
        "target_modules": lora.target_modules,
        "task_type": TaskType.SEQ_CLS if task.kind == "classification" else TaskType.CAUSAL_LM,
    }
    if rank_pattern:
        kwargs["rank_pattern"] = dict(rank_pattern)
        if not fixed:
            kwargs["alpha_pattern"] = {k: scale * v for k, v in rank_pattern.items()}
    return LoraConfig(**kwargs)


def train_adapter(
    config: BenchConfig,
    task: TaskData,
    seed: int,
    output_dir: Path,
    device: str = "cpu",
    rank: int | None = None,
    rank_pattern: dict[str, int] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a LoRA adapter (the probe's rank, a uniform ``rank`` or a ``rank_pattern``) and
    save it with ``save_pretrained`` to ``output_dir``."""
    import tempfile

    import torch
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments, set_seed

    _, train_cfg = config.require_training("training")
    start = time.perf_counter()
    set_seed(seed)
    base = load_base(config, task, device)
    with warnings.catch_warnings():
        # transformers deprecation notices raised from inside peft, not ours to act on
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(base.model, lora_config(config, task, rank, rank_pattern))
    if task.kind == "classification":
        dataset = _encode_classification(task, base.tokenizer, train_cfg.max_length)
    else:
        dataset = _encode_generation(task, base.tokenizer, train_cfg.max_length)
    bf16 = bool(train_cfg.bf16 and device == "cuda" and torch.cuda.is_bf16_supported())
    with tempfile.TemporaryDirectory(prefix="gradience-train-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=train_cfg.steps,
            per_device_train_batch_size=train_cfg.batch_size,
            gradient_accumulation_steps=train_cfg.gradient_accumulation_steps,
            learning_rate=train_cfg.lr,
            weight_decay=train_cfg.weight_decay,
            # transformers 5: a float in [0, 1) is a ratio of the total steps.
            warmup_steps=train_cfg.warmup_ratio if train_cfg.warmup_ratio < 1 else train_cfg.steps,
            lr_scheduler_type=train_cfg.lr_scheduler,
            seed=seed,
            data_seed=seed,
            bf16=bf16,
            use_cpu=device == "cpu",
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            logging_strategy="no",
            disable_tqdm=not progress,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            # The fused AdamW has no CPU kernel for every dtype; plain AdamW is the same math.
            optim="adamw_torch",
        )
        trainer = Trainer(
            model=peft_model,
            args=args,
            train_dataset=dataset,
            data_collator=_PadCollator(base.tokenizer.pad_token_id),
        )
        if not progress:
            # Without bars the Trainer prints its final metrics dict instead: keep quiet.
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            out = trainer.train()
    output_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(output_dir))
    return TrainResult(
        path=output_dir,
        seconds=time.perf_counter() - start,
        train_loss=float(out.training_loss) if out.training_loss is not None else None,
        rank=rank if rank is not None else config.lora.r if config.lora else 0,
        rank_pattern=dict(rank_pattern) if rank_pattern else None,
    )
