"""Executor speed: the embedded posthoc grid locally vs through Ray, and each executor's
per-cell overhead (submit to result) in seconds.

    PYTHONPATH=. python benchmarks/executor_speed.py [--adapter DIR] [--ray-cpus 2]

1. The posthoc grid of examples/embedded-sentiment.yaml (3 seeds, 3 variants: one cell per
   model, base, probe and variants, each scoring the union of the seeds' samples) with the
   local executor, then with Ray (a local Ray of ``--ray-cpus`` CPUs, one CPU per cell): wall
   time of each and the bench.json verdicts.
2. A one-seed grid (base, probe, one variant) through each executor (local, Ray, HF Jobs
   against the Hub stand-in of tests/, whose Jobs are local subprocesses): for every cell the
   time from submission to its result minus the cell's own evaluation time, i.e. what the
   executor adds (worker start, imports, model load, shipping files, polling).

The adapter is trained once (``--steps``, default 30) unless ``--adapter`` names one. Figures
depend on the machine and its load; run on an idle one.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradience_hub.bench.cells import Cell, CellResult  # noqa: E402
from gradience_hub.bench.config import config_from_dict  # noqa: E402
from gradience_hub.bench.protocol import run_bench  # noqa: E402


def timed(executor: Any, log: list[tuple[float, CellResult]]) -> Any:
    """Wrap ``executor.map`` to log when each result arrives (seconds after submission)."""
    inner = executor.map

    def mapped(cells: Sequence[Cell], runner: Callable[[Cell], CellResult]) -> Iterator[CellResult]:
        start = time.perf_counter()
        for result in inner(cells, runner):
            log.append((time.perf_counter() - start, result))
            yield result

    executor.map = mapped
    return executor


def grid_config(**changes: Any) -> Any:
    data = yaml.safe_load((ROOT / "examples" / "embedded-sentiment.yaml").read_text())
    data.update(changes)
    return config_from_dict(data)


def train(out: Path, steps: int) -> Path:
    from gradience_hub.bench.tasks import load_task
    from gradience_hub.bench.train import train_adapter

    data = yaml.safe_load((ROOT / "examples" / "embedded-sentiment.yaml").read_text())
    data["train"]["steps"] = steps
    config = config_from_dict(data)
    train_adapter(config, load_task(config), 0, out, "cpu", progress=False)
    return out


def overhead(log: list[tuple[float, CellResult]], parallel: int, grouped: bool) -> str:
    """Per cell: arrival - the cell's own time (loading its model and scoring), over the cells
    that started at once; a grouped Job runs its cells one after another, so its overhead per
    cell is (its wall time - the cells' own time) / cells."""
    if grouped:
        wall = max(at for at, _ in log)
        own = sum(result.eval_seconds for _, result in log)
        return f"{(wall - own) / len(log):.1f}s per cell ({len(log)} cells in one Job, {wall:.1f}s)"
    first = sorted(log, key=lambda item: item[0])[:parallel]
    values = [at - result.eval_seconds for at, result in first]
    return f"{statistics.mean(values):.1f}s (cells: " + ", ".join(f"{v:.1f}" for v in values) + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", type=Path, help="an embedded-task adapter (default: train)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--skip-grid", action="store_true", help="only the per-cell overheads")
    args = parser.parse_args()
    import ray

    from gradience_hub.bench.executors.hf_jobs import HFJobsExecutor
    from gradience_hub.bench.executors.ray_exec import RayExecutor

    tmp = Path(tempfile.mkdtemp(prefix="executor-speed-"))
    adapter = args.adapter or train(tmp / "adapter", args.steps)
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)

    if not args.skip_grid:
        print("Embedded posthoc grid (examples/embedded-sentiment.yaml: 3 seeds, 3 variants):")
        walls = {}
        for name, executor in (
            ("local", None),
            (f"ray ({args.ray_cpus} CPUs)", RayExecutor(cpus_per_cell=1)),
        ):
            started = time.perf_counter()
            record = run_bench(
                str(adapter), grid_config(), tmp / name.split()[0], executor=executor, device="cpu"
            )
            walls[name] = time.perf_counter() - started
            verdicts = {v.name: v.verdict for v in record.variants}
            print(f"  {name:<16} {walls[name]:6.1f}s  status {record.status}  {verdicts}")
        a = json.loads((tmp / "local" / "bench.json").read_text())
        b = json.loads((tmp / "ray" / "bench.json").read_text())
        for doc in (a, b):
            doc.pop("created_at"), doc.pop("environment", None)
        print(f"  same bench.json: {a == b}")

    print("Per-cell overhead, submit to result minus the cell's own time:")
    # base, probe and one variant, on one seed's sample
    small = {"seeds": [1], "compression": {"variants": [{"name": "r4", "rank": 4}]}}
    runs: list[tuple[str, Any, int, bool]] = [
        ("local", None, 1, False),
        (f"ray ({args.ray_cpus} CPUs)", RayExecutor(cpus_per_cell=1), args.ray_cpus, False),
    ]
    import pytest

    from tests.hubserver import HubServer, configure_client
    from tests.hubserver_jobs import jobs_of

    hub = HubServer()
    hub.add_user("bench", "hf_bench_token")
    hub.start()
    jobs_of(hub).base_env["PYTHONPATH"] = str(ROOT)
    patch = pytest.MonkeyPatch()
    configure_client(patch, hub, tmp / "hf_home")  # huggingface_hub is imported already
    for per in ("cell", "seed"):
        jobs = HFJobsExecutor(flavor="cpu-basic", job_per=per, poll_interval=0.5)
        runs.append((f"hf-jobs, a Job per {per} (stand-in)", jobs, 3, per == "seed"))
    try:
        for i, (name, executor, parallel, grouped) in enumerate(runs):
            log: list[tuple[float, CellResult]] = []
            engine = timed(executor or _local(), log)
            config = grid_config(**copy.deepcopy(small))
            run_bench(str(adapter), config, tmp / f"overhead-{i}", executor=engine, device="cpu")
            print(f"  {name:<36} {overhead(log, parallel, grouped)}")
    finally:
        jobs_of(hub).shutdown()
        hub.stop()
        patch.undo()
        ray.shutdown()


def _local() -> Any:
    from gradience_hub.bench.cells import LocalExecutor

    return LocalExecutor()


if __name__ == "__main__":
    main()
