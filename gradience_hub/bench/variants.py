"""Compression variants: per-module ranks from an audit and a variant spec, and their adapters.

A :class:`~gradience_hub.bench.config.VariantSpec` becomes a :class:`VariantPlan` (module -> k)
against one audit: ``uniform_median`` / ``uniform_p90`` take the audit's suggested global ranks,
``per_layer`` its per-module ``rank_pattern`` (each snapped up to ``allowed_ranks`` when given,
never above a module's own rank); explicit variants use their ``rank``, ``rank_pattern`` (PEFT's
first-match rule) or ``energy`` threshold. The posthoc protocol writes each plan as an adapter
with :func:`gradience_hub.compress.compress_adapter`; ``rank: 0`` (the "no update" control) is a
copy of the adapter with every ``lora_B`` zeroed, keeping its other tensors (e.g. a trained
classification head), because PEFT cannot hold a rank-0 module.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradience_hub.adapter import CONFIG_NAME, SAFETENSORS_NAME, Adapter, AdapterConfig
from gradience_hub.audit import AuditReport
from gradience_hub.bench.config import VariantSpec
from gradience_hub.errors import AdapterError, ConfigError


@dataclass
class VariantPlan:
    """A variant's per-module ranks against one audit, and its LoRA parameter count."""

    name: str
    label: str
    ranks: dict[str, int]
    params: int
    full_params: int

    @property
    def uniform_rank(self) -> int | None:
        """The rank when every module has the same one, else None."""
        values = set(self.ranks.values())
        return values.pop() if len(values) == 1 else None

    @property
    def is_zero(self) -> bool:
        """The "no update" control (rank 0)."""
        return self.uniform_rank == 0

    @property
    def param_reduction(self) -> float:
        """``1 - params / full_params``."""
        return 1.0 - self.params / self.full_params if self.full_params else 0.0

    def rank_fields(self) -> dict[str, Any]:
        """``{"rank": k}`` for uniform plans, ``{"rank_pattern": {...}}`` otherwise."""
        k = self.uniform_rank
        return {"rank": k} if k is not None else {"rank_pattern": dict(self.ranks)}

    def peft_rank_pattern(self) -> dict[str, int]:
        """The ranks as a PEFT ``rank_pattern`` (escaped full module names: PEFT reads keys
        as regexes, and ``layer.1.`` would otherwise also match ``layer.1x``)."""
        return {re.escape(name): k for name, k in self.ranks.items()}


def snap(k: int, cap: int, allowed: list[int] | None) -> int:
    """``k`` rounded up to the nearest allowed rank, never above ``cap`` (the module's rank)."""
    if not allowed:
        return min(k, cap)
    for a in allowed:
        if k <= a <= cap:
            return a
    return cap


def plan_variant(
    spec: VariantSpec,
    report: AuditReport,
    allowed_ranks: list[int] | None = None,
    key: str = "compression.variants",
) -> VariantPlan:
    """The per-module ranks of ``spec`` for the audited adapter ``report``."""
    layers = report.layers
    full = {layer.name: layer.r for layer in layers}
    if spec.kind in ("uniform_median", "uniform_p90"):
        which = "global_median" if spec.kind == "uniform_median" else "global_p90"
        k = int(report.suggestions[which])
        ranks = {name: snap(k, r, allowed_ranks) for name, r in full.items()}
    elif spec.kind == "per_layer":
        suggested = report.suggestions["per_layer"]["rank_pattern"]
        ranks = {name: snap(int(suggested[name]), r, allowed_ranks) for name, r in full.items()}
    elif spec.kind == "policy":
        assert spec.policy is not None
        ks = policy_ranks(report, spec.policy)
        ranks = {name: snap(ks[name], r, allowed_ranks) for name, r in full.items()}
    elif spec.energy is not None:
        from gradience_hub.compress import plan_ranks

        ranks = plan_ranks(report, energy=spec.energy)
    else:
        rule = AdapterConfig(
            raw={},
            r=spec.rank if spec.rank is not None else -1,
            lora_alpha=1.0,
            rank_pattern=spec.rank_pattern or {},
        )
        ranks = {}
        for name, r in full.items():
            k = rule.rank_for(name)
            ranks[name] = r if k == -1 else k
        for name, k in ranks.items():
            if k > full[name]:
                raise ConfigError(
                    f"variant {spec.name}: rank {k} for module {name} is above the adapter's "
                    f"rank {full[name]}",
                    hint="compression only lowers ranks; use a rank <= the adapter's",
                    key=f"{key}.rank" if spec.rank_pattern is None else f"{key}.rank_pattern",
                )
    params = sum(ranks[layer.name] * (layer.shape[0] + layer.shape[1]) for layer in layers)
    full_params = sum(layer.r * (layer.shape[0] + layer.shape[1]) for layer in layers)
    label = spec.name
    plan = VariantPlan(spec.name, label, ranks, params, full_params)
    uniform = plan.uniform_rank
    if spec.kind == "per_layer":
        plan.label = f"{spec.name} (audit-guided)"
    elif spec.kind == "policy":
        plan.label = f"{spec.name} (rank policy {spec.policy}, per module)"
    elif uniform is not None:
        plan.label = f"{spec.name} (r={uniform})" if uniform else f"{spec.name} (no update)"
    return plan


