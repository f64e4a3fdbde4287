"""``gradience-hub scan``: audit every adapter of an org, a Hub query, a list or a folder.

Exposes :data:`scan_command` (a click command; the CLI group registers it) and :func:`main`
for ``python -m gradience_hub.scan``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

# worker.DEFAULT_MAX_BYTES (the Hub reader's LoRA file cap), written out so that --help does not
# import the audit's numpy stack; tests/test_scan.py pins the two equal.
DEFAULT_MAX_BYTES = 2 * 1024**3


@click.command("scan")
@click.argument("folder", required=False, metavar="[DIR]")
@click.option("--author", help="Every model repo of this user or org on the Hub.")
@click.option("--search", help="Model repos whose id contains this text.")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    help="Only repos with this tag (repeatable: all must match), e.g. peft, lora, "
    "base_model:adapter:ORG/NAME.",
)
@click.option("--limit", type=int, help="At most this many repos from the listing.")
@click.option(
    "--from",
    "from_file",
    type=click.Path(dir_okay=False),
    help="A file of repo ids, one per line.",
)
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for adapters.parquet, modules.parquet, README.md and index.html.",
)
@click.option("--resume", is_flag=True, help="Continue a killed or failed scan in -o.")
@click.option("--workers", type=int, default=4, show_default=True, help="Repos downloaded at once.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where the audits run: threads here, or tasks on a Ray cluster.",
)
@click.option("--ray-address", help="Ray cluster address (default: a running one, else local).")
@click.option("--energy", type=float, default=0.9, show_default=True, help="Energy threshold.")
@click.option(
    "--max-bytes",
    type=int,
    default=DEFAULT_MAX_BYTES,
    show_default=True,
    help="Skip a repo whose adapter files are larger (recorded as too-large).",
)
@click.option("--push-to-hub", "push_to", metavar="USER/DATASET", help="Publish the dataset.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def scan_command(
    folder: str | None,
    author: str | None,
    search: str | None,
    filters: tuple[str, ...],
    limit: int | None,
    from_file: str | None,
    output: str,
    resume: bool,
    workers: int,
    executor: str,
    ray_address: str | None,
    energy: float,
    max_bytes: int,
    push_to: str | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Audit every adapter of many repos into a dataset and a portfolio page."""
    from gradience_hub.scan.run import ScanQuery
    from gradience_hub.scan.service import format_summary, scan

    query = ScanQuery(
        author=author,
        search=search,
        filters=tuple(filters),
        limit=limit,
        from_file=from_file,
        folder=folder,
        energy=energy,
        max_bytes=max_bytes,
    )
    summary = scan(
        query,
        Path(output),
        resume=resume,
        workers=workers,
        executor=executor,
        ray_address=ray_address,
        progress=not no_progress and not as_json and sys.stderr.isatty(),
        push_to=push_to,
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2, allow_nan=False))
    else:
        click.echo(format_summary(summary))


def main(argv: list[str] | None = None) -> None:
    """Run ``scan`` through the CLI's error handling (exit codes, one-line errors, scrubbed
    output); the CLI group registers :data:`scan_command` itself, and this imports it not."""
    from gradience_hub.entry import run_command

    run_command(scan_command, sys.argv[1:] if argv is None else argv, "gradience-hub scan")
