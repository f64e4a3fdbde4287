"""``explain``: one module's spectrum and why the rank policies disagree on it.

From an audit (a SOURCE audited now, or an audit.json, whose rows keep every singular value):
the singular values, the cumulative energy curve, each policy's threshold and ``k``
(``rank_policies``), and one sentence on why they differ.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from gradience_hub.audit.report import AuditReport, LayerReport
from gradience_hub.errors import UsageError
from gradience_hub.rank_policies import (
    DEFAULT_POLICIES,
    ModulePolicies,
    apply_policies,
    parse_policies,
    why_they_differ,
)


@dataclass(frozen=True)
class Explanation:
    """One module, explained."""

    module: str
    shape: tuple[int, int]
    r: int
    singular_values: list[float]
    cumulative_energy: list[float]
    policies: ModulePolicies
    why: str


def find_layer(report: AuditReport, module: str) -> LayerReport:
    """The audited module named ``module`` (exact, else the one name that ends with it)."""
    by_name = {layer.name: layer for layer in report.layers}
    if module in by_name:
        return by_name[module]
    tails = [name for name in by_name if name.endswith("." + module) or name.endswith(module)]
    if len(tails) == 1:
        return by_name[tails[0]]
    close = difflib.get_close_matches(module, list(by_name), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "list them with 'gradience-hub audit'"
    if len(tails) > 1:
        hint = f"it matches {len(tails)} modules, e.g. {tails[0]}; give the full name"
    raise UsageError(f"no audited module named {module!r}", hint=hint)


def explain(report: AuditReport, module: str, policies: str = DEFAULT_POLICIES) -> Explanation:
    """Explain one module of ``report``."""
    specs = parse_policies(policies)
    layer = find_layer(report, module)
    s = np.asarray(layer.singular_values, dtype=np.float64)
    energy = s**2
    total = float(np.sum(energy))
    cumulative = (np.cumsum(energy) / total).tolist() if total > 0 else [0.0] * len(s)
    shape = (int(layer.shape[0]), int(layer.shape[1]))
    result = apply_policies(specs, s, shape, layer.r)
    return Explanation(
        module=layer.name,
        shape=shape,
        r=layer.r,
        singular_values=[float(x) for x in s],
        cumulative_energy=[float(x) for x in cumulative],
        policies=result,
        why=why_they_differ(result),
    )
