"""The scan's dataset: ``adapters.parquet``, ``modules.parquet`` and their card (README.md).

Written from the journal in batches through pyarrow's ``ParquetWriter`` (one row group per
batch), so memory holds one batch, never the scan. Each file is written under a temporary name
and renamed, so a reader never sees half a dataset. The census figures (:func:`census`) are
read back from the written Parquet, one column at a time.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradience_hub.markdown import md
from gradience_hub.scan.records import (
    ADAPTER_FIELDS,
    MODULE_FIELDS,
    SCHEMA_VERSION,
    RepoResult,
    arrow_schema,
)

ADAPTERS_FILE = "adapters.parquet"
MODULES_FILE = "modules.parquet"
CARD_FILE = "README.md"
BATCH_ROWS = 2048


class _Writer:
    """A Parquet file written batch by batch, renamed into place on :meth:`close`."""

    def __init__(self, path: Path, fields: list[tuple[str, str, str]]) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.schema = arrow_schema(fields)
        self.rows: list[dict[str, Any]] = []
        self.count = 0
        self.writer = pq.ParquetWriter(str(self.tmp), self.schema, compression="zstd")

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.count += len(self.rows)
            self.rows = []

    def close(self) -> None:
        self.flush()
        if self.count == 0:  # an empty file still carries the schema
            self.writer.write_table(self.schema.empty_table())
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def write_parquet(results: Iterable[RepoResult], out: Path) -> tuple[int, int]:
    """Stream ``results`` into the two Parquet files; returns (adapter rows, module rows)."""
    adapters = _Writer(out / ADAPTERS_FILE, ADAPTER_FIELDS)
    modules = _Writer(out / MODULES_FILE, MODULE_FIELDS)
    try:
        for result in results:
            adapters.add(result.adapters)
            modules.add(result.modules)
    except BaseException:
        adapters.abort()
        modules.abort()
        raise
    adapters.close()
    modules.close()
    return adapters.count, modules.count


@dataclass
class Census:
    """The fleet's figures, read back from adapters.parquet."""

    repos: int = 0
    adapters: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    lora_params: int = 0
    bytes: int = 0
    bytes_saved: int = 0
    utilization_mean: float | None = None
    utilization_median: float | None = None
    energy_fraction_median: float | None = None  # energy_rank_p50 / allocated_rank

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the ``--json`` summary's ``census``)."""
        return {
            "repos": self.repos,
            "adapters": self.adapters,
            "skipped": dict(self.skipped),
            "formats": dict(self.formats),
            "lora_params": self.lora_params,
            "bytes": self.bytes,
            "bytes_saved": self.bytes_saved,
            "utilization_mean": self.utilization_mean,
            "utilization_median": self.utilization_median,
            "energy_fraction_median": self.energy_fraction_median,
        }


def census(out: Path) -> Census:
    """The census of the dataset in ``out`` (only the columns it needs are read)."""
    import pyarrow.parquet as pq

    cols = [
        "repo",
        "status",
        "format",
        "lora_params",
        "bytes",
        "bytes_saved",
        "utilization_mean",
        "energy_rank_p50",
        "allocated_rank",
    ]
    table = pq.read_table(out / ADAPTERS_FILE, columns=cols)
    data = table.to_pydict()
    result = Census(repos=len(set(data["repo"])))
    statuses = Counter(data["status"])
    result.adapters = statuses.pop("ok", 0)
    result.skipped = dict(sorted(statuses.items()))
    ok = [i for i, s in enumerate(data["status"]) if s == "ok"]
    result.formats = dict(sorted(Counter(data["format"][i] for i in ok).items()))
    result.lora_params = sum(data["lora_params"][i] for i in ok)
    result.bytes = sum(data["bytes"][i] for i in ok)
    result.bytes_saved = sum(data["bytes_saved"][i] for i in ok)
    util = [data["utilization_mean"][i] for i in ok]
    frac = [data["energy_rank_p50"][i] / data["allocated_rank"][i] for i in ok]
    if util:
        result.utilization_mean = statistics.fmean(util)
        result.utilization_median = statistics.median(util)
        result.energy_fraction_median = statistics.median(frac)
    return result


def card_text(c: Census, query: dict[str, Any]) -> str:
    """The dataset card: front matter the Hub's viewer reads (two configs), then what the
    dataset is, how it was made, the fleet's figures and every column. Query values are
    escaped (:func:`~gradience_hub.markdown.md`)."""
    shown = {k: v for k, v in query.items() if v not in (None, [], "", False)}
    query_lines = "\n".join(f"- `{md(k)}`: {md(v)}" for k, v in sorted(shown.items()))
    skipped = ", ".join(f"{md(k)}: {v}" for k, v in c.skipped.items()) or "none"

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    def columns(fields: list[tuple[str, str, str]]) -> str:
        return "\n".join(f"| `{n}` | {t} | {d} |" for n, t, d in fields)

    return f"""---
pretty_name: LoRA adapter spectral census
tags:
- lora
- peft
- gradience
configs:
- config_name: adapters
  data_files: {ADAPTERS_FILE}
  default: true
- config_name: modules
  data_files: {MODULES_FILE}
---

# LoRA adapter spectral census

Made by `gradience-hub scan` ({SCHEMA_VERSION}): every adapter of the repos below audited from
its weights alone (stable rank, utilization = stable rank / r, energy rank at tau, suggested
ranks). One row per adapter in `{ADAPTERS_FILE}` (repos that could not be audited are rows
with `status` and `error`), one row per LoRA module in `{MODULES_FILE}`.

## Query

{query_lines}

## Figures

| | |
|---|---|
| repos | {c.repos} |
| adapters audited | {c.adapters} |
| not audited | {skipped} |
| LoRA parameters | {c.lora_params} |
| weight bytes | {c.bytes} |
| bytes the suggested ranks would save | {c.bytes_saved} |
| mean utilization | {pct(c.utilization_mean)} |
| median utilization | {pct(c.utilization_median)} |
| median energy rank / allocated rank | {pct(c.energy_fraction_median)} |

## Columns of `{ADAPTERS_FILE}`

| column | type | meaning |
|---|---|---|
{columns(ADAPTER_FIELDS)}

## Columns of `{MODULES_FILE}`

| column | type | meaning |
|---|---|---|
{columns(MODULE_FIELDS)}
"""


def write_card(out: Path, c: Census, query: dict[str, Any]) -> Path:
    """Write README.md (the card) atomically."""
    path = out / CARD_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(card_text(c, query), encoding="utf-8")
    os.replace(tmp, path)
    return path
