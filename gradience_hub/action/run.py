"""The GitHub Actions runtime: ``gradience-hub action``, the Docker entrypoint of
``uses: gradience/audit-action@v1``.

The logic lives here, not in action.yml or shell (the pattern of pypa/gh-action-pypi-publish).
GitHub hands the step's inputs over as ``INPUT_<NAME>`` environment variables and the run's
context as ``GITHUB_*`` ones; this module validates the inputs, runs the chosen mode through the
library for each repo, and answers through the Actions channels: ``GITHUB_OUTPUT`` (outputs),
``GITHUB_STEP_SUMMARY`` (the summary template, one section per repo), workflow commands on stdout
(``::add-mask::``, ``::error::``, ``::warning::``) and ONE sticky comment on the pull request.

Exit codes are the CLI's: 0 success, PASS, or FAIL with ``fail-on: never``; 1 a repo's verdict
is FAIL; 2 bad input; 3 Hub, GitHub or network failure. The tokens are masked before anything
else runs and scrubbed from everything this process writes; the HF token reaches the Hub calls
as ``token=``, never through the environment.

This module holds the orchestration: each repo's run of the mode (:func:`run_repo`), its
summary and comment sections, the sticky PR comment, the outputs' values and the exit code
(:func:`run`), and the entry point (:func:`main`). The runner protocol it speaks, inputs in and
workflow commands, outputs, summary and secret scrubbing out, is :mod:`gradience_hub.action.io`.
"""

from __future__ import annotations

import json
import os
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradience_hub.action.io import (
    Channel,
    InputError,
    Secrets,
    Settings,
    parse_settings,
    read_input,
    workflow_command,
)
from gradience_hub.errors import (
    EXIT_FAIL,
    EXIT_INTERNAL,
    EXIT_OK,
    ISSUES_URL,
    GradienceError,
    MissingExtraError,
)
from gradience_hub.identity import link_bench
from gradience_hub.markers import COMMENT_MARKER
from gradience_hub.output import emit_command
from gradience_hub.policy import ERROR, FAIL, is_failing, overall_status, status_of

if TYPE_CHECKING:  # the bench's modules are imported only when the Action benches
    from gradience_hub.bench.cells import Executor

REPORT_DIR = "gradience-report"
"""Reports go to ``$GITHUB_WORKSPACE/gradience-report/<repo>/`` (audit.json, bench.json)."""

FORK_SAFE_DOC = "examples/workflows/fork-safe.yml"
# GitHub refuses issue comments longer than this many characters.
_MAX_COMMENT = 65536


# -- one repo ------------------------------------------------------------------------------


@dataclass
class RepoResult:
    """What one repo's run produced (or the error that stopped it)."""

    source: str
    status: str = ERROR  # one of policy.STATUSES
    audit: dict[str, Any] | None = None
    bench: dict[str, Any] | None = None
    report_dir: Path | None = None
    hub_url: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    error: GradienceError | None = None
    diff: str = ""  # annotate --dry-run: the README change it would make
    summary_md: str = ""
    jobs: list[tuple[str, str]] = field(default_factory=list)  # bench-executor hf-jobs
    comment_md: str = ""


def _slug(source: str, taken: set[str]) -> str:
    """A directory name for a repo's reports: ``org/name@rev`` -> ``org--name@rev``."""
    base = re.sub(r"[^A-Za-z0-9._@-]+", "--", source.strip().strip("/")).lstrip(".-") or "adapter"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def _bench_record(path: str | None, max_drop: float | None) -> dict[str, Any] | None:
    """A bench.json (ours or gradience 0.11's) as our v1 dict, re-judged under ``max_drop``."""
    if path is None:
        return None
    from gradience_hub import record

    rec = record.load_bench(path)
    if max_drop is not None:
        rec = record.with_policy(rec, max_drop=max_drop)
    return rec.to_dict()


def _published_revision(pr_url: str | None, commit_url: str | None, fallback: str) -> str:
    """Where annotate's files can be read: the Hub PR's ref, the new commit, or the branch."""
    found = re.search(r"/discussions/(\d+)", pr_url or "")
    if found:
        return f"refs/pr/{found[1]}"
    found = re.search(r"/commit/([0-9a-f]{40})", commit_url or "")
    return found[1] if found else fallback


