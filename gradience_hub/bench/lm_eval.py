"""lm-evaluation-harness tasks as the bench's evaluation for causal-LM adapters.

A causal-LM bench names lm-eval tasks in its config (``task.lm_eval``)::

    task:
      name: gsm8k-local              # shown on the card
      lm_eval:
        tasks: [local_gsm8k]         # lm-eval task or group names
        include_path: tasks/         # optional folder of task YAMLs, relative to the config
        metric: exact_match,flexible-extract   # "metric,filter" as lm-eval reports it (required)
        num_fewshot: 0               # optional, lm-eval's override rule
        limit: null                  # optional: only the first N docs of each task
      eval_samples: 300              # each seed draws its sample from the tasks' docs

The evaluation pool is every doc of every leaf task (the first ``limit`` of each), in task
order; a pool index names one ``(task, doc_id)``. Each seed's sample is a seeded draw of pool
indices (:func:`gradience_hub.bench.tasks.eval_indices`), evaluated through lm-eval's own
``evaluator.evaluate`` with its ``samples=`` argument on an ``HFLM`` built around the model that
is already loaded (a ``PeftModel`` whose adapters are swapped between calls: no second load).
Per-example correctness is read from lm-eval's logged samples for the chosen metric and filter,
keyed by doc id, so every model is paired on the same docs.

Offline by construction: ``evaluator.evaluate`` makes no model-info or git calls (those live in
``simple_evaluate``), a ``dataset_path: json`` task with local ``data_files`` is read by
datasets' packaged JSON builder with no Hub request, and a relative ``data_files`` path in a
task YAML is resolved against that YAML's folder (lm-eval alone resolves it against the working
directory). Hub datasets (lm-eval's own ``gsm8k``) need network access or the datasets cache;
``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` reach huggingface_hub and datasets unchanged (they
read them at import; this module never writes ``os.environ``).
"""

from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience_hub.errors import ConfigError, MissingExtraError, RemoteError

KEYS = ("tasks", "include_path", "metric", "num_fewshot", "limit")
PREFIX = "task.lm_eval"
# The pinned floor of the [lm-eval] extra: TaskManager.load's flat dicts, Entry-based task
# index, evaluator.evaluate(samples=...).
MIN_VERSION = "0.4.13"
# simple_evaluate's default fewshot_random_seed: the same few-shot contexts as lm-eval's CLI.
FEWSHOT_SEED = 1234
# The inline group that carries per-task overrides (resolved data_files) through
# TaskManager.load: lm-eval merges a group member's keys over the registered task's YAML.
_CARRIER = "gradience_hub_tasks"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LmEvalSpec:
    """The ``task.lm_eval`` block of a bench config."""

    tasks: tuple[str, ...]
    metric: str  # "metric,filter"
    include_path: Path | None = None
    num_fewshot: int | None = None
    limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the record's ``task`` section and the cell fingerprint)."""
        return {
            "tasks": list(self.tasks),
            "include_path": str(self.include_path) if self.include_path else None,
            "metric": self.metric,
            "num_fewshot": self.num_fewshot,
            "limit": self.limit,
        }


