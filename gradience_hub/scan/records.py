"""The scan's rows: one per adapter (or per skipped repo) and one per module, and their
Parquet schemas.

Rows are plain dicts of JSON values, so that they cross a Ray task boundary and a line of the
resume journal unchanged; :data:`ADAPTER_SCHEMA` and :data:`MODULE_SCHEMA` type them when they
are written to Parquet. Every field an audit does not produce (a skipped repo) is null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gradience_hub.output import strip_controls

if TYPE_CHECKING:
    import pyarrow as pa

    from gradience_hub.audit import AuditReport

SCHEMA_VERSION = "gradience-hub/scan/v1"

# (name, arrow type name, description): the one list both the schema and the card are built from.
ADAPTER_FIELDS: list[tuple[str, str, str]] = [
    ("repo", "string", "Hub repo id, or the path under the scanned folder"),
    ("adapter", "string", "adapter name: default, a subfolder, or the LoRA file's name"),
    ("source", "string", "hub or local"),
    ("revision_sha", "string", "commit sha the files were read at (Hub)"),
    ("status", "string", "ok, or why it was not audited (not-an-adapter, gated, ...)"),
    ("error", "string", "the reason, one line, when status is not ok"),
    ("format", "string", "peft, kohya or diffusers"),
    ("base_model", "string", "base model named by the adapter or its card"),
    ("target_modules", "list<string>", "names of the layers it adapts (q_proj, to_q, ...)"),
    ("allocated_rank", "int64", "the adapter's configured rank r"),
    ("ranks", "list<int64>", "the distinct ranks of its modules"),
    ("n_modules", "int64", "modules audited"),
    ("lora_params", "int64", "LoRA parameters"),
    ("bytes", "int64", "bytes of the weights file"),
    ("utilization_mean", "double", "mean stable rank / r"),
    ("stable_rank_mean", "double", "mean stable rank"),
    ("energy_threshold", "double", "tau of the energy rank"),
    ("energy_rank_p50", "double", "median module energy rank at tau"),
    ("energy_rank_p90", "double", "90th percentile module energy rank at tau"),
    ("effective_rank_mean", "double", "mean effective (entropy) rank"),
    ("suggested_r_median", "int64", "suggested global rank (median energy rank, power of 2)"),
    ("suggested_r_p90", "int64", "suggested global rank (p90 energy rank, power of 2)"),
    ("suggested_params", "int64", "LoRA parameters at the suggested per-module ranks"),
    ("bytes_saved", "int64", "bytes the suggested per-module ranks would save"),
    ("is_dora", "bool", "DoRA adapter"),
    ("skipped_modules", "int64", "modules that could not be read"),
    ("warnings", "list<string>", "the audit's warnings"),
    ("content_sha256", "string", "sha256 naming the adapter's content"),
    ("rank_policies", "list<string>", "the rank policies applied (gradience 0.11's definitions)"),
    ("policy_k_median", "list<double>", "per policy (same order), the median module k"),
    ("policy_k_p90", "list<double>", "per policy (same order), the 90th percentile module k"),
    ("policy_suggested_r", "list<int64>", "per policy, its suggested global rank (power of 2)"),
]

MODULE_FIELDS: list[tuple[str, str, str]] = [
    ("repo", "string", "Hub repo id, or the path under the scanned folder"),
    ("adapter", "string", "adapter name (joins adapters.parquet on repo, adapter)"),
    ("revision_sha", "string", "commit sha"),
    ("base_model", "string", "base model"),
    ("module", "string", "module name"),
    ("module_type", "string", "the audit's module group (attention, mlp, ...)"),
    ("layer_index", "int64", "decoder/block index when the name has one"),
    ("r", "int64", "the module's rank"),
    ("params", "int64", "LoRA parameters of the module"),
    ("d_out", "int64", "output features"),
    ("d_in", "int64", "input features"),
    ("stable_rank", "double", "stable rank"),
    ("utilization", "double", "stable rank / r"),
    ("energy_rank", "int64", "energy rank at tau"),
    ("effective_rank", "double", "effective (entropy) rank"),
    ("suggested_r", "int64", "suggested rank"),
    ("policy_consensus", "int64", "the median of the rank policies' k for this module"),
    ("policy_spread", "int64", "the rank policies' largest k minus their smallest"),
]


def _arrow_type(name: str) -> pa.DataType:
    import pyarrow as pa

    simple = {
        "string": pa.string(),
        "int64": pa.int64(),
        "double": pa.float64(),
        "bool": pa.bool_(),
    }
    if name.startswith("list<"):
        return pa.list_(simple[name[5:-1]])
    return simple[name]


def arrow_schema(fields: list[tuple[str, str, str]]) -> pa.Schema:
    """The pyarrow schema of ``fields`` (descriptions kept as field metadata)."""
    import pyarrow as pa

    return pa.schema(
        [pa.field(n, _arrow_type(t), metadata={"description": d}) for n, t, d in fields],
        metadata={"schema": SCHEMA_VERSION},
    )


def clean_name(text: str) -> str:
    """An untrusted name (repo id, file, module) without control characters."""
    return strip_controls(str(text)).replace("\t", " ").replace("\r", " ").replace("\n", " ")


@dataclass
class RepoResult:
    """Everything a scan learned about one repo: its adapter rows (or one row saying why it was
    skipped) and the module rows. ``transient`` marks a Hub failure that --resume redoes."""

    repo: str
    adapters: list[dict[str, Any]] = field(default_factory=list)
    modules: list[dict[str, Any]] = field(default_factory=list)
    transient: bool = False
    requests: int = 0

    def to_json(self) -> dict[str, Any]:
        """The journal line."""
        return {
            "repo": self.repo,
            "adapters": self.adapters,
            "modules": self.modules,
            "transient": self.transient,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepoResult:
        """Read a journal line back."""
        return cls(
            repo=str(data["repo"]),
            adapters=list(data.get("adapters") or []),
            modules=list(data.get("modules") or []),
            transient=bool(data.get("transient")),
        )


def empty_row(repo: str, adapter: str, source: str, sha: str | None) -> dict[str, Any]:
    """An adapter row with every measured field null."""
    row: dict[str, Any] = {name: None for name, _, _ in ADAPTER_FIELDS}
    row.update(repo=clean_name(repo), adapter=clean_name(adapter), source=source, revision_sha=sha)
    row.update(target_modules=[], ranks=[], warnings=[], rank_policies=[])
    row.update(policy_k_median=[], policy_k_p90=[], policy_suggested_r=[])
    return row


def skipped_row(
    repo: str, adapter: str, source: str, sha: str | None, kind: str, reason: str
) -> dict[str, Any]:
    """The row of a repo or adapter that was not audited, with its reason."""
    row = empty_row(repo, adapter, source, sha)
    row.update(status=kind, error=clean_name(reason))
    return row


def _policy_columns(policies: dict[str, Any]) -> dict[str, Any]:
    """The rank policies' global suggestions as aligned lists (empty when none ran)."""
    names = sorted(policies)
    return {
        "rank_policies": names,
        "policy_k_median": [float(policies[n]["median"]) for n in names],
        "policy_k_p90": [float(policies[n]["p90"]) for n in names],
        "policy_suggested_r": [int(policies[n]["suggested_r_median"]) for n in names],
    }


