"""Scoring a loaded model on a task: per-example correctness keyed by example id.

This is the evaluation seam. An evaluator is a function ``(model, task, ids, config, device,
progress=, desc=) -> {example id: correct}``: given a loaded model (the base alone or with an
adapter active, see :mod:`gradience_hub.bench.models`) and the task, it scores the eval-pool
examples ``ids`` and returns one boolean per id. The cells store these, the policy pairs them
example by example (adapter vs variant, adapter vs base) and each seed's sample is read from
them. :func:`evaluator_for` picks the evaluator of a config; :func:`evaluate` is the native one
(batched, under ``torch.inference_mode``, with a tqdm bar): classification predicts the argmax
label, generation decodes greedily and compares final numbers
(:func:`gradience_hub.bench.tasks.exact_match`). Another engine (lm-eval for causal LMs) plugs
in by returning the same mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gradience_hub.bench.config import BenchConfig
from gradience_hub.bench.tasks import TaskData, exact_match
from gradience_hub.bench.train import LoadedModel, prompt_ids

ExampleCorrectness = dict[int, bool]


class Evaluator(Protocol):
    """Scores ``ids`` of ``task.eval_pool`` with ``model``: ``{id: correct}`` for every id."""

    def __call__(
        self,
        model: LoadedModel,
        task: TaskData,
        ids: Sequence[int],
        config: BenchConfig,
        device: str,
        *,
        progress: bool = False,
        desc: str = "eval",
    ) -> ExampleCorrectness: ...


def evaluate(
    model: LoadedModel,
    task: TaskData,
    ids: Sequence[int],
    config: BenchConfig,
    device: str,
    *,
    progress: bool = False,
    desc: str = "eval",
) -> ExampleCorrectness:
    """The native evaluator: score the pool examples ``ids`` (each once)."""
    ids = list(dict.fromkeys(int(i) for i in ids))
    examples = task.eval_examples(ids)
    batch_size = config.train.eval_batch_size if config.train else 64
    max_length = config.train.max_length if config.train else 512
    if task.kind == "classification":
        correct = _eval_classification(
            model.model, model.tokenizer, examples, batch_size, max_length, device, progress, desc
        )
    else:
        correct = _eval_generation(
            model.model,
            model.tokenizer,
            examples,
            min(batch_size, 16),
            config.task.max_new_tokens,
            device,
            progress,
            desc,
        )
    return dict(zip(ids, (bool(c) for c in correct), strict=True))


# Evaluation engines by name; a config picks one with evaluator_for.
EVALUATORS: dict[str, Callable[..., ExampleCorrectness]] = {"native": evaluate}


def evaluator_for(config: BenchConfig) -> Evaluator:
    """The evaluator of ``config`` (the native one unless the config names another engine)."""
    name = getattr(config.task, "engine", None) or "native"
    return EVALUATORS[name]


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
    with torch.inference_mode():
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


def _eval_generation(
    model: Any,
    tokenizer: Any,
    examples: list[dict[str, Any]],
    batch_size: int,
    max_new_tokens: int,
    device: str,
    progress: bool,
    desc: str,
) -> list[int]:
    import torch
    from tqdm.auto import tqdm

    correct: list[int] = []
    pad = tokenizer.pad_token_id
    with torch.inference_mode():
        for batch in tqdm(
            _batches(len(examples), batch_size), desc=desc, disable=not progress, leave=False
        ):
            # The prompts exactly as in training, left-padded so each ends where
            # generation starts.
            ids = [prompt_ids(tokenizer, examples[i]["prompt"]) for i in batch]
            width = max(len(x) for x in ids)
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
            texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            correct += [
                int(exact_match(t, examples[i]["answer"]))
                for t, i in zip(texts, batch, strict=True)
            ]
    return correct
