"""Structured log lines: one JSON object per line on stderr, secrets redacted.

Every line has ``ts`` (UTC ISO time), ``level`` and ``event`` (``webhook.queued``,
``job.done``...), then the event's fields. Values from webhooks are JSON-escaped, so a hostile
repo name cannot forge a line; the secrets the service holds (HF_TOKEN, WEBHOOK_SECRET) are
replaced by ``***`` wherever they would appear, as a second guard: no code path logs them.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import datetime, timezone
from typing import Any, TextIO


class EventLog:
    """A callable ``log(event, level="info", **fields)`` writing JSON lines."""

    def __init__(self, stream: TextIO | None = None, secrets: tuple[str | None, ...] = ()) -> None:
        self._stream = stream
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)
        self._lock = threading.Lock()

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        record = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "level": level,
            "event": event,
            **{k: v for k, v in fields.items() if v is not None},
        }
        line = self.redact(json.dumps(record, default=str, ensure_ascii=True))
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(line + "\n")
            stream.flush()


class ForwardHandler(logging.Handler):
    """Sends standard-library log records (uvicorn's) through an EventLog as JSON lines."""

    def __init__(self, log: EventLog) -> None:
        super().__init__()
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self._log(record.name, level=record.levelname.lower(), message=message)
        except Exception:
            self.handleError(record)


def forward_library_logs(log: EventLog, names: tuple[str, ...] = ("uvicorn",)) -> None:
    """Route the named loggers (warnings and up) to ``log``, so every line is JSON."""
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers[:] = [ForwardHandler(log)]
        logger.setLevel(logging.WARNING)
        logger.propagate = False
