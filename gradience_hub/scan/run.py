"""Run a scan: the targets, the executor, the journal, the progress bar, the outputs.

Targets are produced lazily (a Hub listing is paged as it is consumed) and at most
``2 * workers`` repos are in flight at once, so memory does not grow with the number of repos:
each finished repo goes to the journal and is dropped. The dataset and the page are written
from the journal at the end, streamed.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from gradience_hub.errors import MissingExtraError, UsageError
from gradience_hub.hub import listing
from gradience_hub.scan.journal import Journal
from gradience_hub.scan.records import RepoResult
from gradience_hub.scan.worker import (
    DEFAULT_MAX_BYTES,
    local_entries,
    scan_hub_repo,
    scan_local_entry,
)

EXECUTORS = ("local", "ray")
MAX_WORKERS = 64


@dataclass(frozen=True)
class ScanQuery:
    """What to scan and how (validated here, before any request)."""

    author: str | None = None
    search: str | None = None
    filters: tuple[str, ...] = ()
    limit: int | None = None
    from_file: str | None = None
    folder: str | None = None
    energy: float = 0.9
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        hub = bool(self.author or self.search or self.filters)
        chosen = sum([hub, self.from_file is not None, self.folder is not None])
        if chosen != 1:
            raise UsageError(
                "scan needs exactly one source: --author/--search/--filter, --from FILE, or DIR",
                hint="e.g. gradience-hub scan --author ORG -o out/",
            )
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be at least 1, got {self.limit}")
        if not 0.0 < self.energy <= 1.0:
            raise UsageError(f"--energy must be in (0, 1], got {self.energy}")
        if self.max_bytes < 1:
            raise UsageError(f"--max-bytes must be positive, got {self.max_bytes}")
        if self.folder is not None and not Path(self.folder).is_dir():
            raise UsageError(
                f"not a directory: {self.folder}",
                hint="pass a folder holding adapters, or a Hub query (--author ORG)",
            )
        if self.from_file is not None:
            if not Path(self.from_file).is_file():
                raise UsageError(f"--from: no such file: {self.from_file}")
            read_repo_list(self.from_file)  # a bad line is refused before any state is written

    def to_json(self) -> dict[str, Any]:
        """The query as the journal keeps it (paths absolute, so a resume from elsewhere
        matches)."""
        data = asdict(self)
        data["filters"] = list(self.filters)
        for key in ("from_file", "folder"):
            if data[key] is not None:
                data[key] = str(Path(data[key]).resolve())
        return data


def read_repo_list(path: str) -> list[str]:
    """Repo ids from a file, one per line (``#`` comments and blank lines ignored); a line
    that is not a repo id is refused with its line number, before any request."""
    ids: list[str] = []
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        repo, _, _ = line.partition("@")
        if not _is_repo_id(repo):
            from gradience_hub.output import clean

            raise UsageError(
                f"--from {path}, line {number}: not a repo id: {clean(line)[:80]!r}",
                hint="one Hub repo id (org/name) per line",
            )
        ids.append(repo)
    return ids


def _is_repo_id(text: str) -> bool:
    from gradience_hub.markdown import is_repo_id

    return "/" in text and is_repo_id(text)


def targets(query: ScanQuery) -> Iterator[str]:
    """The repos (or local entries) to scan, lazily, each once."""
    if query.folder is not None:
        yield from local_entries(Path(query.folder))
        return
    if query.from_file is not None:
        yield from dict.fromkeys(read_repo_list(query.from_file))
        return
    # A listing can repeat an id across pages when the Hub's order moves under it.
    seen: set[str] = set()
    for item in listing.list_repos(
        author=query.author, search=query.search, filters=query.filters, limit=query.limit
    ):
        if item.repo_id not in seen:
            seen.add(item.repo_id)
            yield item.repo_id


def worker_for(query: ScanQuery) -> Callable[[str], RepoResult]:
    """The per-target function (picklable: a partial of a module-level function)."""
    if query.folder is not None:
        return partial(_local, str(Path(query.folder).resolve()), query.energy)
    return partial(scan_hub_repo, energy=query.energy, max_bytes=query.max_bytes)


def _local(root: str, energy: float, entry: str) -> RepoResult:
    return scan_local_entry(Path(root), entry, energy=energy)


def local_map(
    fn: Callable[[str], RepoResult], items: Iterable[str], workers: int
) -> Iterator[RepoResult]:
    """Run ``fn`` over ``items`` on ``workers`` threads, at most ``2 * workers`` in flight,
    yielding results as they finish."""
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan") as pool:
        pending: set[Future[RepoResult]] = set()
        try:
            while True:
                while len(pending) < 2 * workers:
                    item = next(it, None)
                    if item is None:
                        break
                    pending.add(pool.submit(fn, item))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        finally:
            for fut in pending:
                fut.cancel()


def ray_map(
    fn: Callable[[str], RepoResult], items: Iterable[str], workers: int, address: str | None
) -> Iterator[RepoResult]:
    """Run ``fn`` as Ray tasks (one per repo), at most ``2 * workers`` in flight. Workers reach
    the Hub themselves, with the environment they were started with (HF_ENDPOINT, HF_TOKEN)."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError("ray", "ray") from None
    if not ray.is_initialized():
        try:
            # "local" always starts a fresh cluster of this machine; none means a running one
            # (ray start), else a fresh one
            ray.init(address=address or "auto", log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError):
            if address:
                raise UsageError(
                    f"cannot connect to the Ray cluster at {address}",
                    hint="check --ray-address, or omit it to start a local cluster",
                ) from None
            ray.init(log_to_driver=False)
    remote = ray.remote(_call).options(num_cpus=1, max_retries=3, retry_exceptions=False)
    it = iter(items)
    pending: list[Any] = []
    try:
        while True:
            while len(pending) < 2 * workers:
                item = next(it, None)
                if item is None:
                    break
                pending.append(remote.remote(fn, item))
            if not pending:
                return
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in ready:
                yield RepoResult.from_json(ray.get(ref))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def _call(fn: Callable[[str], RepoResult], item: str) -> dict[str, Any]:
    return fn(item).to_json()


@dataclass
class Progress:
    """Counts shown on the bar and returned in the summary."""

    repos: int = 0
    adapters: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    resumed: int = 0

    def add(self, result: RepoResult) -> None:
        """Count one finished repo."""
        self.repos += 1
        for row in result.adapters:
            if row["status"] == "ok":
                self.adapters += 1
            else:
                self.skipped[row["status"]] += 1

    def postfix(self) -> str:
        """The bar's counts: adapters audited, repos skipped (by kind)."""
        skipped = sum(self.skipped.values())
        return f"adapters={self.adapters} skipped={skipped}"


def execute(
    query: ScanQuery,
    out: Path,
    *,
    resume: bool = False,
    workers: int = 4,
    executor: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
) -> tuple[Journal, Progress, float]:
    """Scan every target not already in the journal; returns the journal, the counts of this
    run and its wall time. Outputs are written by :func:`gradience_hub.scan.outputs.write`."""
    if executor not in EXECUTORS:
        raise UsageError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor}")
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 1 and {MAX_WORKERS}, got {workers}")
    if query.folder is not None and Path(out).resolve().is_relative_to(
        Path(query.folder).resolve()
    ):
        raise UsageError("-o must not be inside the scanned folder", hint="pass another -o")
    out.mkdir(parents=True, exist_ok=True)
    journal = Journal.open(out, query.to_json(), resume)
    finished = journal.finished()
    counts = Progress(resumed=len(finished))
    todo = (t for t in targets(query) if t not in finished)
    fn = worker_for(query)
    results = (
        ray_map(fn, todo, workers, ray_address)
        if executor == "ray"
        else local_map(fn, todo, workers)
    )
    from tqdm import tqdm

    start = time.perf_counter()
    bar = tqdm(
        total=query.limit,
        unit="repo",
        desc="scan",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    try:
        for result in results:
            journal.append(result)
            counts.add(result)
            bar.update(1)
            bar.set_postfix_str(counts.postfix(), refresh=False)
    finally:
        bar.close()
        journal.close()
    return journal, counts, time.perf_counter() - start
