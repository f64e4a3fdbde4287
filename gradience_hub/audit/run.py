"""Run the audit: stream an adapter's modules through the spectral math into an AuditReport."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradience_hub import rank_policies, spectral
from gradience_hub.adapter import Adapter, LoraModule, SourceInfo, UnreadableModule
from gradience_hub.audit.report import AuditReport, LayerReport, Summary
from gradience_hub.errors import AdapterError, UsageError
from gradience_hub.hub.source import load_adapter
from gradience_hub.identity import HASH_KEY, adapter_content_sha256
from gradience_hub.parallel import map_ordered
from gradience_hub.spectral import suggest_rank


def check_energy(energy: float) -> None:
    """Refuse an energy threshold outside (0, 1] before any work is done."""
    if not 0.0 < energy <= 1.0:
        raise UsageError(f"--energy must be in (0, 1], got {energy}", hint="e.g. --energy 0.9")


@dataclass
class _Analyzed:
    """One module's reading and its spectral statistics."""

    module: LoraModule
    stats: spectral.SpectralStats


def _analyze(adapter: Adapter, name: str, energy: float) -> _Analyzed | UnreadableModule:
    """Read and analyse one module (on a worker thread); a module the reader cannot
    understand comes back as its error, to be skipped with a warning.

    The rank policies are not computed here but after the loop, from the rows: they are some
    thirty small numpy calls per module that hold the interpreter lock, and on the worker
    threads they delayed the other thread's return from each LAPACK call (measured on the
    7B-shaped benchmark, 21 interleaved rounds: 248 ms with them on the workers, 229 ms after)."""
    try:
        module = adapter.module(name)
    except UnreadableModule as exc:
        return exc
    try:
        stats = spectral.analyze(module.B, module.A, module.scale, energy)
    except OverflowError as exc:
        raise AdapterError(
            f"module {module.name}: {exc}",
            hint="the adapter's weights or lora_alpha are corrupt",
        ) from None
    return _Analyzed(module, stats)


def apply_rank_policies(layers: list[LayerReport], policies: str, allocated: int) -> dict[str, Any]:
    """Fill each row's ``policies``, ``policy_spread`` and ``policy_consensus`` (from its
    singular values) and return ``suggestions.policies``: per policy its median, p90, global
    ranks and ``rank_pattern`` (:func:`rank_policies.summarize`)."""
    specs = rank_policies.parse_policies(policies)
    per_module: dict[str, rank_policies.ModulePolicies] = {}
    for layer in layers:
        s = np.asarray(layer.singular_values, dtype=np.float64)
        shape = (int(layer.shape[0]), int(layer.shape[1]))
        result = rank_policies.apply_policies(specs, s, shape, layer.r)
        layer.policies = result.ks
        layer.policy_spread = result.spread
        layer.policy_consensus = result.consensus
        per_module[layer.name] = result
    summaries = rank_policies.summarize(specs, per_module, allocated)
    return {p.policy: p.to_dict() for p in summaries}


def _suggestions(
    layers: list[LayerReport], summary: Summary, energy: float, policies: str | None
) -> dict[str, Any]:
    """audit.json's ``suggestions``: the global ranks, the per-layer ``rank_pattern`` and, with
    ``policies``, each rank policy's (:func:`apply_rank_policies`)."""
    rank_pattern = {layer.name: layer.suggested_r for layer in layers}
    suggestions: dict[str, Any] = {
        "energy_threshold": energy,
        "global_median": summary.suggested_r_global_median,
        "global_p90": summary.suggested_r_global_90,
        "per_layer": {
            "rank_pattern": rank_pattern,
            "lora_params": sum(
                r * (layer.shape[0] + layer.shape[1])
                for r, layer in zip(rank_pattern.values(), layers, strict=True)
            ),
        },
    }
    if policies is not None:
        suggestions["policies"] = apply_rank_policies(layers, policies, summary.allocated_rank)
    return suggestions


def audit_adapter(
    adapter: Adapter,
    source: SourceInfo,
    energy: float = 0.9,
    policies: str | None = rank_policies.DEFAULT_POLICIES,
) -> AuditReport:
    """Audit an opened adapter module by module (streamed: one module's factors in memory).
    ``policies`` (``--rank-policies``; None for none) adds each rank policy's suggestions."""
    check_energy(energy)
    if policies is not None:
        rank_policies.parse_policies(policies)  # bad input before any work
    # The content hash reads the whole weights file once more; hashlib releases the GIL, so it
    # runs beside the modules' math instead of after it (a tenth of a second on a 7B adapter).
    with ThreadPoolExecutor(1) as hasher:
        content_hash = hasher.submit(adapter_content_sha256, adapter)
        report = _audit_modules(adapter, source, energy, policies)
        # What a bench record of this adapter must name to be published beside this audit.
        report.source[HASH_KEY] = content_hash.result()
    return report


