"""Structured log lines: one JSON object per line on stderr, secrets scrubbed.

Every line has ``ts`` (UTC ISO time), ``level`` and ``event`` (``webhook.queued``,
``job.done``...), then the event's fields. Values from webhooks are JSON-escaped, so a hostile
repo name cannot forge a line.

:func:`service_secrets` is the one list of what the service must never let out: the Hub token
(however huggingface_hub found it), WEBHOOK_SECRET and STATUS_TOKEN. The service hands its
:class:`~gradience_hub.output.Secrets` to everything that writes or serves text (this log, the
job queue, the status pages, ``serve --once``'s output, a job's own process), so a Hub error
that echoes the ``Authorization`` header is blanked wherever it would go.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TextIO

from gradience_hub.output import Secrets

# Environment variables whose values the service holds and must never show.
SECRET_VARIABLES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "WEBHOOK_SECRET",
    "STATUS_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
)


def _hub_token() -> str | None:
    if "huggingface_hub" not in sys.modules:
        return None  # not loaded: no request was made, so no token can be echoed
    from gradience_hub.hub import token

    return token()


def service_secrets(environ: Mapping[str, str] | None = None) -> Secrets:
    """The secrets of the service: the variables above, and the token huggingface_hub sends
    (a saved login included), asked once the client is loaded."""
    environ = os.environ if environ is None else environ
    secrets = Secrets()
    for name in SECRET_VARIABLES:
        secrets.add(environ.get(name))
    secrets.add_provider(_hub_token)
    return secrets


class EventLog:
    """A callable ``log(event, level="info", **fields)`` writing JSON lines, scrubbed."""

    def __init__(self, stream: TextIO | None = None, secrets: Secrets | None = None) -> None:
        self._stream = stream
        self.secrets = secrets if secrets is not None else Secrets()
        self._lock = threading.Lock()

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        return self.secrets.scrub(text)

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
