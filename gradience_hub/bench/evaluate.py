"""Evaluation of LoRA adapters: batched, under ``torch.no_grad``, with a tqdm bar.

Returns per-example correctness (not only the score): the policy's paired test compares the
uncompressed adapter and a variant example by example on the same seed's sample.
Classification predicts the argmax label; causal-LM tasks are scored by lm-eval
(:func:`gradience_hub.bench.lm_eval.evaluate_pool`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradience_hub.bench.config import BenchConfig
from gradience_hub.bench.tasks import TaskData
from gradience_hub.bench.train import LoadedModel, load_base

# Weights that the checkpoint lacks (a new classification head) are initialised under this
# seed when an adapter is loaded for evaluation; the adapter's saved head then replaces them.
_EVAL_INIT_SEED = 0


@dataclass
class EvalResult:
    """Per-example correctness on one seed's sample."""

    correct: list[int]
    seconds: float

    @property
    def score(self) -> float:
        """Accuracy / exact match."""
        return sum(self.correct) / len(self.correct) if self.correct else 0.0


def load_adapter_model(
    config: BenchConfig, task: TaskData, adapter_dir: Path, device: str
) -> tuple[Any, Any]:
    """The base model with the adapter at ``adapter_dir`` loaded (eval mode)."""
    from peft import PeftModel
    from transformers import set_seed

    set_seed(_EVAL_INIT_SEED)
    base = load_base(config, task, device)
    with warnings.catch_warnings():
        # transformers deprecation notices raised from inside peft, not ours to act on
        warnings.simplefilter("ignore", FutureWarning)
        model = PeftModel.from_pretrained(base.model, str(adapter_dir))
    model.eval()
    return model, base.tokenizer


def evaluate_adapter(
    config: BenchConfig,
    task: TaskData,
    adapter_dir: Path,
    indices: list[int],
    device: str = "cpu",
    progress: bool = True,
    desc: str = "eval",
) -> EvalResult:
    """Evaluate the adapter on the pool examples at ``indices``."""
    start = time.perf_counter()
    model, tokenizer = load_adapter_model(config, task, adapter_dir, device)
    examples = task.eval_examples(indices)
    batch_size = config.train.eval_batch_size if config.train else 64
    max_length = config.train.max_length if config.train else 512
    if task.kind == "classification":
        correct = _eval_classification(
            model, tokenizer, examples, batch_size, max_length, device, progress, desc
        )
    else:
        from gradience_hub.bench.lm_eval import evaluate_pool

        loaded = LoadedModel(model=model, tokenizer=tokenizer, path="")
        scored = evaluate_pool(loaded, task, indices, config, device, progress=progress)
        correct = [int(scored[i]) for i in indices]
    return EvalResult(correct=correct, seconds=time.perf_counter() - start)


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _eval_classification(
    model: Any,
    tokenizer: Any,
    examples: list[dict[str, Any]],
    batch_size: int,
    max_length: int,
    device: str,
    progress: bool,
    desc: str,
) -> list[int]:
    import torch
    from tqdm.auto import tqdm

    correct: list[int] = []
    with torch.no_grad():
        for batch in tqdm(
            _batches(len(examples), batch_size), desc=desc, disable=not progress, leave=False
        ):
            texts = [examples[i]["text"] for i in batch]
            enc = tokenizer(
                texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            ).to(device)
            pred = model(**enc).logits.argmax(dim=-1).tolist()
            correct += [int(p == examples[i]["label"]) for p, i in zip(pred, batch, strict=True)]
    return correct
