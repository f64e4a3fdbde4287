"""Bench protocols: grids of independent cells (variant x seed) run by an executor.

``posthoc`` (the default when SOURCE is a trained adapter)
    Audit SOURCE, write each compressed variant (from the audit's suggestions or explicit
    ranks) under ``OUTPUT/<variant>/``, then score the base-model control (the base model
    without the LoRA update; an adapter's trained task head is kept, written as the zero-update
    copy ``OUTPUT/base/``), the adapter ("probe") and every variant. None of them depends on
    the seed, so each is one cell that scores the union of the seeds' samples once (the base
    model loaded once per process, adapters swapped with peft); each seed's numbers are read
    from that pool.

``retrain`` (the seed article's protocol; SOURCE is optional and its weights are not used)
    Stage 1, per seed: train the probe at ``lora.r``, save it under
    ``OUTPUT/retrain/probe__<seed>/``, audit it and score it on the seed's sample. Stage 2: the
    base-model control (once on the union of the samples, or per seed as that probe's
    zero-update copy when it carries a head), and per variant and seed: train
    from scratch at the ranks planned from *that seed's* probe audit (uniform ``r`` or a
    per-layer ``rank_pattern``), score. Variants keep the probe's ``alpha / r``.

Every finished cell is written to ``OUTPUT/cells/<key>.json`` at once, so a killed
run continues with ``resume=True`` from the saved cells; ``OUTPUT/cells/run.json`` holds a
fingerprint of everything the cells depend on (config without seeds and policy, SOURCE's
weights, protocol, device) and a resume with a different fingerprint is refused. Seeds make
cells reproducible: the same seed gives the same numbers, resumed or not.

The cells, the executor interface and the cell store are in :mod:`gradience_hub.bench.cells`;
:mod:`gradience_hub.bench.judge` turns the finished cells into the record through the policy
(:mod:`gradience_hub.policy`: per-seed deltas, worst delta, pass rate, paired p-value,
verdict) and :mod:`gradience_hub.record`.

Output layout::

    OUTPUT/bench.json  bench.md  audit.json
    OUTPUT/<variant>/                 compressed adapters (posthoc)
    OUTPUT/base/                      the zero-update control, when the adapter has a head
    OUTPUT/retrain/<variant>__<seed>/ trained adapters, probes with their audit.json (retrain)
    OUTPUT/cells/                     finished cells and run.json (for --resume)
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradience_hub.bench.cells import (
    BASE,
    PROBE,
    RETRAIN_DIR,
    Cell,
    CellResult,
    CellRunner,
    CellStore,
    Echo,
    Executor,
    LocalExecutor,
    run_grid,
)
from gradience_hub.bench.config import BenchConfig, load_config, parse_seeds
from gradience_hub.bench.executors import driver_loads_task
from gradience_hub.bench.judge import RunResults, build_record, summary_dict
from gradience_hub.bench.variants import (
    VariantPlan,
    check_fits,
    needs_head,
    plan_variant,
    write_variant,
    write_zeroed,
)
from gradience_hub.errors import ConfigError, GradienceError, UsageError
from gradience_hub.identity import HASH_KEY

if TYPE_CHECKING:
    from gradience_hub.adapter import Adapter, SourceInfo
    from gradience_hub.audit import AuditReport
    from gradience_hub.record import BenchRecord

__all__ = [
    "BASE",
    "PROBE",
    "Cell",
    "CellResult",
    "CellRunner",
    "CellStore",
    "Executor",
    "LocalExecutor",
    "run_bench",
]


# --------------------------------------------------------------------------- helpers


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fingerprint(config: BenchConfig, protocol: str, device: str, source_digest: str) -> str:
    """What the cells depend on. Seeds are cells of their own and the policy only judges
    them, so neither is part of it: a resume may add seeds or change max_drop."""
    data = config.to_dict()
    for volatile in ("seeds", "policy", "protocol", "executor", "resources"):
        data.pop(volatile, None)
    doc = {"config": data, "protocol": protocol, "device": device, "source": source_digest}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _task_facts(task: Any, executor: Executor, warnings: list[str]) -> tuple[int, list[str]]:
    """The eval pool's size and the warnings, the task's first: from the task loaded here,
    else as the executor's workers reported them."""
    if task is not None:
        return len(task.eval_pool), warnings
    return int(executor.pool_size or 0), [*executor.task_warnings, *warnings]


# --------------------------------------------------------------------------- posthoc


