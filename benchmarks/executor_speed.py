"""Executor speed: the embedded posthoc grid locally vs through Ray, and each executor's
per-cell overhead (submit to result) in seconds.

    PYTHONPATH=. python benchmarks/executor_speed.py [--adapter DIR] [--ray-cpus 2]

1. The grid of examples/embedded-sentiment.yaml (3 seeds x (probe + 3 variants) = 12 cells,
   300 eval examples each) with the local executor, then with Ray (a local Ray of
   ``--ray-cpus`` CPUs, one CPU per cell): wall time of each and the bench.json verdicts.
2. A one-seed grid (probe + one variant) through each executor (local, Ray, Hugging Face Jobs
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


def overhead(log: list[tuple[float, CellResult]], parallel: int) -> str:
    """Per cell: arrival - own eval time (cells that waited for a worker excluded)."""
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
        print("Embedded posthoc grid (3 seeds x (probe + 3 variants), 300 examples per cell):")
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

    print("Per-cell overhead, submit to result minus the cell's own evaluation:")
    small = {"seeds": [1], "compression": {"variants": [{"name": "r4", "rank": 4}]}}
    runs: list[tuple[str, Any, int]] = [
        ("local", None, 1),
        ("ray", RayExecutor(cpus_per_cell=1), args.ray_cpus),
    ]
    from tests.hubserver import HubServer
    from tests.hubserver_jobs import jobs_of

    hub = HubServer()
    hub.add_user("bench", "hf_bench_token")
    hub.start()
    jobs_of(hub).base_env["PYTHONPATH"] = str(ROOT)
    import os

    os.environ.update(
        {k: v for k, v in hub.subprocess_env().items() if k.startswith(("HF_", "NO_PROXY"))}
    )
    for per in ("cell", "seed"):
        jobs = HFJobsExecutor(flavor="cpu-basic", job_per=per, poll_interval=0.5)
        runs.append((f"hf-jobs per {per} (stand-in)", jobs, 2 if per == "cell" else 1))
    try:
        for name, executor, parallel in runs:
            log: list[tuple[float, CellResult]] = []
            engine = timed(executor or _local(), log)
            run_bench(
                str(adapter),
                grid_config(**copy.deepcopy(small)),
                tmp / f"overhead-{name.split()[0]}-{len(log)}-{time.time():.0f}",
                executor=engine,
                device="cpu",
            )
            print(f"  {name:<28} {overhead(log, parallel)}")
    finally:
        jobs_of(hub).shutdown()
        hub.stop()
        ray.shutdown()


def _local() -> Any:
    from gradience_hub.bench.cells import LocalExecutor

    return LocalExecutor()


if __name__ == "__main__":
    main()
