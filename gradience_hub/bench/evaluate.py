"""Scoring a loaded model on a task: per-example correctness keyed by example id.

This is the evaluation seam. An evaluator is a function ``(model, task, ids, config, device,
progress=, desc=) -> {example id: correct}``: given a loaded model (the base alone or with an
adapter active, see :mod:`gradience_hub.bench.models`) and the task, it scores the eval-pool
examples ``ids`` and returns one boolean per id. The cells store these, the policy pairs them
example by example (adapter vs variant, adapter vs base) and each seed's sample is read from
them. :func:`evaluator_for` picks the evaluator of a config; :func:`evaluate` is the native one
(batched, under ``torch.inference_mode``, with a tqdm bar): classification predicts the argmax
label. Causal-LM tasks are scored by lm-eval (``lm-eval``:
:func:`gradience_hub.bench.lm_eval.evaluate_pool`), which returns the same mapping.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gradience_hub.bench.config import BenchConfig
from gradience_hub.bench.lm_eval import evaluate_pool
from gradience_hub.bench.tasks import TaskData
from gradience_hub.bench.train import LoadedModel

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
    """The native evaluator (classification): score the pool examples ``ids`` (each once)."""
    ids = list(dict.fromkeys(int(i) for i in ids))
    examples = task.eval_examples(ids)
    batch_size = config.train.eval_batch_size if config.train else 64
    max_length = config.train.max_length if config.train else 512
    correct = _eval_classification(
        model.model, model.tokenizer, examples, batch_size, max_length, device, progress, desc
    )
    return dict(zip(ids, (bool(c) for c in correct), strict=True))


# Evaluation engines by name (TaskConfig.engine); a config picks one with evaluator_for.
EVALUATORS: dict[str, Callable[..., ExampleCorrectness]] = {
    "native": evaluate,
    "lm-eval": evaluate_pool,
}


def evaluator_for(config: BenchConfig) -> Evaluator:
    """The evaluator of ``config`` (the native one unless the config names another engine)."""
    name = getattr(config.task, "engine", None) or "native"
    return EVALUATORS[name]


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@functools.lru_cache(maxsize=4)
def _encoded_batches(
    tokenizer: Any, texts: tuple[str, ...], batch_size: int, max_length: int
) -> list[tuple[list[int], Any]]:
    """``texts`` in batches of similar length, tokenized: ``(positions in texts, encoding)``.

    Batches are formed over the texts sorted by token count: a batch is padded to its longest
    text, and on the embedded task's eval pool sorting cuts the padded tokens from 9,151 to
    7,004 and the scoring time by about 1.4x (benchmarks/bench_speed.py). Cached: every model of
    a bench scores the same examples with the same tokenizer.
    """
    lengths = [
        len(ids)
        for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    ]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    batches = []
    for batch in _batches(len(order), batch_size):
        picked = [order[i] for i in batch]
        enc = tokenizer(
            [texts[i] for i in picked],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        batches.append((picked, enc))
    return batches


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
    """1 or 0 per example, in the order of ``examples``. An example's logits do not depend on
    its batch-mates (padding is masked out), so batching by length changes no prediction
    beyond float rounding."""
    import torch
    from tqdm.auto import tqdm

    texts = tuple(example["text"] for example in examples)
    batches = _encoded_batches(tokenizer, texts, batch_size, max_length)
    correct = [0] * len(examples)
    with torch.inference_mode():
        for picked, enc in tqdm(batches, desc=desc, disable=not progress, leave=False):
            pred = model(**enc.to(device)).logits.argmax(dim=-1).tolist()
            for p, i in zip(pred, picked, strict=True):
                correct[i] = int(p == examples[i]["label"])
    return correct