def policy_ranks(report: AuditReport, policy: str) -> dict[str, int]:
    """Each audited module's k under ``policy`` (from its singular values), at least 1 and at
    most the module's rank."""
    from gradience_hub.rank_policies import PolicySpec, apply_policy

    spec = PolicySpec(policy)
    out = {}
    for layer in report.layers:
        shape = (int(layer.shape[0]), int(layer.shape[1]))
        k = apply_policy(spec, np.asarray(layer.singular_values), shape, layer.r).k
        out[layer.name] = max(1, min(k, layer.r))
    return out


def check_fits(report: AuditReport, adapter: Adapter, base_model: Any, model_name: str) -> None:
    """Refuse early, naming the fix, when the adapter was not trained on the config's base
    model: peft loads it onto ``base_model`` (a meta-device skeleton) as compress does."""
    from gradience_hub.compress import verify_with_peft

    expected = {layer.name: (layer.r, layer.scale) for layer in report.layers}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers notices via peft
            verify_with_peft(adapter.directory, expected, base_model=base_model, verify=True)
    except AdapterError as exc:
        raise AdapterError(
            f"the adapter in {adapter.directory} does not fit the config's base model "
            f"{model_name}: {exc.message}",
            hint="set model.name_or_path (and task) to what the adapter was trained with",
        ) from None


def write_variant(
    adapter: Adapter, plan: VariantPlan, output_dir: Path, base_model: Any = None
) -> float:
    """Write the plan's adapter to ``output_dir`` (replacing it); return the relative
    Frobenius error of the whole update (1.0 for the zeroed control). ``base_model`` (a
    model, e.g. a meta-device skeleton) is what compress's peft reload check loads the
    variant onto."""
    if plan.is_zero:
        write_zeroed(adapter, output_dir)
        return 1.0
    from gradience_hub.compress import compress_adapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers notices via peft
        result = compress_adapter(
            adapter,
            plan.ranks,
            output_dir,
            force=True,
            base_model=base_model,
            source=str(adapter.directory),
        )
    return float(result.rel_error)


def write_zeroed(adapter: Adapter, output_dir: Path) -> Path:
    """The adapter with every ``lora_B`` set to zero: the update vanishes, the rest (a trained
    task head) stays. This is the rank-0 variant, and the base-model control of an adapter that
    carries a head (see :func:`needs_head`)."""
    import numpy as np

    from gradience_hub.adapter.safetensors_io import write_safetensors

    tensors: dict[str, np.ndarray] = {}
    for pair in adapter.pairs.values():
        assert pair.a_key is not None and pair.b_key is not None
        tensors[pair.a_key] = np.ascontiguousarray(adapter.tensor(pair.a_key))
        tensors[pair.b_key] = np.zeros_like(adapter.tensor(pair.b_key))
    for key in adapter.other_keys:
        tensors[key] = np.ascontiguousarray(adapter.tensor(key))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    write_safetensors(
        output_dir / SAFETENSORS_NAME, tensors, adapter.stored_dtypes(), {"format": "pt"}
    )
    (output_dir / CONFIG_NAME).write_text(
        # Key order kept: PEFT applies the first matching rank_pattern key, so sorting could let
        # a short key shadow a longer one.
        json.dumps(adapter.config.raw, indent=2) + "\n",
        encoding="utf-8",
    )
    return output_dir


def needs_head(adapter: Adapter) -> bool:
    """True when the adapter carries tensors besides its LoRA factors (a ``modules_to_save``
    task head, e.g. a classifier the base model lacks). Its base-model control keeps them: the
    base model with a random head only scores chance, which any adapter beats."""
    return bool(adapter.other_keys)
