"""A bench's claim in the Hub's two evaluation formats, through huggingface_hub's own types.

- ``model-index`` (card metadata): :func:`model_index_results` builds our results as
  ``EvalResult`` and serialises them with ``eval_results_to_model_index``;
  :func:`merge_model_index` replaces our earlier results (told apart by ``source.name``) and
  keeps every other tool's result as it was, then checks the merged block the way
  ``ModelCardData`` parses it.
- ``.eval_results/<task>.yaml``: :func:`eval_results_yaml` serialises one ``EvalResultEntry``
  with ``eval_result_entries_to_yaml``; refused for a claim that is not a benchmark score
  (:meth:`~gradience_hub.record.hub_eval.HubEvalClaim.benchmark_refusal`).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from gradience_hub.errors import CardError, UsageError
from gradience_hub.record.hub_eval import SOURCE_NAME, HubEvalClaim


def model_index_results(claim: HubEvalClaim) -> list[dict[str, Any]]:
    """Our ``results`` entries of a model-index (one task/dataset, one metric)."""
    from huggingface_hub import EvalResult
    from huggingface_hub.repocard_data import eval_results_to_model_index

    dataset_type = claim.dataset_id or claim.task_name
    result = EvalResult(
        task_type=claim.task_type,
        task_name=claim.task_name,
        dataset_type=dataset_type,
        dataset_name=claim.task_name,
        dataset_config=claim.dataset_config,
        dataset_split=claim.dataset_split,
        dataset_revision=claim.benchmark.revision if claim.benchmark else None,
        metric_type=claim.metric,
        metric_value=claim.value,
        metric_name=f"{claim.metric} ({'sampled' if claim.sampled else 'full split'}, "
        f"mean of {claim.seeds} seed{'s' if claim.seeds != 1 else ''})",
        # the Hub needs a url beside a name; the name is how our entries are found again
        source_name=SOURCE_NAME if claim.source_url else None,
        source_url=claim.source_url,
    )
    index = eval_results_to_model_index(claim.model_name, [result])
    return list(index[0]["results"])


def _ours(result: Any) -> bool:
    source = result.get("source") if isinstance(result, dict) else None
    return isinstance(source, dict) and source.get("name") == SOURCE_NAME


def merge_model_index(existing: Any, claim: HubEvalClaim) -> list[dict[str, Any]]:
    """The card's ``model-index`` with our results replaced and everyone else's kept.

    ``existing`` is the metadata's current value (None when absent). Other tools' results keep
    every key and value they had, in their order; ours go at the end of the first model's
    results (the Hub reads one model name per card). A model-index the Hub could not read is
    refused (CardError, exit 2) rather than overwritten.
    """
    if existing is None:
        index: list[dict[str, Any]] = []
    elif isinstance(existing, list) and all(
        isinstance(m, dict) and isinstance(m.get("results", []), list) for m in existing
    ):
        index = copy.deepcopy(existing)
    else:
        raise CardError(
            "README.md's model-index is not a list of {name, results} entries",
            hint="fix or remove the model-index block of the card's metadata",
        )
    ours = model_index_results(claim)
    for model in index:
        model["results"] = [r for r in model.get("results", []) if not _ours(r)]
    if index:
        index[0]["results"] = [*index[0]["results"], *ours]
    else:
        index = [{"name": claim.model_name, "results": ours}]
    index = [m for m in index if m.get("results")]
    check_model_index(index)
    return index


def check_model_index(index: list[dict[str, Any]]) -> None:
    """Parse ``index`` as ``ModelCardData`` does; CardError when the Hub could not read it."""
    from huggingface_hub import ModelCardData

    try:
        fields: dict[str, Any] = {"model-index": index}
        data = ModelCardData(**fields)
    except (ValueError, KeyError, TypeError) as exc:
        raise CardError(
            f"the card's model-index would not parse: {str(exc).splitlines()[0][:200]}",
            hint="fix or remove the model-index entries of other tools in the card's metadata",
        ) from None
    assert data.eval_results  # a parsed, non-empty index always yields results


def eval_results_yaml(claim: HubEvalClaim) -> str:
    """The ``.eval_results/<task>.yaml`` text of a claim that is a benchmark score."""
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    refusal = claim.benchmark_refusal()
    if refusal is not None or claim.benchmark is None:
        raise UsageError(f"not a Hub benchmark score: {refusal}")
    entry = EvalResultEntry(
        dataset_id=claim.benchmark.dataset_id,
        task_id=claim.benchmark.task_id,
        dataset_revision=claim.benchmark.revision,
        value=claim.value,
        date=claim.date,
        source_url=claim.source_url,
        source_name=SOURCE_NAME if claim.source_url else None,
        notes=claim.notes,
    )
    data = eval_result_entries_to_yaml([entry])
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