def _write_variants(
    adapter: Adapter,
    report: AuditReport,
    config: BenchConfig,
    out: Path,
    skeleton: Any,
    warnings: list[str],
    echo: Echo,
) -> tuple[dict[str, VariantPlan], dict[str, Path]]:
    """Plan and write every compressed variant under ``OUTPUT/<variant>/``: the plans by cell
    key and the directories by variant name (a variant that compresses nothing is a warning)."""
    plans: dict[str, VariantPlan] = {}
    adapter_dirs: dict[str, Path] = {}
    for i, spec in enumerate(config.compression.variants):
        plan = plan_variant(
            spec, report, config.compression.allowed_ranks, f"compression.variants[{i}]"
        )
        if plan.params == plan.full_params:
            warnings.append(f"variant {spec.name} keeps every module's rank (no compression)")
        error = write_variant(adapter, plan, out / spec.name, skeleton)
        adapter_dirs[spec.name] = out / spec.name
        echo(
            f"Compressed {plan.label}: {plan.param_reduction * 100:.1f}% fewer LoRA params, "
            f"relative error {error:.3f} -> {out / spec.name}"
        )
        plans[Cell(spec.name).key] = plan
    return plans, adapter_dirs


def _posthoc_adapter(info: SourceInfo, config: BenchConfig, report: AuditReport) -> dict[str, Any]:
    """bench.json ``adapter`` for posthoc: SOURCE as loaded and audited."""
    return {
        "source": info.display,
        "revision": info.sha or info.revision,
        "base_model": config.model.name_or_path,
        "allocated_rank": report.summary.allocated_rank,
        "lora_params": report.summary.lora_params,
        # what annotate checks before publishing this record beside an adapter
        "content_sha256": report.source.get(HASH_KEY),
    }