def run_repo(source: str, index: int, settings: Settings, report_dir: Path) -> RepoResult:
    """Run the mode for one repo; GradienceErrors propagate to the caller."""
    result = RepoResult(source, report_dir=report_dir)
    bench_json = settings.bench_json_for(index)
    if settings.mode == "annotate":
        from gradience_hub.publish import annotate

        out = annotate.annotate(
            source,
            revision=settings.revision,
            bench_config=settings.bench_config,
            bench_json=bench_json,
            create_pr=settings.create_pr,
            dry_run=settings.dry_run,
            max_drop=settings.max_drop,
            push_variant=settings.push_variant,
            push_to=settings.push_to,
        )
        result.status, result.audit, result.bench = out.status, out.audit.to_dict(), out.bench
        result.hub_url = out.pr_url or (None if settings.create_pr else out.commit_url)
        repo_id = result.audit.get("source", {}).get("repo_id")
        if repo_id and not settings.dry_run:
            from gradience_hub import hub

            fallback = settings.revision or "main"
            result.context = {
                "repo_url": hub.repo_url(repo_id),
                "revision": _published_revision(out.pr_url, out.commit_url, fallback),
            }
        result.diff = out.diff if settings.dry_run else ""
        what = "up to date" if not out.changed else (out.pr_url or out.commit_url or "written")
        print(f"{source}: {'dry run, nothing written' if settings.dry_run else what}")
    else:
        from gradience_hub.audit import run_audit

        result.audit = run_audit(source, revision=settings.revision).to_dict()
        if settings.mode == "bench":
            from gradience_hub import record
            from gradience_hub.bench.protocol import run_bench

            assert settings.bench_config is not None
            spec = source
            if settings.revision and not Path(source).exists() and "@" not in source:
                spec = f"{source}@{settings.revision}"
            executor = _bench_executor(settings)
            try:
                rec = run_bench(
                    spec, settings.bench_config, report_dir / "bench", executor=executor
                )
            except MissingExtraError as exc:  # the slim image running the local executor
                exc.hint = (
                    "use the bench image (uses: docker://ghcr.io/gradience/audit-action:v1-bench) "
                    "or bench-executor: hf-jobs, which runs the cells on the Hub"
                )
                raise
            if executor is not None:  # None: run_bench ran the local executor, no jobs
                result.jobs = [(job.id, job.url) for job in executor.jobs]
            if settings.max_drop is not None:
                rec = record.with_policy(rec, max_drop=settings.max_drop)
            result.bench = rec.to_dict()
        else:
            result.bench = _bench_record(bench_json, settings.max_drop)
        if result.bench is not None:
            # another adapter's record is refused (exit 2, naming both); an uncheckable one
            # is reported with a warning (annotate mode checks in annotate itself)
            result.bench = link_bench(result.bench, result.audit)
        result.status = status_of(result.bench)
    from gradience_hub._io import write_file

    if not result.context:
        # Nothing was published on the Hub: the evidence is in this run's report folder.
        where = f"{REPORT_DIR}/{report_dir.name}"
        result.context = {"files": {"audit": f"{where}/audit.json", "bench": f"{where}/bench.json"}}
    write_file(report_dir / "audit.json", json.dumps(result.audit, indent=2) + "\n", parents=True)
    if result.bench is not None:
        write_file(
            report_dir / "bench.json", json.dumps(result.bench, indent=2) + "\n", parents=True
        )
    return result


def _bench_executor(settings: Settings) -> Executor | None:
    """The executor of input ``bench-executor``: None (local) or Hugging Face Jobs of
    ``bench-flavor`` (a CPU runner benches on the Hub's GPUs)."""
    if settings.bench_executor != "hf-jobs":
        return None
    from gradience_hub.bench.config import load_config
    from gradience_hub.bench.executors import make_executor

    assert settings.bench_config is not None
    config = load_config(settings.bench_config)
    return make_executor("hf-jobs", config, flavor=settings.bench_flavor)


def _jobs_md(result: RepoResult) -> str:
    """The step summary's links to the Jobs that ran the bench's cells."""
    if not result.jobs:
        return ""
    from gradience_hub.publish import render

    links = ", ".join(f"[{render.md(i)}]({render.safe_url(u)})" for i, u in result.jobs)
    return f"\n**Bench cells ran as Hugging Face Jobs:** {links}\n"


