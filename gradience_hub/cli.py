"""The ``gradience-hub`` command line: a thin click group.

Each command parses options and calls one library function; errors become messages in one
place, :func:`main`. Heavy imports happen inside the commands so ``--help`` stays fast.
"""

# Over 500 lines: one thin click command per subcommand (a commands/ package is next).

from __future__ import annotations

from pathlib import Path

import click

from gradience_hub import __version__
from gradience_hub.entry import run_command
from gradience_hub.scan.cli import scan_command

STRICT_HELP = (
    "Exit 2 when a bench.json's stored verdicts disagree with its own numbers (default: show "
    "it re-judged, with a warning)."
)

# Hub ids, local directories or org/name@revision: validated by the library, not click.
SOURCE = click.argument("source", metavar="SOURCE")


def _write_output(text: str, output: str | None) -> None:
    """Write ``text`` to ``output`` atomically (whole or not at all; see gradience_hub._io)."""
    if output is None:
        return
    from gradience_hub._io import write_file

    write_file(Path(output), text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradience-hub")
def cli() -> None:
    """Spectral audits of LoRA adapters, compression evidence, and publishing it on the Hub.

    SOURCE is a local adapter directory, a Hub repo id org/name, or org/name@revision
    (an existing directory wins).
    """


@cli.command()
@SOURCE
@click.option("--revision", help="Branch, tag or commit of a Hub SOURCE (default: main).")
@click.option("--adapter-name", help="Which adapter of a multi-adapter directory.")
@click.option(
    "--energy",
    type=float,
    default=0.9,
    show_default=True,
    help="Energy threshold tau for the energy rank k@tau.",
)
@click.option("--json", "as_json", is_flag=True, help="Print audit.json to stdout, nothing else.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Also write audit.json here.")
@click.option("--layers", is_flag=True, help="Add a per-module table to the text output.")
@click.option(
    "--rank-policies",
    "rank_policies",
    default="energy@0.90,knee,erank,oht,stable-ceil",
    show_default=True,
    help="Rank policies to apply per module (gradience 0.11's definitions); 'none' for none.",
)
@click.option(
    "--udr",
    is_flag=True,
    help="Update-to-base ratios: read the audited modules' base weights (by range on the Hub).",
)
@click.option(
    "--base-model",
    metavar="ID_OR_DIR",
    help="Base model for --udr (implies it; default: the adapter's base_model_name_or_path).",
)
@click.option(
    "--base-norms-cache",
    type=click.Path(dir_okay=False),
    help="JSON cache of base weight norms: a second adapter of the same base reads nothing.",
)
def audit(
    source: str,
    revision: str | None,
    adapter_name: str | None,
    energy: float,
    as_json: bool,
    output: str | None,
    layers: bool,
    rank_policies: str,
    udr: bool,
    base_model: str | None,
    base_norms_cache: str | None,
) -> None:
    """Audit a LoRA adapter's rank use from its weights alone."""
    from gradience_hub.audit import format_text, run_audit
    from gradience_hub.parallel import keep_freed_memory

    keep_freed_memory()  # this process is ours: the allocator may keep freed module buffers

    report = run_audit(
        source,
        revision=revision,
        adapter_name=adapter_name,
        energy=energy,
        policies=None if rank_policies.strip().lower() == "none" else rank_policies,
        udr=udr,
        base_model=base_model,
        base_norms_cache=base_norms_cache,
    )
    text = report.to_json()
    _write_output(text, output)
    click.echo(text if as_json else format_text(report, layers=layers), nl=False)


@cli.command("explain")
@click.argument("source", metavar="SOURCE|AUDIT.JSON")
@click.option("--module", "module", required=True, help="Module name (or a unique suffix).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown"]),
    default="text",
    show_default=True,
    help="Terminal text or a Markdown block.",
)
@click.option("--plot", type=click.Path(dir_okay=False), help="Also draw the spectrum to a PNG.")
@click.option(
    "--rank-policies",
    "rank_policies",
    default="energy@0.90,knee,erank,oht,stable-ceil",
    show_default=True,
    help="The rank policies to compare.",
)
@click.option("--revision", help="Branch, tag or commit of a Hub SOURCE (default: main).")
@click.option("--adapter-name", help="Which adapter of a multi-adapter directory.")
def explain_command(
    source: str,
    module: str,
    fmt: str,
    plot: str | None,
    rank_policies: str,
    revision: str | None,
    adapter_name: str | None,
) -> None:
    """Explain one module: its spectrum, each rank policy's cut and why they differ.

    SOURCE is audited now; an audit.json (from 'audit --output') is read instead."""
    from gradience_hub.audit import load_audit, run_audit
    from gradience_hub.audit.explain import explain
    from gradience_hub.publish.explain import explain_markdown, explain_plot, explain_text
    from gradience_hub.rank_policies import parse_policies

    parse_policies(rank_policies)  # bad input before any download
    path = Path(source)
    if path.is_file() and path.suffix == ".json":
        report = load_audit(path)
    else:
        report = run_audit(source, revision=revision, adapter_name=adapter_name, policies=None)
    result = explain(report, module, rank_policies)
    click.echo(explain_markdown(result) if fmt == "markdown" else explain_text(result), nl=False)
    if plot:
        explain_plot(result, plot)