def _bad(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(
        f"bench config: {PREFIX}.{key} must be {expected}, got {value!r}",
        hint=f"fix '{PREFIX}.{key}' in the config file",
        key=f"{PREFIX}.{key}",
    )


def _opt_int(data: dict[str, Any], key: str, minimum: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(key, f"an integer >= {minimum}", value)
    return value


def parse_spec(data: Any, config_dir: Path | None = None) -> LmEvalSpec:
    """Validate a ``task.lm_eval`` mapping; ``include_path`` is resolved against
    ``config_dir`` (the config file's folder) and must be an existing directory."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"bench config: {PREFIX} must be a mapping with tasks: [...], got {data!r}",
            hint="see examples/lm-eval/",
            key=PREFIX,
        )
    for name in data:
        if name not in KEYS:
            raise ConfigError(
                f"bench config: unknown key {PREFIX}.{name}",
                hint=f"the keys of '{PREFIX}' are: " + ", ".join(KEYS),
                key=f"{PREFIX}.{name}",
            )
    for name, example in (("tasks", "tasks: [gsm8k]"), ("metric", "metric: acc,none")):
        if name not in data:
            raise ConfigError(
                f"bench config: missing required key {PREFIX}.{name}",
                hint=f"add '{example}' (lm-eval task names; \"metric,filter\" as lm-eval "
                "reports it)",
                key=f"{PREFIX}.{name}",
            )
    raw = data["tasks"]
    names = [raw] if isinstance(raw, str) else raw
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n.strip() for n in names)
    ):
        raise _bad("tasks", "a task name or a non-empty list of task names", raw)
    if len(set(names)) != len(names):
        raise _bad("tasks", "distinct task names", raw)
    include = data.get("include_path")
    include_path = None
    if include is not None:
        if not isinstance(include, str) or not include.strip():
            raise _bad("include_path", "a folder of task YAML files", include)
        p = Path(include).expanduser()
        if not p.is_absolute() and config_dir is not None:
            p = config_dir / p
        if not p.is_dir():
            raise ConfigError(
                f"bench config: {PREFIX}.include_path {include} is not a directory ({p})",
                hint="give a folder of lm-eval task YAMLs, relative to the config file",
                key=f"{PREFIX}.include_path",
            )
        include_path = p.resolve()
    metric = data["metric"]
    if not isinstance(metric, str) or not metric.strip():
        raise _bad("metric", 'a "metric,filter" string such as acc,none', metric)
    return LmEvalSpec(
        tasks=tuple(n.strip() for n in names),
        metric=_metric_key(metric),
        include_path=include_path,
        num_fewshot=_opt_int(data, "num_fewshot", 0),
        limit=_opt_int(data, "limit", 1),
    )


def _metric_key(metric: str) -> str:
    """``acc`` means ``acc,none`` (lm-eval's key for a metric without a named filter)."""
    metric = metric.strip().replace(" ", "")
    return metric if "," in metric else f"{metric},none"


def require_lm_eval() -> None:
    """Raise :class:`MissingExtraError` (exit 2) naming the ``[lm-eval]`` extra when lm-eval
    is not installed."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise MissingExtraError("lm-eval", "lm-eval")


# --------------------------------------------------------------------------- tasks


@dataclass
class LmEvalTasks:
    """The loaded lm-eval tasks of a bench, their evaluation pool and the chosen metric."""

    spec: LmEvalSpec
    metric: str  # "metric,filter"
    tasks: dict[str, Any]  # leaf task name -> lm-eval Task, in pool order
    pool: list[tuple[str, int]]  # pool index -> (task name, doc id)
    reported: dict[str, list[str]] = field(default_factory=dict)  # task -> "metric,filter"s

    @property
    def metric_name(self) -> str:
        """The metric without its filter (``exact_match``)."""
        return self.metric.split(",", 1)[0]

    @property
    def filter_name(self) -> str:
        """The filter of the metric (``flexible-extract``, ``none``)."""
        return self.metric.split(",", 1)[1]

    def samples(self, indices: Sequence[int]) -> dict[str, list[int]]:
        """lm-eval's ``samples=`` argument for the pool indices: task -> sorted doc ids (tasks
        with no doc in the sample left out)."""
        out: dict[str, list[int]] = {}
        for i in indices:
            task, doc = self.pool[i]
            out.setdefault(task, []).append(doc)
        return {t: sorted(set(out[t])) for t in self.tasks if t in out}

    def describe(self) -> str:
        """One line for the record: tasks, docs and metric."""
        return f"lm-eval {', '.join(self.spec.tasks)}: {len(self.pool)} docs, metric {self.metric}"


@contextmanager
def quiet(progress: bool) -> Iterator[None]:
    """lm-eval's per-call warnings (an in-memory model given to HFLM is expected here) off;
    without ``progress`` also datasets' bars. Restores both afterwards."""
    import datasets

    log = logging.getLogger("lm_eval")
    level = log.level
    log.setLevel(logging.ERROR)
    bars_off = datasets.utils.are_progress_bars_disabled()
    if not progress:
        datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        log.setLevel(level)
        if not progress and not bars_off:
            datasets.utils.enable_progress_bars()


@functools.lru_cache(maxsize=8)
def _manager(include_path: Path | None, defaults: bool) -> Any:
    """One TaskManager per (include_path, built-ins) and process: indexing lm-eval's ~15,000
    built-in YAMLs takes seconds."""
    from lm_eval.tasks import TaskManager

    return TaskManager(
        include_path=str(include_path) if include_path else None, include_defaults=defaults
    )


def _task_manager(spec: LmEvalSpec) -> Any:
    """A TaskManager that knows every requested name. When the include_path alone defines
    every requested task (not a group or tag, whose members may be built-ins) the built-ins
    are not indexed at all."""
    if spec.include_path is not None:
        local = _manager(spec.include_path, False)
        index = local.task_index
        if all(n in index and index[n].kind.name == "TASK" for n in spec.tasks):
            return local
    return _manager(spec.include_path, True)


def _unknown_task(spec: LmEvalSpec, name: str, manager: Any) -> ConfigError:
    known = manager.all_tasks
    local: list[str] = []
    if spec.include_path is not None:
        local = sorted(
            n
            for n, e in manager.task_index.items()
            if e.yaml_path is not None and spec.include_path in Path(e.yaml_path).parents
        )
    close = difflib.get_close_matches(name, known, n=8, cutoff=0.6)
    parts = []
    if spec.include_path is not None:
        parts.append(f"tasks in {spec.include_path}: {', '.join(local) or '(none)'}")
    parts.append(f"closest of lm-eval's {len(known)} tasks: {', '.join(close) or '(none)'}")
    return ConfigError(
        f"bench config: unknown lm-eval task {name!r} in {PREFIX}.tasks; " + "; ".join(parts),
        hint="`lm-eval ls tasks` lists every built-in task; include_path adds your own YAMLs",
        key=f"{PREFIX}.tasks",
    )


def _resolve_files(files: Any, base: Path) -> Any:
    """``data_files`` with every relative path that exists under ``base`` made absolute."""
    if isinstance(files, str):
        p = Path(files).expanduser()
        return str(base / p) if not p.is_absolute() and (base / p).exists() else files
    if isinstance(files, list):
        return [_resolve_files(f, base) for f in files]
    if isinstance(files, dict):
        return {k: _resolve_files(v, base) for k, v in files.items()}
    return files


def _specs(spec: LmEvalSpec, manager: Any) -> list[Any]:
    """What to hand TaskManager.load: names, plus one inline group whose members override a
    task's ``dataset_kwargs`` with its data_files resolved against the task YAML's folder."""
    plain: list[Any] = []
    members: list[dict[str, Any]] = []
    for name in spec.tasks:
        entry = manager.task_index[name]
        kwargs = (entry.cfg or {}).get("dataset_kwargs") if entry.kind.name == "TASK" else None
        if entry.yaml_path is not None and isinstance(kwargs, dict) and "data_files" in kwargs:
            base = Path(entry.yaml_path).parent
            resolved = _resolve_files(kwargs["data_files"], base)
            if resolved != kwargs["data_files"]:
                members.append({"task": name, "dataset_kwargs": {**kwargs, "data_files": resolved}})
                continue
        plain.append(name)
    return plain + ([{"group": _CARRIER, "task": members}] if members else [])


def reported_metrics(task: Any) -> list[str]:
    """The ``metric,filter`` keys lm-eval reports for a task."""
    filters = [f["name"] for f in (task.config.filter_list or [])] or ["none"]
    return [f"{m},{f}" for m in task.aggregation() for f in filters]


def _apply_fewshot(task: Any, num_fewshot: int | None) -> None:
    """simple_evaluate's rule: a YAML's ``num_fewshot: 0`` is never overridden; otherwise the
    config's value wins; unset everywhere means 0."""
    default = task.get_config("num_fewshot")
    if num_fewshot is not None and default != 0:
        task.set_config(key="num_fewshot", value=num_fewshot)
    elif num_fewshot is None and default is None:
        task.set_config(key="num_fewshot", value=0)


def load_tasks(spec: LmEvalSpec, progress: bool = True) -> LmEvalTasks:
    """Load the spec's tasks (datasets read now, before any model), check the metric and build
    the evaluation pool. An unknown task or metric is a :class:`ConfigError` listing what
    exists."""
    require_lm_eval()
    with quiet(progress):
        manager = _task_manager(spec)
        for name in spec.tasks:
            if name not in manager.task_index:
                raise _unknown_task(spec, name, manager)
        try:
            loaded = manager.load(_specs(spec, manager))
        except ConnectionError as exc:  # a Hub dataset without network (or offline, uncached)
            raise RemoteError(
                f"lm-eval could not download the data of {', '.join(spec.tasks)}: "
                f"{exc}".splitlines()[0][:400],
                hint="Hub datasets need network access, or the datasets cache with "
                "HF_DATASETS_OFFLINE=1; local tasks use dataset_path: json with data_files",
            ) from None
        except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
            # A missing data file, a Hub dataset offline, a broken YAML: the config's fault.
            raise ConfigError(
                f"lm-eval could not load {', '.join(spec.tasks)}: "
                f"{type(exc).__name__}: {exc}".splitlines()[0][:400],
                hint="check the task YAMLs and their data_files; Hub datasets need network "
                "access or the datasets cache",
                key=f"{PREFIX}.tasks",
            ) from None
    tasks: dict[str, Any] = dict(loaded["tasks"])
    reported = {name: reported_metrics(t) for name, t in tasks.items()}
    metric = spec.metric
    missing = [name for name, keys in reported.items() if metric not in keys]
    if missing:
        listing = "; ".join(f"{n}: {', '.join(reported[n])}" for n in missing)
        raise ConfigError(
            f"bench config: {PREFIX}.metric {metric!r} is not reported by {', '.join(missing)} "
            f"(it reports {listing})",
            hint='set metric to one of those "metric,filter" keys',
            key=f"{PREFIX}.metric",
        )
    pool: list[tuple[str, int]] = []
    for name, task in tasks.items():
        _apply_fewshot(task, spec.num_fewshot)
        n = len(task.eval_docs)
        pool += [(name, d) for d in range(min(n, spec.limit) if spec.limit else n)]
    if not pool:
        raise ConfigError(
            f"lm-eval tasks {', '.join(spec.tasks)} have no evaluation docs",
            hint="check the tasks' test/validation splits",
            key=f"{PREFIX}.tasks",
        )
    return LmEvalTasks(spec=spec, metric=metric, tasks=tasks, pool=pool, reported=reported)


# --------------------------------------------------------------------------- evaluation


@dataclass
class LmEvalResult:
    """Per-example correctness of one model on a set of pool indices."""

    correct: dict[int, int]  # pool index -> 0/1
    task_scores: dict[str, float]  # lm-eval's own aggregate per task

    def score(self, indices: Sequence[int] | None = None) -> float:
        """Mean correctness over ``indices`` (all evaluated examples by default)."""
        keys = list(self.correct) if indices is None else list(indices)
        return sum(self.correct[i] for i in keys) / len(keys) if keys else 0.0


def make_lm(model: Any, tokenizer: Any, batch_size: int = 8, progress: bool = True) -> Any:
    """An lm-eval ``HFLM`` around an already loaded model (a ``PeftModel`` is fine: adapters
    swapped with ``set_adapter`` are seen by the next evaluation) and its tokenizer."""
    require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    class _BenchLM(HFLM):
        """HFLM whose request bars follow the bench's ``progress`` setting."""

        def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not progress)

        def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().loglikelihood_rolling(
                requests, disable_tqdm=disable_tqdm or not progress
            )

        def generate_until(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().generate_until(requests, disable_tqdm=disable_tqdm or not progress)

    with quiet(progress):
        return _BenchLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def per_example(
    logged: dict[str, list[dict[str, Any]]], tasks: LmEvalTasks
) -> dict[tuple[str, int], int]:
    """``(task, doc_id) -> 0/1`` from lm-eval's logged samples for the chosen metric and
    filter. A metric whose per-doc values are not 0/1 (BLEU, F1) cannot be paired example by
    example: ConfigError."""
    out: dict[tuple[str, int], int] = {}
    for task, rows in logged.items():
        for row in rows:
            if row["filter"] != tasks.filter_name or tasks.metric_name not in row:
                continue
            value = float(row[tasks.metric_name])
            if value not in (0.0, 1.0):
                raise ConfigError(
                    f"bench config: {PREFIX}.metric {tasks.metric} gives {value:g} on doc "
                    f"{row['doc_id']} of {task}; the bench pairs 0/1 correctness per doc",
                    hint="choose a per-doc 0/1 metric (acc, acc_norm, exact_match)",
                    key=f"{PREFIX}.metric",
                )
            out[(task, int(row["doc_id"]))] = int(value)
    return out


def evaluate(lm: Any, tasks: LmEvalTasks, indices: Sequence[int], progress: bool = True) -> Any:
    """Evaluate the model behind ``lm`` on the pool ``indices`` with lm-eval's evaluator;
    returns an :class:`LmEvalResult` keyed by pool index."""
    from lm_eval import evaluator

    samples = tasks.samples(indices)
    for name in samples:
        # The same few-shot contexts for every model of the bench, as a fresh lm-eval run.
        tasks.tasks[name].set_fewshot_seed(seed=FEWSHOT_SEED)
    with quiet(progress):
        out = evaluator.evaluate(
            lm=lm,
            task_dict={"tasks": {n: tasks.tasks[n] for n in samples}, "groups": {}},
            samples=samples,
            bootstrap_iters=0,
            log_samples=True,
        )
    by_doc = per_example(out["samples"], tasks)
    correct: dict[int, int] = {}
    for i in indices:
        ref = tasks.pool[i]
        if ref not in by_doc:
            raise RuntimeError(f"lm-eval logged no {tasks.metric} for doc {ref[1]} of {ref[0]}")
        correct[i] = by_doc[ref]
    scores = {n: float(out["results"][n][tasks.metric]) for n in samples}
    return LmEvalResult(correct=correct, task_scores=scores)


def evaluate_pool(
    model: Any,
    task: Any,
    ids: Sequence[int],
    config: Any,
    device: str,
    *,
    progress: bool = False,
    desc: str = "eval",
) -> dict[int, bool]:
    """The bench's evaluation seam for lm-eval: ``model`` is a loaded model (``.model`` and
    ``.tokenizer``: the base alone or with an adapter active), ``task.lm_eval`` the loaded
    :class:`LmEvalTasks`; returns ``{pool index: correct}`` for every id in ``ids``."""
    del device, desc  # HFLM takes the model's own device; lm-eval names its own bars
    ids = list(dict.fromkeys(int(i) for i in ids))
    batch_size = config.train.eval_batch_size if config.train is not None else 16
    lm = make_lm(model.model, model.tokenizer, batch_size=batch_size, progress=progress)
    result = evaluate(lm, task.lm_eval, ids, progress=progress)
    return {i: bool(result.correct[i]) for i in ids}
