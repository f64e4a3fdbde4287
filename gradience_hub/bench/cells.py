"""The cells of a bench grid, the executor interface and the store of finished cells.

A cell is one model scored on examples: the base model without the LoRA update (:data:`BASE`;
a task head the adapter carries is kept, see :func:`~gradience_hub.bench.variants.needs_head`), the
uncompressed adapter (:data:`PROBE`) or a compressed variant; in the retrain protocol adapters
are trained per seed, so their cells are (variant, seed), while posthoc adapters and the base
model do not depend on the seed and get one cell each (``seed`` None) that scores every example
any seed's sample needs. Each (model, example) is thereby scored once; a seed's numbers are read
from the cell's per-example correctness (:meth:`CellResult.correct_by_id`).

An executor only needs ``map(cells, runner)`` yielding results as cells finish;
:class:`LocalExecutor` runs them one after another in this process. A cell and its result are
plain data (JSON): :class:`CellRunner` holds plain picklable fields, so a process-pool or
remote executor can ship it with the cells, and each process loads the base model once
(:class:`~gradience_hub.bench.models.ModelPool`). Finished cells are saved atomically under
``OUTPUT/cells/<key>.json`` as they arrive, which is what ``--resume`` reads; a saved cell that
does not cover the examples now needed (seeds were added) is scored again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from gradience_hub.bench.config import BenchConfig
from gradience_hub.bench.variants import VariantPlan
from gradience_hub.errors import UsageError

PROBE = "probe"
BASE = "base"
CELLS_DIR = "cells"
RETRAIN_DIR = "retrain"
RUN_FILE = "run.json"
Echo = Callable[[str], None]


# --------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One unit of work: a model (base, probe or variant), at one seed when it is trained
    per seed (retrain), else for every seed at once (``seed`` None)."""

    variant: str
    seed: int | None = None

    @property
    def key(self) -> str:
        """File-name key: ``<variant>__<seed>``, or ``<variant>`` for a seed-free cell."""
        return self.variant if self.seed is None else f"{self.variant}__{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"variant": self.variant, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        """Read :meth:`to_dict`."""
        return cls(str(data["variant"]), None if data.get("seed") is None else int(data["seed"]))


@dataclass
class CellResult:
    """What a finished cell produced (``OUTPUT/cells/<key>.json``): per-example correctness
    (``correct[i]`` is example ``ids[i]`` of the eval pool) and how it was obtained."""

    variant: str
    seed: int | None
    ids: list[int]
    correct: list[int]
    params: int
    ranks: dict[str, int]
    adapter: str
    eval_seconds: float
    train_seconds: float | None = None
    train_loss: float | None = None

    @property
    def key(self) -> str:
        """The cell's key."""
        return Cell(self.variant, self.seed).key

    @property
    def n(self) -> int:
        """Number of evaluated examples."""
        return len(self.correct)

    @property
    def score(self) -> float:
        """The metric over every example of the cell."""
        return sum(self.correct) / len(self.correct) if self.correct else 0.0

    def correct_by_id(self) -> dict[int, bool]:
        """Example id -> correct."""
        return {i: bool(c) for i, c in zip(self.ids, self.correct, strict=True)}

    def sample(self, ids: Sequence[int]) -> list[bool]:
        """Correctness on ``ids`` (in that order); KeyError when one was not scored."""
        by_id = self.correct_by_id()
        return [by_id[i] for i in ids]

    def covers(self, ids: Sequence[int]) -> bool:
        """True when every id in ``ids`` was scored."""
        return set(ids) <= set(self.ids)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        """Read a saved cell (TypeError/ValueError when it is not one)."""
        result = cls(**data)
        if len(result.ids) != len(result.correct):
            raise ValueError("ids and correct differ in length")
        return result


class JobLink(NamedTuple):
    """A remote job that ran cells: its id and the web page that shows it."""

    id: str
    url: str