@cli.command("monitor")
@click.argument("log", metavar="LOG.jsonl", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON, nothing else.")
def monitor_command(log: str, as_json: bool) -> None:
    """Read a training run's telemetry (GradienceHubCallback's JSONL) and flag what it shows.

    Exits 0 whatever it flags (the flags are advice); 2 when LOG cannot be read."""
    import json

    from gradience_hub.record.telemetry import read_points
    from gradience_hub.telemetry import monitor

    points, warnings = read_points(log)
    findings = monitor(points)
    if as_json:
        doc = {
            "log": log,
            "snapshots": len(points),
            "steps": [points[0].step, points[-1].step],
            "last": points[-1].overall,
            "findings": [{"code": f.code, "message": f.message, "rule": f.rule} for f in findings],
            "warnings": warnings,
        }
        click.echo(json.dumps(doc, indent=2, allow_nan=False))
        return
    last = points[-1]
    util = last.overall.get("utilization_mean")
    lines = [
        f"{len(points)} snapshots, steps {points[0].step}-{last.step}; at the last: "
        + (f"utilization {util:.1%}" if util is not None else "no utilization")
        + f" of r={last.allocated_rank}",
    ]
    lines += [f"FLAG {f.code}: {f.message}" for f in findings] or ["No flags."]
    lines += [f"Warning: {w}" for w in warnings]
    click.echo("\n".join(lines))


def _one_compress_mode(modes: dict[str, bool]) -> None:
    """Exactly one of compress's modes, or a usage error naming the conflict (exit 2)."""
    chosen = [name for name, on in modes.items() if on]
    if len(chosen) != 1:
        raise click.UsageError(
            f"{' and '.join(chosen)} are different modes: choose one"
            if chosen
            else "choose exactly one of --rank K, --energy T, --per-layer, --pad-to R, "
            "--budget-params N or --budget-mb M"
        )


@cli.command("compress")
@SOURCE
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for the compressed PEFT adapter (created; must be new or empty).",
)
@click.option("--rank", type=int, help="Truncate every module to rank K.")
@click.option("--energy", type=float, help="Per module, the smallest rank holding this energy.")
@click.option("--per-layer", is_flag=True, help="Use the audit's per-layer rank suggestions.")
@click.option(
    "--pad-to", type=int, metavar="R", help="Zero-pad every module to rank R (update unchanged)."
)
@click.option("--budget-params", type=int, metavar="N", help="Best ranks within N LoRA params.")
@click.option("--budget-mb", type=float, metavar="M", help="Best ranks within an M MB file.")
@click.option(
    "--budget-objective",
    type=click.Choice(["relative", "absolute"]),
    default="relative",
    show_default=True,
    help="A budget minimizes the summed relative (per module) or absolute discarded energy.",
)
@click.option("--revision", help="Branch, tag or commit of a Hub SOURCE (default: main).")
@click.option("--adapter-name", help="Which adapter of a multi-adapter directory.")
@click.option("--force", is_flag=True, help="Replace a non-empty --output directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, nothing else.")
@click.option(
    "--verify",
    type=click.Choice(["self", "peft"]),
    default="self",
    show_default=True,
    help="self: numpy re-read of keys, shapes, r and scaling; peft: also load the result with "
    "peft (needs the bench extra; slower).",
)
def compress_command(
    source: str,
    output: str,
    rank: int | None,
    energy: float | None,
    per_layer: bool,
    pad_to: int | None,
    budget_params: int | None,
    budget_mb: float | None,
    budget_objective: str,
    revision: str | None,
    adapter_name: str | None,
    force: bool,
    as_json: bool,
    verify: str,
) -> None:
    """Write an SVD-truncated copy of a LoRA adapter (--rank K | --energy T | --per-layer |
    --budget-params N | --budget-mb M), or a zero-padded one (--pad-to R) for a serving stack."""
    _one_compress_mode(
        {
            "--rank": rank is not None,
            "--energy": energy is not None,
            "--per-layer": per_layer,
            "--pad-to": pad_to is not None,
            "--budget-params": budget_params is not None,
            "--budget-mb": budget_mb is not None,
        }
    )
    import json

    from gradience_hub.compress import compress, format_result
    from gradience_hub.parallel import keep_freed_memory

    keep_freed_memory()  # this process is ours: the allocator may keep freed module buffers

    if pad_to is not None or budget_params is not None or budget_mb is not None:
        from gradience_hub.compress.serving import compress_budget, compress_padded
        from gradience_hub.compress.sizing import BudgetRule

        where = {"revision": revision, "adapter_name": adapter_name}
        served = (
            compress_padded(source, output, pad_to, force=force, verify=verify == "peft", **where)
            if pad_to is not None
            else compress_budget(
                source,
                output,
                BudgetRule(budget_params, budget_mb, budget_objective),
                force=force,
                verify=verify == "peft",
                **where,
            )
        )
        text = json.dumps(served.to_dict(), indent=2) + "\n" if as_json else served.text()
        click.echo(text, nl=False)
        return

    result = compress(
        source,
        output,
        rank=rank,
        energy=energy,
        per_layer=per_layer,
        revision=revision,
        adapter_name=adapter_name,
        force=force,
        verify=verify == "peft",
    )
    text = json.dumps(result.to_dict(), indent=2) + "\n" if as_json else format_result(result)
    click.echo(text, nl=False)


