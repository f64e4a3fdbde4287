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
from gradience_hub.bench.config import (
    EMBEDDED_MODEL,
    SUGGESTED_VARIANTS,
    BenchConfig,
    config_from_dict,
)
from gradience_hub.bench.variants import VariantPlan
from gradience_hub.errors import ConfigError

SPEC_SCHEMA = "gradience-hub/cell-inputs/v1"
CONFIG_PREFIX = "config"
# The config's local paths are read as relative to this (never written) file in CONFIG_PREFIX.
CONFIG_NAME = "bench.yaml"
# The most bytes of local files one config path may send to remote cells (held in memory).
MAX_PACKED = 2 * 2**30
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


def localize(runner: CellRunner, root: Path, **changes: Any) -> CellRunner:
    """A copy of ``runner`` whose paths point under ``root`` (laid out as the sources of
    :func:`cell_sources`), with ``changes`` (a config read from ``root``, say)."""
    return runner.unloaded_copy(
        **changes,
        output_dir=root / OUT_PREFIX,
        probe_dir=root / PROBE_PREFIX if runner.probe_dir is not None else None,
        adapter_dirs={name: root / OUT_PREFIX / name for name in runner.adapter_dirs},
        base_dirs={key: root / BASE_PREFIX / key for key in runner.base_dirs},
        progress=False,
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
    reads back into an equal config (local paths as written: see :func:`pack_config` for a
    config that travels to another machine)."""
    data = config.to_dict()
    if config.task.lm_eval is not None:
        # Derived from task.lm_eval.metric on reading; the reader refuses it beside lm_eval.
        data["task"].pop("metric", None)
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


def _too_big(key: str, path: Path, size: int) -> ConfigError:
    return ConfigError(
        f"bench config: {key} {path} is {size / 2**30:.1f} GiB, more than the "
        f"{MAX_PACKED / 2**30:.0f} GiB of local files a remote cell is sent",
        hint=f"upload it to the Hub and name its repo id in {key}",
        key=key,
    )


def _tree(root: Path, key: str) -> dict[str, bytes]:
    """Every regular file under ``root`` (a file: itself) by its POSIX path relative to
    ``root``'s parent; a symlink out of ``root`` is refused, naming it."""
    if root.is_file():
        if root.stat().st_size > MAX_PACKED:
            raise _too_big(key, root, root.stat().st_size)
        return {root.name: root.read_bytes()}
    base = root.resolve()
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        if base not in path.resolve().parents:
            raise ConfigError(
                f"bench config: {key} {root} holds {path}, a link to a file outside it, which "
                "a remote cell could not read",
                hint=f"copy that file into {root}",
                key=key,
            )
        total += path.stat().st_size
        if total > MAX_PACKED:
            raise _too_big(key, root, total)
        files[f"{root.name}/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    return files


def _yaml_files(value: Any) -> list[str]:
    """The paths of a task YAML's ``dataset_kwargs.data_files`` (a string, list or mapping)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [p for item in value for p in _yaml_files(item)]
    if isinstance(value, dict):
        return [p for item in value.values() for p in _yaml_files(item)]
    return []


def _check_task_files(folder: Path, key: str) -> None:
    """Every local ``data_files`` path of the task YAMLs in ``folder`` must lie inside it (it
    travels with the folder); one outside it, absolute or ``../``, is refused, naming it."""
    import yaml

    class _Lenient(yaml.SafeLoader):
        """lm-eval's YAMLs use tags (``!function utils.f``) that need no resolving here."""

    _Lenient.add_multi_constructor("!", lambda loader, suffix, node: None)
    root = folder.resolve()
    for path in sorted(folder.rglob("*.y*ml")):
        try:
            # a SafeLoader subclass: nothing is constructed but plain data
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Lenient)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # lm-eval reports a broken YAML itself, in the cell
        kwargs = doc.get("dataset_kwargs") if isinstance(doc, dict) else None
        if not isinstance(kwargs, dict):
            continue
        for name in _yaml_files(kwargs.get("data_files")):
            if "://" in name:
                continue  # a URL (hf://, https://): the remote worker reads it itself
            target = Path(name).expanduser()
            target = target if target.is_absolute() else path.parent / target
            if target.exists() and root not in target.resolve().parents:
                raise ConfigError(
                    f"bench config: {path.name} in {key} reads {name}, a file outside "
                    f"{folder}, which a remote cell could not read",
                    hint=f"move it into {folder} and name it relative to {path.name}",
                    key=key,
                )


def pack_config(
    config: BenchConfig, *, local_model: bool = False
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``config`` for a machine without this one's files: its data (:func:`config_data`) with
    every local path it names replaced by a path under :data:`CONFIG_PREFIX`, and those files
    ``{path under CONFIG_PREFIX: bytes}``. :func:`config_from_data` reads it back.

    Local paths are ``task.lm_eval.include_path`` (the folder, with the data files its task
    YAMLs name), ``task.train`` and ``task.dataset``. A local ``model.name_or_path`` is refused
    (a base model is gigabytes: it goes to the Hub), unless ``local_model`` (Ray: then it is
    kept as its absolute path, read where the worker runs, as on a one-machine cluster or a
    shared filesystem); so is any file a path reaches outside its folder. Every refusal is a
    ConfigError naming the key and the path.
    """
    from gradience_hub.bench.tasks import resolve_path

    data = config_data(config)
    files: dict[str, bytes] = {}
    model = config.model.name_or_path
    local = resolve_path(model, config) if model != EMBEDDED_MODEL else None
    if local is not None and local_model:
        data["model"]["name_or_path"] = str(local)
    elif local is not None:
        raise ConfigError(
            f"bench config: model.name_or_path {model} is a local directory, which a remote "
            "cell cannot read",
            hint="upload the model to the Hub (hf upload ORG/NAME DIR) and name its repo id",
            key="model.name_or_path",
        )
    spec = config.lm_eval_spec()
    if spec is not None and spec.include_path is not None:
        key = "task.lm_eval.include_path"
        _check_task_files(spec.include_path, key)
        tree = _tree(spec.include_path, key)
        files.update({f"include_path/{name}": blob for name, blob in tree.items()})
        data["task"]["lm_eval"]["include_path"] = f"include_path/{spec.include_path.name}"
    for name in ("train", "dataset"):
        value = getattr(config.task, name)
        local = resolve_path(value, config) if value else None
        if local is None:
            continue  # a datasets id: the remote worker loads it from the Hub
        tree = _tree(local, f"task.{name}")
        files.update({f"{name}/{path}": blob for path, blob in tree.items()})
        data["task"][name] = f"{name}/{local.name}"
    return data, files


def config_from_data(data: Any, root: Path) -> BenchConfig:
    """The config of :func:`pack_config`, its files under ``root / CONFIG_PREFIX``."""
    return config_from_dict(data, path=root / CONFIG_PREFIX / CONFIG_NAME)


def runner_inputs(runner: CellRunner) -> tuple[dict[str, Any], dict[str, bytes]]:
    """What a Job needs besides the adapters: :func:`runner_spec` and the config's local
    files, by their path in the inputs (under :data:`CONFIG_PREFIX`)."""
    data, files = pack_config(runner.config)
    spec = runner_spec(runner)
    spec["config"] = data
    return spec, {f"{CONFIG_PREFIX}/{name}": blob for name, blob in files.items()}


def runner_spec(runner: CellRunner) -> dict[str, Any]:
    """The JSON form of a runner (a Job's inputs; paths excluded: they are the worker's; the
    config's local files travel beside it: :func:`runner_inputs`)."""
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
    """The runner of :func:`runner_spec`, with its files under ``root`` (the config's under
    ``root / CONFIG_PREFIX``: download them first, the config checks that they exist)."""
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
            config=config_from_data(spec["config"], root),
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