class Executor(Protocol):
    """Runs cells; yields each result as soon as its cell finishes (any order). Everything the
    bench reads of an executor is declared here."""

    #: The device the cells run on when it is not this machine's (a remote executor's
    #: workers': "cpu" or "cuda"), else None.
    device: str | None
    #: Whether the executor's workers load the task themselves, so the driver need not.
    remote_task: bool
    #: With ``remote_task``: the eval pool's size and the task's warnings as the workers
    #: reported them (None and empty until they do).
    pool_size: int | None
    task_warnings: list[str]

    @property
    def jobs(self) -> Sequence[JobLink]:
        """The remote jobs the cells ran in, for the Action's comment (empty when they ran
        here or on Ray)."""
        ...

    def check_config(self, config: Any) -> None:
        """Refuse a config this executor cannot run (ConfigError, exit 2) before any work."""
        ...

    def map(
        self, cells: Sequence[Cell], runner: Callable[[Cell], CellResult]
    ) -> Iterator[CellResult]:
        """Run ``runner(cell)`` for every cell."""
        ...


class LocalExecutor:
    """Runs cells sequentially in this process (the default)."""

    device: str | None = None
    remote_task = False
    pool_size: int | None = None
    jobs: tuple[JobLink, ...] = ()

    def __init__(self) -> None:
        self.task_warnings: list[str] = []

    def check_config(self, config: Any) -> None:
        """Every config runs here."""

    def map(
        self, cells: Sequence[Cell], runner: Callable[[Cell], CellResult]
    ) -> Iterator[CellResult]:
        """Run each cell in order."""
        for cell in cells:
            yield runner(cell)


class CellStore:
    """Saved cells under ``OUTPUT/cells``; writes are atomic (a killed run leaves no half
    file)."""

    def __init__(self, output_dir: Path) -> None:
        self.dir = output_dir / CELLS_DIR

    def path(self, cell: Cell) -> Path:
        """The JSON file of ``cell``."""
        return self.dir / f"{cell.key}.json"

    def load(self, cell: Cell) -> CellResult | None:
        """The saved result of ``cell``, or None."""
        p = self.path(cell)
        if not p.is_file():
            return None
        try:
            result = CellResult.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None  # unreadable or from an older layout: recompute it
        return result if Cell(result.variant, result.seed) == cell else None

    def save(self, result: CellResult) -> None:
        """Write a finished cell."""
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.path(Cell(result.variant, result.seed))
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(result.to_dict()) + "\n", encoding="utf-8")
        os.replace(tmp, p)

    def saved(self) -> list[Path]:
        """The saved cell files."""
        return sorted(p for p in self.dir.glob("*.json") if p.name != RUN_FILE)

    def start(self, fingerprint: str, resume: bool, echo: Echo) -> None:
        """Begin a run: keep matching cells when resuming, else start from none."""
        run = self.dir / RUN_FILE
        if resume and run.is_file():
            saved = json.loads(run.read_text(encoding="utf-8")).get("fingerprint")
            if saved != fingerprint:
                raise UsageError(
                    f"--resume: the saved cells in {self.dir} come from a different config, "
                    "SOURCE, protocol or device",
                    hint="rerun without --resume to start over, or use another --output",
                )
            echo(f"Resuming: {len(self.saved())} saved cell(s) in {self.dir}")
            return
        if resume:
            echo(f"--resume: no saved run in {self.dir}; starting from the beginning")
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        run.write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- runner


def seed_sample(pool_size: int, n: int | None, seed: int) -> list[int]:
    """The seed's eval sample (ids of the eval pool): see :func:`~gradience_hub.bench.tasks.
    eval_indices`."""
    from gradience_hub.bench.tasks import eval_indices

    return eval_indices(pool_size, n, seed)


