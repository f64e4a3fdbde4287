"""bench.json as a :class:`BenchRecord`: the model (:mod:`.model`), checked field readers
(:mod:`.fields`), one reader per format chosen by a table (:mod:`.io`: ours in :mod:`.read_v1`,
gradience 0.11's in :mod:`.read_v011`), re-judging of every record read (:mod:`.judge`), and
bench.md (:mod:`.text`)."""

from gradience_hub.record.io import READERS, load_bench, record_from_dict, save_bench
from gradience_hub.record.judge import rejudge, with_policy
from gradience_hub.record.model import (
    AUDIT_FIELDS,
    SCHEMA,
    AdapterInfo,
    BaseRecord,
    BenchRecord,
    ProbeRecord,
    ProtocolInfo,
    Recommendation,
    SeedScore,
    TaskInfo,
    VariantRecord,
    environment_info,
)
from gradience_hub.record.text import format_table, to_markdown, variant_label

__all__ = [
    "AUDIT_FIELDS",
    "READERS",
    "SCHEMA",
    "AdapterInfo",
    "BaseRecord",
    "BenchRecord",
    "ProbeRecord",
    "ProtocolInfo",
    "Recommendation",
    "SeedScore",
    "TaskInfo",
    "VariantRecord",
    "environment_info",
    "format_table",
    "load_bench",
    "record_from_dict",
    "rejudge",
    "save_bench",
    "to_markdown",
    "variant_label",
    "with_policy",
]