@cli.command("render")
@click.option(
    "--bench",
    "bench_path",
    type=click.Path(dir_okay=False),
    help="bench.json (gradience-hub's, or gradience 0.11's).",
)
@click.option(
    "--audit",
    "audit_path",
    type=click.Path(dir_okay=False),
    help="audit.json from 'gradience-hub audit --output'.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["card", "comment", "summary"]),
    default="card",
    show_default=True,
    help="card: README section (with markers); comment: PR comment; summary: step summary.",
)
@click.option(
    "--template-dir",
    type=click.Path(file_okay=False),
    help="Templates that override the shipped ones (rendered in a sandbox).",
)
@click.option("--strict", is_flag=True, help=STRICT_HELP)
def render_command(
    bench_path: str | None, audit_path: str | None, fmt: str, template_dir: str | None, strict: bool
) -> None:
    """Print the card section, PR comment or step summary as Markdown (needs --bench, --audit
    or both)."""
    from gradience_hub.publish.render import render_from_files

    text = render_from_files(bench_path, audit_path, fmt, template_dir, strict=strict)
    click.echo(text, nl=False)


@cli.command()
@SOURCE
@click.option("--revision", help="Branch, tag or commit to audit (default: main).")
@click.option("--adapter-name", help="Which adapter of a multi-adapter repo.")
@click.option("--bench-config", type=click.Path(dir_okay=False), help="Run a bench (config).")
@click.option("--bench-json", type=click.Path(dir_okay=False), help="Publish this bench.json.")
@click.option(
    "--create-pr/--direct",
    default=True,
    show_default=True,
    help="Open (or update) a Hub PR, or commit directly to the branch.",
)
@click.option("--dry-run", is_flag=True, help="Print the README diff and file list; write nothing.")
@click.option("--comment-on-pr", type=int, metavar="N", help="Sticky comment on Hub discussion N.")
@click.option("--fail-on-fail", is_flag=True, help="Exit 1 when the bench verdict is FAIL.")
@click.option("--template-dir", type=click.Path(file_okay=False), help="Override templates.")
@click.option("--max-drop", type=float, help="Policy: largest allowed worst-seed drop (0.025).")
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@click.option(
    "--push-variant",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[NAME]",
    help="Also publish the --bench-json bench's recommended (or NAME) variant as its own repo.",
)
@click.option("--to", "push_to", metavar="ORG/REPO", help="The repo --push-variant publishes to.")
def annotate(
    source: str,
    revision: str | None,
    adapter_name: str | None,
    bench_config: str | None,
    bench_json: str | None,
    create_pr: bool,
    dry_run: bool,
    comment_on_pr: int | None,
    fail_on_fail: bool,
    template_dir: str | None,
    max_drop: float | None,
    strict: bool,
    push_variant: str | None,
    push_to: str | None,
) -> None:
    """Publish the audit (and bench) on the model card: README section, gradience/* files,
    in one commit on a Hub PR (default) or the branch; a local directory is written in place."""
    from gradience_hub.errors import PolicyFailed
    from gradience_hub.publish.annotate import annotate as run_annotate
    from gradience_hub.publish.annotate import format_result

    if strict and bench_json:
        from gradience_hub.record import load_bench

        load_bench(bench_json, strict=True)  # refuse before anything is written

    result = run_annotate(
        source,
        revision=revision,
        adapter_name=adapter_name,
        bench_config=bench_config,
        bench_json=bench_json,
        create_pr=create_pr,
        dry_run=dry_run,
        comment_on_pr=comment_on_pr,
        template_dir=template_dir,
        max_drop=max_drop,
        push_variant=push_variant,
        push_to=push_to,
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(format_result(result), nl=False)
    if result.variant_refused:
        raise PolicyFailed(
            f"--push-variant pushed nothing: {result.variant_refused}",
            hint="the evidence is published; push a variant once a bench passes",
        )
    from gradience_hub.policy import is_failing

    if fail_on_fail and is_failing(result.status):
        raise PolicyFailed(
            f"the bench verdict is {result.status}", hint="see the variant table above"
        )


@cli.command("action")
def action_command() -> int:
    """Run as the GitHub Action (the Docker entrypoint of gradience/audit-action).

    Reads the step's inputs from INPUT_* and the run from GITHUB_*; writes outputs, the step
    summary and one sticky PR comment. See action.yml and the README.
    """
    from gradience_hub.action import main as run_action

    return run_action()


@cli.command("bench")
@click.argument("source", metavar="[SOURCE]", required=False)
@click.option("--config", "config_path", required=True, help="Bench config YAML (examples/).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Output dir.")
@click.option(
    "--protocol",
    type=click.Choice(["posthoc", "retrain"]),
    help="posthoc: evaluate SOURCE and its compressions (default with SOURCE); retrain: train "
    "the uncompressed adapter and every variant from scratch per seed (default without "
    "SOURCE).",
)
@click.option("--seeds", help="Comma-separated seeds, e.g. 42,123,456 (default: the config's).")
@click.option("--resume", is_flag=True, help="Continue a killed run from the cells in --output.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default: cuda if available.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray", "hf-jobs"]),
    help="Where cells run: this process (default), Ray tasks, or Hugging Face Jobs "
    "(default: the config's executor:).",
)
@click.option("--ray-address", help="Ray cluster (default: a running one, else a local Ray).")
@click.option("--flavor", help="hf-jobs: hardware flavor, e.g. a10g-small (default).")
@click.option("--image", help="hf-jobs: the image with gradience-hub[bench] (default: ours).")
@click.option("--namespace", help="hf-jobs: user or org running the jobs (default: yours).")
@click.option("--job-timeout", help="hf-jobs: per-job limit, e.g. 2h, 30m (default: 2h).")
@click.option(
    "--job-per",
    type=click.Choice(["cell", "seed"]),
    help="hf-jobs: one job per cell or per seed and stage (default: seed for posthoc, one "
    "model load; cell for retrain).",
)
def bench_command(
    source: str | None,
    config_path: str,
    output: str,
    protocol: str | None,
    seeds: str | None,
    resume: bool,
    device: str | None,
    executor: str | None,
    ray_address: str | None,
    flavor: str | None,
    image: str | None,
    namespace: str | None,
    job_timeout: str | None,
    job_per: str | None,
) -> None:
    """Multi-seed evidence for compressed variants: writes bench.json, bench.md and adapters.

    SOURCE is the trained adapter (a directory or Hub id). With --protocol retrain SOURCE is
    optional and only recorded: the probes are trained from the config. Exit 0 on PASS, 1 on
    FAIL, 2 on bad input.
    """
    from gradience_hub.bench.config import load_config
    from gradience_hub.bench.executors import make_executor
    from gradience_hub.bench.train import require_bench_extra
    from gradience_hub.errors import GradienceError, MissingExtraError, PolicyFailed

    if executor != "hf-jobs":  # the Jobs hold the extra, not the driver
        try:
            require_bench_extra()  # before any heavy import: name the missing extra, exit 2
        except MissingExtraError:
            try:  # a config that says executor: hf-jobs needs no local extra either
                wanted = None if executor else load_config(config_path).executor
            except GradienceError:
                wanted = None
            if wanted != "hf-jobs":
                raise
    from gradience_hub.bench.protocol import run_bench

    config = load_config(config_path)

    engine = make_executor(
        executor,
        config,
        ray_address=ray_address,
        flavor=flavor,
        image=image,
        namespace=namespace,
        job_timeout=job_timeout,
        job_per=job_per,
    )
    record = run_bench(
        source, config, output, protocol, seeds, resume, device, executor=engine, echo=click.echo
    )
    from gradience_hub.policy import INCONCLUSIVE, PASS

    if record.status != PASS:
        hint = f"keep the uncompressed adapter or bench larger ranks; see {output}/bench.md"
        if record.status == INCONCLUSIVE:
            hint = f"no compression can be validated on this task; see {output}/bench.md"
        raise PolicyFailed(f"the bench verdict is {record.status}: {record.status_reason}", hint)


