"""``gradience-hub annotate``: put the audit (and bench) evidence on the adapter's model card.

Resolve the revision to a sha, audit that sha (bench it, or take a given bench.json), render
the card section, and write README.md + ``gradience/*`` in ONE commit whose parent is the
audited sha: into our open Hub PR (reused), as a new Hub PR, or directly on a branch. A local
directory SOURCE (a clone of a Hub repo) gets the same files written in place.

All Hub calls go through :mod:`gradience_hub.hub`; this module only orchestrates.
"""

# Over 500 lines: the local and Hub publishing paths share evidence, render and files.

from __future__ import annotations

import contextlib
import contextvars
import difflib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gradience_hub import adapter as adapter_io
from gradience_hub import hub
from gradience_hub._io import resolve_within, write_file
from gradience_hub.audit import AuditReport, audit_adapter
from gradience_hub.errors import CardError, GradienceError, HubError, UsageError
from gradience_hub.identity import link_bench
from gradience_hub.markers import (
    AUDIT_JSON,
    BENCH_JSON,
    BENCH_MD,
    COMMENT_MARKER,
    PICTURE,
    README,
    TELEMETRY_PICTURE,
)
from gradience_hub.parallel import meanwhile
from gradience_hub.policy import status_of
from gradience_hub.publish.readme import library_for
from gradience_hub.record import BenchRecord, record_from_dict
from gradience_hub.record.hub_eval import HubEvalClaim, claim_from_record

__all__ = [
    "AUDIT_JSON",
    "BENCH_JSON",
    "BENCH_MD",
    "COMMENT_MARKER",
    "PICTURE",
    "README",
    "AnnotateResult",
    "annotate",
    "evidence_files",
    "format_result",
    "keep_published",
    "readme_diff",
    "write_local_card",
]

_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class AnnotateResult:
    """What annotate did (or, with ``dry_run``, would do)."""

    status: str  # policy.status_of: PASS | FAIL | INCONCLUSIVE | AUDIT
    audit: AuditReport
    bench: dict[str, Any] | None
    target: str  # "pr" | "direct" | "local"
    sha: str | None = None
    commit_url: str | None = None
    pr_url: str | None = None
    hub_comment_url: str | None = None
    changed: bool = False
    dry_run: bool = False
    files: list[str] = field(default_factory=list)
    diff: str = ""
    location: str = ""  # repo id or local directory
    notes: list[str] = field(default_factory=list)  # what else this run did, in words
    variant: Any = None  # publish.variant.VariantPush, with --push-variant
    variant_refused: str | None = None  # why --push-variant pushed nothing (the verdict)


@dataclass
class _Evidence:
    audit: AuditReport
    bench: dict[str, Any] | None
    bench_md: str | None

    def bench_record(self) -> BenchRecord | None:
        """The bench as render takes it: the judged record, read back from the bench.json
        form that is published (so the card shows exactly what the file says)."""
        return record_from_dict(self.bench) if self.bench is not None else None


def _load_bench(bench_json: str, max_drop: float | None) -> tuple[dict[str, Any], str]:
    """A bench.json (ours or gradience 0.11's) as our v1 dict, plus its bench.md text."""
    from gradience_hub import record

    rec = record.load_bench(bench_json)
    if max_drop is not None:
        rec = record.with_policy(rec, max_drop=max_drop)
    return rec.to_dict(), record.to_markdown(rec)


def _run_bench(source: str, config: str, max_drop: float | None) -> tuple[dict[str, Any], str]:
    from gradience_hub import record
    from gradience_hub.bench.protocol import run_bench

    with tempfile.TemporaryDirectory(prefix="gradience-bench-") as out:
        rec = run_bench(source, config, out)
    if max_drop is not None:
        rec = record.with_policy(rec, max_drop=max_drop)
    return rec.to_dict(), record.to_markdown(rec)