@dataclass
class CellRunner:
    """Runs one cell: train (retrain adapters) and score. Plain fields only, so it pickles;
    the task and the model pool are built lazily once per process."""

    protocol: str
    config: BenchConfig
    output_dir: Path
    device: str
    probe_dir: Path | None
    plans: dict[str, VariantPlan] = field(default_factory=dict)
    adapter_dirs: dict[str, Path] = field(default_factory=dict)
    # Base-model controls that keep the adapter's task head: cell key -> zero-update adapter.
    base_dirs: dict[str, Path] = field(default_factory=dict)
    probe_params: int = 0
    progress: bool | None = None
    _task: Any = None
    _pool: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_task"] = state["_pool"] = None
        return state

    def loaded(self) -> tuple[Any, Any]:
        """The task and model pool this runner has loaded so far (None where not yet)."""
        return self._task, self._pool

    def adopt(self, task: Any, pool: Any) -> None:
        """Use a task and model pool loaded earlier in this process for the same config
        (a Ray worker keeps them between the cells of one bench)."""
        self._task, self._pool = task, pool

    def unloaded_copy(self, **changes: Any) -> CellRunner:
        """A copy with ``changes`` and nothing loaded: a worker loads its own task and pool."""
        return replace(self, _task=None, _pool=None, **changes)

    @property
    def task(self) -> Any:
        """The loaded task (training split only for retrain)."""
        if self._task is None:
            from gradience_hub.bench.tasks import load_task

            self._task = load_task(self.config, need_train=self.protocol == "retrain")
        return self._task

    @property
    def models(self) -> Any:
        """This process's :class:`~gradience_hub.bench.models.ModelPool`."""
        if self._pool is None:
            from gradience_hub.bench.models import ModelPool

            self._pool = ModelPool(self.config, self.task, self.device)
        return self._pool

    def indices(self, seed: int) -> list[int]:
        """The seed's eval sample."""
        return seed_sample(len(self.task.eval_pool), self.config.task.eval_count, seed)

    def ids_for(self, cell: Cell) -> list[int]:
        """The examples a cell scores: its seed's sample, or every seed's for a seed-free
        cell (sorted, each once)."""
        if cell.seed is not None:
            return self.indices(cell.seed)
        return sorted({i for seed in self.config.seeds for i in self.indices(seed)})

    def _train(self, cell: Cell) -> tuple[Path, dict[str, int], Any]:
        from gradience_hub.bench.train import train_adapter

        assert cell.seed is not None
        adapter_dir = self.output_dir / RETRAIN_DIR / cell.key
        if cell.variant == PROBE:
            ranks: dict[str, int] = {}
            kwargs: dict[str, Any] = {}
        else:
            plan = self.plans[cell.key]
            ranks = plan.ranks
            k = plan.uniform_rank
            kwargs = {
                "rank": k,
                "rank_pattern": None if k is not None else plan.peft_rank_pattern(),
            }
        trained = train_adapter(
            self.config,
            self.task,
            cell.seed,
            adapter_dir,
            self.device,
            progress=bool(self.progress),
            **kwargs,
        )
        return adapter_dir, ranks, trained

    def __call__(self, cell: Cell) -> CellResult:
        import time

        from gradience_hub.bench.evaluate import evaluator_for

        train_seconds = train_loss = None
        adapter_dir: Path | None
        ranks: dict[str, int]
        if cell.variant == BASE:
            adapter_dir, ranks = self.base_dirs.get(cell.key), {}
        elif self.protocol == "retrain":
            adapter_dir, ranks, trained = self._train(cell)
            train_seconds, train_loss = trained.seconds, trained.train_loss
        elif cell.variant == PROBE:
            assert self.probe_dir is not None
            adapter_dir, ranks = self.probe_dir, {}
        else:
            adapter_dir, ranks = self.adapter_dirs[cell.variant], self.plans[cell.key].ranks
        ids = self.ids_for(cell)
        evaluate = evaluator_for(self.config)
        start = time.perf_counter()
        loaded = self.models.base() if adapter_dir is None else self.models.adapter(adapter_dir)
        with loaded as model:
            by_id = evaluate(
                model,
                self.task,
                ids,
                self.config,
                self.device,
                progress=bool(self.progress),
                desc=f"eval {cell.key}",
            )
        seconds = time.perf_counter() - start
        return CellResult(
            variant=cell.variant,
            seed=cell.seed,
            ids=ids,
            correct=[int(by_id[i]) for i in ids],
            params=self._params(cell, adapter_dir),
            ranks=dict(ranks),
            adapter=self._shown(adapter_dir),
            eval_seconds=seconds,
            train_seconds=train_seconds,
            train_loss=train_loss,
        )

    def _params(self, cell: Cell, adapter_dir: Path | None) -> int:
        if adapter_dir is None or cell.variant == BASE:
            return 0
        if cell.variant != PROBE:
            return self.plans[cell.key].params
        if self.protocol == "retrain":
            return _lora_params(adapter_dir)
        return self.probe_params

    def _shown(self, adapter_dir: Path | None) -> str:
        if adapter_dir is None:
            return ""
        try:
            return str(adapter_dir.relative_to(self.output_dir))
        except ValueError:
            return str(adapter_dir)


