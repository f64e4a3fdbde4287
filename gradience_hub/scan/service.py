"""A scan end to end: targets audited into the journal, then the dataset, its card, the page,
and the optional push, with a summary for ``--json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradience_hub.errors import UsageError
from gradience_hub.hub import listing
from gradience_hub.output import clean
from gradience_hub.scan import dataset, portfolio
from gradience_hub.scan.run import ScanQuery, execute

SUMMARY_SCHEMA = "gradience-hub/scan-summary/v1"


def _check_dataset_id(repo_id: str) -> None:
    from gradience_hub.markdown import is_repo_id

    if "/" not in repo_id or not is_repo_id(repo_id):
        raise UsageError(
            f"--push-to-hub: not a dataset repo id: {clean(repo_id)[:80]!r}",
            hint="pass USER/DATASET",
        )


def scan(
    query: ScanQuery,
    out: Path,
    *,
    resume: bool = False,
    workers: int = 4,
    executor: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
    push_to: str | None = None,
) -> dict[str, Any]:
    """Scan, write ``out``'s dataset and page, push when asked; returns the summary."""
    if push_to is not None:
        _check_dataset_id(push_to)  # before hours of scanning, not after
    journal, counts, elapsed = execute(
        query,
        out,
        resume=resume,
        workers=workers,
        executor=executor,
        ray_address=ray_address,
        progress=progress,
    )
    n_adapters, n_modules = dataset.write_parquet(journal.results(), out)
    census = dataset.census(out)
    dataset.write_card(out, census, query.to_json())
    portfolio.write_page(out, census, "LoRA adapter portfolio")
    pushed = None
    if push_to is not None:
        files = {
            name: out / name
            for name in (
                dataset.ADAPTERS_FILE,
                dataset.MODULES_FILE,
                dataset.CARD_FILE,
                portfolio.PAGE_FILE,
            )
        }
        pushed = listing.push_dataset(push_to, files, "gradience-hub scan: update the census")
    transient = census.skipped.get("hub-error", 0)
    return {
        "schema": SUMMARY_SCHEMA,
        "output": str(out),
        "this_run": {
            "repos": counts.repos,
            "adapters": counts.adapters,
            "skipped": dict(sorted(counts.skipped.items())),
            "resumed_from": counts.resumed,
            "elapsed_s": round(elapsed, 3),
            "adapters_per_min": round(60 * counts.adapters / elapsed, 1) if elapsed else None,
        },
        "census": census.to_dict(),
        "rows": {"adapters": n_adapters, "modules": n_modules},
        "files": [
            dataset.ADAPTERS_FILE,
            dataset.MODULES_FILE,
            dataset.CARD_FILE,
            portfolio.PAGE_FILE,
        ],
        "retry_with_resume": transient,
        "pushed": pushed,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary in a few lines of text."""
    c = summary["census"]
    skipped = ", ".join(f"{k} {v}" for k, v in c["skipped"].items()) or "none"
    util = c["utilization_mean"]
    lines = [
        f"Scanned {c['repos']} repos: {c['adapters']} adapters audited; not audited: {skipped}.",
        f"Mean utilization {util:.3f}; the suggested ranks would save {c['bytes_saved']} bytes."
        if util is not None
        else "No adapter was audited.",
        f"Wrote {', '.join(summary['files'])} to {summary['output']}.",
    ]
    if summary["retry_with_resume"]:
        lines.append(
            f"{summary['retry_with_resume']} repos failed on the Hub's side: rerun with --resume."
        )
    if summary["pushed"]:
        lines.append(f"Pushed: {summary['pushed']}")
    return "\n".join(clean(line) for line in lines) + "\n"
