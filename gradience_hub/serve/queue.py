"""The durable job queue: one SQLite file under ``--state-dir``.

A job is one (repo, sha) to annotate; the pair is UNIQUE, so the same push is never queued
twice (replays and duplicate deliveries are answered "duplicate"). Statuses: ``queued``,
``running``, ``done``, ``failed``, ``skipped`` (not an adapter, superseded, no rule). Every
change is one SQLite transaction in WAL mode, so a ``kill -9`` loses nothing that was answered
202 (annotate is idempotent, so a rerun makes no second commit).

An attempt is counted when the job is claimed, in the same transaction that marks it running,
so a run that kills the process (out of memory, a hang the platform restarts) has already been
counted when :meth:`JobQueue.recover` finds it ``running`` at the next start: below
``max_attempts`` it goes back to the *end* of the queue, at ``max_attempts`` it is failed with
the reason. The queue serves jobs in the order they became runnable (``not_before``, else
``created_at``), not by id, so a job that keeps killing the process never stands in front of
the others.

A newer sha for a repo supersedes its older *queued* jobs (a running one finishes); whichever
job of a repo runs, it audits the branch head it reads from the Hub when it starts
(``audited_sha``), so the order in which pushes are delivered does not matter. A job waits in
``queued`` with ``not_before`` set while it backs off after a 429/5xx. Two jobs of the same
repo never run at once, whatever the number of workers: claiming skips repos that have a
running job, which is what keeps concurrent pushes from racing to open two PRs.

Every text the queue stores goes through ``scrub`` first (the service passes the one secret
scrubber, :class:`gradience_hub.output.Secrets`): a Hub error that echoes the token must not
be kept in the database, nor served from it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from gradience_hub.errors import ConfigError

STATUSES = ("queued", "running", "done", "failed", "skipped")
ACTIVE = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    sha TEXT NOT NULL,
    ref TEXT NOT NULL,
    old_sha TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    not_before REAL,
    webhook_id TEXT,
    pr_url TEXT,
    commit_url TEXT,
    detail TEXT,
    audited_sha TEXT,
    UNIQUE (repo, sha)
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, not_before);
CREATE INDEX IF NOT EXISTS jobs_repo ON jobs (repo, status);
"""
# Columns added after the first release: (name, SQL type). A state directory written by an
# older version gets them at start-up, so its queue keeps working.
_ADDED_COLUMNS = (("audited_sha", "TEXT"),)
# What claim() serves first: the job that became runnable first.
_READY = "COALESCE(not_before, created_at)"


class QueueFull(Exception):
    """``max_queue`` jobs are already queued or running (HTTP 503)."""


@dataclass(frozen=True)
class Job:
    """One row of the queue."""

    id: int
    repo: str
    sha: str
    ref: str
    old_sha: str | None
    status: str
    attempts: int
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    not_before: float | None
    webhook_id: str | None
    pr_url: str | None
    commit_url: str | None
    detail: str | None
    audited_sha: str | None = None  # the branch head the job read from the Hub and audited

    def to_dict(self) -> dict[str, Any]:
        """The JSON form served by ``/runs``."""
        return asdict(self)

    def redacted(self, scrub: Callable[[str], str]) -> Job:
        """A copy with every text field passed through ``scrub`` (what is served)."""
        texts: dict[str, Any] = {
            name: scrub(value)
            for name, value in asdict(self).items()
            if isinstance(value, str) and name not in ("status",)
        }
        return replace(self, **texts)


@dataclass(frozen=True)
class Recovery:
    """What :meth:`JobQueue.recover` did with the jobs a stopped process left ``running``."""

    requeued: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()
    superseded: tuple[int, ...] = ()


def _identity(text: str) -> str:
    return text


@dataclass(frozen=True)
class Enqueued:
    """What :meth:`JobQueue.enqueue` did: the job, whether it is new, whom it superseded."""

    job: Job
    created: bool
    superseded: tuple[int, ...] = ()