def _sections(result: RepoResult) -> tuple[str, str]:
    """The step-summary and PR-comment Markdown of one repo (comment without the marker)."""
    from gradience_hub.audit import AuditReport
    from gradience_hub.publish import render
    from gradience_hub.record import record_from_dict

    if result.error is not None:
        hint = f"\n\n**Fix:** {render.md(result.error.hint)}" if result.error.hint else ""
        text = (
            f"Gradience ⚠️ error: {render.md(result.source)}\n\n"
            f"{render.md(result.error.message)}{hint}\n"
        )
        return f"## {text}", f"### {text}"
    extra = ""
    if not (result.audit or {}).get("source", {}).get("repo_id"):
        extra = f"Source: {render.md(result.source)}\n\n"
    if result.hub_url:
        extra += f"**Hub pull request:** {render.safe_url(result.hub_url)}\n\n"
    # render takes the typed documents: the audit, and the bench judged as it is read
    audit = AuditReport.from_dict(result.audit) if result.audit is not None else None
    bench = record_from_dict(result.bench) if result.bench is not None else None
    out = []
    for kind in ("summary", "comment"):
        text = render.render(kind, audit, bench, context=result.context)
        text = text.replace(COMMENT_MARKER, "").strip("\n")
        # The extra lines go right under the section's heading line.
        head, _, body = text.partition("\n")
        out.append(f"{head}\n\n{extra}{body.lstrip(chr(10))}\n" if extra else text + "\n")
    if result.diff:
        # A fence longer than any backtick run in the diff, so README text cannot close it.
        fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", result.diff)), default=0))
        out[0] += (
            "\n<details><summary>Dry run: the README.md change</summary>\n\n"
            f"{fence}diff\n{result.diff.rstrip(chr(10))}\n{fence}\n\n</details>\n"
        )
    return out[0] + _jobs_md(result), out[1]


# -- the run -------------------------------------------------------------------------------


def _read_event(path: str | None, channel: Channel) -> dict[str, Any]:
    if not path:
        return {}
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        channel.annotate("warning", "gradience-hub: unreadable event", f"{path}: {exc}")
        return {}
    return event if isinstance(event, dict) else {}


def _post_comment(
    settings: Settings, environ: Mapping[str, str], results: list[RepoResult], channel: Channel
) -> tuple[str, GradienceError | None]:
    """Upsert the one sticky comment on the run's pull request; returns (url, error)."""
    from gradience_hub.github import (
        MARKER,
        GitHubClient,
        GitHubPermissionError,
        pr_number_from_event,
    )

    event_name = environ.get("GITHUB_EVENT_NAME", "")
    number = pr_number_from_event(
        event_name, _read_event(environ.get("GITHUB_EVENT_PATH"), channel)
    )
    repo = environ.get("GITHUB_REPOSITORY", "")
    if number is None or not repo:
        print(f"No pull request in this {event_name or 'local'} run: no PR comment.")
        return "", None
    body = MARKER + "\n" + "\n---\n\n".join(r.comment_md for r in results)
    body = channel.secrets.scrub(body)
    if len(body) > _MAX_COMMENT:
        note = "\n\n… truncated: the full report is in the workflow run's summary.\n"
        body = body[: _MAX_COMMENT - len(note)] + note
    if settings.dry_run:
        print(f"Dry run: the comment for {repo}#{number} is not posted.")
        return "", None
    if not settings.github_token:
        channel.annotate(
            "warning",
            "gradience-hub: no GitHub token",
            f"cannot comment on {repo}#{number} without a token\n"
            "Fix: keep the default github-token (${{ github.token }}) or pass one",
        )
        return "", None
    try:
        with GitHubClient(settings.github_token, environ.get("GITHUB_API_URL") or None) as gh:
            done = gh.upsert_sticky_comment(repo, number, body)
    except GitHubPermissionError as exc:
        channel.annotate(
            "warning",
            "gradience-hub could not comment on the pull request",
            f"{exc.message}\nThe results are in this run's summary. A pull request from a fork "
            f"gets a read-only token; to comment there, see {FORK_SAFE_DOC}.",
        )
        return "", None
    except GradienceError as exc:
        channel.annotate("error", "gradience-hub could not comment on the pull request", exc)
        return "", exc
    print(f"PR comment {done.action}: {done.url}")
    return done.url, None


def _fail_text(result: RepoResult) -> str:
    bench = result.bench or {}
    policy = bench.get("policy") or {}
    max_drop = policy.get("max_drop")
    worst: list[tuple[float, str]] = [
        (float(v["worst_delta"]), str(v.get("name")))
        for v in bench.get("variants") or []
        if isinstance(v, dict) and isinstance(v.get("worst_delta"), (int, float))
    ]
    best = ""
    if worst:
        delta, name = max(worst, key=lambda pair: pair[0])
        best = f"; the closest, {name}, has a worst-seed change of {delta:+.3f}"
    return (
        f"no compressed variant of {result.source} passes the worst-seed policy "
        f"(allowed drop {max_drop}){best}\n"
        "Fix: keep the allocated rank (compressing it is not safe), bench larger ranks, or set "
        "fail-on: never to report without failing the check"
    )


def _relative(path: Path, workspace: Path) -> str:
    try:
        return str(path.relative_to(workspace))
    except ValueError:
        return str(path)


