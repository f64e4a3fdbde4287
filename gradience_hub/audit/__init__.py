"""The spectral audit: per-module stable rank, utilization and energy rank, a summary, suggested
ranks and a PEFT-ready ``rank_pattern``; ``audit.json`` is :meth:`AuditReport.to_dict`."""

from gradience_hub.audit.report import (
    READABLE_SCHEMAS,
    SCHEMA,
    V011_ENERGY_ALIASES,
    AuditReport,
    LayerReport,
    Summary,
    energy_fields,
    load_audit,
)
from gradience_hub.audit.run import audit_adapter, check_energy, run_audit, suggest_rank
from gradience_hub.audit.text import format_text, human_count

__all__ = [
    "READABLE_SCHEMAS",
    "SCHEMA",
    "V011_ENERGY_ALIASES",
    "AuditReport",
    "LayerReport",
    "Summary",
    "audit_adapter",
    "check_energy",
    "energy_fields",
    "format_text",
    "human_count",
    "load_audit",
    "run_audit",
    "suggest_rank",
]
