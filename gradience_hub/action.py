"""The GitHub Actions runtime: ``gradience-hub action``, the Docker entrypoint of
``uses: gradience/audit-action@v1``.

The logic lives here, not in action.yml or shell (the pattern of pypa/gh-action-pypi-publish).
GitHub hands the step's inputs over as ``INPUT_<NAME>`` environment variables and the run's
context as ``GITHUB_*`` ones; this module validates the inputs, runs the chosen mode through the
library for each repo, and answers through the Actions channels: ``GITHUB_OUTPUT`` (outputs),
``GITHUB_STEP_SUMMARY`` (the summary template, one section per repo), workflow commands on stdout
(``::add-mask::``, ``::error::``, ``::warning::``) and ONE sticky comment on the pull request.

Exit codes are the CLI's (DESIGN.md): 0 success, PASS, or FAIL with ``fail-on: never``; 1 a
repo's verdict is FAIL; 2 bad input; 3 Hub, GitHub or network failure. The HF token is masked
before anything else runs and scrubbed from everything this process writes.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import traceback
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gradience_hub.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    EXIT_OK,
    GradienceError,
    UsageError,
)

INPUTS: dict[str, str] = {
    "repo-id": "",
    "revision": "",
    "mode": "audit",
    "bench-config": "",
    "bench-json": "",
    "hf-token": "",
    # action.yml defaults it to ${{ github.token }}; outside Actions GITHUB_TOKEN stands in.
    "github-token": "",
    "create-pr": "true",
    "comment": "true",
    "fail-on": "fail",
    "max-drop": "",
    "dry-run": "false",
}
"""Every input of action.yml and the default used when GitHub did not pass it (local runs)."""

OUTPUTS = ("status", "utilization", "suggested-rank", "report-path", "hub-pr-url", "comment-url")
"""Every output of action.yml; all of them are written on every run (empty when unknown)."""

MODES = ("audit", "bench", "annotate")
FAIL_ON = ("fail", "never")
REPORT_DIR = "gradience-report"
"""Reports go to ``$GITHUB_WORKSPACE/gradience-report/<repo>/`` (audit.json, bench.json)."""

FORK_SAFE_DOC = "examples/workflows/fork-safe.yml"
# GitHub refuses issue comments longer than this many characters.
_MAX_COMMENT = 65536
_TRUE = ("true", "True", "TRUE")
_FALSE = ("false", "False", "FALSE")


class InputError(UsageError):
    """An action input is missing or invalid (exit 2); ``input`` names it."""

    def __init__(self, name: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.input = name


# -- workflow commands (https://docs.github.com/actions/reference/workflow-commands) -----------


def escape_data(text: str) -> str:
    """Escape the message of a workflow command: ``%``, CR and LF (the runner's rules)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command property value: the data rules plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(name: str, message: str = "", **properties: str) -> str:
    """``::name key=value,...::message`` with everything escaped."""
    props = ",".join(f"{k}={escape_property(v)}" for k, v in properties.items() if v)
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


class Secrets:
    """Values that must never leave the process in clear text; :meth:`scrub` blanks them."""

    def __init__(self) -> None:
        self._values: list[str] = []

    def add(self, value: str | None) -> None:
        for part in (value or "").splitlines():
            part = part.strip()
            if part and part not in self._values:
                self._values.append(part)
        self._values.sort(key=len, reverse=True)  # longest first: no partial leftovers

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._values))

    def scrub(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, "***")
        return text


class _ScrubbedStream(io.TextIOBase):
    """A text stream that scrubs secrets from everything written through it.

    Exception texts, library messages and tracebacks all pass through ``sys.stdout`` /
    ``sys.stderr``, so scrubbing here guards what no single message format could.
    """

    def __init__(self, stream: TextIO, secrets: Secrets) -> None:
        self._stream = stream
        self._secrets = secrets

    def write(self, s: str) -> int:
        if not isinstance(s, str):  # behave like a text stream: click probes with b""
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._stream.write(self._secrets.scrub(s))
        return len(s)

    def flush(self) -> None:
        self._stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"


