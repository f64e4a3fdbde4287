"""The merge compatibility audit: do two (or more) LoRA adapters of one base model use the same
subspaces, do they point the same way, would one dominate a linear merge; per module from the
weights alone (the QR route, never the dense product), a verdict, the peft merge method to use,
and optionally the merge itself through peft with measured against predicted retention.

``geometry`` and ``predict`` are pure math, ``verdict`` the rule table, ``report`` the
merge_audit.json model, ``run`` the I/O, ``text`` the terminal output, ``merge`` peft (the
Markdown is :mod:`gradience_hub.publish.merge_audit`).
"""

from gradience_hub.merge_audit.geometry import PairFigures, Update, pair_figures, update
from gradience_hub.merge_audit.report import SCHEMA, MergeAuditReport, ModuleRow, PairReport
from gradience_hub.merge_audit.run import audit_adapters, parse_weights, run_merge_audit
from gradience_hub.merge_audit.text import format_text
from gradience_hub.merge_audit.verdict import VERDICTS, Thresholds, load_thresholds, verdict

__all__ = [
    "SCHEMA",
    "VERDICTS",
    "MergeAuditReport",
    "ModuleRow",
    "PairFigures",
    "PairReport",
    "Thresholds",
    "Update",
    "audit_adapters",
    "format_text",
    "load_thresholds",
    "pair_figures",
    "parse_weights",
    "run_merge_audit",
    "update",
    "verdict",
]