def _posthoc(
    source: str,
    config: BenchConfig,
    out: Path,
    device: str,
    resume: bool,
    executor: Executor,
    echo: Echo,
    progress: bool,
) -> RunResults:
    from gradience_hub.audit import audit_adapter, format_text
    from gradience_hub.bench.tasks import load_task
    from gradience_hub.hub.source import load_adapter

    adapter, info = load_adapter(source)
    report = audit_adapter(adapter, info)
    # Dispatching Jobs from the slim image: the Jobs load the task and report its facts. The
    # task is loaded before anything is written, so a bad task leaves OUTPUT as it was.
    task = load_task(config, need_train=False) if driver_loads_task(executor) else None
    (out / "audit.json").write_text(report.to_json(), encoding="utf-8")
    echo(format_text(report))
    warnings: list[str] = []
    warnings += task.warnings if task is not None else []
    store = CellStore(out)
    store.start(
        _fingerprint(config, "posthoc", device, _file_digest(adapter.weights_path)), resume, echo
    )
    from gradience_hub.bench.train import model_skeleton

    # compress's peft reload check loads every variant onto this (meta device, no weights).
    skeleton = model_skeleton(config, task) if task is not None else None
    if skeleton is not None:
        check_fits(report, adapter, skeleton, config.model.name_or_path)
    base_dirs: dict[str, Path] = {}
    if needs_head(adapter):
        base_dirs[Cell(BASE).key] = write_zeroed(adapter, out / BASE)
    plans, adapter_dirs = _write_variants(adapter, report, config, out, skeleton, warnings, echo)
    runner = CellRunner(
        protocol="posthoc",
        config=config,
        output_dir=out,
        device=device,
        probe_dir=adapter.directory,
        plans=plans,
        adapter_dirs=adapter_dirs,
        base_dirs=base_dirs,
        probe_params=report.summary.lora_params,
        progress=progress,
    )
    runner.adopt(task, None)  # the task loaded for the audit, when this process loaded one
    # One cell per model: the base model, the adapter, each variant (seed-free in posthoc).
    cells = [Cell(name) for name in (BASE, PROBE, *(s.name for s in config.compression.variants))]
    results: dict[str, CellResult] = {}
    run_grid(cells, runner, executor, store, results, echo, len(cells))
    pool_size, warnings = _task_facts(task, executor, warnings)
    return RunResults(
        protocol="posthoc",
        config=config,
        output_dir=out,
        device=device,
        adapter=_posthoc_adapter(info, config, report),
        audit_summary=summary_dict(report),
        probe_rank=report.summary.allocated_rank,
        probe_params=report.summary.lora_params,
        plans=plans,
        results=results,
        pool_size=pool_size,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- retrain


def _refuse_rank_zero(config: BenchConfig) -> None:
    """A ConfigError for a rank-0 variant: there is nothing to train in retrain."""
    for i, spec in enumerate(config.compression.variants):
        if spec.rank == 0:
            raise ConfigError(
                f"variant {spec.name}: rank 0 (the no-update control) exists only in posthoc",
                hint="drop it from compression.variants or use --protocol posthoc",
                key=f"compression.variants[{i}].rank",
            )


@dataclass
class _Probes:
    """What the seeds' probe audits give stage 2: the variants' plans by cell key, the first
    seed's audit summary and LoRA params, and the per-seed base cells (probes with a head)."""

    plans: dict[str, VariantPlan] = field(default_factory=dict)
    first_summary: dict[str, Any] = field(default_factory=dict)
    probe_params: int = 0
    base_cells: list[Cell] = field(default_factory=list)


def _audit_probes(config: BenchConfig, out: Path, runner: CellRunner, echo: Echo) -> _Probes:
    """Audit each seed's trained probe (its audit.json beside it, the first seed's also as
    OUTPUT/audit.json) and plan that seed's variants from it; a probe with a head gets its
    zero-update copy as that seed's base-model control (in ``runner.base_dirs``)."""
    from gradience_hub.adapter import SourceInfo, open_adapter
    from gradience_hub.audit import audit_adapter, format_text

    probes = _Probes()
    for seed in config.seeds:
        probe_dir = out / RETRAIN_DIR / Cell(PROBE, seed).key
        probe = open_adapter(probe_dir)
        if needs_head(probe):
            # the base-model control keeps this seed's trained head: a per-seed cell
            key = Cell(BASE, seed).key
            runner.base_dirs[key] = write_zeroed(probe, out / RETRAIN_DIR / key)
            probes.base_cells.append(Cell(BASE, seed))
        report = audit_adapter(probe, SourceInfo("local", str(probe_dir)))
        (probe_dir / "audit.json").write_text(report.to_json(), encoding="utf-8")
        if not probes.first_summary:
            probes.first_summary = summary_dict(report)
            probes.probe_params = report.summary.lora_params
            (out / "audit.json").write_text(report.to_json(), encoding="utf-8")
            echo(f"Audit of the seed-{seed} uncompressed adapter:")
            echo(format_text(report))
        for i, spec in enumerate(config.compression.variants):
            probes.plans[Cell(spec.name, seed).key] = plan_variant(
                spec, report, config.compression.allowed_ranks, f"compression.variants[{i}]"
            )
    return probes


def _rank_disagreements(config: BenchConfig, plans: dict[str, VariantPlan]) -> list[str]:
    """A warning per variant whose seeds' audits planned different ranks (the record shows
    the first seed's)."""
    warnings: list[str] = []
    for spec in config.compression.variants:
        per_seed = {seed: plans[Cell(spec.name, seed).key] for seed in config.seeds}
        distinct = {json.dumps(p.ranks, sort_keys=True) for p in per_seed.values()}
        if len(distinct) > 1:
            shown = ", ".join(
                f"seed {s}: "
                + (f"r={p.uniform_rank}" if p.uniform_rank is not None else f"{p.params} params")
                for s, p in per_seed.items()
            )
            warnings.append(
                f"variant {spec.name}: the uncompressed adapters' audits planned different "
                "ranks per seed "
                f"({shown}); the record shows seed {config.seeds[0]}'s"
            )
    return warnings


def _retrain(
    source: str | None,
    config: BenchConfig,
    out: Path,
    device: str,
    resume: bool,
    executor: Executor,
    echo: Echo,
    progress: bool,
) -> RunResults:
    from gradience_hub.bench.tasks import load_task

    lora, _ = config.require_training("the retrain protocol")
    _refuse_rank_zero(config)
    task = load_task(config, need_train=True) if driver_loads_task(executor) else None
    warnings = list(task.warnings) if task is not None else []
    store = CellStore(out)
    store.start(_fingerprint(config, "retrain", device, ""), resume, echo)
    runner = CellRunner(
        protocol="retrain",
        config=config,
        output_dir=out,
        device=device,
        probe_dir=None,
        progress=progress,
    )
    runner.adopt(task, None)
    n_variants = len(config.compression.variants)
    total = len(config.seeds) * (1 + n_variants)
    results: dict[str, CellResult] = {}
    # Stage 1: the probes (one per seed).
    probes = [Cell(PROBE, seed) for seed in config.seeds]
    run_grid(probes, runner, executor, store, results, echo, total)
    # Each seed's probe audit plans that seed's variants.
    probed = _audit_probes(config, out, runner, echo)
    runner.plans = probed.plans
    runner.probe_params = probed.probe_params
    # Stage 2: the base-model control (one seed-free cell, or one per seed that keeps that
    # seed's head) and every variant at every seed, trained from scratch.
    cells = probed.base_cells or [Cell(BASE)]
    cells += [Cell(s.name, seed) for seed in config.seeds for s in config.compression.variants]
    total += len(probed.base_cells) or 1
    run_grid(cells, runner, executor, store, results, echo, total)
    warnings += _rank_disagreements(config, probed.plans)
    pool_size, warnings = _task_facts(task, executor, warnings)
    return RunResults(
        protocol="retrain",
        config=config,
        output_dir=out,
        device=device,
        adapter={
            "source": source or f"retrain:{config.path.name if config.path else 'config'}",
            "revision": None,
            "base_model": config.model.name_or_path,
            "allocated_rank": lora.r,
            "lora_params": probed.probe_params,
        },
        audit_summary=probed.first_summary,
        probe_rank=lora.r,
        probe_params=probed.probe_params,
        plans=probed.plans,
        results=results,
        pool_size=pool_size,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- run_bench


def run_bench(
    source: str | None,
    config_path: str | Path | BenchConfig,
    output_dir: str | Path,
    protocol: str | None = None,
    seeds: Sequence[int] | str | None = None,
    resume: bool = False,
    device: str | None = None,
    *,
    executor: Executor | None = None,
    echo: Echo | None = None,
    progress: bool | None = None,
) -> BenchRecord:
    """Run the bench and write ``bench.json``, ``bench.md``, ``audit.json`` and the adapters
    to ``output_dir``; return the :class:`~gradience_hub.record.BenchRecord`.

    ``source``: the trained adapter (local directory or Hub id) for ``posthoc``; optional for
    ``retrain``, which trains its own probes from the config and only records SOURCE's name.
    ``protocol`` defaults to the config's ``protocol``, else ``posthoc`` with a SOURCE and
    ``retrain`` without. ``seeds`` overrides the config's (a list or ``"42,123"``). ``echo``
    receives the audit, one line per finished cell and the table (None: silent);
    ``progress`` shows progress bars (None: when stderr is a terminal). The PASS/FAIL verdict
    is the record's ``status``; this function does not raise on FAIL.
    """
    from gradience_hub.bench.train import check_model, require_bench_extra, resolve_device

    executor = executor or LocalExecutor()
    if driver_loads_task(executor):  # else the Jobs hold the bench extra, this install need not
        require_bench_extra()
    config = config_path if isinstance(config_path, BenchConfig) else load_config(config_path)
    executor.check_config(config)  # e.g. the Jobs: local files that cannot travel, before any work
    if seeds is not None:
        config.seeds = parse_seeds(seeds if isinstance(seeds, str) else list(seeds), "--seeds")
    protocol = protocol or config.protocol or ("posthoc" if source else "retrain")
    if protocol not in ("posthoc", "retrain"):
        raise UsageError(
            f"--protocol must be posthoc or retrain, got {protocol!r}", hint="--protocol posthoc"
        )
    if protocol == "posthoc" and not source:
        raise UsageError(
            "the posthoc protocol needs SOURCE, the trained adapter to compress",
            hint="pass the adapter directory or Hub id, or use --protocol retrain",
        )
    if protocol == "retrain":
        config.require_training("the retrain protocol")
    if progress is None:
        progress = sys.stderr.isatty()
    say: Echo = echo or (lambda _line: None)
    remote = executor.device  # a remote executor's cells use its workers'
    dev = (device or remote) if remote else resolve_device(device)
    if driver_loads_task(executor):
        check_model(config)  # a bad model.name_or_path is found before anything is written
    out = Path(output_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run_into(out, protocol, source, config, dev, resume, executor, say, progress)
    except GradienceError:
        # Bad input found before anything was written: leave no empty OUTPUT behind.
        if created and not any(out.iterdir()):
            out.rmdir()
        raise


def _run_into(
    out: Path,
    protocol: str,
    source: str | None,
    config: BenchConfig,
    dev: str,
    resume: bool,
    executor: Executor,
    say: Echo,
    progress: bool,
) -> BenchRecord:
    """The run itself, into an existing OUTPUT directory (see :func:`run_bench`)."""
    from gradience_hub.record import format_table, save_bench, to_markdown

    started = time.perf_counter()
    if protocol == "posthoc":
        assert source is not None
        run = _posthoc(source, config, out, dev, resume, executor, say, progress)
    else:
        if source:
            say(
                f"retrain: SOURCE {source} is recorded as the adapter this evidence is about; "
                "the uncompressed adapters are trained from the config, SOURCE's weights are "
                "not read"
            )
        run = _retrain(source, config, out, dev, resume, executor, say, progress)
    record = build_record(run)
    save_bench(record, out / "bench.json")
    (out / "bench.md").write_text(to_markdown(record), encoding="utf-8")
    say("")
    say(format_table(record).rstrip("\n"))
    say("")
    rec = record.recommendation
    verdict = f"Status: {record.status}"
    if rec is not None:
        verdict += f" (recommended: {rec.variant}, {(rec.param_reduction or 0) * 100:.1f}% fewer "
        verdict += "LoRA parameters)"
    elif record.status_reason:
        verdict += f": {record.status_reason}"
    say(verdict)
    for warning in record.warnings:
        say(f"Warning: {warning}")
    say(
        f"Wrote {out / 'bench.json'} and {out / 'bench.md'} in {time.perf_counter() - started:.0f}s"
    )
    return record