# -- inputs --------------------------------------------------------------------------------


def read_input(name: str, environ: Mapping[str, str]) -> str:
    """An input's value, stripped: ``INPUT_REPO-ID`` (as GitHub passes it) or ``INPUT_REPO_ID``
    (what ``docker run -e`` and shells allow), else the :data:`INPUTS` default."""
    upper = name.upper()
    for key in (f"INPUT_{upper}", f"INPUT_{upper.replace('-', '_')}"):
        if key in environ:
            return environ[key].strip()
    return INPUTS[name]


def _bool_input(name: str, environ: Mapping[str, str]) -> bool:
    value = read_input(name, environ)
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InputError(
        name, f"input '{name}' must be true or false, not {value!r}", hint=f"{name}: true"
    )


def _lines(value: str) -> list[str]:
    """One item per line, blank lines and ``#`` comments dropped, duplicates removed."""
    items: list[str] = []
    for line in value.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and line not in items:
            items.append(line)
    return items


@dataclass
class Settings:
    """The validated inputs."""

    repo_ids: list[str]
    revision: str | None
    mode: str
    bench_config: str | None
    bench_json: list[str]
    github_token: str
    create_pr: bool
    comment: bool
    fail_on: str
    max_drop: float | None
    dry_run: bool

    def bench_json_for(self, index: int) -> str | None:
        """The bench.json of the ``index``-th repo: one file for all, or one per repo."""
        if not self.bench_json:
            return None
        return self.bench_json[0] if len(self.bench_json) == 1 else self.bench_json[index]


def parse_settings(environ: Mapping[str, str]) -> Settings:
    """Validate every input; raises :class:`InputError` naming the first bad one."""
    repo_ids = _lines(read_input("repo-id", environ))
    if not repo_ids:
        raise InputError(
            "repo-id",
            "input 'repo-id' is required: the Hub repo id(s) or local adapter directories to audit",
            hint="with: repo-id: your-org/your-adapter (one per line for several)",
        )
    mode = read_input("mode", environ).lower() or "audit"
    if mode not in MODES:
        raise InputError(
            "mode",
            f"input 'mode' must be one of {', '.join(MODES)}, not {mode!r}",
            hint="mode: audit (spectral audit), bench (run a bench config) or annotate "
            "(publish on the Hub)",
        )
    fail_on = read_input("fail-on", environ).lower() or "fail"
    if fail_on not in FAIL_ON:
        raise InputError(
            "fail-on",
            f"input 'fail-on' must be fail or never, not {fail_on!r}",
            hint="fail-on: never reports a FAIL verdict without failing the step",
        )
    max_drop: float | None = None
    raw_drop = read_input("max-drop", environ)
    if raw_drop:
        try:
            max_drop = float(raw_drop)
        except ValueError:
            max_drop = math.nan
        if not (math.isfinite(max_drop) and 0.0 <= max_drop < 1.0):
            raise InputError(
                "max-drop",
                f"input 'max-drop' must be a number in [0, 1), not {raw_drop!r}",
                hint="max-drop: 0.025 allows a 2.5-point drop on the worst seed",
            )
    bench_config = read_input("bench-config", environ) or None
    bench_json = _lines(read_input("bench-json", environ))
    if mode == "bench" and not bench_config:
        raise InputError(
            "bench-config",
            "input 'bench-config' is required with mode: bench",
            hint="bench-config: path/to/bench.yaml (see examples/), or use mode: audit",
        )
    if bench_config and mode == "audit":
        raise InputError(
            "bench-config",
            "input 'bench-config' needs mode: bench or mode: annotate",
            hint="set mode: bench to run it, or drop bench-config",
        )
    if bench_config and bench_json:
        raise InputError(
            "bench-json",
            "inputs 'bench-config' and 'bench-json' exclude each other",
            hint="bench-config runs a new bench; bench-json reuses a finished one's record",
        )
    if len(bench_json) not in (0, 1, len(repo_ids)):
        raise InputError(
            "bench-json",
            f"input 'bench-json' lists {len(bench_json)} files for {len(repo_ids)} repos",
            hint="give one bench.json for all repos, or one per repo in the order of repo-id",
        )
    for name, paths in (
        ("bench-config", [bench_config] if bench_config else []),
        ("bench-json", bench_json),
    ):
        for path in paths:
            if not Path(path).is_file():
                raise InputError(
                    name,
                    f"input '{name}': file {path!r} not found",
                    hint="paths are relative to the workspace; check out the repo first "
                    "(actions/checkout)",
                )
    return Settings(
        repo_ids=repo_ids,
        revision=read_input("revision", environ) or None,
        mode=mode,
        bench_config=bench_config,
        bench_json=bench_json,
        github_token=read_input("github-token", environ) or environ.get("GITHUB_TOKEN", ""),
        create_pr=_bool_input("create-pr", environ),
        comment=_bool_input("comment", environ),
        fail_on=fail_on,
        max_drop=max_drop,
        dry_run=_bool_input("dry-run", environ),
    )


