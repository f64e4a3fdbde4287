"""The webhook service (``gradience-hub serve``): keep every adapter's card current by itself.

The Hub POSTs a webhook on every push; the service checks its secret, decides whether the
event is a push to the watched branch of a repo the config serves (:mod:`.events`), records a
job for that (repo, sha) in a durable SQLite queue (:mod:`.queue`), and worker threads run it
(:mod:`.worker`): ``annotate`` of the repo at that sha, by Hub PR or directly on the branch,
exactly as the CLI writes it. :mod:`.config` is the YAML config and the run-time options,
:mod:`.app` the FastAPI app (``/webhook``, ``/healthz``, ``/runs``, ``/``), :mod:`.server`
runs it under uvicorn (or one event with ``--once``), :mod:`.log` writes JSON log lines.

Only :mod:`.app` and :mod:`.server` need the ``serve`` extra (FastAPI, uvicorn).
"""

from gradience_hub.serve.config import RepoRule, ServeConfig, ServeOptions, WatchConfig, load_config
from gradience_hub.serve.events import Decision, PayloadError, parse_payload, route_event
from gradience_hub.serve.queue import Enqueued, Job, JobQueue, QueueFull, Recovery

__all__ = [
    "Decision",
    "Enqueued",
    "Job",
    "JobQueue",
    "PayloadError",
    "QueueFull",
    "Recovery",
    "RepoRule",
    "ServeConfig",
    "ServeOptions",
    "WatchConfig",
    "load_config",
    "parse_payload",
    "route_event",
]