@cli.command("merge-audit")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE_A SOURCE_B [SOURCE ...]")
@click.option("--weights", help="Merge weights, one per source (default: equal), e.g. 0.5,0.5.")
@click.option("--energy", type=float, default=0.9, show_default=True, help="Energy rank tau.")
@click.option("--json", "as_json", is_flag=True, help="Print merge_audit.json, nothing else.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Also write the JSON here.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown"]),
    default="text",
    show_default=True,
    help="markdown: the section for a model card or PR comment.",
)
@click.option("--layers", is_flag=True, help="Add the per-module table to the text output.")
@click.option(
    "--thresholds",
    "thresholds_file",
    type=click.Path(dir_okay=False),
    help="YAML/JSON mapping of verdict thresholds (high_overlap, conflict_cosine, dominance).",
)
@click.option("--high-overlap", type=float, help="Overlap from which updates share a subspace.")
@click.option("--conflict-cosine", type=float, help="Cosine at or below which they conflict.")
@click.option("--dominance", type=float, help="Merge share from which one adapter dominates.")
@click.option(
    "--merge",
    "merge_output",
    type=click.Path(file_okay=False),
    help="Write the merged adapter here with peft (bench extra), then measure it.",
)
@click.option(
    "--method",
    type=click.Choice(["cat", "linear", "svd", "ties"]),
    help="peft combination type for --merge (default: the recommended one).",
)
@click.option("--density", type=float, default=0.5, show_default=True, help="ties density.")
@click.option("--base-model", help="Local base model directory for --merge (config.json).")
@click.option("--template-dir", type=click.Path(file_okay=False), help="Override templates.")
def merge_audit_command(
    sources: tuple[str, ...],
    weights: str | None,
    energy: float,
    as_json: bool,
    output: str | None,
    fmt: str,
    layers: bool,
    thresholds_file: str | None,
    high_overlap: float | None,
    conflict_cosine: float | None,
    dominance: float | None,
    merge_output: str | None,
    method: str | None,
    density: float,
    base_model: str | None,
    template_dir: str | None,
) -> int:
    """Will these LoRA adapters merge well? Subspace overlap, cosine and merge shares per module,
    a verdict and the peft merge method to use. Exit 0, 1 when they conflict, 2 on bad input."""
    from gradience_hub import merge_audit as ma
    from gradience_hub.publish.merge_audit import format_markdown

    if as_json and fmt != "text":
        raise click.UsageError("--json and --format markdown exclude each other")
    thresholds = ma.load_thresholds(
        thresholds_file,
        high_overlap=high_overlap,
        conflict_cosine=conflict_cosine,
        dominance=dominance,
    )
    report = ma.run_merge_audit(
        list(sources),
        weights,
        energy,
        thresholds,
        merge_output=merge_output,
        method=method,
        density=density,
        base_model=base_model,
    )
    text = report.to_json()
    if as_json:
        shown = text
    elif fmt == "markdown":  # rendered before --output is written: a broken template writes nothing
        shown = format_markdown(report, template_dir)
    else:
        shown = ma.format_text(report, layers=layers)
    _write_output(text, output)
    click.echo(shown, nl=False)
    return 1 if report.overall_verdict == "conflicting" else 0


