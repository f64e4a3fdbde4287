"""``gradience-hub bench-cell``: what a Hugging Face Job runs for one or more cells.

It reads the cells' inputs (``spec.json`` and the adapter directories the cells evaluate)
from the scratch repo at a fixed revision, or from a local directory laid out the same way,
runs each cell with the local code path (:class:`~gradience_hub.bench.cells.CellRunner`) and
prints each result as one line ``GRADIENCE_CELL_RESULT {json}`` (flushed at once, so a Job
that dies later still returns the cells it finished). An adapter a cell trained (retrain) is
committed to the scratch repo under ``results/<cell>/`` and the line names that commit.
The token is the one huggingface_hub finds (``HF_TOKEN``, a Job secret); nothing here prints
it.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from gradience_hub.bench.cells import Cell
from gradience_hub.bench.executors import portable
from gradience_hub.bench.executors.hf_jobs import result_line
from gradience_hub.errors import ConfigError, UsageError


def parse_cell(key: str) -> Cell:
    """A cell key: ``variant__seed`` (a cell per seed) or ``variant`` (a seed-free cell)."""
    variant, sep, seed = key.rpartition("__")
    if not sep:
        variant, seed = key, ""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", variant) or (sep and not seed.isdigit()):
        raise UsageError(
            f"--cell must be VARIANT or VARIANT__SEED, got {key!r}", hint="--cell probe__42"
        )
    return Cell(variant, int(seed) if sep else None)


def run_cells(
    inputs: str,
    revision: str | None,
    keys: Sequence[str],
    device: str | None,
    echo: Callable[[str], None],
) -> int:
    """Run the cells ``keys`` from ``inputs`` (a scratch repo id, or a local directory);
    returns how many ran."""
    from gradience_hub.bench.train import require_bench_extra, resolve_device

    require_bench_extra()
    cells = [parse_cell(key) for key in keys]
    if not cells:
        raise UsageError("bench-cell needs at least one --cell", hint="--cell probe__42")
    local = Path(inputs)
    with tempfile.TemporaryDirectory(prefix="gradience-cell-") as tmp:
        root = local if local.is_dir() else Path(tmp)
        if not local.is_dir():
            from gradience_hub import hub

            if not revision:
                raise UsageError("--revision is needed with a Hub --inputs repo")
            # the config's local files first: reading the config checks that they exist
            hub.download_files(inputs, revision, ["spec.json", f"{portable.CONFIG_PREFIX}/*"], root)
        try:
            spec = json.loads((root / "spec.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the cell inputs' spec.json: {exc}", key="") from None
        runner = portable.runner_from_spec(spec, root, resolve_device(device))
        if not local.is_dir():
            patterns = [f"{prefix}/*" for c in cells for prefix in portable.cell_sources(runner, c)]
            if patterns:
                hub.download_files(inputs, revision or "", patterns, root)
        for cell in cells:
            result, trained = portable.run_portable(runner, cell)
            adapter = None
            if trained and not local.is_dir():
                path = f"results/{cell.key}"
                sha = hub.upload_files(
                    inputs,
                    {f"{path}/{name}": data for name, data in trained.items()},
                    f"gradience-hub bench: trained adapter of cell {cell.key}",
                )
                adapter = {"revision": sha, "path": path}
            task = {"pool_size": len(runner.task.eval_pool), "warnings": runner.task.warnings}
            echo(result_line(cell.key, result, adapter, task))
    return len(cells)
