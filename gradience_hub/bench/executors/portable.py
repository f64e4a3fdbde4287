"""Cells without a shared filesystem: what a remote worker needs, and what comes back.

A remote cell (a Ray task, a Hugging Face Job) cannot read the driver's ``OUTPUT`` directory
or SOURCE. The driver packs the adapter directories a cell evaluates as ``{path: bytes}``
(:func:`cell_sources`, :func:`dir_files`); the worker writes them under a fresh root, points a
copy of the runner at it (:func:`localize`), runs the cell with the local code path and packs
any adapter it trained (:func:`run_portable`); the driver writes that adapter where the local
executor would have (``OUTPUT/retrain/<cell>/``) and reports the cell as the local executor
does (:func:`adopt`). For Jobs, whose inputs cross a trust boundary, the runner travels as JSON
(:func:`runner_spec` / :func:`runner_from_spec`), never as a pickle.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath
from typing import Any

from gradience_hub.bench.cells import BASE, PROBE, RETRAIN_DIR, Cell, CellResult, CellRunner
from gradience_hub.bench.config import SUGGESTED_VARIANTS, BenchConfig, config_from_dict
from gradience_hub.bench.variants import VariantPlan
from gradience_hub.errors import ConfigError

SPEC_SCHEMA = "gradience-hub/cell-inputs/v1"
PROBE_PREFIX = "probe"
OUT_PREFIX = "out"
BASE_PREFIX = "base"


# --------------------------------------------------------------------------- files


def dir_files(path: Path) -> dict[str, bytes]:
    """The regular files directly in ``path`` (an adapter directory) by name."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def safe_relpath(name: str) -> str:
    """``name`` as a relative POSIX path inside a root, or ConfigError (no ``..``, no
    absolute path: packed files come from another machine)."""
    p = PurePosixPath(name)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts):
        raise ConfigError(f"refusing the packed file path {name!r}", key="")
    return str(p)


def write_files(files: dict[str, bytes], root: Path) -> None:
    """Write ``{relative path: bytes}`` under ``root``."""
    for name, data in files.items():
        target = root / safe_relpath(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def cell_sources(runner: CellRunner, cell: Cell) -> dict[str, Path]:
    """The driver's adapter directories ``cell`` reads, by their prefix in a worker root."""
    if cell.variant == BASE:  # the base model, or its zero-update copy that keeps a head
        where = runner.base_dirs.get(cell.key)
        return {} if where is None else {f"{BASE_PREFIX}/{cell.key}": where}
    if runner.protocol == "retrain":
        return {}  # trains from the config; the probe audit's plan is in the runner
    if cell.variant == PROBE:
        assert runner.probe_dir is not None
        return {PROBE_PREFIX: runner.probe_dir}
    return {f"{OUT_PREFIX}/{cell.variant}": runner.adapter_dirs[cell.variant]}


def localize(runner: CellRunner, root: Path) -> CellRunner:
    """A copy of ``runner`` whose paths point under ``root`` (laid out as the sources of
    :func:`cell_sources`)."""
    return dataclasses.replace(
        runner,
        output_dir=root / OUT_PREFIX,
        probe_dir=root / PROBE_PREFIX if runner.probe_dir is not None else None,
        adapter_dirs={name: root / OUT_PREFIX / name for name in runner.adapter_dirs},
        base_dirs={key: root / BASE_PREFIX / key for key in runner.base_dirs},
        progress=False,
        _task=None,
        _pool=None,
    )


def trained_dir(runner: CellRunner, cell: Cell) -> Path | None:
    """Where the retrain protocol writes the adapter ``cell`` trains (None for posthoc)."""
    if runner.protocol != "retrain" or cell.variant == BASE:
        return None
    return runner.output_dir / RETRAIN_DIR / cell.key


def run_portable(runner: CellRunner, cell: Cell) -> tuple[CellResult, dict[str, bytes]]:
    """Run ``cell`` with an already localized runner; return its result and the files of the
    adapter it trained (empty for posthoc)."""
    result = runner(cell)
    where = trained_dir(runner, cell)
    return result, (dir_files(where) if where is not None and where.is_dir() else {})


def adopt(runner: CellRunner, cell: Cell, result: CellResult, trained: dict[str, bytes]) -> None:
    """On the driver: write the trained adapter where the local executor would have, and
    name the cell's adapter as the local executor does."""
    where = trained_dir(runner, cell)
    if where is not None:
        if trained:
            where.mkdir(parents=True, exist_ok=True)
            write_files(trained, where)
        local = where
    else:
        sources = list(cell_sources(runner, cell).values())
        if not sources:  # the base model itself: no adapter directory
            result.adapter = ""
            return
        local = sources[0]
    try:
        result.adapter = str(local.relative_to(runner.output_dir))
    except ValueError:
        result.adapter = str(local)


# --------------------------------------------------------------------------- JSON spec


def config_data(config: BenchConfig) -> dict[str, Any]:
    """``config`` as the YAML mapping :func:`~gradience_hub.bench.config.config_from_dict`
    reads back into an equal config."""
    data = config.to_dict()
    variants = []
    for spec in config.compression.variants:
        if spec.kind in SUGGESTED_VARIANTS:
            variants.append(spec.kind)  # a suggested variant is named after its kind
        else:
            item = {"name": spec.name, "rank": spec.rank}
            item.update(rank_pattern=spec.rank_pattern, energy=spec.energy)
            variants.append({k: v for k, v in item.items() if v is not None})
    data["compression"]["variants"] = variants
    return {k: v for k, v in data.items() if v is not None}


def runner_spec(runner: CellRunner) -> dict[str, Any]:
    """The JSON form of a runner (a Job's inputs; paths excluded: they are the worker's)."""
    return {
        "schema": SPEC_SCHEMA,
        "protocol": runner.protocol,
        "config": config_data(runner.config),
        "plans": {key: dataclasses.asdict(plan) for key, plan in runner.plans.items()},
        "variants": sorted(runner.adapter_dirs),
        "bases": sorted(runner.base_dirs),
        "has_probe": runner.probe_dir is not None,
        "probe_params": runner.probe_params,
    }


def runner_from_spec(spec: dict[str, Any], root: Path, device: str) -> CellRunner:
    """The runner of :func:`runner_spec`, with its files under ``root``."""
    if not isinstance(spec, dict) or spec.get("schema") != SPEC_SCHEMA:
        raise ConfigError(
            f"the cell inputs are not {SPEC_SCHEMA}",
            hint="the image and the driver must run the same gradience-hub version",
            key="",
        )
    try:
        plans = {key: VariantPlan(**plan) for key, plan in spec["plans"].items()}
        return CellRunner(
            protocol=str(spec["protocol"]),
            config=config_from_dict(spec["config"]),
            output_dir=root / OUT_PREFIX,
            device=device,
            probe_dir=root / PROBE_PREFIX if spec["has_probe"] else None,
            plans=plans,
            adapter_dirs={str(name): root / OUT_PREFIX / str(name) for name in spec["variants"]},
            base_dirs={str(key): root / BASE_PREFIX / str(key) for key in spec["bases"]},
            probe_params=int(spec["probe_params"]),
            progress=False,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"the cell inputs are malformed: {exc}", key="") from None
