"""The worker threads, and the job process each one owns, so that no job can stop the service
or hold a worker for ever.

:class:`WorkerPool` runs ``--workers`` threads that claim jobs from the queue. Each worker
thread owns one child process (:class:`JobProcess`) (``multiprocessing``'s ``spawn`` start: a fresh
interpreter, no copy of the parent's threads, locks or sockets). It is started with the
service and warms up (the imports a job needs) before the first event; then it is sent one job
at a time over a pipe and answers progress log events and the job's
:class:`~gradience_hub.serve.worker.Outcome`. The parent waits for that answer up to
``--job-timeout`` seconds:

- past the limit it kills the child: the job is failed with the reason, and a fresh child is
  started for the next job (a thread cannot be killed; a process can, and then nothing of the
  hung run publishes later);
- when the child dies under a job (the kernel's out-of-memory killer picks the process holding
  the memory, which is the child), the attempt (counted when the job was claimed) ends as
  interrupted: tried again after a backoff below ``--max-attempts``, failed at it;
- when the parent dies (``kill -9``, a platform restart), the child notices at once through
  its parent's sentinel and exits, so a job of a stopped service never publishes afterwards.

The child scrubs its own stdout and stderr (libraries' warnings, tracebacks) with the
service's secrets, as the CLI does for itself; its log events reach the service's log, which
scrubs them again.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from gradience_hub.serve.config import RepoRule, ServeConfig, ServeOptions
from gradience_hub.serve.queue import Job, JobQueue
from gradience_hub.serve.worker import Log, Outcome, interrupted, record, timed_out

# How long a child may take to leave after its pipe closes before it is killed.
_GRACE = 2.0
# How long a fresh child may take to import what jobs need (seconds on a loaded machine).
_WARM_UP = 300.0


def _died(exitcode: int | None) -> str:
    """Why a child process ended, in words."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"the job's process was killed by {name}{hint}"
    return f"the job's process exited with status {exitcode} during the job"


class JobProcess:
    """One worker's job process: :meth:`run` sends it a job and waits for the outcome."""

    def __init__(self, log: Log, name: str = "gradience-job") -> None:
        self._log = log
        self._name = name
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._ready = False  # the child said it is warmed up
        self._lock = threading.Lock()
        self._stopped: str | None = None  # why stop() ended the process, when it did

    def start(self) -> None:
        """Start the child (it warms up by itself); a no-op while one is alive."""
        with self._lock:
            if self._proc is not None and self._proc.is_alive():
                return
            context = multiprocessing.get_context("spawn")
            ours, theirs = context.Pipe(duplex=True)
            # not a daemon: a bench job may start processes of its own, which a daemonic
            # process may not; stop() ends it instead
            proc = context.Process(target=child_main, args=(theirs,), name=self._name)
            proc.start()
            theirs.close()
            self._proc, self._conn, self._ready = proc, ours, False

    def run(self, job: Job, rule: RepoRule | None, options: ServeOptions) -> Outcome:
        """Run one attempt of ``job`` in the child; never raises."""
        started = time.perf_counter()
        try:
            self.start()
            outcome = self._exchange(job, rule, options)
        except Exception as exc:  # the pipe itself failed: the child is gone or unusable
            self._discard()
            outcome = interrupted(job, options, f"the job's process failed: {exc}")
        return dataclasses.replace(outcome, seconds=time.perf_counter() - started)

    def _receive(self, until: float) -> tuple[str, Any]:
        """The child's next message other than a log event (those are written as they come):
        ``("ready", None)``, ``("outcome", Outcome)``, ``("lost", None)`` when the child
        ended without one, ``("timeout", None)`` at ``until`` (a monotonic time)."""
        proc, conn = self._proc, self._conn
        assert proc is not None and conn is not None
        while True:
            left = until - time.monotonic()
            ready = multiprocessing.connection.wait([conn, proc.sentinel], max(left, 0.0))
            if conn in ready:
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    return "lost", None
                if kind == "log":
                    fields = dict(payload)
                    self._log(fields.pop("event"), **fields)
                    continue
                return kind, payload
            if ready:  # the sentinel alone: the child ended without an answer
                return "lost", None
            return "timeout", None

    def _exchange(self, job: Job, rule: RepoRule | None, options: ServeOptions) -> Outcome:
        if not self._ready:
            # a fresh child imports what jobs need first: that is not the job's time
            kind, _ = self._receive(time.monotonic() + _WARM_UP)
            if kind != "ready":
                return self._lost(job, options)
            self._ready = True
        assert self._conn is not None
        # the child needs the retry policy, not the secrets
        self._conn.send((job, rule, dataclasses.replace(options, secret=None, status_token=None)))
        kind, payload = self._receive(time.monotonic() + options.job_timeout)
        if kind == "outcome":
            assert isinstance(payload, Outcome)
            return payload
        if kind == "lost":
            return self._lost(job, options)
        self._log(
            "job.timeout", level="error", job=job.id, repo=job.repo, limit=options.job_timeout
        )
        self._discard()
        return timed_out(options.job_timeout)

    def _lost(self, job: Job, options: ServeOptions) -> Outcome:
        proc = self._proc
        assert proc is not None
        proc.join(_GRACE)
        why = self._stopped or _died(proc.exitcode)
        self._discard()
        return interrupted(job, options, why)

    def _discard(self) -> None:
        """Kill the child (if alive) and forget it; the next run starts a fresh one."""
        with self._lock:
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(_GRACE)

    def stop(self, reason: str = "the service stopped during the job") -> None:
        """End the child: an idle one leaves when its pipe closes, a busy one is killed (its
        job then ends as interrupted with ``reason``)."""
        with self._lock:
            proc, conn = self._proc, self._conn
            self._stopped = reason
        if proc is None or conn is None:
            return
        if proc.is_alive():
            proc.kill()
        proc.join(_GRACE)


