"""The cells of a bench grid, the executor interface and the store of finished cells.

A cell is one variant (or the probe) at one seed. An executor only needs ``map(cells, runner)``
yielding results as cells finish; :class:`LocalExecutor` runs them one after another in this
process. :class:`CellRunner` holds plain picklable fields, so a process-pool or remote
executor can ship it with the cells. Finished cells are saved atomically under
``OUTPUT/cells/<variant>__<seed>.json`` as they arrive, which is what ``--resume`` reads.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gradience_hub.bench.config import BenchConfig
from gradience_hub.bench.variants import VariantPlan
from gradience_hub.errors import UsageError

PROBE = "probe"
CELLS_DIR = "cells"
RETRAIN_DIR = "retrain"
Echo = Callable[[str], None]


# --------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One unit of work: a variant (or the probe) at one seed."""

    variant: str
    seed: int

    @property
    def key(self) -> str:
        """File-name key: ``<variant>__<seed>``."""
        return f"{self.variant}__{self.seed}"


@dataclass
class CellResult:
    """What a finished cell produced (``OUTPUT/cells/<variant>__<seed>.json``)."""

    variant: str
    seed: int
    score: float
    correct: list[int]
    indices: list[int]
    params: int
    ranks: dict[str, int]
    adapter: str
    eval_seconds: float
    train_seconds: float | None = None
    train_loss: float | None = None

    @property
    def n(self) -> int:
        """Number of evaluated examples."""
        return len(self.correct)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        """Read a saved cell."""
        return cls(**data)


class Executor(Protocol):
    """Runs cells; yields each result as soon as its cell finishes (any order)."""

    def map(
        self, cells: Sequence[Cell], runner: Callable[[Cell], CellResult]
    ) -> Iterator[CellResult]:
        """Run ``runner(cell)`` for every cell."""
        ...


class LocalExecutor:
    """Runs cells sequentially in this process (the default)."""

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
            return CellResult.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None  # unreadable: recompute it

    def save(self, result: CellResult) -> None:
        """Write a finished cell."""
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.path(Cell(result.variant, result.seed))
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(result.to_dict()) + "\n", encoding="utf-8")
        os.replace(tmp, p)

    def start(self, fingerprint: str, resume: bool, echo: Echo) -> None:
        """Begin a run: keep matching cells when resuming, else start from none."""
        run = self.dir / "run.json"
        if resume and run.is_file():
            saved = json.loads(run.read_text(encoding="utf-8")).get("fingerprint")
            if saved != fingerprint:
                raise UsageError(
                    f"--resume: the saved cells in {self.dir} come from a different config, "
                    "SOURCE, protocol or device",
                    hint="rerun without --resume to start over, or use another --output",
                )
            done = len(list(self.dir.glob("*__*.json")))
            echo(f"Resuming: {done} saved cell(s) in {self.dir}")
            return
        if resume:
            echo(f"--resume: no saved run in {self.dir}; starting from the beginning")
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        run.write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- runner


@dataclass
class CellRunner:
    """Runs one cell: train (retrain) and evaluate. Plain fields only, so it pickles; the
    task is loaded lazily once per process."""

    protocol: str
    config: BenchConfig
    output_dir: Path
    device: str
    probe_dir: Path | None
    plans: dict[str, VariantPlan] = field(default_factory=dict)
    adapter_dirs: dict[str, Path] = field(default_factory=dict)
    probe_params: int = 0
    progress: bool | None = None
    _task: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_task"] = None
        return state

    @property
    def task(self) -> Any:
        """The loaded task (training split only for retrain)."""
        if self._task is None:
            from gradience_hub.bench.tasks import load_task

            self._task = load_task(self.config, need_train=self.protocol == "retrain")
        return self._task

    def indices(self, seed: int) -> list[int]:
        """The seed's eval sample."""
        from gradience_hub.bench.tasks import eval_indices

        return eval_indices(len(self.task.eval_pool), self.config.task.eval_samples, seed)

    def __call__(self, cell: Cell) -> CellResult:
        from gradience_hub.bench.evaluate import evaluate_adapter
        from gradience_hub.bench.train import train_adapter

        train_seconds = train_loss = None
        if self.protocol == "retrain":
            adapter_dir = self.output_dir / RETRAIN_DIR / cell.key
            if cell.variant == PROBE:
                ranks: dict[str, int] = {}
                trained = train_adapter(
                    self.config,
                    self.task,
                    cell.seed,
                    adapter_dir,
                    self.device,
                    progress=bool(self.progress),
                )
            else:
                plan = self.plans[cell.key]
                ranks = plan.ranks
                k = plan.uniform_rank
                trained = train_adapter(
                    self.config,
                    self.task,
                    cell.seed,
                    adapter_dir,
                    self.device,
                    rank=k,
                    rank_pattern=None if k is not None else plan.peft_rank_pattern(),
                    progress=bool(self.progress),
                )
            train_seconds, train_loss = trained.seconds, trained.train_loss
        else:
            if cell.variant == PROBE:
                assert self.probe_dir is not None
                adapter_dir, ranks = self.probe_dir, {}
            else:
                adapter_dir, ranks = self.adapter_dirs[cell.variant], self.plans[cell.key].ranks
        idx = self.indices(cell.seed)
        ev = evaluate_adapter(
            self.config,
            self.task,
            adapter_dir,
            idx,
            self.device,
            progress=bool(self.progress),
            desc=f"eval {cell.key}",
        )
        if cell.variant != PROBE:
            params = self.plans[cell.key].params
        elif self.protocol == "retrain":
            params = _lora_params(adapter_dir)
        else:
            params = self.probe_params
        try:
            shown = str(adapter_dir.relative_to(self.output_dir))
        except ValueError:
            shown = str(adapter_dir)
        return CellResult(
            variant=cell.variant,
            seed=cell.seed,
            score=ev.score,
            correct=ev.correct,
            indices=idx,
            params=params,
            ranks=dict(ranks),
            adapter=shown,
            eval_seconds=ev.seconds,
            train_seconds=train_seconds,
            train_loss=train_loss,
        )


def _lora_params(adapter_dir: Path) -> int:
    """LoRA factor parameters of a saved adapter (heads and other tensors not counted)."""
    from gradience_hub.adapter import open_adapter

    adapter = open_adapter(adapter_dir)
    return sum(adapter.module(name).params for name in adapter.module_names)


def cell_line(result: CellResult, probe: CellResult | None, done: int, total: int) -> str:
    """One summary line per finished cell."""
    delta = ""
    if probe is not None and result.variant != PROBE:
        delta = f"  Δ {(result.score - probe.score) * 100:+.1f} pts"
    train = f"  train {result.train_seconds:.1f}s" if result.train_seconds is not None else ""
    return (
        f"[{done}/{total}] {result.variant:<18} seed {result.seed:<6} "
        f"score {result.score * 100:5.1f}% (n={result.n}){delta}{train}  "
        f"eval {result.eval_seconds:.1f}s"
    )


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
    every result (saved or new) in ``results`` and echo one line per newly finished cell."""
    todo = []
    for cell in cells:
        saved = store.load(cell)
        if saved is not None:
            results[cell.key] = saved
        else:
            todo.append(cell)
    for result in executor.map(todo, runner):
        store.save(result)
        results[Cell(result.variant, result.seed).key] = result
        probe = results.get(Cell(PROBE, result.seed).key)
        echo(cell_line(result, probe, len(results), total))
