"""Compressed adapters written for a serving stack: ``--pad-to R`` and ``--budget-params N`` /
``--budget-mb M`` end to end, each stamped with the footprint the stack will see.

Both write through the same checks as every compression (output rules, self-check, the peft
reload) and, before the finished directory is moved into place, store the
:class:`~gradience_hub.compress.sizing.ServingFootprint` in the weights file's header (the file
size in it is the final one). A byte budget is checked against the written file there too, so
an over-budget file is never installed (it cannot happen: the plan bounds the header from
above; the check makes a bug an error rather than a silent overrun).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradience_hub.adapter import SAFETENSORS_NAME, Adapter
from gradience_hub.compress.pad import pad_adapter
from gradience_hub.compress.result import CompressionResult, format_result
from gradience_hub.compress.sizing import (
    BudgetPlan,
    BudgetRule,
    ServingFootprint,
    footprint,
    plan_budget,
    stamp,
)
from gradience_hub.compress.write import check_output, compress_adapter
from gradience_hub.errors import AdapterError, UsageError
from gradience_hub.hub.source import load_adapter


@dataclass
class ServingResult:
    """A compression written for serving: what was written, the footprint the serving stack
    sees, and for a budget the plan beside its uniform baseline and relaxation bound."""

    result: CompressionResult
    footprint: ServingFootprint
    plan: BudgetPlan | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document: the compression's, plus ``serving`` and ``budget``."""
        out = self.result.to_dict()
        out["serving"] = self.footprint.to_dict()
        if self.plan is not None:
            out["budget"] = self.plan.to_dict()
        return out

    def text(self) -> str:
        """The terminal report: the compression table, the budget figures, the footprint."""
        lines = format_result(self.result).rstrip("\n").split("\n")
        if self.plan is not None:
            lines += ["", *self.plan.lines()]
        lines += ["", *self.footprint.lines()]
        return "\n".join(lines) + "\n"


def _weights_name(adapter: Adapter) -> str:
    return adapter.weights_path.name if adapter.layout is not None else SAFETENSORS_NAME


class _Finisher:
    """Stamps the footprint into the finished temporary directory (and checks a byte budget)
    before it is installed; keeps the stamped footprint for the result."""

    def __init__(self, adapter: Adapter, max_bytes: int | None) -> None:
        self.weights_name = _weights_name(adapter)
        self.max_bytes = max_bytes
        self.stamped: ServingFootprint | None = None

    def __call__(self, tmp: Path, result: CompressionResult) -> None:
        rows = result.modules
        fp = footprint(
            {m.name: m.r_new for m in rows},
            {m.name: m.scale for m in rows},
            sum(m.params_new for m in rows),
            0,
        )
        self.stamped = stamp(tmp / self.weights_name, fp)
        if self.max_bytes is not None and self.stamped.file_bytes > self.max_bytes:
            raise AdapterError(
                f"the written file has {self.stamped.file_bytes:,} bytes, over the budget of "
                f"{self.max_bytes:,}",
                hint="report this as a bug",
            )


def compress_padded(
    source: str,
    output: str | Path,
    pad_to: int,
    *,
    revision: str | None = None,
    adapter_name: str | None = None,
    force: bool = False,
    verify: bool | None = None,
    base_model: Any = None,
) -> ServingResult:
    """``compress SOURCE --pad-to R``: every module at rank R, the update unchanged."""
    if pad_to < 1:
        raise UsageError(f"--pad-to must be at least 1, got {pad_to}")
    adapter, info = load_adapter(source, revision, adapter_name)
    finisher = _Finisher(adapter, None)
    result = pad_adapter(
        adapter,
        pad_to,
        output,
        verify=verify,
        base_model=base_model,
        source=info.display,
        check_output=lambda out, a: check_output(out, a, force),
        finish=finisher,
    )
    result.warnings[:0] = info.warnings
    assert finisher.stamped is not None
    return ServingResult(result, finisher.stamped)


def compress_budget(
    source: str,
    output: str | Path,
    rule: BudgetRule,
    *,
    revision: str | None = None,
    adapter_name: str | None = None,
    force: bool = False,
    verify: bool | None = None,
    base_model: Any = None,
) -> ServingResult:
    """``compress SOURCE --budget-params N | --budget-mb M``: the ranks of :func:`plan_budget`,
    written by :func:`compress_adapter`, the footprint stamped and a byte budget checked."""
    adapter, info = load_adapter(source, revision, adapter_name)
    check_output(Path(output), adapter, force)
    plan = plan_budget(adapter, rule)
    finisher = _Finisher(adapter, rule.budget if rule.unit == "bytes" else None)
    result = compress_adapter(
        adapter,
        plan.ranks,
        output,
        verify=verify,
        base_model=base_model,
        force=force,
        source=info.display,
        finish=finisher,
    )
    result.mode = plan.mode
    result.warnings[:0] = info.warnings
    assert finisher.stamped is not None
    return ServingResult(result, finisher.stamped, plan)