class JobQueue:
    """The queue in ``state_dir/jobs.sqlite3``; safe to share between threads.

    ``scrub`` is applied to every text stored from outside (details, URLs): pass the service's
    secret scrubber.
    """

    def __init__(self, state_dir: str | Path, scrub: Callable[[str], str] | None = None) -> None:
        self.path = Path(state_dir) / "jobs.sqlite3"
        self._scrub = scrub or _identity
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            # WAL + synchronous=NORMAL survives a killed process (only power loss may drop
            # the last transactions); busy_timeout covers a second reader such as a backup.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED_COLUMNS:
                if name not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"cannot open the job database {self.path}: {exc}",
                hint="--state-dir must be a writable directory",
                key="--state-dir",
            ) from None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database (the queue is unusable afterwards)."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _job(row: sqlite3.Row | None) -> Job | None:
        return None if row is None else Job(**dict(row))

    # -- writes -------------------------------------------------------------------------------

    def enqueue(
        self,
        repo: str,
        sha: str,
        ref: str,
        *,
        webhook_id: str | None = None,
        old_sha: str | None = None,
        max_queue: int = 1000,
        now: float | None = None,
    ) -> Enqueued:
        """Queue (repo, sha) unless it was seen before; supersede the repo's older queued jobs.

        Raises QueueFull when ``max_queue`` jobs are active (a push that supersedes a queued
        job of its repo does not grow the queue and is still accepted). A push delivered after
        the one that followed it (a job whose ``old_sha`` is this sha exists) is recorded as
        skipped at once: it must not supersede its successor.
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE repo = ? AND sha = ?", (repo, sha)
            ).fetchone()
            if row is not None:
                return Enqueued(Job(**dict(row)), created=False)
            successor = db.execute(
                "SELECT id, sha FROM jobs WHERE repo = ? AND old_sha = ? ORDER BY id LIMIT 1",
                (repo, sha),
            ).fetchone()
            if successor is not None:
                detail = (
                    f"superseded by {successor['sha'][:7]} (job {successor['id']}), "
                    "which was delivered before this push"
                )
                cursor = db.execute(
                    "INSERT INTO jobs (repo, sha, ref, old_sha, status, created_at, updated_at, "
                    "finished_at, webhook_id, detail) "
                    "VALUES (?, ?, ?, ?, 'skipped', ?, ?, ?, ?, ?)",
                    (repo, sha, ref, old_sha, now, now, now, webhook_id, detail),
                )
                late = db.execute("SELECT * FROM jobs WHERE id = ?", (cursor.lastrowid,))
                return Enqueued(Job(**dict(late.fetchone())), created=True)
            active = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')"
            ).fetchone()[0]
            older = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM jobs WHERE repo = ? AND status = 'queued' ORDER BY id", (repo,)
                )
            ]
            if active - len(older) >= max_queue:
                raise QueueFull(f"{active} jobs are queued or running (--max-queue {max_queue})")
            cursor = db.execute(
                "INSERT INTO jobs (repo, sha, ref, old_sha, status, created_at, updated_at, "
                "webhook_id) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                (repo, sha, ref, old_sha, now, now, webhook_id),
            )
            job_id = int(cursor.lastrowid or 0)
            if older:
                marks = ",".join("?" * len(older))
                db.execute(
                    f"UPDATE jobs SET status = 'skipped', updated_at = ?, finished_at = ?, "
                    f"detail = ? WHERE id IN ({marks})",
                    (now, now, f"superseded by {sha[:7]} (job {job_id})", *older),
                )
            job = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Enqueued(Job(**dict(job)), created=True, superseded=tuple(older))

    def claim(self, now: float | None = None, max_attempts: int | None = None) -> Job | None:
        """Mark the runnable queued job that became runnable first running, count the attempt,
        and return it (None: nothing to do).

        The attempt is counted in the same transaction, before anything runs: a run that kills
        the process is an attempt too. A job that has already used ``max_attempts`` (the limit
        was lowered across a restart) is failed here instead of run.
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            while True:
                row = db.execute(
                    "SELECT id, attempts FROM jobs AS j WHERE status = 'queued' "
                    "AND (not_before IS NULL OR not_before <= ?) "
                    "AND NOT EXISTS (SELECT 1 FROM jobs AS r WHERE r.repo = j.repo "
                    f"AND r.status = 'running') ORDER BY {_READY}, id LIMIT 1",
                    (now,),
                ).fetchone()
                if row is None:
                    return None
                if max_attempts is not None and row["attempts"] >= max_attempts:
                    reason = (
                        f"gave up: {row['attempts']} attempts already made "
                        f"(--max-attempts {max_attempts})"
                    )
                    self._fail(db, row["id"], reason, now)
                    continue
                db.execute(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, "
                    "started_at = ?, updated_at = ?, not_before = NULL WHERE id = ?",
                    (now, now, row["id"]),
                )
                job = db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
                return Job(**dict(job))

    def _fail(self, db: sqlite3.Connection, job_id: int, reason: str, now: float) -> None:
        db.execute(
            "UPDATE jobs SET status = 'failed', detail = ?, finished_at = ?, updated_at = ?, "
            "not_before = NULL WHERE id = ?",
            (self._scrub(reason), now, now, job_id),
        )

    def finish(
        self,
        job_id: int,
        status: str,
        detail: str,
        *,
        pr_url: str | None = None,
        commit_url: str | None = None,
        audited_sha: str | None = None,
        now: float | None = None,
    ) -> None:
        """Record a final status (done, failed, skipped) with what happened (scrubbed)."""
        if status not in ("done", "failed", "skipped"):
            raise ValueError(f"not a final status: {status}")
        now = time.time() if now is None else now
        scrub = self._scrub
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status = ?, detail = ?, pr_url = ?, commit_url = ?, "
                "audited_sha = COALESCE(?, audited_sha), finished_at = ?, updated_at = ? "
                "WHERE id = ?",
                (
                    status,
                    scrub(detail),
                    None if pr_url is None else scrub(pr_url),
                    None if commit_url is None else scrub(commit_url),
                    audited_sha,
                    now,
                    now,
                    job_id,
                ),
            )

    @staticmethod
    def _successor(db: sqlite3.Connection, job_id: int) -> sqlite3.Row | None:
        """The newest later job of the same repo, if any (it makes ``job_id`` obsolete)."""
        return db.execute(
            "SELECT id, sha FROM jobs WHERE repo = (SELECT repo FROM jobs WHERE id = ?) "
            "AND id > ? ORDER BY id DESC LIMIT 1",
            (job_id, job_id),
        ).fetchone()

    def _supersede(self, db: sqlite3.Connection, job_id: int, by: sqlite3.Row, now: float) -> None:
        db.execute(
            "UPDATE jobs SET status = 'skipped', detail = ?, finished_at = ?, updated_at = ?, "
            "not_before = NULL WHERE id = ?",
            (f"superseded by {by['sha'][:7]} (job {by['id']})", now, now, job_id),
        )

    def retry(self, job_id: int, delay: float, detail: str, now: float | None = None) -> bool:
        """Put a running job back in the queue, runnable after ``delay`` seconds.

        A newer push of the same repo that arrived while it ran supersedes it instead (the
        job would otherwise publish an older sha after the newer one); returns False then.
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            newer = self._successor(db, job_id)
            if newer is not None:
                self._supersede(db, job_id, newer, now)
                return False
            db.execute(
                "UPDATE jobs SET status = 'queued', not_before = ?, detail = ?, updated_at = ? "
                "WHERE id = ?",
                (now + max(delay, 0.0), self._scrub(detail), now, job_id),
            )
            return True

    def recover(self, max_attempts: int | None = None, now: float | None = None) -> Recovery:
        """After a crash or restart: what to do with the jobs left ``running``.

        Their attempt was counted when they were claimed. A job superseded by a newer push of
        its repo is skipped; one that has used ``max_attempts`` is failed with the reason (the
        process died in every attempt: it is what kills the service); any other goes to the
        end of the queue (runnable now, after every job already waiting).
        """
        now = time.time() if now is None else now
        requeued, failed, superseded = [], [], []
        with self._tx() as db:
            rows = db.execute("SELECT id, attempts FROM jobs WHERE status = 'running'").fetchall()
            for row in rows:
                job_id, tries = int(row["id"]), int(row["attempts"])
                newer = self._successor(db, job_id)
                if newer is not None:
                    self._supersede(db, job_id, newer, now)
                    superseded.append(job_id)
                elif max_attempts is not None and tries >= max_attempts:
                    self._fail(
                        db,
                        job_id,
                        f"gave up after {tries} attempts: the process stopped while running "
                        "it every time (killed: out of memory, or a hang the platform "
                        "restarted?)",
                        now,
                    )
                    failed.append(job_id)
                else:
                    db.execute(
                        "UPDATE jobs SET status = 'queued', not_before = ?, updated_at = ?, "
                        "detail = ? WHERE id = ?",
                        (
                            now,
                            now,
                            f"interrupted: the process stopped during attempt {tries}; "
                            "queued again behind the waiting jobs",
                            job_id,
                        ),
                    )
                    requeued.append(job_id)
        return Recovery(tuple(requeued), tuple(failed), tuple(superseded))

    # -- reads --------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        """One job by id."""
        with self._lock:
            return self._job(
                self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            )

    def page(self, limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        """Jobs newest first, and the total count."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
            total = self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        return [Job(**dict(r)) for r in rows], int(total)

    def counts(self) -> dict[str, int]:
        """Number of jobs per status (every status present, zero included)."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        out = dict.fromkeys(STATUSES, 0)
        out.update({r[0]: int(r[1]) for r in rows})
        return out

    def next_due(self) -> float | None:
        """When the earliest backing-off job becomes runnable (None: none is waiting)."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(not_before) FROM jobs WHERE status = 'queued'"
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])