@dataclass
class _Rows:
    """The modules' rows and what the loop noticed on the way."""

    layers: list[LayerReport] = field(default_factory=list)
    zero: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _layer_rows(adapter: Adapter, energy: float) -> _Rows:
    """Every module's row, streamed through the worker threads in module order."""
    rows = _Rows()
    for done in map_ordered(lambda name: _analyze(adapter, name, energy), adapter.module_names):
        if isinstance(done, UnreadableModule):
            rows.skipped.append(done.message)
            continue
        module, stats = done.module, done.stats
        if stats.is_zero:
            rows.zero.append(module.name)
        configured = module.configured_r
        if configured is not None and configured != module.r:
            rows.mismatched.append(f"{module.name} (weights r={module.r}, config r={configured})")
        rows.layers.append(
            LayerReport(
                name=module.name,
                module_type=module.module_type,
                kind=module.kind,
                layer_index=module.layer_index,
                r=module.r,
                alpha=module.alpha,
                scale=module.scale,
                shape=list(module.shape),
                params=module.params,
                dtype=module.dtype,
                stable_rank=stats.stable_rank,
                utilization=stats.utilization,
                energy_rank=stats.energy_rank,
                effective_rank=stats.effective_rank,
                sigma_max=stats.sigma_max,
                fro_norm=stats.fro_norm,
                singular_values=stats.singular_values.tolist(),
                suggested_r=suggest_rank(stats.energy_rank, module.r),
            )
        )
    if not rows.layers:
        skipped = rows.skipped
        raise AdapterError(
            skipped[0] if len(skipped) == 1 else f"no module could be read: {skipped[0]}",
            hint="the weights file is corrupt or was edited; save the adapter again",
        )
    return rows


def _summary(adapter: Adapter, rows: _Rows, energy: float) -> Summary:
    """The adapter-wide figures of the rows."""
    layers = rows.layers
    allocated = adapter.config.r
    k = np.array([layer.energy_rank for layer in layers], dtype=np.float64)
    p50 = float(np.percentile(k, 50))
    p90 = float(np.percentile(k, 90))
    return Summary(
        allocated_rank=allocated,
        lora_params=sum(layer.params for layer in layers),
        n_layers=len(layers),
        stable_rank_mean=float(np.mean([x.stable_rank for x in layers])),
        utilization_mean=float(np.mean([x.utilization for x in layers])),
        energy_threshold=energy,
        energy_rank_p50=p50,
        energy_rank_p90=p90,
        suggested_r_global_median=suggest_rank(p50, allocated),
        suggested_r_global_90=suggest_rank(p90, allocated),
        effective_rank_mean=float(np.mean([x.effective_rank for x in layers])),
        is_dora=adapter.is_dora,
        base_model=adapter.config.base_model,
        skipped_modules=len(rows.skipped),
        adapter_format=adapter.format,
    )


def _warnings(adapter: Adapter, source: SourceInfo, rows: _Rows) -> list[str]:
    """What the report must say beside its figures, in a fixed order."""
    warnings: list[str] = []
    zero, n = rows.zero, len(rows.layers)
    if zero and len(zero) == n:
        warnings.append(
            "untrained adapter: every lora_B is all zeros, so the update is zero and the "
            "spectral figures are meaningless; audit the adapter after training"
        )
    elif zero:
        warnings.append(
            f"{len(zero)} of {n} modules have an all-zero update (lora_B = 0), "
            f"e.g. {zero[0]}; they were not trained"
        )
    if adapter.is_dora:
        warnings.append(
            "DoRA adapter: audited on its directional update B·A; the learned magnitude vector "
            "is not part of the spectrum"
        )
    for reason in rows.skipped:
        warnings.append(f"skipped, not audited: {reason}")
    warnings.extend(source.warnings)
    mismatched = rows.mismatched
    if mismatched:
        more = f" and {len(mismatched) - 1} more" if len(mismatched) > 1 else ""
        warnings.append(f"rank mismatch with {adapter.config_origin}: {mismatched[0]}{more}")
    return warnings


def _audit_modules(
    adapter: Adapter, source: SourceInfo, energy: float, policies: str | None
) -> AuditReport:
    """The report of :func:`audit_adapter` without its content hash."""
    rows = _layer_rows(adapter, energy)
    summary = _summary(adapter, rows, energy)
    warnings = _warnings(adapter, source, rows)
    suggestions = _suggestions(rows.layers, summary, energy, policies)
    src = source.to_dict()
    src["base_model"] = adapter.config.base_model
    return AuditReport(
        source=src, summary=summary, layers=rows.layers, suggestions=suggestions, warnings=warnings
    )


def run_audit(
    source: str,
    revision: str | None = None,
    adapter_name: str | None = None,
    energy: float = 0.9,
    policies: str | None = rank_policies.DEFAULT_POLICIES,
    udr: bool = False,
    base_model: str | None = None,
    base_norms_cache: str | None = None,
) -> AuditReport:
    """Audit SOURCE (a local directory or a Hub repo id) end to end.

    ``udr`` (or a ``base_model``) adds the update-to-base ratios against ``base_model``
    (default: the adapter's ``base_model_name_or_path``), reading only the audited modules'
    base weights (:func:`gradience_hub.audit.udr.compute_udr`); without either, the base is
    never touched."""
    check_energy(energy)  # before any download
    if policies is not None:
        rank_policies.parse_policies(policies)
    adapter, info = load_adapter(source, revision, adapter_name)
    report = audit_adapter(adapter, info, energy, policies)
    if udr or base_model is not None:
        add_udr(report, base_model or adapter.config.base_model, base_norms_cache)
    return report


def add_udr(report: AuditReport, base_model: str | None, cache: str | None = None) -> None:
    """Compute UDR against ``base_model`` into ``report.udr`` (and its warnings)."""
    from gradience_hub.audit.udr import compute_udr

    if not base_model:
        raise UsageError(
            "--udr needs the base model, and the adapter names none",
            hint="pass --base-model ORG/NAME or a local model directory",
        )
    result = compute_udr(report.layers, base_model, cache=cache)
    report.udr = result.to_dict()
    report.warnings.extend(result.warnings)