# -- one repo ------------------------------------------------------------------------------


@dataclass
class RepoResult:
    """What one repo's run produced (or the error that stopped it)."""

    source: str
    status: str = "ERROR"  # PASS | FAIL | AUDIT | ERROR
    audit: dict[str, Any] | None = None
    bench: dict[str, Any] | None = None
    report_dir: Path | None = None
    hub_url: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    error: GradienceError | None = None
    diff: str = ""  # annotate --dry-run: the README change it would make
    summary_md: str = ""
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


def _status_of(bench: dict[str, Any] | None) -> str:
    if bench is None:
        return "AUDIT"
    return "PASS" if str(bench.get("status", "")).upper() == "PASS" else "FAIL"


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
        from gradience_hub import annotate

        out = annotate.annotate(
            source,
            revision=settings.revision,
            bench_config=settings.bench_config,
            bench_json=bench_json,
            create_pr=settings.create_pr,
            dry_run=settings.dry_run,
            max_drop=settings.max_drop,
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
            rec = run_bench(spec, settings.bench_config, report_dir / "bench")
            if settings.max_drop is not None:
                rec = record.with_policy(rec, max_drop=settings.max_drop)
            result.bench = rec.to_dict()
        else:
            result.bench = _bench_record(bench_json, settings.max_drop)
        result.status = _status_of(result.bench)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "audit.json").write_text(json.dumps(result.audit, indent=2) + "\n", "utf-8")
    if result.bench is not None:
        (report_dir / "bench.json").write_text(json.dumps(result.bench, indent=2) + "\n", "utf-8")
    return result


def _sections(result: RepoResult) -> tuple[str, str]:
    """The step-summary and PR-comment Markdown of one repo (comment without the marker)."""
    from gradience_hub import render

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
    out = []
    for kind in ("summary", "comment"):
        text = render.render(kind, result.audit, result.bench, context=result.context)
        text = text.replace(render.COMMENT_MARKER, "").strip("\n")
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
    return out[0], out[1]


# -- the run -------------------------------------------------------------------------------


class _Channel:
    """Annotations on stdout, outputs and the step summary, all scrubbed of secrets."""

    def __init__(self, environ: Mapping[str, str], secrets: Secrets) -> None:
        self.output_path = environ.get("GITHUB_OUTPUT") or None
        self.summary_path = environ.get("GITHUB_STEP_SUMMARY") or None
        self.secrets = secrets

    def annotate(self, level: str, title: str, exc_or_text: GradienceError | str) -> None:
        if isinstance(exc_or_text, GradienceError):
            text = exc_or_text.message
            if exc_or_text.hint:
                text += f"\nFix: {exc_or_text.hint}"
        else:
            text = exc_or_text
        scrub = self.secrets.scrub
        print(workflow_command(level, scrub(text), title=scrub(title)), flush=True)

    def outputs(self, values: Mapping[str, str]) -> None:
        """Write every output, each in the multi-line ``name<<DELIMITER`` form."""
        if self.output_path is None:
            return
        with open(self.output_path, "a", encoding="utf-8") as f:
            for name in OUTPUTS:
                value = self.secrets.scrub(values.get(name, ""))
                delimiter = f"ghadelimiter_{uuid.uuid4()}"  # random: no value can end it early
                f.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")

    def summary(self, markdown: str) -> None:
        if self.summary_path is None:
            return
        with open(self.summary_path, "a", encoding="utf-8") as f:
            f.write(self.secrets.scrub(markdown).rstrip("\n") + "\n")


