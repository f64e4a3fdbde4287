"""What a bench lets us claim in the Hub's own evaluation formats, decided from the record.

Two places on the Hub show evaluation results (see docs/architecture.md, "Eval results on the
Hub"):

- the card's ``model-index`` metadata (older, still read): the adapter's own score on the bench's
  task, with how it was measured. Every posthoc bench publishes it;
- ``.eval_results/<task>.yaml`` (read by the model page and the benchmark leaderboards): only a
  score of a *registered Hub benchmark* evaluated *in full*. The bench config names the
  benchmark (``task.hub_benchmark: {dataset_id, task_id, revision}``), the whole split was
  evaluated (no sampling), the protocol scored this repo's adapter (posthoc: a retrain bench
  scores adapters it trained itself), and the value is the adapter's own score. A sampled bench
  (the default draws ``eval_samples`` examples per seed) is an estimate for comparing variants,
  not a benchmark score, and never goes there. Variants' scores are other models: they stay in
  the record and the card's table.

:class:`HubEvalClaim` is the typed document; :func:`claim_from_record` makes it and
:meth:`HubEvalClaim.benchmark_refusal` says, in words, why a record is not a benchmark score.
The Hub's own types (``EvalResult``, ``EvalResultEntry``) are built from it in
:mod:`gradience_hub.hub.evals`, the only layer that imports huggingface_hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gradience_hub.errors import ConfigError
from gradience_hub.record.model import BenchRecord

# source.name of every result we write: how our model-index entries are told from others'
SOURCE_NAME = "gradience-hub bench"
_DATASET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")


@dataclass(frozen=True)
class HubBenchmark:
    """``task.hub_benchmark`` of a bench config: a benchmark dataset registered on the Hub
    (``dataset_id``), the task within it (``task_id``) and the dataset revision evaluated."""

    dataset_id: str
    task_id: str
    revision: str | None = None

    @classmethod
    def from_dict(cls, data: Any, key: str = "task.hub_benchmark") -> HubBenchmark:
        """Validate the config mapping; a bad key is a ConfigError naming it (exit 2)."""
        if not isinstance(data, dict):
            raise ConfigError(
                f"{key} must be a mapping {{dataset_id, task_id, revision}}, got "
                f"{type(data).__name__}",
                hint=f"e.g. {key}: {{dataset_id: cais/mmlu, task_id: mmlu}}",
                key=key,
            )
        unknown = sorted(set(data) - {"dataset_id", "task_id", "revision"})
        if unknown:
            raise ConfigError(
                f"unknown key {key}.{unknown[0]}",
                hint="hub_benchmark takes dataset_id, task_id and revision",
                key=f"{key}.{unknown[0]}",
            )
        dataset_id, task_id, revision = (
            data.get("dataset_id"),
            data.get("task_id"),
            data.get("revision"),
        )
        if not isinstance(dataset_id, str) or not _DATASET_ID.match(dataset_id):
            raise ConfigError(
                f"{key}.dataset_id must be a Hub dataset id (org/name), got {dataset_id!r}",
                key=f"{key}.dataset_id",
            )
        if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
            raise ConfigError(
                f"{key}.task_id must be the benchmark's task id (letters, digits, _ . -), got "
                f"{task_id!r}",
                key=f"{key}.task_id",
            )
        if revision is not None and (not isinstance(revision, str) or not revision.strip()):
            raise ConfigError(
                f"{key}.revision must be a commit sha or tag, got {revision!r}",
                key=f"{key}.revision",
            )
        return cls(dataset_id, task_id, revision)

    def to_dict(self) -> dict[str, Any]:
        """bench.json ``task.hub_benchmark``."""
        out: dict[str, Any] = {"dataset_id": self.dataset_id, "task_id": self.task_id}
        if self.revision is not None:
            out["revision"] = self.revision
        return out


@dataclass(frozen=True)
class HubEvalClaim:
    """The adapter's own score on the bench's task, and how it was produced.

    ``value`` is the uncompressed adapter's mean score over ``seeds`` (the probe);
    ``examples`` the examples each seed evaluated; ``sampled`` whether they were drawn from a
    larger split; ``posthoc`` whether the scored adapter is this repo's (a retrain bench
    trains its own). ``source_url`` links the record file the numbers come from.
    """

    model_name: str
    task_name: str
    task_type: str
    metric: str
    value: float
    seeds: int
    examples: int | None
    sampled: bool
    posthoc: bool
    benchmark: HubBenchmark | None
    dataset_id: str | None
    dataset_config: str | None
    dataset_split: str | None
    source_url: str | None
    date: str | None

    def benchmark_refusal(self) -> str | None:
        """Why this claim is not a Hub benchmark score (None when it is one)."""
        if self.benchmark is None:
            return "the bench config names no task.hub_benchmark"
        if not self.posthoc:
            return "a retrain bench scores adapters it trained, not this repo's adapter"
        if self.sampled or self.examples is None:
            return (
                f"the bench scored a sample ({self.examples or 'an unknown number of'} "
                "examples per seed), not the benchmark's whole split"
            )
        return None

    @property
    def is_benchmark_score(self) -> bool:
        """True when ``.eval_results/`` may carry it."""
        return self.benchmark_refusal() is None

    @property
    def eval_results_path(self) -> str:
        """``.eval_results/<task>.yaml`` (the task id, or the bench task's name, made safe)."""
        name = self.benchmark.task_id if self.benchmark is not None else self.task_name
        safe = re.sub(r"[^A-Za-z0-9_.\-]+", "-", name).strip("-.") or "task"
        return f".eval_results/{safe}.yaml"

    @property
    def notes(self) -> str:
        """How the number was produced, in one line (``notes`` of the entries)."""
        seeds = f"{self.seeds} seed" + ("s" if self.seeds != 1 else "")
        size = f"{self.examples} examples" if self.examples is not None else "examples"
        how = "sampled" if self.sampled else "the whole split"
        return (
            f"gradience-hub bench: {self.metric} of the uncompressed adapter, mean of {seeds}, "
            f"{size} per seed ({how})"
        )


def claim_from_record(
    record: BenchRecord,
    *,
    model_name: str,
    source_url: str | None,
    task_type: str = "text-classification",
) -> HubEvalClaim:
    """The claim a bench record supports about the adapter it benched.

    The task's ``hub_benchmark``, ``sampled``, ``dataset`` and ``split`` come from bench.json's
    ``task`` when the bench wrote them; a record without them is treated as sampled (the
    default of every bench before them), so it never reaches ``.eval_results/``.
    """
    task = record.task
    raw_benchmark = getattr(task, "hub_benchmark", None)
    benchmark = (
        raw_benchmark
        if isinstance(raw_benchmark, HubBenchmark) or raw_benchmark is None
        else HubBenchmark.from_dict(raw_benchmark, "task.hub_benchmark")
    )
    sampled = getattr(task, "sampled", None)
    return HubEvalClaim(
        model_name=model_name,
        task_name=task.name,
        task_type=task_type,
        metric=task.metric,
        value=float(record.probe.mean),
        seeds=len(record.probe.per_seed) or len(record.protocol.seeds),
        examples=task.eval_examples,
        sampled=True if sampled is None else bool(sampled),
        posthoc=record.protocol.kind == "posthoc",
        benchmark=benchmark,
        dataset_id=getattr(task, "dataset", None),
        dataset_config=getattr(task, "dataset_config", None),
        dataset_split=getattr(task, "split", None),
        source_url=source_url,
        date=record.created_at or None,
    )
