"""The scan's resume journal: one JSON line per finished repo, appended and fsynced.

A scan can be killed at any instant (SIGKILL, a preempted node), so a finished repo is recorded
before the next one is reported done, with one ``write`` of one line, flushed and fsynced. A line
cut short by the kill is not a finished repo: :meth:`Journal.open` drops it (truncating the file
back to the last newline, so later appends start on a line of their own) and the repo is redone.
A repo recorded as a Hub failure (``transient``) is redone by the next ``--resume``; its later
record supersedes it (:meth:`Journal.results`).

The journal also holds the query (``query.json``): ``--resume`` with another query would mix
two scans in one dataset, so it is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from gradience_hub.errors import UsageError
from gradience_hub.scan.records import RepoResult

STATE_DIR = ".scan"


class Journal:
    """Append-only record of finished repos under ``OUT/.scan/``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "journal.jsonl"
        self._fh: IO[bytes] | None = None

    @classmethod
    def open(cls, out: Path, query: dict[str, Any], resume: bool) -> Journal:
        """The journal of a scan into ``out``: fresh, or the one ``--resume`` continues."""
        journal = cls(out / STATE_DIR)
        query_path = journal.directory / "query.json"
        if journal.path.exists() or query_path.exists():
            if not resume:
                raise UsageError(
                    f"{out} already holds a scan",
                    hint="continue it with --resume, or pass another -o directory",
                )
            try:
                saved = json.loads(query_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = None
            if saved != query:
                raise UsageError(
                    f"--resume: {out} holds a scan of another query ({_describe(saved)})",
                    hint="resume with the same sources and options, or pass another -o directory",
                )
            journal._drop_torn_tail()
        else:
            journal.directory.mkdir(parents=True, exist_ok=True)
            tmp = query_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(query, sort_keys=True), encoding="utf-8")
            os.replace(tmp, query_path)
            journal.path.touch()
        return journal

    def _drop_torn_tail(self) -> None:
        """Cut a last line the kill left without its newline (or unparsable): not finished."""
        if not self.path.exists():
            self.path.touch()
            return
        with self.path.open("rb+") as fh:
            data = fh.read()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                fh.truncate(keep)

    def _lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self.path.open("rb") as fh:
            for index, line in enumerate(fh):
                try:
                    yield index, json.loads(line)
                except ValueError:
                    continue  # a torn line cannot be resumed from; its repo is redone

    def finished(self) -> set[str]:
        """Repo ids already recorded for good (not a Hub failure to retry)."""
        state: dict[str, bool] = {}
        for _, data in self._lines():
            state[str(data["repo"])] = not data.get("transient")
        return {repo for repo, good in state.items() if good}

    def append(self, result: RepoResult) -> None:
        """Record a finished repo durably (one write, flushed and fsynced)."""
        if self._fh is None:
            self._fh = self.path.open("ab")
        line = json.dumps(result.to_json(), separators=(",", ":"), allow_nan=False) + "\n"
        self._fh.write(line.encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the append handle."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def results(self) -> Iterator[RepoResult]:
        """Every repo's final record, streamed (two passes over the file: the first only notes
        the repos recorded more than once, i.e. retried after a Hub failure)."""
        last: dict[str, int] = {}
        for index, data in self._lines():
            repo = str(data["repo"])
            if repo in last or data.get("transient"):
                last[repo] = index
        for index, data in self._lines():
            repo = str(data["repo"])
            if repo not in last or last[repo] == index:
                yield RepoResult.from_json(data)


def _describe(query: Any) -> str:
    if not isinstance(query, dict):
        return "unreadable query.json"
    shown = {k: v for k, v in query.items() if v not in (None, [], "", False)}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))[:200]