def _read_event(path: str | None, channel: _Channel) -> dict[str, Any]:
    if not path:
        return {}
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        channel.annotate("warning", "gradience-hub: unreadable event", f"{path}: {exc}")
        return {}
    return event if isinstance(event, dict) else {}


def _post_comment(
    settings: Settings, environ: Mapping[str, str], results: list[RepoResult], channel: _Channel
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


def _overall(results: list[RepoResult]) -> str:
    statuses = {r.status for r in results}
    for status in ("ERROR", "FAIL", "PASS"):
        if status in statuses:
            return status
    return "AUDIT"


def _relative(path: Path, workspace: Path) -> str:
    try:
        return str(path.relative_to(workspace))
    except ValueError:
        return str(path)


def run(environ: Mapping[str, str], secrets: Secrets) -> int:
    """The action, once secrets are masked; returns the exit code."""
    channel = _Channel(environ, secrets)
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
        print(workflow_command("group", f"gradience-hub {settings.mode}: {source}"), flush=True)
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
            print("::endgroup::", flush=True)
        results.append(result)
        print(f"{source}: {result.status}")

    for r in results:
        if r.error is not None:
            channel.annotate("error", f"gradience-hub {settings.mode} failed: {r.source}", r.error)
        elif r.status == "FAIL":
            level = "error" if settings.fail_on == "fail" else "warning"
            channel.annotate(level, f"gradience-hub: {r.source} FAILs the policy", _fail_text(r))

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
            "status": _overall(results),
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
    if settings.fail_on == "fail" and any(r.status == "FAIL" for r in results):
        return EXIT_FAIL
    return EXIT_OK


def main(environ: Mapping[str, str] | None = None) -> int:
    """Entry point of ``gradience-hub action``: mask, export HF_TOKEN, scrub, run.

    The HF token is masked first (``::add-mask::``, only inside GitHub Actions: elsewhere it
    would print it) and exported as ``HF_TOKEN`` before anything imports huggingface_hub.
    Everything written to stdout and stderr afterwards is scrubbed of the tokens.
    """
    env = os.environ if environ is None else environ
    secrets = Secrets()
    hf_token = read_input("hf-token", env)
    secrets.add(hf_token)
    secrets.add(env.get("HF_TOKEN"))
    secrets.add(read_input("github-token", env))
    secrets.add(env.get("GITHUB_TOKEN"))
    if env.get("GITHUB_ACTIONS") == "true":
        for value in secrets:
            print(workflow_command("add-mask", value), flush=True)
    if hf_token:
        os.environ["HF_TOKEN"] = hf_token
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = _ScrubbedStream(stdout, secrets)
    sys.stderr = _ScrubbedStream(stderr, secrets)
    try:
        return run(env, secrets)
    except Exception as exc:  # a bug in this module: still one clean annotation, no token
        if env.get("GRADIENCE_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(
            workflow_command(
                "error",
                secrets.scrub(
                    f"internal error: {type(exc).__name__}: {exc}\n"
                    "Fix: rerun with GRADIENCE_DEBUG=1 for the traceback and report it"
                ),
                title="gradience-hub action failed",
            ),
            flush=True,
        )
        return EXIT_BAD_INPUT
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = stdout, stderr