# --------------------------------------------------------------------------- serve, webhook


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port (0: any free).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    default="gradience-serve-state",
    show_default=True,
    help="Where the job queue (SQLite) lives; keep it across restarts.",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config YAML.")
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Job threads (0: queue, run none)."
)
@click.option(
    "--max-queue", type=int, default=1000, show_default=True, help="Waiting jobs; then 503."
)
@click.option(
    "--max-attempts",
    type=int,
    default=5,
    show_default=True,
    help="Tries per job (429/5xx, or its process died).",
)
@click.option(
    "--job-timeout",
    type=float,
    default=3600.0,
    show_default=True,
    help="Wall-clock seconds per attempt; then the job fails.",
)
@click.option("--insecure-no-secret", is_flag=True, help="Accept webhooks without a secret.")
@click.option("--once", is_flag=True, help="Run the one event in WEBHOOK_PAYLOAD and exit.")
def serve_command(
    host: str,
    port: int,
    state_dir: str,
    config_path: str | None,
    workers: int,
    max_queue: int,
    max_attempts: int,
    job_timeout: float,
    insecure_no_secret: bool,
    once: bool,
) -> int:
    """Keep adapter cards current: a Hub webhook service that annotates every push.

    Secrets from the environment: WEBHOOK_SECRET (the webhook's secret), HF_TOKEN (the bot
    account that opens the PRs) and, optionally, STATUS_TOKEN (opens / and /runs to whoever
    holds it; without it they are off). See the README, "Automatic card updates".
    """
    from gradience_hub.serve.server import run_command

    return run_command(
        config_path,
        once=once,
        insecure=insecure_no_secret,
        state_dir=Path(state_dir),
        host=host,
        port=port,
        workers=workers,
        max_queue=max_queue,
        max_attempts=max_attempts,
        job_timeout=job_timeout,
    )