def _close(a: Any, b: Any) -> bool:
    """Structural equality with a 1e-9 relative tolerance on floats: another BLAS build can
    change the last bits of a singular value without changing the audit."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        if (
            isinstance(a, bool)
            or isinstance(b, bool)
            or not isinstance(a, (int, float))
            or not isinstance(b, (int, float))
        ):
            return False
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b)) or a == b
    return bool(a == b)


def _without(doc: dict[str, Any], volatile: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """``doc`` without the volatile keys (``{"": top-level keys, "source": nested keys}``)."""
    out = {k: v for k, v in doc.items() if k not in volatile.get("", ())}
    for section, keys in volatile.items():
        if section and isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
    return out


# What may differ between two runs on the same adapter without the evidence changing: the
# commit it was read at (our own commits move the head), when and where a bench ran.
_AUDIT_VOLATILE = {"source": ("sha", "revision", "display", "path")}
_BENCH_VOLATILE = {"": ("created_at", "environment"), "adapter": ("revision",)}


def _published_doc(raw: bytes | str | None) -> dict[str, Any] | None:
    """A published gradience/*.json as a dict, or None when it is missing or unreadable
    (not UTF-8, not JSON, nested past the parser's depth, not an object): such a document
    is replaced, never a reason to stop."""
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def keep_published(
    evidence: _Evidence, old_audit: bytes | str | None, old_bench: bytes | str | None
) -> _Evidence:
    """Reuse the published documents when the new ones say the same thing.

    Without this every rerun would commit: the audited sha changes with each commit to the
    repo (ours included) and a rerun bench has a new timestamp. When the new audit equals the
    published one but for those fields, the published one (and the revision it names, whose
    adapter gave exactly these figures) stays. Unreadable or foreign documents (bad bytes,
    bad JSON, another schema, fields of the wrong type) are simply replaced.
    """
    from gradience_hub.audit import AuditReport

    audit, bench = evidence.audit, evidence.bench
    published = _published_doc(old_audit)
    published_bench = _published_doc(old_bench)
    try:
        if published is not None and _close(
            _without(audit.to_dict(), _AUDIT_VOLATILE), _without(published, _AUDIT_VOLATILE)
        ):
            audit = replace(AuditReport.from_dict(published))
            audit.to_json()  # it must also write back as it was read
        if (
            bench is not None
            and published_bench is not None
            and _close(_without(bench, _BENCH_VOLATILE), _without(published_bench, _BENCH_VOLATILE))
        ):
            bench = published_bench
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, GradienceError):
        return evidence
    return _Evidence(audit, bench, evidence.bench_md)


def hub_eval_claim(bench: dict[str, Any], model_name: str, record_url: str | None) -> HubEvalClaim:
    """What the record lets the card claim in the Hub's eval formats (record/hub_eval.py)."""
    claim = claim_from_record(record_from_dict(bench), model_name=model_name, source_url=record_url)

    # names from the record land in the card's metadata: no HTML comment may open or close
    # there (a marker in the front matter would split the section), no line may break
    def plain(text: str) -> str:
        return re.sub(r"<!--|-->|[\x00-\x1f\x7f]", " ", text).strip() or "task"

    return replace(claim, task_name=plain(claim.task_name), metric=plain(claim.metric))


def _hub_eval_note(claim: HubEvalClaim) -> str:
    """The card's line on where the score is published in the Hub's formats, and why not."""
    refusal = claim.benchmark_refusal()
    if refusal is None:
        return (
            f"the adapter's {claim.metric} is in the card's model-index and in "
            f"{claim.eval_results_path} (the benchmark's whole split, every seed)"
        )
    return (
        f"the adapter's {claim.metric} is in the card's model-index only, not in "
        f".eval_results/: {refusal}"
    )


def evidence_files(
    evidence: _Evidence,
    readme: str | None,
    *,
    template_dir: str | None = None,
    context: dict[str, Any] | None = None,
    model_name: str | None = None,
    record_url: str | None = None,
    png: Callable[[dict[str, Any]], bytes] | None = None,
) -> dict[str, bytes]:
    """Every file annotate writes, rendered in memory first (nothing is written on error).
    ``png`` gives the picture's bytes of an audit.json dict (drawn ahead, say); by default
    it is drawn here.

    With a bench, the card's ``model-index`` carries the adapter's score (as ``model_name``,
    linking ``record_url``), and ``.eval_results/<task>.yaml`` too when the record is a full
    evaluation of a registered Hub benchmark (:class:`HubEvalClaim`); the section says which.
    """
    from gradience_hub.hub.evals import eval_results_yaml
    from gradience_hub.publish import plot, render
    from gradience_hub.publish.model_index import set_model_index

    audit = evidence.audit.to_dict()
    context = {**(context or {}), "utilization_png": True}
    claim = None
    if evidence.bench is not None:
        name = model_name or str(context.get("repo_id") or evidence.audit.source.get("display"))
        claim = hub_eval_claim(evidence.bench, name, record_url)
        context["hub_eval_note"] = _hub_eval_note(claim)
    section = render.render(
        "card", evidence.audit, evidence.bench_record(), template_dir=template_dir, context=context
    )
    summary = evidence.audit.summary
    new_readme = render.splice_readme(
        readme,
        section,
        base_model=summary.base_model,
        library_name=library_for(summary.adapter_format),
    )
    if claim is not None:
        new_readme = set_model_index(new_readme, claim)
    files: dict[str, bytes] = {README: new_readme.encode("utf-8")}
    files[AUDIT_JSON] = evidence.audit.to_json().encode("utf-8")
    if evidence.bench is not None:
        files[BENCH_JSON] = (json.dumps(evidence.bench, indent=2) + "\n").encode("utf-8")
        files[BENCH_MD] = (evidence.bench_md or "").encode("utf-8")
    if claim is not None and claim.is_benchmark_score:
        files[claim.eval_results_path] = eval_results_yaml(claim).encode("utf-8")
    files[PICTURE] = (png or plot.heatmap_png)(audit)
    return files


def readme_diff(old: str | None, new: str, label: str = README) -> str:
    """Unified diff of the README, as ``--dry-run`` prints it: every line ends with a newline;
    a last line that had none is followed by ``\\ No newline at end of file``, as git shows it
    (difflib alone glues it to the next line)."""
    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{label}",
        tofile=f"b/{label}",
    )
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


def _commit_message(evidence: _Evidence) -> tuple[str, str]:
    """PR/commit title (starts with hub.PR_TITLE_PREFIX so the PR is found again) and body."""
    from gradience_hub.hub import PR_TITLE_PREFIX

    s = evidence.audit.summary
    status = status_of(evidence.bench)
    if evidence.bench is None:
        title = f"{PR_TITLE_PREFIX}: LoRA rank utilization {s.utilization_mean * 100:.1f}%"
    else:
        rec = evidence.bench.get("recommendation") or {}
        detail = f", recommend {rec['variant']}" if rec.get("variant") else ""
        title = f"{PR_TITLE_PREFIX}: {status}{detail}"
    sha = evidence.audit.source.get("sha") or ""
    body = (
        "Spectral audit of this LoRA adapter by gradience-hub: utilization "
        f"{s.utilization_mean * 100:.1f}% of rank {s.allocated_rank}, suggested ranks "
        f"{s.suggested_r_global_median} (median) / {s.suggested_r_global_90} (p90).\n\n"
        f"Audited revision: {sha}\n"
        "Files: README.md (the section between the gradience markers), gradience/*."
    )
    return title, body


# --------------------------------------------------------------------------- local directories


def _decode_readme(raw: bytes | None, where: str) -> str | None:
    """README.md as text (None when absent); CardError when it is not UTF-8: it is the
    author's file, and guessing its encoding would rewrite bytes outside the markers."""
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CardError(
            f"README.md in {where} is not UTF-8 text (byte {exc.start}: {exc.reason})",
            hint="re-save README.md as UTF-8, then rerun",
        ) from None


def _read_inside(directory: Path, path: str) -> bytes | None:
    """A file of the clone, or None; UsageError when it resolves outside the clone (a
    README.md symlinked to /etc/passwd must not be published)."""
    target = resolve_within(directory, path)
    if target.is_dir():
        raise UsageError(
            f"{path} in {directory} is a directory", hint=f"{path} must be a file (or absent)"
        )
    return target.read_bytes() if target.is_file() else None


def _annotate_local(
    directory: Path, evidence: _Evidence, *, dry_run: bool, template_dir: str | None
) -> AnnotateResult:
    # Published files must not carry this machine's absolute paths (user names, layout):
    # the adapter's place is recorded relative to the directory the card lives in.
    source = dict(evidence.audit.source)
    if source.get("kind") == "local" and source.get("path"):
        relative = os.path.relpath(source["path"], directory)
        source.update(path=relative, display=relative)
        evidence = _Evidence(
            replace(evidence.audit, source=source), evidence.bench, evidence.bench_md
        )
    paths = [README, AUDIT_JSON, BENCH_JSON, BENCH_MD, PICTURE]
    # every path is checked before anything is read or written: all or nothing
    current = {path: _read_inside(directory, path) for path in paths}
    old = _decode_readme(current[README], str(directory))
    evidence = keep_published(evidence, current[AUDIT_JSON], current[BENCH_JSON])
    # a clone of a Hub repo: the record's link is relative to the card, as the section's are
    # the Trainer callback's utilization-over-steps plot, when training left one
    plotted = {"telemetry_png": (directory / TELEMETRY_PICTURE).is_file()}
    files = evidence_files(
        evidence,
        old,
        template_dir=template_dir,
        context=plotted,
        model_name=directory.name,
        record_url=BENCH_JSON,
    )
    for path in files:
        if path not in current:  # .eval_results/<task>.yaml
            current[path] = _read_inside(directory, path)
    changed_paths = [p for p, data in files.items() if current.get(p) != data]
    result = AnnotateResult(
        status=status_of(evidence.bench),
        audit=evidence.audit,
        bench=evidence.bench,
        target="local",
        changed=bool(changed_paths),
        dry_run=dry_run,
        files=list(files),
        diff=readme_diff(old, files[README].decode("utf-8")),
        location=str(directory),
    )
    if not dry_run:
        for path in changed_paths:
            write_file(directory / path, files[path], parents=True, within=directory)
    return result


def write_local_card(
    source: str | Path,
    output: str | Path | None = None,
    *,
    energy: float = 0.9,
    template_dir: str | None = None,
    adapter_name: str | None = None,
) -> AnnotateResult:
    """Audit the adapter in directory ``source`` and write the card section and gradience/*
    into ``output`` (default: the same directory). Used by the Trainer callback."""
    adapter, info = hub.load_adapter(str(source), None, adapter_name)
    evidence = _Evidence(audit_adapter(adapter, info, energy), None, None)
    return _annotate_local(
        Path(output or source), evidence, dry_run=False, template_dir=template_dir
    )


# --------------------------------------------------------------------------- the Hub


def _check_options(
    bench_config: str | None,
    bench_json: str | None,
    max_drop: float | None,
    comment_on_pr: int | None,
) -> None:
    """Every option is checked before the first request: a bad one must never surface after
    a PR was opened."""
    if bench_config and bench_json:
        raise UsageError(
            "give --bench-config or --bench-json, not both",
            hint="--bench-json publishes an existing record; --bench-config runs one",
        )
    if max_drop is not None and not (math.isfinite(max_drop) and 0.0 <= max_drop < 1.0):
        raise UsageError(f"max drop must be in [0, 1), got {max_drop}", hint="e.g. 0.025")
    if comment_on_pr is not None and (
        isinstance(comment_on_pr, bool) or not isinstance(comment_on_pr, int) or comment_on_pr < 1
    ):
        raise UsageError(
            f"--comment-on-pr must be a discussion number (1 or more), not {comment_on_pr}",
            hint="the number in the Hub URL .../discussions/N",
        )


def annotate(
    source: str,
    *,
    revision: str | None = None,
    adapter_name: str | None = None,
    bench_config: str | None = None,
    bench_json: str | None = None,
    create_pr: bool = True,
    dry_run: bool = False,
    comment_on_pr: int | None = None,
    template_dir: str | None = None,
    max_drop: float | None = None,
    energy: float = 0.9,
    push_variant: str | None = None,
    push_to: str | None = None,
    retry_backoff: float = 1.0,
    max_parent_retries: int = 3,
    max_transient_retries: int = 4,
    log: Callable[[str], None] | None = None,
) -> AnnotateResult:
    """Audit SOURCE (and bench it) and publish the evidence; see the module docstring.

    ``dry_run`` sends no write request. Raises GradienceError subclasses (exit 2/3); the
    retries of the commit follow :class:`~gradience_hub.hub.commit.RetryPolicy`.
    ``push_variant`` (a variant name, or ``""`` for the recommendation) with ``push_to``
    (ORG/REPO) also publishes that variant of the ``bench_json`` bench as its own repo
    (:func:`gradience_hub.publish.variant.push_variant`), after the evidence.
    """
    _check_options(bench_config, bench_json, max_drop, comment_on_pr)
    pusher = _VariantPusher.checked(push_variant, push_to, bench_json)
    result = _annotate(
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
        energy=energy,
        policy=hub.RetryPolicy(retry_backoff, max_parent_retries, max_transient_retries),
        log=log,
    )
    if pusher is not None:
        from gradience_hub.errors import PolicyFailed

        try:
            result.variant = pusher(dry_run)
        except PolicyFailed as exc:  # the evidence is published; the caller exits 1
            result.variant_refused = exc.message
    return result


@dataclass(frozen=True)
class _VariantPusher:
    """``--push-variant [NAME] --to ORG/REPO``, checked before anything is written."""

    bench_json: str
    to: str
    name: str | None

    @classmethod
    def checked(
        cls, name: str | None, to: str | None, bench_json: str | None
    ) -> _VariantPusher | None:
        from gradience_hub.errors import PolicyFailed
        from gradience_hub.publish.variant import push_variant

        if name is None and to is None:
            return None
        if name is None or to is None:
            raise UsageError(
                "--push-variant and --to go together",
                hint="--push-variant [NAME] --to ORG/REPO publishes a bench variant as a repo",
            )
        if not bench_json:
            raise UsageError(
                "--push-variant needs --bench-json: the bench's output folder holds the variants",
                hint="run the bench with gradience-hub bench -o DIR, then pass DIR/bench.json",
            )
        pusher = cls(bench_json, to, name or None)
        # every refusal but the verdict's comes before the evidence is published: a FAIL's
        # evidence is still published, and the push refuses after it (exit 1)
        with contextlib.suppress(PolicyFailed):
            push_variant(bench_json, to, pusher.name, dry_run=True)
        return pusher

    def __call__(self, dry_run: bool) -> Any:
        from gradience_hub.publish.variant import push_variant

        return push_variant(self.bench_json, self.to, self.name, dry_run=dry_run)


def _annotate(
    source: str,
    *,
    revision: str | None,
    adapter_name: str | None,
    bench_config: str | None,
    bench_json: str | None,
    create_pr: bool,
    dry_run: bool,
    comment_on_pr: int | None,
    template_dir: str | None,
    max_drop: float | None,
    energy: float,
    policy: hub.RetryPolicy,
    log: Callable[[str], None] | None,
) -> AnnotateResult:
    # a given record is read first: a bad one must fail before any Hub traffic
    bench, bench_md = _load_bench(bench_json, max_drop) if bench_json else (None, None)
    evidence = _EvidenceSource(
        adapter_name, energy, bench, bench_md, bench_config, max_drop, template_dir
    )
    spec = adapter_io.parse_source(source, revision)
    if spec.local_path is not None:
        if comment_on_pr is not None:
            raise UsageError("--comment-on-pr needs a Hub SOURCE", hint="pass org/name")
        local = evidence(str(spec.local_path), None)
        return _annotate_local(spec.local_path, local, dry_run=dry_run, template_dir=template_dir)
    assert spec.repo_id is not None
    run = _HubRun(
        repo=spec.repo_id,
        revision=spec.revision,
        branch=_branch(spec.revision, create_pr),
        create_pr=create_pr,
        identity=_identity(dry_run),
        evidence=evidence,
        template_dir=template_dir,
        dry_run=dry_run,
        say=log or (lambda _msg: None),
    )
    if dry_run:
        return _prepare(run, []).result
    done, outcome = _publish(run, hub.Retries(run.repo, policy))
    if comment_on_pr is not None:
        _comment(run, done, outcome, comment_on_pr)
    return done.result


# What evidence_files imports on first use (Jinja, the Hub's eval-results types): imported
# with matplotlib while the adapter downloads.
_RENDER_MODULES = (
    "jinja2.sandbox",
    "gradience_hub.publish.render",
    "gradience_hub.publish.model_index",
    "gradience_hub.hub.evals",
)


@dataclass
class _EvidenceSource:
    """The evidence of one revision: its audit, and the given record or a bench run on it."""

    adapter_name: str | None
    energy: float
    bench: dict[str, Any] | None
    bench_md: str | None
    bench_config: str | None
    max_drop: float | None
    template_dir: str | None = None

    def __call__(self, source: str, revision: str | None) -> _Evidence:
        from gradience_hub.publish import plot

        # the picture's and the card's imports, and the card's templates compiled, overlap the
        # download; joined before the audit takes the cores
        with (
            plot.matplotlib_loading(*_RENDER_MODULES),
            meanwhile(self._compile_card, "gradience-templates"),
        ):
            adapter, info = hub.load_adapter(source, revision, self.adapter_name)
        report = audit_adapter(adapter, info, self.energy)
        bench, bench_md = self.bench, self.bench_md
        if self.bench_config:
            at = source if revision is None else f"{source}@{revision}"
            bench, bench_md = _run_bench(at, self.bench_config, self.max_drop)
        # A record of another adapter must never be published as this one's evidence (exit
        # 2 before anything is written); one that cannot be checked carries a warning.
        return _Evidence(report, link_bench(bench, report.to_dict()) if bench else None, bench_md)

    def _compile_card(self) -> None:
        from gradience_hub.publish import render

        render.compile_templates("card", self.template_dir)


def _branch(revision: str | None, create_pr: bool) -> str:
    branch = revision or "main"
    if not create_pr and _SHA.match(branch):
        raise UsageError(
            f"--direct needs a branch to commit to, not the commit {branch[:7]}",
            hint="use --revision BRANCH with --direct, or the default --create-pr",
        )
    return branch


def _whoami(dry_run: bool) -> str | None:
    """Who publishes. A dry run needs no token; with one (HF_TOKEN or a saved login) it also
    shows which of our PRs the commit would go to."""
    if not dry_run:
        return hub.whoami()
    try:
        return hub.whoami()
    except HubError:
        return None


def _identity(dry_run: bool) -> Future[str | None]:
    """:func:`_whoami`, asked on a thread while the adapter downloads and is audited: it needs
    nothing else, and its round trip to the Hub is then hidden (0.2-0.3 s here, with the
    client's import). Without any token a publish fails here and now, before the download, as
    it always did (the lookup is local). The thread runs in a copy of this context, so a token
    given with ``hub.using_token`` (serve) goes with it."""
    if not dry_run and hub.token() is None:
        known: Future[str | None] = Future()
        known.set_result(hub.whoami())  # raises the one "no valid Hugging Face token" error
        return known
    asking = ThreadPoolExecutor(1, thread_name_prefix="gradience-whoami")
    try:
        return asking.submit(contextvars.copy_context().run, _whoami, dry_run)
    finally:
        asking.shutdown(wait=False)  # the thread ends with its one call


@dataclass
class _HubRun:
    """What stays the same across the passes of one publish to a Hub repo."""

    repo: str
    revision: str | None
    branch: str
    create_pr: bool
    identity: Future[str | None]
    evidence: _EvidenceSource
    template_dir: str | None
    dry_run: bool
    say: Callable[[str], None]
    audited: dict[str, _Evidence] = field(default_factory=dict)  # by sha

    @property
    def me(self) -> str | None:
        """Who publishes (:func:`_identity`; its error, if any, is raised here)."""
        return self.identity.result()


@dataclass
class _Pass:
    """One pass: the head it read, the evidence, where it commits, the files."""

    sha: str
    evidence: _Evidence
    pr: hub.HubPR | None
    parent: str
    context: dict[str, Any]
    files: dict[str, bytes]
    result: AnnotateResult


def _prepare(run: _HubRun, notes: list[str]) -> _Pass:
    """Read the branch head (auditing a sha not seen yet), our open PR, and everything at the
    exact commit we will commit on top of: our PR's head (where a reviewer may have pushed
    edits outside the markers) or the audited sha; splice the card there."""
    sha = hub.resolve_sha(run.repo, run.revision)
    if sha not in run.audited:
        run.say(f"Auditing {run.repo} @ {sha[:7]}")
        run.audited[sha] = run.evidence(run.repo, sha)
    evidence = run.audited[sha]
    from gradience_hub.publish import plot

    # the picture is drawn while the Hub is read; joined before this block is left
    with plot.drawing_ahead(evidence.audit.to_dict()) as png:
        pr = hub.find_open_pr(run.repo, run.me) if (run.create_pr and run.me) else None
        parent = hub.resolve_sha(run.repo, pr.ref) if pr else sha
        current = _decode_readme(hub.read_bytes(run.repo, README, parent), run.repo)
        evidence = keep_published(
            evidence,
            hub.read_bytes(run.repo, AUDIT_JSON, parent),
            hub.read_bytes(run.repo, BENCH_JSON, parent) if evidence.bench is not None else None,
        )
        shown = evidence.audit.source.get("sha") or sha
        context = {"repo_id": run.repo, "revision": shown, "repo_url": hub.repo_url(run.repo)}
        files = evidence_files(
            evidence,
            current,
            template_dir=run.template_dir,
            context=context,
            model_name=run.repo,
            # where the record lives once the commit is on the branch (a PR: once merged)
            record_url=f"{hub.repo_url(run.repo)}/blob/{quote(run.branch, safe='')}/{BENCH_JSON}",
            png=png,
        )
    result = AnnotateResult(
        status=status_of(evidence.bench),
        audit=evidence.audit,
        bench=evidence.bench,
        target="pr" if run.create_pr else "direct",
        sha=sha,
        dry_run=run.dry_run,
        files=list(files),
        diff=readme_diff(current, files[README].decode("utf-8")),
        location=run.repo,
        pr_url=pr.url if pr else None,
        notes=notes,
    )
    return _Pass(sha, evidence, pr, parent, context, files, result)


def _publish(run: _HubRun, retries: hub.Retries) -> tuple[_Pass, hub.CommitOutcome]:
    """Prepare and commit until one commit lands (or there is nothing to commit): a 412 is
    spliced again on the new head, a transient failure waits, both as ``retries`` decides; a
    duplicate PR another run opened first is closed and the next pass commits to the oldest."""
    notes: list[str] = []  # what this run did besides the final commit, kept across passes
    while True:
        done = _prepare(run, notes)
        title, body = _commit_message(done.evidence)
        try:
            outcome = hub.commit_files(
                run.repo,
                done.files,
                parent_sha=done.parent,
                message=title,
                description=body,
                create_pr=run.create_pr,
                pr=done.pr,
                branch=run.branch,
            )
        except hub.ParentMoved as exc:
            retries.after_parent_moved(exc)
            run.say(
                f"{done.pr.ref if done.pr else run.branch} moved; splicing again on the new head"
            )
            continue
        except hub.Transient as exc:
            delay = retries.after_transient(exc)
            run.say(f"{exc}; retrying in {delay:.1f}s")
            time.sleep(delay)
            continue
        if done.pr is None and outcome.changed and outcome.pr_num is not None and run.me:
            duplicate = _converge(hub, run.repo, run.me, outcome.pr_num)
            if duplicate is not None:
                notes.append(
                    f"another run opened a Gradience PR at the same time; closed our "
                    f"duplicate #{duplicate}"
                )
                continue
        _record_outcome(run, done, outcome, retries.unanswered)
        return done, outcome


def _record_outcome(
    run: _HubRun, done: _Pass, outcome: hub.CommitOutcome, unanswered: bool
) -> None:
    result = done.result
    result.changed = outcome.changed
    result.commit_url = outcome.commit_url
    result.pr_url = outcome.pr_url or result.pr_url
    if not outcome.changed and unanswered:
        # The earlier attempt's commit landed; its answer was lost on the way back.
        result.changed = True
        if not result.pr_url:
            result.commit_url = f"{hub.repo_url(run.repo)}/commit/{done.parent}"
        result.notes.append("the Hub lost its answer to our commit; the files are in place")


def _comment(run: _HubRun, done: _Pass, outcome: hub.CommitOutcome, num: int) -> None:
    """The sticky comment on Hub discussion ``num``, linking to where gradience/* now lives:
    the commit we made, or (nothing changed) the PR or branch that already holds it; the
    audited sha itself does not have the files."""
    from gradience_hub.publish import render

    assert run.me is not None
    where = (
        outcome.oid if outcome.changed and outcome.oid else (done.pr.ref if done.pr else done.sha)
    )
    comment = render.render(
        "comment",
        done.evidence.audit,
        done.evidence.bench_record(),
        template_dir=run.template_dir,
        context={**done.context, "revision": where},
    )
    done.result.hub_comment_url = hub.upsert_comment(run.repo, num, comment, COMMENT_MARKER, run.me)


def _converge(hub: Any, repo: str, me: str, opened: int) -> int | None:
    """After opening PR ``opened``: when an older PR of ours is open (a concurrent run opened
    it), close ours and return its number; else None. Every racing run keeps the oldest, so
    the repo ends with one open Gradience PR whichever run finishes first."""
    prs = hub.list_open_prs(repo, me)
    if not prs or prs[0].num >= opened:
        return None
    hub.close_pr(
        repo,
        opened,
        f"Closed by gradience-hub: #{prs[0].num}, opened at the same time by another run, "
        "carries this evidence.",
    )
    return opened


def format_result(result: AnnotateResult) -> str:
    """What the CLI prints after annotate: what THIS run did (a commit another run made is
    never reported as ours)."""
    lines = []
    if result.dry_run:
        lines.append(f"Dry run: nothing was written to {result.location}.")
        lines.append("Files it would write:")
        lines += [f"  {p}" for p in result.files]
        lines.append("")
        lines.append(result.diff or "README.md: no change")
    elif not result.changed:
        lines.append(f"{result.location}: up to date (nothing to commit)")
        if result.pr_url:
            lines.append(f"Hub PR: {result.pr_url}")
    elif result.target == "local":
        lines.append(f"Wrote {', '.join(result.files)} in {result.location}")
    elif result.pr_url:
        lines.append(f"Hub PR: {result.pr_url}")
    else:
        lines.append(f"Committed: {result.commit_url}")
    lines += [f"Note: {note}" for note in result.notes]
    if result.variant is not None:
        pushed = result.variant
        if result.dry_run:
            lines.append(f"Variant {pushed.variant}: would push {', '.join(pushed.files)}")
        elif pushed.changed:
            lines.append(f"Variant {pushed.variant} pushed: {pushed.commit_url}")
        else:
            lines.append(f"Variant {pushed.variant}: {pushed.repo_id} is up to date")
    if result.hub_comment_url:
        lines.append(f"Comment: {result.hub_comment_url}")
    lines.append(f"Status: {result.status}")
    return "\n".join(lines).rstrip("\n") + "\n"