def audit_rows(
    report: AuditReport,
    repo: str,
    adapter: str,
    source: str,
    sha: str | None,
    weights_bytes: int,
    base_model: str | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The adapter row and module rows of one audit."""
    s = report.summary
    layers = report.layers
    per_layer = report.suggestions.get("per_layer", {})
    suggested = int(per_layer.get("lora_params", s.lora_params))
    # The weights file's bytes per LoRA parameter (dtype plus the header's small share) prices
    # the parameters the suggested ranks drop.
    saved = (
        round(weights_bytes * (s.lora_params - suggested) / s.lora_params) if s.lora_params else 0
    )
    row = empty_row(repo, adapter, source, sha)
    base = s.base_model or base_model
    row.update(
        status="ok",
        format=s.adapter_format,
        base_model=clean_name(base) if base else None,
        # the adapted layers' own names (q_proj), as PEFT's target_modules names them
        target_modules=sorted({clean_name(x.name.rsplit(".", 1)[-1]) for x in layers}),
        allocated_rank=int(s.allocated_rank),
        ranks=sorted({int(x.r) for x in layers}),
        n_modules=int(s.n_layers),
        lora_params=int(s.lora_params),
        bytes=int(weights_bytes),
        utilization_mean=float(s.utilization_mean),
        stable_rank_mean=float(s.stable_rank_mean),
        energy_threshold=float(s.energy_threshold),
        energy_rank_p50=float(s.energy_rank_p50),
        energy_rank_p90=float(s.energy_rank_p90),
        effective_rank_mean=float(s.effective_rank_mean),
        suggested_r_median=int(s.suggested_r_global_median),
        suggested_r_p90=int(s.suggested_r_global_90),
        suggested_params=suggested,
        bytes_saved=int(max(saved, 0)),
        is_dora=bool(s.is_dora),
        skipped_modules=int(s.skipped_modules),
        warnings=[clean_name(w) for w in report.warnings],
        content_sha256=report.source.get("content_sha256"),
        **_policy_columns(report.suggestions.get("policies") or {}),
    )
    modules = [
        {
            "repo": row["repo"],
            "adapter": row["adapter"],
            "revision_sha": sha,
            "base_model": row["base_model"],
            "module": clean_name(x.name),
            "module_type": clean_name(x.module_type),
            "layer_index": x.layer_index,
            "r": int(x.r),
            "params": int(x.params),
            "d_out": int(x.shape[0]),
            "d_in": int(x.shape[1]),
            "stable_rank": float(x.stable_rank),
            "utilization": float(x.utilization),
            "energy_rank": int(x.energy_rank),
            "effective_rank": float(x.effective_rank),
            "suggested_r": int(x.suggested_r),
            "policy_consensus": x.policy_consensus,
            "policy_spread": x.policy_spread,
        }
        for x in layers
    ]
    return row, modules