@cli.group("webhook")
def webhook_group() -> None:
    """Register the service with the Hub: create, list or delete webhooks (needs HF_TOKEN)."""


@webhook_group.command("create")
@click.option(
    "--watch",
    "watch",
    multiple=True,
    required=True,
    metavar="org:NAME|user:NAME|model:ORG/NAME",
    help="What to watch (repeatable).",
)
@click.option("--url", required=True, help="The service's public URL ending in /webhook.")
def webhook_create(watch: tuple[str, ...], url: str) -> None:
    """Create a webhook for repo events, with the secret from WEBHOOK_SECRET."""
    from gradience_hub import hub
    from gradience_hub.serve.server import environment_secret, parse_watch

    if not url.startswith(("https://", "http://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--url")
    created = hub.create_webhook(url, parse_watch(watch), environment_secret(insecure=False))
    click.echo(f"Created webhook {created.id} -> {created.url}")


@webhook_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (secrets are never shown).")
def webhook_list(as_json: bool) -> None:
    """List the token owner's webhooks."""
    import dataclasses
    import json

    from gradience_hub import hub

    hooks = hub.list_webhooks()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(h) for h in hooks], indent=2))
        return
    import unicodedata

    def plain(text: object) -> str:  # the Hub's strings, printed without control characters
        return "".join(c for c in str(text) if unicodedata.category(c) not in ("Cc", "Cf"))

    for h in hooks:
        watched = ",".join(f"{t}:{n}" for t, n in h.watched)
        state = "disabled" if h.disabled else "enabled"
        click.echo(plain(f"{h.id}  {h.url}  {watched}  {'/'.join(h.domains)}  {state}"))


@webhook_group.command("delete")
@click.argument("webhook_id")
def webhook_delete(webhook_id: str) -> None:
    """Delete a webhook by id."""
    from gradience_hub import hub

    hub.delete_webhook(webhook_id)
    click.echo(f"Deleted webhook {webhook_id}")


@cli.command("bench-cell")
@click.option(
    "--inputs", required=True, help="The run's scratch repo id (or a local inputs directory)."
)
@click.option("--revision", help="The inputs commit of a Hub --inputs repo.")
@click.option(
    "--cell", "cells", multiple=True, required=True, help="VARIANT or VARIANT__SEED (repeatable)."
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default: cuda if available.")
def bench_cell_command(
    inputs: str, revision: str | None, cells: tuple[str, ...], device: str | None
) -> None:
    """Run bench cells inside a Hugging Face Job (--executor hf-jobs submits this); prints one
    GRADIENCE_CELL_RESULT line per cell. The token comes from HF_TOKEN, a Job secret."""
    from gradience_hub.bench.train import require_bench_extra

    require_bench_extra()
    from gradience_hub.bench.executors.cell_command import run_cells

    run_cells(inputs, revision, cells, device, lambda line: click.echo(line))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and map errors to exit codes and short messages
    (:func:`gradience_hub.entry.run_command`: scrubbed output, one exit code per error class)."""
    run_command(cli, argv, "gradience-hub")


cli.add_command(scan_command)
