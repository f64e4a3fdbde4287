"""The telemetry JSONL file the Trainer callback appends to and ``monitor`` reads.

One JSON object per line: ``{"schema": "gradience-hub/telemetry/v1", "step", "epoch", "event"
("evaluate" | "save" | "train_end"), "summary": telemetry.snapshot(...)}``. Appending is one
``write`` of a whole line (a crash leaves at most a torn last line, which the reader drops with
a warning); lines of other schemas or unreadable ones are skipped with a warning, never fatal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gradience_hub.errors import RecordError
from gradience_hub.telemetry import SCHEMA, Point


def event_line(step: int, epoch: float | None, event: str, summary: dict[str, Any]) -> str:
    """One JSONL line (with its newline)."""
    record = {"schema": SCHEMA, "step": step, "epoch": epoch, "event": event, "summary": summary}
    return json.dumps(record, allow_nan=False, sort_keys=True) + "\n"


def append_event(path: str | os.PathLike[str], line: str) -> None:
    """Append one line in a single write (O_APPEND)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _point(obj: Any) -> Point:
    summary = obj["summary"]
    overall = {k: float(v) for k, v in summary["overall"].items()}
    by_type = {
        str(t): {k: float(v) for k, v in group.items()} for t, group in summary["by_type"].items()
    }
    return Point(int(obj["step"]), overall, by_type, int(summary["allocated_rank"]))


def read_points(path: str | os.PathLike[str]) -> tuple[list[Point], list[str]]:
    """The snapshots of a telemetry file, in step order (the last one per step wins), and
    warnings for the lines skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise RecordError(f"cannot read {path}: {why}", hint="pass the telemetry JSONL") from None
    points: dict[int, Point] = {}
    warnings: list[str] = []
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
                warnings.append(f"line {number}: not a {SCHEMA} record, skipped")
                continue
            point = _point(obj)
        except (ValueError, KeyError, TypeError, AttributeError):
            torn = number == len(lines) and not text.endswith("\n")
            warnings.append(f"line {number}: {'torn (cut off)' if torn else 'unreadable'}, skipped")
            continue
        if point.overall:
            points[point.step] = point
    if not points:
        raise RecordError(
            f"{path} holds no telemetry snapshot ({SCHEMA})",
            hint="train with GradienceHubCallback(telemetry=...) to record one",
        )
    return [points[s] for s in sorted(points)], warnings
