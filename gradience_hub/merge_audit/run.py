"""Run the merge audit: open every SOURCE, check they fit one base model, stream the modules."""

from __future__ import annotations

import itertools
import math
import string
from collections.abc import Sequence
from typing import Any

from gradience_hub.adapter import Adapter, LoraModule, SourceInfo
from gradience_hub.audit import check_energy
from gradience_hub.errors import AdapterError, UsageError
from gradience_hub.hub.source import load_adapter
from gradience_hub.merge_audit.geometry import Update, pair_figures, update
from gradience_hub.merge_audit.report import MergeAuditReport, ModuleRow, PairReport
from gradience_hub.merge_audit.verdict import Thresholds, verdict


def labels(n: int) -> list[str]:
    """Source labels A, B, C, ... (then A1, B1, ... past 26)."""
    letters = string.ascii_uppercase
    return [letters[i % 26] + (str(i // 26) if i >= 26 else "") for i in range(n)]


def parse_weights(text: str | Sequence[float] | None, n: int) -> list[float]:
    """``"0.5,0.5"`` -> [0.5, 0.5]: one finite weight per source, not all zero (default:
    ``1/n`` each). Negative weights are allowed (peft subtracts such an adapter)."""
    if text is None:
        return [1.0 / n] * n
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        weights = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise UsageError(
            f"--weights must be comma-separated numbers, got {text!r}",
            hint=f"give one weight per source, e.g. --weights {','.join(['0.5'] * n)}",
        ) from None
    if len(weights) != n:
        raise UsageError(
            f"--weights has {len(weights)} values for {n} sources",
            hint=f"give one weight per source, e.g. --weights {','.join(['0.5'] * n)}",
        )
    if not all(math.isfinite(w) for w in weights) or not any(weights):
        raise UsageError(
            f"--weights must be finite and not all zero, got {text!r}", hint="e.g. 0.5,0.5"
        )
    return weights


def open_sources(sources: Sequence[str]) -> list[tuple[Adapter, SourceInfo]]:
    """Open every SOURCE (local directory, ``org/name``, ``org/name@rev``)."""
    if len(sources) < 2:
        raise UsageError(
            "merge-audit needs at least two adapters", hint="gradience-hub merge-audit A B"
        )
    return [load_adapter(source) for source in sources]


def check_base_models(opened: list[tuple[Adapter, SourceInfo]], names: list[str]) -> list[str]:
    """The same ``base_model_name_or_path`` everywhere (AdapterError otherwise); warnings for
    adapters that do not say."""
    known = [(n, a.config.base_model, i) for n, (a, i) in zip(names, opened, strict=True)]
    said = [(n, b, i) for n, b, i in known if b]
    for (n1, b1, i1), (n2, b2, i2) in itertools.pairwise(said):
        if str(b1).rstrip("/") != str(b2).rstrip("/"):
            raise AdapterError(
                f"different base models: {n1} ({i1.display}) is for {b1!r}, "
                f"{n2} ({i2.display}) for {b2!r}",
                hint="only adapters of the same base model can be merged",
            )
    return [
        f"{n} ({i.display}) does not name its base model; assumed to be the same"
        for n, b, i in known
        if not b
    ]


def _check_shapes(name: str, modules: dict[str, LoraModule]) -> None:
    items = list(modules.items())
    for (l1, m1), (l2, m2) in itertools.pairwise(items):
        if m1.shape != m2.shape or m1.kind != m2.kind:
            raise AdapterError(
                f"module {name} is {m1.kind} {m1.shape[0]}x{m1.shape[1]} in {l1} but "
                f"{m2.kind} {m2.shape[0]}x{m2.shape[1]} in {l2}",
                hint="the adapters were not trained on the same base model",
            )


def source_entry(label: str, adapter: Adapter, info: SourceInfo, norm: float) -> dict[str, Any]:
    """A source's entry in merge_audit.json ``sources`` (``frobenius_norm``: over the modules
    it shares with another source)."""
    return {
        "label": label,
        **info.to_dict(),
        "base_model": adapter.config.base_model,
        "allocated_rank": adapter.config.r,
        "n_modules": len(adapter.module_names),
        "is_dora": adapter.is_dora,
        "frobenius_norm": norm,
    }


def audit_adapters(
    opened: list[tuple[Adapter, SourceInfo]],
    weights: list[float],
    energy: float = 0.9,
    thresholds: Thresholds | None = None,
) -> MergeAuditReport:
    """Audit opened adapters pairwise, streaming one module (of each adapter) at a time."""
    check_energy(energy)
    thresholds = thresholds or Thresholds()
    names = labels(len(opened))
    warnings = check_base_models(opened, names)
    adapters = dict(zip(names, (a for a, _ in opened), strict=True))
    order = list(dict.fromkeys(m for a in adapters.values() for m in a.module_names))
    w = dict(zip(names, weights, strict=True))
    pairs = {
        (a, b): PairReport(a, b, (w[a], w[b]), [], [], [])
        for a, b in itertools.combinations(names, 2)
    }
    norms2 = dict.fromkeys(names, 0.0)
    for module_name in order:
        modules = {
            n: ad.module(module_name) for n, ad in adapters.items() if module_name in ad.pairs
        }
        _check_shapes(module_name, modules)
        ups: dict[str, Update] = {n: update(m.B, m.A, m.scale, energy) for n, m in modules.items()}
        if len(ups) > 1:  # a source's norm over the modules it shares (for rebalancing)
            for n, u in ups.items():
                norms2[n] += u.norm**2
        for (a, b), pair in pairs.items():
            if a in ups and b in ups:
                figures = pair_figures(ups[a], ups[b], w[a], w[b])
                pair.rows.append(
                    ModuleRow(
                        name=module_name,
                        a=a,
                        b=b,
                        module_type=modules[a].module_type,
                        shape=list(modules[a].shape),
                        nominal_rank_a=ups[a].r,
                        nominal_rank_b=ups[b].r,
                        effective_rank_a=ups[a].k,
                        effective_rank_b=ups[b].k,
                        stable_rank_a=ups[a].stable_rank,
                        stable_rank_b=ups[b].stable_rank,
                        figures=figures,
                        verdict=verdict(figures, thresholds),
                    )
                )
            elif a in ups:
                pair.only_a.append(module_name)
            elif b in ups:
                pair.only_b.append(module_name)
    for pair in pairs.values():
        if not pair.rows:
            warnings.append(f"{pair.a} and {pair.b} share no module: nothing of them overlaps")
    if any(a.is_dora for a in adapters.values()):
        warnings.append(
            "DoRA adapter: compared on the directional updates B·A; the learned magnitude "
            "vectors are not part of the comparison"
        )
    return MergeAuditReport(
        sources=[
            source_entry(n, a, i, math.sqrt(norms2[n]))
            for n, (a, i) in zip(names, opened, strict=True)
        ],
        base_model=next((a.config.base_model for a, _ in opened if a.config.base_model), None),
        energy_threshold=energy,
        weights=list(weights),
        thresholds=thresholds.to_dict(),
        pairs=list(pairs.values()),
        warnings=warnings,
    )


def run_merge_audit(
    sources: Sequence[str],
    weights: str | Sequence[float] | None = None,
    energy: float = 0.9,
    thresholds: Thresholds | None = None,
    *,
    merge_output: str | None = None,
    method: str | None = None,
    density: float = 0.5,
    base_model: str | None = None,
) -> MergeAuditReport:
    """Audit SOURCEs (local directories or Hub ids) pairwise for a merge, end to end; with
    ``merge_output``, also write the merge with peft (``method``, default: the recommended one)
    and measure it (``report.merge``)."""
    check_energy(energy)
    if merge_output is None and method is not None:
        raise UsageError("--method needs --merge OUT", hint="e.g. --merge merged --method cat")
    parsed = parse_weights(weights, len(sources)) if len(sources) >= 2 else []
    opened = open_sources(sources)
    report = audit_adapters(opened, parsed, energy, thresholds)
    if merge_output is not None:
        from gradience_hub.merge_audit.merge import merge

        chosen = method or report.recommendation.method
        merge(report, opened, merge_output, chosen, density, base_model)
    return report