def _lora_params(adapter_dir: Path) -> int:
    """LoRA factor parameters of a saved adapter (heads and other tensors not counted)."""
    from gradience_hub.adapter import open_adapter

    adapter = open_adapter(adapter_dir)
    return sum(adapter.module(name).params for name in adapter.module_names)


def display_name(variant: str) -> str:
    """A cell's model as users read it: the probe is the uncompressed adapter (bench.json and
    the cell files keep ``probe``)."""
    return "uncompressed" if variant == PROBE else variant


def _seed_mean(result: CellResult, samples: Sequence[Sequence[int]]) -> float:
    """The mean over seeds of the score on each seed's sample (bench.md's "mean")."""
    return sum(sum(result.sample(ids)) / len(ids) for ids in samples) / len(samples)


def cell_line(
    result: CellResult,
    probe: CellResult | None,
    done: int,
    total: int,
    seed_samples: Sequence[Sequence[int]] = (),
) -> str:
    """One summary line per finished cell (the change against the uncompressed adapter on the
    same examples). A seed-free cell with ``seed_samples`` (each seed's eval ids) shows the
    mean over seeds of its per-seed scores, the figure bench.md reports, not its score over
    the union of the samples."""
    samples = [ids for ids in seed_samples if ids] if result.seed is None else []
    if samples and not result.covers([i for ids in samples for i in ids]):
        samples = []
    delta = ""
    if probe is not None and result.variant not in (PROBE, BASE) and probe.covers(result.ids):
        if samples and probe.covers([i for ids in samples for i in ids]):
            change = _seed_mean(result, samples) - _seed_mean(probe, samples)
        else:
            ref = probe.sample(result.ids)
            change = (sum(result.correct) - sum(ref)) / len(ref) if ref else 0.0
        delta = f"  Δ {change * 100:+.1f} pts"
    train = f"  train {result.train_seconds:.1f}s" if result.train_seconds is not None else ""
    if samples:
        seed = "all seeds"
        shown = f"mean {_seed_mean(result, samples) * 100:5.1f}% over {len(samples)} seeds"
    else:
        seed = "all seeds" if result.seed is None else f"seed {result.seed}"
        shown = f"score {result.score * 100:5.1f}% (n={result.n})"
    return (
        f"[{done}/{total}] {display_name(result.variant):<18} {seed:<10} "
        f"{shown}{delta}{train}  eval {result.eval_seconds:.1f}s"
    )


def _seed_samples(runner: CellRunner, executor: Executor) -> list[list[int]]:
    """Each seed's eval ids for a progress line, from the pool size the executor reports or the
    task this process already loaded; none (the line then shows the cell's own score) rather
    than loading the task here: a driver on the slim image has no bench extra to load it."""
    task, _ = runner.loaded()
    size = executor.pool_size or (len(task.eval_pool) if task is not None else None)
    if not size:
        return []
    n = runner.config.task.eval_count
    return [seed_sample(size, n, seed) for seed in runner.config.seeds]


def run_grid(
    cells: list[Cell],
    runner: CellRunner,
    executor: Executor,
    store: CellStore,
    results: dict[str, CellResult],
    echo: Echo,
    total: int,
) -> None:
    """Run the cells not saved yet with ``executor``; save each result as it arrives, put
    every result (saved or new) in ``results`` and echo one line per newly finished cell. A
    saved cell that lacks examples now needed is run again."""
    todo = []
    for cell in cells:
        saved = store.load(cell)
        if saved is not None and saved.covers(runner.ids_for(cell)):
            results[cell.key] = saved
        else:
            todo.append(cell)
    for result in executor.map(todo, runner):
        store.save(result)
        results[result.key] = result
        probe = results.get(Cell(PROBE, result.seed).key)
        samples = _seed_samples(runner, executor) if result.seed is None else []
        echo(cell_line(result, probe, len(results), total, samples))
