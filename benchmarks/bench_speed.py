"""Wall times of the bench protocols on the embedded task (figures, not pass/fail).

    .venv/bin/python benchmarks/bench_speed.py [--only posthoc|retrain] [--output DIR]
        [--adapter DIR] [--before REV] [--rounds N]

- posthoc, before vs after: the posthoc bench of the embedded task (3 seeds, 3 variants
  uniform_median, uniform_p90, per_layer, of a LoRA r=16 adapter trained first, its training
  timed separately), run side by side on the same adapter and config by the code at ``--before``
  (default: the commit before the one-pass posthoc; checked out with ``git archive`` into a
  temporary directory and run with PYTHONPATH there) and by this checkout. "After" includes the
  new base-model control. Each run is its own process; rounds alternate before/after and the
  best of each is reported (the machine may be shared). Target: after at least 2x faster.
- retrain: embedded task, 3 seeds x (probe + 3 variants) trainings and evaluations.
  Target <= 6 minutes.

Both use examples/embedded-sentiment.yaml (the demo's settings) on the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "embedded-sentiment.yaml"
# The last commit before posthoc scored each (model, example) once (one cell per variant and
# seed, the base model reloaded per cell, no base-model control).
BEFORE = "04580c5"
TARGET_SPEEDUP = 2.0

# Run in a fresh process with PYTHONPATH set to the code under test; prints the seconds of
# run_bench alone and the record's status. The libraries both versions use are imported before
# the clock starts (run_bench would import them lazily: ~7 s here, the same for both, and not
# what is compared); the parent also reports each process's whole wall time.
CHILD = """
import sys, time
import peft, torch, transformers
from transformers.models.bert import modeling_bert
from gradience_hub.bench.config import load_config
from gradience_hub.bench.protocol import run_bench
config = load_config(sys.argv[1])
start = time.perf_counter()
record = run_bench(sys.argv[2], config, sys.argv[3], "posthoc", device="cpu", progress=False)
import gradience_hub
print(f"{time.perf_counter() - start:.3f} {record.status} {gradience_hub.__file__}")
"""


def _shared_config(out: Path) -> Path:
    """The example config without the keys the previous code does not know (``rule``,
    ``seed_max_drop``: their defaults are the previous behaviour), for both runs."""
    import yaml

    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    for key in ("rule", "seed_max_drop"):
        data.get("policy", {}).pop(key, None)
    path = out / "bench-speed.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _posthoc(code_dir: Path, config: Path, adapter: Path, out: Path) -> tuple[float, str, float]:
    """run_bench's seconds, the record's status and the whole process's wall time."""
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(config), str(adapter), str(out)],
        env=env,
        # `python -c` puts the working directory first on sys.path: run where no other
        # gradience_hub can shadow the one under test
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"posthoc run with {code_dir} failed:\n{result.stderr[-2000:]}")
    seconds, status, module = result.stdout.split()[-3:]
    if not Path(module).resolve().is_relative_to(code_dir.resolve()):
        raise SystemExit(f"the run imported {module}, not the code in {code_dir}")
    return float(seconds), status, wall


def _checkout(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "gradience_hub"],
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["posthoc", "retrain"])
    parser.add_argument("--output", help="keep the outputs here (default: a temporary dir)")
    parser.add_argument("--adapter", help="a trained embedded-task adapter (skip training)")
    parser.add_argument("--before", default=BEFORE, help="the code to compare with (git rev)")
    parser.add_argument("--rounds", type=int, default=2, help="before/after pairs to run")
    args = parser.parse_args()

    import torch

    from gradience_hub.bench.config import load_config
    from gradience_hub.bench.protocol import run_bench
    from gradience_hub.bench.tasks import load_task
    from gradience_hub.bench.train import train_adapter

    tmp = tempfile.TemporaryDirectory(prefix="gradience-bench-speed-")
    out = Path(args.output) if args.output else Path(tmp.name)
    out.mkdir(parents=True, exist_ok=True)
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
        adapter = Path(args.adapter) if args.adapter else out / "adapter"
        if not args.adapter:
            start = time.perf_counter()
            train_adapter(config, load_task(config), 42, adapter, "cpu", progress=False)
            figures.append(f"train adapter   {time.perf_counter() - start:7.1f} s  (seed 42)")
        before_dir = _checkout(args.before, out / "before-code")
        shared = _shared_config(out)
        before, after = [], []
        for i in range(args.rounds):
            before.append(_posthoc(before_dir, shared, adapter, out / f"before-{i}"))
            after.append(_posthoc(ROOT, shared, adapter, out / f"after-{i}"))
        b, a = min(t for t, _, _ in before), min(t for t, _, _ in after)
        b_wall, a_wall = min(w for _, _, w in before), min(w for _, _, w in after)
        n = len(config.seeds)
        v = len(config.compression.variants)
        figures.append(
            f"posthoc before  {b:7.1f} s  ({args.before}: {n * (1 + v)} cells, base reloaded "
            f"per cell, no base control; {before[0][1]})"
        )
        figures.append(
            f"posthoc after   {a:7.1f} s  (this code: {2 + v} cells over the pooled samples, "
            f"base loaded once, with the base-model control; {after[0][1]})"
        )
        speedup = b / a
        verdict = "met" if speedup >= TARGET_SPEEDUP else "MISSED"
        figures.append(
            f"posthoc speedup {speedup:7.2f} x  (target >= {TARGET_SPEEDUP:.0f}x: {verdict}; "
            f"best of {args.rounds} alternating rounds each)"
        )
        figures.append(
            f"whole process   {b_wall:7.1f} s before, {a_wall:7.1f} s after: "
            f"{b_wall / a_wall:.2f} x (library imports included)"
        )
    if args.only in (None, "retrain"):
        start = time.perf_counter()
        record = run_bench(None, config, out / "retrain", "retrain", device="cpu", progress=False)
        cells = len(config.seeds) * (1 + len(record.variants))
        seconds = time.perf_counter() - start
        figures.append(
            f"retrain         {seconds:7.1f} s  ({cells} trainings + evaluations; "
            f"{record.status}; target <= 360 s: {'met' if seconds <= 360 else 'MISSED'})"
        )
    print()
    print("\n".join(figures))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
