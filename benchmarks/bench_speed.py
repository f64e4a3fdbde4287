"""Wall times of the two bench protocols on the embedded task (figures, not pass/fail).

    .venv/bin/python benchmarks/bench_speed.py [--only posthoc|retrain] [--output DIR]

- posthoc: embedded task, 3 seeds, 3 variants (uniform_median, uniform_p90, per_layer) of a
  LoRA r=16 adapter trained first (its training is timed separately). Target <= 60 s.
- retrain: embedded task, 3 seeds x (probe + 3 variants) = 12 trainings and evaluations.
  Target <= 6 minutes.

Both use examples/embedded-sentiment.yaml (the demo's settings) on the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "embedded-sentiment.yaml"
TARGETS = {"posthoc": 60.0, "retrain": 360.0}


def _line(name: str, seconds: float, detail: str) -> str:
    target = TARGETS.get(name)
    verdict = "" if target is None else f"  (target <= {target:.0f} s: "
    if target is not None:
        verdict += "met)" if seconds <= target else "MISSED)"
    return f"{name:<14} {seconds:7.1f} s  {detail}{verdict}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["posthoc", "retrain"])
    parser.add_argument("--output", help="keep the outputs here (default: a temporary dir)")
    args = parser.parse_args()

    import torch

    from gradience_hub.bench.config import load_config
    from gradience_hub.bench.protocol import run_bench
    from gradience_hub.bench.tasks import load_task
    from gradience_hub.bench.train import train_adapter

    tmp = tempfile.TemporaryDirectory(prefix="gradience-bench-speed-")
    out = Path(args.output) if args.output else Path(tmp.name)
    config = load_config(CONFIG)
    lora, train = config.require_training("the speed benchmark")
    print(
        f"gradience-hub bench speed: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(
        f"config {CONFIG.relative_to(ROOT)}: lora r={lora.r}, {train.steps} steps "
        f"x batch {train.batch_size}, {config.task.eval_samples} eval examples per seed, "
        f"seeds {config.seeds}"
    )
    figures = []
    if args.only in (None, "posthoc"):
        start = time.perf_counter()
        adapter = out / "adapter"
        train_adapter(config, load_task(config), 42, adapter, "cpu", progress=False)
        figures.append(_line("train adapter", time.perf_counter() - start, "1 training (seed 42)"))
        start = time.perf_counter()
        record = run_bench(
            str(adapter), config, out / "posthoc", "posthoc", device="cpu", progress=False
        )
        cells = len(config.seeds) * (1 + len(record.variants))
        figures.append(
            _line(
                "posthoc",
                time.perf_counter() - start,
                f"{cells} cells: audit, 3 compressions, {cells} evaluations; {record.status}",
            )
        )
    if args.only in (None, "retrain"):
        start = time.perf_counter()
        record = run_bench(None, config, out / "retrain", "retrain", device="cpu", progress=False)
        cells = len(config.seeds) * (1 + len(record.variants))
        figures.append(
            _line(
                "retrain",
                time.perf_counter() - start,
                f"{cells} cells: {cells} trainings + evaluations; {record.status}",
            )
        )
    print()
    print("\n".join(figures))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