def run(environ: Mapping[str, str], secrets: Secrets) -> int:
    """The action, once secrets are masked; returns the exit code."""
    channel = Channel(environ, secrets)
    try:
        settings = parse_settings(environ)
    except InputError as exc:
        channel.annotate("error", f"gradience-hub: invalid input '{exc.input}'", exc)
        hint = f"\n\nFix: {exc.hint}" if exc.hint else ""
        channel.summary(f"## gradience-hub: invalid input `{exc.input}`\n\n{exc.message}{hint}\n")
        channel.outputs({"status": "ERROR"})
        return exc.exit_code
    workspace = Path(environ.get("GITHUB_WORKSPACE") or os.getcwd()).resolve()
    root = workspace / REPORT_DIR
    debug = environ.get("GRADIENCE_DEBUG", "") not in ("", "0")
    results: list[RepoResult] = []
    taken: set[str] = set()
    for index, source in enumerate(settings.repo_ids):
        emit_command(workflow_command("group", f"gradience-hub {settings.mode}: {source}"))
        try:
            result = run_repo(source, index, settings, root / _slug(source, taken))
            result.summary_md, result.comment_md = _sections(result)
        except Exception as exc:
            if not isinstance(exc, GradienceError):
                if debug:
                    traceback.print_exc()
                exc = GradienceError(
                    f"internal error: {type(exc).__name__}: {exc}",
                    hint="rerun with GRADIENCE_DEBUG=1 for the traceback and report it",
                )
            result = RepoResult(source, error=exc)
            result.summary_md, result.comment_md = _sections(result)
        finally:
            emit_command(workflow_command("endgroup"))
        results.append(result)
        print(f"{source}: {result.status}")

    for r in results:
        if r.error is not None:
            channel.annotate("error", f"gradience-hub {settings.mode} failed: {r.source}", r.error)
        elif is_failing(r.status):
            level = "error" if settings.fail_on == "fail" else "warning"
            what = "FAILs the policy" if r.status == FAIL else "is INCONCLUSIVE"
            channel.annotate(level, f"gradience-hub: {r.source} {what}", _fail_text(r))

    comment_url, comment_error = "", None
    if settings.comment:
        comment_url, comment_error = _post_comment(settings, environ, results, channel)
    summary = "\n".join(r.summary_md for r in results)
    if comment_url:
        summary += f"\nPull request comment: {comment_url}\n"
    channel.summary(summary)

    def per_repo(value: Any) -> str:
        lines = [value(r) if r.audit is not None else "" for r in results]
        return "\n".join(lines) if any(lines) else ""

    channel.outputs(
        {
            "status": overall_status(r.status for r in results),
            "utilization": per_repo(lambda r: f"{r.audit['summary']['utilization_mean']:.4f}"),
            "suggested-rank": per_repo(
                lambda r: str(r.audit["summary"]["suggested_r_global_median"])
            ),
            "report-path": _relative(root, workspace) if root.is_dir() else "",
            "hub-pr-url": per_repo(lambda r: r.hub_url or ""),
            "comment-url": comment_url,
        }
    )
    errors = [r.error for r in results if r.error is not None] + [comment_error]
    codes = [e.exit_code for e in errors if e is not None]
    if codes:
        return max(codes)
    if settings.fail_on == "fail" and any(is_failing(r.status) for r in results):
        return EXIT_FAIL
    return EXIT_OK


def main(environ: Mapping[str, str] | None = None) -> int:
    """Entry point of ``gradience-hub action``: mask, guard the output, run.

    The tokens are masked first (``::add-mask::``, only inside GitHub Actions: elsewhere it
    would print them). The HF token input is handed to every Hub call as ``token=``
    (:func:`gradience_hub.hub.using_token`); the process environment is never written.
    Everything written to stdout and stderr is scrubbed of the tokens, stripped of control
    characters and cannot start a workflow command (:mod:`gradience_hub.output`).
    """
    from gradience_hub import hub
    from gradience_hub.output import emit_mask, guarded

    env = os.environ if environ is None else environ
    secrets = Secrets()
    hf_token = read_input("hf-token", env)
    secrets.add(hf_token)
    secrets.add(env.get("HF_TOKEN"))
    secrets.add(read_input("github-token", env))
    secrets.add(env.get("GITHUB_TOKEN"))
    with guarded(secrets):
        if env.get("GITHUB_ACTIONS") == "true":
            for value in secrets:
                emit_mask(workflow_command("add-mask", value))
        try:
            with hub.using_token(hf_token or None):
                return run(env, secrets)
        except Exception as exc:  # a bug in this module: still one clean annotation, no token
            if env.get("GRADIENCE_DEBUG", "") not in ("", "0"):
                traceback.print_exc()
            emit_command(
                workflow_command(
                    "error",
                    secrets.scrub(
                        f"internal error: {type(exc).__name__}: {exc}\n"
                        "Fix: please report it at " + ISSUES_URL + " (GRADIENCE_DEBUG=1 shows the "
                        "traceback)"
                    ),
                    title="gradience-hub action failed",
                )
            )
            return EXIT_INTERNAL