class WorkerPool:
    """``options.workers`` threads that claim jobs from the queue and run each in the thread's
    own job process (:class:`JobProcess`)."""

    def __init__(
        self, queue: JobQueue, config: ServeConfig, options: ServeOptions, log: Log
    ) -> None:
        self.queue, self.config, self.options, self.log = queue, config, options, log
        self._wake = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._runners: list[JobProcess] = []

    def start(self) -> None:
        """Start the worker threads and their job processes (none with ``--workers 0``)."""
        for i in range(self.options.workers):
            runner = JobProcess(self.log, name=f"gradience-job-{i}")
            runner.start()  # warms up (imports) before the first event arrives
            self._runners.append(runner)
            thread = threading.Thread(
                target=self._loop, args=(runner,), name=f"gradience-worker-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """A job was queued: let an idle worker look now."""
        with self._wake:
            self._wake.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the workers to stop after their current job; wait up to ``timeout`` seconds.

        A job still running then is stopped with its process; its attempt counts, and it runs
        again (at the end of the queue) unless that was its last.
        """
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        for runner in self._runners:
            runner.stop("the service stopped during the job")
        for thread in self._threads:
            thread.join(1.0)  # let a worker record the job its process was running
        self._threads, self._runners = [], []

    def _idle_wait(self) -> None:
        due = self.queue.next_due()
        timeout = 5.0 if due is None else min(max(due - time.time(), 0.01), 5.0)
        with self._wake:
            if not self._stopping:
                self._wake.wait(timeout)

    def _loop(self, runner: JobProcess) -> None:
        while not self._stopping:
            try:
                job = self.queue.claim(max_attempts=self.options.max_attempts)
            except Exception as exc:  # the database failed: say so, keep trying
                self.log("queue.error", level="error", error=f"{type(exc).__name__}: {exc}")
                time.sleep(1.0)
                continue
            if job is None:
                self._idle_wait()
                continue
            self.log("job.started", job=job.id, repo=job.repo, sha=job.sha, attempt=job.attempts)
            outcome = runner.run(job, self.config.rule_for(job.repo), self.options)
            try:
                record(self.queue, job, outcome, self.log)
            except Exception as exc:
                self.log("queue.error", level="error", error=f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- the child


def _exit_with_parent() -> None:
    """Exit as soon as the parent process is gone, even in the middle of a job."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(70)  # no cleanup: nothing of an orphaned job may run on

    threading.Thread(target=watch, name="gradience-parent-watch", daemon=True).start()


def child_main(conn: Connection) -> None:
    """The job process's entry point: warm up, then run the jobs the parent sends."""
    from gradience_hub.output import guarded
    from gradience_hub.serve.log import service_secrets
    from gradience_hub.serve.worker import attempt, warm_up

    _exit_with_parent()

    def log(event: str, level: str = "info", **fields: Any) -> None:
        conn.send(("log", {"event": event, "level": level, **fields}))

    # this process is ours from its first line, as the CLI's is: its output is scrubbed
    with guarded(service_secrets()):
        warm_up(log)
        conn.send(("ready", None))
        while True:
            try:
                job, rule, options = conn.recv()
            except (EOFError, OSError):
                return  # the parent closed the pipe: stop
            conn.send(("outcome", attempt(job, rule, options, log)))
